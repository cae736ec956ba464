"""S3 failing in the middle of a sensor tick: the tick fails cleanly, the next one takes everything
in, nothing is lost or doubled.

The prod profile's clients (the code server's sensor, the runs, DuckDB's reads) reach moto through
a fault-injecting proxy (``faulty_s3``) that is switched on while the tick is running; producers
drop files straight into moto. Ticks go through the sensor daemon's ``execute_sensor_iteration``;
the runs they request are queued, then launched by the queue daemon into their own processes.
"""

import datetime as dt

import pytest

from dagster._core.test_utils import instance_for_test

from qmtl_validation.warehouse.queries import latest_rows
from qmtl_validation_tests.dagster_harness import (
    Drops,
    bundle,
    daemon_workspace,
    lake_of,
    partition_keys_of,
    policy_file,
    s3_deployment,
    sensor_environment,
    set_clock,
    tick_sensor,
)
from qmtl_validation_tests.prod.daemons import reap_code_servers, wait_for_runs
from qmtl_validation_tests.prod.faulty_s3 import faulty_s3

pytestmark = pytest.mark.slow

NOW = dt.datetime(2026, 11, 27, 15, 0, tzinfo=dt.timezone.utc)
TODAY = NOW.date()
RUNS = [("beta_growth", "mom_fast", "run-001"), ("beta_growth", "mom_slow", "run-002")]
KEYS = sorted("/".join(r) for r in RUNS)


@pytest.fixture
def faulty_prod(tmp_path, monkeypatch, s3_server, s3_bucket):
    """Prod profile on a moto bucket reached through the fault proxy; a policy and two bundles
    dropped (straight into moto)."""
    with faulty_s3(s3_server.url) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
        deploy = s3_deployment(tmp_path, monkeypatch, s3_bucket)
        drops = Drops(deploy.settings.landing_root, s3_bucket.client)
        drops.put([policy_file("beta_growth", 1)])
        for seed, (world, strategy, run) in enumerate(RUNS, start=1):
            drops.put(bundle(world, strategy, run, day=TODAY, seed=seed))
        clock = tmp_path / "clock.txt"
        set_clock(clock, NOW)
        sensor_environment(monkeypatch, clock)
        yield deploy, drops, proxy, s3_bucket
        reap_code_servers()


def _landing_keys(bucket):
    return sorted(k for k in bucket.keys("landing/runs/"))


def _requested_once(instance, outcome):
    """The tick requested every bundle's partition exactly once: one world, so one run over all."""
    order = instance.get_dynamic_partitions("evaluation_runs")
    assert [sorted(partition_keys_of(r, order)) for r in outcome.runs] == [KEYS]
    assert [sorted(partition_keys_of(r, order)) for r in instance.get_runs()] == [KEYS]


def _assert_each_run_once(deploy, *, executed=True):
    lake = lake_of(deploy)
    registry = latest_rows(lake, "landing_registry", latest=False)
    assert sorted(registry["partition_key"]) == KEYS
    assert latest_rows(lake, "rejections", latest=False).empty
    if executed:
        history = latest_rows(lake, "evaluation_run_history", latest=False)
        assert sorted(history["world_id"] + "/" + history["strategy_id"] + "/" + history["run_id"]) == KEYS
        assert set(history["revision"]) == {1}
        assert len(latest_rows(lake, "run_manifests", latest=False)) == len(KEYS)


