"""The extended validation layers of a world, evaluated after a risk snapshot lands (SPEC §7, §8).

:func:`evaluate_extended_layers` is the one entry point the Dagster layer calls for a world: it
takes the world's latest run records and its latest (or fallback) risk snapshot, runs every
layer the policy configures, and returns ``{run_key: {rule_name: RuleResult}}``.
:func:`apply_extended` merges one run's results into its record (summary recomputed through
:func:`qmtl_validation.core.evaluation.merge_results`) and returns the change reason, which the
Dagster layer writes as a new history revision.

Which runs get which layer (runs are plain dicts: ``world_id``, ``strategy_id``, ``run_id``,
``stage``, ``campaign_id``, ``submitted_at``, ``metrics`` (nested, SPEC §5), ``validation``,
``summary``):

- ``portfolio`` — *candidates*: runs whose core recommendation is ``paper_only`` or
  ``paper_ok_live_candidate`` (``validation.core_recommended_stage`` when recorded, else
  ``summary.recommended_stage``) and whose strategy has no non-zero weight in the snapshot.
  Settings: the run's profile's ``portfolio`` block, else the top-level one. Incremental VaR/ES
  of every candidate come from one :func:`~qmtl_validation.core.portfolio.portfolio_risk` call:
  each candidate enters alone at α_c (snapshot ``constraints.candidate_weight``, else 1/(n+1));
  its variance and covariances are the snapshot's, or — for a strategy the covariance does not
  cover — the variance of its run's ``returns.volatility`` de-annualised (σ/√P) with every cross
  pair imputed at the world's ``fallback_correlation`` (flagged). The Sharpe uplift is
  :func:`~qmtl_validation.core.rules.portfolio.portfolio_sharpe_uplift` with each held
  strategy's annualised Sharpe from its representative run (below).
- ``stress`` — candidates and the representative run of every weighted strategy.
- ``live_monitoring`` — per strategy, its latest live run (else its latest paper run), when the
  strategy has a realized series (or the run is live: then the missing series is reported).
  Windows per :func:`~qmtl_validation.core.rules.live_monitoring.live_windows`; the backtest
  Sharpe for decay is the strategy's latest backtest run's ``returns.sharpe``.
- ``cohort`` — runs with a ``campaign_id``, one cohort per (campaign, stage).
- ``paper_shadow_consistency`` — runs of a listed stage; baseline = the strategy's latest
  backtest run.
- ``benchmark`` — every run.

"Latest" orders by ``submitted_at`` (ISO-8601; unparseable or absent sorts first), then list
order. A strategy's *representative* run is its latest live run, else latest paper, else latest
backtest.

Snapshot freshness: the snapshot is stale when ``snapshot_stale`` is set (the freshness sensor's
verdict) or when ``now`` is given and ``now − as_of`` exceeds ``risk_hub.max_snapshot_lag``. A
high-tier client-critical world then fails its portfolio rules closed (``risk_snapshot_stale``);
any other world uses the snapshot it was given — the caller passes the conservative fallback
(:func:`~qmtl_validation.core.snapshot.conservative_fallback_snapshot`) while the feed is
stale, and ``details.snapshot`` records ``stale``, ``fallback`` and ``previous_version``.

Severity and owner of each layer: its default (reference §2.3: cohort soft/risk, portfolio
soft/risk, stress info/ops, live_monitoring soft/risk, paper_shadow_consistency soft/ops,
benchmark soft/quant), then the section's ``severity``/``owner``; in a high-tier
client-critical world an override can only make a layer stricter. ``on_missing_metric`` /
``on_error`` are the policy's effective ones (fail/fail when fail-closed). Every rule runs
through :func:`~qmtl_validation.core.rules.core_rules.run_rule`, so a raising rule becomes a
``rule_error`` result.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from qmtl_validation.core.evaluation import EvaluationResult, merge_results, normalise_stage
from qmtl_validation.core.health import get_path, validation_health
from qmtl_validation.core.identifiers import run_partition_key
from qmtl_validation.core.live_monitoring import live_monitoring_metrics
from qmtl_validation.core.policy import SEVERITIES, Policy
from qmtl_validation.core.portfolio import portfolio_risk
from qmtl_validation.core.rules.base import RuleResult
from qmtl_validation.core.rules.benchmark import BenchmarkRule, benchmark_thresholds
from qmtl_validation.core.rules.cohort import CohortRule, cohort_contexts, cohort_thresholds
from qmtl_validation.core.rules.core_rules import CoreRule, number, run_rule
from qmtl_validation.core.rules.live_monitoring import LiveMonitoringContext, LiveMonitoringRule
from qmtl_validation.core.rules.paper_shadow import (
    PaperShadowConsistencyRule,
    PaperShadowContext,
    paper_shadow_thresholds,
)
from qmtl_validation.core.rules.portfolio import (
    PortfolioContext,
    PortfolioRule,
    portfolio_sharpe_uplift,
    portfolio_thresholds,
)
from qmtl_validation.core.rules.stress import ScenarioLimits, StressContext, StressRule, stress_scenario_pnl
from qmtl_validation.core.snapshot import parse_covariance, parse_timestamp, realized_returns_frame

LAYER_ORDER: tuple[str, ...] = (
    "cohort",
    "portfolio",
    "stress",
    "live_monitoring",
    "paper_shadow_consistency",
    "benchmark",
)
CANDIDATE_STAGES: tuple[str, ...] = ("paper_only", "paper_ok_live_candidate")

_OLDEST = datetime.min.replace(tzinfo=timezone.utc)
_STAGE_PREFERENCE = ("live", "paper", "backtest")


# --------------------------------------------------------------------------------------------
# Building the rules of a policy


def _strictness(severity: str) -> int:
    return len(SEVERITIES) - SEVERITIES.index(severity)


def layer_severity(policy: Policy, default: str, override: str | None) -> str:
    """The section's severity, else the layer default; never looser than the default in a
    high-tier client-critical world."""
    if override is None:
        return default
    if policy.fail_closed and _strictness(override) < _strictness(default):
        return default
    return override


def _common(policy: Policy, section: Any, rule_class: type[CoreRule]) -> dict[str, Any]:
    validation = policy.effective_validation
    return {
        "severity": layer_severity(policy, rule_class.default_severity, section.severity),  # type: ignore[attr-defined]
        "owner": section.owner or rule_class.default_owner,  # type: ignore[attr-defined]
        "on_missing_metric": validation.on_missing_metric,
        "on_error": validation.on_error,
    }


def build_extended_rules(policy: Policy, profile_name: str | None = None) -> dict[str, CoreRule]:
    """The extended-layer rules ``policy`` configures, in :data:`LAYER_ORDER`, for runs validated
    under ``profile_name`` (which decides the ``portfolio`` block). Unconfigured layers are absent."""
    rules: dict[str, CoreRule] = {}
    if policy.cohort is not None:
        c = policy.cohort
        rules["cohort"] = CohortRule(
            **_common(policy, c, CohortRule),
            thresholds=cohort_thresholds(c.sharpe_median_min, c.dsr_median_min),
            top_k=c.top_k,
        )
    portfolio = policy.portfolio_for(profile_name)
    if portfolio is not None:
        profile = policy.profile(profile_name)
        source = (
            f"validation_profiles.{profile_name}.portfolio"
            if profile is not None and profile.portfolio is not None
            else "portfolio"
        )
        rules["portfolio"] = PortfolioRule(
            **_common(policy, portfolio, PortfolioRule),
            thresholds=portfolio_thresholds(
                portfolio.max_incremental_var_99,
                portfolio.max_incremental_es_99,
                portfolio.min_portfolio_sharpe_uplift,
                source,
            ),
            fail_closed=policy.fail_closed,
        )
    if policy.stress is not None:
        s = policy.stress
        rules["stress"] = StressRule(
            **_common(policy, s, StressRule),
            scenarios={
                name: ScenarioLimits(dd_max=limits.dd_max, var_99=limits.var_99, es_99=limits.es_99)
                for name, limits in s.scenarios.items()
            },
        )
    if policy.live_monitoring is not None:
        lm = policy.live_monitoring
        rules["live_monitoring"] = LiveMonitoringRule(
            **_common(policy, lm, LiveMonitoringRule),
            sharpe_min=lm.sharpe_min,
            dd_max=lm.dd_max,
            decay_threshold=lm.decay_threshold,
            lookback_days=lm.lookback_days,
        )
    if policy.paper_shadow_consistency is not None:
        p = policy.paper_shadow_consistency
        rules["paper_shadow_consistency"] = PaperShadowConsistencyRule(
            **_common(policy, p, PaperShadowConsistencyRule),
            thresholds=paper_shadow_thresholds(
                p.min_sharpe_ratio, p.max_drawdown_ratio, p.max_var_p01_ratio, p.max_es_p01_ratio
            ),
            stages=tuple(p.stages),
        )
    if policy.benchmark is not None:
        rules["benchmark"] = BenchmarkRule(
            **_common(policy, policy.benchmark, BenchmarkRule),
            thresholds=benchmark_thresholds(policy.benchmark.min_vs_benchmark_sharpe),
        )
    return rules


# --------------------------------------------------------------------------------------------
# Run records


@dataclasses.dataclass(frozen=True)
class _Run:
    index: int
    key: str
    record: Mapping[str, Any]
    strategy_id: str
    stage: str
    metrics: Mapping[str, Any]
    profile: str | None
    core_recommended_stage: str | None
    submitted_at: datetime


def _submitted(value: Any) -> datetime:
    if value is None:
        return _OLDEST
    try:
        return parse_timestamp(value)
    except (TypeError, ValueError):
        return _OLDEST


def run_key(record: Mapping[str, Any]) -> str:
    """``world/strategy/run`` of a run record (the ``evaluation_runs`` partition key)."""
    return run_partition_key(record["world_id"], record["strategy_id"], record["run_id"])


def _runs(records: Sequence[Mapping[str, Any]], policy: Policy) -> list[_Run]:
    out = []
    for i, record in enumerate(records):
        validation = record.get("validation") or {}
        summary = record.get("summary") or {}
        stage = normalise_stage(record.get("stage"))
        profile = validation["profile"] if "profile" in validation else policy.profile_for_stage(stage)
        metrics = record.get("metrics") or {}
        if not isinstance(metrics, Mapping):
            raise ValueError(f"run {run_key(record)}: metrics must be a nested mapping")
        out.append(
            _Run(
                index=i,
                key=run_key(record),
                record=record,
                strategy_id=str(record["strategy_id"]),
                stage=stage,
                metrics=metrics,
                profile=profile,
                core_recommended_stage=validation.get("core_recommended_stage") or summary.get("recommended_stage"),
                submitted_at=_submitted(record.get("submitted_at")),
            )
        )
    return out


def _latest(runs: Iterable[_Run]) -> _Run | None:
    return max(runs, key=lambda r: (r.submitted_at, r.index), default=None)


class _Strategies:
    """The world's runs grouped by strategy and stage."""

    def __init__(self, runs: Sequence[_Run]):
        self.by_stage: dict[str, dict[str, list[_Run]]] = defaultdict(lambda: defaultdict(list))
        for run in runs:
            self.by_stage[run.strategy_id][run.stage].append(run)

    def latest(self, strategy_id: str, stages: Sequence[str]) -> _Run | None:
        """Latest run of the first stage in ``stages`` that has one."""
        stages_of = self.by_stage.get(strategy_id, {})
        for stage in stages:
            run = _latest(stages_of.get(stage, ()))
            if run is not None:
                return run
        return None

    def representative(self, strategy_id: str) -> _Run | None:
        return self.latest(strategy_id, _STAGE_PREFERENCE)


