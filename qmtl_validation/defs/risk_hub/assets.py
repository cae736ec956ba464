"""Risk hub assets: from a landed risk snapshot to portfolio risk, stress, live monitoring and the
extended validation of the world's runs; and the conservative fallback while a feed is stale.

Snapshot-scoped assets are partitioned by ``risk_snapshots`` (``world/version``) and use
``BackfillPolicy.single_run()``: a run over many snapshots processes them in one pass and writes
one file per world and table. Graph::

    risk_snapshot (+ snapshot_weights) ─┬─ covariance_matrix ─┬─ portfolio_risk ─┬─ extended_validation
                                        ├─ realized_returns ──┤                  │
                                        ├─ stress_results ────┘                  │
                                        └─ live_monitoring (realized_returns) ───┘

``risk_snapshot_fallback`` (+ ``fallback_portfolio_risk``) is partitioned by ``worlds``: the
freshness sensor materialises it once per breach episode (SPEC §8).

Every DataFrame output is checked against its pandera contract inside the asset (the blocking
``contract`` check and the Dagster type show the result); tables other than an asset's own
output are written through ``WarehouseResource.lake()`` after their contract passed.
"""


import math
from collections import Counter
from typing import Any, Iterator, Mapping

import dagster as dg
import pandas as pd

from qmtl_validation.core import contracts
from qmtl_validation.core.contracts import ContractError, validate_frame
from qmtl_validation.core.events import cloud_event
from qmtl_validation.core.identifiers import split_snapshot_partition_key
from qmtl_validation.core.live_monitoring import DEFAULT_WINDOWS, live_monitoring_metrics
from qmtl_validation.core.reports.files import (
    REPORT_HTML,
    REPORT_MARKDOWN,
    RISK_CONTRIBUTIONS_PNG,
    render_snapshot_report_files,
    snapshot_report_dir,
)
from qmtl_validation.core.rules.live_monitoring import live_windows
from qmtl_validation.core.health import get_path
from qmtl_validation.core.snapshot import (
    SnapshotContractError,
    conservative_fallback_snapshot,
    covariance_to_map,
    parse_covariance,
)
from qmtl_validation.defs.contract_checks import (
    CONTRACT_CHECK,
    TableOutput,
    contract_check_spec,
    table_type,
    validated_outputs,
)
from qmtl_validation.defs.metadata import markdown_image
from qmtl_validation.defs.resources import LandingZoneResource, WarehouseResource, now_utc
from qmtl_validation.defs.risk_hub.partitions import risk_snapshots_partitions, worlds_partitions
from qmtl_validation.defs.risk_hub.revisions import (
    ExtendedOutcome,
    extended_revisions,
    revision_frames,
    world_run_records,
    write_history_rows,
    write_rule_rows,
)
from qmtl_validation.warehouse import snapshot_rows as rows
from qmtl_validation.warehouse.documents import WorldPolicies
from qmtl_validation.warehouse.lake import unique_file_stem
from qmtl_validation.warehouse.landing import is_transient_io_error
from qmtl_validation.warehouse.outbox import append_events
from qmtl_validation.warehouse.snapshot_intake import (
    SnapshotDropError,
    WorldSnapshotSettings,
    load_snapshot,
    read_snapshot_json,
    registered_at,
    registered_snapshots,
    resolve_covariance,
    resolve_realized_returns,
    world_snapshot_settings,
)

GROUP = "risk_hub"
OWNERS = ["team:risk"]
IO_MANAGER = "lake_io_manager"
SNAPSHOT_ASSET = dict(
    partitions_def=risk_snapshots_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name=GROUP,
    owners=OWNERS,
    io_manager_key=IO_MANAGER,
)
# Volatility estimates the fallback takes the most conservative of: the previous snapshot and
# the ones before it.
FALLBACK_RECENT_SNAPSHOTS = 5
# Snapshot reports with a picture cost ~0.1 s each; a backfill over a long history writes them
# for the newest snapshots of the batch only.
MAX_REPORTS = 20
# The report's picture shows the largest contributions and one "others" bar: a chart of 500
# bars takes seconds to draw and nobody reads it (every member's figures are in `portfolio_risk`).
REPORT_CONTRIBUTIONS = 40
EVENT_SOURCE = "qmtl_validation/risk_hub"


def _out(table: str, model: Any, description: str, kinds: set[str]) -> dg.AssetOut:
    return dg.AssetOut(
        dagster_type=table_type(model),
        description=description,
        metadata={"lake_table": table},
        group_name=GROUP,
        owners=OWNERS,
        kinds=kinds,
        io_manager_key=IO_MANAGER,
    )


# ---------------------------------------------------------------------------------------------
# Helpers shared by the assets


class _World:
    """A world's current policy and the risk settings the downstream assets read from it, once
    per asset run (the intake's defaults when the world has no policy). Unlike
    ``world_snapshot_settings`` it never needs the signing key: only validation does."""

    def __init__(self, policies: WorldPolicies, world_id: str):
        self.world_id = world_id
        loaded = policies.get(world_id)
        self.policy = loaded.policy if loaded else None
        hub = self.policy.risk_hub if self.policy else None
        defaults = WorldSnapshotSettings(world_id)
        self.fallback_correlation = float(hub.fallback_correlation) if hub else defaults.fallback_correlation
        self.max_snapshot_lag = hub.max_snapshot_lag if hub else defaults.max_snapshot_lag
        self.fail_closed = bool(self.policy.fail_closed) if self.policy else defaults.fail_closed
        self.periods_per_year = (
            float(self.policy.annualization.periods_per_year) if self.policy else defaults.periods_per_year
        )


