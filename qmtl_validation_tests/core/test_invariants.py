"""World invariants over a run history (SPEC §7, QMTL reference §7)."""

from __future__ import annotations

import copy
import datetime as dt
import json

import pytest

from qmtl_validation.core.evaluation import evaluate_run
from qmtl_validation.core.health import validation_health
from qmtl_validation.core.invariants import (
    check_invariants,
    compare_policy_versions,
    decision_problem,
    effective_stage,
)
from qmtl_validation.core.overrides import OverrideLog
from qmtl_validation.core.policy import load_policy

UTC = dt.timezone.utc
NOW = dt.datetime(2024, 6, 1, 12, 0, tzinfo=UTC)

POLICY_YAML = """
validation_profiles:
  backtest:
    performance: {sharpe_min: 0.5, max_dd_max: 0.25}
  paper:
    performance: {sharpe_min: 0.8, max_dd_max: 0.2}
  live:
    performance: {sharpe_min: 1.0, max_dd_max: 0.2}
default_profile_by_stage: {backtest_only: backtest, paper_only: paper, live: live}
"""

GOOD_METRICS = {
    "returns": {"sharpe": 1.2, "max_drawdown": 0.12, "gain_to_pain_ratio": 1.8, "time_under_water_ratio": 0.3},
    "sample": {"effective_history_years": 5.0, "n_trades_total": 500, "n_trades_per_year": 100.0},
    "risk": {"adv_utilization_p95": 0.1, "participation_rate_p95": 0.05},
    "robustness": {"deflated_sharpe_ratio": 0.8, "sharpe_first_half": 1.1, "sharpe_second_half": 1.3},
}
WEAK_METRICS = copy.deepcopy(GOOD_METRICS)
WEAK_METRICS["returns"]["sharpe"] = 0.6  # passes backtest, fails the paper and live profiles


def stored_run(
    strategy: str,
    run_id: str,
    stage: str,
    *,
    metrics: dict = GOOD_METRICS,
    policy_yaml: str = POLICY_YAML,
    version: str = "3",
    created_at: str = "2024-05-30T00:00:00Z",
    world_id: str = "world-a",
) -> dict:
    """A run record as the warehouse stores it, produced by the real evaluation."""
    policy = load_policy(policy_yaml, version=version)
    evaluated = evaluate_run(metrics, policy, stage).to_dict()
    stored_metrics = copy.deepcopy(metrics)
    stored_metrics.setdefault("diagnostics", {})["validation_health"] = validation_health(
        stored_metrics, evaluated["validation"]["results"]
    )
    return {
        "world_id": world_id,
        "strategy_id": strategy,
        "run_id": run_id,
        "stage": stage,
        "created_at": created_at,
        "metrics": stored_metrics,
        **evaluated,
    }


def plain_world(tier: str = "medium", critical: bool = False, on_missing: str = "fail") -> dict:
    return {
        "risk_profile": {"tier": tier, "client_critical": critical},
        "validation": {"on_error": "fail", "on_missing_metric": on_missing},
    }


def check(runs, world=None, **kwargs):
    kwargs.setdefault("current_policy_version", "3")
    kwargs.setdefault("now", NOW)
    return check_invariants(world if world is not None else plain_world(), runs, **kwargs)


# --- a clean world ---------------------------------------------------------------------------


def test_world_with_passing_current_runs_is_ok():
    runs = [
        stored_run("mom", "bt-1", "backtest"),
        stored_run("mom", "paper-1", "paper"),
        stored_run("mom", "live-1", "live"),
    ]
    assert runs[2]["summary"]["status"] == "pass"
    report = check(runs)
    assert report.ok and report.violation_count == 0
    assert report.runs_checked == 3
    assert report.world_id == "world-a"
    as_dict = json.loads(json.dumps(report.to_dict()))
    assert as_dict["ok"] is True and as_dict["checked_at"] == "2024-06-01T12:00:00Z"


def test_real_policy_object_is_accepted_as_the_world():
    policy = load_policy(POLICY_YAML, version="3")
    report = check([stored_run("mom", "live-1", "live")], world=policy)
    assert report.ok and not report.fail_closed_world


# --- live status and policy version ----------------------------------------------------------


def test_latest_live_run_that_warns_or_fails_is_a_violation():
    runs = [stored_run("mom", "live-1", "live", metrics=WEAK_METRICS)]
    assert runs[0]["summary"]["status"] == "fail"
    report = check(runs)
    assert not report.ok
    assert report.live_status_failures == (
        {"strategy_id": "mom", "run_id": "live-1", "status": "fail", "policy_version": "3",
         "override_status": None},
    )
    runs[0]["summary"]["status"] = "warn"
    assert check(runs).live_status_failures[0]["status"] == "warn"


