"""A writer killed in the middle of a write: no partial Parquet file ever becomes visible, and the
retry writes the partition exactly once.

- Local lake: a writer process appending large files is SIGKILLed while a temp file is open; every
  visible file is complete, the catalog counts only complete files, and the retry under the same
  file name publishes once (a second retry is refused).
- S3 lake, a real Dagster run on the production instance: the run's process is SIGKILLed while its
  ``evaluation_metrics`` upload hangs; run monitoring fails the run, the run-retry daemon
  re-executes it from the failure, and every table ends with exactly one file for the run.
"""

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from qmtl_validation.settings import REPO_ROOT
from qmtl_validation.warehouse.catalog import connect_catalog, ensure_catalog
from qmtl_validation.warehouse.lake import Lake
from qmtl_validation.warehouse.outbox import verify_events_chain
from qmtl_validation.warehouse.queries import latest_rows
from qmtl_validation_tests.dagster_harness import (
    Drops,
    bundle,
    daemon_workspace,
    policy_file,
    s3_deployment,
    sensor_environment,
    set_clock,
    tick_sensor,
)
from qmtl_validation_tests.prod.daemons import drain_queue, monitor_runs, retry_failed_runs, run_worker_pid, wait_for_runs
from qmtl_validation_tests.prod.faulty_s3 import faulty_s3
from qmtl_validation_tests.prod.postgres import instance_home, use_instance_home

ROWS_PER_FILE = 1_500_000

WRITER = """
import sys
import numpy as np
import pandas as pd
from qmtl_validation.warehouse.lake import Lake

root, first, last, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
lake = Lake(root)
rng = np.random.default_rng(first)
dates = pd.date_range("2000-01-03", periods=rows, freq="min").date
for item in range(first, last):
    frame = pd.DataFrame({
        "world_id": "w1", "strategy_id": "s1", "run_id": f"run-{item:04d}",
        "date": dates, "ret": rng.normal(0.0, 0.01, rows),
        "recorded_at": pd.Timestamp("2026-11-27", tz="UTC"),
    })
    lake.write("strategy_returns", frame, world_id="w1", file_stem=f"item-{item:04d}")
    print(f"published item-{item:04d}", flush=True)
"""


def _writer(root: Path, first: int, last: int, rows: int = ROWS_PER_FILE) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), str(first), str(last), str(rows)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _count(catalog: Path, lake: Lake) -> int:
    ensure_catalog(catalog, lake)
    with connect_catalog(catalog) as connection:
        return connection.execute("SELECT count(*) FROM strategy_returns").fetchone()[0]


@pytest.mark.slow
def test_a_writer_killed_mid_write_leaves_no_partial_file_and_the_retry_publishes_once(tmp_path):
    root = tmp_path / "lake"
    folder = root / "strategy_returns" / "world_id=w1"
    writer = _writer(root, 0, 50)
    try:
        # Let two files go through, then kill the writer the moment its next temp file exists.
        deadline = time.monotonic() + 240
        killed_with_temp = False
        while time.monotonic() < deadline:
            published = list(folder.glob("item-*.parquet")) if folder.is_dir() else []
            temps = list(folder.glob(".*.tmp")) if folder.is_dir() else []
            if len(published) >= 2 and temps:
                os.kill(writer.pid, signal.SIGKILL)
                killed_with_temp = True
                break
            if writer.poll() is not None:
                break
            time.sleep(0.002)
        assert killed_with_temp, f"writer ended before it could be killed mid-write: {writer.communicate()}"
    finally:
        if writer.poll() is None:
            writer.kill()
        writer.wait()
    assert writer.returncode == -signal.SIGKILL

    visible = sorted(folder.glob("*.parquet"))
    leftovers = sorted(folder.glob(".*.tmp"))
    assert leftovers, "the kill should have left the temp file of the interrupted write"
    # Every visible file is complete: it opens, and holds all its rows.
    for path in visible:
        assert pq.ParquetFile(path).metadata.num_rows == ROWS_PER_FILE, path.name
    lake = Lake(root)
    catalog = tmp_path / "validation.duckdb"
    assert _count(catalog, lake) == ROWS_PER_FILE * len(visible)

    # The interrupted item is the first not published; the retry writes it under the same name.
    done = {p.stem for p in visible}
    retry_item = next(i for i in range(50) if f"item-{i:04d}" not in done)
    retry = _writer(root, retry_item, retry_item + 1)
    out, err = retry.communicate(timeout=240)
    assert retry.returncode == 0, err
    assert out.strip() == f"published item-{retry_item:04d}"
    assert _count(catalog, lake) == ROWS_PER_FILE * (len(visible) + 1)

    # A second retry of the same item is refused: the partition is written once.
    again = _writer(root, retry_item, retry_item + 1, rows=10)
    _, err = again.communicate(timeout=240)
    assert again.returncode != 0 and "LakeFileExistsError" in err and "never overwritten" in err
    assert _count(catalog, lake) == ROWS_PER_FILE * (len(visible) + 1)

    # Temp files of dead writers are swept; none was ever part of the table.
    removed = lake.sweep_temp_files(older_than_seconds=0)
    assert sorted(Path(p) for p in removed) == leftovers
    assert _count(catalog, lake) == ROWS_PER_FILE * (len(visible) + 1)


