import datetime as dt
import hashlib
import os
import time

import pytest

from qmtl_validation.warehouse.lake import Lake
from qmtl_validation.core.policy_store import version_sort_key
from qmtl_validation.warehouse.landing import (
    LandingKeyError,
    LandingObjectTooLargeError,
    LocalLandingZone,
    S3LandingZone,
    date_prefixes,
    find_run_bundles,
    find_snapshots,
    is_transient_io_error,
    landing_zone_from_root,
    list_model_cards,
    list_policies,
    parse_policy_key,
    parse_run_key,
    parse_snapshot_key,
)

TODAY = dt.date(2026, 11, 27)
RUN = "runs/2026-11-27/alpha/mom/r1/"


@pytest.fixture(params=["local", "s3"])
def zone(request, tmp_path):
    if request.param == "local":
        return LocalLandingZone(tmp_path / "landing")
    bucket = request.getfixturevalue("s3_bucket")
    return S3LandingZone(bucket.name, "landing", bucket.client)


def drop(zone, key, data=b"x"):
    return zone.put_bytes(key, data if isinstance(data, bytes) else data.encode())


def test_listing_is_in_key_order_like_s3_and_honours_start_after(zone):
    keys = ["a/x-1", "a/x/b", "a/x/a", "a/x0", "a/w", "b/z"]
    for key in keys:
        drop(zone, key)
    listed = [o.key for o in zone.list_objects("a/")]
    assert listed == ["a/w", "a/x-1", "a/x/a", "a/x/b", "a/x0"]
    assert [o.key for o in zone.list_objects("a/", start_after="a/x/a")] == ["a/x/b", "a/x0"]
    assert [o.key for o in zone.list_objects("a/x")] == ["a/x-1", "a/x/a", "a/x/b", "a/x0"]
    assert [o.key for o in zone.list_objects("nothing/")] == []
    assert zone.listed_prefixes == ["a/", "a/", "a/x", "nothing/"]


def test_identical_content_has_the_same_etag_and_changed_content_another(zone):
    first = drop(zone, "p/one", b"same bytes")
    second = drop(zone, "p/two", b"same bytes")
    third = drop(zone, "p/three", b"other bytes")
    listed = {o.key: o for o in zone.list_objects("p/")}
    assert listed["p/one"].etag == listed["p/two"].etag == first.etag == second.etag
    assert listed["p/three"].etag == third.etag != first.etag
    assert listed["p/one"].size == 10
    assert listed["p/one"].last_modified.tzinfo is not None


def test_local_etag_is_the_sha256_of_the_content(tmp_path):
    zone = LocalLandingZone(tmp_path)
    obj = drop(zone, "k/file.json", b'{"a": 1}')
    assert obj.etag == hashlib.sha256(b'{"a": 1}').hexdigest()


def test_read_bytes_refuses_an_oversize_object_with_a_precise_error(zone):
    drop(zone, "big.bin", b"0123456789")
    assert zone.read_bytes("big.bin", max_bytes=10) == b"0123456789"
    with pytest.raises(LandingObjectTooLargeError, match="big.bin: 10 bytes exceeds the limit of 9 bytes"):
        zone.read_bytes("big.bin", max_bytes=9)


def test_missing_objects(zone):
    assert not zone.exists("nope/x")
    assert zone.stat("nope/x") is None
    with pytest.raises(FileNotFoundError, match="no landing object .*nope/x"):
        zone.read_bytes("nope/x", max_bytes=100)


def test_copy_to_quarantine_leaves_the_original(zone):
    drop(zone, RUN + "run.json", b"{bad json")
    copied = zone.copy(RUN + "run.json", "quarantine/" + RUN + "run.json")
    assert zone.read_bytes(RUN + "run.json", 100) == b"{bad json"
    assert zone.read_bytes(copied.key, 100) == b"{bad json"


@pytest.mark.parametrize(
    "key, code",
    [("../outside", "path_traversal"), ("runs/../../etc/passwd", "path_traversal"), ("/etc/passwd", "absolute_key"),
     ("C:\\x", "absolute_key"), ("runs\\x", "path_traversal"), ("runs//x", "bad_key"), ("", "bad_key")],
)
def test_unsafe_keys_are_refused_by_every_operation(zone, key, code):
    for operation in (lambda: zone.read_bytes(key, 10), lambda: zone.put_bytes(key, b"x"), lambda: zone.exists(key)):
        with pytest.raises(LandingKeyError) as caught:
            operation()
        assert caught.value.code == code