# --------------------------------------------------------------------------------------------
# Snapshot facts


def _clean(value: Any) -> float | None:
    value = number(value)
    return None if value is None else float(value)


def _snapshot_info(
    snapshot: Mapping[str, Any] | None, policy: Policy, stale_flag: bool, now: datetime | None
) -> tuple[dict[str, Any] | None, bool]:
    max_lag = policy.risk_hub.max_snapshot_lag.total_seconds()
    if snapshot is None:
        return None, bool(stale_flag)
    as_of = snapshot.get("as_of")
    lag = None
    if now is not None and as_of is not None:
        lag = (now - parse_timestamp(as_of)).total_seconds()
    stale = bool(stale_flag) or (lag is not None and lag > max_lag)
    fallback = snapshot.get("fallback")
    is_fallback = isinstance(fallback, Mapping) or (snapshot.get("provenance") or {}).get("source") == "conservative_fallback"
    info = {
        "world_id": snapshot.get("world_id"),
        "version": snapshot.get("version"),
        "as_of": as_of,
        "lag_seconds": lag,
        "max_snapshot_lag_seconds": max_lag,
        "stale": stale,
        "fallback": bool(is_fallback),
        "previous_version": fallback.get("previous_version") if isinstance(fallback, Mapping) else None,
    }
    return info, stale