class _Worlds(dict):
    def __init__(self, zone: Any):
        super().__init__()
        self.policies = WorldPolicies(zone)

    def __missing__(self, world_id: str) -> _World:
        self[world_id] = world = _World(self.policies, world_id)
        return world


def _failed_checks(asset_names: list[str], problems: list[str]) -> Iterator[dg.AssetCheckResult]:
    for name in asset_names:
        yield dg.AssetCheckResult(
            asset_key=name,
            check_name=CONTRACT_CHECK,
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "problems": len(problems),
                "first_problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems[:20])),
            },
        )


def _snapshot_event(snapshot: Mapping[str, Any], recorded_at: Any, *, is_fallback: bool) -> dict[str, Any]:
    world, version = snapshot["world_id"], snapshot["version"]
    data = {
        "world_id": world,
        "version": version,
        "as_of": snapshot["as_of"],
        "hash": snapshot["hash"],
        "n_strategies": sum(1 for w in (snapshot.get("weights") or {}).values() if float(w) != 0),
        "actor": (snapshot.get("provenance") or {}).get("actor"),
        "is_fallback": is_fallback,
    }
    if is_fallback:
        data["fallback_of_version"] = (snapshot.get("fallback") or {}).get("previous_version")
    return cloud_event(
        "risk_snapshot_updated",
        world_id=world,
        subject=f"{world}/{version}",
        data=data,
        idempotency_key=f"risk_snapshot_updated:{world}:{version}:{snapshot['hash']}",
        time=recorded_at,
        source=EVENT_SOURCE,
    )


def _report_risk(risk: Mapping[str, Any]) -> dict[str, Any]:
    """``risk`` for the snapshot report: the largest component VaR/ES contributions by size and
    the rest summed into one ``(n others)`` line, so totals and shares stay exact."""
    components = risk["component_var"]
    if len(components) <= REPORT_CONTRIBUTIONS:
        return dict(risk)
    ranked = sorted(components, key=lambda s: (-abs(components[s]), s))
    shown, rest = ranked[: REPORT_CONTRIBUTIONS - 1], ranked[REPORT_CONTRIBUTIONS - 1 :]
    label = f"({len(rest)} others)"
    out = dict(risk)
    for field in ("component_var", "component_es"):
        values = risk[field]
        out[field] = {s: values[s] for s in shown} | {label: float(sum(values[s] for s in rest))}
    return out


def _keys_in_order(context: dg.AssetExecutionContext) -> list[str]:
    return list(context.partition_keys)


def _run_records(warehouse: WarehouseResource, cache: dict[str, list[dict[str, Any]]], world_id: str) -> list[dict[str, Any]]:
    if world_id not in cache:
        cache[world_id] = world_run_records(warehouse, world_id)
    return cache[world_id]


# ---------------------------------------------------------------------------------------------
# risk_snapshot


@dg.multi_asset(
    outs={
        "risk_snapshot": _out(
            "risk_snapshots",
            contracts.RiskSnapshotsTable,
            "Contract-validated risk snapshot (SPEC §8): one header row per world/version, "
            "re-validated with the world's producer allow-list and signing key.",
            {"python", "parquet"},
        ),
        "snapshot_weights": _out(
            "snapshot_weights",
            contracts.SnapshotWeightsTable,
            "Portfolio weights of each snapshot: one row per strategy.",
            {"pandas", "parquet"},
        ),
    },
    partitions_def=risk_snapshots_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=[
        contract_check_spec("risk_snapshot", contracts.RiskSnapshotsTable),
        contract_check_spec("snapshot_weights", contracts.SnapshotWeightsTable),
    ],
    can_subset=False,
)
def risk_snapshot(context: dg.AssetExecutionContext, landing: LandingZoneResource, warehouse: WarehouseResource):
    """Read each requested snapshot from where the intake registered it and validate it again
    under the world's current policy (producer allow-list, signing key from the environment
    variable the policy names), judged at its registration time.

    A snapshot that no longer passes — a revoked producer, a changed key, a landing file changed
    since it was taken in — fails the contract checks and nothing is written. On success a
    ``risk_snapshot_updated`` event per snapshot goes to the outbox (idempotent on replays).
    """
    keys = _keys_in_order(context)
    registry = registered_snapshots(warehouse.lake(), keys)
    zone = landing.zone()
    policies = WorldPolicies(zone)
    settings_by_world: dict[str, WorldSnapshotSettings | Exception] = {}
    loaded, problems = [], []
    for key in keys:
        entry = registry.get(key)
        if entry is None:
            problems.append(f"{key}: not in the landing registry (was it taken in by the snapshot sensor?)")
            continue
        world_id, version = split_snapshot_partition_key(key)
        try:
            if world_id not in settings_by_world:
                try:
                    settings_by_world[world_id] = world_snapshot_settings(policies, world_id)
                except SnapshotDropError as error:
                    settings_by_world[world_id] = error
            settings = settings_by_world[world_id]
            if isinstance(settings, Exception):
                raise settings
            snapshot = load_snapshot(
                zone, entry["landing_prefix"], settings, now=registered_at(entry), expected_version=version
            )
        except (SnapshotContractError, SnapshotDropError) as error:
            problems.append(f"{key}: {error}")
            continue
        if snapshot.content_hash != entry["content_hash"]:
            problems.append(
                f"{key}: {entry['landing_prefix']} changed since it was taken in "
                f"({entry['content_hash']} then, {snapshot.content_hash} now); the registered "
                "version stays authoritative"
            )
            continue
        loaded.append((snapshot, entry))
    if problems:
        yield from _failed_checks(["risk_snapshot", "snapshot_weights"], problems)
        raise dg.Failure(
            description=f"{len(problems)} snapshot(s) break the contract, nothing written:\n" + "\n".join(problems)
        )

    recorded_at = now_utc()
    headers = [
        rows.snapshot_row(
            s.snapshot,
            covariance_form=s.covariance_form,
            realized_returns_form=s.realized_returns_form,
            signed=s.signed,
            content_hash=s.content_hash,
            landing_key=entry["landing_prefix"],
            source_etag=entry["token"],
            received_at=pd.Timestamp(entry["registered_at"]),
            recorded_at=recorded_at,
        )
        for s, entry in loaded
    ]
    frame = rows.snapshot_frame(headers)
    weights = pd.concat([rows.weight_rows(s.snapshot, recorded_at=recorded_at) for s, _ in loaded], ignore_index=True)
    newest = frame.sort_values("as_of").groupby("world_id").tail(1)
    yield from validated_outputs(
        TableOutput(
            "risk_snapshot",
            contracts.RiskSnapshotsTable,
            frame,
            {
                "snapshots": len(frame),
                "worlds": dg.MetadataValue.json(dict(Counter(frame["world_id"]))),
                "newest_per_world": dg.MetadataValue.json(
                    {r.world_id: f"{r.version} @ {r.as_of.isoformat()}" for r in newest.itertuples()}
                ),
                "signed": int(frame["signed"].sum()),
                "covariance_forms": dg.MetadataValue.json(dict(Counter(frame["covariance_form"]))),
            },
        ),
        TableOutput(
            "snapshot_weights",
            contracts.SnapshotWeightsTable,
            weights,
            {
                "strategies": int(weights["strategy_id"].nunique()),
                "max_weight": float(weights["weight"].abs().max()) if len(weights) else 0.0,
            },
        ),
        multi=True,
    )
    append_events(
        warehouse.lake(), [_snapshot_event(s.snapshot, recorded_at, is_fallback=False) for s, _ in loaded]
    )


