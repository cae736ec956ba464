"""Runs of the same world writing its tables at the same time, each in its own process, on the
production instance: no lost rows, no lock errors, one unbroken events chain.

To make "at the same time" certain rather than likely, the S3 lake is reached through the fault
proxy holding every upload of the world's events: the three runs each compute the world's next
chain file, reach that upload, and are let go together. They race for the same file name; S3's
conditional put lets one win, the others re-read the chain and take the next names.
"""

import datetime as dt

import pytest

from qmtl_validation.warehouse.catalog import connect_catalog, ensure_catalog
from qmtl_validation.warehouse.lake import Lake
from qmtl_validation.warehouse.outbox import chain_file_number, chain_files, verify_events_chain
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
from qmtl_validation_tests.prod.daemons import drain_queue, wait_for_runs
from qmtl_validation_tests.prod.faulty_s3 import faulty_s3
from qmtl_validation_tests.prod.postgres import instance_home, use_instance_home

pytestmark = pytest.mark.slow

NOW = dt.datetime(2026, 11, 27, 15, 0, tzinfo=dt.timezone.utc)
STRATEGIES = ("mom_fast", "mom_slow", "carry")
EVENTS = "/lake/events/world_id=beta_growth/"


def test_concurrent_runs_of_one_world_lose_no_rows_and_keep_one_events_chain(
    tmp_path, monkeypatch, s3_server, s3_bucket, postgres_db
):
    import dagster as dg

    home = instance_home(tmp_path / "home")
    use_instance_home(monkeypatch, home, postgres_db)
    with faulty_s3(s3_server.url) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
        deploy = s3_deployment(tmp_path, monkeypatch, s3_bucket)
        drops = Drops(deploy.settings.landing_root, s3_bucket.client)
        drops.put([policy_file("beta_growth", 1)])
        clock = tmp_path / "clock.txt"
        set_clock(clock, NOW)
        sensor_environment(monkeypatch, clock)

        instance = dg.DagsterInstance.from_config(str(home))
        try:
            with daemon_workspace(instance) as context:
                # One bundle per tick: a tick's drops of one world make one run, so three runs of
                # the world come from three ticks, all queued before the queue is drained.
                run_ids = []
                for seed, strategy in enumerate(STRATEGIES, start=1):
                    drops.put(bundle("beta_growth", strategy, f"run-{seed:03d}", day=NOW.date(), seed=seed))
                    tick = tick_sensor(context, instance, "run_bundle_sensor")
                    assert tick.error is None, tick.error
                    run_ids.extend(tick.run_ids)
                assert len(run_ids) == len(STRATEGIES)
                proxy.fail("hold", method="PUT", path=EVENTS)
                drain_queue(context)  # all three launched at once (the queue allows 8)
                proxy.wait_for_held(len(STRATEGIES), timeout=300)
                # Every run is now inside its events upload, aiming at the same chain file.
                proxy.release()
                runs = wait_for_runs(context, instance, run_ids)
                assert [r.status.value for r in runs] == ["SUCCESS"] * len(STRATEGIES)
                messages = " ".join(
                    (event.message or "") for run_id in run_ids for event in instance.all_logs(run_id)
                ).lower()
                assert "lock" not in messages
        finally:
            instance.dispose()
        # The race happened: S3 refused the losers' uploads of an existing chain file.
        statuses = proxy.statuses("PUT", EVENTS)
        assert statuses.count(412) >= 1, statuses
        assert statuses.count(200) == len(STRATEGIES)

    lake = Lake(deploy.settings.lake_root, s3_client=s3_bucket.client, endpoint_url=s3_server.url)
    keys = sorted(f"beta_growth/{s}/run-{n:03d}" for n, s in enumerate(STRATEGIES, start=1))
    history = latest_rows(lake, "evaluation_run_history", latest=False)
    assert sorted(history["world_id"] + "/" + history["strategy_id"] + "/" + history["run_id"]) == keys
    assert set(history["revision"]) == {1}
    for table in ("run_manifests", "evaluation_metrics", "validation_reports"):
        assert len(latest_rows(lake, table, latest=False)) == len(keys), table
    rules = latest_rows(lake, "rule_results", latest=False)
    assert rules.groupby("strategy_id").size().nunique() == 1 and len(rules) >= 5 * len(keys)
    (chain,) = verify_events_chain(lake)
    assert chain.ok and chain.events == len(keys)
    assert [chain_file_number(uri) for uri in chain_files(lake, "beta_growth")] == [1, 2, 3]
    assert len(lake.list_files("evaluation_run_history", "beta_growth")) == len(keys)
    ensure_catalog(deploy.settings.catalog_path, lake)
    with connect_catalog(deploy.settings.catalog_path, endpoint_url=s3_server.url, region="us-east-1") as connection:
        assert connection.execute("SELECT count(*) FROM evaluation_runs").fetchone()[0] == len(keys)
