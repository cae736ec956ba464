"""Real Dagster machinery for tests: temp deployments, daemon backfill iterations, sensor ticks.

``deployment(tmp_path, monkeypatch)`` points every root at a temp folder through the environment
(the resources read it at run time), so tests never touch ``data/``; ``s3_deployment`` does the
same for the prod profile on a moto bucket. The daemon helpers load the code location exactly as
the daemon does (a code-server subprocess), with an instance that runs launched runs
synchronously in this process:

- ``sensor_environment`` (before ``daemon_workspace``: the code server inherits the environment)
  lets sensors tick every second and reads their clock from a file ``set_clock`` moves;
- ``tick_sensor(context, instance, name)`` runs one tick of one sensor through the sensor
  daemon's ``execute_sensor_iteration`` and returns a ``TickOutcome`` (status, cursor, tick log,
  added partitions, launched runs, wall time);
- ``launch_asset_backfill`` / ``run_backfill_daemon`` submit and drive backfills through the
  backfill daemon's ``execute_backfill_iteration``;
- ``bundle``, ``policy_file`` and ``Drops`` write small valid drops to a local folder or a bucket.
"""

import contextlib
import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import dagster as dg
from dagster._core.execution.backfill import PartitionBackfill
from dagster._core.storage.dagster_run import RunsFilter
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)
from dagster._core.test_utils import create_test_daemon_workspace_context, instance_for_test
from dagster._core.workspace.load_target import ModuleTarget

from qmtl_validation.settings import REPO_ROOT, Settings, load_settings

SYNC_INSTANCE_OVERRIDES = {
    "run_coordinator": {"module": "dagster._core.run_coordinator", "class": "DefaultRunCoordinator"},
    "run_launcher": {
        "module": "dagster._core.launcher.sync_in_memory_run_launcher",
        "class": "SyncInMemoryRunLauncher",
    },
}


@dataclass(frozen=True)
class Deployment:
    root: Path
    settings: Settings

    @property
    def landing(self) -> Path:
        return Path(self.settings.landing_root)


def deployment(tmp_path: Path, monkeypatch) -> Deployment:
    """A dev-profile deployment whose landing zone, lake, catalog and reports live in ``tmp_path``."""
    data = tmp_path / "data"
    for name in ("QMTL_LANDING_ROOT", "QMTL_LAKE_ROOT", "QMTL_CATALOG_PATH", "QMTL_REPORT_ROOT", "QMTL_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("QMTL_DATA_ROOT", str(data))
    return Deployment(tmp_path, load_settings())


@contextlib.contextmanager
def sync_instance() -> Iterator[dg.DagsterInstance]:
    """A temp instance whose launched runs execute synchronously in this process."""
    with instance_for_test(overrides=SYNC_INSTANCE_OVERRIDES) as instance:
        yield instance


@contextlib.contextmanager
def daemon_workspace(instance: dg.DagsterInstance):
    """The code location loaded the way the daemon loads it."""
    target = ModuleTarget(
        module_name="qmtl_validation.definitions",
        attribute="defs",
        working_directory=str(REPO_ROOT),
        location_name="qmtl_validation",
    )
    with create_test_daemon_workspace_context(target, instance) as context:
        yield context


def launch_asset_backfill(
    context,
    instance: dg.DagsterInstance,
    partition_keys: Sequence[str],
    asset_keys: Sequence[str],
    *,
    backfill_id: str,
    tags: dict[str, str] | None = None,
) -> str:
    """Submit an asset backfill as the UI or ``qmtl-validation backfill`` would."""
    asset_graph = context.create_request_context().asset_graph
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=backfill_id,
        asset_graph=asset_graph,
        partition_names=list(partition_keys),
        asset_selection=[dg.AssetKey(key) for key in asset_keys],
        backfill_timestamp=dt.datetime.now(dt.timezone.utc).timestamp(),
        tags=tags or {},
        dynamic_partitions_store=instance,
        all_partitions=False,
        title=None,
        description=None,
        run_config=None,
    )
    instance.add_backfill(backfill)
    return backfill_id


def run_backfill_daemon(context, instance: dg.DagsterInstance, backfill_id: str, *, max_iterations: int = 10):
    """Iterate the backfill daemon until the backfill completes; returns its runs."""
    from dagster._core.execution.backfill import BulkActionStatus
    from dagster._daemon.backfill import execute_backfill_iteration

    logger = logging.getLogger("qmtl_validation_tests.backfill")
    for _ in range(max_iterations):
        list(execute_backfill_iteration(context, logger))
        if instance.get_backfill(backfill_id).status != BulkActionStatus.REQUESTED:
            break
    return instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill_id}))