# ---------------------------------------------------------------------------------------------
# covariance_matrix, realized_returns


def _landing_payload(zone: Any, record: rows.SnapshotRecord, field: str) -> Mapping[str, Any]:
    """The snapshot as the downstream assets resolve ``field`` from it: the submitted JSON when
    the field is inline (``payload_json`` leaves bulky data out), else the stored payload with its ref."""
    form = record.covariance_form if field == "covariance" else record.realized_returns_form
    if form == "inline" and record.landing_key:
        return read_snapshot_json(zone, record.landing_key)
    return record.snapshot


@dg.asset(
    **SNAPSHOT_ASSET,
    dagster_type=table_type(contracts.CovarianceTable),
    metadata={"lake_table": "covariance"},
    kinds={"numpy", "parquet"},
    check_specs=[contract_check_spec("covariance_matrix", contracts.CovarianceTable)],
)
def covariance_matrix(
    context: dg.AssetExecutionContext,
    risk_snapshot: pd.DataFrame,
    landing: LandingZoneResource,
):
    """Each snapshot's covariance matrix in long form, from its inline pairs or its Parquet ref
    read through the landing zone (checked on read: variances, symmetry, PSD). Missing cross
    pairs are imputed as the world's ``risk_hub.fallback_correlation`` × σa × σb and flagged."""
    records = rows.snapshots_from_rows(risk_snapshot)
    zone = landing.zone()
    worlds = _Worlds(zone)
    recorded_at = now_utc()
    frames, problems, imputed, without = [], [], {}, []
    for key in _keys_in_order(context):
        record = records[key]
        if record.covariance_form == "none":
            without.append(key)
            continue
        world = worlds[record.snapshot["world_id"]]
        try:
            payload = _landing_payload(zone, record, "covariance")
            matrix, labels, form, _ = resolve_covariance(
                zone,
                record.landing_key or "",
                payload,
                fallback_correlation=world.fallback_correlation,
                check_psd=record.covariance_form == "ref",
            )
        except (SnapshotContractError, SnapshotDropError, OSError) as error:
            if is_transient_io_error(error):
                raise  # the store is briefly unreachable, not a broken snapshot: the run fails and is retried
            problems.append(f"{key}: {error}")
            continue
        frames.append(rows.covariance_rows(record.snapshot, matrix, labels, recorded_at=recorded_at))
        if labels:
            imputed[key] = labels
    if problems:
        yield from _failed_checks(["covariance_matrix"], problems)
        raise dg.Failure(description="covariance could not be read:\n" + "\n".join(problems))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(rows.COVARIANCE_COLUMNS))
    yield from validated_outputs(
        TableOutput(
            "covariance_matrix",
            contracts.CovarianceTable,
            frame,
            {
                "snapshots": len(frames),
                "imputed_pairs": int(frame["imputed"].sum()) if len(frame) else 0,
                "imputed_by_snapshot": dg.MetadataValue.json({k: v[:20] for k, v in imputed.items()}),
                "without_covariance": dg.MetadataValue.json(without),
            },
        )
    )