def _held_weights(snapshot: Mapping[str, Any] | None) -> dict[str, float]:
    if snapshot is None:
        return {}
    weights = snapshot.get("weights") or {}
    return {str(k): float(v) for k, v in weights.items() if number(v) is not None and float(v) != 0}


# --------------------------------------------------------------------------------------------
# Portfolio figures of the candidates


def _with_variance(source: Any, names: Sequence[str]) -> set[str]:
    """Those of ``names`` the covariance source gives a finite variance for."""
    if isinstance(source, Mapping):
        return {n for n in names if _clean(source.get(f"{n},{n}", source.get(f"{n}:{n}"))) is not None}
    if {"strategy_a", "strategy_b", "covariance"} <= set(source.columns):
        a = source["strategy_a"].astype(str).to_numpy()
        diagonal = (a == source["strategy_b"].astype(str).to_numpy()) & np.isfinite(
            source["covariance"].to_numpy(dtype=np.float64)
        )
        return set(a[diagonal].tolist()) & set(names)
    square = source.rename(index=str, columns=str)
    return {n for n in names if n in square.index and n in square.columns and _clean(square.at[n, n]) is not None}


def _covariance_frame(source: Any, held: Sequence[str], others: Sequence[str], rho: float) -> pd.DataFrame:
    """Square covariance over ``held`` plus those of ``others`` the source gives a variance for,
    NaN for every pair the source lacks (``portfolio_risk`` imputes and flags them).

    ``source``: what :func:`~qmtl_validation.core.snapshot.parse_covariance` reads (the flat
    ``{"a,b": v}`` map, a square or a long DataFrame). A held strategy without a variance raises
    ``SnapshotContractError``.
    """
    if not isinstance(source, (Mapping, pd.DataFrame)):
        raise ValueError("covariance must be a mapping or a DataFrame")
    covered = _with_variance(source, [o for o in others if o not in set(held)])
    names = list(held) + [o for o in others if o in covered]
    frame, imputed = parse_covariance(source, names, fallback_correlation=rho, check_psd=False)
    if imputed:
        position = {name: i for i, name in enumerate(names)}
        pairs = np.array([[position[a], position[b]] for a, _, b in (p.partition(",") for p in imputed)])
        values = frame.to_numpy(copy=True)
        values[pairs[:, 0], pairs[:, 1]] = np.nan
        values[pairs[:, 1], pairs[:, 0]] = np.nan
        frame = pd.DataFrame(values, index=names, columns=names)
    return frame


