"""Drop a bundle → the sensor daemon's tick launches a run → the warehouse has the run's row.

Real parts only: the code location is loaded in a code-server subprocess exactly as the daemon
loads it, ticks go through ``execute_sensor_iteration``, runs are launched by the instance's run
launcher (synchronously, in this process), and the S3 case talks HTTP to moto's server through
the dagster-aws ``S3Resource`` client.
"""

import datetime as dt

import dagster as dg
import pytest

from qmtl_validation.warehouse.queries import latest_rows
from qmtl_validation_tests.dagster_harness import (
    Drops,
    bundle,
    daemon_workspace,
    deployment,
    lake_of,
    policy_file,
    s3_deployment,
    sensor_environment,
    set_clock,
    sync_instance,
    tick_sensor,
)

pytestmark = pytest.mark.slow

NOW = dt.datetime(2026, 11, 27, 15, 0, tzinfo=dt.timezone.utc)
TODAY = NOW.date()


@pytest.fixture(params=["local", "s3"])
def landing(request, tmp_path, monkeypatch):
    if request.param == "local":
        deploy = deployment(tmp_path, monkeypatch)
        drops = Drops(deploy.settings.landing_root)
    else:
        bucket = request.getfixturevalue("s3_bucket")
        deploy = s3_deployment(tmp_path, monkeypatch, bucket)
        drops = Drops(deploy.settings.landing_root, bucket.client)
    clock = tmp_path / "clock.txt"
    set_clock(clock, NOW)
    sensor_environment(monkeypatch, clock)
    return deploy, drops


def test_a_dropped_bundle_becomes_a_validated_run_and_an_identical_redrop_launches_nothing(landing):
    deploy, drops = landing
    drops.put([policy_file("beta_growth", 1)])
    files = bundle("beta_growth", "mom_fast", "run-001", day=TODAY)
    drops.put(files)
    with sync_instance() as instance, daemon_workspace(instance) as context:
        first = tick_sensor(context, instance, "run_bundle_sensor")
        assert first.error is None, first.error
        assert first.status == "SUCCESS"
        assert first.partitions_added == ("beta_growth/mom_fast/run-001",)
        assert len(first.runs) == 1
        run = first.runs[0]
        assert run.status.value == "SUCCESS"
        assert run.tags["dagster/partition"] == "beta_growth/mom_fast/run-001"
        assert run.tags["qmtl/source"] == "run_bundle_sensor"
        assert first.cursor["new"] == 1 and first.cursor["date"] == TODAY.isoformat()

        rows = latest_rows(lake_of(deploy), "evaluation_run_history")
        assert list(zip(rows["world_id"], rows["strategy_id"], rows["run_id"])) == [
            ("beta_growth", "mom_fast", "run-001")
        ]
        assert rows["policy_version"].tolist() == ["1"]
        materialized = instance.get_latest_materialization_event(dg.AssetKey("evaluation_run"))
        assert materialized.run_id == run.run_id
        assert materialized.dagster_event.partition == "beta_growth/mom_fast/run-001"

        # The same files dropped again (new objects, same bytes) and a second tick: nothing runs.
        drops.put(files)
        again = tick_sensor(context, instance, "run_bundle_sensor")
        assert again.error is None, again.error
        assert again.status == "SKIPPED"
        assert again.runs == () and again.partitions_added == ()
        assert again.cursor["unchanged"] == 1 and again.cursor["new"] == 0
        assert "no new run bundles" in again.skip_reason
        assert len(instance.get_runs()) == 1
        history = latest_rows(lake_of(deploy), "evaluation_run_history", latest=False)
        assert len(history) == 1
