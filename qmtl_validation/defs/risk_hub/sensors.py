"""Risk hub sensors: snapshot drops → ``risk_snapshots`` partitions, and freshness breaches.

``risk_snapshot_sensor`` is the run bundle sensor's twin for ``snapshots/<date>/<world>/<version>.json``
(:func:`~qmtl_validation.warehouse.snapshot_intake.take_in_snapshots`, same look-back, bounded work,
quarantine and cursor; settings in :mod:`qmtl_validation.defs.runs.sensors`). New snapshots become
``risk_snapshots`` partitions, their worlds ``worlds`` partitions; each world's new snapshots get
one run of ``validate_snapshots`` over their range (tagged ``qmtl/world``; keyed as the bundle
sensor's runs, :func:`~qmtl_validation.defs.runs.sensors.drop_run_requests`), and each snapshot an
``AssetObservation`` of
``risk_snapshot`` (partition, version, landing key, content hash), so the asset's page shows a
snapshot arriving before its run has finished.

``snapshot_freshness_sensor`` compares, per world, the ``as_of`` of the newest materialised producer
snapshot with the world's ``risk_hub.max_snapshot_lag`` (default 5 minutes; a world whose policy
does not parse gets the default). When the lag exceeds it:

- a breach episode opens: a ``freshness_breaches`` row (status ``open``, ``started_at`` = ``as_of``
  + ``max_snapshot_lag``: the moment the SLA was first missed, so the id is the same whenever the
  breach is noticed), and ``risk_snapshot_fallback`` is requested for the world with
  ``run_key`` = ``<world>:<started_at>`` — requested again on every stale tick, so a tick lost
  after the row was written cannot lose the fallback, and Dagster's run-key check keeps it to one
  run per episode;
- once a snapshot within the SLA is materialised, the episode closes: a second row with the same
  ``breach_id``, status ``closed``, ``ended_at`` (the tick that saw it fresh) and the fallback's
  version.

Each tick that opens or closes an episode reports the ``snapshot_freshness`` asset check of
``risk_snapshot``: failed (severity ERROR) while any world is in breach, with every breached
world's lag in the metadata; passed once none is. Being a check of ``risk_snapshot``, it is also
evaluated by every ``validate_snapshots`` run (so a fresh snapshot turns it green at once) and
can be executed from the UI.

The clock is the landing-zone sensors' clock (``QMTL_NOW``, or ``runs.sensors.clock`` in-process).
"""

import datetime as dt
import json
import time
from typing import Any

import dagster as dg
import pandas as pd

from qmtl_validation.defs.resources import LandingZoneResource, WarehouseResource
from qmtl_validation.defs.risk_hub.definitions import FALLBACK_JOB, VALIDATE_SNAPSHOTS_JOB
from qmtl_validation.defs.risk_hub.partitions import risk_snapshots_partitions, worlds_partitions
from qmtl_validation.defs.runs.sensors import (
    drop_run_requests,
    drops_to_request,
    file_label,
    intake_cursor,
    listing_summary,
    log_rejections,
    lookback_for,
    read_cursor,
    sensor_now,
    sensor_settings,
)
from qmtl_validation.warehouse.documents import WorldPolicies
from qmtl_validation.warehouse.intake import record_intake
from qmtl_validation.warehouse.lake import Lake
from qmtl_validation.warehouse.landing import LandingZone
from qmtl_validation.warehouse.snapshot_intake import SNAPSHOT_KIND, take_in_snapshots
from qmtl_validation.warehouse.snapshot_rows import latest_snapshots, open_breaches, world_snapshot_status

FRESHNESS_CHECK = "snapshot_freshness"
RISK_SNAPSHOT = dg.AssetKey("risk_snapshot")
BREACHES_TABLE = "freshness_breaches"
DEFAULT_MAX_LAG = dt.timedelta(minutes=5)
WORLD_TAG = "qmtl/world"
BREACH_TAG = "qmtl/breach_id"
REASON_TAG = "qmtl/reason"

_SETTINGS = sensor_settings()


# ---------------------------------------------------------------------------------------------
# risk_snapshot_sensor


