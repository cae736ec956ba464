"""A new policy version re-validates the world's history in ONE backfill run and writes a policy
diff whose counts match its rows (policy_change_sensor through the daemon's tick and backfill code)."""

import datetime as dt
import json

import dagster as dg
import pytest

from qmtl_validation.defs.pipeline import is_contiguous, world_run_keys
from qmtl_validation.defs.runs import sensors as run_sensors
from qmtl_validation.warehouse.queries import latest_rows
from qmtl_validation_tests.dagster_harness import (
    Drops,
    backfill_ids_of,
    bundle,
    daemon_workspace,
    deployment,
    lake_of,
    policy_file,
    run_backfill_daemon,
    sensor_environment,
    set_clock,
    sync_instance,
    tick_sensor,
)

NOW = dt.datetime(2026, 11, 27, 15, 0, tzinfo=dt.timezone.utc)
TODAY = NOW.date()
WORLD = "beta_growth"


@pytest.mark.slow
def test_a_policy_version_drop_revalidates_the_world_in_one_backfill_run_and_diffs_old_against_new(
    tmp_path, monkeypatch
):
    deploy = deployment(tmp_path, monkeypatch)
    clock = tmp_path / "clock.txt"
    set_clock(clock, NOW)
    sensor_environment(monkeypatch, clock)
    drops = Drops(deploy.settings.landing_root)
    drops.put([policy_file(WORLD, 1), policy_file("gamma_lab", 1, "gamma_lab")])
    # Two ticks, so the world's runs are interleaved with another world's in partition order.
    drops.put(bundle(WORLD, "mom", "r1", day=TODAY, seed=11, periods=600) + bundle("gamma_lab", "carry", "r1", day=TODAY, seed=12))
    lake = lake_of(deploy)
    with sync_instance() as instance, daemon_workspace(instance) as context:
        baseline = tick_sensor(context, instance, "policy_change_sensor")
        assert baseline.error is None, baseline.error
        assert baseline.runs == () and baseline.cursor["new_versions"] == 2

        assert len(tick_sensor(context, instance, "run_bundle_sensor").runs) == 2
        drops.put(bundle(WORLD, "mom", "r2", day=TODAY, seed=13, periods=600) + bundle(WORLD, "value", "r1", day=TODAY, seed=14, periods=600))
        assert len(tick_sensor(context, instance, "run_bundle_sensor").runs) == 1  # one world: one run
        order = list(instance.get_dynamic_partitions("evaluation_runs"))
        assert not is_contiguous(order, world_run_keys(order, WORLD)), "the world's runs should start interleaved"

        drops.put([policy_file(WORLD, 2)])
        change = tick_sensor(context, instance, "policy_change_sensor")
        assert change.error is None, change.error
        backfills = backfill_ids_of(change, instance)
        assert len(backfills) == 2 and change.runs == ()
        runs_backfill, diff_backfill = backfills
        assert instance.get_backfill(diff_backfill).asset_selection == [dg.AssetKey("policy_diff")]
        order = list(instance.get_dynamic_partitions("evaluation_runs"))
        keys = world_run_keys(order, WORLD)
        assert sorted(keys) == [f"{WORLD}/mom/r1", f"{WORLD}/mom/r2", f"{WORLD}/value/r1"]
        assert is_contiguous(order, keys)

        runs = run_backfill_daemon(context, instance, runs_backfill)
        assert len(runs) == 1, "a world's history is re-validated in one Dagster run"
        run = runs[0]
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags["qmtl/world"] == WORLD and run.tags["qmtl/policy_version"] == "2"
        assert run.tags["qmtl/reason"] == "policy_change"
        assert (run.tags["dagster/asset_partition_range_start"], run.tags["dagster/asset_partition_range_end"]) == (keys[0], keys[-1])

        diff_runs = run_backfill_daemon(context, instance, diff_backfill)
        assert len(diff_runs) == 1 and diff_runs[0].status == dg.DagsterRunStatus.SUCCESS
        assert diff_runs[0].tags["qmtl/policy_version"] == "2" and diff_runs[0].tags["qmtl/previous_policy_version"] == "1"

        quiet = tick_sensor(context, instance, "policy_change_sensor")
        assert quiet.runs == () and quiet.status == "SKIPPED"

        diff_materialization = instance.get_latest_materialization_event(dg.AssetKey("policy_diff"))

    history = latest_rows(lake, "evaluation_run_history")
    by_world = {w: group for w, group in history.groupby("world_id")}
    assert set(by_world[WORLD]["policy_version"]) == {"2"}
    assert set(by_world[WORLD]["revision"]) == {2} and set(by_world[WORLD]["reason"]) == {"policy_change"}
    assert by_world["gamma_lab"]["revision"].tolist() == [1]

    diff = latest_rows(lake, "policy_diff", world_id=WORLD)
    assert sorted(diff["strategy_id"] + "/" + diff["run_id"]) == ["mom/r1", "mom/r2", "value/r1"]
    assert set(diff["old_policy_version"]) == {"1"} and set(diff["new_policy_version"]) == {"2"}
    metadata = diff_materialization.asset_materialization.metadata
    print(f"\npolicy diff 1 -> 2: {len(diff)} runs, {int(diff['changed'].sum())} changed, "
          f"status {metadata['status_changes'].value}, stages {metadata['stage_changes'].value}, "
          f"rules {metadata['rule_changes'].value}")
    assert metadata["total_runs"].value == len(diff) == 3
    assert metadata["changed_runs"].value == int(diff["changed"].sum())
    status_changes = {}
    for old, new in zip(diff["old_status"], diff["new_status"]):
        if old != new:
            status_changes[f"{old}->{new}"] = status_changes.get(f"{old}->{new}", 0) + 1
    assert metadata["status_changes"].value == status_changes
    # The re-validated runs carry exactly the new statuses the diff predicted.
    revalidated = by_world[WORLD].set_index(["strategy_id", "run_id"])
    for row in diff.itertuples():
        assert revalidated.loc[(row.strategy_id, row.run_id), "status"] == row.new_status
        assert revalidated.loc[(row.strategy_id, row.run_id), "recommended_stage"] == row.new_recommended_stage
        assert revalidated.loc[(row.strategy_id, row.run_id), "ruleset_hash"] == row.new_ruleset_hash

    events = latest_rows(lake, "events", world_id=WORLD, latest=False)
    changed = events[events["type"] == "validation_profile_changed"]
    assert len(changed) == 1
    data = json.loads(changed["data_json"].iloc[0])
    assert (data["old_policy_version"], data["new_policy_version"]) == ("1", "2")
    assert data["total_runs"] == 3 and data["changed_runs"] == int(diff["changed"].sum())
    assert data["status_changes"] == status_changes

    versions = latest_rows(lake, "policy_versions", latest=False).sort_values(["world_id", "policy_version"])
    assert list(zip(versions["world_id"], versions["policy_version"], versions["action"])) == [
        (WORLD, "1", "baseline"), (WORLD, "2", "revalidated"), ("gamma_lab", "1", "baseline"),
    ]
    revalidated_row = versions[versions["action"] == "revalidated"].iloc[0]
    assert revalidated_row["runs_revalidated"] == 3 and revalidated_row["previous_policy_version"] == "1"
    assert set(json.loads(revalidated_row["ruleset_hashes_json"])) == {"backtest", "paper", "live"}


