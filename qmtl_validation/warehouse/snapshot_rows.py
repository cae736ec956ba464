"""Snapshot-scoped tables: shaping risk snapshots and their results into warehouse rows, and back.

The risk hub assets stay short because the shaping lives here: a validated snapshot becomes a
``risk_snapshots`` header row and ``snapshot_weights`` rows; its covariance matrix the long
``covariance`` rows (upper triangle and diagonal, imputed pairs flagged); its realized series the
long ``realized_returns`` rows; the portfolio-risk, stress and live-monitoring figures their
tables' rows. The inverse functions rebuild what the next asset needs from the rows it loads.
Every row carries ``world_id`` and ``version``; ``world/version`` is the ``risk_snapshots``
partition key.

Also here: the few reads other areas need about snapshots (a world's latest snapshots, whether a
world is in a freshness breach).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from qmtl_validation.core.extended import CANDIDATE_STAGES
from qmtl_validation.core.health import get_path
from qmtl_validation.core.identifiers import snapshot_partition_key
from qmtl_validation.core.live_monitoring import LIVE_MONITORING_COLUMNS
from qmtl_validation.core.portfolio import historical_var_es, portfolio_risk
from qmtl_validation.core.rules.stress import split_stress, stress_scenario_pnl
from qmtl_validation.core.snapshot import parse_timestamp
from qmtl_validation.warehouse.lake import Lake
from qmtl_validation.warehouse.queries import SNAPSHOT_KEY_SQL, latest_rows
from qmtl_validation.warehouse.tables import to_json_text

SNAPSHOT_KEY_COLUMNS = ("world_id", "version")
# Bulky inline data lives in its own tables, not in payload_json.
_BULKY_FIELDS = ("covariance", "realized_returns")
ALPHA = 0.99

SNAPSHOT_COLUMNS = (
    "world_id", "version", "as_of", "hash", "content_hash", "actor", "producer_stage", "source",
    "ttl_sec", "n_strategies", "covariance_form", "realized_returns_form", "signed", "is_fallback",
    "fallback_of_version", "landing_key", "source_etag", "received_at", "payload_json", "recorded_at",
)
WEIGHT_COLUMNS = ("world_id", "version", "as_of", "strategy_id", "weight", "is_fallback", "recorded_at")
COVARIANCE_COLUMNS = (
    "world_id", "version", "as_of", "strategy_a", "strategy_b", "covariance", "correlation",
    "imputed", "is_fallback", "recorded_at",
)
REALIZED_COLUMNS = ("world_id", "version", "as_of", "strategy_id", "period", "date", "ret", "recorded_at")
PORTFOLIO_COLUMNS = (
    "world_id", "version", "as_of", "computed_at", "scope", "strategy_id", "run_id", "weight", "alpha",
    "volatility", "var", "es", "historical_var", "historical_es", "historical_periods",
    "historical_covered_weight", "component_var", "component_es", "incremental_var", "incremental_es",
    "var_with_candidate", "es_with_candidate", "variance_source", "imputed_pairs", "is_fallback",
)
STRESS_COLUMNS = (
    "world_id", "version", "as_of", "scenario", "strategy_id", "max_drawdown", "var_99", "es_99",
    "shock", "stress_pnl", "pnl_covered_weight", "status", "reason", "computed_at",
)
LIVE_COLUMNS = (
    "world_id", "version", "as_of", "strategy_id", "window_periods", "computed_at", "n_periods",
    "realized_sharpe", "realized_max_drawdown", "backtest_sharpe", "sharpe_decay_ratio",
    "breach_sharpe", "breach_drawdown", "breach_decay", "demotion_candidate",
    "strategy_demotion_candidate", "reason", "notes",
)
# live_monitoring table column → core.live_monitoring column.
_LIVE_RENAMES = {
    "window_periods": "window",
    "realized_sharpe": "sharpe",
    "realized_max_drawdown": "max_drawdown",
    "reason": "demotion_reasons",
}


def _frame(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], text: Sequence[str] = ()) -> pd.DataFrame:
    """Rows as a frame with ``columns``; ``text`` columns stay object dtype (None, never a float
    NaN column) even when no row has a value, so their contract's type check holds."""
    frame = pd.DataFrame(list(rows), columns=list(columns))
    for column in text:
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame


