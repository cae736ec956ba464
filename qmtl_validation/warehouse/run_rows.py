"""Run-scoped tables: converting between loaded bundles, domain results and warehouse rows.

The Dagster assets of the runs area stay short because the shaping lives here: a batch of run
bundles becomes long ``strategy_returns`` / ``strategy_trades`` frames and a ``run_manifests``
frame; a long returns frame becomes the right-aligned panel the metrics engine takes; metrics and
evaluation results become the wide ``evaluation_metrics`` rows, the long ``rule_results`` rows
and the ``evaluation_run_history`` revisions. Every row carries ``world_id``, ``strategy_id``
and ``run_id``; ``partition_key`` (``world/strategy/run``) joins them back to a partition.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from qmtl_validation.core.bundles import RunBundle, RunManifest
from qmtl_validation.core.health import validation_health
from qmtl_validation.core.identifiers import split_run_partition_key
from qmtl_validation.warehouse.queries import KEY_POSITION
from qmtl_validation.warehouse.tables import wide_metric_column

RUN_KEY_COLUMNS = ("world_id", "strategy_id", "run_id")
RUN_KEY = list(RUN_KEY_COLUMNS)
TRADE_COLUMNS = ("ts", "symbol", "side", "qty", "price", "notional", "adv_notional", "bar_volume")


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces: the same value gives the same text on every machine."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def key_columns(partition_keys: Sequence[str]) -> dict[str, list[str]]:
    """``world_id`` / ``strategy_id`` / ``run_id`` columns for a list of run partition keys."""
    parts = [split_run_partition_key(key) for key in partition_keys]
    return {name: [p[i] for p in parts] for i, name in enumerate(RUN_KEY_COLUMNS)}


def partition_keys_of(frame: pd.DataFrame) -> pd.Series:
    """The run partition key of each row (``world/strategy/run``)."""
    return frame["world_id"] + "/" + frame["strategy_id"] + "/" + frame["run_id"]


# ---------------------------------------------------------------------------------------------
# bundles → ingest tables


def returns_rows(bundles: Sequence[RunBundle], recorded_at: dt.datetime) -> pd.DataFrame:
    """Long validated returns: one row per run and date.

    Built column by column (one concatenation per column, dates as datetime64) rather than one
    small frame per run: a backfill concatenates 10,000 runs, and per-run frames and Python date
    objects made this, and the contract check after it, cost far more than the data.
    """
    if not bundles:
        out = _empty_returns()
        out["recorded_at"] = pd.Timestamp(recorded_at)
        return out
    lengths = [len(bundle.returns) for bundle in bundles]
    columns: dict[str, Any] = _repeated_keys(bundles, lengths)
    columns["date"] = np.concatenate([bundle.returns.index.to_numpy(dtype="datetime64[ns]") for bundle in bundles])
    columns["ret"] = np.concatenate([bundle.returns.to_numpy(dtype=float) for bundle in bundles])
    columns["benchmark_ret"] = np.concatenate(
        [
            bundle.benchmark.to_numpy(dtype=float) if bundle.benchmark is not None else np.full(n, np.nan)
            for bundle, n in zip(bundles, lengths)
        ]
    )
    out = pd.DataFrame(columns)
    out["recorded_at"] = pd.Timestamp(recorded_at)
    return out


def _repeated_keys(bundles: Sequence[RunBundle], lengths: Sequence[int]) -> dict[str, np.ndarray]:
    """``world_id`` / ``strategy_id`` / ``run_id`` of each bundle repeated over its rows."""
    return {
        name: np.repeat(np.array([getattr(bundle.manifest, name) for bundle in bundles], dtype=object), lengths)
        for name in RUN_KEY_COLUMNS
    }


def _empty_returns() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "world_id": pd.Series(dtype=str),
            "strategy_id": pd.Series(dtype=str),
            "run_id": pd.Series(dtype=str),
            "date": pd.Series(dtype=object),
            "ret": pd.Series(dtype=float),
            "benchmark_ret": pd.Series(dtype=float),
        }
    )


def trades_rows(bundles: Sequence[RunBundle], recorded_at: dt.datetime) -> pd.DataFrame:
    """Long validated trades: one row per trade of every run that has a trades log (built column
    by column, as :func:`returns_rows`; optional columns a log lacks are null)."""
    logs = [(bundle, bundle.trades) for bundle in bundles if bundle.trades is not None]
    if not logs:
        out = pd.DataFrame({c: pd.Series(dtype=object) for c in (*RUN_KEY_COLUMNS, *TRADE_COLUMNS)})
        for column in ("qty", "price", "notional", "adv_notional", "bar_volume"):
            out[column] = pd.to_numeric(out[column], errors="raise").astype(float)
        out["ts"] = pd.to_datetime(out["ts"], utc=True)
        out["recorded_at"] = pd.Timestamp(recorded_at)
        return out
    lengths = [len(log) for _, log in logs]
    columns: dict[str, Any] = _repeated_keys([bundle for bundle, _ in logs], lengths)
    for column in TRADE_COLUMNS:
        if column == "ts":
            columns["ts"] = pd.DatetimeIndex(np.concatenate([_utc_nanoseconds(log["ts"]) for _, log in logs]), tz="UTC")
        elif column in ("symbol", "side"):
            columns[column] = np.concatenate(
                [log[column].to_numpy(dtype=object) if column in log.columns else np.full(n, np.nan, dtype=object)
                 for (_, log), n in zip(logs, lengths)]
            )
        else:
            columns[column] = np.concatenate(
                [_floats(log[column]) if column in log.columns else np.full(n, np.nan)
                 for (_, log), n in zip(logs, lengths)]
            )
    out = pd.DataFrame(columns)
    out["recorded_at"] = pd.Timestamp(recorded_at)
    return out


def _utc_nanoseconds(stamps: pd.Series) -> np.ndarray:
    """UTC instants as datetime64[ns] (naive values are UTC), without a parse when already typed."""
    if isinstance(stamps.dtype, pd.DatetimeTZDtype):
        return stamps.dt.tz_convert("UTC").array.tz_localize(None).to_numpy(dtype="datetime64[ns]")
    return pd.to_datetime(stamps, utc=True).dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")


def _floats(values: pd.Series) -> np.ndarray:
    if values.dtype == np.float64:
        return values.to_numpy()
    return pd.to_numeric(values, errors="raise").to_numpy(dtype=float)


def manifest_rows(
    bundles: Sequence[RunBundle], landing_prefixes: Mapping[str, str], recorded_at: dt.datetime
) -> pd.DataFrame:
    """One row per run: the validated run.json plus where it landed and its content hash."""
    rows = []
    for bundle in bundles:
        m = bundle.manifest
        rows.append(
            {
                "world_id": m.world_id,
                "strategy_id": m.strategy_id,
                "run_id": m.run_id,
                "stage": m.stage,
                "risk_tier": m.risk_tier,
                "submitted_at": m.submitted_at,
                "model_card_version": m.model_card_version,
                "campaign_id": m.campaign_id,
                "search_intensity": m.search_intensity,
                "capital": m.capital,
                "data_start": bundle.returns.index.min().date() if len(bundle.returns) else None,
                "data_end": bundle.returns.index.max().date() if len(bundle.returns) else None,
                "n_periods": len(bundle.returns),
                "has_trades": bundle.trades is not None,
                "landing_prefix": landing_prefixes.get(m.partition_key, ""),
                "content_hash": bundle.content_hash,
                "manifest_json": canonical_json(m.to_dict()),
                "recorded_at": recorded_at,
            }
        )
    return pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))


MANIFEST_COLUMNS = (
    "world_id",
    "strategy_id",
    "run_id",
    "stage",
    "risk_tier",
    "submitted_at",
    "model_card_version",
    "campaign_id",
    "search_intensity",
    "capital",
    "data_start",
    "data_end",
    "n_periods",
    "has_trades",
    "landing_prefix",
    "content_hash",
    "manifest_json",
    "recorded_at",
)


def manifests_from_rows(frame: pd.DataFrame) -> dict[str, RunManifest]:
    """partition key → RunManifest, from ``run_manifests`` rows."""
    keys = partition_keys_of(frame)
    return {
        key: RunManifest.from_dict(json.loads(text))
        for key, text in zip(keys, frame["manifest_json"], strict=True)
    }


# ---------------------------------------------------------------------------------------------
# long returns → panel


def returns_panel(frame: pd.DataFrame, order: Sequence[str]) -> tuple[pd.DataFrame, dict[str, pd.Series]]:
    """Right-aligned periods × runs panel (leading NaN pads shorter runs) and benchmark series.

    ``order`` fixes the column order (partition keys); every key must have returns. Rows are
    matched to ``order`` by their key columns, or by a ``partition_position`` column when the
    frame has one (``latest_rows(..., key_positions=True)``). Built with one sort and one scatter,
    without a loop over periods.
    """
    if KEY_POSITION in frame.columns:
        positions = frame[KEY_POSITION].to_numpy(dtype=np.int64)
        outside = (positions < 0) | (positions >= len(order))
        if outside.any():
            unknown = sorted(set(positions[outside]))[:3]
            raise ValueError(f"returns rows with positions outside the requested partitions: {unknown}")
    else:
        keys = partition_keys_of(frame).to_numpy()
        positions = pd.Index(order).get_indexer(keys)
        if (positions < 0).any():
            unknown = sorted(set(keys[positions < 0]))[:3]
            raise ValueError(f"returns rows for runs outside the requested partitions: {unknown}")
    dates = pd.to_datetime(frame["date"]).to_numpy()
    sort = np.lexsort((dates, positions))
    positions = positions[sort]
    values = frame["ret"].to_numpy(dtype=float)[sort]
    lengths = np.bincount(positions, minlength=len(order))
    missing = [order[i] for i in np.flatnonzero(lengths == 0)]
    if missing:
        raise ValueError(f"no returns for runs {missing[:3]}")
    n_rows = int(lengths.max())
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    within = np.arange(len(positions)) - starts[positions]
    rows = n_rows - lengths[positions] + within
    matrix = np.full((n_rows, len(order)), np.nan)
    matrix[rows, positions] = values
    panel = pd.DataFrame(matrix, columns=list(order))

    benchmarks: dict[str, pd.Series] = {}
    bench = frame["benchmark_ret"].to_numpy(dtype=float)[sort]
    with_benchmark = np.bincount(positions, weights=~np.isnan(bench), minlength=len(order))
    for i in np.flatnonzero(with_benchmark > 0):
        lo = starts[i]
        benchmarks[order[i]] = pd.Series(bench[lo : lo + lengths[i]])
    return panel, benchmarks


def trades_by_run(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """partition key → that run's trades log (runs without trades are absent)."""
    if frame.empty:
        return {}
    keys = partition_keys_of(frame)
    columns = [c for c in TRADE_COLUMNS if c in frame.columns]
    return {key: group[columns].reset_index(drop=True) for key, group in frame.groupby(keys, sort=False)}