def test_s3_dropping_connections_mid_tick_fails_the_tick_and_the_next_tick_takes_everything_in(faulty_prod):
    deploy, _, proxy, bucket = faulty_prod
    before = _landing_keys(bucket)
    with instance_for_test() as instance, daemon_workspace(instance) as context:
        # The listing and the registry read go through; reading the bundles' run.json does not.
        proxy.fail("reset", method="GET", path="/run.json")
        failed = tick_sensor(context, instance, "run_bundle_sensor")
        assert failed.status == "FAILURE"
        assert "Connection was closed" in failed.error
        assert proxy.hits("reset") >= 1
        assert failed.run_ids == () and failed.partitions_added == ()
        assert instance.get_dynamic_partitions("evaluation_runs") == []
        assert latest_rows(lake_of(deploy), "landing_registry", latest=False).empty
        assert latest_rows(lake_of(deploy), "rejections", latest=False).empty

        proxy.heal()
        recovered = tick_sensor(context, instance, "run_bundle_sensor")
        assert recovered.error is None, recovered.error
        assert sorted(recovered.partitions_added) == KEYS
        _requested_once(instance, recovered)
        runs = wait_for_runs(context, instance, recovered.run_ids)
        assert [r.status.value for r in runs] == ["SUCCESS"]

        quiet = tick_sensor(context, instance, "run_bundle_sensor")
        assert quiet.status == "SKIPPED" and quiet.run_ids == ()
        assert len(instance.get_runs()) == 1
    _assert_each_run_once(deploy)
    assert _landing_keys(bucket) == before  # nothing moved or deleted


def test_s3_errors_on_the_registry_write_fail_the_tick_without_a_partition(faulty_prod):
    deploy, _, proxy, bucket = faulty_prod
    with instance_for_test() as instance, daemon_workspace(instance) as context:
        proxy.fail("500", method="PUT", path="/landing_registry/world_id=beta_growth/")
        failed = tick_sensor(context, instance, "run_bundle_sensor")
        assert failed.status == "FAILURE"
        assert "InternalError" in failed.error
        assert instance.get_dynamic_partitions("evaluation_runs") == []
        assert failed.run_ids == () and instance.get_runs() == []

        proxy.heal()
        assert latest_rows(lake_of(deploy), "landing_registry", latest=False).empty
        recovered = tick_sensor(context, instance, "run_bundle_sensor")
        assert recovered.error is None, recovered.error
        assert sorted(recovered.partitions_added) == KEYS
        _requested_once(instance, recovered)
    _assert_each_run_once(deploy, executed=False)


def test_a_registry_write_whose_reply_is_lost_is_not_written_twice_and_its_runs_still_happen(faulty_prod):
    """S3 stores the registry file but the answer never arrives: the client's retry is refused
    (the key exists), the tick fails after the registry was written. The next tick finds the
    bundles registered but without partitions and requests them: every run happens once."""
    deploy, _, proxy, bucket = faulty_prod
    with instance_for_test() as instance, daemon_workspace(instance) as context:
        proxy.fail("lost_reply", method="PUT", path="/landing_registry/world_id=beta_growth/", times=1)
        failed = tick_sensor(context, instance, "run_bundle_sensor")
        assert failed.status == "FAILURE"
        assert proxy.hits("lost_reply") == 1
        assert instance.get_dynamic_partitions("evaluation_runs") == []
        assert len(latest_rows(lake_of(deploy), "landing_registry", latest=False)) == len(KEYS)

        recovered = tick_sensor(context, instance, "run_bundle_sensor")
        assert recovered.error is None, recovered.error
        assert sorted(recovered.partitions_added) == KEYS
        assert recovered.cursor["unchanged"] == len(KEYS) and recovered.cursor["new"] == 0
        _requested_once(instance, recovered)
        runs = wait_for_runs(context, instance, recovered.run_ids)
        assert [r.status.value for r in runs] == ["SUCCESS"]

        again = tick_sensor(context, instance, "run_bundle_sensor")
        assert again.run_ids == ()
    _assert_each_run_once(deploy)


def test_a_stalled_s3_request_is_retried_within_the_tick(faulty_prod):
    """A request that hangs and is dropped once is retried by the client: the tick succeeds."""
    deploy, _, proxy, _ = faulty_prod
    with instance_for_test() as instance, daemon_workspace(instance) as context:
        proxy.fail("stall", method="GET", path="/run.json", times=1, stall_seconds=2.0)
        outcome = tick_sensor(context, instance, "run_bundle_sensor")
        assert outcome.error is None, outcome.error
        assert proxy.hits("stall") == 1
        assert outcome.seconds >= 2.0
        assert sorted(outcome.partitions_added) == KEYS
        _requested_once(instance, outcome)
    _assert_each_run_once(deploy, executed=False)


