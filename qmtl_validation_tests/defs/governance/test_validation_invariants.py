"""The validation_invariants asset over a real validated world."""

import datetime as dt

import dagster as dg
import pytest

from qmtl_validation.definitions import defs
from qmtl_validation.defs.pipeline import materialize_runs, register_run_partitions
from qmtl_validation.sample_data import generate_sample
from qmtl_validation.warehouse.lake import Lake
from qmtl_validation.warehouse.queries import latest_rows
from qmtl_validation_tests.dagster_harness import deployment

TODAY = dt.date(2026, 11, 27)


def materialize_invariants(instance, world_id):
    instance.add_dynamic_partitions("worlds", [world_id])
    return dg.materialize(
        [defs.get_assets_def("validation_invariants")],
        instance=instance,
        partition_key=world_id,
        resources=defs.resources,
        raise_on_error=False,
    )


@pytest.fixture()
def validated_world(tmp_path, monkeypatch):
    env = deployment(tmp_path, monkeypatch)
    generate_sample(env.landing, seed=7, today=TODAY)
    instance = dg.DagsterInstance.ephemeral()
    keys, _ = register_run_partitions(instance, env.settings, today=TODAY)
    alpha = [k for k in keys if k.startswith("alpha_core/")][:3]
    assert materialize_runs(instance, alpha).success
    return env, instance


def check_passed(result):
    evaluation = next(e for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION")
    return evaluation.event_specific_data.passed


def test_a_fail_closed_world_with_consistent_runs_holds_every_invariant(validated_world):
    env, instance = validated_world
    result = materialize_invariants(instance, "alpha_core")
    assert result.success
    assert check_passed(result)
    rows = latest_rows(Lake(env.settings.lake_root), "validation_invariants", world_id="alpha_core", latest=False)
    assert len(rows) == 6 and set(rows["status"]) == {"pass"}


def test_a_high_tier_critical_policy_that_only_warns_breaks_fail_closed(validated_world):
    env, instance = validated_world
    policy = (env.landing / "policies" / "alpha_core" / "1.yaml").read_text()
    relaxed = policy.replace("on_missing_metric: fail", "on_missing_metric: warn")
    assert relaxed != policy
    (env.landing / "policies" / "alpha_core" / "2.yaml").write_text(relaxed)
    result = materialize_invariants(instance, "alpha_core")
    assert not check_passed(result)
    rows = latest_rows(Lake(env.settings.lake_root), "validation_invariants", world_id="alpha_core", latest=False)
    failed = rows.loc[rows["status"] == "fail", "invariant"].tolist()
    assert "high_tier_critical_fail_closed" in failed