def test_only_the_latest_live_run_of_each_strategy_counts():
    runs = [
        stored_run("mom", "live-2", "live", created_at="2024-05-30T00:00:00Z"),
        stored_run("mom", "live-1", "live", metrics=WEAK_METRICS, created_at="2024-05-01T00:00:00Z"),
        stored_run("carry", "bt-1", "backtest", metrics=WEAK_METRICS),  # not live: ignored
    ]
    report = check(runs)
    assert report.live_status_failures == ()
    runs[0]["created_at"] = "2024-04-01T00:00:00Z"  # now the failing run is the latest
    assert [f["run_id"] for f in check(runs).live_status_failures] == ["live-1"]


def test_live_failure_shows_an_approval_without_clearing_it():
    runs = [stored_run("mom", "live-1", "live", metrics=WEAK_METRICS)]
    log = OverrideLog()
    log.record("world-a", "mom", "live-1", "approved", reason="known regime", actor="risk.alice",
               timestamp=NOW - dt.timedelta(days=2), stage="live", now=NOW)
    report = check(runs, overrides=log)
    assert report.live_status_failures[0]["override_status"] == "approved"
    assert report.override_violations == ()
    assert not report.ok


def test_live_run_under_an_older_policy_version_is_a_mismatch():
    runs = [stored_run("mom", "live-1", "live", version="2")]
    report = check(runs, current_policy_version=3)
    assert report.live_policy_version_mismatches == (
        {"strategy_id": "mom", "run_id": "live-1", "policy_version": "2", "current_policy_version": "3"},
    )
    assert check(runs, current_policy_version="2").ok
    assert check(runs, current_policy_version=None).ok


def test_missing_policy_version_is_a_mismatch():
    run = stored_run("mom", "live-1", "live")
    del run["validation"]["policy_version"]
    assert len(check([run]).live_policy_version_mismatches) == 1


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("10", "9", 1),
        (3, "3", 0),
        ("2", 10, -1),
        ("v10", "v9", 1),
        ("2024.1", "2024.10", -1),
        ("2024-06-01", "2024-05-30", 1),
        ("1.0", "1.0", 0),
        ("2", "v1", -1),
    ],
)
def test_policy_versions_compare_numerically_then_naturally(a, b, expected):
    assert compare_policy_versions(a, b) == expected
    assert compare_policy_versions(b, a) == -expected


# --- fail-closed -----------------------------------------------------------------------------


def test_high_tier_critical_world_must_fail_closed():
    runs = [stored_run("mom", "bt-1", "backtest")]
    report = check(runs, world=plain_world("high", True, on_missing="warn"))
    assert report.fail_closed_world
    assert report.fail_closed_violations == (
        {"kind": "policy_not_fail_closed", "setting": "validation.on_missing_metric",
         "value": "warn", "expected": "fail"},
    )
    assert check(runs, world=plain_world("high", True)).ok


def test_absent_validation_block_in_a_critical_world_is_a_violation():
    world = {"risk_profile": {"tier": "high"}, "client_critical": True}
    report = check([], world=world, world_id="world-a")
    assert [v["setting"] for v in report.fail_closed_violations] == [
        "validation.on_error", "validation.on_missing_metric",
    ]


@pytest.mark.parametrize(("tier", "critical"), [("medium", True), ("high", False), ("low", False)])
def test_other_worlds_are_exempt_from_fail_closed(tier, critical):
    report = check([], world=plain_world(tier, critical, on_missing="ignore"), world_id="w")
    assert report.ok and not report.fail_closed_world


def test_policy_file_saying_warn_in_a_critical_world_is_flagged():
    policy = load_policy(
        POLICY_YAML + "risk_profile: {tier: high, client_critical: true}\n"
        "validation: {on_error: warn, on_missing_metric: fail}\n",
        version="3",
    )
    report = check([], world=policy, world_id="world-a")
    assert [v["setting"] for v in report.fail_closed_violations] == ["validation.on_error"]


