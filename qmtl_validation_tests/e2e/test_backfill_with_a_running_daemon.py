"""``qmtl-validation backfill --wait`` against a real ``dagster-daemon`` process: the daemon loads
the code location from a workspace file, launches the backfill's run in a subprocess with the
default run launcher, and the command follows it to the end with a progress bar on stderr."""

import datetime as dt
import os
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from qmtl_validation.cli import main
from qmtl_validation.defs.pipeline import materialize_runs, register_run_partitions
from qmtl_validation.settings import REPO_ROOT
from qmtl_validation.warehouse.queries import latest_rows
from qmtl_validation_tests.dagster_harness import Drops, bundle, deployment, lake_of, policy_file

pytestmark = pytest.mark.slow

TODAY = dt.date(2026, 11, 27)
WORLD = "beta_growth"


@pytest.fixture
def daemon(tmp_path, monkeypatch):
    """A deployment with two validated runs of the world, and a dagster-daemon on its instance."""
    deploy = deployment(tmp_path, monkeypatch)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    (home / "workspace.yaml").write_text(
        "load_from:\n  - python_module:\n      module_name: qmtl_validation.definitions\n"
        f"      working_directory: {REPO_ROOT}\n"
    )
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    drops = Drops(deploy.settings.landing_root)
    drops.put([policy_file(WORLD, 1), policy_file(WORLD, 2)])
    drops.put(bundle(WORLD, "mom", "r1", day=TODAY, seed=3) + bundle(WORLD, "value", "r1", day=TODAY, seed=5))
    with dg.DagsterInstance.get() as instance:
        keys, _ = register_run_partitions(instance, deploy.settings, today=TODAY, lookback_days=3)
        assert materialize_runs(instance, keys, tags={"qmtl/world": WORLD, "qmtl/policy_version": "1"}).success
    log = (tmp_path / "daemon.log").open("wb")
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", str(home / "workspace.yaml")],
        cwd=home,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "QMTL_SENSOR_INTERVAL_SECONDS": "3600"},
    )
    try:
        from qmtl_validation.cli.backfill import wait_for_daemon

        with dg.DagsterInstance.get() as instance:  # as an operator would: the daemon is up first
            wait_for_daemon(instance, grace=180)
        yield deploy, tmp_path / "daemon.log"
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the daemon's group: it and the code servers it started
        process.wait(timeout=30)
        log.close()


def test_backfill_wait_follows_the_daemon_to_a_successful_revalidation(daemon, capsys):
    deploy, log = daemon
    code = main(["backfill", "--world", WORLD, "--policy-version", "2", "--wait", "--timeout", "420"])
    captured = capsys.readouterr()
    assert code == 0, captured.err + log.read_text(errors="replace")[-3000:]
    assert "re-validating 2 run(s) of beta_growth under policy 2 (runs currently carry 1)" in captured.out
    assert "backfill completed_success, policy diff completed_success" in captured.out
    # 7 runs assets x 2 runs + the world's policy diff, as the progress summary on stderr.
    assert "backfill: done: 15 asset partitions in" in captured.err
    history = latest_rows(lake_of(deploy), "evaluation_run_history")
    assert set(history["policy_version"]) == {"2"} and set(history["reason"]) == {"operator_backfill"}
    with dg.DagsterInstance.get() as instance:
        runs = [r for r in instance.get_runs() if r.tags.get("qmtl/reason") == "operator_backfill"]
    assert sorted(r.job_name for r in runs) == ["__ASSET_JOB", "__ASSET_JOB"]
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