def partition_keys_of(frame: pd.DataFrame) -> pd.Series:
    """The snapshot partition key of each row (``world/version``)."""
    return frame["world_id"] + "/" + frame["version"]


def as_of_timestamp(snapshot: Mapping[str, Any]) -> pd.Timestamp:
    return pd.Timestamp(parse_timestamp(snapshot["as_of"]))


# ---------------------------------------------------------------------------------------------
# Snapshot header and weights


def payload_json(snapshot: Mapping[str, Any]) -> str:
    """Canonical JSON of the normalised snapshot without its bulky inline covariance and realized
    returns (their rows are in ``covariance`` / ``realized_returns``)."""
    return to_json_text({k: v for k, v in snapshot.items() if k not in _BULKY_FIELDS})


def snapshot_row(
    snapshot: Mapping[str, Any],
    *,
    covariance_form: str,
    realized_returns_form: str,
    signed: bool,
    content_hash: str | None,
    landing_key: str | None,
    source_etag: str | None,
    received_at: dt.datetime | None,
    recorded_at: dt.datetime,
    is_fallback: bool = False,
    fallback_of_version: str | None = None,
) -> dict[str, Any]:
    """The ``risk_snapshots`` row of a validated (or fallback) snapshot."""
    provenance = snapshot.get("provenance") or {}
    weights = snapshot.get("weights") or {}
    return {
        "world_id": snapshot["world_id"],
        "version": snapshot["version"],
        "as_of": as_of_timestamp(snapshot),
        "hash": snapshot["hash"],
        "content_hash": content_hash,
        "actor": provenance.get("actor"),
        "producer_stage": provenance.get("stage"),
        "source": provenance.get("source"),
        "ttl_sec": int(snapshot.get("ttl_sec") or 0),
        "n_strategies": sum(1 for w in weights.values() if float(w) != 0),
        "covariance_form": covariance_form,
        "realized_returns_form": realized_returns_form,
        "signed": bool(signed),
        "is_fallback": bool(is_fallback),
        "fallback_of_version": fallback_of_version,
        "landing_key": landing_key,
        "source_etag": source_etag,
        "received_at": received_at,
        "payload_json": payload_json(snapshot),
        "recorded_at": recorded_at,
    }


def snapshot_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    return _frame(rows, SNAPSHOT_COLUMNS)


def weight_rows(snapshot: Mapping[str, Any], *, recorded_at: dt.datetime, is_fallback: bool = False) -> pd.DataFrame:
    """``snapshot_weights`` rows: one per strategy in the snapshot's weights (zeros included)."""
    weights = snapshot.get("weights") or {}
    n = len(weights)
    return pd.DataFrame(
        {
            "world_id": [snapshot["world_id"]] * n,
            "version": [snapshot["version"]] * n,
            "as_of": [as_of_timestamp(snapshot)] * n,
            "strategy_id": [str(s) for s in weights],
            "weight": np.array([float(w) for w in weights.values()], dtype=np.float64),
            "is_fallback": [bool(is_fallback)] * n,
            "recorded_at": [recorded_at] * n,
        },
        columns=list(WEIGHT_COLUMNS),
    )


@dataclass(frozen=True)
class SnapshotRecord:
    """A snapshot as the downstream assets see it: the header row's facts and the payload."""

    key: str
    snapshot: dict[str, Any]
    landing_key: str | None
    is_fallback: bool
    covariance_form: str
    realized_returns_form: str
    as_of: pd.Timestamp


