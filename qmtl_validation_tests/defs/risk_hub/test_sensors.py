"""Risk hub sensors: snapshot drops taken in and quarantined; freshness breaches with an injected
clock — fresh → nothing; past the SLA → exactly one fallback run and one open breach; still stale
→ nothing new; a fresh snapshot → the breach is closed."""

import datetime as dt
import json

import dagster as dg
import pytest

from qmtl_validation.defs.resources import resources_for
from qmtl_validation.defs.risk_hub import sensors as hub_sensors
from qmtl_validation.defs.runs import sensors as run_sensors
from qmtl_validation.sample_data import snapshot_files
from qmtl_validation.warehouse.queries import latest_rows
from qmtl_validation_tests.dagster_harness import (
    Drops,
    daemon_workspace,
    deployment,
    lake_of,
    partition_keys_of,
    sensor_environment,
    set_clock,
    sync_instance,
    tick_sensor,
)

# Sensor time runs a little behind the real clock, so nothing the assets stamp with the real time
# is ever "before" a snapshot.
T0 = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)).replace(second=0, microsecond=0)


def policy(max_lag: str) -> bytes:
    return (
        "risk_profile: {tier: medium, client_critical: false}\n"
        f"risk_hub: {{max_snapshot_lag: {max_lag}, fallback_correlation: 0.5}}\n"
        "validation_profiles:\n  backtest: {performance: {sharpe_min: 0.2}}\n"
    ).encode()


def snapshot(world_id: str, version: str, as_of: dt.datetime) -> list[tuple[str, bytes]]:
    payload = {
        "world_id": world_id,
        "version": version,
        "as_of": as_of.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "weights": {"alpha": 0.6, "beta": 0.4},
        "covariance": {"alpha,alpha": 1.0e-4, "alpha,beta": 0.3 * 0.01 * 0.015, "beta,beta": 2.25e-4},
        "provenance": {"actor": "risk-engine", "stage": "live", "source": "test"},
    }
    return snapshot_files(payload, drop_date=as_of.date())


def fallback_runs(instance):
    return [r for r in instance.get_runs() if r.job_name == "risk_snapshot_fallback_job"]


def freshness_check(instance):
    """The latest ``snapshot_freshness`` result (reported by the sensor, or evaluated by a
    validate_snapshots run, which executes the checks of risk_snapshot)."""
    records = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey("risk_snapshot"), "snapshot_freshness"), limit=1
    )
    return records[0].evaluation.passed if records and records[0].evaluation is not None else None


