"""Hostile drops in the landing zone: each is rejected with a precise reason and a ``rejections``
row, stays where it was dropped, is not looked at again, and never stops the good drops beside it.

Drops go through the intake the sensors run each tick (``take_in_run_bundles`` /
``take_in_snapshots`` + ``record_intake``), on a local folder and on S3 (moto); the last test runs
the whole mix through real sensor ticks. Policies with YAML bombs or Python tags go through the
policy sensor and through a run of their world, which falls back to backtest-only.
"""

import datetime as dt
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from qmtl_validation.sample_data import bundle_files, make_run_manifest, snapshot_files
from qmtl_validation.warehouse.intake import record_intake, take_in_run_bundles
from qmtl_validation.warehouse.lake import Lake
from qmtl_validation.warehouse.landing import LocalLandingZone, S3LandingZone
from qmtl_validation.warehouse.queries import latest_rows
from qmtl_validation.warehouse.snapshot_intake import take_in_snapshots
from qmtl_validation_tests.dagster_harness import Drops, policy_file

NOW = dt.datetime(2026, 11, 27, 15, 0, tzinfo=dt.timezone.utc)
TODAY = NOW.date()
DAY = TODAY.isoformat()
WORLD = "beta_growth"


# ---------------------------------------------------------------------------------------------
# Helpers


def returns_frame(n: int = 120, seed: int = 1) -> pd.DataFrame:
    dates = pd.bdate_range(end=TODAY - dt.timedelta(days=1), periods=n).date
    return pd.DataFrame({"date": dates, "ret": np.random.default_rng(seed).normal(0.0005, 0.01, n)})


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink)
    return sink.getvalue().to_pybytes()


def good_bundle(strategy: str, run: str, seed: int = 1) -> list[tuple[str, bytes]]:
    manifest = make_run_manifest(WORLD, strategy, run, submitted_at=NOW - dt.timedelta(hours=1))
    return bundle_files(manifest, returns_frame(seed=seed), drop_date=TODAY)


def bundle_with(run: str, *, manifest: bytes | None = None, returns: bytes | None = None,
                returns_name: str = "returns.parquet", trades: bytes | None = None,
                trades_name: str = "trades.parquet") -> list[tuple[str, bytes]]:
    """A bundle of strategy ``hostile`` whose files are replaced by the given raw bytes."""
    prefix = f"runs/{DAY}/{WORLD}/hostile/{run}"
    default_manifest = json.dumps(
        make_run_manifest(WORLD, "hostile", run, submitted_at=NOW - dt.timedelta(hours=1))
    ).encode()
    files = [(f"{prefix}/{returns_name}", returns if returns is not None else parquet_bytes(returns_frame()))]
    if trades is not None:
        files.append((f"{prefix}/{trades_name}", trades))
    files.append((f"{prefix}/run.json", manifest if manifest is not None else default_manifest))
    return files


def manifest_text(run: str, **replacements: str) -> bytes:
    """run.json text with some values replaced by raw JSON text (e.g. ``NaN``, ``1e999``)."""
    document = make_run_manifest(WORLD, "hostile", run, submitted_at=NOW - dt.timedelta(hours=1),
                                 trial_sharpes=[0.05, 0.07], complexity={"n_parameters": 3, "n_features": 5},
                                 capital=1e7, extra_metrics={"turnover": 1.5})
    marked = {}
    for path, raw in replacements.items():
        marker = f"@@{path}@@"
        node = document
        *parents, leaf = path.split(".")
        for name in parents:
            node = node[name]
        if isinstance(node, list) or leaf.isdigit():
            node[int(leaf)] = marker
        else:
            node[leaf] = marker
        marked[f'"{marker}"'] = raw
    text = json.dumps(document)
    for marker, raw in marked.items():
        text = text.replace(marker, raw)
    return text.encode()


def take_in(zone, lake):
    intake = take_in_run_bundles(zone, lake, today=TODAY, lookback_days=2, now=NOW, max_bundles=1000)
    record_intake(lake, intake, now=NOW, file_label="hostile")
    return intake


def rejection_rows(lake) -> pd.DataFrame:
    return latest_rows(lake, "rejections", latest=False)


