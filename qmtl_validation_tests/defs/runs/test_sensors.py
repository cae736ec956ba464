"""run_bundle_sensor: quarantine of bad drops, bounded work and listing, the watermark cursor.

The daemon tests tick the sensor through ``execute_sensor_iteration`` with the code location in a
code-server subprocess; the rest call the sensor function with a real instance and real resources.
"""

import datetime as dt
import io
import json
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from qmtl_validation.defs.resources import LandingZoneResource, WarehouseResource
from qmtl_validation.defs.runs import sensors
from qmtl_validation.defs.runs.sensors import (
    lookback_for,
    read_cursor,
    run_bundle_sensor,
    sensor_settings,
)
from qmtl_validation.warehouse.intake import RegisteredDrop
from qmtl_validation.warehouse.queries import latest_rows
from qmtl_validation_tests.dagster_harness import (
    Drops,
    bundle,
    daemon_workspace,
    deployment,
    lake_of,
    partition_keys_of,
    policy_file,
    s3_deployment,
    sensor_environment,
    set_clock,
    sync_instance,
    tick_sensor,
)

NOW = dt.datetime(2026, 11, 27, 15, 0, tzinfo=dt.timezone.utc)
TODAY = NOW.date()


def _replace(files, name, data):
    return [(key, data if key.endswith("/" + name) else body) for key, body in files]


def _manifest(files):
    return json.loads(files[-1][1])


def _returns_with(files, row, value):
    frame = pq.read_table(io.BytesIO(files[0][1])).to_pandas()
    frame.loc[row, "ret"] = value
    out = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), out)
    return _replace(files, "returns.parquet", out.getvalue())


def bad_drop_matrix(storage: str):
    """(files, expected rejection rows {key: (reason_code, words in the reason)}) per bad drop."""
    day = TODAY.isoformat()
    base = f"runs/{day}/beta_growth"
    cases = {}

    files = bundle("beta_growth", "bad_json", "r1", day=TODAY)
    cases["unparseable JSON"] = (
        _replace(files, "run.json", b'{"world_id": "beta_growth",'),
        {f"{base}/bad_json/r1/": ("contract_violation", ["run.json", "is not valid JSON"])},
    )
    files = bundle("beta_growth", "bad_returns", "r1", day=TODAY)
    cases["contract violation (returns)"] = (
        _returns_with(files, 5, -1.5),
        {f"{base}/bad_returns/r1/": ("contract_violation", ["returns.parquet", "column 'ret' row 6", "-1.5", "> -1"])},
    )
    files = bundle("beta_growth", "no_stage", "r1", day=TODAY)
    manifest = _manifest(files)
    del manifest["stage"]
    cases["contract violation (run.json)"] = (
        _replace(files, "run.json", json.dumps(manifest).encode()),
        {f"{base}/no_stage/r1/": ("contract_violation", ["run.json", "'stage'", "required key is missing"])},
    )
    files = bundle("beta_growth", "wrong_id", "r1", day=TODAY)
    manifest = _manifest(files)
    manifest["run_id"] = "r2"
    cases["manifest names another run"] = (
        _replace(files, "run.json", json.dumps(manifest).encode()),
        {f"{base}/wrong_id/r1/": ("contract_violation", ["identifies run 'beta_growth/wrong_id/r2'", "beta_growth/wrong_id/r1"])},
    )
    files = bundle("beta world", "s1", "r1", day=TODAY, check_ids=False)
    cases["bad identifier"] = (
        files,
        {
            key: ("bad_identifier", ["world_id 'beta world' is not a valid identifier"])
            for key, _ in files
        },
    )
    files = bundle("beta_growth", "huge", "r1", day=TODAY)
    manifest = _manifest(files)
    manifest["extra_metrics"] = {"padding": "x" * (5 * 1024 * 1024)}
    cases["oversize"] = (
        _replace(files, "run.json", json.dumps(manifest).encode()),
        {f"{base}/huge/r1/": ("oversize", ["run.json", "exceeds the limit of 5242880 bytes"])},
    )
    files = bundle("beta_growth", "no_returns", "r1", day=TODAY)
    cases["missing files"] = (
        [f for f in files if f[0].endswith("run.json")],
        {f"{base}/no_returns/r1/": ("missing_returns", ["run.json present but no returns.parquet or returns.csv"])},
    )
    if storage == "s3":  # a key with `..` components exists only in an object store
        files = bundle("beta_growth", "escape", "r1", day=TODAY)
        sneaky = f"{base}/escape/../../../../policies/beta_growth/9.yaml/run.json"
        cases["path traversal"] = (
            [(sneaky, files[-1][1])],
            {sneaky: ("path_traversal", ["path traversal", "'..'"])},
        )
    return cases


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
    return request.param, deploy, drops