@pytest.mark.slow
def test_a_stale_world_gets_one_fallback_per_breach_episode_and_a_fresh_snapshot_closes_it(tmp_path, monkeypatch):
    deploy = deployment(tmp_path, monkeypatch)
    clock = tmp_path / "clock.txt"
    set_clock(clock, T0 + dt.timedelta(minutes=1))
    sensor_environment(monkeypatch, clock)
    drops = Drops(deploy.settings.landing_root)
    drops.put([("policies/w_fast/1.yaml", policy("5m")), ("policies/w_slow/1.yaml", policy("15m"))])
    drops.put(snapshot("w_fast", "v0", T0 - dt.timedelta(minutes=1)))
    drops.put(snapshot("w_fast", "v1", T0) + snapshot("w_slow", "v1", T0))
    lake = lake_of(deploy)

    with sync_instance() as instance, daemon_workspace(instance) as context:
        taken = tick_sensor(context, instance, "risk_snapshot_sensor")
        assert taken.error is None, taken.error
        assert sorted(taken.partitions_added) == ["w_fast", "w_fast/v0", "w_fast/v1", "w_slow", "w_slow/v1"]
        # One run per world over the world's new snapshots, tagged with the world.
        order = instance.get_dynamic_partitions("risk_snapshots")
        assert sorted((r.tags["qmtl/world"], partition_keys_of(r, order)) for r in taken.runs) == [
            ("w_fast", ["w_fast/v0", "w_fast/v1"]), ("w_slow", ["w_slow/v1"])]
        assert [r.status for r in taken.runs] == [dg.DagsterRunStatus.SUCCESS] * 2
        assert sorted(instance.get_materialized_partitions(dg.AssetKey("risk_snapshot"))) == [
            "w_fast/v0", "w_fast/v1", "w_slow/v1"]
        observed = instance.fetch_observations(dg.AssetKey("risk_snapshot"), limit=10).records
        assert sorted(r.partition_key for r in observed) == ["w_fast/v0", "w_fast/v1", "w_slow/v1"]
        assert {r.asset_observation.metadata["version"].value for r in observed} == {"v0", "v1"}

        # Fresh: no run, no breach; the check passes.
        set_clock(clock, T0 + dt.timedelta(minutes=2))
        fresh = tick_sensor(context, instance, "snapshot_freshness_sensor")
        assert fresh.error is None, fresh.error
        assert fresh.status == "SKIPPED" and fresh.runs == ()
        assert latest_rows(lake, "freshness_breaches", latest=False).empty
        assert freshness_check(instance) is True

        # 10 minutes: past w_fast's 5-minute SLA, within w_slow's 15 minutes.
        set_clock(clock, T0 + dt.timedelta(minutes=10))
        stale = tick_sensor(context, instance, "snapshot_freshness_sensor")
        assert stale.error is None, stale.error
        assert [r.tags["dagster/partition"] for r in stale.runs] == ["w_fast"]
        assert stale.runs[0].status == dg.DagsterRunStatus.SUCCESS
        assert stale.runs[0].tags["qmtl/breach_id"] == f"w_fast@{(T0 + dt.timedelta(minutes=5)):%Y-%m-%dT%H:%M:%SZ}"
        breaches = latest_rows(lake, "freshness_breaches", latest=False)
        assert len(breaches) == 1
        row = breaches.iloc[0]
        assert (row["world_id"], row["status"]) == ("w_fast", "open")
        assert row["started_at"] == T0 + dt.timedelta(minutes=5)
        assert row["lag_seconds"] == 600.0 and row["max_lag_seconds"] == 300.0
        assert freshness_check(instance) is False
        assert any("breach w_fast@" in line and "opened" in line for line in stale.warnings())
        fallback = latest_rows(lake, "risk_snapshots", world_id="w_fast")
        assert fallback["is_fallback"].fillna(False).astype(bool).sum() == 1

        # Still stale on later ticks: nothing new.
        for minutes in (12, 13):
            set_clock(clock, T0 + dt.timedelta(minutes=minutes))
            again = tick_sensor(context, instance, "snapshot_freshness_sensor")
            assert again.error is None and again.runs == () and again.status == "SKIPPED"
        assert len(fallback_runs(instance)) == 1
        assert len(latest_rows(lake, "freshness_breaches", latest=False)) == 1
        assert freshness_check(instance) is False

        # A fresh snapshot arrives and is validated: the breach closes, no fallback is requested.
        drops.put(snapshot("w_fast", "v2", T0 + dt.timedelta(minutes=12)))
        assert len(tick_sensor(context, instance, "risk_snapshot_sensor").runs) == 1
        set_clock(clock, T0 + dt.timedelta(minutes=14))
        closed = tick_sensor(context, instance, "snapshot_freshness_sensor")
        assert closed.error is None and closed.runs == ()
        episode = latest_rows(lake, "freshness_breaches").set_index("world_id")
        assert episode.loc["w_fast", "status"] == "closed"
        assert episode.loc["w_fast", "ended_at"] == T0 + dt.timedelta(minutes=14)
        assert episode.loc["w_fast", "fallback_version"] == fallback.loc[fallback["is_fallback"], "version"].iloc[0]
        assert freshness_check(instance) is True

        # Stale again later: a new episode and its own single fallback run.
        set_clock(clock, T0 + dt.timedelta(minutes=30))
        second = tick_sensor(context, instance, "snapshot_freshness_sensor")
        assert sorted(r.tags["dagster/partition"] for r in second.runs) == ["w_fast", "w_slow"]
        assert len(fallback_runs(instance)) == 3
        assert sorted(latest_rows(lake, "freshness_breaches")["status"]) == ["closed", "open", "open"]


