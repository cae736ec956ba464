"""The scale-out configuration: ``deploy/dagster.ecs.yaml`` (runs as ECS tasks through dagster-aws's
``EcsRunLauncher``) loads without any AWS call, and ``QMTL_BACKFILL_RUNS_PER_CHUNK`` switches the
run assets from single-run to multi-run backfills, which the backfill daemon really splits."""

import os
import socket
import subprocess
import sys
import threading

import dagster as dg
import pytest
import yaml

from qmtl_validation.settings import REPO_ROOT, read_backfill_runs_per_chunk
from qmtl_validation_tests.prod.postgres import DEPLOY_ECS_INSTANCE, DEPLOY_INSTANCE, instance_home, use_instance_home

ECS_ENV = {
    "AWS_REGION": "eu-west-1",
    "AWS_DEFAULT_REGION": "eu-west-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_MAX_ATTEMPTS": "1",
    "QMTL_ECS_EXECUTION_ROLE_ARN": "arn:aws:iam::123456789012:role/qmtl-execution",
    "QMTL_ECS_TASK_ROLE_ARN": "arn:aws:iam::123456789012:role/qmtl-run",
    "QMTL_ECS_LOG_GROUP": "/ecs/qmtl-validation-runs",
    "QMTL_COMPUTE_LOG_BUCKET": "qmtl-compute-logs",
    "QMTL_COMPUTE_LOG_PREFIX": "dagster",
    "QMTL_PG_PASSWORD_SECRET_ARN": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:qmtl-pg-AbCdEf",
}


