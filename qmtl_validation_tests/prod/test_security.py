"""Security: who may submit risk snapshots (allow-list, signatures for worlds with a key), and the
tamper-evident logs (override log, events outbox) with the verifier that finds the first broken
link. (That no secret reaches the lake, the instance database or any log is proved end to end by
``e2e/test_prod_smoke.py``.)"""

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from qmtl_validation.cli import main
from qmtl_validation.core.events import cloud_event
from qmtl_validation.sample_data import render_policy, snapshot_files
from qmtl_validation.warehouse.intake import record_intake
from qmtl_validation.warehouse.lake import Lake
from qmtl_validation.warehouse.landing import LocalLandingZone
from qmtl_validation.warehouse.outbox import append_events, chain_files
from qmtl_validation.warehouse.queries import latest_rows
from qmtl_validation.warehouse.snapshot_intake import take_in_snapshots
from qmtl_validation_tests.dagster_harness import Drops

NOW = dt.datetime(2026, 11, 27, 15, 0, tzinfo=dt.timezone.utc)
TODAY = NOW.date()
WORLD = "beta_growth"
KEY_ENV = "QMTL_TEST_SNAPSHOT_KEY"
SIGNING_KEY = "s3cr3t-signing-key-\u00e9"  # non-ASCII on purpose: the key is used as UTF-8


def signed_world_policy() -> tuple[str, bytes]:
    text = render_policy(WORLD, 1)
    assert "  - gateway\n" in text  # allowed_producers: [risk-engine, gateway]
    return f"policies/{WORLD}/1.yaml", text.replace("  - gateway\n", f"  - gateway\n  signing_key_env: {KEY_ENV}\n", 1).encode()


def payload(version: str, actor: str = "risk-engine", **changes) -> dict:
    document = {
        "world_id": WORLD, "as_of": "2026-11-27T14:59:00Z", "version": version,
        "weights": {"s1": 0.6, "s2": 0.4},
        "covariance": {"s1,s1": 1e-4, "s1,s2": 2e-5, "s2,s2": 1.5e-4},
        "provenance": {"actor": actor, "stage": "paper", "source": "unit"},
        "ttl_sec": 3600,
    }
    document.update(changes)
    return document


def json_of(files) -> dict:
    return json.loads(files[-1][1])


def drop(drops, version: str, document: dict) -> None:
    drops.put([(f"snapshots/{TODAY}/{WORLD}/{version}.json", json.dumps(document).encode())])


def take_in(zone, lake, environ, label):
    intake = take_in_snapshots(zone, lake, today=TODAY, lookback_days=1, now=NOW, environ=environ)
    record_intake(lake, intake, now=NOW, file_label=label)
    return intake


def test_only_allowed_producers_with_valid_signatures_get_in(tmp_path):
    landing = tmp_path / "landing"
    drops = Drops(str(landing))
    drops.put([signed_world_policy()])
    zone, lake = LocalLandingZone(landing), Lake(tmp_path / "lake")

    drops.put(snapshot_files(payload("v0001"), drop_date=TODAY, signing_key=SIGNING_KEY))  # the good one
    drop(drops, "v0002", payload("v0002"))  # unsigned
    drop(drops, "v0003", json_of(snapshot_files(payload("v0003"), signing_key="another key")))
    drop(drops, "v0004", json_of(snapshot_files(payload("v0004", actor="intruder"), signing_key=SIGNING_KEY)))
    forged = json_of(snapshot_files(payload("v0005"), signing_key=SIGNING_KEY))
    forged["weights"] = {"s1": 0.1, "s2": 0.9}  # changed after signing
    drop(drops, "v0005", forged)
    wrong_hash = json_of(snapshot_files(payload("v0006"), signing_key=SIGNING_KEY))
    wrong_hash["hash"] = "sha256:" + "0" * 64
    drop(drops, "v0006", wrong_hash)

    # Without the key in the environment nothing of the world is accepted, and nothing is lost:
    # the drops are looked at again once the key is there.
    waiting = take_in(zone, lake, environ={}, label="tick-1")
    assert waiting.registered == []
    assert {r["reason_code"] for r in waiting.rejections} == {"signing_key_unavailable"}
    assert all(KEY_ENV in r["reason"] for r in waiting.rejections)

    intake = take_in(zone, lake, environ={KEY_ENV: SIGNING_KEY}, label="tick-2")
    assert intake.partition_keys == [f"{WORLD}/v0001"]
    reasons = {r["version"]: r["reason"] for r in intake.rejections}
    assert set(reasons) == {"v0002", "v0003", "v0004", "v0005", "v0006"}
    assert "signature" in reasons["v0002"].lower()
    assert "signature" in reasons["v0003"].lower()
    assert "intruder" in reasons["v0004"] and "allow" in reasons["v0004"].lower()
    assert "signature" in reasons["v0005"].lower()
    assert "hash" in reasons["v0006"].lower()
    # The key itself is never written anywhere.
    lake_bytes = b"".join(p.read_bytes() for p in Path(lake.root).rglob("*.parquet"))
    assert SIGNING_KEY.encode() not in lake_bytes
    assert all(SIGNING_KEY not in r["reason"] for r in intake.rejections)
    rows = latest_rows(lake, "rejections", latest=False)
    assert sorted(rows.loc[rows["reason_code"] != "signing_key_unavailable", "version"]) == [
        "v0002", "v0003", "v0004", "v0005", "v0006"
    ]