# ---------------------------------------------------------------------------------------------
# metrics and evaluation results → rows


def metrics_rows(
    partition_keys: Sequence[str], flat: Mapping[str, np.ndarray], nested: Sequence[Mapping[str, Any]],
    computed_at: dt.datetime,
) -> pd.DataFrame:
    """Wide ``evaluation_metrics`` rows: one per run, one column per metric path.

    ``flat`` is ``metrics.flat_columns`` output in ``partition_keys`` order, ``nested`` the
    matching ``to_dict()`` of each run (kept whole as ``metrics_json`` so a run round-trips).
    """
    columns: dict[str, Any] = dict(key_columns(partition_keys))
    for path, values in flat.items():
        if path != "run":
            columns[wide_metric_column(path)] = values
    out = pd.DataFrame(columns)
    out["metrics_json"] = [canonical_json(m) for m in nested]
    out["computed_at"] = pd.Timestamp(computed_at)
    return out


def metrics_by_run(frame: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """partition key → the run's nested metrics dict, from ``evaluation_metrics`` rows."""
    return {
        key: json.loads(text)
        for key, text in zip(partition_keys_of(frame), frame["metrics_json"], strict=True)
    }


RULE_COLUMNS = (
    "world_id",
    "strategy_id",
    "run_id",
    "revision",
    "rule",
    "status",
    "severity",
    "owner",
    "reason_code",
    "reason",
    "tags",
    "details_json",
    "profile",
    "policy_version",
    "ruleset_hash",
    "run_status",
    "recommended_stage",
    "recorded_at",
)


def rule_rows(
    evaluations: Mapping[str, Mapping[str, Any]], revisions: Mapping[str, int], recorded_at: dt.datetime
) -> pd.DataFrame:
    """Long ``rule_results`` rows from ``{partition key: EvaluationResult.to_dict()}``.

    The run's summary (status, recommended stage) is repeated on each of its rule rows, so the
    summary asset does not evaluate the rules a second time.
    """
    rows = []
    for key, evaluation in evaluations.items():
        world_id, strategy_id, run_id = split_run_partition_key(key)
        validation = evaluation["validation"]
        summary = evaluation["summary"]
        for rule, result in validation["results"].items():
            rows.append(
                (
                    world_id,
                    strategy_id,
                    run_id,
                    revisions[key],
                    rule,
                    result["status"],
                    result["severity"],
                    result["owner"],
                    result["reason_code"],
                    result["reason"],
                    list(result.get("tags") or ()),
                    canonical_json(result.get("details") or {}),
                    validation.get("profile"),
                    validation.get("policy_version"),
                    validation.get("ruleset_hash"),
                    summary["status"],
                    summary["recommended_stage"],
                    recorded_at,
                )
            )
    return pd.DataFrame(rows, columns=list(RULE_COLUMNS))


def evaluations_from_rule_rows(frame: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Inverse of :func:`rule_rows`: ``{partition key: EvaluationResult dict}`` (runs in order of
    first appearance, each run's rules in row order; one pass over the rows, no per-run frames)."""
    out: dict[str, dict[str, Any]] = {}
    for key, row in zip(partition_keys_of(frame), frame.itertuples(index=False), strict=True):
        evaluation = out.get(key)
        if evaluation is None:
            evaluation = out[key] = {
                "validation": {
                    "policy_version": _none_if_nan(row.policy_version),
                    "ruleset_hash": _none_if_nan(row.ruleset_hash),
                    "profile": _none_if_nan(row.profile),
                    "results": {},
                },
                "summary": {"status": row.run_status, "recommended_stage": row.recommended_stage},
            }
        evaluation["validation"]["results"][row.rule] = {
            "status": row.status,
            "severity": row.severity,
            "owner": row.owner,
            "reason_code": row.reason_code,
            "reason": row.reason,
            "tags": list(row.tags) if row.tags is not None else [],
            "details": json.loads(row.details_json),
        }
    return out


def _none_if_nan(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else value


HISTORY_COLUMNS = (
    "world_id",
    "strategy_id",
    "run_id",
    "revision",
    "recorded_at",
    "reason",
    "stage",
    "risk_tier",
    "status",
    "recommended_stage",
    "profile",
    "policy_version",
    "ruleset_hash",
    "model_card_version",
    "submitted_at",
    "campaign_id",
    "pipeline_run_id",
    "payload_json",
)


def run_record(
    manifest: RunManifest,
    metrics: Mapping[str, Any],
    evaluation: Mapping[str, Any],
    *,
    revision: int,
    reason: str,
    recorded_at: dt.datetime,
    created_at: dt.datetime,
) -> dict[str, Any]:
    """The full EvaluationRun record (what ``payload_json`` holds), validation health included."""
    metrics = json.loads(canonical_json(metrics))
    diagnostics = metrics.setdefault("diagnostics", {})
    diagnostics["validation_health"] = validation_health(metrics, evaluation["validation"]["results"])
    notes = diagnostics.get("metric_notes") or {}
    for path in ("rules_executed_ratio", "validation_error_count"):
        notes.pop(f"diagnostics.validation_health.{path}", None)
    return {
        "world_id": manifest.world_id,
        "strategy_id": manifest.strategy_id,
        "run_id": manifest.run_id,
        "stage": manifest.stage,
        "risk_tier": manifest.risk_tier,
        "model_card_version": manifest.model_card_version,
        "campaign_id": manifest.campaign_id,
        "submitted_at": manifest.submitted_at.isoformat(),
        "created_at": created_at.isoformat(),
        "updated_at": recorded_at.isoformat(),
        "revision": revision,
        "revision_reason": reason,
        "metrics": metrics,
        "validation": evaluation["validation"],
        "summary": evaluation["summary"],
    }


def history_rows(
    records: Iterable[Mapping[str, Any]], recorded_at: dt.datetime, pipeline_run_id: str | None = None
) -> pd.DataFrame:
    """``evaluation_run_history`` rows: one per run revision, the full record as JSON;
    ``pipeline_run_id`` is the Dagster run that wrote them."""
    rows = []
    for record in records:
        validation = record["validation"]
        summary = record["summary"]
        rows.append(
            (
                record["world_id"],
                record["strategy_id"],
                record["run_id"],
                int(record["revision"]),
                recorded_at,
                record["revision_reason"],
                record["stage"],
                record["risk_tier"],
                summary["status"],
                summary["recommended_stage"],
                validation.get("profile"),
                validation.get("policy_version"),
                validation.get("ruleset_hash"),
                record.get("model_card_version"),
                pd.Timestamp(record["submitted_at"]),
                record.get("campaign_id"),
                pipeline_run_id,
                canonical_json(record),
            )
        )
    return pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))


def previous_revisions(history: pd.DataFrame) -> dict[str, tuple[int, dt.datetime]]:
    """partition key → (latest revision, when the run was first recorded) from history rows."""
    out: dict[str, tuple[int, dt.datetime]] = {}
    if history.empty:
        return out
    for key, revision, payload in zip(
        partition_keys_of(history), history["revision"], history["payload_json"], strict=True
    ):
        created = dt.datetime.fromisoformat(json.loads(payload)["created_at"])
        if key not in out or int(revision) > out[key][0]:
            out[key] = (int(revision), created)
    return out


def records_from_history(history: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """partition key → the EvaluationRun record of its newest revision among ``history`` rows."""
    newest = history.sort_values("revision").drop_duplicates(RUN_KEY, keep="last")
    return {
        key: json.loads(payload)
        for key, payload in zip(partition_keys_of(newest), newest["payload_json"], strict=True)
    }


def returns_by_run(frame: pd.DataFrame) -> dict[str, pd.Series]:
    """partition key → that run's returns as a Series indexed by date (for the report pictures)."""
    if frame.empty:
        return {}
    frame = frame.sort_values("date")
    keys = partition_keys_of(frame)
    return {
        key: pd.Series(group["ret"].to_numpy(dtype=float), index=pd.to_datetime(group["date"]), name="ret")
        for key, group in frame.groupby(keys, sort=False)
    }


def override_entries(overrides: pd.DataFrame) -> list[Any]:
    """``OverrideEntry`` objects of ``overrides`` table rows, in log order (the table's extra,
    derived columns such as ``review_due_at`` are dropped: the entry recomputes them)."""
    from qmtl_validation.core.overrides import ROW_FIELDS, OverrideEntry

    if overrides.empty:
        return []
    rows = overrides.sort_values("recorded_at").to_dict("records")
    return [
        OverrideEntry.from_dict({k: (None if _is_missing(row.get(k)) else row.get(k)) for k in ROW_FIELDS})
        for row in rows
    ]


def _is_missing(value: Any) -> bool:
    return value is None or (not isinstance(value, (str, bool, list, dict)) and pd.isna(value))


def review_items_by_run(overrides: pd.DataFrame, now: dt.datetime) -> dict[str, list[dict[str, Any]]]:
    """partition key → the run's override rows for its report, approvals with their re-review
    due date and overdue flag (``core.overrides.review_item``)."""
    from qmtl_validation.core.overrides import review_item

    out: dict[str, list[dict[str, Any]]] = {}
    for entry in override_entries(overrides):
        item = entry.to_dict()
        if entry.override_status == "approved":
            item.update(review_item(entry, now=now).to_dict())
        out.setdefault("/".join(entry.run_key), []).append(item)
    return out


REPORT_COLUMNS = (
    "world_id",
    "strategy_id",
    "run_id",
    "revision",
    "status",
    "recommended_stage",
    "markdown_path",
    "html_path",
    "model_card_found",
    "recorded_at",
)


def report_row(
    record: Mapping[str, Any], written: Mapping[str, str], model_card_found: bool, recorded_at: dt.datetime
) -> dict[str, Any]:
    return {
        "world_id": record["world_id"],
        "strategy_id": record["strategy_id"],
        "run_id": record["run_id"],
        "revision": int(record["revision"]),
        "status": record["summary"]["status"],
        "recommended_stage": record["summary"]["recommended_stage"],
        "markdown_path": written.get("report.md", ""),
        "html_path": written.get("report.html", ""),
        "model_card_found": model_card_found,
        "recorded_at": recorded_at,
    }