def evaluate(instance, deploy, cursor=None):
    from qmtl_validation.definitions import defs
    from qmtl_validation.defs.governance.sensors import policy_change_sensor
    from qmtl_validation.defs.resources import resources_for

    resources = resources_for(deploy.settings)
    with dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        repository_def=defs.get_repository_def(),
        resources={"landing": resources["landing"], "warehouse": resources["warehouse"]},
    ) as context:
        return policy_change_sensor(context)


def test_bad_superseded_edited_and_runless_policy_versions_are_recorded_without_a_backfill(tmp_path, monkeypatch):
    deploy = deployment(tmp_path, monkeypatch)
    monkeypatch.setattr(run_sensors, "clock", lambda: NOW)
    drops = Drops(deploy.settings.landing_root)
    drops.put([policy_file(WORLD, 1)])
    lake = lake_of(deploy)
    with dg.instance_for_test() as instance:
        first = evaluate(instance, deploy)
        assert first.run_requests == [] and json.loads(first.cursor)["new_versions"] == 1

        # A version that does not parse, a lower one arriving late, and an edit of an applied one.
        drops.put([(f"policies/{WORLD}/3.yaml", b"validation_profiles:\n  backtest:\n    performance:\n      sharpe_mn: 1\n")])
        drops.put([(f"policies/{WORLD}/0.yaml", policy_file(WORLD, 1)[1])])
        drops.put([(f"policies/{WORLD}/1.yaml", policy_file(WORLD, 1)[1] + b"\n# edited\n")])
        second = evaluate(instance, deploy, first.cursor)
        assert second.run_requests == []
        versions = latest_rows(lake, "policy_versions", latest=False).set_index("policy_version")
        assert versions.loc["3", "status"] == "rejected" and versions.loc["3", "action"] == "rejected"
        assert "sharpe_mn" in versions.loc["3", "error"]
        assert versions.loc["0", "action"] == "superseded"
        rejections = latest_rows(lake, "rejections", latest=False).set_index("key")
        assert rejections.loc[f"policies/{WORLD}/3.yaml", "reason_code"] == "policy_invalid"
        edited = rejections.loc[f"policies/{WORLD}/1.yaml"]
        assert edited["reason_code"] == "policy_changed_in_place" and "immutable" in edited["reason"]

        # Nothing is recorded twice.
        third = evaluate(instance, deploy, second.cursor)
        assert json.loads(third.cursor)["new_versions"] == 0 and json.loads(third.cursor)["rejected"] == 0
        assert len(latest_rows(lake, "rejections", latest=False)) == 2

        # A valid new current version of a world without runs: the diff only, and the world
        # becomes a `worlds` partition.
        drops.put([policy_file(WORLD, 2, as_version="4")])
        fourth = evaluate(instance, deploy, third.cursor)
        (diff,) = fourth.run_requests
        assert diff.requires_backfill_daemon() and diff.tags["qmtl/policy_version"] == "4"
        assert list(diff.asset_graph_subset.get_partitions_subset(dg.AssetKey("policy_diff")).get_partition_keys()) == [WORLD]
        assert fourth.dynamic_partitions_requests[0].partition_keys == [WORLD]
        versions = latest_rows(lake, "policy_versions", latest=False).set_index("policy_version")
        assert versions.loc["4", "action"] == "recorded"