def test_run_evaluated_fail_open_under_the_current_policy_is_flagged():
    missing = copy.deepcopy(GOOD_METRICS)
    del missing["returns"]["max_drawdown"]
    lenient = POLICY_YAML + "validation: {on_missing_metric: warn}\n"
    runs = [
        stored_run("mom", "bt-1", "backtest", metrics=missing, policy_yaml=lenient, version="3"),
        stored_run("mom", "bt-0", "backtest", metrics=missing, policy_yaml=lenient, version="2"),
    ]
    report = check(runs, world=plain_world("high", True))
    assert report.fail_closed_violations == (
        {"kind": "run_evaluated_fail_open", "strategy_id": "mom", "run_id": "bt-1",
         "rule": "performance", "reason_code": "performance_metrics_missing",
         "problem": "missing metric with status warn"},
    )


def test_run_evaluated_under_the_critical_policy_is_fail_closed():
    missing = copy.deepcopy(GOOD_METRICS)
    del missing["returns"]["max_drawdown"]
    critical = POLICY_YAML + "risk_profile: {tier: high, client_critical: true}\n"
    run = stored_run("mom", "bt-1", "backtest", metrics=missing, policy_yaml=critical)
    assert run["validation"]["results"]["performance"]["status"] == "fail"
    report = check([run], world=load_policy(critical, version="3"))
    assert report.fail_closed_violations == ()


def test_rule_error_that_only_warned_is_fail_open():
    run = stored_run("mom", "bt-1", "backtest")
    run["validation"]["results"]["sample"].update(status="warn", reason_code="rule_error")
    run["metrics"]["diagnostics"]["validation_health"]["validation_error_count"] = 1
    report = check([run], world=plain_world("high", True))
    assert [v["problem"] for v in report.fail_closed_violations] == ["rule_error with status warn"]


# --- overrides -------------------------------------------------------------------------------


def override_log() -> OverrideLog:
    log = OverrideLog()
    log.record("world-a", "mom", "paper-1", "approved", reason="documented", actor="risk.alice",
               timestamp=NOW - dt.timedelta(days=10), stage="paper", now=NOW)
    return log


def test_documented_approval_in_its_window_keeps_the_world_ok():
    runs = [stored_run("mom", "paper-1", "paper")]
    report = check(runs, overrides=override_log())
    assert report.ok
    assert [item["run_id"] for item in report.approved_overrides] == ["paper-1"]
    assert report.approved_overrides[0]["review_due_at"] == "2024-08-20T12:00:00Z"


def test_forty_day_old_live_approval_is_an_overdue_violation():
    log = OverrideLog()
    log.record("world-a", "mom", "live-1", "approved", reason="documented", actor="risk.alice",
               timestamp=NOW - dt.timedelta(days=40), stage="live", now=NOW)
    report = check([stored_run("mom", "live-1", "live")], overrides=log)
    assert not report.ok
    [violation] = report.override_violations
    assert violation["review_overdue"] is True
    assert violation["review_window_days"] == 30
    assert violation["review_due_at"] == "2024-05-22T12:00:00Z"


def test_approval_missing_fields_is_a_violation():
    row = override_log().to_dicts()[0]
    row["override_actor"] = None
    report = check([stored_run("mom", "paper-1", "paper")], overrides=[row])
    assert report.override_violations[0]["missing_fields"] == ["override_actor"]


def test_overrides_of_other_worlds_are_ignored():
    log = OverrideLog()
    log.record("world-b", "mom", "x", "approved", reason="r", actor="a",
               timestamp=NOW - dt.timedelta(days=400), now=NOW)
    report = check([stored_run("mom", "paper-1", "paper")], overrides=log)
    assert report.ok and report.approved_overrides == ()


# --- validation health -----------------------------------------------------------------------


def test_stored_health_that_differs_from_recomputation_is_a_gap():
    run = stored_run("mom", "bt-1", "backtest")
    run["metrics"]["diagnostics"]["validation_health"]["metric_coverage_ratio"] = 1.0
    del run["metrics"]["robustness"]["sharpe_second_half"]
    report = check([run])
    assert report.validation_health_gaps == (
        {"strategy_id": "mom", "run_id": "bt-1", "field": "metric_coverage_ratio",
         "stored": 1.0, "recomputed": 11 / 12, "problem": "stored value differs from recomputation"},
    )


def test_health_within_tolerance_is_equal():
    run = stored_run("mom", "bt-1", "backtest")
    run["metrics"]["diagnostics"]["validation_health"]["rules_executed_ratio"] = 1.0 - 1e-12
    assert check([run]).validation_health_gaps == ()
    run["metrics"]["diagnostics"]["validation_health"]["rules_executed_ratio"] = 1.0 - 1e-8
    assert len(check([run]).validation_health_gaps) == 1


