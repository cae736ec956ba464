"""``qmtl-validation policy-diff`` on QMTL's regression runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from qmtl_validation.cli import main

SCENARIOS = Path(__file__).resolve().parent.parent / "fixtures" / "qmtl_scenarios"


@pytest.fixture
def policies(tmp_path: Path) -> tuple[Path, Path]:
    text = (SCENARIOS / "sample_policy.yml").read_text()
    old = tmp_path / "1.yaml"
    new = tmp_path / "2.yaml"
    old.write_text(text)
    new.write_text(text.replace("sharpe_min: 0.5", "sharpe_min: 0.8"))
    return old, new


def test_impact_above_threshold_exits_2_with_a_table(policies, capsys):
    old, new = policies
    code = main(["policy-diff", "--old", str(old), "--new", str(new), "--runs", str(SCENARIOS)])
    out = capsys.readouterr().out
    assert code == 2
    assert "policy-diff/good_set_3/good-set-003" in out
    assert "pass -> fail" in out and "paper_only -> backtest_only" in out and "performance pass->fail" in out
    assert "policy 1 -> 2: 4 of 32 runs change (impact ratio 0.1250)" in out
    assert "is above the threshold 0.05" in out
    assert "good_set_1" not in out  # unchanged runs are not listed


def test_impact_within_threshold_exits_0(policies, capsys):
    old, new = policies
    code = main(["policy-diff", "--old", str(old), "--new", str(new), "--runs", str(SCENARIOS), "--threshold", "0.2"])
    assert code == 0
    assert "within the threshold 0.2" in capsys.readouterr().out


def test_json_output_carries_counts_and_threshold(policies, capsys):
    old, new = policies
    files = [str(p) for p in sorted(SCENARIOS.glob("*.json"))]
    code = main(["policy-diff", "--old", str(old), "--new", str(new), "--runs", *files, "--json", "--all"])
    document = json.loads(capsys.readouterr().out)
    assert code == 2
    assert document["changed_runs"] == 4 and document["total_runs"] == 32
    assert document["impact_ratio"] == 0.125 and document["threshold_exceeded"] is True
    assert document["rule_changes"] == {"performance": 4}


def test_stage_option_applies_to_runs_without_one(policies, capsys):
    old, _ = policies
    code = main(["policy-diff", "--old", str(old), "--new", str(old), "--runs", str(SCENARIOS), "--stage", "paper", "--json"])
    document = json.loads(capsys.readouterr().out)
    assert code == 0
    assert {r["stage"] for r in document["runs"]} == {"paper"}
    assert document["runs"][0]["new"]["recommended_stage"] == "paper_ok_live_candidate"


def test_bad_threshold_and_broken_policy_are_clean_errors(policies, tmp_path, capsys):
    old, _ = policies
    assert main(["policy-diff", "--old", str(old), "--new", str(old), "--runs", str(SCENARIOS), "--threshold", "2"]) == 2
    broken = tmp_path / "3.yaml"
    broken.write_text("validation: {on_eror: fail}\n")
    assert main(["policy-diff", "--old", str(old), "--new", str(broken), "--runs", str(SCENARIOS)]) == 1
    err = capsys.readouterr().err
    assert "--threshold must be between 0 and 1" in err
    assert "validation.on_eror: unknown key; did you mean 'on_error'?" in err


def test_console_entry_point_runs_the_command(policies):
    old, new = policies
    proc = subprocess.run(
        [sys.executable, "-m", "qmtl_validation", "policy-diff", "--old", str(old), "--new", str(new), "--runs", str(SCENARIOS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "4 of 32 runs change" in proc.stdout