@pytest.mark.slow
def test_each_bad_drop_is_quarantined_with_its_reason_while_good_drops_in_the_same_tick_run(landing):
    storage, deploy, drops = landing
    drops.put([policy_file("beta_growth", 1)])
    good = bundle("beta_growth", "good_a", "r1", day=TODAY) + bundle("beta_growth", "good_b", "r1", day=TODAY, seed=2)
    cases = bad_drop_matrix(storage)
    drops.put(good)
    for files, _ in cases.values():
        drops.put(files)
    expected = {key: rejection for _, rejections in cases.values() for key, rejection in rejections.items()}

    with sync_instance() as instance, daemon_workspace(instance) as context:
        tick = tick_sensor(context, instance, "run_bundle_sensor")
        assert tick.error is None, tick.error
        assert sorted(tick.partitions_added) == ["beta_growth/good_a/r1", "beta_growth/good_b/r1"]
        # One world, two new drops: one run over both.
        order = instance.get_dynamic_partitions("evaluation_runs")
        assert [sorted(partition_keys_of(r, order)) for r in tick.runs] == [sorted(tick.partitions_added)]
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in tick.runs)

        lake = lake_of(deploy)
        rejections = latest_rows(lake, "rejections", latest=False)
        got = {row["key"]: row for row in rejections.to_dict("records")}
        assert set(got) == set(expected)
        for key, (code, words) in expected.items():
            row = got[key]
            assert row["reason_code"] == code, (key, row["reason"])
            for word in words:
                assert word in row["reason"], (key, word, row["reason"])
            assert row["kind"] == "run_bundle" and row["sensor"] == "run_bundle_sensor"
            # Shown in the tick log, one warning per rejected drop.
            assert any(key in line and code in line for line in tick.warnings()), key
        assert tick.cursor["rejected"] == len(expected) and tick.cursor["new"] == 2

        # Nothing was moved or deleted.
        for files, _ in cases.values():
            for key, _ in files:
                assert drops.exists(key), key
        runs = latest_rows(lake, "evaluation_run_history")
        assert sorted(runs["strategy_id"]) == ["good_a", "good_b"]

        # The bad files are still there on the next tick, but are not rejected a second time.
        again = tick_sensor(context, instance, "run_bundle_sensor")
        assert again.error is None and again.runs == ()
        assert len(latest_rows(lake, "rejections", latest=False)) == len(expected)
        assert again.cursor["rejected"] == 0 and again.cursor["unchanged"] == 2

        # A re-drop of a taken-in run with other content is a conflict, recorded once; the first
        # version stays authoritative and nothing is re-run.
        other_day = (TODAY - dt.timedelta(days=1))
        drops.put(bundle("beta_growth", "good_a", "r1", day=other_day, seed=99))
        conflict = tick_sensor(context, instance, "run_bundle_sensor")
        assert conflict.error is None and conflict.runs == ()
        assert conflict.cursor["conflicts"] == 1
        rows = latest_rows(lake, "rejections", latest=False)
        conflicts = rows[rows["conflict"].fillna(False).astype(bool)]
        assert conflicts["key"].tolist() == [f"runs/{other_day.isoformat()}/beta_growth/good_a/r1/"]
        assert "already taken in from runs/2026-11-27/beta_growth/good_a/r1/" in conflicts["reason"].iloc[0]
        assert any("conflict" in line and "good_a" in line for line in conflict.warnings())
        final = tick_sensor(context, instance, "run_bundle_sensor")
        assert final.runs == () and len(latest_rows(lake, "rejections", latest=False)) == len(expected) + 1
        assert len(instance.get_runs()) == 1


def _old_objects(root: Path, count: int, today: dt.date) -> None:
    """``count`` run files dropped 20 to 219 days ago: outside any look-back the test uses."""
    for i in range(count):
        day = (today - dt.timedelta(days=20 + i % 200)).isoformat()
        folder = root / "runs" / day / "beta_growth" / f"s{i % 7}" / f"r{i}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "returns.csv").write_bytes(b"date,ret\n")