def reasons_by_key(lake) -> dict[str, tuple[str, str]]:
    rows = rejection_rows(lake)
    return {key: (code, reason) for key, code, reason in zip(rows["key"], rows["reason_code"], rows["reason"])}


@pytest.fixture
def local(tmp_path):
    landing = tmp_path / "landing"
    drops = Drops(str(landing))
    drops.put(good_bundle("mom_fast", "good-001"))
    return LocalLandingZone(landing), Lake(tmp_path / "lake"), drops, landing


def assert_processing_went_on(intake, lake, *good_keys: str) -> None:
    registered = latest_rows(lake, "landing_registry", latest=False)
    assert sorted(registered["partition_key"]) == sorted(good_keys or [f"{WORLD}/mom_fast/good-001"])
    assert sorted(intake.partition_keys) == sorted(good_keys or [f"{WORLD}/mom_fast/good-001"])


# ---------------------------------------------------------------------------------------------
# Keys


HOSTILE_KEYS = {
    f"runs/{DAY}/../../secrets/x/run.json": "path_traversal",
    f"runs/{DAY}/{WORLD}/s1/r1/../../../../etc/run.json": "path_traversal",
    f"runs/{DAY}/{WORLD}\\..\\x/s1/r1/run.json": "path_traversal",
    f"runs/{DAY}/w\u00f6rld/s1/r1/run.json": "bad_identifier",
    f"runs/{DAY}/{WORLD}/-dash/r1/run.json": "bad_identifier",
    f"runs/{DAY}/{WORLD}/s p a c e/r1/run.json": "bad_identifier",
    f"runs/{DAY}/{WORLD}/s1/{'r' * 129}/run.json": "bad_identifier",
    f"runs/{DAY}/{WORLD}/s1,comma/r1/run.json": "bad_identifier",
    f"runs/{DAY}/{WORLD}/s1/r1/run.json/extra": "wrong_depth",
    f"runs/{DAY}/{WORLD}/s1/r1/payload.sh": "unknown_file",
    f"runs/{DAY}/{WORLD}//r1/run.json": "bad_key",
    f"runs/{DAY}/{WORLD}/s1/r\x07/run.json": "bad_key",
}


def test_hostile_keys_on_s3_are_rejected_one_by_one_and_stay_in_the_bucket(s3_bucket):
    zone = S3LandingZone(s3_bucket.name, "landing", s3_bucket.client)
    lake = Lake(s3_bucket.uri("lake"), s3_client=s3_bucket.client, endpoint_url=s3_bucket.server.url)
    Drops(s3_bucket.uri("landing"), s3_bucket.client).put(good_bundle("mom_fast", "good-001"))
    for key in HOSTILE_KEYS:
        s3_bucket.put(f"landing/{key}", b'{"world_id": "x"}')

    intake = take_in(zone, lake)
    assert_processing_went_on(intake, lake)
    found = reasons_by_key(lake)
    for key, code in HOSTILE_KEYS.items():
        assert key in found, key
        assert found[key][0] == code, (key, found[key])
    assert "path traversal" in found[f"runs/{DAY}/../../secrets/x/run.json"][1]
    assert "129" in found[f"runs/{DAY}/{WORLD}/s1/{'r' * 129}/run.json"][1] or "identifier" in found[
        f"runs/{DAY}/{WORLD}/s1/{'r' * 129}/run.json"][1]
    landing_keys = set(s3_bucket.keys("landing/"))
    assert all(f"landing/{key}" in landing_keys for key in HOSTILE_KEYS)  # quarantined in place

    # The next tick records nothing again and registers nothing again.
    again = take_in(zone, lake)
    assert again.rejections == [] and again.registered == []
    assert len(rejection_rows(lake)) == len(HOSTILE_KEYS)


def test_a_symlink_out_of_the_local_landing_zone_is_never_followed(local, tmp_path):
    zone, lake, drops, landing = local
    secret = tmp_path / "secret.json"
    secret.write_text('{"password": "hunter2"}')
    folder = landing / "runs" / DAY / WORLD / "linked" / "r1"
    folder.mkdir(parents=True)
    (folder / "returns.parquet").write_bytes(parquet_bytes(returns_frame()))
    os.symlink(secret, folder / "run.json")
    (landing / "runs" / DAY / WORLD / "escape").symlink_to(tmp_path, target_is_directory=True)

    intake = take_in(zone, lake)
    assert_processing_went_on(intake, lake)
    # Symlinks are never listed, so nothing outside the zone is read, nothing is registered.
    assert all("linked" not in k and "escape" not in k for k in intake.partition_keys)
    with pytest.raises(Exception) as refused:
        zone.read_bytes(f"runs/{DAY}/{WORLD}/escape/secret.json", 1000)
    assert "outside the landing zone" in str(refused.value)


