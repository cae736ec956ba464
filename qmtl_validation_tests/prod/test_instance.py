"""The two instance configurations: ``deploy/dagster.yaml`` on the machine's real PostgreSQL, and
the root ``dagster.yaml`` (dev) that must work with no PostgreSQL at all."""

import datetime as dt
import shutil

import dagster as dg
import pytest
import yaml
from dagster._core.storage.dagster_run import DagsterRunStatus

from qmtl_validation.defs.pipeline import materialize_runs, register_run_partitions
from qmtl_validation.warehouse.queries import latest_rows
from qmtl_validation_tests.dagster_harness import Drops, bundle, deployment, lake_of, policy_file
from qmtl_validation_tests.prod.postgres import DEPLOY_INSTANCE, DEV_INSTANCE, instance_home, use_instance_home

TODAY = dt.date(2026, 11, 27)


def _env_refs(node, path=""):
    """(path, value) of every leaf of a YAML document that is not an ``{env: NAME}`` reference."""
    if isinstance(node, dict):
        if set(node) == {"env"}:
            return []
        return [leaf for key, value in node.items() for leaf in _env_refs(value, f"{path}.{key}")]
    if isinstance(node, list):
        return [leaf for index, value in enumerate(node) for leaf in _env_refs(value, f"{path}[{index}]")]
    return [(path, node)]


def test_prod_instance_reads_every_connection_setting_from_the_environment():
    config = yaml.safe_load(DEPLOY_INSTANCE.read_text(encoding="utf-8"))
    database = config["storage"]["postgres"]["postgres_db"]
    assert {key: value for key, value in database.items() if key != "scheme"} == {
        "hostname": {"env": "DAGSTER_PG_HOST"},
        "port": {"env": "DAGSTER_PG_PORT"},
        "username": {"env": "DAGSTER_PG_USER"},
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "db_name": {"env": "DAGSTER_PG_DB"},
    }
    literal = dict(_env_refs(config["storage"]))
    assert literal == {".postgres.postgres_db.scheme": "postgresql+psycopg2"}


def test_prod_instance_loads_postgres_storage_queue_limits_retries_and_retention(tmp_path, postgres_db, monkeypatch):
    home = instance_home(tmp_path / "home")
    use_instance_home(monkeypatch, home, postgres_db)
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        queue = instance.get_concurrency_config().run_queue_config
        assert queue.max_concurrent_runs == 8
        limits = {limit["key"]: limit for limit in queue.tag_concurrency_limits}
        assert limits["qmtl/world"] == {"key": "qmtl/world", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
        assert limits["dagster/backfill"]["limit"] == 2
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 1
        assert instance.run_monitoring_enabled
        from dagster._core.scheduler.instigation import InstigatorType as Kind, TickStatus

        sensor_retention = instance.get_tick_retention_settings(Kind.SENSOR)
        assert sensor_retention[TickStatus.SKIPPED] == 7
        assert sensor_retention[TickStatus.SUCCESS] == 30
        assert sensor_retention[TickStatus.FAILURE] == 90
        assert not instance.telemetry_enabled
        assert instance.get_runs() == []
    finally:
        instance.dispose()


@pytest.mark.slow
def test_a_real_materialisation_on_the_prod_instance_is_recorded_in_postgres(tmp_path, postgres_db, monkeypatch):
    home = instance_home(tmp_path / "home")
    use_instance_home(monkeypatch, home, postgres_db)
    deploy = deployment(tmp_path, monkeypatch)
    drops = Drops(deploy.settings.landing_root)
    drops.put([policy_file("beta_growth", 1)])
    drops.put(bundle("beta_growth", "mom_fast", "run-001", day=TODAY))
    drops.put(bundle("beta_growth", "mom_slow", "run-002", day=TODAY, seed=2))

    instance = dg.DagsterInstance.from_config(str(home))
    try:
        keys, intake = register_run_partitions(instance, deploy.settings, today=TODAY, lookback_days=3)
        assert sorted(keys) == ["beta_growth/mom_fast/run-001", "beta_growth/mom_slow/run-002"]
        result = materialize_runs(instance, keys)
        assert result.success
        run_id = result.run_id
    finally:
        instance.dispose()

    # What PostgreSQL holds, read with plain SQL: the run, its events, the dynamic partitions.
    (status, job), = postgres_db.query("SELECT status, pipeline_name FROM runs WHERE run_id = %s", (run_id,))
    assert (status, job) == ("SUCCESS", "validate_runs")
    materialised = postgres_db.query(
        "SELECT asset_key, partition FROM event_logs WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION'",
        (run_id,),
    )
    by_asset = {}
    for asset_key, partition in materialised:
        by_asset.setdefault(asset_key, set()).add(partition)
    assert by_asset['["evaluation_run"]'] == set(keys)
    assert by_asset['["validation_report"]'] == set(keys)
    partitions = postgres_db.query(
        "SELECT partition FROM dynamic_partitions WHERE partitions_def_name = 'evaluation_runs' ORDER BY partition"
    )
    assert [p for (p,) in partitions] == sorted(keys)

    rows = latest_rows(lake_of(deploy), "evaluation_run_history")
    assert sorted(rows["run_id"]) == ["run-001", "run-002"]
    assert set(rows["pipeline_run_id"].dropna()) <= {run_id}

    # The instance reopened from the same home sees the same run: nothing lived in memory only.
    reopened = dg.DagsterInstance.from_config(str(home))
    try:
        assert reopened.get_run_by_id(run_id).status == DagsterRunStatus.SUCCESS
    finally:
        reopened.dispose()


def test_dev_instance_needs_no_postgres(tmp_path, monkeypatch):
    """The root dagster.yaml, loaded the way Dagster loads it from a working directory, keeps all
    storage in SQLite under .dagster_home/ and works while every PostgreSQL setting points at a
    closed port."""
    config = yaml.safe_load(DEV_INSTANCE.read_text(encoding="utf-8"))
    assert "postgres" not in DEV_INSTANCE.read_text(encoding="utf-8").lower()
    assert set(config["storage"]) == {"sqlite"}

    work = tmp_path / "checkout"
    work.mkdir()
    shutil.copyfile(DEV_INSTANCE, work / "dagster.yaml")
    monkeypatch.chdir(work)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    for name, value in {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": "1", "DAGSTER_PG_USER": "nobody",
                        "DAGSTER_PG_PASSWORD": "x", "DAGSTER_PG_DB": "none"}.items():
        monkeypatch.setenv(name, value)

    instance = dg.DagsterInstance.from_config(str(work))
    try:
        assert type(instance.run_storage).__name__ == "SqliteRunStorage"
        assert type(instance.event_log_storage).__name__ in ("SqliteEventLogStorage", "ConsolidatedSqliteEventLogStorage")
        assert type(instance.schedule_storage).__name__ == "SqliteScheduleStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"

        @dg.asset
        def probe() -> int:
            return 1

        result = dg.materialize([probe], instance=instance)
        assert result.success
        assert instance.get_run_by_id(result.run_id).status == DagsterRunStatus.SUCCESS
    finally:
        instance.dispose()
    assert (work / ".dagster_home" / "storage").is_dir()