def test_a_tampered_override_row_is_found_by_the_verifier(tmp_path, capsys):
    log = tmp_path / "overrides.jsonl"
    for run in ("run-1", "run-2", "run-3"):
        assert main(["override", "--world", WORLD, "--strategy", "mom", "--run", run, "--status", "approved",
                     "--reason", "capacity checked by hand", "--actor", "risk.officer",
                     "--timestamp", "2026-11-20T09:00:00Z", "--log", str(log)]) == 0
    capsys.readouterr()
    assert main(["verify-log", str(log)]) == 0
    lines = log.read_text(encoding="utf-8").splitlines()
    row = json.loads(lines[1])
    row["override_actor"] = "someone.else"  # the edit an attacker would make
    lines[1] = json.dumps(row)
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["verify-log", str(log)]) == 1
    out = capsys.readouterr().out
    assert out == f"BROKEN: {log}: entry 2 of 3: row_hash does not match the entry's content (the entry was edited)\n"


def _events(lake: Lake) -> None:
    for batch in range(3):
        append_events(lake, [
            cloud_event("evaluation_run_created", world_id=world, subject=f"{world}/s/r{batch}-{i}",
                        data={"status": "pass", "i": i}, idempotency_key=f"{world}:{batch}:{i}",
                        time=NOW + dt.timedelta(minutes=batch))
            for world in (WORLD, "alpha_core") for i in range(2)
        ])


def test_a_tampered_event_row_is_found_by_the_verifier(tmp_path, capsys):
    lake = Lake(tmp_path / "lake")
    _events(lake)
    assert main(["verify-log", "--events", "--lake", str(lake.root)]) == 0
    out = capsys.readouterr().out
    assert out.count("chain intact") == 2 and f"events of world {WORLD}: 6 events in 3 files" in out

    target = Path(chain_files(lake, WORLD)[1])
    table = pq.read_table(target)
    rows = table.to_pylist()
    rows[0]["data_json"] = json.dumps({"status": "fail", "i": 0})  # a rewritten decision
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), target)

    assert main(["verify-log", "--events", "--lake", str(lake.root)]) == 1
    out = capsys.readouterr().out
    assert "OK: events of world alpha_core" in out
    assert (
        f"BROKEN: events of world {WORLD}: event 3 (id {rows[0]['id']}, row 1 of {target}): "
        "row_hash does not match the event's content (the event was edited)"
    ) in out
    assert main(["verify-log", "--events", "--lake", str(lake.root), "--world", "alpha_core"]) == 0
    capsys.readouterr()
    assert main(["verify-log", "--events", "--lake", str(lake.root), "--json"]) == 1
    document = json.loads(capsys.readouterr().out)
    broken = [w for w in document["worlds"] if not w["ok"]]
    assert [(w["world_id"], w["broken_at"], w["row_in_file"]) for w in broken] == [(WORLD, 2, 0)]


def test_verify_log_usage_errors_exit_2(tmp_path, capsys):
    assert main(["verify-log"]) == 2
    assert main(["verify-log", str(tmp_path / "x.jsonl"), "--events"]) == 2
    assert main(["verify-log", "--events", "--expected-head", "sha256:00"]) == 2
    assert main(["verify-log", "--events", "--world", "../etc", "--lake", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "give an override log FILE.jsonl, or --events" in err and "needs --world" in err


def test_events_on_an_s3_lake_are_verified_in_place(s3_bucket, capsys):
    lake = Lake(s3_bucket.uri("lake"), s3_client=s3_bucket.client, endpoint_url=s3_bucket.server.url)
    _events(lake)
    assert main(["verify-log", "--events", "--lake", lake.root, "--world", WORLD]) == 0
    assert "6 events in 3 files, chain intact" in capsys.readouterr().out
