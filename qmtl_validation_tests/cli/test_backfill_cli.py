"""``qmtl-validation backfill``: the on-demand policy backfill, submitted to a real instance and
run by the daemon's backfill code."""

import datetime as dt
import json

import dagster as dg
import pytest

from qmtl_validation.cli import main
from qmtl_validation.defs.pipeline import is_contiguous, materialize_runs, register_run_partitions, world_run_keys
from qmtl_validation.warehouse.queries import latest_rows
from qmtl_validation_tests.dagster_harness import (
    Drops,
    bundle,
    daemon_workspace,
    deployment,
    lake_of,
    policy_file,
    run_backfill_daemon,
)

TODAY = dt.date(2026, 11, 27)
WORLD = "beta_growth"
SYNC_INSTANCE_YAML = """\
run_coordinator:
  module: dagster._core.run_coordinator
  class: DefaultRunCoordinator
run_launcher:
  module: dagster._core.launcher.sync_in_memory_run_launcher
  class: SyncInMemoryRunLauncher
telemetry:
  enabled: false
"""


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A deployment with two worlds' runs taken in and validated (interleaved in partition
    order), and ``$DAGSTER_HOME`` pointing at its instance."""
    deploy = deployment(tmp_path, monkeypatch)
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(SYNC_INSTANCE_YAML)
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    drops = Drops(deploy.settings.landing_root)
    drops.put([policy_file(WORLD, 1), policy_file(WORLD, 2), policy_file("gamma_lab", 1, "gamma_lab")])
    drops.put(bundle(WORLD, "mom", "r1", day=TODAY, seed=3) + bundle("gamma_lab", "carry", "r1", day=TODAY, seed=4))
    with dg.DagsterInstance.get() as instance:
        keys, _ = register_run_partitions(instance, deploy.settings, today=TODAY, lookback_days=3)
        drops.put(bundle(WORLD, "value", "r1", day=TODAY, seed=5))
        keys, _ = register_run_partitions(instance, deploy.settings, today=TODAY, lookback_days=3)
        assert materialize_runs(instance, keys, tags={"qmtl/world": WORLD, "qmtl/policy_version": "1"}).success
        assert not is_contiguous(keys, world_run_keys(keys, WORLD))
    return deploy


@pytest.mark.slow
def test_backfill_submits_one_run_over_the_world_and_a_policy_diff(home, capsys):
    assert main(["backfill", "--world", WORLD, "--policy-version", "2", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["world_id"] == WORLD and document["runs"] == 2
    assert (document["previous_policy_version"], document["policy_version"]) == ("1", "2")
    with dg.DagsterInstance.get() as instance:
        order = list(instance.get_dynamic_partitions("evaluation_runs"))
        assert is_contiguous(order, world_run_keys(order, WORLD))
        backfill = instance.get_backfill(document["backfill_id"])
        assert backfill.tags == {"qmtl/world": WORLD, "qmtl/policy_version": "2", "qmtl/reason": "operator_backfill",
                                 "qmtl/previous_policy_version": "1"}
        with daemon_workspace(instance) as context:
            runs = run_backfill_daemon(context, instance, document["backfill_id"])
            diff_runs = run_backfill_daemon(context, instance, document["policy_diff_backfill_id"])
    assert len(runs) == 1 and runs[0].status == dg.DagsterRunStatus.SUCCESS
    assert len(diff_runs) == 1 and diff_runs[0].status == dg.DagsterRunStatus.SUCCESS
    lake = lake_of(home)
    history = latest_rows(lake, "evaluation_run_history")
    world = history[history["world_id"] == WORLD]
    assert set(world["policy_version"]) == {"2"} and set(world["reason"]) == {"operator_backfill"}
    assert history.loc[history["world_id"] == "gamma_lab", "revision"].tolist() == [1]
    diff = latest_rows(lake, "policy_diff", world_id=WORLD)
    assert len(diff) == 2 and set(diff["old_policy_version"]) == {"1"}


def test_backfill_refuses_an_unknown_version_a_world_without_runs_and_a_bad_policy(tmp_path, monkeypatch, capsys):
    deploy = deployment(tmp_path, monkeypatch)
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(SYNC_INSTANCE_YAML)
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    drops = Drops(deploy.settings.landing_root)
    drops.put([policy_file(WORLD, 1), (f"policies/{WORLD}/2.yaml", b"risk_profile:\n  tierr: high\n")])

    assert main(["backfill", "--world", WORLD, "--policy-version", "7"]) == 2
    assert "has no policy version 7 (versions: 1, 2)" in capsys.readouterr().err
    assert main(["backfill", "--world", WORLD]) == 1
    err = capsys.readouterr().err
    assert "policy 2 of world beta_growth does not parse" in err and "tierr" in err
    assert main(["backfill", "--world", WORLD, "--policy-version", "1"]) == 1
    assert "world beta_growth has no evaluation run partitions" in capsys.readouterr().err
    assert main(["backfill", "--world", "nowhere"]) == 1
    assert "world nowhere has no policy" in capsys.readouterr().err


def test_wait_without_a_daemon_says_so_instead_of_hanging(home, capsys, monkeypatch):
    from qmtl_validation.cli import backfill

    monkeypatch.setattr(backfill, "DAEMON_GRACE_SECONDS", 0.0)
    assert main(["backfill", "--world", WORLD, "--wait"]) == 1
    captured = capsys.readouterr()
    assert "re-validating 2 run(s) of beta_growth under policy 2" in captured.out
    assert "no dagster-daemon is processing backfills" in captured.err
