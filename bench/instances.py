"""Temporary Dagster deployments for the benchmarks: instance storage, data roots, environment.

Two instance storages:

- ``postgres``: ``deploy/dagster.yaml`` (the production instance) on a fresh database of the local
  PostgreSQL cluster, with runs launched synchronously in the calling process (the test suite's
  ``SYNC_LAUNCH``), and Dagster's event batching switched on (see ``EVENT_BATCHING``).
- ``sqlite``: the development instance (the root ``dagster.yaml``: SQLite files under the
  instance home), same synchronous launch, Dagster defaults otherwise.

Data roots (landing zone, lake, catalog, reports) come from the environment the way a deployment
sets them (``QMTL_DATA_ROOT``, ``QMTL_LANDING_ROOT``), so the code server the daemon helpers start
sees the same roots.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator, Mapping

import yaml

from bench.common import REPO_ROOT

# Dagster writes one event per asset per partition. In a single-run backfill over 10,000 runs
# that is 70,000 materialisations; written one at a time they cost more than the validation
# itself. These two Dagster settings make the storage take them in batches (PostgreSQL storage
# implements batch writes; SQLite storage writes a batch one event at a time) and record one
# "planned" event per asset for the partition range instead of one per partition (Dagster's
# trade-off: if the run fails, its partitions are not each marked failed).
EVENT_BATCHING = {
    "DAGSTER_EVENT_BATCH_SIZE": "1000",
    "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "1",
}
DATA_VARIABLES = (
    "QMTL_PROFILE",
    "QMTL_DATA_ROOT",
    "QMTL_LANDING_ROOT",
    "QMTL_LAKE_ROOT",
    "QMTL_CATALOG_PATH",
    "QMTL_REPORT_ROOT",
)


@contextlib.contextmanager
def environment(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (or, for None, unset) environment variables for the block, then restore them."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def data_environment(root: Path, landing: Path | None = None) -> dict[str, str | None]:
    """Dev-profile roots under ``root`` (landing zone ``landing`` when given)."""
    values: dict[str, str | None] = {name: None for name in DATA_VARIABLES}
    values["QMTL_DATA_ROOT"] = str(root / "data")
    if landing is not None:
        values["QMTL_LANDING_ROOT"] = str(landing)
    return values


def _sync_launch() -> dict:
    from qmtl_validation_tests.prod.postgres import SYNC_LAUNCH

    return SYNC_LAUNCH


def sqlite_home(home: Path, *, sync_launch: bool = True) -> Path:
    """An instance home holding the development ``dagster.yaml`` with storage under ``home``."""
    config = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text(encoding="utf-8"))
    config["storage"] = {"sqlite": {"base_dir": str(home / "storage")}}
    config["local_artifact_storage"]["config"]["base_dir"] = str(home / "artifacts")
    config["compute_logs"]["config"]["base_dir"] = str(home / "compute_logs")
    if sync_launch:
        config.update(_sync_launch())
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return home


@contextlib.contextmanager
def dagster_instance(kind: str, home: Path, *, batch_events: bool = True):
    """A ``DagsterInstance`` of ``kind`` (``postgres`` or ``sqlite``) whose home is ``home``; the
    environment points ``DAGSTER_HOME`` (and the PostgreSQL variables) at it for the block, so a
    code server or run worker started inside sees the same instance. Yields (instance, facts)."""
    import dagster as dg

    facts: dict[str, object] = {"instance": kind, "event_batching": batch_events and kind == "postgres"}
    variables: dict[str, str | None] = {"DAGSTER_HOME": str(home)}
    variables.update({name: (value if batch_events else None) for name, value in EVENT_BATCHING.items()})
    cluster = database = None
    if kind == "postgres":
        from qmtl_validation_tests.prod.postgres import (
            PostgresCluster,
            ensure_postgres_running,
            instance_home,
        )

        ensure_postgres_running()
        cluster = PostgresCluster()
        database = cluster.create()
        instance_home(home, _sync_launch())
        variables.update(database.env())
        facts["database"] = database.name
    elif kind == "sqlite":
        sqlite_home(home)
    else:
        raise ValueError(f"instance kind {kind!r}: expected postgres or sqlite")
    try:
        with environment(variables):
            instance = dg.DagsterInstance.from_config(str(home))
            try:
                yield instance, facts
            finally:
                instance.dispose()
    finally:
        if cluster is not None:
            cluster.drop_all()
        shutil.rmtree(home, ignore_errors=True)