# ---------------------------------------------------------------------------------------------
# Sensor ticks through the daemon's own code path.

REPOSITORY = "__repository__"
LOCATION = "qmtl_validation"


def sensor_environment(monkeypatch, clock_file: Path | None = None, *, lookback_days: int | None = None) -> None:
    """Sensors may tick every second (``tick_sensor`` waits out the rest of that second); optionally
    they read their clock from ``clock_file`` (see ``set_clock``). Set before ``daemon_workspace``:
    the code server inherits the environment."""
    monkeypatch.setenv("QMTL_SENSOR_INTERVAL_SECONDS", "1")
    if clock_file is not None:
        monkeypatch.setenv("QMTL_NOW", f"file:{clock_file}")
    if lookback_days is not None:
        monkeypatch.setenv("QMTL_SENSOR_LOOKBACK_DAYS", str(lookback_days))


def set_clock(clock_file: Path, instant: dt.datetime) -> None:
    """Move the sensors' clock (read by the code server at every tick)."""
    clock_file.write_text(instant.astimezone(dt.timezone.utc).isoformat(), encoding="utf-8")


@dataclass(frozen=True)
class TickOutcome:
    """What one sensor tick did, as the daemon recorded it."""

    status: str
    run_ids: tuple[str, ...]
    cursor: dict
    skip_reason: str | None
    error: str | None
    log: tuple[str, ...]
    seconds: float
    partitions_added: tuple[str, ...]
    runs: tuple  # DagsterRun of each launched run (backfill ids are in run_ids but not here)

    def warnings(self) -> list[str]:
        return [line for line in self.log if line.startswith("WARNING ")]


def remote_sensor(context, name: str):
    location = context.create_request_context().get_code_location(LOCATION)
    return location.get_repository(REPOSITORY).get_sensor(name)


def _only_running(context, instance: dg.DagsterInstance, name: str):
    """Stop every other sensor of the location and make sure ``name`` is running."""
    location = context.create_request_context().get_code_location(LOCATION)
    target = None
    for sensor in location.get_repository(REPOSITORY).get_sensors():
        state = sensor.get_current_instigator_state(
            instance.get_instigator_state(sensor.get_remote_origin_id(), sensor.selector_id)
        )
        if sensor.name == name:
            target = sensor
            if not state.is_running:
                instance.start_sensor(sensor)
        elif state.is_running:
            instance.stop_sensor(sensor.get_remote_origin_id(), sensor.selector_id, sensor)
    if target is None:
        raise KeyError(f"no sensor {name!r} in the code location")
    return target


def tick_sensor(context, instance: dg.DagsterInstance, name: str) -> TickOutcome:
    """Evaluate one tick of sensor ``name`` with the sensor daemon's ``execute_sensor_iteration``
    (sensor evaluated in the code server, requests handled and runs launched by the daemon code;
    with ``sync_instance`` the runs have finished when this returns)."""
    import json
    import time

    from dagster._core.definitions.instigation_logger import get_instigation_log_records
    from dagster._daemon.sensor import execute_sensor_iteration

    from dagster._daemon.sensor import get_elapsed

    sensor = _only_running(context, instance, name)
    origin_id, selector_id = sensor.get_remote_origin_id(), sensor.selector_id
    state = instance.get_instigator_state(origin_id, selector_id)
    elapsed = get_elapsed(state) if state is not None else None
    if elapsed is not None and elapsed < sensor.min_interval_seconds:
        time.sleep(sensor.min_interval_seconds - elapsed + 0.05)
    before = {t.tick_id for t in instance.get_ticks(origin_id, selector_id, limit=5)}
    started = time.perf_counter()
    list(
        execute_sensor_iteration(
            context, logging.getLogger("qmtl_validation_tests.sensor"), threadpool_executor=None,
            submit_threadpool_executor=None,
        )
    )
    seconds = time.perf_counter() - started
    ticks = [t for t in instance.get_ticks(origin_id, selector_id, limit=5) if t.tick_id not in before]
    if not ticks:
        raise AssertionError(f"sensor {name} did not tick")
    tick = ticks[0]
    log = []
    if tick.log_key:
        for record in get_instigation_log_records(instance, tick.log_key):
            log.append(f"{record.get('levelname', 'INFO')} {record.get('msg', '')}")
    added = tuple(
        key
        for result in tick.tick_data.dynamic_partitions_request_results
        for key in (result.added_partitions or ())
    )
    runs = tuple(r for r in (instance.get_run_by_id(i) for i in tick.run_ids) if r is not None)
    return TickOutcome(
        status=tick.status.value,
        run_ids=tuple(tick.run_ids),
        cursor=json.loads(tick.cursor) if tick.cursor else {},
        skip_reason=tick.skip_reason,
        error=tick.error.to_string() if tick.error else None,
        log=tuple(log),
        seconds=seconds,
        partitions_added=added,
        runs=runs,
    )


