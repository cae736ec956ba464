"""Policy diff over QMTL's regression runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qmtl_validation.core.policy import load_policy
from qmtl_validation.core.policy_diff import diff_policies, load_runs

SCENARIOS = Path(__file__).resolve().parent.parent / "fixtures" / "qmtl_scenarios"
SAMPLE_TEXT = (SCENARIOS / "sample_policy.yml").read_text()
OLD = load_policy(SAMPLE_TEXT, version="1")
# Backtest Sharpe floor raised from 0.5 to 0.8.
NEW = load_policy(SAMPLE_TEXT.replace("sharpe_min: 0.5", "sharpe_min: 0.8"), version="2")


def test_all_scenario_runs_load_from_the_folder():
    runs = load_runs([SCENARIOS])
    assert len(runs) == 32
    assert {r["world_id"] for r in runs} == {"policy-diff"}


def test_same_policy_changes_nothing():
    diff = diff_policies(load_runs([SCENARIOS]), OLD, OLD)
    assert (diff.total, diff.changed, diff.impact_ratio) == (32, 0, 0.0)
    assert diff.transitions("status") == {}


def test_raising_the_sharpe_floor_flips_the_runs_between_old_and_new_floor():
    diff = diff_policies(load_runs([SCENARIOS]), OLD, NEW)
    changed = {r.strategy_id: r for r in diff.runs if r.changed}
    # sharpe 0.6, 0.61, 0.7 now fail; 0.59 already failed hysteresis but now fails performance too;
    # 0.8 sits exactly on the new floor and still passes
    assert sorted(changed) == ["borderline_close", "borderline_floor", "borderline_hysteresis_blocked", "good_set_3"]
    assert diff.changed == 4 and diff.impact_ratio == pytest.approx(4 / 32)
    assert diff.transitions("status") == {"pass->fail": 3}
    assert diff.transitions("recommended_stage") == {"paper_only->backtest_only": 3}
    assert diff.rule_change_counts() == {"performance": 4}
    blocked = changed["borderline_hysteresis_blocked"]
    assert not blocked.status_changed and blocked.rule_changes == {"performance": ("pass", "fail")}
    document = diff.to_dict()
    assert (document["old_version"], document["new_version"]) == ("1", "2")
    assert document["changed_runs"] == 4 and len(document["runs"]) == 32
    json.dumps(document)


def test_a_missing_new_policy_demotes_everything():
    runs = load_runs([SCENARIOS / "good_strategies_runs.json"])
    diff = diff_policies(runs, OLD, None)
    assert diff.changed == 3 and diff.impact_ratio == 1.0
    assert diff.transitions("status") == {"pass->fail": 3}
    assert diff.runs[0].rule_changes["sample"] == ("pass", None)


def test_run_stage_wins_over_the_default_stage(tmp_path):
    record = json.loads((SCENARIOS / "good_strategies_runs.json").read_text())[0]
    path = tmp_path / "runs.json"
    path.write_text(json.dumps([{**record, "stage": "paper"}, record]))
    diff = diff_policies(load_runs([path]), OLD, OLD, stage="backtest")
    assert [r.stage for r in diff.runs] == ["paper", "backtest"]
    assert [r.new_stage for r in diff.runs] == ["paper_ok_live_candidate", "paper_only"]


def test_bad_runs_files_are_reported_with_their_name(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"run_id": "x"}]')
    with pytest.raises(ValueError, match="bad.json\\[0\\]"):
        load_runs([bad])
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    with pytest.raises(ValueError, match="broken.json"):
        load_runs([broken])
    with pytest.raises(FileNotFoundError):
        load_runs([tmp_path / "missing.json"])