def snapshots_from_rows(frame: pd.DataFrame) -> dict[str, SnapshotRecord]:
    """partition key → :class:`SnapshotRecord` of the newest row per key in ``risk_snapshots`` rows."""
    if frame.empty:
        return {}
    newest = frame.sort_values("recorded_at", kind="stable").drop_duplicates(list(SNAPSHOT_KEY_COLUMNS), keep="last")
    out = {}
    for row in newest.to_dict("records"):
        key = snapshot_partition_key(row["world_id"], row["version"])
        landing = row.get("landing_key")
        out[key] = SnapshotRecord(
            key=key,
            snapshot=json.loads(row["payload_json"]),
            landing_key=None if landing is None or (isinstance(landing, float) and math.isnan(landing)) else str(landing),
            is_fallback=bool(row["is_fallback"]),
            covariance_form=str(row["covariance_form"]),
            realized_returns_form=str(row["realized_returns_form"]),
            as_of=pd.Timestamp(row["as_of"]),
        )
    return out


# ---------------------------------------------------------------------------------------------
# Covariance


def covariance_rows(
    snapshot: Mapping[str, Any],
    matrix: pd.DataFrame,
    imputed_pairs: Iterable[str],
    *,
    recorded_at: dt.datetime,
    is_fallback: bool = False,
) -> pd.DataFrame:
    """Long ``covariance`` rows of a square matrix: the upper triangle and the diagonal in the
    matrix's order, with the implied correlation and the imputed flag (vectorised)."""
    names = [str(n) for n in matrix.index]
    values = matrix.to_numpy(dtype=np.float64)
    i, j = np.triu_indices(len(names))
    cov = values[i, j]
    variances = np.diag(values)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.sqrt(variances[i] * variances[j])
        corr = np.where(scale > 0, cov / scale, np.nan)
    position = {n: k for k, n in enumerate(names)}
    imputed = np.zeros((len(names), len(names)), dtype=bool)
    for label in imputed_pairs:
        a, _, b = str(label).partition(",")
        if a in position and b in position:
            imputed[position[a], position[b]] = imputed[position[b], position[a]] = True
    n = len(i)
    name_array = np.array(names, dtype=object)
    return pd.DataFrame(
        {
            "world_id": [snapshot["world_id"]] * n,
            "version": [snapshot["version"]] * n,
            "as_of": [as_of_timestamp(snapshot)] * n,
            "strategy_a": name_array[i],
            "strategy_b": name_array[j],
            "covariance": cov,
            "correlation": np.clip(corr, -1.0, 1.0),
            "imputed": imputed[i, j],
            "is_fallback": [bool(is_fallback)] * n,
            "recorded_at": [recorded_at] * n,
        },
        columns=list(COVARIANCE_COLUMNS),
    )


def covariance_from_rows(frame: pd.DataFrame) -> dict[str, tuple[pd.DataFrame, list[str]]]:
    """partition key → (square covariance in the rows' order, imputed ``"a,b"`` labels)."""
    out: dict[str, tuple[pd.DataFrame, list[str]]] = {}
    if frame.empty:
        return out
    for key, group in frame.groupby(partition_keys_of(frame), sort=False):
        diagonal = group["strategy_a"] == group["strategy_b"]
        names = list(dict.fromkeys(group.loc[diagonal, "strategy_a"].astype(str)))
        index = pd.Index(names)
        a = index.get_indexer(group["strategy_a"].astype(str))
        b = index.get_indexer(group["strategy_b"].astype(str))
        keep = (a >= 0) & (b >= 0)
        values = np.full((len(names), len(names)), np.nan)
        v = group["covariance"].to_numpy(dtype=np.float64)
        values[a[keep], b[keep]] = v[keep]
        values[b[keep], a[keep]] = v[keep]
        imputed = group["imputed"].fillna(False).astype(bool).to_numpy()
        labels = [
            f"{x},{y}"
            for x, y in zip(group["strategy_a"].to_numpy()[imputed], group["strategy_b"].to_numpy()[imputed])
        ]
        out[str(key)] = (pd.DataFrame(values, index=names, columns=names), labels)
    return out


# ---------------------------------------------------------------------------------------------
# Realized returns