class ConnectionCounter:
    """A TCP listener that counts every connection made to it (and closes it)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def test_the_ecs_instance_configuration_loads_without_calling_aws(tmp_path, postgres_db, monkeypatch):
    counter = ConnectionCounter()
    try:
        for name, value in ECS_ENV.items():
            monkeypatch.setenv(name, value)
        # Every AWS client the launcher and the log manager build points here: a call would show.
        monkeypatch.setenv("AWS_ENDPOINT_URL", counter.url)
        home = instance_home(tmp_path / "home", source=DEPLOY_ECS_INSTANCE)
        use_instance_home(monkeypatch, home, postgres_db)
        instance = dg.DagsterInstance.from_config(str(home))
        try:
            launcher = instance.run_launcher
            assert type(launcher).__name__ == "EcsRunLauncher"
            assert launcher.container_name == "run"
            assert launcher.use_current_ecs_task_config is True
            assert launcher.task_definition is None  # registered when a run launches, not now
            assert launcher.task_definition_dict["execution_role_arn"] == ECS_ENV["QMTL_ECS_EXECUTION_ROLE_ARN"]
            assert launcher.task_definition_dict["task_role_arn"] == ECS_ENV["QMTL_ECS_TASK_ROLE_ARN"]
            assert launcher.secrets == [
                {"name": "DAGSTER_PG_PASSWORD", "valueFrom": ECS_ENV["QMTL_PG_PASSWORD_SECRET_ARN"]}
            ]
            assert {"QMTL_PROFILE", "QMTL_LAKE_ROOT", "QMTL_LANDING_ROOT"} <= set(launcher.env_vars)
            assert "DAGSTER_PG_PASSWORD" not in launcher.env_vars  # a secret, injected by ECS
            assert launcher.run_resources == {"cpu": "1024", "memory": "4096"}
            assert type(instance.compute_log_manager).__name__ == "S3ComputeLogManager"
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            queue = instance.get_concurrency_config().run_queue_config
            assert queue.max_concurrent_runs == 40
            assert instance.run_retries_enabled and instance.run_monitoring_enabled
            assert instance.get_runs() == []
        finally:
            instance.dispose()
    finally:
        counter.close()
    assert counter.connections == 0


def test_the_ecs_configuration_keeps_every_secret_out_of_the_file():
    text = DEPLOY_ECS_INSTANCE.read_text(encoding="utf-8")
    config = yaml.safe_load(text)
    database = config["storage"]["postgres"]["postgres_db"]
    assert database["password"] == {"env": "DAGSTER_PG_PASSWORD"}
    assert config["run_launcher"]["config"]["secrets"][0]["valueFrom"] == {"env": "QMTL_PG_PASSWORD_SECRET_ARN"}
    # Same storage, queue limits per world and retries as the single-machine production instance.
    base = yaml.safe_load(DEPLOY_INSTANCE.read_text(encoding="utf-8"))
    assert config["storage"] == base["storage"]
    assert config["run_coordinator"]["config"]["tag_concurrency_limits"][0] == \
        base["run_coordinator"]["config"]["tag_concurrency_limits"][0]
    assert config["run_retries"] == base["run_retries"]


PROBE = (
    "from qmtl_validation.defs.runs.assets import evaluation_metrics, run_bundle\n"
    "for asset in (run_bundle, evaluation_metrics):\n"
    "    policy = asset.backfill_policy\n"
    "    print(policy.policy_type.value, policy.max_partitions_per_run)\n"
)


def _backfill_policy_with(value: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "QMTL_BACKFILL_RUNS_PER_CHUNK"}
    if value is not None:
        env["QMTL_BACKFILL_RUNS_PER_CHUNK"] = value
    return subprocess.run([sys.executable, "-W", "ignore", "-c", PROBE], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_backfills_are_single_run_unless_the_deployment_asks_for_chunks():
    assert read_backfill_runs_per_chunk({}) is None
    assert read_backfill_runs_per_chunk({"QMTL_BACKFILL_RUNS_PER_CHUNK": " 25 "}) == 25
    with pytest.raises(ValueError, match="expected a positive integer"):
        read_backfill_runs_per_chunk({"QMTL_BACKFILL_RUNS_PER_CHUNK": "0"})
    with pytest.raises(ValueError, match="expected a positive integer"):
        read_backfill_runs_per_chunk({"QMTL_BACKFILL_RUNS_PER_CHUNK": "many"})

    default = _backfill_policy_with(None)
    assert default.returncode == 0, default.stderr
    assert default.stdout.split("\n")[:2] == ["SINGLE_RUN None", "SINGLE_RUN None"]
    chunked = _backfill_policy_with("25")
    assert chunked.returncode == 0, chunked.stderr
    assert chunked.stdout.split("\n")[:2] == ["MULTI_RUN 25", "MULTI_RUN 25"]


@pytest.mark.slow
def test_a_multi_run_backfill_splits_a_world_history_into_chunks_of_runs(tmp_path, monkeypatch):
    import datetime as dt

    from dagster._core.test_utils import instance_for_test

    from qmtl_validation.defs.pipeline import make_contiguous, register_run_partitions, runs_asset_keys
    from qmtl_validation_tests.dagster_harness import (
        Drops, bundle, daemon_workspace, deployment, launch_asset_backfill, policy_file, run_backfill_daemon,
    )
    from qmtl_validation_tests.prod.daemons import reap_code_servers

    today = dt.date(2026, 11, 27)
    deploy = deployment(tmp_path, monkeypatch)
    drops = Drops(deploy.settings.landing_root)
    drops.put([policy_file("beta_growth", 1)])
    for n in range(5):
        drops.put(bundle("beta_growth", f"strategy_{n}", f"run-{n:03d}", day=today, seed=n + 1))
    monkeypatch.setenv("QMTL_BACKFILL_RUNS_PER_CHUNK", "2")  # read by the code server at load
    try:
        with instance_for_test() as instance:
            keys, _ = register_run_partitions(instance, deploy.settings, today=today, lookback_days=2)
            keys = make_contiguous(instance, keys)
            with daemon_workspace(instance) as context:
                asset_graph = context.create_request_context().asset_graph
                assets = [key.to_user_string() for key in runs_asset_keys(asset_graph)]
                backfill_id = launch_asset_backfill(context, instance, keys, assets, backfill_id="chunked")
                runs = run_backfill_daemon(context, instance, backfill_id, max_iterations=3)
    finally:
        reap_code_servers()
    ranges = sorted(
        (run.tags["dagster/asset_partition_range_start"], run.tags["dagster/asset_partition_range_end"])
        for run in runs
    )
    assert len(runs) == 3  # 5 runs in chunks of 2: 2 + 2 + 1
    assert ranges == [(keys[0], keys[1]), (keys[2], keys[3]), (keys[4], keys[4])]


ENGINE_TYPES = {
    "athena": {"VARCHAR": "string", "BIGINT": "bigint", "DOUBLE": "double", "BOOLEAN": "boolean",
               "TIMESTAMP WITH TIME ZONE": "timestamp", "DATE": "date", "VARCHAR[]": "array<string>"},
    "trino": {"VARCHAR": "varchar", "BIGINT": "bigint", "DOUBLE": "double", "BOOLEAN": "boolean",
              "TIMESTAMP WITH TIME ZONE": "timestamp(3)", "DATE": "date", "VARCHAR[]": "array(varchar)"},
    "spark": {"VARCHAR": "string", "BIGINT": "bigint", "DOUBLE": "double", "BOOLEAN": "boolean",
              "TIMESTAMP WITH TIME ZONE": "timestamp", "DATE": "date", "VARCHAR[]": "array<string>"},
}


def test_the_athena_trino_and_spark_table_definitions_in_scaling_md_match_the_lake():
    """docs/SCALING.md's DDL names every column of the table with the type the lake writes."""
    import re

    from qmtl_validation.warehouse.tables import TABLES, duckdb_type

    text = (REPO_ROOT / "docs" / "SCALING.md").read_text(encoding="utf-8")
    sql = "\n".join(re.findall(r"```sql\n(.*?)```", text, flags=re.S))
    statements = re.findall(r"CREATE (EXTERNAL )?TABLE ([\w.]+) \((.*?)\)\s*\n(PARTITIONED BY|WITH|USING)", sql, flags=re.S)
    assert len(statements) == 5
    for external, name, body, clause in statements:
        engine = "athena" if external else ("trino" if clause == "WITH" else "spark")
        table = TABLES[name.split(".")[-1]]
        columns = [c.strip() for c in body.replace("\n", " ").split(",") if c.strip()]
        declared = [(c.split()[0].strip("`\""), " ".join(c.split()[1:]).lower()) for c in columns]
        expected = [(column, ENGINE_TYPES[engine][duckdb_type(spec.type)])
                    for column, spec in table.columns.items() if column != table.partitioned_by]
        if engine != "athena":  # Trino and Spark list the partition column, last
            expected.append((table.partitioned_by, ENGINE_TYPES[engine]["VARCHAR"]))
        assert declared == expected, name
