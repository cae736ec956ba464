"""`qmtl-validation override` and `qmtl-validation verify-log` through the CLI entry point."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from qmtl_validation.cli import main


def approve_args(log: Path, run: str = "run-1", *extra: str) -> list[str]:
    when = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return [
        "override", "--world", "world-a", "--strategy", "mom", "--run", run,
        "--status", "approved", "--reason", "index rebalance explains the breach",
        "--actor", "risk.alice", "--timestamp", when, "--stage", "live", "--log", str(log), *extra,
    ]


def read_rows(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def test_override_appends_an_entry_and_prints_it(tmp_path: Path, capsys):
    log = tmp_path / "overrides.jsonl"
    assert main(approve_args(log)) == 0
    out = capsys.readouterr().out
    assert out.startswith("recorded approved by risk.alice at ")
    assert "world-a/mom/run-1" in out
    assert "review due " in out and "(30 days)" in out
    rows = read_rows(log)
    assert len(rows) == 1
    assert rows[0]["override_status"] == "approved" and rows[0]["stage"] == "live"


def test_override_json_output_carries_the_entry_and_review(tmp_path: Path, capsys):
    log = tmp_path / "overrides.jsonl"
    assert main(approve_args(log, "run-1", "--json")) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["recorded"] is True
    assert document["entry"]["override_actor"] == "risk.alice"
    assert document["review"]["review_window_days"] == 30
    assert document["review"]["review_overdue"] is False
    assert document["log"] == str(log)


def test_repeating_the_status_is_unchanged_and_appends_nothing(tmp_path: Path, capsys):
    log = tmp_path / "overrides.jsonl"
    assert main(approve_args(log)) == 0
    capsys.readouterr()
    assert main(approve_args(log, "run-1", "--json")) == 0
    assert json.loads(capsys.readouterr().out)["recorded"] is False
    assert main(approve_args(log)) == 0
    assert capsys.readouterr().out.startswith("unchanged: already approved")
    assert len(read_rows(log)) == 1


def test_later_entries_chain_onto_earlier_ones(tmp_path: Path, capsys):
    log = tmp_path / "overrides.jsonl"
    assert main(approve_args(log, "run-1")) == 0
    assert main(approve_args(log, "run-2")) == 0
    assert main(["override", "--world", "world-a", "--strategy", "mom", "--run", "run-1",
                 "--status", "rejected", "--reason", "withdrawn", "--log", str(log)]) == 0
    rows = read_rows(log)
    assert [r["override_status"] for r in rows] == ["approved", "approved", "rejected"]
    assert rows[1]["prev_hash"] == rows[0]["row_hash"]
    assert rows[2]["prev_hash"] == rows[1]["row_hash"]
    capsys.readouterr()
    assert main(["verify-log", str(log)]) == 0
    assert capsys.readouterr().out == f"OK: {log}: 3 entries, chain intact, head {rows[2]['row_hash']}\n"


def test_approval_without_timestamp_exits_1_with_one_line(tmp_path: Path, capsys):
    log = tmp_path / "overrides.jsonl"
    code = main(["override", "--world", "world-a", "--strategy", "mom", "--run", "run-1",
                 "--status", "approved", "--reason", "r", "--actor", "a", "--log", str(log)])
    assert code == 1
    err = capsys.readouterr().err
    assert err == "error: an approved override needs override_timestamp\n"
    assert not log.exists()


def test_path_like_run_id_is_rejected(tmp_path: Path, capsys):
    code = main(approve_args(tmp_path / "o.jsonl", "../etc"))
    assert code == 1
    assert "run_id '../etc' is not a valid identifier" in capsys.readouterr().err


def test_unknown_status_is_a_usage_error(tmp_path: Path):
    with pytest.raises(SystemExit) as info:
        main(["override", "--world", "w", "--strategy", "s", "--run", "r", "--status", "maybe"])
    assert info.value.code == 2


def test_override_refuses_to_append_to_a_broken_log(tmp_path: Path, capsys):
    log = tmp_path / "overrides.jsonl"
    main(approve_args(log, "run-1"))
    main(approve_args(log, "run-2"))
    rows = read_rows(log)
    rows[0]["override_reason"] = "edited afterwards"
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    capsys.readouterr()
    assert main(approve_args(log, "run-3")) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {log}: hash chain broken at entry 1;")
    assert len(err.strip().splitlines()) == 1
    assert len(read_rows(log)) == 2


def test_verify_log_reports_the_first_broken_link(tmp_path: Path, capsys):
    log = tmp_path / "overrides.jsonl"
    for run in ("run-1", "run-2", "run-3"):
        main(approve_args(log, run))
    rows = read_rows(log)
    del rows[1]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    capsys.readouterr()
    assert main(["verify-log", str(log)]) == 1
    assert capsys.readouterr().out == (
        f"BROKEN: {log}: entry 2 of 2: prev_hash does not match the previous entry "
        "(an entry was removed, inserted or reordered)\n"
    )
    assert main(["verify-log", str(log), "--json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is False and document["broken_at_entry"] == 2


def test_verify_log_finds_an_edited_entry(tmp_path: Path, capsys):
    log = tmp_path / "overrides.jsonl"
    main(approve_args(log, "run-1"))
    text = log.read_text().replace("risk.alice", "risk.mallory")
    log.write_text(text)
    capsys.readouterr()
    assert main(["verify-log", str(log)]) == 1
    assert "row_hash does not match the entry's content" in capsys.readouterr().out


def test_verify_log_with_expected_head_finds_truncation(tmp_path: Path, capsys):
    log = tmp_path / "overrides.jsonl"
    main(approve_args(log, "run-1"))
    main(approve_args(log, "run-2"))
    head = read_rows(log)[-1]["row_hash"]
    lines = log.read_text().splitlines(keepends=True)
    log.write_text(lines[0])
    capsys.readouterr()
    assert main(["verify-log", str(log)]) == 0
    assert main(["verify-log", str(log), "--expected-head", head]) == 1
    assert "end of log" in capsys.readouterr().out


def test_verify_log_rejects_a_line_that_is_not_json(tmp_path: Path, capsys):
    log = tmp_path / "overrides.jsonl"
    main(approve_args(log, "run-1"))
    with open(log, "a") as handle:
        handle.write("{not json\n")
    capsys.readouterr()
    assert main(["verify-log", str(log)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {log} line 2: is not valid JSON")
    assert len(err.strip().splitlines()) == 1


def test_verify_log_of_a_missing_file_exits_1(tmp_path: Path, capsys):
    assert main(["verify-log", str(tmp_path / "nope.jsonl")]) == 1
    assert "no such override log" in capsys.readouterr().err


def test_default_log_sits_beside_the_catalog(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("QMTL_CATALOG_PATH", str(tmp_path / "wh" / "validation.duckdb"))
    args = [a for a in approve_args(tmp_path / "unused") if a not in ("--log", str(tmp_path / "unused"))]
    assert main(args) == 0
    assert len(read_rows(tmp_path / "wh" / "overrides.jsonl")) == 1
    assert f"log: {tmp_path / 'wh' / 'overrides.jsonl'}" in capsys.readouterr().out