@pytest.mark.slow
def test_a_tick_over_ten_thousand_old_objects_lists_only_the_look_back(tmp_path, monkeypatch):
    deploy = deployment(tmp_path, monkeypatch)
    clock = tmp_path / "clock.txt"
    set_clock(clock, NOW)
    sensor_environment(monkeypatch, clock, lookback_days=2)
    root = Path(deploy.settings.landing_root)
    _old_objects(root, 10_000, TODAY)
    Drops(str(root)).put([policy_file("beta_growth", 1), *bundle("beta_growth", "fresh", "r1", day=TODAY)])

    with sync_instance() as instance, daemon_workspace(instance) as context:
        tick = tick_sensor(context, instance, "run_bundle_sensor")
        assert tick.error is None, tick.error
        assert tick.partitions_added == ("beta_growth/fresh/r1",)
        # Only the look-back's 3 date prefixes are listed: one scan per date folder (two are
        # absent) and per folder on the fresh bundle's path (3), then one to read the bundle.
        assert tick.cursor["prefixes"] == 3 and tick.cursor["list_calls"] == 7
        assert any("listed 3 date prefixes (runs/2026-11-25/ .. runs/2026-11-27/) in 7 list calls" in line
                   for line in tick.log)
        print(f"\n10,000 old objects: sensor evaluation {tick.cursor['seconds']:.3f} s, "
              f"whole daemon tick incl. the launched run {tick.seconds:.2f} s")
        assert tick.cursor["seconds"] < 5.0
        quiet = tick_sensor(context, instance, "run_bundle_sensor")
        print(f"10,000 old objects, nothing new: whole daemon tick {quiet.seconds:.2f} s")
        assert quiet.status == "SKIPPED" and quiet.cursor["list_calls"] == 6  # nothing to read
        assert quiet.seconds < 60


def test_s3_tick_lists_only_the_look_back_prefixes_page_by_page(s3_bucket, tmp_path, monkeypatch):
    deploy = s3_deployment(tmp_path, monkeypatch, s3_bucket)
    for i in range(300):  # older drops the tick must never list
        day = (TODAY - dt.timedelta(days=20 + i % 30)).isoformat()
        s3_bucket.put(f"landing/runs/{day}/beta_growth/s/r{i}/returns.csv", b"x")
    drops = Drops(deploy.settings.landing_root, s3_bucket.client)
    drops.put([policy_file("beta_growth", 1), *bundle("beta_growth", "fresh", "r1", day=TODAY)])
    monkeypatch.setattr(sensors, "clock", lambda: NOW)
    monkeypatch.setenv("QMTL_SENSOR_LOOKBACK_DAYS", "2")
    with dg.instance_for_test() as instance:
        result = evaluate(run_bundle_sensor, instance, deploy)
    cursor = json.loads(result.cursor)
    # 2026-11-25 and 2026-11-26: one empty page each; 2026-11-27: one page with the 2 objects;
    # then one listing of the new bundle's folder when it is read.
    assert (cursor["prefixes"], cursor["list_calls"]) == (3, 4)
    print(f"\nS3 tick over 300 older objects: sensor evaluation {cursor['seconds']:.2f} s")
    assert [r.partition_key for r in result.run_requests] == ["beta_growth/fresh/r1"]


def evaluate(sensor, instance, deploy, cursor=None):
    """One evaluation of ``sensor`` in this process, with the deployment's real resources."""
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=_resources(deploy)) as context:
        return sensor(context)


def _resources(deploy):
    from dagster_aws.s3 import S3Resource

    s3 = None
    if deploy.settings.is_prod:
        s3 = S3Resource(endpoint_url=deploy.settings.s3_endpoint_url, region_name=deploy.settings.s3_region)
    return {"landing": LandingZoneResource(s3=s3), "warehouse": WarehouseResource(s3=s3)}


def test_work_per_tick_is_bounded_and_the_rest_waits_for_the_next_tick(tmp_path, monkeypatch):
    deploy = deployment(tmp_path, monkeypatch)
    drops = Drops(deploy.settings.landing_root)
    for i in range(5):
        drops.put(bundle("beta_growth", f"s{i}", "r1", day=TODAY, seed=i))
    monkeypatch.setattr(sensors, "clock", lambda: NOW)
    monkeypatch.setenv("QMTL_SENSOR_MAX_DROPS_PER_TICK", "2")
    with dg.instance_for_test() as instance:
        cursor = None
        taken = []
        for expected_new, expected_deferred in ((2, 3), (2, 1), (1, 0), (0, 0)):
            result = evaluate(run_bundle_sensor, instance, deploy, cursor)
            cursor = result.cursor
            state = json.loads(cursor)
            assert (state["new"], state["deferred"]) == (expected_new, expected_deferred)
            keys = list(result.dynamic_partitions_requests[0].partition_keys) if expected_new else []
            assert len(keys) == expected_new
            if keys:
                instance.add_dynamic_partitions("evaluation_runs", keys)
                (request,) = result.run_requests  # one world: the tick's drops make one run
                assert partition_keys_of(request, instance.get_dynamic_partitions("evaluation_runs")) == keys
            else:
                assert result.run_requests == []
            taken.extend(keys)
        assert sorted(taken) == [f"beta_growth/s{i}/r1" for i in range(5)]
        assert state["taken_in"] == 5 and state["date"] == TODAY.isoformat()
        assert result.skip_reason.skip_message.startswith("no new run bundles (0 new, 5 unchanged")
        assert len(cursor) < 400