@dg.asset(
    **SNAPSHOT_ASSET,
    dagster_type=table_type(contracts.RealizedReturnsTable),
    metadata={"lake_table": "realized_returns"},
    kinds={"pandas", "parquet"},
    check_specs=[contract_check_spec("realized_returns", contracts.RealizedReturnsTable)],
)
def realized_returns(
    context: dg.AssetExecutionContext,
    risk_snapshot: pd.DataFrame,
    landing: LandingZoneResource,
):
    """Each snapshot's realized per-period returns (inline series, or the long ``date,
    strategy_id, ret`` Parquet ref): one row per strategy and period, period 0 the newest."""
    records = rows.snapshots_from_rows(risk_snapshot)
    zone = landing.zone()
    recorded_at = now_utc()
    frames, problems, lengths = [], [], {}
    for key in _keys_in_order(context):
        record = records[key]
        if record.realized_returns_form == "none":
            continue
        try:
            wide, _, _ = resolve_realized_returns(
                zone, record.landing_key or "", _landing_payload(zone, record, "realized_returns")
            )
        except (SnapshotContractError, SnapshotDropError, OSError) as error:
            if is_transient_io_error(error):
                raise  # the store is briefly unreachable, not a broken snapshot: the run fails and is retried
            problems.append(f"{key}: {error}")
            continue
        if wide is not None:
            frames.append(rows.realized_rows(record.snapshot, wide, recorded_at=recorded_at))
            lengths[key] = int(len(wide))
    if problems:
        yield from _failed_checks(["realized_returns"], problems)
        raise dg.Failure(description="realized returns could not be read:\n" + "\n".join(problems))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(rows.REALIZED_COLUMNS))
    yield from validated_outputs(
        TableOutput(
            "realized_returns",
            contracts.RealizedReturnsTable,
            frame,
            {
                "snapshots": len(frames),
                "strategies": int(frame["strategy_id"].nunique()) if len(frame) else 0,
                "periods_by_snapshot": dg.MetadataValue.json(lengths),
            },
        )
    )


# ---------------------------------------------------------------------------------------------
# stress_results


def _stress_limits(world: _World) -> dict[str, dict[str, float | None]]:
    if world.policy is None or world.policy.stress is None:
        return {}
    return {
        name: {"dd_max": s.dd_max, "var_99": s.var_99, "es_99": s.es_99}
        for name, s in world.policy.stress.scenarios.items()
    }


@dg.asset(
    **SNAPSHOT_ASSET,
    dagster_type=table_type(contracts.StressResultsTable),
    metadata={"lake_table": "stress_results"},
    kinds={"python", "parquet"},
    check_specs=[contract_check_spec("stress_results", contracts.StressResultsTable)],
)
def stress_results(context: dg.AssetExecutionContext, risk_snapshot: pd.DataFrame, landing: LandingZoneResource):
    """Each snapshot's stress scenarios: one row per scenario for the book (and per strategy when
    given), compared with the world's ``stress.scenarios`` limits; the stress P&L Σ wᵢ·shockᵢ of
    scenarios that carry shocks."""
    records = rows.snapshots_from_rows(risk_snapshot)
    worlds = _Worlds(landing.zone())
    computed_at = now_utc()
    found, problems = [], []
    for key in _keys_in_order(context):
        record = records[key]
        try:
            found.extend(
                rows.stress_rows(record.snapshot, _stress_limits(worlds[record.snapshot["world_id"]]), computed_at=computed_at)
            )
        except ValueError as error:
            problems.append(f"{key}: {error}")
    if problems:
        yield from _failed_checks(["stress_results"], problems)
        raise dg.Failure(description="stress blocks could not be read:\n" + "\n".join(problems))
    frame = rows.stress_frame(found)
    failing = frame[frame["status"] == "fail"]
    yield from validated_outputs(
        TableOutput(
            "stress_results",
            contracts.StressResultsTable,
            frame,
            {
                "scenarios": int(frame["scenario"].nunique()) if len(frame) else 0,
                "status_counts": dg.MetadataValue.json(dict(Counter(frame["status"].dropna()))),
                "breaches": dg.MetadataValue.md(
                    "\n".join(f"- {r.world_id}/{r.version} `{r.scenario}`: {r.reason}" for r in failing.itertuples())
                    or "none"
                ),
            },
        )
    )


# ---------------------------------------------------------------------------------------------
# portfolio_risk