def test_s3_unreachable_for_a_whole_tick_fails_it_and_processing_resumes(faulty_prod):
    deploy, _, proxy, _ = faulty_prod
    with instance_for_test() as instance, daemon_workspace(instance) as context:
        proxy.fail("reset")
        down = tick_sensor(context, instance, "run_bundle_sensor")
        assert down.status == "FAILURE" and down.run_ids == ()
        proxy.heal()
        up = tick_sensor(context, instance, "run_bundle_sensor")
        assert up.error is None, up.error
        _requested_once(instance, up)
    _assert_each_run_once(deploy, executed=False)


# ---------------------------------------------------------------------------------------------
# Transient errors while an intake reads a drop: never recorded as a bad drop.
# Straight intake calls with a client that gives up after one attempt, so each fault surfaces.

TRANSIENT_FAULTS = {  # name: (proxy action, what the client raises)
    "read_timeout": ("stall", "ReadTimeoutError"),
    "connection_reset": ("reset", "ConnectionClosedError"),
    "slow_down": ("503", "ClientError SlowDown"),
    "internal_error": ("500", "ClientError InternalError"),
}


def test_s3_dropping_connections_while_a_run_reads_its_bundles_fails_the_run_as_an_outage_not_a_bad_bundle(
    faulty_prod,
):
    """A run that cannot reach S3 must say so and fail (the prod instance retries it); it must not
    blame the bundles by failing their contract checks."""
    import dagster as dg

    deploy, _, proxy, bucket = faulty_prod
    before = _landing_keys(bucket)
    with instance_for_test() as instance, daemon_workspace(instance) as context:
        taken = tick_sensor(context, instance, "run_bundle_sensor")
        assert taken.error is None, taken.error
        proxy.fail("reset", method="GET", path="/run.json")  # after intake: only the run reads it
        (run,) = wait_for_runs(context, instance, taken.run_ids)
        assert run.status == dg.DagsterRunStatus.FAILURE
        failures = [
            event.dagster_event.step_failure_data.error.to_string()
            for event in instance.all_logs(run.run_id)
            if event.dagster_event and event.dagster_event.event_type_value == "STEP_FAILURE"
        ]
        assert len(failures) == 1 and "Connection was closed" in failures[0], failures
        assert "contract" not in failures[0]
        for table in ("run_manifests", "strategy_returns", "strategy_trades"):
            checks = instance.event_log_storage.get_asset_check_execution_history(
                dg.AssetCheckKey(dg.AssetKey(table), "contract"), limit=5
            )
            assert [c.status.value for c in checks if c.status.value == "FAILED"] == [], table
    assert latest_rows(lake_of(deploy), "run_manifests", latest=False).empty  # nothing half-written
    assert _landing_keys(bucket) == before


def _described(error: BaseException) -> str:
    code = (getattr(error, "response", None) or {}).get("Error", {}).get("Code")
    return f"{type(error).__name__} {code}" if code else type(error).__name__


def _impatient_zone(proxy, bucket):
    """The landing zone read through the proxy by a client with 1 s timeouts and no retries."""
    import boto3
    from botocore.config import Config

    from qmtl_validation.warehouse.landing import S3LandingZone

    client = boto3.session.Session().client(
        "s3", endpoint_url=proxy.url, region_name="us-east-1",
        config=Config(read_timeout=1, connect_timeout=1, retries={"max_attempts": 1, "mode": "standard"}),
    )
    return S3LandingZone(bucket.name, "landing", client)


def _direct_lake(s3_server, bucket):
    from qmtl_validation.warehouse.lake import Lake

    return Lake(bucket.uri("lake"), s3_client=bucket.client, endpoint_url=s3_server.url)