# ---------------------------------------------------------------------------------------------
# Sizes and shapes


def test_oversize_files_are_rejected_without_being_read(local):
    zone, lake, drops, landing = local
    padding = "x" * (5 * 1024 * 1024)
    drops.put(bundle_with("big-json", manifest=manifest_text("big-json", returns_source=json.dumps(padding))))
    drops.put(bundle_with("big-returns"))
    huge = landing / "runs" / DAY / WORLD / "hostile" / "big-returns" / "returns.parquet"
    with open(huge, "r+b") as handle:  # a sparse 600 MB file: costs no disk, exceeds the cap
        handle.truncate(600 * 1024 * 1024)

    intake = take_in(zone, lake)
    assert_processing_went_on(intake, lake)
    found = reasons_by_key(lake)
    code, reason = found[f"runs/{DAY}/{WORLD}/hostile/big-json/"]
    assert code == "oversize"
    assert reason.endswith("big-json/run.json: 5243226 bytes exceeds the limit of 5242880 bytes"), reason
    code, reason = found[f"runs/{DAY}/{WORLD}/hostile/big-returns/"]
    assert code == "oversize"
    assert reason.endswith("big-returns/returns.parquet: 629145600 bytes exceeds the limit of 536870912 bytes"), reason
    assert huge.stat().st_size == 600 * 1024 * 1024


def test_deeply_nested_json_is_rejected_without_recursion(local):
    zone, lake, drops, _ = local
    depth = 200_000
    bomb = ('{"world_id": "beta_growth", "extra_metrics": ' + "[" * depth + "]" * depth + "}").encode()
    drops.put(bundle_with("nested", manifest=bomb))
    intake = take_in(zone, lake)
    assert_processing_went_on(intake, lake)
    code, reason = reasons_by_key(lake)[f"runs/{DAY}/{WORLD}/hostile/nested/"]
    assert code == "contract_violation" and "nests deeper than 32 levels" in reason


def test_text_that_is_not_utf8_is_rejected_with_the_offending_byte(local):
    zone, lake, drops, _ = local
    latin = manifest_text("latin1").replace(b'"turnover"', '"turnov\u00e9r"'.encode("latin-1"))
    drops.put(bundle_with("latin1", manifest=latin))
    csv16 = "date,ret\n2026-11-25,0.01\n2026-11-26,0.02\n".encode("utf-16")
    drops.put(bundle_with("utf16", returns=csv16, returns_name="returns.csv"))
    intake = take_in(zone, lake)
    assert_processing_went_on(intake, lake)
    found = reasons_by_key(lake)
    assert "run.json" in found[f"runs/{DAY}/{WORLD}/hostile/latin1/"][1]
    assert "is not UTF-8 text: byte 0xe9" in found[f"runs/{DAY}/{WORLD}/hostile/latin1/"][1]
    assert "returns.csv: is not UTF-8 text: byte 0xff at offset 0" in found[f"runs/{DAY}/{WORLD}/hostile/utf16/"][1]


# ---------------------------------------------------------------------------------------------
# Numbers


NUMERIC_MANIFEST_FIELDS = ("search_intensity", "trial_sharpes.0", "complexity.n_parameters",
                           "complexity.n_features", "capital", "extra_metrics.turnover")
NON_FINITE = {"NaN": "NaN is not valid JSON", "Infinity": "Infinity is not valid JSON",
              "-Infinity": "-Infinity is not valid JSON", "1e999": "number 1e999 is out of range"}


