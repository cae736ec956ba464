"""Real Dagster machinery for tests: temp deployments, daemon backfill iterations, sensor ticks.

``deployment(tmp_path, monkeypatch)`` points every root at a temp folder through the environment
(the resources read it at run time), so tests never touch ``data/``. The daemon helpers load the
code location exactly as the daemon does (a code-server subprocess), with an instance that runs
launched runs synchronously in this process.
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