def test_a_symlink_cannot_lead_out_of_the_local_zone(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    zone = LocalLandingZone(tmp_path / "landing")
    (tmp_path / "landing").mkdir()
    os.symlink(secret, tmp_path / "landing" / "link.txt")
    with pytest.raises(LandingKeyError, match="outside the landing zone"):
        zone.read_bytes("link.txt", 100)


def test_date_prefixes_cover_today_and_the_look_back_oldest_first():
    assert date_prefixes("runs", TODAY, 2) == ["runs/2026-11-25/", "runs/2026-11-26/", "runs/2026-11-27/"]
    assert date_prefixes("snapshots", "2026-03-01", 0) == ["snapshots/2026-03-01/"]
    late_evening_new_york = dt.datetime(2026, 11, 27, 22, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    assert date_prefixes("runs", late_evening_new_york, 0) == ["runs/2026-11-28/"]
    with pytest.raises(ValueError):
        date_prefixes("policies", TODAY, 1)


def test_a_bundle_is_complete_only_once_run_json_exists(zone):
    drop(zone, RUN + "returns.parquet", b"r")
    drop(zone, RUN + "trades.csv", b"t")
    scan = find_run_bundles(zone, TODAY, 1)
    assert scan.bundles == [] and [b.prefix for b in scan.pending] == [RUN] and scan.rejections == []
    drop(zone, RUN + "run.json", b"{}")
    scan = find_run_bundles(zone, TODAY, 1)
    (bundle,) = scan.bundles
    assert bundle.partition_key == "alpha/mom/r1"
    assert bundle.returns_key == RUN + "returns.parquet"
    assert bundle.trades_key == RUN + "trades.csv"
    assert bundle.manifest_key == RUN + "run.json"
    assert scan.pending == []


def test_bundle_content_token_changes_only_with_content(zone):
    drop(zone, RUN + "returns.csv", b"date,ret\n2026-01-02,0.01\n")
    drop(zone, RUN + "run.json", b"{}")
    token = find_run_bundles(zone, TODAY, 0).bundles[0].content_token
    drop(zone, RUN + "returns.csv", b"date,ret\n2026-01-02,0.01\n")  # identical re-drop
    assert find_run_bundles(zone, TODAY, 0).bundles[0].content_token == token
    drop(zone, RUN + "returns.csv", b"date,ret\n2026-01-02,0.02\n")
    assert find_run_bundles(zone, TODAY, 0).bundles[0].content_token != token


def test_bad_drops_become_rejections_and_never_stop_the_scan(zone):
    good = "runs/2026-11-27/alpha/mom/good/"
    drop(zone, good + "returns.csv")
    drop(zone, good + "run.json")
    bad = {
        "runs/2026-11-27/al pha/mom/r1/run.json": "bad_identifier",
        "runs/2026-11-27/alpha/-mom/r1/run.json": "bad_identifier",
        "runs/2026-11-27/alpha/mom/run.json": "wrong_depth",
        "runs/2026-11-27/alpha/mom/r1/extra/run.json": "wrong_depth",
        "runs/2026-11-27/alpha/mom/r2/notes.txt": "unknown_file",
    }
    for key in bad:
        drop(zone, key)
    drop(zone, "runs/2026-11-27/alpha/mom/both/returns.csv")
    drop(zone, "runs/2026-11-27/alpha/mom/both/returns.parquet")
    drop(zone, "runs/2026-11-27/alpha/mom/both/run.json")
    drop(zone, "runs/2026-11-27/alpha/mom/noreturns/run.json")
    scan = find_run_bundles(zone, TODAY, 0)
    assert [b.partition_key for b in scan.bundles] == ["alpha/mom/good"]
    found = {r.key: r.code for r in scan.rejections}
    assert found == {
        **bad,
        "runs/2026-11-27/alpha/mom/both/": "ambiguous_returns",
        "runs/2026-11-27/alpha/mom/noreturns/": "missing_returns",
    }
    reasons = dict(scan.rejections)  # a rejection unpacks as (key, reason)
    assert reasons["runs/2026-11-27/al pha/mom/r1/run.json"].startswith("world_id 'al pha' is not a valid identifier")
    assert reasons["runs/2026-11-27/alpha/mom/noreturns/"] == "run.json present but no returns.parquet or returns.csv"
    for key in bad:  # nothing was moved or deleted
        assert zone.exists(key)


def test_s3_keys_with_traversal_are_rejected_not_followed(s3_bucket):
    zone = S3LandingZone(s3_bucket.name, "", s3_bucket.client)
    s3_bucket.put("runs/2026-11-27/alpha/../../etc/run.json", b"{}")
    s3_bucket.put("runs/2026-11-27/alpha/./mom/r1/run.json", b"{}")
    s3_bucket.put("runs/2026-11-27/alpha//r1/x/run.json", b"{}")
    scan = find_run_bundles(zone, TODAY, 0)
    assert {r.key: r.code for r in scan.rejections} == {
        "runs/2026-11-27/alpha/../../etc/run.json": "path_traversal",
        "runs/2026-11-27/alpha/./mom/r1/run.json": "path_traversal",
        "runs/2026-11-27/alpha//r1/x/run.json": "bad_key",
    }
    assert scan.bundles == []


def test_key_parsers_name_what_they_reject():
    assert parse_run_key(RUN + "run.json").run_id == "r1"
    with pytest.raises(LandingKeyError, match="date folder '2026-13-01' is not YYYY-MM-DD") as caught:
        parse_run_key("runs/2026-13-01/alpha/mom/r1/run.json")
    assert caught.value.code == "bad_date"
    with pytest.raises(LandingKeyError) as caught:
        parse_run_key("runs/2026-11-27/alpha/mom/..%2f/run.json")
    assert caught.value.code == "bad_identifier" and caught.value.fields["strategy_id"] == "mom"
    assert parse_snapshot_key("snapshots/2026-11-27/alpha/v1.2.json").version == "v1.2"
    assert parse_snapshot_key("snapshots/2026-11-27/alpha/cov.parquet").version is None
    assert parse_policy_key("policies/alpha/v10.yaml").policy_version == "v10"
    with pytest.raises(LandingKeyError, match="expected <policy_version>.yaml"):
        parse_policy_key("policies/alpha/v1.json")


def test_snapshots_are_found_with_their_parquet_neighbours(zone):
    drop(zone, "snapshots/2026-11-26/alpha/v1.json", b"{}")
    drop(zone, "snapshots/2026-11-27/alpha/v2.json", b"{}")
    drop(zone, "snapshots/2026-11-27/alpha/cov-v2.parquet", b"p")
    drop(zone, "snapshots/2026-11-27/beta/v1.json", b"{}")
    drop(zone, "snapshots/2026-11-27/beta/readme.txt", b"?")
    drop(zone, "snapshots/2026-11-20/alpha/v0.json", b"{}")  # outside the look-back
    scan = find_snapshots(zone, TODAY, 1)
    assert [s.partition_key for s in scan.snapshots] == ["alpha/v1", "alpha/v2", "beta/v1"]
    assert list(scan.snapshots[1].attachments) == ["cov-v2.parquet"]
    assert scan.snapshots[0].attachments == {}
    assert [(r.key, r.code) for r in scan.rejections] == [("snapshots/2026-11-27/beta/readme.txt", "unknown_file")]


def test_policies_in_natural_version_order_and_the_highest_is_current(zone):
    for version in ("v2", "v10", "v1"):
        drop(zone, f"policies/alpha/{version}.yaml", b"x: 1")
    drop(zone, "policies/beta/2026.1.yaml", b"x: 1")
    drop(zone, "policies/beta/2026.12.yml", b"x: 1")
    drop(zone, "policies/beta/notes.md", b"?")
    drop(zone, "policies/loose.yaml", b"?")
    scan = list_policies(zone)
    assert [(p.world_id, p.policy_version) for p in scan.policies] == [
        ("alpha", "v1"), ("alpha", "v2"), ("alpha", "v10"), ("beta", "2026.1"), ("beta", "2026.12"),
    ]
    assert {w: p.policy_version for w, p in scan.current().items()} == {"alpha": "v10", "beta": "2026.12"}
    assert {r.code for r in scan.rejections} == {"unknown_file", "wrong_depth"}
    assert [p.policy_version for p in list_policies(zone, "beta").policies] == ["2026.1", "2026.12"]
    assert version_sort_key("1.10") > version_sort_key("1.9")


def test_model_cards_by_strategy(zone):
    drop(zone, "model_cards/mom.yaml", b"name: mom")
    drop(zone, "model_cards/bad name.yaml", b"?")
    cards, rejections = list_model_cards(zone)
    assert list(cards) == ["mom"]
    assert [(r.key, r.code) for r in rejections] == [("model_cards/bad name.yaml", "bad_identifier")]


def test_rejections_fit_the_rejections_table(tmp_path, zone):
    drop(zone, "runs/2026-11-27/alpha/mom/r1/notes.txt", b"?")
    drop(zone, "runs/2026-11-27/al pha/mom/r1/run.json", b"?")
    scan = find_run_bundles(zone, TODAY, 0)
    detected = dt.datetime(2026, 11, 27, 12, tzinfo=dt.timezone.utc)
    rows = [r.as_row(detected, sensor="run_bundle_sensor") for r in scan.rejections]
    lake = Lake(tmp_path / "lake")
    lake.write_partitioned("rejections", rows, file_stem="tick-1")
    frame = lake.read("rejections").sort_values("key").reset_index(drop=True)
    assert list(frame["reason_code"]) == ["bad_identifier", "unknown_file"]
    assert frame.loc[0, "world_id"] is None and frame.loc[1, "world_id"] == "alpha"
    assert frame.loc[1, "run_id"] == "r1" and frame.loc[1, "size"] == 1
    assert set(frame["sensor"]) == {"run_bundle_sensor"}


def _local_old_objects(root, count):
    day = TODAY - dt.timedelta(days=30)
    for i in range(count):
        date = (day - dt.timedelta(days=i % 200)).isoformat()
        folder = root / "runs" / date / "alpha" / f"s{i % 7}" / f"r{i}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "returns.csv").write_bytes(b"date,ret\n")


def test_bounded_look_back_lists_only_its_prefixes_among_ten_thousand_old_objects(tmp_path):
    root = tmp_path / "landing"
    _local_old_objects(root, 10_000)
    zone = LocalLandingZone(root)
    drop(zone, RUN + "returns.csv")
    drop(zone, RUN + "run.json")
    started = time.perf_counter()
    scan = find_run_bundles(zone, TODAY, 2)
    elapsed = time.perf_counter() - started
    assert [b.partition_key for b in scan.bundles] == ["alpha/mom/r1"]
    assert zone.listed_prefixes == ["runs/2026-11-25/", "runs/2026-11-26/", "runs/2026-11-27/"]
    # One directory scan per folder inside the look-back: 3 date folders (two absent) + alpha/mom/r1.
    assert zone.list_calls == 6
    assert elapsed < 1.0


def test_s3_look_back_lists_only_its_prefixes_and_counts_every_page(s3_bucket):
    client = s3_bucket.client
    for i in range(300):  # old drops the scan must never list
        client.put_object(Bucket=s3_bucket.name, Key=f"landing/runs/2026-10-{1 + i % 28:02d}/alpha/s/r{i}/returns.csv", Body=b"x")
    zone = S3LandingZone(s3_bucket.name, "landing", client, page_size=2)
    for run in ("r1", "r2"):
        drop(zone, f"runs/2026-11-27/alpha/mom/{run}/returns.csv")
        drop(zone, f"runs/2026-11-27/alpha/mom/{run}/run.json")
    drop(zone, "runs/2026-11-26/alpha/mom/r0/returns.csv")
    scan = find_run_bundles(zone, TODAY, 2)
    assert [b.partition_key for b in scan.bundles] == ["alpha/mom/r1", "alpha/mom/r2"]
    assert zone.listed_prefixes == ["runs/2026-11-25/", "runs/2026-11-26/", "runs/2026-11-27/"]
    # 2026-11-25: 1 empty page; 2026-11-26: 1 page (1 key); 2026-11-27: 4 keys in pages of 2 → 2.
    assert zone.list_calls == 4
    assert scan.rejections == [] and [b.partition_key for b in scan.pending] == ["alpha/mom/r0"]


def test_zone_from_root_picks_the_implementation(tmp_path, s3_bucket):
    assert isinstance(landing_zone_from_root(tmp_path), LocalLandingZone)
    zone = landing_zone_from_root(s3_bucket.uri("landing"), client=s3_bucket.client)
    assert isinstance(zone, S3LandingZone) and zone.uri("runs/x") == f"s3://{s3_bucket.name}/landing/runs/x"
    drop(zone, "runs/x", b"1")
    assert s3_bucket.keys() == ["landing/runs/x"]


def _client_error(code: str, status: int):
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "GetObject")


def _transient_errors():
    from botocore.exceptions import (
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        IncompleteReadError,
        ReadTimeoutError,
        ResponseStreamingError,
    )

    url = "http://127.0.0.1:9/b/k"
    return [
        ReadTimeoutError(endpoint_url=url),
        ConnectTimeoutError(endpoint_url=url),
        EndpointConnectionError(endpoint_url=url),
        ConnectionClosedError(endpoint_url=url),
        ResponseStreamingError(error="cut off"),
        IncompleteReadError(actual_bytes=1, expected_bytes=2),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError("timed out"),
        _client_error("SlowDown", 503),
        _client_error("InternalError", 500),
        _client_error("RequestTimeout", 400),
        _client_error("TooManyRequestsException", 429),
        _client_error("Whatever", 502),
    ]


def _permanent_errors():
    return [
        OSError("Couldn't deserialize thrift: invalid TType"),  # pyarrow on a corrupt file
        FileNotFoundError("no landing object s3://b/k"),
        PermissionError(13, "Permission denied"),
        LandingObjectTooLargeError("k", 10, 5),
        ValueError("not JSON"),
        _client_error("AccessDenied", 403),
        _client_error("NoSuchKey", 404),
        _client_error("NotImplemented", 501),
    ]


@pytest.mark.parametrize("error", _transient_errors(), ids=lambda e: type(e).__name__)
def test_timeouts_dropped_connections_throttling_and_5xx_are_transient(error):
    assert is_transient_io_error(error)


@pytest.mark.parametrize("error", _permanent_errors(), ids=lambda e: type(e).__name__)
def test_bad_content_missing_objects_and_refusals_are_not_transient(error):
    assert not is_transient_io_error(error)