def realized_rows(snapshot: Mapping[str, Any], wide: pd.DataFrame, *, recorded_at: dt.datetime) -> pd.DataFrame:
    """Long ``realized_returns`` rows of a wide frame (oldest row first): ``period`` counts back
    from the newest row (0); ``date`` is kept when the frame is indexed by dates."""
    values = wide.to_numpy(dtype=np.float64)
    n_rows, n_cols = values.shape
    periods = np.arange(n_rows, dtype=np.int64) - (n_rows - 1)
    rows, cols = np.nonzero(np.isfinite(values))
    dated = isinstance(wide.index, pd.DatetimeIndex)
    n = len(rows)
    return pd.DataFrame(
        {
            "world_id": [snapshot["world_id"]] * n,
            "version": [snapshot["version"]] * n,
            "as_of": [as_of_timestamp(snapshot)] * n,
            "strategy_id": np.array([str(c) for c in wide.columns], dtype=object)[cols],
            "period": periods[rows],
            "date": wide.index.to_numpy()[rows] if dated else pd.NaT,
            "ret": values[rows, cols],
            "recorded_at": [recorded_at] * n,
        },
        columns=list(REALIZED_COLUMNS),
    ).sort_values(["strategy_id", "period"], kind="stable").reset_index(drop=True)