def _drop(world: str, name: str, token: str = "t1") -> RegisteredDrop:
    return RegisteredDrop("run_bundle", f"{world}/{name}/r1", world, f"runs/2026-11-27/{world}/{name}/r1/", token, "h")


def test_a_ticks_new_drops_become_one_run_per_world_over_exactly_that_worlds_partitions():
    drops = [_drop("beta", "s2"), _drop("alpha", "s1"), _drop("beta", "s1"), _drop("gamma", "s1"),
             _drop("alpha", "s2"), _drop("alpha", "old")]
    known = ["alpha/old/r1", "zeta/s1/r1"]

    added, requests = sensors.drop_run_requests(drops, known, source="test", world_tag="qmtl/world")

    # Added world by world, so each world's new keys are one range of the partition order.
    assert added == ["alpha/s1/r1", "alpha/s2/r1", "beta/s1/r1", "beta/s2/r1", "gamma/s1/r1"]
    order = known + added
    covered = {r.run_key: partition_keys_of(r, order) for r in requests}
    by_world = {r.tags["qmtl/world"]: partition_keys_of(r, order) for r in requests if r.tags.get("qmtl/drops")}
    assert by_world == {"alpha": ["alpha/s1/r1", "alpha/s2/r1"], "beta": ["beta/s1/r1", "beta/s2/r1"]}
    # A lone new drop and a drop whose partition already exists get single-partition runs keyed by token.
    singles = {r.partition_key: r.run_key for r in requests if r.partition_key}
    assert singles == {"alpha/old/r1": "alpha/old/r1:t1", "gamma/s1/r1": "gamma/s1/r1:t1"}
    assert sorted(k for keys in covered.values() for k in keys) == sorted(d.partition_key for d in drops)
    assert all(r.tags["qmtl/source"] == "test" for r in requests)

    # The same batch always has the same run key; other content in one drop gives another.
    _, same = sensors.drop_run_requests(list(reversed(drops)), known, source="test")
    assert sorted(r.run_key for r in same) == sorted(covered)
    changed = [*drops[:1], _drop("alpha", "s1", token="t2"), *drops[2:]]
    _, other = sensors.drop_run_requests(changed, known, source="test")
    alpha_key = next(k for k, keys in covered.items() if keys == by_world["alpha"])
    assert alpha_key not in {r.run_key for r in other} and len(other) == len(requests)


@pytest.mark.slow
def test_a_tick_over_two_worlds_drops_validates_each_world_in_one_run(tmp_path, monkeypatch):
    deploy = deployment(tmp_path, monkeypatch)
    clock = tmp_path / "clock.txt"
    set_clock(clock, NOW)
    sensor_environment(monkeypatch, clock)
    drops = Drops(deploy.settings.landing_root)
    drops.put([policy_file("beta_growth", 1), policy_file("alpha_core", 1, "alpha_core")])
    for i in range(3):
        drops.put(bundle("beta_growth", f"s{i}", "r1", day=TODAY, seed=i))
    for i in range(2):
        drops.put(bundle("alpha_core", f"s{i}", "r1", day=TODAY, seed=10 + i))

    with sync_instance() as instance, daemon_workspace(instance) as context:
        tick = tick_sensor(context, instance, "run_bundle_sensor")
        assert tick.error is None, tick.error
        order = instance.get_dynamic_partitions("evaluation_runs")
        covered = sorted(sorted(partition_keys_of(r, order)) for r in tick.runs)
        assert covered == [[f"alpha_core/s{i}/r1" for i in range(2)], [f"beta_growth/s{i}/r1" for i in range(3)]]
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in tick.runs)
        history = latest_rows(lake_of(deploy), "evaluation_run_history", latest=False)
        assert sorted(history["world_id"] + "/" + history["strategy_id"]) == sorted(k[:-3] for k in order)
        assert tick_sensor(context, instance, "run_bundle_sensor").runs == ()