def test_the_backfill_request_covers_every_runs_asset_over_the_world_only(tmp_path, monkeypatch):
    deploy = deployment(tmp_path, monkeypatch)
    monkeypatch.setattr(run_sensors, "clock", lambda: NOW)
    Drops(deploy.settings.landing_root).put([policy_file(WORLD, 1)])
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("evaluation_runs", [f"{WORLD}/a/r1", "other/a/r1", f"{WORLD}/b/r1"])
        first = evaluate(instance, deploy)
        Drops(deploy.settings.landing_root).put([policy_file(WORLD, 2)])
        result = evaluate(instance, deploy, first.cursor)
        order = list(instance.get_dynamic_partitions("evaluation_runs"))
    backfill, diff = result.run_requests
    assert backfill.requires_backfill_daemon() and diff.requires_backfill_daemon()
    subset = backfill.asset_graph_subset
    assert {k.to_user_string() for k in subset.asset_keys} == {
        "run_manifests", "strategy_returns", "strategy_trades", "evaluation_metrics", "rule_results",
        "evaluation_run", "validation_report",
    }
    for key in subset.asset_keys:
        assert set(subset.get_partitions_subset(key).get_partition_keys()) == {f"{WORLD}/a/r1", f"{WORLD}/b/r1"}
    assert backfill.tags == {"qmtl/world": WORLD, "qmtl/policy_version": "2", "qmtl/reason": "policy_change",
                             "qmtl/previous_policy_version": "1"}
    assert order == ["other/a/r1", f"{WORLD}/a/r1", f"{WORLD}/b/r1"]  # made contiguous for one run