def realized_from_rows(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """partition key → wide realized returns (rows = periods oldest first, columns = strategies
    in first-seen order; NaN where a strategy has no value)."""
    out: dict[str, pd.DataFrame] = {}
    if frame.empty:
        return out
    for key, group in frame.groupby(partition_keys_of(frame), sort=False):
        order = list(dict.fromkeys(group["strategy_id"].astype(str)))
        wide = group.pivot(index="period", columns="strategy_id", values="ret").sort_index()
        wide = wide.reindex(columns=order)
        wide.columns = [str(c) for c in wide.columns]
        wide.columns.name = None
        out[str(key)] = wide.astype(np.float64)
    return out


def realized_as_inline(wide: pd.DataFrame) -> dict[str, list[float]]:
    """``{strategy: [oldest, ..., newest]}`` (leading gaps dropped) — the snapshot's inline form."""
    out = {}
    for column in wide.columns:
        series = wide[column].to_numpy(dtype=np.float64)
        finite = np.flatnonzero(np.isfinite(series))
        if len(finite):
            out[str(column)] = series[finite[0]:].tolist()
    return out


# ---------------------------------------------------------------------------------------------
# Portfolio risk


@dataclass(frozen=True)
class Candidate:
    """A candidate strategy: the run that made it one, its variance, and its covariances with the
    held strategies (from the snapshot's covariance when it covers the strategy)."""

    strategy_id: str
    run_id: str
    variance: float
    variance_source: str
    covariances: Mapping[str, float]
    imputed_with: tuple[str, ...] = ()


def _core_recommendation(record: Mapping[str, Any]) -> str | None:
    validation = record.get("validation") or {}
    return validation.get("core_recommended_stage") or (record.get("summary") or {}).get("recommended_stage")


def _submitted(record: Mapping[str, Any]) -> dt.datetime:
    try:
        return parse_timestamp(record.get("submitted_at"))
    except (TypeError, ValueError):
        return dt.datetime.min.replace(tzinfo=dt.timezone.utc)


def portfolio_candidates(
    records: Sequence[Mapping[str, Any]],
    weights: Mapping[str, float],
    covariance: pd.DataFrame | None,
    imputed_pairs: Iterable[str],
    *,
    periods_per_year: float,
) -> tuple[list[Candidate], list[str]]:
    """The world's candidate strategies and notes on runs that could not be one.

    Candidates (as in ``core.extended``): runs whose core recommendation is ``paper_only`` or
    ``paper_ok_live_candidate`` and whose strategy has no non-zero weight; one per strategy, from
    its latest such run (by ``submitted_at``). Variance: the snapshot's when its covariance covers
    the strategy, else the run's ``returns.volatility`` de-annualised (σ/√P) with the cross pairs
    left to ``portfolio_risk`` to impute.
    """
    held = [s for s, w in weights.items() if float(w) != 0]
    held_set = set(held)
    latest: dict[str, tuple[dt.datetime, int, Mapping[str, Any]]] = {}
    for index, record in enumerate(records):
        strategy = str(record["strategy_id"])
        if _core_recommendation(record) not in CANDIDATE_STAGES or strategy in held_set:
            continue
        stamp = (_submitted(record), index)
        if strategy not in latest or stamp > latest[strategy][:2]:
            latest[strategy] = (*stamp, record)
    imputed = {tuple(str(p).split(",", 1)) for p in imputed_pairs}
    covered = set() if covariance is None else set(map(str, covariance.index))
    candidates, notes = [], []
    for strategy, (_, _, record) in latest.items():
        if strategy in covered:
            row = covariance.loc[strategy]  # type: ignore[union-attr]
            covariances = {h: float(row[h]) for h in held if h in covered}
            with_imputed = tuple(h for h in held if (h, strategy) in imputed or (strategy, h) in imputed)
            candidates.append(
                Candidate(strategy, str(record["run_id"]), float(row[strategy]), "snapshot", covariances, with_imputed)
            )
            continue
        volatility = get_path(record.get("metrics") or {}, "returns.volatility")
        if volatility is None or not math.isfinite(float(volatility)):
            notes.append(f"{strategy}: not in the snapshot covariance and its run has no returns.volatility")
            continue
        variance = (float(volatility) / math.sqrt(periods_per_year)) ** 2
        candidates.append(Candidate(strategy, str(record["run_id"]), variance, "run_volatility", {}))
    return candidates, notes


def compute_portfolio_risk(
    snapshot: Mapping[str, Any],
    covariance: pd.DataFrame,
    imputed_pairs: Sequence[str],
    candidates: Sequence[Candidate],
    realized: pd.DataFrame | None,
    *,
    fallback_correlation: float,
) -> dict[str, Any]:
    """``core.portfolio.portfolio_risk`` of the snapshot with every candidate at once, plus the
    historical VaR/ES of the weighted realized returns (``historical``), the member volatilities
    and each candidate's imputed pairs (``candidate_imputed``: {strategy: ["held,candidate"]})."""
    weights = {str(k): float(v) for k, v in (snapshot.get("weights") or {}).items()}
    constraints = snapshot.get("constraints") or {}
    specs = {c.strategy_id: {"variance": c.variance, "covariances": dict(c.covariances)} for c in candidates}
    risk = portfolio_risk(
        weights,
        covariance,
        alpha=ALPHA,
        candidates=specs or None,
        candidate_weight=constraints.get("candidate_weight"),
        fallback_correlation=fallback_correlation,
    )
    held = {s for s, w in weights.items() if w != 0}
    member_imputed = [p for p in imputed_pairs if set(str(p).split(",", 1)) <= held]
    candidate_imputed: dict[str, list[str]] = {c.strategy_id: [f"{h},{c.strategy_id}" for h in c.imputed_with] for c in candidates}
    for label in risk["imputed_pairs"]:
        a, _, b = str(label).partition(",")
        if b in candidate_imputed and a in held:
            candidate_imputed[b].append(label)
    risk["imputed_pairs"] = member_imputed + [p for c in candidates for p in candidate_imputed[c.strategy_id]]
    risk["member_imputed_pairs"] = member_imputed
    risk["candidate_imputed"] = candidate_imputed
    variances = np.diag(covariance.to_numpy(dtype=np.float64))
    position = {str(n): k for k, n in enumerate(covariance.index)}
    risk["member_volatility"] = {
        s: float(math.sqrt(max(variances[position[s]], 0.0))) for s in weights if s in position
    }
    risk["historical"] = historical_var_es(weights, realized, alpha=ALPHA) if realized is not None else None
    return risk


def portfolio_rows(
    snapshot: Mapping[str, Any],
    risk: Mapping[str, Any],
    candidates: Sequence[Candidate],
    *,
    computed_at: dt.datetime,
    is_fallback: bool = False,
) -> list[dict[str, Any]]:
    """``portfolio_risk`` rows of one snapshot: the portfolio, each member and each candidate."""
    base = {
        "world_id": snapshot["world_id"],
        "version": snapshot["version"],
        "as_of": as_of_timestamp(snapshot),
        "computed_at": computed_at,
        "alpha": float(risk["alpha"]),
        "is_fallback": bool(is_fallback),
    }
    historical = risk.get("historical") or {}
    rows = [
        {
            **base,
            "scope": "portfolio",
            "volatility": risk["volatility"],
            "var": risk["var"],
            "es": risk["es"],
            "historical_var": historical.get("var"),
            "historical_es": historical.get("es"),
            "historical_periods": historical.get("n_periods"),
            "historical_covered_weight": historical.get("covered_weight"),
            "imputed_pairs": len(risk.get("member_imputed_pairs") or ()),
        }
    ]
    weights = snapshot.get("weights") or {}
    volatility = risk.get("member_volatility") or {}
    for strategy, weight in weights.items():
        rows.append(
            {
                **base,
                "scope": "member",
                "strategy_id": str(strategy),
                "weight": float(weight),
                "volatility": volatility.get(str(strategy)),
                "component_var": risk["component_var"].get(str(strategy), 0.0),
                "component_es": risk["component_es"].get(str(strategy), 0.0),
            }
        )
    for candidate in candidates:
        sid = candidate.strategy_id
        rows.append(
            {
                **base,
                "scope": "candidate",
                "strategy_id": sid,
                "run_id": candidate.run_id,
                "weight": risk.get("candidate_weight"),
                "volatility": math.sqrt(max(candidate.variance, 0.0)),
                "incremental_var": risk["incremental_var"].get(sid),
                "incremental_es": risk["incremental_es"].get(sid),
                "var_with_candidate": risk["var_with_candidate"].get(sid),
                "es_with_candidate": risk["es_with_candidate"].get(sid),
                "variance_source": candidate.variance_source,
                "imputed_pairs": len(risk.get("candidate_imputed", {}).get(sid, ())),
            }
        )
    return rows


def portfolio_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """``portfolio_risk`` rows as one frame (all snapshots of a batch at once)."""
    frame = _frame(rows, PORTFOLIO_COLUMNS, text=("strategy_id", "run_id", "variance_source"))
    for column in ("historical_periods", "imputed_pairs"):
        frame[column] = frame[column].astype("Int64")
    numbers = [c for c in PORTFOLIO_COLUMNS[7:] if c not in ("historical_periods", "imputed_pairs", "variance_source", "is_fallback")]
    frame[numbers] = frame[numbers].astype("float64")
    return frame


def precomputed_portfolio(frame: pd.DataFrame) -> dict[str, Any] | None:
    """The ``portfolio`` argument of ``core.extended.evaluate_extended_layers`` rebuilt from one
    snapshot's ``portfolio_risk`` rows (keyed by candidate strategy), or None without rows."""
    if frame.empty or not (frame["scope"] == "portfolio").any():
        return None
    from scipy.stats import norm

    book = frame[frame["scope"] == "portfolio"].iloc[0]
    candidates = frame[frame["scope"] == "candidate"]
    weight = candidates["weight"].dropna()
    return {
        "volatility": float(book["volatility"]),
        "var": float(book["var"]),
        "es": float(book["es"]),
        "alpha": float(book["alpha"]),
        "z": float(norm.ppf(float(book["alpha"]))),
        "candidate_weight": float(weight.iloc[0]) if len(weight) else None,
        "incremental_var": dict(zip(candidates["strategy_id"], candidates["incremental_var"].astype(float))),
        "incremental_es": dict(zip(candidates["strategy_id"], candidates["incremental_es"].astype(float))),
        "var_with_candidate": dict(zip(candidates["strategy_id"], candidates["var_with_candidate"].astype(float))),
    }


# ---------------------------------------------------------------------------------------------
# Stress


def _figure(entry: Mapping[str, Any], *names: str) -> float | None:
    for name in names:
        value = entry.get(name)
        if value is not None and not isinstance(value, bool) and isinstance(value, (int, float)):
            return abs(float(value)) if math.isfinite(float(value)) else None
    return None


def _stress_status(
    row: Mapping[str, Any], limits: Mapping[str, float | None] | None
) -> tuple[str | None, str | None]:
    """pass / warn (a limited figure missing) / fail (a figure above its limit), or (None, None)
    when the scenario has no limits. Bounds are inclusive."""
    if not limits or all(v is None for v in limits.values()):
        return None, None
    failures, missing = [], []
    for figure, limit_key in (("max_drawdown", "dd_max"), ("var_99", "var_99"), ("es_99", "es_99")):
        bound = limits.get(limit_key)
        if bound is None:
            continue
        value = row.get(figure)
        if value is None:
            missing.append(f"{figure} missing (limit {bound:g})")
        elif value > bound:
            failures.append(f"{figure} {value:g} above {limit_key} {bound:g}")
    if failures:
        return "fail", "; ".join(failures + missing)
    if missing:
        return "warn", "; ".join(missing)
    return "pass", None


def stress_rows(
    snapshot: Mapping[str, Any],
    limits: Mapping[str, Mapping[str, float | None]],
    *,
    computed_at: dt.datetime,
) -> list[dict[str, Any]]:
    """``stress_results`` rows of one snapshot: a book row per world-level scenario (with the
    stress P&L Σ wᵢ·shockᵢ when it has shocks), a row per strategy and scenario where the
    snapshot gives per-strategy figures or shocks. ``limits``: the world's
    ``stress.scenarios`` as ``{scenario: {dd_max, var_99, es_99}}``; figures are compared by
    absolute value (producers may report losses negative)."""
    world, per_strategy = split_stress(snapshot.get("stress"))
    weights = {str(k): float(v) for k, v in (snapshot.get("weights") or {}).items()}
    pnl = stress_scenario_pnl(snapshot.get("stress"), weights)
    base = {
        "world_id": snapshot["world_id"],
        "version": snapshot["version"],
        "as_of": as_of_timestamp(snapshot),
        "computed_at": computed_at,
    }
    rows: dict[tuple[str, str | None], dict[str, Any]] = {}
    for scenario, entry in world.items():
        row = {
            **base,
            "scenario": scenario,
            "strategy_id": None,
            "max_drawdown": _figure(entry, "max_drawdown", "dd_max"),
            "var_99": _figure(entry, "var_99"),
            "es_99": _figure(entry, "es_99"),
        }
        if scenario in pnl:
            row["stress_pnl"] = pnl[scenario]["portfolio_pnl"]
            row["pnl_covered_weight"] = pnl[scenario]["covered_weight"]
        row["status"], row["reason"] = _stress_status(row, limits.get(scenario))
        rows[(scenario, None)] = row
    for strategy, block in per_strategy.items():
        for scenario, entry in block.items():
            if not isinstance(entry, Mapping):
                continue
            row = {
                **base,
                "scenario": str(scenario),
                "strategy_id": strategy,
                "max_drawdown": _figure(entry, "max_drawdown", "dd_max"),
                "var_99": _figure(entry, "var_99"),
                "es_99": _figure(entry, "es_99"),
            }
            row["status"], row["reason"] = _stress_status(row, limits.get(str(scenario)))
            rows[(str(scenario), strategy)] = row
    for scenario, entry in pnl.items():
        for strategy, shock in (entry.get("shocks") or {}).items():
            row = rows.setdefault((scenario, strategy), {**base, "scenario": scenario, "strategy_id": strategy})
            row["shock"] = float(shock)
            weight = weights.get(strategy, 0.0)
            row["stress_pnl"] = weight * float(shock) if weight else None
    return list(rows.values())


def stress_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """``stress_results`` rows as one frame (all snapshots of a batch at once)."""
    frame = _frame(rows, STRESS_COLUMNS, text=("strategy_id", "status", "reason"))
    for column in ("max_drawdown", "var_99", "es_99", "shock", "stress_pnl", "pnl_covered_weight"):
        frame[column] = frame[column].astype("float64")
    return frame


def stress_report_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Stress rows of one snapshot as the snapshot report shows them."""
    columns = ["scenario", "strategy_id", "max_drawdown", "var_99", "es_99", "stress_pnl", "status"]
    rows = frame[columns].astype(object).where(frame[columns].notna(), None).to_dict("records")
    return [{k: v for k, v in row.items() if not (k == "stress_pnl" and v is None)} for row in rows]


# ---------------------------------------------------------------------------------------------
# Live monitoring


def live_monitoring_rows(
    snapshot: Mapping[str, Any], metrics: pd.DataFrame, *, computed_at: dt.datetime
) -> pd.DataFrame:
    """``live_monitoring`` rows from ``core.live_monitoring.live_monitoring_metrics`` output."""
    frame = metrics.rename(columns={v: k for k, v in _LIVE_RENAMES.items()})
    frame = frame.assign(
        world_id=snapshot["world_id"],
        version=snapshot["version"],
        as_of=as_of_timestamp(snapshot),
        computed_at=computed_at,
    )
    for column in ("reason", "notes"):
        frame[column] = frame[column].where(frame[column].astype(str) != "", None)
    return frame.reindex(columns=list(LIVE_COLUMNS))


def live_monitoring_frames(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """partition key → the ``live_monitoring_metrics``-shaped frame of its rows."""
    out: dict[str, pd.DataFrame] = {}
    if frame.empty:
        return out
    for key, group in frame.groupby(partition_keys_of(frame), sort=False):
        core = group.rename(columns=_LIVE_RENAMES)
        core = core.assign(demotion_reasons=core["demotion_reasons"].fillna(""), notes=core["notes"].fillna(""))
        out[str(key)] = core.reindex(columns=list(LIVE_MONITORING_COLUMNS)).reset_index(drop=True)
    return out


# ---------------------------------------------------------------------------------------------
# Reads other areas use


def latest_snapshots(lake: Lake, world_id: str | None = None, *, include_fallbacks: bool = False) -> pd.DataFrame:
    """The newest materialisation of every snapshot version (of one world), newest ``as_of`` first."""
    frame = latest_rows(lake, "risk_snapshots", world_id=world_id, key_expression=SNAPSHOT_KEY_SQL)
    if not include_fallbacks:
        frame = frame[~frame["is_fallback"].fillna(False).astype(bool)]
    return frame.sort_values(["world_id", "as_of", "version"], ascending=[True, False, False], kind="stable").reset_index(drop=True)


def world_snapshot_status(lake: Lake) -> pd.DataFrame:
    """Each world's current (newest ``as_of``) producer snapshot: ``world_id``, ``version``,
    ``as_of``, ``recorded_at`` — what the freshness sensor compares with ``max_snapshot_lag``."""
    frame = latest_snapshots(lake)
    newest = frame.drop_duplicates("world_id", keep="first")
    return newest[["world_id", "version", "as_of", "recorded_at"]].reset_index(drop=True)


def open_breaches(lake: Lake, world_id: str | None = None) -> pd.DataFrame:
    """Freshness breach episodes whose latest row is ``open`` (of one world when given)."""
    frame = latest_rows(lake, "freshness_breaches", world_id=world_id, key_expression="world_id || '/' || breach_id")
    return frame[frame["status"] == "open"].reset_index(drop=True)


def world_in_breach(lake: Lake, world_id: str) -> bool:
    """True while ``world_id`` has an open freshness breach (``freshness_breaches`` latest rows):
    its snapshot is older than ``risk_hub.max_snapshot_lag`` and no fresh one has arrived."""
    return not open_breaches(lake, world_id).empty