def test_a_registered_run_the_instance_lacks_is_requested_again_under_the_same_run_key(tmp_path, monkeypatch):
    deploy = deployment(tmp_path, monkeypatch)
    drops = Drops(deploy.settings.landing_root)
    drops.put(bundle("beta_growth", "s1", "r1", day=TODAY))
    drops.put(bundle("beta_growth", "s2", "r1", day=TODAY, seed=2))
    drops.put(bundle("alpha_core", "s1", "r1", day=TODAY, seed=3))
    monkeypatch.setattr(sensors, "clock", lambda: NOW)
    with dg.instance_for_test() as first:
        taken = evaluate(run_bundle_sensor, first, deploy)
    keys = ["alpha_core/s1/r1", "beta_growth/s1/r1", "beta_growth/s2/r1"]
    # A fresh instance over the same lake (the tick that registered the runs never added their partitions).
    with dg.instance_for_test() as fresh:
        again = evaluate(run_bundle_sensor, fresh, deploy)
        assert len(taken.run_requests) == 2  # one per world
        assert [r.run_key for r in again.run_requests] == [r.run_key for r in taken.run_requests]
        assert again.dynamic_partitions_requests[0].partition_keys == keys
        fresh.add_dynamic_partitions("evaluation_runs", keys)
        quiet = evaluate(run_bundle_sensor, fresh, deploy)
        assert quiet.run_requests == [] and quiet.dynamic_partitions_requests == []


def test_after_an_outage_longer_than_the_look_back_the_tick_scans_back_to_the_watermark():
    today = dt.date(2026, 11, 27)
    assert lookback_for({}, today, 14) == 14
    assert lookback_for({"date": "2026-11-26"}, today, 14) == 14
    assert lookback_for({"date": "2026-10-28"}, today, 14) == 30
    assert lookback_for({"date": "2020-01-01"}, today, 14) == sensors.MAX_CATCH_UP_DAYS
    assert lookback_for({"date": "garbage"}, today, 14) == 14


def test_a_cursor_that_is_not_json_starts_afresh_instead_of_wedging_the_sensor():
    assert read_cursor(None) == {} and read_cursor("") == {}
    assert read_cursor("not json") == {} and read_cursor("[1, 2]") == {}
    assert read_cursor('{"date": "2026-11-27", "taken_in": 3}') == {"date": "2026-11-27", "taken_in": 3}


def test_sensor_settings_come_from_the_environment_with_safe_defaults():
    assert sensor_settings({}) == sensors.SensorSettings(30, 14, 200)
    assert sensor_settings({"QMTL_SENSOR_INTERVAL_SECONDS": "5", "QMTL_SENSOR_LOOKBACK_DAYS": "2"}).interval_seconds == 5
    with pytest.raises(ValueError, match="QMTL_SENSOR_INTERVAL_SECONDS=0: must be >= 1"):
        sensor_settings({"QMTL_SENSOR_INTERVAL_SECONDS": "0"})
    with pytest.raises(ValueError, match="QMTL_SENSOR_LOOKBACK_DAYS='two': expected an integer"):
        sensor_settings({"QMTL_SENSOR_LOOKBACK_DAYS": "two"})


def test_the_clock_reads_qmtl_now_as_an_instant_or_from_a_file_at_every_call(tmp_path, monkeypatch):
    monkeypatch.delenv("QMTL_NOW", raising=False)
    before = dt.datetime.now(dt.timezone.utc)
    assert before <= sensors.environment_clock() <= dt.datetime.now(dt.timezone.utc)
    monkeypatch.setenv("QMTL_NOW", "2026-11-27T10:00:00")
    assert sensors.environment_clock() == dt.datetime(2026, 11, 27, 10, tzinfo=dt.timezone.utc)
    clock = tmp_path / "now.txt"
    monkeypatch.setenv("QMTL_NOW", f"file:{clock}")
    set_clock(clock, dt.datetime(2026, 11, 27, 11, tzinfo=dt.timezone.utc))
    assert sensors.environment_clock().hour == 11
    clock.write_text("2026-11-27T12:30:00Z")
    assert sensors.environment_clock() == dt.datetime(2026, 11, 27, 12, 30, tzinfo=dt.timezone.utc)
    clock.write_text("noon")
    with pytest.raises(ValueError, match="is not an ISO-8601 instant"):
        sensors.environment_clock()