@dg.sensor(
    name="risk_snapshot_sensor",
    job_name=VALIDATE_SNAPSHOTS_JOB,
    minimum_interval_seconds=_SETTINGS.interval_seconds,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Takes risk snapshots in from the landing zone's recent date prefixes: adds a "
        "risk_snapshots partition (and the world to worlds) for each new one and launches "
        "validate_snapshots once per world over that world's new snapshots; bad drops get a "
        "rejections row and a line in the tick log."
    ),
)
def risk_snapshot_sensor(
    context: dg.SensorEvaluationContext, landing: LandingZoneResource, warehouse: WarehouseResource
) -> dg.SensorResult:
    started = time.perf_counter()
    settings = sensor_settings()
    now = sensor_now()
    today = now.date()
    previous = read_cursor(context.cursor)
    lookback = lookback_for(previous, today, settings.lookback_days)
    zone, lake = landing.zone(), warehouse.lake()
    zone.reset_counters()
    intake = take_in_snapshots(
        zone,
        lake,
        today=today,
        lookback_days=lookback,
        max_snapshots=settings.max_drops_per_tick,
        now=now,
        sensor="risk_snapshot_sensor",
    )
    record_intake(lake, intake, now=now, file_label=file_label("risk_snapshot_sensor"))
    log_rejections(context, intake.rejections)

    drops, known = drops_to_request(
        context, lake, intake, kind=SNAPSHOT_KIND, partitions_name=risk_snapshots_partitions.name,
        budget=settings.max_drops_per_tick,
    )
    new_keys, requests = drop_run_requests(drops, known, source="risk_snapshot_sensor", world_tag=WORLD_TAG)
    observations = [
        dg.AssetObservation(
            asset_key=RISK_SNAPSHOT,
            partition=drop.partition_key,
            metadata={
                "world_id": drop.world_id,
                "version": drop.partition_key.split("/", 1)[1],
                "landing_key": drop.landing_prefix,
                "content_hash": drop.content_hash,
                "received_at": now.isoformat(),
            },
        )
        for drop in drops
    ]
    partition_requests = []
    if new_keys:
        partition_requests.append(risk_snapshots_partitions.build_add_request(new_keys))
        worlds_known = set(context.instance.get_dynamic_partitions(worlds_partitions.name))
        worlds = sorted({d.world_id for d in drops} - worlds_known)
        if worlds:
            partition_requests.append(worlds_partitions.build_add_request(worlds))
    summary = intake.summary()
    elapsed = time.perf_counter() - started
    context.log.info(f"{summary}; {listing_summary(intake.prefixes, zone.list_calls)}, {elapsed:.2f} s")
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=partition_requests,
        asset_events=observations,
        cursor=intake_cursor(previous, today, lookback, intake, zone.list_calls, seconds=round(elapsed, 3)),
        skip_reason=None if requests else f"no new risk snapshots ({summary})",
    )


# ---------------------------------------------------------------------------------------------
# Freshness


