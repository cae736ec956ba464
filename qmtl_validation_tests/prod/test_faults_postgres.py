"""PostgreSQL restarted (and down for a while) between runs on the production instance: nothing is
lost, and processing resumes with the next tick and the next runs.

The instance is ``deploy/dagster.yaml`` on a fresh database; sensor ticks go through the daemon's
code path and runs are queued, then launched by the queue daemon into their own processes, as in
production. The cluster is restarted with ``pg_ctlcluster``; whatever happens, it is running again
when the test ends.
"""

import datetime as dt

import pytest

from qmtl_validation.warehouse.queries import latest_rows
from qmtl_validation_tests.dagster_harness import (
    Drops,
    bundle,
    daemon_workspace,
    deployment,
    lake_of,
    policy_file,
    sensor_environment,
    set_clock,
    tick_sensor,
)
from qmtl_validation_tests.prod.daemons import wait_for_runs
from qmtl_validation_tests.prod.postgres import (
    ensure_postgres_running,
    instance_home,
    pg_ctlcluster,
    postgres_is_up,
    use_instance_home,
    wait_for_postgres,
)

pytestmark = pytest.mark.slow

NOW = dt.datetime(2026, 11, 27, 15, 0, tzinfo=dt.timezone.utc)
TODAY = NOW.date()


@pytest.fixture
def restartable_postgres():
    """Yields ``restart``/``stop``/``start``; the cluster is up again at the end, test failed or not."""
    try:
        yield {"restart": lambda: (pg_ctlcluster("restart"), wait_for_postgres()),
               "stop": lambda: pg_ctlcluster("stop"),
               "start": lambda: (pg_ctlcluster("start"), wait_for_postgres())}
    finally:
        ensure_postgres_running()


def test_postgres_restarted_and_stopped_between_runs_loses_nothing_and_processing_resumes(
    tmp_path, postgres_db, monkeypatch, restartable_postgres
):
    import dagster as dg

    home = instance_home(tmp_path / "home")
    use_instance_home(monkeypatch, home, postgres_db)
    deploy = deployment(tmp_path, monkeypatch)
    clock = tmp_path / "clock.txt"
    set_clock(clock, NOW)
    sensor_environment(monkeypatch, clock)
    drops = Drops(deploy.settings.landing_root)
    drops.put([policy_file("beta_growth", 1)])

    instance = dg.DagsterInstance.from_config(str(home))
    try:
        with daemon_workspace(instance) as context:
            drops.put(bundle("beta_growth", "mom_fast", "run-001", day=TODAY, seed=1))
            first = tick_sensor(context, instance, "run_bundle_sensor")
            assert first.error is None, first.error
            (run_1,) = wait_for_runs(context, instance, first.run_ids)
            assert run_1.status.value == "SUCCESS"

            # Restart between runs: the next drop goes through on new connections.
            restartable_postgres["restart"]()
            drops.put(bundle("beta_growth", "mom_slow", "run-002", day=TODAY, seed=2))
            second = tick_sensor(context, instance, "run_bundle_sensor")
            assert second.error is None, second.error
            assert second.partitions_added == ("beta_growth/mom_slow/run-002",)
            (run_2,) = wait_for_runs(context, instance, second.run_ids)
            assert run_2.status.value == "SUCCESS"

            # Down for a while: the daemon's iteration fails (nothing half-done), then resumes.
            drops.put(bundle("beta_growth", "carry", "run-003", day=TODAY, seed=3))
            restartable_postgres["stop"]()
            assert not postgres_is_up()
            with pytest.raises(Exception) as down:
                tick_sensor(context, instance, "run_bundle_sensor")
            assert "connection" in str(down.value).lower() or "OperationalError" in repr(down.value)
            restartable_postgres["start"]()
            third = tick_sensor(context, instance, "run_bundle_sensor")
            assert third.error is None, third.error
            assert third.partitions_added == ("beta_growth/carry/run-003",)
            (run_3,) = wait_for_runs(context, instance, third.run_ids)
            assert run_3.status.value == "SUCCESS"
    finally:
        instance.dispose()

    # Read back from PostgreSQL itself and from the lake: three runs, once each.
    runs = postgres_db.query(
        "SELECT r.status, t.value FROM runs r JOIN run_tags t ON t.run_id = r.run_id "
        "WHERE t.key = 'dagster/partition' ORDER BY t.value"
    )
    assert runs == [
        ("SUCCESS", "beta_growth/carry/run-003"),
        ("SUCCESS", "beta_growth/mom_fast/run-001"),
        ("SUCCESS", "beta_growth/mom_slow/run-002"),
    ]
    history = latest_rows(lake_of(deploy), "evaluation_run_history", latest=False)
    assert sorted(history["run_id"]) == ["run-001", "run-002", "run-003"]
    assert set(history["revision"]) == {1}
    registry = latest_rows(lake_of(deploy), "landing_registry", latest=False)
    assert sorted(registry["partition_key"]) == [
        "beta_growth/carry/run-003", "beta_growth/mom_fast/run-001", "beta_growth/mom_slow/run-002"
    ]