def partition_keys_of(run_or_request, order: Sequence[str]) -> list[str]:
    """The partition keys a launched run or a run request covers: its single partition, or the
    keys of its range in ``order`` (the instance's partition order, e.g. ``get_dynamic_partitions``)."""
    single = getattr(run_or_request, "partition_key", None) or run_or_request.tags.get(PARTITION_NAME_TAG)
    if single:
        return [single]
    tags = run_or_request.tags
    start, end = order.index(tags[ASSET_PARTITION_RANGE_START_TAG]), order.index(tags[ASSET_PARTITION_RANGE_END_TAG])
    return list(order[start : end + 1])


def backfill_ids_of(outcome: TickOutcome, instance: dg.DagsterInstance) -> list[str]:
    """The backfills a tick requested (their ids are among the tick's run ids)."""
    return [i for i in outcome.run_ids if instance.get_backfill(i) is not None]


# ---------------------------------------------------------------------------------------------
# Drops: small valid bundles and policies, written to a local landing folder or an S3 bucket.


def bundle(world_id: str, strategy_id: str, run_id: str, *, day: dt.date, seed: int = 1, periods: int = 300,
           check_ids: bool = True, **manifest) -> list[tuple[str, bytes]]:
    """A valid run bundle (parquet returns and run.json) dropped on ``day``, as (key, bytes)."""
    import numpy as np

    from qmtl_validation.sample_data import bundle_files, make_run_manifest

    submitted = dt.datetime.combine(day, dt.time(8, 0), dt.timezone.utc)
    run = make_run_manifest(world_id, strategy_id, run_id, submitted_at=submitted, **manifest)
    returns = np.random.default_rng(seed).normal(0.0008, 0.01, periods)
    return bundle_files(run, returns, drop_date=day, check_ids=check_ids)


def policy_file(world_id: str, version: int, sample_world: str = "beta_growth", *, as_version: str | None = None
                ) -> tuple[str, bytes]:
    """``policies/<world>/<as_version or version>.yaml`` with the sample world's policy ``version``."""
    from qmtl_validation.sample_data import render_policy

    text = render_policy(sample_world, version)
    if world_id != sample_world:
        text = text.replace(sample_world, world_id)
    return f"policies/{world_id}/{as_version or version}.yaml", text.encode("utf-8")


class Drops:
    """Writes (key, bytes) pairs into a landing zone root: a local folder or ``s3://bucket/prefix``."""

    def __init__(self, root: str, s3_client=None):
        self.root = root
        self.client = s3_client

    def put(self, files) -> None:
        for key, data in files:
            if self.root.startswith("s3://"):
                bucket, _, prefix = self.root[len("s3://"):].partition("/")
                self.client.put_object(Bucket=bucket, Key="/".join(p for p in (prefix, key) if p), Body=data)
            else:
                path = Path(self.root, key)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)

    def exists(self, key: str) -> bool:
        if self.root.startswith("s3://"):
            bucket, _, prefix = self.root[len("s3://"):].partition("/")
            found = self.client.list_objects_v2(Bucket=bucket, Prefix="/".join(p for p in (prefix, key) if p))
            return found.get("KeyCount", 0) > 0
        return Path(self.root, key).exists()


def s3_deployment(tmp_path: Path, monkeypatch, bucket) -> Deployment:
    """A prod-profile deployment: landing zone, lake and reports in the moto bucket (dagster-aws
    ``S3Resource`` clients), catalog in ``tmp_path``."""
    monkeypatch.setenv("QMTL_PROFILE", "prod")
    monkeypatch.setenv("QMTL_LANDING_ROOT", bucket.uri("landing"))
    monkeypatch.setenv("QMTL_LAKE_ROOT", bucket.uri("lake"))
    monkeypatch.setenv("QMTL_REPORT_ROOT", bucket.uri("reports"))
    monkeypatch.setenv("QMTL_CATALOG_PATH", str(tmp_path / "validation.duckdb"))
    return Deployment(tmp_path, load_settings())


def lake_of(deployment: Deployment):
    from qmtl_validation.warehouse.lake import Lake

    return Lake.from_settings(deployment.settings)