def test_nan_and_inf_in_every_numeric_field_of_run_json_are_rejected(local):
    zone, lake, drops, _ = local
    expected = {}
    for f, field in enumerate(NUMERIC_MANIFEST_FIELDS):
        for t, (token, message) in enumerate(NON_FINITE.items()):
            run = f"nf-{f}-{t}"
            drops.put(bundle_with(run, manifest=manifest_text(run, **{field: token})))
            expected[f"runs/{DAY}/{WORLD}/hostile/{run}/"] = message
    intake = take_in(zone, lake)
    assert_processing_went_on(intake, lake)
    found = reasons_by_key(lake)
    for key, message in expected.items():
        code, reason = found[key]
        assert code == "contract_violation" and message in reason and "run.json" in reason, (key, reason)


def test_nan_and_inf_in_every_numeric_column_of_returns_and_trades_are_rejected(local):
    zone, lake, drops, _ = local
    frame = returns_frame()
    trades = pd.DataFrame({
        "ts": pd.to_datetime(["2026-11-20T10:00:00Z", "2026-11-21T10:00:00Z"]),
        "symbol": ["AAA", "BBB"], "side": ["buy", "sell"], "qty": [10.0, -5.0], "price": [100.0, 101.0],
        "notional": [1000.0, -505.0], "adv_notional": [1e6, 2e6], "bar_volume": [1e4, 2e4],
    })
    expected = {}
    for column in ("ret", "benchmark_ret"):
        for value in (math.nan, math.inf, -math.inf):
            run = f"ret-{column}-{value}".replace("_", "").replace(".", "")
            bad = frame.assign(benchmark_ret=0.001)
            bad.loc[7, column] = value
            drops.put(bundle_with(run, returns=parquet_bytes(bad)))
            expected[f"runs/{DAY}/{WORLD}/hostile/{run}/"] = ("returns.parquet", column)
    for column in ("qty", "price", "notional", "adv_notional", "bar_volume"):
        for value in (math.nan, math.inf):
            run = f"trd-{column}-{value}".replace("_", "").replace(".", "")
            bad = trades.copy()
            bad.loc[1, column] = value
            drops.put(bundle_with(run, trades=parquet_bytes(bad)))
            expected[f"runs/{DAY}/{WORLD}/hostile/{run}/"] = ("trades.parquet", column)
    intake = take_in(zone, lake)
    assert_processing_went_on(intake, lake)
    found = reasons_by_key(lake)
    for key, (file_name, column) in expected.items():
        code, reason = found[key]
        assert code == "contract_violation" and file_name in reason and column in reason, (key, reason)


def test_wrong_types_in_every_field_are_all_named(local):
    zone, lake, drops, _ = local
    wrong = {
        "world_id": 7, "strategy_id": ["hostile"], "run_id": {"id": 1}, "stage": 3, "risk_tier": True,
        "submitted_at": 1732713600, "model_card_version": 1.5, "search_intensity": "ten",
        "trial_sharpes": "0.1,0.2", "campaign_id": [], "complexity": [1, 2], "capital": "1e7",
        "returns_source": 42, "extra_metrics": [1, 2, 3],
    }
    drops.put(bundle_with("types", manifest=json.dumps(wrong).encode()))
    text_returns = pd.DataFrame({"date": ["yesterday", "today"], "ret": ["one", "two"]})
    drops.put(bundle_with("types-returns", returns=parquet_bytes(text_returns)))
    intake = take_in(zone, lake)
    assert_processing_went_on(intake, lake)
    found = reasons_by_key(lake)
    code, reason = found[f"runs/{DAY}/{WORLD}/hostile/types/"]
    assert code == "contract_violation"
    for field in wrong:
        assert field in reason, (field, reason)
    code, reason = found[f"runs/{DAY}/{WORLD}/hostile/types-returns/"]
    assert code == "contract_violation" and "returns.parquet" in reason and ("date" in reason or "ret" in reason)


# ---------------------------------------------------------------------------------------------
# Snapshots


def snapshot(version: str, **changes) -> dict:
    payload = {
        "world_id": WORLD, "as_of": "2026-11-27T14:59:00Z", "version": version,
        "weights": {"s1": 0.6, "s2": 0.4},
        "covariance": {"s1,s1": 1e-4, "s1,s2": 2e-5, "s2,s2": 1.5e-4},
        "realized_returns": {"s1": [0.01, -0.02, 0.003], "s2": [0.0, 0.01, -0.01]},
        "stress": {"crash_2008": {"max_drawdown": 0.2, "var_99": 0.04, "es_99": 0.05}},
        "constraints": {"candidate_weight": 0.1},
        "provenance": {"actor": "risk-engine", "stage": "paper", "source": "unit"},
        "ttl_sec": 3600,
    }
    payload.update(changes)
    return payload


