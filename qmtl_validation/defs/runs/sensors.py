"""Landing-zone sensors: run bundles → ``evaluation_runs`` partitions and validation runs.

``run_bundle_sensor`` runs one intake per tick (:func:`~qmtl_validation.warehouse.intake.take_in_run_bundles`):
it lists only the look-back's date prefixes, registers complete new bundles, quarantines bad drops
(a ``rejections`` row with the exact reason, logged in the tick; the files stay where they are)
and returns one ``SensorResult``: the new partitions, added world by world, and one run of
``validate_runs`` per world over that world's new partitions (one contiguous range; a lone drop is
a single-partition run keyed ``<partition key>:<content token>``). Run keys hash the batch's keys
and content tokens, so an identical re-drop or a re-requested batch never runs twice
(:func:`drop_run_requests`).

Settings shared by every landing-zone sensor (environment; the interval is read when the code
location loads, the others at every tick):

- ``QMTL_SENSOR_INTERVAL_SECONDS`` (default 30): minimum seconds between two ticks of a sensor
  (benchmarks use 5, tests 1; Dagster reads 0 as its 30 s default, so the floor is 1).
- ``QMTL_SENSOR_LOOKBACK_DAYS`` (default 14): date prefixes listed per tick are today's and the
  ``N`` days before it. The sample landing zone drops bundles up to 9 days back.
- ``QMTL_SENSOR_MAX_DROPS_PER_TICK`` (default 200): bundles or snapshots read per tick; the rest
  wait for the next tick (the cursor counts them as ``deferred``).
- ``QMTL_NOW``: the sensors' clock, for tests and replays. Unset = the real UTC clock; an ISO-8601
  instant (naive = UTC) = that instant; ``file:<path>`` = the instant written in that file, re-read
  at every tick, so a test can move time between ticks of a sensor running in a code server.
  In-process callers may also replace :data:`clock` (a module-level function).

The cursor is a small JSON watermark, never a key list: ``{"date": <last UTC date scanned>,
"lookback_days": .., "prefixes": .., "list_calls": .., "new": .., "unchanged": .., "rejected": ..,
"conflicts": .., "pending": .., "deferred": .., "recovered": .., "taken_in": <running total>,
"seconds": ..}`` (``recovered``: registered runs re-requested because the instance lacked their
partition). When the sensor was stopped for longer than the look-back, the next tick scans back to
the cursor's date (at most ``MAX_CATCH_UP_DAYS``), so no drop date is skipped.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection, Mapping, Sequence

import dagster as dg

from qmtl_validation.defs.pipeline import range_tags
from qmtl_validation.defs.resources import LandingZoneResource, WarehouseResource
from qmtl_validation.defs.runs.partitions import evaluation_runs_partitions
from qmtl_validation.warehouse.intake import (
    IntakeResult,
    RUN_BUNDLE_KIND,
    RegisteredDrop,
    record_intake,
    registered_drops,
    registry_drop,
    take_in_run_bundles,
)
from qmtl_validation.warehouse.lake import Lake

SOURCE_TAG = "qmtl/source"
LANDING_PREFIX_TAG = "qmtl/landing_prefix"
CONTENT_TOKEN_TAG = "qmtl/content_token"
DROPS_TAG = "qmtl/drops"
MAX_CATCH_UP_DAYS = 90
REJECTIONS_LOGGED_PER_TICK = 200


@dataclass(frozen=True)
class SensorSettings:
    interval_seconds: int = 30
    lookback_days: int = 14
    max_drops_per_tick: int = 200


def _int_setting(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name}={text!r}: expected an integer") from None
    if value < minimum:
        raise ValueError(f"{name}={value}: must be >= {minimum}")
    return value


def sensor_settings(environ: Mapping[str, str] | None = None) -> SensorSettings:
    """The landing-zone sensors' settings from the environment (module docstring)."""
    env = os.environ if environ is None else environ
    return SensorSettings(
        interval_seconds=_int_setting(env, "QMTL_SENSOR_INTERVAL_SECONDS", 30, 1),
        lookback_days=_int_setting(env, "QMTL_SENSOR_LOOKBACK_DAYS", 14, 0),
        max_drops_per_tick=_int_setting(env, "QMTL_SENSOR_MAX_DROPS_PER_TICK", 200, 1),
    )


def _parse_instant(text: str, source: str) -> dt.datetime:
    try:
        instant = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{source}: {text.strip()!r} is not an ISO-8601 instant") from None
    return instant.replace(tzinfo=dt.timezone.utc) if instant.tzinfo is None else instant.astimezone(dt.timezone.utc)