def evaluate(sensor, instance, deploy, cursor=None):
    resources = resources_for(deploy.settings)
    with dg.build_sensor_context(
        instance=instance, cursor=cursor,
        resources={"landing": resources["landing"], "warehouse": resources["warehouse"]},
    ) as context:
        return sensor(context)


def test_bad_snapshot_drops_are_quarantined_and_good_ones_observed_and_requested(tmp_path, monkeypatch):
    deploy = deployment(tmp_path, monkeypatch)
    monkeypatch.setattr(run_sensors, "clock", lambda: T0 + dt.timedelta(minutes=1))
    drops = Drops(deploy.settings.landing_root)
    day = T0.date().isoformat()
    drops.put([("policies/w_fast/1.yaml", policy("5m"))])
    drops.put(snapshot("w_fast", "v1", T0))
    drops.put([
        (f"snapshots/{day}/w_fast/v2.json", b'{"world_id": "w_fast", "version": "v2", '),
        (f"snapshots/{day}/bad world/v1.json", snapshot("w_fast", "v9", T0)[-1][1]),
    ])
    future = snapshot("w_fast", "v3", T0 + dt.timedelta(hours=2))
    drops.put([(f"snapshots/{day}/w_fast/v3.json", future[-1][1])])
    lake = lake_of(deploy)
    with dg.instance_for_test() as instance:
        result = evaluate(hub_sensors.risk_snapshot_sensor, instance, deploy)
        assert [(r.partition_key, r.run_key.split(":")[0]) for r in result.run_requests] == [("w_fast/v1", "w_fast/v1")]
        assert [e.partition for e in result.asset_events] == ["w_fast/v1"]
        assert [r.partition_keys for r in result.dynamic_partitions_requests] == [["w_fast/v1"], ["w_fast"]]
        rejections = latest_rows(lake, "rejections", latest=False).set_index("key")
        assert set(rejections.index) == {
            f"snapshots/{day}/w_fast/v2.json", f"snapshots/{day}/bad world/v1.json", f"snapshots/{day}/w_fast/v3.json",
        }
        assert rejections.loc[f"snapshots/{day}/bad world/v1.json", "reason_code"] == "bad_identifier"
        assert "not valid JSON" in rejections.loc[f"snapshots/{day}/w_fast/v2.json", "reason"]
        assert "future" in rejections.loc[f"snapshots/{day}/w_fast/v3.json", "reason"]
        cursor = json.loads(result.cursor)
        assert (cursor["new"], cursor["rejected"]) == (1, 3)
        for key in rejections.index:
            assert drops.exists(key)

        instance.add_dynamic_partitions("risk_snapshots", ["w_fast/v1"])
        again = evaluate(hub_sensors.risk_snapshot_sensor, instance, deploy, result.cursor)
        assert again.run_requests == [] and again.asset_events == []
        assert len(latest_rows(lake, "rejections", latest=False)) == 3


def test_the_freshness_check_names_each_breached_world_with_its_lag():
    import pandas as pd

    state = pd.DataFrame([
        {"world_id": "a", "version": "v1", "as_of": T0, "lag_seconds": 900.0, "max_lag_seconds": 300.0, "stale": True},
        {"world_id": "b", "version": "v4", "as_of": T0, "lag_seconds": 60.0, "max_lag_seconds": 300.0, "stale": False},
    ])
    failed = hub_sensors.freshness_evaluation(state, {"a": "a@x"})
    assert not failed.passed and failed.severity == dg.AssetCheckSeverity.ERROR
    assert failed.metadata["breaches"].value == {
        "a": {"breach_id": "a@x", "version": "v1", "as_of": T0.isoformat(), "lag_seconds": 900.0, "max_lag_seconds": 300.0}
    }
    assert failed.description == "1 world(s) past max_snapshot_lag: a"
    assert hub_sensors.freshness_evaluation(state[state["world_id"] == "b"], {}).passed