def snapshot_text(version: str, path: str, raw: str) -> bytes:
    document = snapshot(version)
    node = document
    *parents, leaf = path.split(".")
    for name in parents:
        node = node[int(name)] if isinstance(node, list) else node[name]
    if isinstance(node, list):
        node[int(leaf)] = "@@X@@"
    else:
        node[leaf] = "@@X@@"
    return json.dumps(document).replace('"@@X@@"', raw).encode()


def take_in_snaps(zone, lake):
    intake = take_in_snapshots(zone, lake, today=TODAY, lookback_days=2, now=NOW, max_snapshots=1000)
    record_intake(lake, intake, now=NOW, file_label="hostile-snapshots")
    return intake


SNAPSHOT_NUMERIC_FIELDS = ("weights.s1", "covariance.s1,s2", "realized_returns.s1.1", "stress.crash_2008.var_99",
                           "stress.crash_2008.max_drawdown", "constraints.candidate_weight", "ttl_sec")


def test_hostile_snapshots_are_rejected_and_a_good_one_beside_them_is_taken_in(local):
    zone, lake, drops, landing = local
    folder = f"snapshots/{DAY}/{WORLD}"
    drops.put(snapshot_files(snapshot("v0001"), drop_date=TODAY))
    expected: dict[str, tuple[str, str]] = {}

    n = 2
    for field in SNAPSHOT_NUMERIC_FIELDS:  # NaN / inf in every numeric field
        for token, message in NON_FINITE.items():
            version = f"v{n:04d}"
            drops.put([(f"{folder}/{version}.json", snapshot_text(version, field, token))])
            expected[f"{folder}/{version}.json"] = ("invalid_json", message)
            n += 1
    depth = 100_000
    drops.put([(f"{folder}/v0900.json", ("{" + '"a":' * 1 + "[" * depth + "]" * depth + "}").encode())])
    expected[f"{folder}/v0900.json"] = ("invalid_json", "nests deeper than 32 levels")
    drops.put([(f"{folder}/v0901.json", json.dumps(snapshot("v0901")).encode("utf-16"))])
    expected[f"{folder}/v0901.json"] = ("invalid_json", "is not UTF-8 text")
    wrong = snapshot("v0902", weights=["s1", "s2"], as_of=20261127, ttl_sec="an hour", provenance="me")
    drops.put([(f"{folder}/v0902.json", json.dumps(wrong).encode())])
    expected[f"{folder}/v0902.json"] = ("contract_violation", "as_of")
    many = {f"s{i}": 1.0 / 2501 for i in range(2501)}
    drops.put([(f"{folder}/v0903.json", json.dumps(snapshot("v0903", weights=many, covariance=None)).encode())])
    expected[f"{folder}/v0903.json"] = ("contract_violation", "weights has 2501 strategies, more than the limit of 2000")
    traversal = snapshot("v0904", covariance_ref="../../../../etc/passwd")
    traversal.pop("covariance")
    drops.put([(f"{folder}/v0904.json", json.dumps(traversal).encode())])
    expected[f"{folder}/v0904.json"] = ("contract_violation", "covariance_ref '../../../../etc/passwd': path traversal")
    # Huge covariance: a referenced file with more than a million entries.
    names = [f"s{i}" for i in range(1001)]
    grid = pd.DataFrame({"strategy_a": np.repeat(names, 1001), "strategy_b": np.tile(names, 1001),
                         "covariance": 1e-4})
    huge = snapshot("v0905", covariance_ref="v0905.covariance.parquet")
    huge.pop("covariance")
    drops.put([(f"{folder}/v0905.covariance.parquet", parquet_bytes(grid)),
               (f"{folder}/v0905.json", json.dumps(huge).encode())])
    expected[f"{folder}/v0905.json"] = ("contract_violation", "covariance_ref has 1002001 entries, more than the limit of 1000000")
    # Non-finite numbers inside a referenced covariance file.
    bad_grid = pd.DataFrame({"strategy_a": ["s1", "s1", "s2"], "strategy_b": ["s1", "s2", "s2"],
                             "covariance": [1e-4, math.nan, 1.5e-4]})
    ref = snapshot("v0906", covariance_ref="v0906.covariance.parquet")
    ref.pop("covariance")
    drops.put([(f"{folder}/v0906.covariance.parquet", parquet_bytes(bad_grid)),
               (f"{folder}/v0906.json", json.dumps(ref).encode())])
    expected[f"{folder}/v0906.json"] = ("contract_violation", "covariance_ref holds null values")
    inf_grid = bad_grid.assign(covariance=[1e-4, math.inf, 1.5e-4])
    ref = dict(ref, version="v0907", covariance_ref="v0907.covariance.parquet")
    drops.put([(f"{folder}/v0907.covariance.parquet", parquet_bytes(inf_grid)),
               (f"{folder}/v0907.json", json.dumps(ref).encode())])
    expected[f"{folder}/v0907.json"] = ("contract_violation", "covariance[s1,s2] must be a finite number")

    intake = take_in_snaps(zone, lake)
    assert intake.partition_keys == [f"{WORLD}/v0001"]
    found = reasons_by_key(lake)
    for key, (code, message) in expected.items():
        assert key in found, key
        got_code, reason = found[key]
        assert (got_code, message in reason) == (code, True), (key, got_code, reason)
    assert Path(landing / f"{folder}/v0904.json").exists()
    again = take_in_snaps(zone, lake)
    assert again.rejections == [] and again.registered == []