def _some(names: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _portfolio_contexts(
    candidates: Sequence[_Run],
    *,
    snapshot: Mapping[str, Any] | None,
    snapshot_info: Mapping[str, Any] | None,
    stale: bool,
    covariance: Any,
    precomputed: Mapping[str, Any] | None,
    strategies: _Strategies,
    policy: Policy,
) -> dict[str, PortfolioContext]:
    """One :class:`PortfolioContext` per candidate run key (module docstring)."""
    base = {"snapshot_stale": stale, "snapshot": snapshot_info}
    if not candidates:
        return {}
    if snapshot is None:
        return {r.key: PortfolioContext(**base, notes=("no risk snapshot for the world",)) for r in candidates}
    weights = {str(k): float(v) for k, v in (snapshot.get("weights") or {}).items()}
    held = [s for s, w in weights.items() if w != 0]
    source = covariance if covariance is not None else snapshot.get("covariance")
    pre_var = dict((precomputed or {}).get("incremental_var") or {})
    if source is None and not pre_var:
        return {
            r.key: PortfolioContext(**base, notes=("the snapshot has no covariance (resolve covariance_ref first)",))
            for r in candidates
        }
    try:
        return _compute_portfolio_contexts(
            candidates, weights, held, source, precomputed, snapshot, base, strategies, policy
        )
    except Exception as exc:  # noqa: BLE001 - becomes each candidate's rule_error
        message = f"portfolio risk of snapshot {snapshot.get('version')} failed: {exc}"
        return {r.key: PortfolioContext(**base, error=message) for r in candidates}


def _compute_portfolio_contexts(
    candidates: Sequence[_Run],
    weights: Mapping[str, float],
    held: list[str],
    source: Any,
    precomputed: Mapping[str, Any] | None,
    snapshot: Mapping[str, Any],
    base: Mapping[str, Any],
    strategies: _Strategies,
    policy: Policy,
) -> dict[str, PortfolioContext]:
    periods = float(policy.annualization.periods_per_year)
    rho = float(policy.risk_hub.fallback_correlation)
    cand_strategies = list(dict.fromkeys(r.strategy_id for r in candidates))
    if source is not None:
        cov = _covariance_frame(source, held, cand_strategies, rho)
    else:
        cov = pd.DataFrame(np.nan, index=held, columns=held)
    # Candidates the covariance does not cover get an all-NaN row and column.
    names = list(cov.index) + [s for s in cand_strategies if s not in set(cov.index)]
    matrix = np.full((len(names), len(names)), np.nan)
    matrix[: len(cov), : len(cov)] = cov.to_numpy()
    n = len(held)
    held_vols = np.sqrt(np.diag(matrix)[:n])
    position = {name: i for i, name in enumerate(names)}

    # Candidate variance: the snapshot's, else the run's own annualised volatility de-annualised.
    notes: dict[str, list[str]] = {r.key: [] for r in candidates}
    variance = np.full(len(candidates), np.nan)
    variance_source: list[str | None] = [None] * len(candidates)
    for c, run in enumerate(candidates):
        snap_var = matrix[position[run.strategy_id], position[run.strategy_id]]
        if np.isfinite(snap_var):
            variance[c], variance_source[c] = snap_var, "snapshot"
            continue
        vol = _clean(get_path(run.metrics, "returns.volatility"))
        if vol is not None:
            variance[c], variance_source[c] = (vol / math.sqrt(periods)) ** 2, "run_volatility"
            notes[run.key].append(
                "candidate not in the snapshot covariance: variance from its returns.volatility, "
                f"cross pairs imputed at correlation {rho:g}"
            )
        else:
            notes[run.key].append("no variance for the candidate (not in the snapshot covariance, no returns.volatility)")

    pre_var = dict((precomputed or {}).get("incremental_var") or {})
    pre_es = dict((precomputed or {}).get("incremental_es") or {})
    pre_with = dict((precomputed or {}).get("var_with_candidate") or {})
    use_pre = np.array([r.strategy_id in pre_var and r.strategy_id in pre_es for r in candidates], dtype=bool)
    compute = np.isfinite(variance) & ~use_pre
    labels = [r.key for r, flag in zip(candidates, compute) if flag]

    inc_var = np.full(len(candidates), np.nan)
    inc_es = np.full(len(candidates), np.nan)
    with_vol = np.full(len(candidates), np.nan)
    imputed: dict[str, list[str]] = {r.key: [] for r in candidates}
    base_vol = _clean((precomputed or {}).get("volatility"))
    z = _clean((precomputed or {}).get("z"))
    alpha_c = _clean((precomputed or {}).get("candidate_weight"))
    world_imputed: list[str] = []
    if labels or base_vol is None:
        idx = np.array([position[r.strategy_id] for r, flag in zip(candidates, compute) if flag], dtype=np.int64)
        size = n + len(labels)
        big = np.full((size, size), np.nan)
        big[:n, :n] = matrix[:n, :n]
        big[:n, n:] = matrix[:n, idx]
        big[n:, :n] = matrix[idx, :n]
        big[np.arange(n, size), np.arange(n, size)] = variance[compute]
        frame = pd.DataFrame(big, index=held + labels, columns=held + labels)
        constraints = snapshot.get("constraints") or {}
        risk = portfolio_risk(
            weights,
            frame,
            candidates=labels or None,
            candidate_weight=constraints.get("candidate_weight"),
            fallback_correlation=rho,
        )
        base_vol, z = risk["volatility"], risk["z"]
        if labels:
            alpha_c = risk["candidate_weight"]
        label_set = set(labels)
        for pair in risk["imputed_pairs"]:
            a, _, b = pair.partition(",")
            if b in label_set:
                imputed[b].append(a)
            elif a in label_set:
                imputed[a].append(b)
            else:
                world_imputed.append(pair)
        where = np.flatnonzero(compute)
        inc_var[where] = [risk["incremental_var"][k] for k in labels]
        inc_es[where] = [risk["incremental_es"][k] for k in labels]
        with_vol[where] = [risk["var_with_candidate"][k] / risk["z"] for k in labels]
    for c in np.flatnonzero(use_pre):
        sid = candidates[c].strategy_id
        inc_var[c], inc_es[c] = float(pre_var[sid]), float(pre_es[sid])
        if sid in pre_with and z:
            with_vol[c] = float(pre_with[sid]) / z

    # Sharpe uplift needs each held strategy's annualised Sharpe (from its representative run).
    held_sharpe = np.full(n, np.nan)
    lacking: list[str] = []
    for i, sid in enumerate(held):
        run = strategies.representative(sid)
        value = None if run is None else _clean(get_path(run.metrics, "returns.sharpe"))
        if value is None:
            lacking.append(sid)
        else:
            held_sharpe[i] = value
    cand_sharpe = np.array(
        [np.nan if (v := _clean(get_path(r.metrics, "returns.sharpe"))) is None else v for r in candidates]
    )
    uplift = np.full(len(candidates), np.nan)
    if not lacking and base_vol is not None and alpha_c is not None:
        uplift = portfolio_sharpe_uplift(
            np.array([weights[s] for s in held]),
            held_sharpe,
            held_vols,
            base_vol,
            cand_sharpe,
            np.sqrt(variance),
            with_vol,
            alpha_c,
        )
    out: dict[str, PortfolioContext] = {}
    for c, run in enumerate(candidates):
        run_notes = list(notes[run.key])
        if lacking:
            run_notes.append(f"portfolio Sharpe undefined: no returns.sharpe for held strategies {_some(lacking)}")
        elif not np.isfinite(cand_sharpe[c]):
            run_notes.append("Sharpe uplift undefined: the run has no returns.sharpe")
        figures = {
            "strategy_id": run.strategy_id,
            "candidate_weight": alpha_c,
            "source": "precomputed" if use_pre[c] else "portfolio_risk",
            "variance_source": variance_source[c],
            "candidate_volatility": _clean(math.sqrt(variance[c])) if np.isfinite(variance[c]) else None,
            "portfolio_volatility": _clean(base_vol),
            "volatility_with_candidate": _clean(with_vol[c]),
            "var_99": _clean(None if base_vol is None or z is None else z * base_vol),
            "var_99_with_candidate": _clean(with_vol[c] * z) if z is not None else None,
            "imputed_pairs": [f"{other},{run.strategy_id}" for other in imputed[run.key]],
            "world_imputed_pairs": len(world_imputed),
        }
        out[run.key] = PortfolioContext(
            **base,
            incremental_var_99=_clean(inc_var[c]),
            incremental_es_99=_clean(inc_es[c]),
            portfolio_sharpe_uplift=_clean(uplift[c]),
            figures=figures,
            notes=tuple(run_notes),
        )
    return out


# --------------------------------------------------------------------------------------------
# Live monitoring rows


def _live_rows(
    frame: pd.DataFrame | None,
    realized: Any,
    *,
    strategies: _Strategies,
    rule: LiveMonitoringRule,
    policy: Policy,
) -> dict[str, list[dict[str, Any]]]:
    """The live-monitoring table's rows grouped by strategy (``frame`` when given, else computed
    from the ``realized`` series with each strategy's latest backtest Sharpe)."""
    if frame is None:
        if realized is None:
            return {}
        realized_frame = realized if isinstance(realized, pd.DataFrame) else realized_returns_frame(realized)
        backtest = {}
        for sid in map(str, realized_frame.columns):
            run = strategies.latest(sid, ("backtest",))
            value = None if run is None else _clean(get_path(run.metrics, "returns.sharpe"))
            if value is not None:
                backtest[sid] = value
        frame = live_monitoring_metrics(
            realized_frame,
            backtest_sharpe=backtest,
            windows=rule.windows,
            periods_per_year=float(policy.annualization.periods_per_year),
            sharpe_min=rule.sharpe_min,
            dd_max=rule.dd_max,
            decay_threshold=rule.decay_threshold,
        )
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in frame.to_dict("records"):
        if int(row.get("n_periods") or 0) > 0:
            rows[str(row["strategy_id"])].append(row)
    return rows


def _realized_columns(realized: Any) -> list[Any]:
    if isinstance(realized, pd.DataFrame):
        return list(realized.columns)
    return list(realized) if isinstance(realized, Mapping) else []


# --------------------------------------------------------------------------------------------
# The entry point


def evaluate_extended_layers(
    runs: Sequence[Mapping[str, Any]],
    policy: Policy | None,
    *,
    snapshot: Mapping[str, Any] | None = None,
    portfolio: Mapping[str, Any] | None = None,
    live_monitoring: pd.DataFrame | None = None,
    snapshot_stale: bool = False,
    now: datetime | str | None = None,
    covariance: Any = None,
    realized_returns: Any = None,
) -> dict[str, dict[str, RuleResult]]:
    """Every configured extended layer for a world's runs (module docstring).

    ``runs``: the world's latest run records (plain dicts, one world). ``policy``: the world's
    current policy (None → nothing to evaluate, ``{}``). ``snapshot``: the validated latest risk
    snapshot (normalised, SPEC §8), or the conservative fallback while the feed is stale.
    ``portfolio``: optionally a precomputed :func:`portfolio_risk` result of that snapshot whose
    ``incremental_var``/``incremental_es``/``var_with_candidate`` are keyed by candidate strategy
    id; candidates it covers use its figures, the others are computed here. ``live_monitoring``:
    optionally the snapshot's :func:`live_monitoring_metrics` table (else computed from the
    snapshot's realized returns; the policy's thresholds are applied either way).
    ``snapshot_stale``: the freshness verdict. ``now``: datetime or ISO-8601 text, for the
    snapshot lag (never defaulted to the wall clock). ``covariance`` / ``realized_returns``: the
    resolved ``covariance_ref`` / ``realized_returns_ref`` of a snapshot that references them
    (flat map or DataFrame; wide DataFrame or ``{strategy: [r...]}``).

    Returns ``{run_key: {rule_name: RuleResult}}`` for runs that got at least one result,
    results in :data:`LAYER_ORDER`, runs in input order.
    """
    if policy is None or not runs:
        return {}
    world_ids = {str(r.get("world_id")) for r in runs}
    if len(world_ids) != 1:
        raise ValueError(f"runs of one world expected, got worlds {sorted(world_ids)}")
    world_id = world_ids.pop()
    if snapshot is not None and snapshot.get("world_id") not in (None, world_id):
        raise ValueError(f"snapshot of world {snapshot.get('world_id')!r} given for world {world_id!r}")
    now_ts = None if now is None else parse_timestamp(now)
    info, stale = _snapshot_info(snapshot, policy, snapshot_stale, now_ts)

    records = _runs(runs, policy)
    strategies = _Strategies(records)
    held = _held_weights(snapshot)
    rules_by_profile: dict[str | None, dict[str, CoreRule]] = {}

    def rules_of(run: _Run) -> dict[str, CoreRule]:
        if run.profile not in rules_by_profile:
            rules_by_profile[run.profile] = build_extended_rules(policy, run.profile)
        return rules_by_profile[run.profile]

    results: dict[str, dict[str, RuleResult]] = defaultdict(dict)
    world_rules = build_extended_rules(policy, None)  # layers whose settings do not depend on the profile

    # cohort ------------------------------------------------------------------------------
    cohort_rule = world_rules.get("cohort")
    if cohort_rule is not None:
        cohorts: dict[tuple[str, str], list[_Run]] = defaultdict(list)
        for run in records:
            campaign = run.record.get("campaign_id")
            if campaign:
                cohorts[(str(campaign), run.stage)].append(run)
        for (campaign, stage), members in cohorts.items():
            contexts = cohort_contexts([m.metrics for m in members], campaign_id=campaign, stage=stage)
            for member, context in zip(members, contexts):
                results[member.key]["cohort"] = run_rule(cohort_rule, member.metrics, context)

    # portfolio candidates ----------------------------------------------------------------
    candidates = [r for r in records if r.core_recommended_stage in CANDIDATE_STAGES and r.strategy_id not in held]
    portfolio_runs = [r for r in candidates if "portfolio" in rules_of(r)]
    candidate_weight: float | None = None
    if portfolio_runs:
        contexts = _portfolio_contexts(
            portfolio_runs,
            snapshot=snapshot,
            snapshot_info=info,
            stale=stale,
            covariance=covariance,
            precomputed=portfolio,
            strategies=strategies,
            policy=policy,
        )
        for run in portfolio_runs:
            context = contexts[run.key]
            candidate_weight = candidate_weight or context.figures.get("candidate_weight")
            results[run.key]["portfolio"] = run_rule(rules_of(run)["portfolio"], run.metrics, context)

    # stress ------------------------------------------------------------------------------
    stress_rule = world_rules.get("stress")
    if stress_rule is not None:
        targets = {r.key: r for r in candidates}
        for sid in held:
            run = strategies.representative(sid)
            if run is not None:
                targets.setdefault(run.key, run)
        snapshot_stress = None if snapshot is None else snapshot.get("stress")
        error = None
        pnl: dict[str, Any] = {}
        try:
            pnl = stress_scenario_pnl(snapshot_stress, held)
        except Exception as exc:  # noqa: BLE001 - becomes each run's rule_error
            error = f"stress scenario P&L of snapshot {(snapshot or {}).get('version')} failed: {exc}"
        if candidate_weight is None and snapshot is not None:
            candidate_weight = _clean((snapshot.get("constraints") or {}).get("candidate_weight")) or (
                1.0 / (len(snapshot.get("weights") or {}) + 1)
            )
        candidate_keys = {r.key for r in candidates}
        for run in sorted(targets.values(), key=lambda r: r.index):
            context = StressContext(
                strategy_id=run.strategy_id,
                snapshot_stress=snapshot_stress,
                scenario_pnl=pnl,
                candidate_weight=candidate_weight if run.key in candidate_keys else None,
                snapshot=info,
                error=error,
            )
            results[run.key]["stress"] = run_rule(stress_rule, run.metrics, context)

    # live monitoring ---------------------------------------------------------------------
    live_rule = world_rules.get("live_monitoring")
    if live_rule is not None:
        realized = realized_returns if realized_returns is not None else (snapshot or {}).get("realized_returns")
        live_error = None
        try:
            rows = _live_rows(
                live_monitoring, realized, strategies=strategies, rule=live_rule, policy=policy  # type: ignore[arg-type]
            )
            monitored = set(rows)
        except Exception as exc:  # noqa: BLE001 - becomes each monitored run's rule_error
            live_error = f"live monitoring of snapshot {(snapshot or {}).get('version')} failed: {exc}"
            rows = {}
            monitored = {str(c) for c in _realized_columns(realized)}
        for sid in strategies.by_stage:
            run = strategies.latest(sid, ("live", "paper"))
            if run is None or (sid not in monitored and run.stage != "live"):
                continue
            notes = () if sid in rows or live_error else ("no realized returns for the strategy in the risk snapshot",)
            context = LiveMonitoringContext(
                strategy_id=sid, windows=rows.get(sid, ()), snapshot=info, notes=notes, error=live_error
            )
            results[run.key]["live_monitoring"] = run_rule(live_rule, run.metrics, context)

    # paper / shadow consistency ----------------------------------------------------------
    paper_rule = world_rules.get("paper_shadow_consistency")
    if paper_rule is not None:
        for run in records:
            if not paper_rule.applies_to(run.stage):  # type: ignore[attr-defined]
                continue
            baseline = strategies.latest(run.strategy_id, ("backtest",))
            context = PaperShadowContext(
                baseline_run_id=None if baseline is None else str(baseline.record["run_id"]),
                baseline_metrics=None if baseline is None else baseline.metrics,
            )
            results[run.key]["paper_shadow_consistency"] = run_rule(paper_rule, run.metrics, context)

    # benchmark ---------------------------------------------------------------------------
    benchmark_rule = world_rules.get("benchmark")
    if benchmark_rule is not None:
        for run in records:
            results[run.key]["benchmark"] = run_rule(benchmark_rule, run.metrics, None)

    ordered: dict[str, dict[str, RuleResult]] = {}
    for run in records:
        layers = results.get(run.key)
        if layers:
            ordered[run.key] = {name: layers[name] for name in LAYER_ORDER if name in layers}
    return ordered


# --------------------------------------------------------------------------------------------
# Merging into a run record


def change_reason(snapshot: Mapping[str, Any] | None = None) -> str:
    """``extended:risk_snapshot <world>/<version>`` for a pass triggered by a snapshot, else
    ``extended:layers``."""
    if snapshot is not None and snapshot.get("version") is not None:
        return f"extended:risk_snapshot {snapshot.get('world_id')}/{snapshot.get('version')}"
    return "extended:layers"


def apply_extended(
    record: Mapping[str, Any],
    extra_results: Mapping[str, RuleResult | Mapping[str, Any]],
    *,
    snapshot: Mapping[str, Any] | None = None,
    reason: str | None = None,
    now: datetime | str | None = None,
) -> tuple[dict[str, Any], str | None]:
    """``record`` with ``extra_results`` merged, and the change reason (None when nothing changed).

    The summary is recomputed by :func:`merge_results` (status over every result; the
    recommendation drops to ``backtest_only`` while an extended layer fails, and returns to the
    core recommendation when it passes again — kept in ``validation.core_recommended_stage``,
    since a stored summary alone cannot tell it). Also: ``validation.extended_revision`` + 1,
    ``validation.extended_evaluated_at`` (= ``now`` when given), ``revision`` + 1 and
    ``revision_reason`` when the record carries a revision, ``updated_at`` = ``now``, and
    ``metrics.diagnostics.validation_health`` recomputed over the merged results. The input is
    not modified. When the merged results, status and stage equal the stored ones the record is
    returned unchanged with reason None (a replay writes no revision).

    ``reason`` defaults to :func:`change_reason` of ``snapshot``.
    """
    out = copy.deepcopy(dict(record))
    if not extra_results:
        return out, None
    validation = dict(out.get("validation") or {})
    summary = dict(out.get("summary") or {})
    stored = EvaluationResult.from_dict({"validation": validation, "summary": summary})
    if validation.get("core_recommended_stage"):
        stored = dataclasses.replace(stored, core_recommended_stage=validation["core_recommended_stage"])
    merged = merge_results(stored, extra_results)
    merged_results = {name: r.to_dict() for name, r in merged.results.items()}
    if (
        merged_results == {name: r.to_dict() for name, r in stored.results.items()}
        and merged.status == summary.get("status")
        and merged.recommended_stage == summary.get("recommended_stage")
    ):
        return out, None
    why = reason or change_reason(snapshot)
    stamp = None if now is None else parse_timestamp(now).isoformat()
    validation["results"] = merged_results
    validation["core_recommended_stage"] = merged.core_recommended_stage
    validation["extended_revision"] = int(validation.get("extended_revision") or 0) + 1
    if stamp is not None:
        validation["extended_evaluated_at"] = stamp
    summary["status"] = merged.status
    summary["recommended_stage"] = merged.recommended_stage
    out["validation"] = validation
    out["summary"] = summary
    if "revision" in out:
        out["revision"] = int(out["revision"]) + 1
        out["revision_reason"] = why
    if stamp is not None and "updated_at" in out:
        out["updated_at"] = stamp
    metrics = out.get("metrics")
    if isinstance(metrics, dict) and isinstance(metrics.get("diagnostics"), dict):
        metrics["diagnostics"]["validation_health"] = validation_health(metrics, merged_results)
    return out, why