def environment_clock() -> dt.datetime:
    """Now (UTC): ``QMTL_NOW`` when set (an instant, or ``file:<path>`` holding one), else the real clock."""
    override = os.environ.get("QMTL_NOW", "").strip()
    if not override:
        return dt.datetime.now(dt.timezone.utc)
    if override.startswith("file:"):
        path = Path(override[len("file:"):])
        return _parse_instant(path.read_text(encoding="utf-8"), f"QMTL_NOW file {path}")
    return _parse_instant(override, "QMTL_NOW")


# The clock every landing-zone sensor reads; in-process tests may replace it.
clock: Callable[[], dt.datetime] = environment_clock


def sensor_now() -> dt.datetime:
    return clock()


def read_cursor(cursor: str | None) -> dict[str, Any]:
    """The JSON watermark of a sensor (``{}`` when absent or unreadable: a bad cursor must not
    wedge a sensor, the next tick simply writes a fresh one)."""
    if not cursor:
        return {}
    try:
        value = json.loads(cursor)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def lookback_for(cursor: Mapping[str, Any], today: dt.date, lookback_days: int) -> int:
    """Days to look back this tick: the configured look-back, widened to the cursor's date after
    an outage longer than it (capped at ``MAX_CATCH_UP_DAYS``)."""
    try:
        last = dt.date.fromisoformat(str(cursor["date"]))
    except (KeyError, ValueError):
        return lookback_days
    gap = (today - last).days
    return min(max(lookback_days, gap), max(lookback_days, MAX_CATCH_UP_DAYS))


def log_rejections(context: dg.SensorEvaluationContext, rows: list[dict[str, Any]]) -> None:
    """One warning per rejected drop in the tick log (the ``rejections`` table has them all)."""
    for row in rows[:REJECTIONS_LOGGED_PER_TICK]:
        label = "conflict" if row.get("conflict") else "rejected"
        context.log.warning(f"{label} {row['kind']} {row['key']}: [{row.get('reason_code')}] {row['reason']}")
    if len(rows) > REJECTIONS_LOGGED_PER_TICK:
        context.log.warning(f"... and {len(rows) - REJECTIONS_LOGGED_PER_TICK} more (see the rejections table)")


def intake_cursor(
    previous: Mapping[str, Any], today: dt.date, lookback_days: int, intake: IntakeResult, list_calls: int, **extra: Any
) -> str:
    counts = {
        "date": today.isoformat(),
        "lookback_days": lookback_days,
        "prefixes": len(intake.prefixes),
        "list_calls": list_calls,
        "new": len(intake.registered),
        "unchanged": len(intake.unchanged),
        "rejected": len(intake.rejections) - len(intake.conflicts),
        "conflicts": len(intake.conflicts),
        "pending": intake.pending,
        "deferred": intake.deferred,
        "taken_in": int(previous.get("taken_in", 0)) + len(intake.registered),
        **extra,
    }
    return json.dumps(counts, sort_keys=True, separators=(",", ":"))


def listing_summary(prefixes: list[str], list_calls: int) -> str:
    span = f"{prefixes[0]} .. {prefixes[-1]}" if prefixes else "nothing"
    return f"listed {len(prefixes)} date prefixes ({span}) in {list_calls} list calls"


def file_label(sensor_name: str) -> str:
    """A lake file label unique to this tick (the clock may be frozen: the time alone is not)."""
    return f"{sensor_name}-{uuid.uuid4().hex[:8]}"


def drops_to_request(
    context: dg.SensorEvaluationContext, lake: Lake, intake: IntakeResult, *, kind: str, partitions_name: str,
    budget: int,
) -> tuple[list[RegisteredDrop], set[str]]:
    """The drops a tick requests runs for, and the partitions the instance already has.

    The tick's newly registered drops, plus registered drops whose partition the instance lacks (a
    tick that failed after writing the registry, or a fresh instance over an old lake), within the
    tick's ``budget``; :func:`drop_run_requests` keeps any of them from running twice.
    """
    drops = list(intake.registered)
    known = set(context.instance.get_dynamic_partitions(partitions_name))
    missing = [key for key in dict.fromkeys(intake.unchanged) if key not in known]
    missing = missing[: max(0, budget - len(drops))]
    if missing:
        registry = registered_drops(lake, kind)
        drops.extend(registry_drop(kind, key, registry[key]) for key in missing)
        context.log.info(f"re-requesting {len(missing)} registered drop(s) the instance has no partition for")
    return drops, known