@pytest.mark.slow
def test_a_tick_over_hostile_drops_rejects_them_and_launches_only_the_good_runs(tmp_path, monkeypatch):
    """The same drops through real sensor ticks: the tick succeeds, logs one warning per rejected
    drop, requests runs for the good bundles only, and the next tick adds nothing."""
    from dagster._core.test_utils import instance_for_test

    from qmtl_validation_tests.dagster_harness import (
        daemon_workspace, deployment, partition_keys_of, sensor_environment, set_clock, tick_sensor,
    )
    from qmtl_validation_tests.prod.daemons import reap_code_servers

    deploy = deployment(tmp_path, monkeypatch)
    drops = Drops(deploy.settings.landing_root)
    drops.put([policy_file(WORLD, 1)] + good_bundle("mom_fast", "good-001") + good_bundle("mom_slow", "good-002", 2))
    drops.put(bundle_with("nested", manifest=b"[" * 50_000 + b"]" * 50_000))
    drops.put(bundle_with("nan", manifest=manifest_text("nan", capital="NaN")))
    drops.put(bundle_with("types", manifest=json.dumps({"world_id": 7, "stage": ["x"]}).encode()))
    Path(deploy.settings.landing_root, "runs", DAY, "w\u00f6rld", "s1", "r1").mkdir(parents=True)
    Path(deploy.settings.landing_root, "runs", DAY, "w\u00f6rld", "s1", "r1", "run.json").write_text("{}")
    clock = tmp_path / "clock.txt"
    set_clock(clock, NOW)
    sensor_environment(monkeypatch, clock)
    try:
        with instance_for_test() as instance, daemon_workspace(instance) as context:
            tick = tick_sensor(context, instance, "run_bundle_sensor")
            assert tick.status == "SUCCESS" and tick.error is None, tick.error
            order = instance.get_dynamic_partitions("evaluation_runs")
            assert sorted(key for r in tick.runs for key in partition_keys_of(r, order)) == [
                f"{WORLD}/mom_fast/good-001", f"{WORLD}/mom_slow/good-002"
            ]
            assert tick.cursor["rejected"] == 4
            warned = " ".join(tick.warnings())
            for needle in ("hostile/nested/", "hostile/nan/", "hostile/types/", "w\u00f6rld"):
                assert needle in warned, (needle, warned)
            again = tick_sensor(context, instance, "run_bundle_sensor")
            assert again.run_ids == () and again.cursor["rejected"] == 0 and again.warnings() == []
    finally:
        reap_code_servers()
    lake = Lake(deploy.settings.lake_root)
    assert len(rejection_rows(lake)) == 4
    assert sorted(latest_rows(lake, "landing_registry", latest=False)["partition_key"]) == [
        f"{WORLD}/mom_fast/good-001", f"{WORLD}/mom_slow/good-002"
    ]