def _utc(value: Any) -> dt.datetime:
    stamp = pd.Timestamp(value)
    return (stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")).to_pydatetime()


def max_snapshot_lag(policies: WorldPolicies, world_id: str) -> dt.timedelta:
    """The world's ``risk_hub.max_snapshot_lag`` (the default without a readable policy)."""
    loaded = policies.get(world_id)
    return loaded.policy.risk_hub.max_snapshot_lag if loaded is not None else DEFAULT_MAX_LAG


def breach_id(world_id: str, started_at: dt.datetime) -> str:
    return f"{world_id}@{started_at.astimezone(dt.timezone.utc):%Y-%m-%dT%H:%M:%SZ}"


def freshness(lake: Lake, zone: LandingZone, now: dt.datetime) -> pd.DataFrame:
    """Per world with a materialised producer snapshot: ``world_id``, ``version``, ``as_of``,
    ``lag_seconds``, ``max_lag_seconds``, ``stale`` (lag above the SLA) at ``now``."""
    status = world_snapshot_status(lake)
    policies = WorldPolicies(zone)
    rows = []
    for row in status.itertuples():
        as_of = _utc(row.as_of)
        limit = max_snapshot_lag(policies, row.world_id)
        lag = now - as_of
        rows.append({
            "world_id": row.world_id,
            "version": row.version,
            "as_of": as_of,
            "lag_seconds": lag.total_seconds(),
            "max_lag_seconds": limit.total_seconds(),
            "stale": lag > limit,
        })
    return pd.DataFrame(rows, columns=["world_id", "version", "as_of", "lag_seconds", "max_lag_seconds", "stale"])


def freshness_evaluation(state: pd.DataFrame, breaches: dict[str, str]) -> dg.AssetCheckEvaluation:
    """The ``snapshot_freshness`` check result for the worlds' current ``state``."""
    stale = state[state["stale"]]
    metadata = {
        "worlds_checked": len(state),
        "worlds_in_breach": len(stale),
        "breaches": dg.MetadataValue.json({
            r.world_id: {
                "breach_id": breaches.get(r.world_id),
                "version": r.version,
                "as_of": r.as_of.isoformat(),
                "lag_seconds": round(float(r.lag_seconds), 1),
                "max_lag_seconds": float(r.max_lag_seconds),
            }
            for r in stale.itertuples()
        }),
    }
    return dg.AssetCheckEvaluation(
        asset_key=RISK_SNAPSHOT,
        check_name=FRESHNESS_CHECK,
        passed=stale.empty,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata=metadata,
        description=(
            "every world's newest snapshot is within its max_snapshot_lag" if stale.empty
            else f"{len(stale)} world(s) past max_snapshot_lag: {', '.join(stale['world_id'])}"
        ),
    )


def _fallback_version(lake: Lake, world_id: str, since: dt.datetime) -> str | None:
    frame = latest_snapshots(lake, world_id, include_fallbacks=True)
    frame = frame[frame["is_fallback"].fillna(False).astype(bool)]
    frame = frame[pd.to_datetime(frame["recorded_at"], utc=True) >= pd.Timestamp(since)]
    return None if frame.empty else str(frame.sort_values("recorded_at")["version"].iloc[-1])


@dg.sensor(
    name="snapshot_freshness_sensor",
    job_name=FALLBACK_JOB,
    minimum_interval_seconds=_SETTINGS.interval_seconds,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Per world, the newest risk snapshot's as_of lag against risk_hub.max_snapshot_lag: a breach "
        "opens a freshness_breaches episode and materialises risk_snapshot_fallback once; a fresh "
        "snapshot closes it. Reported as the snapshot_freshness check of risk_snapshot."
    ),
)
def snapshot_freshness_sensor(
    context: dg.SensorEvaluationContext, landing: LandingZoneResource, warehouse: WarehouseResource
) -> dg.SensorResult:
    now = sensor_now()
    lake, zone = warehouse.lake(), landing.zone()
    state = freshness(lake, zone, now)
    episodes = {row["world_id"]: row for row in open_breaches(lake).to_dict("records")}
    rows, requests, opened, closed = [], [], [], []
    breaches: dict[str, str] = {}
    for world in state.itertuples():
        episode = episodes.get(world.world_id)
        if world.stale:
            if episode is None:
                started = world.as_of + dt.timedelta(seconds=world.max_lag_seconds)
                episode = {"breach_id": breach_id(world.world_id, started), "started_at": started}
                rows.append({
                    "world_id": world.world_id,
                    "breach_id": episode["breach_id"],
                    "status": "open",
                    "started_at": started,
                    "last_as_of": world.as_of,
                    "lag_seconds": world.lag_seconds,
                    "max_lag_seconds": world.max_lag_seconds,
                    "recorded_at": now,
                })
                opened.append(world.world_id)
                context.log.warning(
                    f"{world.world_id}: snapshot {world.version} is {world.lag_seconds / 60:.1f} min old "
                    f"(max {world.max_lag_seconds / 60:g} min): breach {episode['breach_id']} opened, "
                    "materialising the conservative fallback"
                )
            started = _utc(episode["started_at"])
            breaches[world.world_id] = episode["breach_id"]
            requests.append(
                dg.RunRequest(
                    run_key=f"{world.world_id}:{started.isoformat()}",
                    partition_key=world.world_id,
                    tags={WORLD_TAG: world.world_id, BREACH_TAG: episode["breach_id"], REASON_TAG: "freshness_breach"},
                )
            )
        elif episode is not None:
            started = _utc(episode["started_at"])
            rows.append({
                "world_id": world.world_id,
                "breach_id": episode["breach_id"],
                "status": "closed",
                "started_at": started,
                "ended_at": now,
                "last_as_of": world.as_of,
                "lag_seconds": world.lag_seconds,
                "max_lag_seconds": world.max_lag_seconds,
                "fallback_version": _fallback_version(lake, world.world_id, started),
                "recorded_at": now,
            })
            closed.append(world.world_id)
            context.log.info(
                f"{world.world_id}: snapshot {world.version} is fresh again: breach {episode['breach_id']} closed"
            )
    if rows:
        lake.write_partitioned(BREACHES_TABLE, pd.DataFrame(rows), file_stem=f"{now:%Y%m%dT%H%M%S%fZ}-{file_label('freshness')}")
    partition_requests = []
    need_world = sorted({r.partition_key for r in requests} - set(context.instance.get_dynamic_partitions(worlds_partitions.name)))
    if need_world:
        partition_requests.append(worlds_partitions.build_add_request(need_world))
    events = [freshness_evaluation(state, breaches)] if (opened or closed or context.cursor is None) and len(state) else []
    cursor = json.dumps(
        {
            "date": now.date().isoformat(),
            "worlds": len(state),
            "in_breach": len(breaches),
            "opened": len(opened),
            "closed": len(closed),
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    summary = f"{len(state)} world(s) checked, {len(breaches)} in breach ({len(opened)} opened, {len(closed)} closed)"
    context.log.info(summary)
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=partition_requests,
        asset_events=events,
        cursor=cursor,
        skip_reason=None if requests else summary,
    )


@dg.asset_check(
    asset=RISK_SNAPSHOT,
    name=FRESHNESS_CHECK,
    blocking=False,
    description=(
        "Every world's newest risk snapshot is within its risk_hub.max_snapshot_lag (SPEC §8). "
        "snapshot_freshness_sensor reports it whenever a breach opens or closes."
    ),
)
def snapshot_freshness(landing: LandingZoneResource, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    lake = warehouse.lake()
    state = freshness(lake, landing.zone(), sensor_now())
    breaches = {row["world_id"]: row["breach_id"] for row in open_breaches(lake).to_dict("records")}
    evaluation = freshness_evaluation(state, breaches)
    return dg.AssetCheckResult(
        passed=evaluation.passed,
        severity=evaluation.severity,
        metadata=evaluation.metadata,
        description=evaluation.description,
    )


defs = dg.Definitions(
    sensors=[risk_snapshot_sensor, snapshot_freshness_sensor],
    asset_checks=[snapshot_freshness],
)
