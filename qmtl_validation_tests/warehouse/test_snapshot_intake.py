"""Risk snapshot intake: registered once, identical or re-formatted re-drops are no-ops, a changed
re-drop is one recorded conflict, bad drops are rejected once with the contract's exact message,
and problems that are not the drop's fault (a missing key, a ref not there yet) are retried."""

import datetime as dt
import itertools
import json

import pandas as pd
import pytest

from qmtl_validation.core.snapshot import snapshot_hash
from qmtl_validation.sample_data import write_snapshot
from qmtl_validation.warehouse.intake import record_intake
from qmtl_validation.warehouse.lake import Lake
from qmtl_validation.warehouse.landing import LocalLandingZone
from qmtl_validation.warehouse.queries import latest_rows
from qmtl_validation.warehouse.snapshot_intake import (
    load_snapshot,
    take_in_snapshots,
    world_snapshot_settings,
)
from qmtl_validation.warehouse.documents import WorldPolicies

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.timezone.utc)
TODAY = NOW.date()
KEY_ENV = "QMTL_TEST_SNAPSHOT_KEY"
KEY = "test-signing-key"
CALLS = itertools.count()

POLICIES = {
    "open_world": "risk_hub: {allowed_producers: [risk-engine], fallback_correlation: 0.4}\n",
    "signed_world": f"risk_hub: {{allowed_producers: [risk-engine], signing_key_env: {KEY_ENV}}}\n",
}


def payload(world="open_world", version="v0001", **changes):
    document = {
        "world_id": world,
        "version": version,
        "as_of": "2026-11-27T11:59:00Z",
        "weights": {"a": 0.6, "b": 0.4},
        "covariance": {"a,a": 1e-4, "a,b": 2e-5, "b,b": 4e-4},
        "realized_returns": {"a": [0.01, -0.005, 0.002], "b": [0.0, 0.003, -0.001]},
        "provenance": {"actor": "risk-engine", "stage": "live", "source": "test"},
        "ttl_sec": 900,
    }
    document.update(changes)
    return document


@pytest.fixture
def world(tmp_path):
    landing = tmp_path / "landing"
    for world_id, text in POLICIES.items():
        path = landing / "policies" / world_id / "1.yaml"
        path.parent.mkdir(parents=True)
        path.write_text(text)
    return LocalLandingZone(landing), Lake(str(tmp_path / "lake"))


def intake(zone, lake, environ=None, **options):
    result = take_in_snapshots(
        zone, lake, today=TODAY, lookback_days=3, now=NOW, environ=environ or {}, **options
    )
    record_intake(lake, result, now=NOW, file_label=f"call{next(CALLS)}")
    return result


def rejections(lake):
    return latest_rows(lake, "rejections", latest=False)


def test_a_new_snapshot_is_registered_once_and_an_identical_redrop_is_a_no_op(world):
    zone, lake = world
    write_snapshot(zone.root, payload())
    first = intake(zone, lake)
    assert first.partition_keys == ["open_world/v0001"]
    drop = first.registered[0]
    assert drop.kind == "snapshot" and drop.landing_prefix == "snapshots/2026-11-27/open_world/v0001.json"
    assert drop.content_hash == snapshot_hash(payload())
    again = intake(zone, lake)
    assert again.registered == [] and again.unchanged == ["open_world/v0001"]
    assert rejections(lake).empty


def test_a_reformatted_redrop_of_the_same_content_is_a_no_op(world):
    zone, lake = world
    write_snapshot(zone.root, payload())
    intake(zone, lake)
    path = zone.root / "snapshots/2026-11-27/open_world/v0001.json"
    path.write_text(json.dumps(json.loads(path.read_text()), indent=4, sort_keys=False))
    result = intake(zone, lake)
    assert result.registered == [] and result.unchanged == ["open_world/v0001"]
    assert rejections(lake).empty


def test_same_version_with_other_content_is_one_conflict_and_the_first_stays(world):
    zone, lake = world
    write_snapshot(zone.root, payload())
    intake(zone, lake)
    write_snapshot(zone.root, payload(weights={"a": 0.5, "b": 0.5}), drop_date="2026-11-26")
    result = intake(zone, lake)
    assert result.registered == []
    assert len(result.conflicts) == 1
    conflict = result.conflicts[0]
    assert conflict["key"] == "snapshots/2026-11-26/open_world/v0001.json"
    assert conflict["reason_code"] == "conflict" and conflict["version"] == "v0001"
    assert "already taken in from snapshots/2026-11-27/open_world/v0001.json" in conflict["reason"]
    assert "first version stays authoritative" in conflict["reason"]
    assert intake(zone, lake).conflicts == []  # recorded once
    registry = latest_rows(lake, "landing_registry", latest=False)
    assert registry["content_hash"].tolist() == [snapshot_hash(payload())]
    assert len(rejections(lake)) == 1