@dg.asset(
    **SNAPSHOT_ASSET,
    dagster_type=table_type(contracts.PortfolioRiskTable),
    metadata={"lake_table": "portfolio_risk"},
    kinds={"scipy", "parquet"},
    check_specs=[contract_check_spec("portfolio_risk", contracts.PortfolioRiskTable)],
)
def portfolio_risk(
    context: dg.AssetExecutionContext,
    risk_snapshot: pd.DataFrame,
    covariance_matrix: pd.DataFrame,
    realized_returns: pd.DataFrame,
    stress_results: pd.DataFrame,
    landing: LandingZoneResource,
    warehouse: WarehouseResource,
):
    """Gaussian portfolio risk of each snapshot at 99 %: σ_p, VaR, ES, Euler component VaR/ES,
    historical VaR/ES of the weighted realized returns, and the incremental VaR/ES of every
    candidate — the world's runs recommended ``paper_only`` / ``paper_ok_live_candidate`` whose
    strategy is not held — each entering alone at ``constraints.candidate_weight`` (else
    1/(n+1)). Writes the snapshot report (Markdown, HTML, risk-contribution picture) under the
    report root; the newest snapshot's picture is in the metadata."""
    records = rows.snapshots_from_rows(risk_snapshot)
    matrices = rows.covariance_from_rows(covariance_matrix)
    realized = rows.realized_from_rows(realized_returns)
    stress = {k: g for k, g in stress_results.groupby(rows.partition_keys_of(stress_results))} if len(stress_results) else {}
    worlds = _Worlds(landing.zone())
    run_cache: dict[str, list[dict[str, Any]]] = {}
    computed_at = now_utc()
    keys = _keys_in_order(context)
    report_keys = set(sorted(keys, key=lambda k: records[k].as_of)[-MAX_REPORTS:])
    found, summary, without, notes = [], {}, [], {}
    picture, preview, newest, newest_html = None, None, None, None
    for key in keys:
        record = records[key]
        snapshot = record.snapshot
        world = worlds[snapshot["world_id"]]
        if key not in matrices:
            without.append(key)
            continue
        matrix, imputed = matrices[key]
        candidates, candidate_notes = rows.portfolio_candidates(
            _run_records(warehouse, run_cache, snapshot["world_id"]),
            snapshot["weights"],
            matrix,
            imputed,
            periods_per_year=world.periods_per_year,
        )
        risk = rows.compute_portfolio_risk(
            snapshot, matrix, imputed, candidates, realized.get(key), fallback_correlation=world.fallback_correlation
        )
        found.extend(rows.portfolio_rows(snapshot, risk, candidates, computed_at=computed_at))
        if candidate_notes:
            notes[key] = candidate_notes
        summary[key] = {
            "var_99": round(risk["var"], 8),
            "es_99": round(risk["es"], 8),
            "candidates": len(candidates),
        }
        if key in report_keys:
            files = render_snapshot_report_files(
                {**snapshot, "is_fallback": record.is_fallback},
                _report_risk(risk),
                rows.stress_report_rows(stress[key]) if key in stress else [],
                generated_at=computed_at,
            )
            folder = snapshot_report_dir("", snapshot["world_id"], snapshot["version"])
            written = warehouse.write_report_files(folder.as_posix(), files)
            if newest is None or record.as_of >= records[newest].as_of:
                newest, newest_html = key, written.get(REPORT_HTML)
                picture = files.get(RISK_CONTRIBUTIONS_PNG)
                preview = files[REPORT_MARKDOWN].decode("utf-8")
    frame = rows.portfolio_frame(found)
    metadata: dict[str, Any] = {
        "snapshots": len(summary),
        "var_es_99": dg.MetadataValue.json(summary),
        "candidates": int((frame["scope"] == "candidate").sum()) if len(frame) else 0,
        "without_covariance": dg.MetadataValue.json(without),
        "report_root": warehouse.reports(),
    }
    if notes:
        metadata["candidate_notes"] = dg.MetadataValue.json(notes)
    if newest is not None:
        metadata["report_snapshot"] = newest
        metadata["preview"] = dg.MetadataValue.md(preview or "")
        if newest_html:
            metadata["report"] = dg.MetadataValue.path(newest_html)
    if picture is not None:
        metadata["risk_contributions"] = dg.MetadataValue.md(
            markdown_image(picture, f"risk contributions of {newest}")
        )
    yield from validated_outputs(TableOutput("portfolio_risk", contracts.PortfolioRiskTable, frame, metadata))


# ---------------------------------------------------------------------------------------------
# live_monitoring


def _backtest_sharpes(records: list[dict[str, Any]]) -> dict[str, float]:
    """Each strategy's latest backtest run's annualised Sharpe (``returns.sharpe``)."""
    latest: dict[str, tuple[str, float | None]] = {}
    for record in records:
        if record.get("stage") != "backtest":
            continue
        stamp = str(record.get("submitted_at") or "")
        strategy = str(record["strategy_id"])
        if strategy not in latest or stamp >= latest[strategy][0]:
            latest[strategy] = (stamp, get_path(record.get("metrics") or {}, "returns.sharpe"))
    return {s: float(v) for s, (_, v) in latest.items() if v is not None and math.isfinite(float(v))}


@dg.asset(
    **SNAPSHOT_ASSET,
    dagster_type=table_type(contracts.LiveMonitoringTable),
    metadata={"lake_table": "live_monitoring"},
    kinds={"numpy", "parquet"},
    check_specs=[contract_check_spec("live_monitoring", contracts.LiveMonitoringTable)],
)
def live_monitoring(
    context: dg.AssetExecutionContext,
    risk_snapshot: pd.DataFrame,
    realized_returns: pd.DataFrame,
    landing: LandingZoneResource,
    warehouse: WarehouseResource,
):
    """Per-strategy live monitoring of each snapshot's realized returns over trailing 30/60/90
    periods (and the policy's ``live_monitoring.lookback_days`` when it is another length):
    realized Sharpe and drawdown, decay against the strategy's latest backtest Sharpe, and the
    demotion candidates under the world's ``live_monitoring`` limits."""
    records = rows.snapshots_from_rows(risk_snapshot)
    realized = rows.realized_from_rows(realized_returns)
    worlds = _Worlds(landing.zone())
    run_cache: dict[str, list[dict[str, Any]]] = {}
    computed_at = now_utc()
    frames, flagged = [], {}
    for key in _keys_in_order(context):
        if key not in realized:
            continue
        snapshot = records[key].snapshot
        world = worlds[snapshot["world_id"]]
        settings = world.policy.live_monitoring if world.policy else None
        windows = sorted(set(DEFAULT_WINDOWS) | set(live_windows(settings.lookback_days) if settings else ()))
        metrics = live_monitoring_metrics(
            realized[key],
            backtest_sharpe=_backtest_sharpes(_run_records(warehouse, run_cache, snapshot["world_id"])),
            windows=windows,
            periods_per_year=world.periods_per_year,
            sharpe_min=settings.sharpe_min if settings else None,
            dd_max=settings.dd_max if settings else None,
            decay_threshold=settings.decay_threshold if settings else None,
        )
        frames.append(rows.live_monitoring_rows(snapshot, metrics, computed_at=computed_at))
        candidates = sorted(set(metrics.loc[metrics["strategy_demotion_candidate"], "strategy_id"]))
        if candidates:
            flagged[key] = candidates
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(rows.LIVE_COLUMNS))
    yield from validated_outputs(
        TableOutput(
            "live_monitoring",
            contracts.LiveMonitoringTable,
            frame,
            {
                "snapshots": len(frames),
                "strategies": int(frame["strategy_id"].nunique()) if len(frame) else 0,
                "demotion_candidates": dg.MetadataValue.json(flagged),
            },
        )
    )


