"""``qmtl-validation lint-snapshot``: OK/ERROR lines per file, exit 1 on any error."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from qmtl_validation.cli import main
from qmtl_validation.core.snapshot import sign_snapshot

NOW = "2025-01-15T12:00:00Z"
GOOD = {
    "world_id": "world-a",
    "as_of": "2025-01-15T11:59:00Z",
    "version": "v1",
    "weights": {"strat_a": 0.6, "strat_b": 0.4},
    "covariance": {"strat_a,strat_a": 0.0004, "strat_b,strat_b": 0.0009, "strat_a,strat_b": 0.0001},
    "provenance": {"actor": "gateway", "stage": "live"},
}
# QMTL's repo sample: no world_id, no provenance.
SAMPLE = {
    "as_of": "2025-01-01T00:00:00Z",
    "version": "v1",
    "weights": {"strategy_a": 0.6, "strategy_b": 0.4},
    "realized_returns": {"strategy_a": [0.01, -0.005, 0.002], "strategy_b": [0.008, -0.004, 0.001]},
    "stress": {"crash": {"max_drawdown": 0.25}, "slowdown": {"max_drawdown": 0.12}},
}


def write(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return str(path)


def test_good_file_prints_ok_and_exits_zero(tmp_path, capsys):
    good = write(tmp_path, "good.json", GOOD)
    assert main(["lint-snapshot", good, "--now", NOW]) == 0
    assert capsys.readouterr().out == f"OK {good}\n"


def test_each_file_gets_a_line_and_any_error_exits_one(tmp_path, capsys):
    good = write(tmp_path, "good.json", GOOD)
    bad = write(tmp_path, "bad.json", {**GOOD, "weights": {"strat_a": 0.7, "strat_b": 0.2}})
    broken = write(tmp_path, "broken.json", "{not json")
    missing = str(tmp_path / "absent.json")
    assert main(["lint-snapshot", good, bad, broken, missing, "--now", NOW]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"OK {good}"
    assert lines[1] == f"ERROR {bad}: weights must sum to ~1.0"
    assert lines[2].startswith(f"ERROR {broken}: invalid JSON: ")
    assert lines[3].startswith(f"ERROR {missing}: cannot read file: ")
    assert len(lines) == 4


def test_repo_sample_needs_world_actor_and_stage(tmp_path, capsys):
    sample = write(tmp_path, "sample.json", SAMPLE)
    assert main(["lint-snapshot", sample, "--now", NOW]) == 1
    assert capsys.readouterr().out == f"ERROR {sample}: world_id is required\n"
    assert main(["lint-snapshot", sample, "--world", "w", "--actor", "gateway", "--stage", "live", "--now", NOW]) == 0
    assert capsys.readouterr().out == f"OK {sample}\n"


def test_allow_lists_are_comma_separated(tmp_path, capsys):
    good = write(tmp_path, "good.json", GOOD)
    assert main(["lint-snapshot", good, "--allowed-actors", "risk-engine, gateway", "--now", NOW]) == 0
    capsys.readouterr()
    assert main(["lint-snapshot", good, "--allowed-actors", "risk-engine", "--now", NOW]) == 1
    assert capsys.readouterr().out == f"ERROR {good}: actor 'gateway' not allowed\n"
    assert main(["lint-snapshot", good, "--allowed-stages", "paper", "--now", NOW]) == 1
    assert capsys.readouterr().out == f"ERROR {good}: stage 'live' not allowed\n"


def test_future_as_of_is_judged_against_now(tmp_path, capsys):
    good = write(tmp_path, "good.json", GOOD)
    assert main(["lint-snapshot", good, "--now", "2025-01-15T11:00:00"]) == 1
    assert "is in the future" in capsys.readouterr().out


def test_signature_is_checked_with_the_key_from_the_environment(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_A_KEY", "secret")
    signed = write(tmp_path, "signed.json", {**GOOD, "signature": sign_snapshot(GOOD, "secret")})
    unsigned = write(tmp_path, "unsigned.json", GOOD)
    forged = write(tmp_path, "forged.json", {**GOOD, "signature": sign_snapshot(GOOD, "guess")})
    code = main(["lint-snapshot", signed, unsigned, forged, "--signing-key-env", "WORLD_A_KEY", "--now", NOW])
    assert code == 1
    assert capsys.readouterr().out.splitlines() == [
        f"OK {signed}",
        f"ERROR {unsigned}: signature is required",
        f"ERROR {forged}: signature mismatch",
    ]


def test_unset_signing_key_variable_is_a_usage_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    good = write(tmp_path, "good.json", GOOD)
    assert main(["lint-snapshot", good, "--signing-key-env", "NO_SUCH_KEY_VAR"]) == 2
    assert capsys.readouterr().err == "error: environment variable NO_SUCH_KEY_VAR is not set\n"


def test_bad_now_is_a_usage_error(tmp_path, capsys):
    good = write(tmp_path, "good.json", GOOD)
    assert main(["lint-snapshot", good, "--now", "noon"]) == 2
    assert "--now" in capsys.readouterr().err


def test_json_output_lists_every_file(tmp_path, capsys):
    good = write(tmp_path, "good.json", GOOD)
    bad = write(tmp_path, "bad.json", [1, 2])
    assert main(["lint-snapshot", good, bad, "--json", "--now", NOW]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["failed"] == 1
    assert report["files"][0]["ok"] is True and report["files"][0]["hash"].startswith("sha256:")
    assert report["files"][1] == {"file": bad, "ok": False, "error": "snapshot must be a JSON object"}


@pytest.mark.parametrize("content", ["", "\xff\xfe garbage"])
def test_empty_or_binary_files_are_errors_not_tracebacks(tmp_path, content):
    path = tmp_path / "odd.json"
    path.write_bytes(content.encode("latin-1"))
    result = subprocess.run(
        [sys.executable, "-m", "qmtl_validation", "lint-snapshot", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout.startswith(f"ERROR {path}: ")
    assert "Traceback" not in result.stderr