def test_a_contract_violation_is_rejected_once_with_the_exact_message(world):
    zone, lake = world
    write_snapshot(zone.root, payload(weights={"a": 0.6, "b": 0.3}))
    write_snapshot(zone.root, payload(version="v0002", provenance={"actor": "rogue", "stage": "live"}))
    write_snapshot(zone.root, payload(version="v0003", as_of="2026-11-27T12:30:00Z"))
    write_snapshot(zone.root, payload(version="v0004", covariance={"a,a": 1e-4, "a,b": 5e-4, "b,b": 4e-4}))
    result = intake(zone, lake)
    assert result.registered == []
    reasons = {row["version"]: (row["reason_code"], row["reason"]) for row in result.rejections}
    assert reasons["v0001"] == ("contract_violation", "weights must sum to ~1.0")
    assert reasons["v0002"] == ("contract_violation", "actor 'rogue' not allowed")
    assert reasons["v0003"][1].startswith("as_of 2026-11-27T12:30:00Z is in the future")
    assert reasons["v0004"][1].startswith("covariance is not positive semi-definite")
    assert intake(zone, lake).rejections == []
    stored = rejections(lake)
    assert len(stored) == 4 and set(stored["kind"]) == {"snapshot"} and set(stored["world_id"]) == {"open_world"}


def test_a_version_that_does_not_match_the_file_name_is_rejected(world):
    zone, lake = world
    path = write_snapshot(zone.root, payload())
    path.rename(path.with_name("v0009.json"))
    (row,) = intake(zone, lake).rejections
    assert row["reason"] == "version 'v0001' does not match the file name v0009.json"


def test_a_signed_world_needs_its_key_and_a_valid_signature(world, monkeypatch):
    zone, lake = world
    write_snapshot(zone.root, payload("signed_world"), signing_key=KEY)
    write_snapshot(zone.root, payload("signed_world", version="v0002"), signing_key="another-key")
    write_snapshot(zone.root, payload("signed_world", version="v0003"))

    without_key = intake(zone, lake)
    assert without_key.registered == []
    assert {r["reason_code"] for r in without_key.rejections} == {"signing_key_unavailable"}
    assert all(KEY_ENV in r["reason"] for r in without_key.rejections)
    assert intake(zone, lake).rejections == []  # retried, but recorded once

    with_key = intake(zone, lake, environ={KEY_ENV: KEY})
    assert with_key.partition_keys == ["signed_world/v0001"]
    reasons = {r["version"]: r["reason"] for r in with_key.rejections}
    assert reasons == {"v0002": "signature mismatch", "v0003": "signature is required"}


def test_parquet_refs_are_read_checked_and_part_of_the_content(world):
    zone, lake = world
    write_snapshot(zone.root, payload(), as_refs=True)
    (drop,) = intake(zone, lake).registered
    assert drop.content_hash != snapshot_hash(json.loads((zone.root / drop.landing_prefix).read_text()))
    settings = world_snapshot_settings(WorldPolicies(zone), "open_world", {})
    loaded = load_snapshot(zone, drop.landing_prefix, settings, now=NOW)
    assert (loaded.covariance_form, loaded.realized_returns_form) == ("ref", "ref")
    assert loaded.covariance.loc["a", "b"] == pytest.approx(2e-5)
    assert loaded.realized["a"].tolist() == [0.01, -0.005, 0.002]
    assert isinstance(loaded.realized.index, pd.DatetimeIndex)


def test_a_missing_ref_is_retried_until_the_file_arrives(world):
    zone, lake = world
    json_path = write_snapshot(zone.root, payload(), as_refs=True)
    parquet = json_path.with_name("v0001.covariance.parquet")
    kept = parquet.read_bytes()
    parquet.unlink()
    first = intake(zone, lake)
    (row,) = first.rejections
    assert row["reason_code"] == "missing_ref" and row["reason"].startswith("covariance_ref: no file at")
    parquet.write_bytes(kept)
    assert intake(zone, lake).partition_keys == ["open_world/v0001"]


def test_a_ref_outside_the_landing_zone_is_refused(world):
    zone, lake = world
    write_snapshot(zone.root, payload(covariance=None, covariance_ref="../../etc/passwd.parquet"))
    (row,) = intake(zone, lake).rejections
    assert row["reason_code"] == "contract_violation"
    assert "covariance_ref '../../etc/passwd.parquet'" in row["reason"] and "traversal" in row["reason"]


def test_intake_reads_at_most_max_snapshots_new_drops_per_call(world):
    zone, lake = world
    for n in range(1, 4):
        write_snapshot(zone.root, payload(version=f"v000{n}"))
    first = intake(zone, lake, max_snapshots=2)
    assert len(first.registered) == 2 and first.deferred == 1
    second = intake(zone, lake, max_snapshots=2)
    assert len(second.registered) == 1 and second.deferred == 0 and len(second.unchanged) == 2


def test_badly_placed_snapshot_files_are_rejected_by_key(world):
    zone, lake = world
    bad = zone.root / "snapshots/2026-11-27/open_world/notes.txt"
    bad.parent.mkdir(parents=True)
    bad.write_text("hello")
    (row,) = intake(zone, lake).rejections
    assert row["reason_code"] == "unknown_file" and row["key"].endswith("notes.txt")
    assert intake(zone, lake).rejections == []