# ---------------------------------------------------------------------------------------------
# extended_validation


def _world_snapshot_to_apply(
    warehouse: WarehouseResource, world_id: str, requested: list[str], records: Mapping[str, rows.SnapshotRecord]
) -> tuple[str | None, str | None]:
    """The requested snapshot of the world to apply — its newest, if it is also the world's newest
    materialised producer snapshot — and, when none is, the newer version that supersedes them."""
    newest = max(requested, key=lambda k: (records[k].as_of, k))
    known = rows.latest_snapshots(warehouse.lake(), world_id)
    if known.empty:
        return newest, None
    top = f"{known['world_id'].iloc[0]}/{known['version'].iloc[0]}"
    if pd.Timestamp(known["as_of"].iloc[0]) > records[newest].as_of and top not in requested:
        return None, top
    return newest, None


@dg.asset(
    **SNAPSHOT_ASSET,
    dagster_type=table_type(contracts.ExtendedRevisionsTable),
    metadata={"lake_table": "evaluation_run_history"},
    kinds={"python", "parquet"},
    check_specs=[contract_check_spec("extended_validation", contracts.ExtendedRevisionsTable)],
)
def extended_validation(
    context: dg.AssetExecutionContext,
    risk_snapshot: pd.DataFrame,
    covariance_matrix: pd.DataFrame,
    realized_returns: pd.DataFrame,
    portfolio_risk: pd.DataFrame,
    live_monitoring: pd.DataFrame,
    landing: LandingZoneResource,
    warehouse: WarehouseResource,
):
    """The extended layers (portfolio, stress, live monitoring, cohort, paper/shadow, benchmark)
    of each world whose newest snapshot landed, merged into its runs' latest records.

    Each run whose results change gets a new ``evaluation_run_history`` revision (reason
    ``extended:risk_snapshot <world>/<version>``, summary recomputed), its ``rule_results`` rows
    and an ``evaluation_run_updated`` event; earlier revisions are never touched. A replay of the
    same snapshot changes nothing and writes nothing. Only the newest snapshot of a world counts:
    older ones in the same batch (or superseded by a newer materialised one) are skipped. The
    snapshot is stale when its ``as_of`` lag now exceeds ``risk_hub.max_snapshot_lag``; a
    high-tier client-critical world then fails its portfolio rules closed.
    """
    records = rows.snapshots_from_rows(risk_snapshot)
    matrices = rows.covariance_from_rows(covariance_matrix)
    realized = rows.realized_from_rows(realized_returns)
    monitoring = rows.live_monitoring_frames(live_monitoring)
    portfolio_by_key = (
        {k: g for k, g in portfolio_risk.groupby(rows.partition_keys_of(portfolio_risk))} if len(portfolio_risk) else {}
    )
    worlds = _Worlds(landing.zone())
    recorded_at = now_utc()
    by_world: dict[str, list[str]] = {}
    for key in _keys_in_order(context):
        by_world.setdefault(records[key].snapshot["world_id"], []).append(key)

    outcomes: list[ExtendedOutcome] = []
    applied, skipped = {}, {}
    for world_id, requested in by_world.items():
        key, superseded_by = _world_snapshot_to_apply(warehouse, world_id, requested, records)
        if key is None:
            skipped[world_id] = f"superseded by {superseded_by}"
            continue
        world = worlds[world_id]
        record = records[key]
        lag = recorded_at - record.as_of.to_pydatetime()
        stale = lag > world.max_snapshot_lag
        outcome = extended_revisions(
            world_id,
            world_run_records(warehouse, world_id),
            world.policy,
            snapshot=record.snapshot,
            stale=stale,
            recorded_at=recorded_at,
            covariance=matrices[key][0] if key in matrices else None,
            realized_returns=realized.get(key),
            portfolio=rows.precomputed_portfolio(portfolio_by_key[key]) if key in portfolio_by_key else None,
            live_monitoring=monitoring.get(key),
        )
        outcomes.append(outcome)
        applied[world_id] = {
            "snapshot": key,
            "stale": bool(stale),
            "lag_seconds": round(lag.total_seconds(), 1),
            "runs_evaluated": outcome.evaluated,
            "runs_updated": len(outcome.records),
            "runs_unchanged": outcome.unchanged,
        }
    new_records = [r for o in outcomes for r in o.records]
    try:
        history, rules = revision_frames(new_records, recorded_at, context.run_id)
    except ContractError as error:
        yield from _failed_checks(["extended_validation"], [str(p) for p in error.problems])
        raise dg.Failure(description=f"extended revisions break the contract, nothing written:\n{error}")
    write_rule_rows(warehouse, rules, "extended")
    warehouse.record_run_events(new_records, recorded_at)
    changed = Counter(
        f"{name}:{result['status']}" for r in new_records for name, result in r["validation"]["results"].items()
        if name in ("cohort", "portfolio", "stress", "live_monitoring", "paper_shadow_consistency", "benchmark")
    )
    yield from validated_outputs(
        TableOutput(
            "extended_validation",
            contracts.ExtendedRevisionsTable,
            history,
            {
                "worlds": dg.MetadataValue.json(applied),
                "skipped_worlds": dg.MetadataValue.json(skipped),
                "runs_updated": len(new_records),
                "status_counts": dg.MetadataValue.json(dict(Counter(history["status"]))),
                "extended_results": dg.MetadataValue.json(dict(changed)),
                "reasons": ", ".join(sorted({o.reason for o in outcomes if o.reason})),
            },
        )
    )