NOW = dt.datetime(2026, 11, 27, 15, 0, tzinfo=dt.timezone.utc)
KEY = "beta_growth/mom_fast/run-001"
RUN_TABLES = ("run_manifests", "strategy_returns", "evaluation_metrics", "rule_results",
              "evaluation_run_history", "validation_reports", "events")


def _data_files(bucket, table: str) -> list[str]:
    return [k for k in bucket.keys(f"lake/{table}/world_id=beta_growth/") if k.endswith(".parquet")]


@pytest.mark.slow
def test_a_run_killed_during_an_s3_upload_is_failed_retried_from_the_failure_and_writes_once(
    tmp_path, monkeypatch, s3_server, s3_bucket, postgres_db
):
    import dagster as dg

    home = instance_home(tmp_path / "home", {"run_monitoring": {"max_runtime_seconds": 5}})
    use_instance_home(monkeypatch, home, postgres_db)
    with faulty_s3(s3_server.url) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
        deploy = s3_deployment(tmp_path, monkeypatch, s3_bucket)
        drops = Drops(deploy.settings.landing_root, s3_bucket.client)
        drops.put([policy_file("beta_growth", 1)])
        drops.put(bundle("beta_growth", "mom_fast", "run-001", day=NOW.date()))
        clock = tmp_path / "clock.txt"
        set_clock(clock, NOW)
        sensor_environment(monkeypatch, clock)

        instance = dg.DagsterInstance.from_config(str(home))
        try:
            with daemon_workspace(instance) as context:
                tick = tick_sensor(context, instance, "run_bundle_sensor")
                assert tick.error is None, tick.error
                (run_id,) = tick.run_ids
                # The metrics upload hangs: the run's process is then stuck mid-write.
                proxy.fail("stall", method="PUT", path="/lake/evaluation_metrics/world_id=beta_growth/",
                           stall_seconds=600)
                drain_queue(context)
                deadline = time.monotonic() + 300
                while proxy.hits("stall") == 0:
                    assert time.monotonic() < deadline, "the run never reached its metrics upload"
                    assert not instance.get_run_by_id(run_id).is_finished, instance.get_run_by_id(run_id).status
                    time.sleep(0.2)
                pid = run_worker_pid(instance, run_id)
                assert pid is not None
                os.kill(pid, signal.SIGKILL)
                proxy.heal()
                # Nothing of the interrupted upload exists; what the first steps wrote does.
                assert _data_files(s3_bucket, "evaluation_metrics") == []
                assert len(_data_files(s3_bucket, "run_manifests")) == 1
                assert instance.get_run_by_id(run_id).status.value == "STARTED"

                # The monitoring daemon notices the dead run (runtime limit), the retry daemon
                # re-executes it from the failure.
                time.sleep(5.5)
                monitor_runs(context)
                assert instance.get_run_by_id(run_id).status.value == "FAILURE"
                (retry_id,) = retry_failed_runs(context, instance, [run_id])
                (retry,) = wait_for_runs(context, instance, [retry_id])
                assert retry.status.value == "SUCCESS"
                assert retry.tags["dagster/retry_number"] == "1"
                assert retry.parent_run_id == run_id
                retried_steps = {
                    event.step_key for event in instance.all_logs(retry_id)
                    if event.dagster_event and event.dagster_event.event_type_value == "STEP_START"
                }
                assert "run_bundle" not in retried_steps and "evaluation_metrics" in retried_steps
        finally:
            instance.dispose()

    for table in RUN_TABLES:
        assert len(_data_files(s3_bucket, table)) == 1, table
    lake = Lake(deploy.settings.lake_root, s3_client=s3_bucket.client, endpoint_url=s3_server.url)
    history = latest_rows(lake, "evaluation_run_history", latest=False)
    assert history[["run_id", "revision"]].values.tolist() == [["run-001", 1]]
    assert len(latest_rows(lake, "evaluation_metrics", latest=False)) == 1
    (check,) = verify_events_chain(lake)
    assert check.ok and check.events == 1
    payload = json.loads(history["payload_json"].iloc[0])
    assert payload["summary"]["status"] in ("pass", "warn", "fail")