# ---------------------------------------------------------------------------------------------
# Policies


BILLION_LAUGHS = """
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def python_tag_policy(marker: Path) -> str:
    return f'validation_profiles: !!python/object/apply:os.system ["touch {marker}"]\n'


@pytest.fixture
def refused_policies(tmp_path, monkeypatch):
    """A world whose only policy versions are an alias bomb and a Python-tag payload, a sound
    world beside it, and one bundle of the first world; the policy sensor has ticked twice."""
    import dagster as dg

    from qmtl_validation.defs.governance.sensors import policy_change_sensor
    from qmtl_validation.defs.resources import LandingZoneResource, WarehouseResource
    from qmtl_validation_tests.dagster_harness import deployment

    deploy = deployment(tmp_path, monkeypatch)
    drops = Drops(deploy.settings.landing_root)
    marker = tmp_path / "executed"
    drops.put([(f"policies/{WORLD}/1.yaml", BILLION_LAUGHS.encode()),
               (f"policies/{WORLD}/2.yaml", python_tag_policy(marker).encode()),
               policy_file("alpha_core", 1, "alpha_core")])
    drops.put(good_bundle("mom_fast", "good-001"))
    instance = dg.DagsterInstance.ephemeral()
    resources = {"landing": LandingZoneResource(), "warehouse": WarehouseResource()}
    for cursor in (None, "{}"):  # the baseline tick, then a tick that would apply new versions
        with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
            policy_change_sensor(context)
    return deploy, instance, marker


def test_policy_bombs_and_python_tags_are_refused_by_the_policy_sensor(refused_policies):
    deploy, _, marker = refused_policies
    lake = Lake(deploy.settings.lake_root)
    versions = latest_rows(lake, "policy_versions", latest=False)
    refused = versions[versions["world_id"] == WORLD].set_index("policy_version")
    assert set(refused["status"]) == {"rejected"}
    assert "alias bomb" in refused.loc["1", "error"]
    assert "python/object/apply:os.system" in refused.loc["2", "error"]
    assert set(versions.loc[versions["world_id"] == "alpha_core", "status"]) == {"applied"}
    rejections = rejection_rows(lake)
    policy_rejections = rejections[rejections["kind"] == "policy"]
    assert sorted(policy_rejections["key"]) == [f"policies/{WORLD}/1.yaml", f"policies/{WORLD}/2.yaml"]
    assert set(policy_rejections["reason_code"]) == {"policy_invalid"}
    assert not marker.exists()  # the Python tag was never executed


def test_a_world_whose_policies_are_refused_validates_its_runs_as_backtest_only(refused_policies):
    from qmtl_validation.defs.pipeline import materialize_runs, register_run_partitions

    deploy, instance, marker = refused_policies
    keys, _ = register_run_partitions(instance, deploy.settings, today=TODAY, lookback_days=2)
    result = materialize_runs(instance, keys, log_level="INFO", raise_on_error=False)
    assert result.success
    lake = Lake(deploy.settings.lake_root)
    history = latest_rows(lake, "evaluation_run_history", latest=False)
    assert history["status"].tolist() == ["fail"]
    assert history["recommended_stage"].tolist() == ["backtest_only"]
    assert history["policy_version"].isna().all()
    # The run says why: one failing `policy` result naming the refused policy file.
    (payload,) = [json.loads(text) for text in history["payload_json"]]
    assert list(payload["validation"]["results"]) == ["policy"]
    note = payload["validation"]["results"]["policy"]
    assert (note["status"], note["severity"], note["reason_code"]) == ("fail", "blocking", "policy_unavailable")
    assert f"policies/{WORLD}/2.yaml" in note["reason"] and "no valid policy" in note["reason"]
    rules = latest_rows(lake, "rule_results", latest=False)
    assert rules[["rule", "status", "run_status", "recommended_stage"]].values.tolist() == [
        ["policy", "fail", "fail", "backtest_only"]
    ]
    logs = [r.user_message for r in instance.all_logs(result.run_id) if r.level >= 30]
    assert any("evaluated without a policy (backtest_only)" in line for line in logs), logs
    assert not marker.exists()