# ---------------------------------------------------------------------------------------------
# risk_snapshot_fallback


def _inline_snapshot(
    record: rows.SnapshotRecord,
    covariance: tuple[pd.DataFrame, list[str]] | None,
    realized: pd.DataFrame | None,
) -> dict[str, Any]:
    """A stored snapshot with its covariance (given pairs only, imputed ones left out) and
    realized returns inline again, refs dropped: the form ``conservative_fallback_snapshot`` reads."""
    snapshot = {k: v for k, v in record.snapshot.items() if k not in ("covariance_ref", "realized_returns_ref")}
    if covariance is not None:
        matrix, imputed = covariance
        given = covariance_to_map(matrix)
        for label in imputed:
            a, _, b = label.partition(",")
            given.pop(f"{a},{b}", None)
            given.pop(f"{b},{a}", None)
        snapshot["covariance"] = given
    if realized is not None:
        snapshot["realized_returns"] = rows.realized_as_inline(realized)
    return snapshot


@dg.multi_asset(
    outs={
        "risk_snapshot_fallback": dg.AssetOut(
            dagster_type=table_type(contracts.RiskSnapshotsTable),
            description=(
                "Conservative fallback snapshot of a world whose feed is stale (SPEC §8): the "
                "previous version with correlations raised to at least the fallback correlation "
                "and the largest recent volatilities; a `risk_snapshots` row flagged is_fallback."
            ),
            metadata={"lake_table": "risk_snapshots"},
            group_name=GROUP,
            owners=OWNERS,
            kinds={"numpy", "parquet"},
            io_manager_key=IO_MANAGER,
        ),
        "fallback_portfolio_risk": dg.AssetOut(
            dagster_type=table_type(contracts.PortfolioRiskTable),
            description=(
                "Portfolio risk computed on the fallback snapshot for worlds that are not "
                "high-tier client-critical (those fail their portfolio rules closed instead)."
            ),
            metadata={"lake_table": "portfolio_risk"},
            group_name=GROUP,
            owners=OWNERS,
            kinds={"scipy", "parquet"},
            io_manager_key=IO_MANAGER,
        ),
    },
    partitions_def=worlds_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=[
        contract_check_spec("risk_snapshot_fallback", contracts.RiskSnapshotsTable),
        contract_check_spec("fallback_portfolio_risk", contracts.PortfolioRiskTable),
    ],
    can_subset=False,
)
def risk_snapshot_fallback(context: dg.AssetExecutionContext, landing: LandingZoneResource, warehouse: WarehouseResource):
    """The conservative fallback of each requested world, built from its latest registered
    snapshots (``core.snapshot.conservative_fallback_snapshot``), and what it drives:

    - a ``risk_snapshots`` row (``is_fallback``, ``fallback_of_version``), its weights and its
      covariance rows, and a ``risk_snapshot_updated`` event;
    - for a world that is not high-tier client-critical: its portfolio risk on the fallback, and
      the extended layers evaluated against the fallback;
    - for a high-tier client-critical world: the extended layers with the snapshot stale, so its
      portfolio rules fail closed (``risk_snapshot_stale``) until a fresh snapshot lands.

    The freshness sensor requests it once per breach episode; a replay writes the same rows again
    and no new run revision.
    """
    lake = warehouse.lake()
    worlds = _Worlds(landing.zone())
    recorded_at = now_utc()
    snapshot_found, weight_frames, covariance_frames, portfolio_found = [], [], [], []
    outcomes: list[ExtendedOutcome] = []
    fallbacks, summary = [], {}
    problems = []
    for world_id in _keys_in_order(context):
        world = worlds[world_id]
        known = rows.latest_snapshots(lake, world_id).head(FALLBACK_RECENT_SNAPSHOTS)
        keys = [f"{world_id}/{v}" for v in known["version"]]
        run_records = world_run_records(warehouse, world_id)
        if known.empty:
            outcome = extended_revisions(
                world_id, run_records, world.policy, snapshot=None, stale=True, recorded_at=recorded_at
            )
            outcomes.append(outcome)
            summary[world_id] = {"fallback": None, "note": "no registered snapshot to derive a fallback from",
                                 "runs_updated": len(outcome.records)}
            continue
        records = rows.snapshots_from_rows(known)
        matrices = rows.covariance_from_rows(
            warehouse.latest("covariance", keys, key_expression=rows.SNAPSHOT_KEY_SQL)
        )
        previous_key = keys[0]
        realized = rows.realized_from_rows(
            warehouse.latest("realized_returns", [previous_key], key_expression=rows.SNAPSHOT_KEY_SQL)
        ).get(previous_key)
        snapshots = [
            _inline_snapshot(records[k], matrices.get(k), realized if k == previous_key else None) for k in keys
        ]
        try:
            fallback = conservative_fallback_snapshot(snapshots[0], snapshots[1:], world.fallback_correlation)
        except (ValueError, SnapshotContractError) as error:
            problems.append(f"{world_id}: {error}")
            continue
        order = [s for s, w in fallback["weights"].items() if float(w) != 0]
        matrix, _ = parse_covariance(fallback["covariance"], order, fallback_correlation=world.fallback_correlation, check_psd=False)
        details = fallback["fallback"]
        previous = records[previous_key]
        snapshot_found.append(
            rows.snapshot_row(
                fallback,
                covariance_form="inline",
                realized_returns_form="inline" if fallback.get("realized_returns") else "none",
                signed=False,
                content_hash=fallback["hash"],
                landing_key=previous.landing_key,
                source_etag=None,
                received_at=None,
                recorded_at=recorded_at,
                is_fallback=True,
                fallback_of_version=previous.snapshot["version"],
            )
        )
        weight_frames.append(rows.weight_rows(fallback, recorded_at=recorded_at, is_fallback=True))
        covariance_frames.append(
            rows.covariance_rows(fallback, matrix, details["imputed_pairs"], recorded_at=recorded_at, is_fallback=True)
        )
        portfolio = None
        risk_summary: dict[str, Any] = {}
        if not world.fail_closed:
            candidates, _ = rows.portfolio_candidates(
                run_records, fallback["weights"], matrix, details["imputed_pairs"], periods_per_year=world.periods_per_year
            )
            risk = rows.compute_portfolio_risk(
                fallback, matrix, details["imputed_pairs"], candidates, realized,
                fallback_correlation=world.fallback_correlation,
            )
            world_rows = rows.portfolio_rows(fallback, risk, candidates, computed_at=recorded_at, is_fallback=True)
            portfolio_found.extend(world_rows)
            portfolio = rows.precomputed_portfolio(rows.portfolio_frame(world_rows))
            risk_summary = {"var_99": risk["var"], "es_99": risk["es"], "candidates": len(candidates)}
            files = render_snapshot_report_files(
                {**fallback, "is_fallback": True}, _report_risk(risk), [], generated_at=recorded_at
            )
            warehouse.write_report_files(snapshot_report_dir("", world_id, fallback["version"]).as_posix(), files)
        outcome = extended_revisions(
            world_id,
            run_records,
            world.policy,
            snapshot=fallback,
            stale=True,
            recorded_at=recorded_at,
            covariance=matrix,
            realized_returns=realized,
            portfolio=portfolio,
        )
        outcomes.append(outcome)
        fallbacks.append(fallback)
        summary[world_id] = {
            "fallback": fallback["version"],
            "previous_version": previous.snapshot["version"],
            "source_versions": details["source_versions"],
            "raised_pairs": len(details["raised_pairs"]),
            "imputed_pairs": len(details["imputed_pairs"]),
            "raised_volatilities": sorted(details["raised_volatilities"]),
            "psd_repaired": details["psd_repaired"],
            "fail_closed": world.fail_closed,
            "runs_updated": len(outcome.records),
            **risk_summary,
        }
    if problems:
        yield from _failed_checks(["risk_snapshot_fallback", "fallback_portfolio_risk"], problems)
        raise dg.Failure(description="no fallback could be built:\n" + "\n".join(problems))

    def concat(frames: list[pd.DataFrame], columns: tuple[str, ...]) -> pd.DataFrame:
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(columns))

    snapshots_frame = rows.snapshot_frame(snapshot_found)
    portfolio_frame = rows.portfolio_frame(portfolio_found)
    new_records = [r for o in outcomes for r in o.records]
    try:
        # Every table checked before the first write, so a broken contract writes nothing.
        validate_frame(contracts.RiskSnapshotsTable, snapshots_frame, source="risk_snapshot_fallback")
        validate_frame(contracts.PortfolioRiskTable, portfolio_frame, source="fallback_portfolio_risk")
        weights = validate_frame(contracts.SnapshotWeightsTable, concat(weight_frames, rows.WEIGHT_COLUMNS), source="snapshot_weights")
        covariance = validate_frame(contracts.CovarianceTable, concat(covariance_frames, rows.COVARIANCE_COLUMNS), source="covariance")
        history, rules = revision_frames(new_records, recorded_at, context.run_id)
    except ContractError as error:
        yield from _failed_checks(["risk_snapshot_fallback"], [str(p) for p in error.problems])
        raise dg.Failure(description=f"fallback rows break a contract, nothing written:\n{error}")
    if len(weights):
        lake.write_partitioned("snapshot_weights", weights, file_stem=unique_file_stem("fallback"))
        lake.write_partitioned("covariance", covariance, file_stem=unique_file_stem("fallback"))
    write_rule_rows(warehouse, rules, "fallback")
    write_history_rows(warehouse, history, "fallback")
    warehouse.record_run_events(new_records, recorded_at)
    yield from validated_outputs(
        TableOutput(
            "risk_snapshot_fallback",
            contracts.RiskSnapshotsTable,
            snapshots_frame,
            {
                "worlds": dg.MetadataValue.json(summary),
                "runs_updated": len(new_records),
                "fail_closed_worlds": dg.MetadataValue.json(sorted(w for w in summary if worlds[w].fail_closed)),
            },
        ),
        TableOutput(
            "fallback_portfolio_risk",
            contracts.PortfolioRiskTable,
            portfolio_frame,
            {"snapshots": int((portfolio_frame["scope"] == "portfolio").sum()) if len(portfolio_frame) else 0},
        ),
        multi=True,
    )
    append_events(lake, [_snapshot_event(f, recorded_at, is_fallback=True) for f in fallbacks])