def drop_run_requests(
    drops: Sequence[RegisteredDrop], known_partitions: Collection[str], *, source: str, world_tag: str | None = None
) -> tuple[list[str], list[dg.RunRequest]]:
    """The partitions to add and the runs to request for a tick's registered drops.

    Drops new to the instance are grouped by world: their keys are added together, world by
    world, so each world's batch is one contiguous range of Dagster's partition order, and the
    batch becomes one run over that range. One run per drop would cost a run's start-up (seconds)
    per drop and a lake file per table per drop; one per world and tick keeps both to a handful.
    The run key is the batch's ``key:token`` list hashed, so requesting the same batch again (a
    tick that failed after writing the registry is followed by one that re-requests its drops)
    never runs it twice. A drop whose partition the instance
    already has cannot join a range (its position is elsewhere) and gets a run of its own, keyed
    ``<partition key>:<content token>``.

    ``world_tag`` names a tag that carries each run's world (the snapshot runs' ``qmtl/world``, on
    which the prod instance allows one run per world at a time).
    """
    unique = list({drop.partition_key: drop for drop in drops}.values())
    fresh = sorted(
        (d for d in unique if d.partition_key not in known_partitions), key=lambda d: (d.world_id, d.partition_key)
    )
    requests = [_single_drop_request(d, source, world_tag) for d in unique if d.partition_key in known_partitions]
    for world_id, batch in itertools.groupby(fresh, key=lambda d: d.world_id):
        batch = list(batch)
        if len(batch) == 1:
            requests.append(_single_drop_request(batch[0], source, world_tag))
            continue
        keys = [d.partition_key for d in batch]
        digest = hashlib.sha256("\n".join(f"{d.partition_key}:{d.token}" for d in batch).encode()).hexdigest()
        tags = {SOURCE_TAG: source, DROPS_TAG: str(len(batch)), **range_tags(keys)}
        if world_tag:
            tags[world_tag] = world_id
        requests.append(dg.RunRequest(run_key=f"{keys[0]}..{keys[-1]}:{digest[:16]}", tags=tags))
    return [d.partition_key for d in fresh], requests


def _single_drop_request(drop: RegisteredDrop, source: str, world_tag: str | None) -> dg.RunRequest:
    tags = {SOURCE_TAG: source, LANDING_PREFIX_TAG: drop.landing_prefix, CONTENT_TOKEN_TAG: drop.token}
    if world_tag:
        tags[world_tag] = drop.world_id
    return dg.RunRequest(run_key=f"{drop.partition_key}:{drop.token}", partition_key=drop.partition_key, tags=tags)


_SETTINGS = sensor_settings()


@dg.sensor(
    name="run_bundle_sensor",
    job_name="validate_runs",
    minimum_interval_seconds=_SETTINGS.interval_seconds,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Takes complete run bundles (run.json present) in from the landing zone's recent date "
        "prefixes: adds an evaluation_runs partition for each new one and launches validate_runs "
        "once per world over that world's new partitions; bad drops get a rejections row and a "
        "line in the tick log, and stay where they are."
    ),
)
def run_bundle_sensor(
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
    intake = take_in_run_bundles(
        zone,
        lake,
        today=today,
        lookback_days=lookback,
        max_bundles=settings.max_drops_per_tick,
        now=now,
        sensor="run_bundle_sensor",
    )
    record_intake(lake, intake, now=now, file_label=file_label("run_bundle_sensor"))
    log_rejections(context, intake.rejections)

    drops, known_partitions = drops_to_request(
        context, lake, intake, kind=RUN_BUNDLE_KIND, partitions_name=evaluation_runs_partitions.name,
        budget=settings.max_drops_per_tick,
    )
    recovered = len(drops) - len(intake.registered)
    new_keys, requests = drop_run_requests(drops, known_partitions, source="run_bundle_sensor")

    summary = intake.summary()
    elapsed = time.perf_counter() - started
    context.log.info(f"{summary}; {listing_summary(intake.prefixes, zone.list_calls)}, {elapsed:.2f} s")
    cursor = intake_cursor(
        previous, today, lookback, intake, zone.list_calls, recovered=recovered, seconds=round(elapsed, 3)
    )
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[evaluation_runs_partitions.build_add_request(new_keys)] if new_keys else [],
        cursor=cursor,
        skip_reason=None if requests else f"no new run bundles ({summary})",
    )