def test_missing_stored_health_is_a_gap():
    run = stored_run("mom", "bt-1", "backtest")
    del run["metrics"]["diagnostics"]
    [gap] = check([run]).validation_health_gaps
    assert gap["problem"] == "validation health not stored"
    assert gap["recomputed"]["rules_executed_ratio"] == 1.0


# --- decisions -------------------------------------------------------------------------------


def test_effective_stage_follows_a_sound_decision():
    run = stored_run("mom", "bt-1", "backtest")
    assert run["summary"]["recommended_stage"] == "paper_only"
    assert effective_stage(run) == "paper_only"
    assert decision_problem(run) is None


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda r: r.pop("summary"), "no decision recorded"),
        (lambda r: r["summary"].pop("recommended_stage"), "summary.recommended_stage None is not a decision"),
        (lambda r: r["summary"].update(status="unknown"), "summary.status 'unknown' is not a decision"),
        (lambda r: r["summary"].update(recommended_stage="live"), "summary.recommended_stage 'live' is not a decision"),
        (lambda r: r["summary"].update(recommended_stage="paper_ok_live_candidate"),
         "a backtest-stage run cannot be a live candidate"),
    ],
)
def test_missing_or_inconsistent_decision_degrades_to_backtest_only(mutate, problem):
    run = stored_run("mom", "bt-1", "backtest")
    mutate(run)
    assert effective_stage(run) == "backtest_only"
    assert decision_problem(run) == problem


def test_stale_decision_degrades_to_backtest_only():
    run = stored_run("mom", "paper-1", "paper", created_at="2024-05-01T00:00:00Z")
    assert run["summary"]["recommended_stage"] == "paper_ok_live_candidate"
    week = dt.timedelta(days=7)
    assert effective_stage(run, NOW, week) == "backtest_only"
    assert decision_problem(run, NOW, week).startswith("decision from 2024-05-01T00:00:00Z is older than")
    assert effective_stage(run, NOW, dt.timedelta(days=60)) == "paper_ok_live_candidate"
    run["updated_at"] = "2024-05-31T00:00:00Z"  # re-evaluated recently
    assert effective_stage(run, NOW, week) == "paper_ok_live_candidate"
    del run["updated_at"], run["created_at"]
    assert effective_stage(run, NOW, week) == "backtest_only"
    assert effective_stage(run) == "paper_ok_live_candidate"  # no age limit: undated is fine


def test_live_strategy_without_a_current_decision_is_a_violation():
    live = stored_run("mom", "live-1", "live", created_at="2024-04-01T00:00:00Z")
    paper = stored_run("carry", "paper-1", "paper", created_at="2024-04-01T00:00:00Z")
    report = check([live, paper], max_decision_age=dt.timedelta(days=30))
    assert [row["run_id"] for row in report.live_without_current_decision] == ["live-1"]
    assert sorted(row["run_id"] for row in report.degraded_decisions) == ["live-1", "paper-1"]
    assert all(row["effective_stage"] == "backtest_only" for row in report.degraded_decisions)
    assert check([live, paper]).ok  # without an age limit nothing is stale


# --- inputs ----------------------------------------------------------------------------------


def test_runs_of_several_worlds_are_refused():
    runs = [stored_run("mom", "a", "backtest"), stored_run("mom", "b", "backtest", world_id="world-b")]
    with pytest.raises(ValueError, match="world-b"):
        check(runs, world_id="world-a")


def test_report_lists_every_violation_kind_in_to_dict():
    report = check([stored_run("mom", "live-1", "live", metrics=WEAK_METRICS, version="1")])
    as_dict = report.to_dict()
    assert as_dict["ok"] is False and as_dict["violation_count"] == 2
    assert set(as_dict) >= {
        "live_status_failures", "live_policy_version_mismatches", "fail_closed_violations",
        "override_violations", "validation_health_gaps", "live_without_current_decision",
        "approved_overrides", "degraded_decisions",
    }


def test_ignored_missing_metric_in_a_critical_world_is_fail_open():
    missing = copy.deepcopy(GOOD_METRICS)
    del missing["returns"]["max_drawdown"]
    ignoring = POLICY_YAML + "validation: {on_missing_metric: ignore}\n"
    run = stored_run("mom", "bt-1", "backtest", metrics=missing, policy_yaml=ignoring)
    report = check([run], world=plain_world("high", True))
    assert [(v["rule"], v["problem"]) for v in report.fail_closed_violations] == [
        ("performance", "missing metrics were ignored")
    ]
    assert check([run], world=plain_world("high", False)).fail_closed_violations == ()