def _fault_then_heal(s3_server, s3_bucket, take_in, fault: str, path: str):
    """Run the intake ``take_in`` while ``fault`` hits GETs of ``path``: it must raise that error
    and record no rejection; healed, it runs again and its result is recorded. Returns that
    second intake and the lake."""
    from qmtl_validation.warehouse.intake import record_intake

    action, expected = TRANSIENT_FAULTS[fault]
    lake = _direct_lake(s3_server, s3_bucket)
    with faulty_s3(s3_server.url) as proxy:
        zone = _impatient_zone(proxy, s3_bucket)
        proxy.fail(action, method="GET", path=path, stall_seconds=3)
        with pytest.raises(Exception) as raised:
            take_in(zone, lake, today=TODAY, lookback_days=1, now=NOW)
        assert _described(raised.value) == expected
        assert proxy.hits(action) >= 1
        assert latest_rows(lake, "rejections", latest=False).empty

        proxy.heal()
        intake = take_in(zone, lake, today=TODAY, lookback_days=1, now=NOW)
        record_intake(lake, intake, now=NOW, file_label="after-fault")
    assert latest_rows(lake, "rejections", latest=False).empty
    return intake, lake


@pytest.mark.parametrize("fault", sorted(TRANSIENT_FAULTS))
def test_a_transient_s3_error_while_reading_a_bundle_fails_the_intake_and_the_next_one_takes_it_in(
    s3_server, s3_bucket, fault
):
    """botocore's timeouts are ``OSError``s, which the intake also catches for bad content: a
    timeout must not become a permanent rejection of a good bundle."""
    from qmtl_validation.warehouse.intake import take_in_run_bundles

    Drops(s3_bucket.uri("landing"), s3_bucket.client).put(bundle("beta_growth", "mom_fast", "run-001", day=TODAY))
    intake, lake = _fault_then_heal(s3_server, s3_bucket, take_in_run_bundles, fault, "/run.json")
    assert intake.partition_keys == ["beta_growth/mom_fast/run-001"] and intake.rejections == []
    assert latest_rows(lake, "landing_registry", latest=False)["partition_key"].tolist() == ["beta_growth/mom_fast/run-001"]


def _snapshot_drop(world: str = "beta_growth") -> list[tuple[str, bytes]]:
    from qmtl_validation.sample_data import snapshot_files

    payload = {
        "world_id": world, "as_of": "2026-11-27T14:59:00Z", "version": "v0001",
        "weights": {"mom_fast": 0.6, "mom_slow": 0.4},
        "covariance": {"mom_fast,mom_fast": 1e-4, "mom_fast,mom_slow": 2e-5, "mom_slow,mom_slow": 1.5e-4},
        "realized_returns": {"mom_fast": [0.01, -0.02, 0.003], "mom_slow": [0.0, 0.01, -0.01]},
        "provenance": {"actor": "risk-engine", "stage": "paper", "source": "unit"},
        "ttl_sec": 3600,
    }
    return snapshot_files(payload, drop_date=TODAY, as_refs=True)


@pytest.mark.parametrize(
    "fault, path",
    [
        ("read_timeout", "/policies/beta_growth/1.yaml"),  # the world's policy: allow-list and signing key
        ("slow_down", "/policies/beta_growth/1.yaml"),
        ("read_timeout", "/v0001.json"),
        ("read_timeout", "/v0001.covariance.parquet"),
        ("connection_reset", "/v0001.realized.parquet"),
    ],
)
def test_a_transient_s3_error_while_reading_a_snapshot_or_its_policy_is_not_recorded_as_a_bad_drop(
    s3_server, s3_bucket, fault, path
):
    """A policy that cannot be read *now* must not make the world look policy-less (a
    ``policy_unavailable`` rejection) and a snapshot or ref that times out is not a bad drop."""
    from qmtl_validation.warehouse.snapshot_intake import take_in_snapshots

    drops = Drops(s3_bucket.uri("landing"), s3_bucket.client)
    drops.put([policy_file("beta_growth", 1)])
    drops.put(_snapshot_drop())
    intake, _ = _fault_then_heal(s3_server, s3_bucket, take_in_snapshots, fault, path)
    assert intake.partition_keys == ["beta_growth/v0001"], intake.rejections
