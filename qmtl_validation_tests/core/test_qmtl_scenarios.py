"""QMTL's regression sets and scenario tests in the spirit of its good / bad / borderline runs.

The run sets and the sample policy are copies of QMTL's (``fixtures/qmtl_scenarios``). The
expectations are ours: each threshold is reported once by the rule of its class, so a short
history fails ``sample`` only, a liquidity breach fails ``risk_constraint`` only.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from qmtl_validation.core.evaluation import evaluate_run
from qmtl_validation.core.policy import PolicyError, load_policy

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SCENARIOS = FIXTURES / "qmtl_scenarios"
POLICIES = FIXTURES / "policies"
SAMPLE_POLICY_TEXT = (SCENARIOS / "sample_policy.yml").read_text()
SAMPLE_POLICY = load_policy(SCENARIOS / "sample_policy.yml")


def runs_of(name: str) -> dict[str, dict]:
    return {r["strategy_id"]: r for r in json.loads((SCENARIOS / f"{name}_strategies_runs.json").read_text())}


GOOD_RUNS = {**runs_of("good"), **{k: v for k, v in runs_of("bad").items() if k.startswith("good_")}}
BAD_RUNS = {k: v for k, v in runs_of("bad").items() if k.startswith("bad_")}
KNOWN_BAD_RUNS = runs_of("known_bad")
BORDERLINE_RUNS = runs_of("borderline")


def failing(result) -> list[str]:
    return [name for name, r in result.results.items() if r.status == "fail"]


@pytest.mark.parametrize("strategy_id", sorted(GOOD_RUNS))
def test_good_runs_pass_and_are_recommended_for_paper(strategy_id):
    result = evaluate_run(GOOD_RUNS[strategy_id]["metrics"], SAMPLE_POLICY, "backtest")
    assert (result.status, result.recommended_stage) == ("pass", "paper_only")
    assert result.profile == "backtest"


def test_borderline_floor_with_every_value_on_its_bound_passes():
    metrics = BORDERLINE_RUNS["borderline_floor"]["metrics"]
    result = evaluate_run(metrics, SAMPLE_POLICY, "backtest")
    assert (result.status, result.recommended_stage) == ("pass", "paper_only")
    sample = result.results["sample"].details["thresholds"]
    assert sample["effective_history_years"]["value"] == sample["effective_history_years"]["min"] == 2.0
    assert result.results["risk_constraint"].details["hysteresis"]["value"] == 0.6  # enter is 0.6


def test_borderline_close_passes_and_hysteresis_blocked_fails_risk_constraint():
    assert evaluate_run(BORDERLINE_RUNS["borderline_close"]["metrics"], SAMPLE_POLICY, "backtest").status == "pass"
    blocked = evaluate_run(BORDERLINE_RUNS["borderline_hysteresis_blocked"]["metrics"], SAMPLE_POLICY, "backtest")
    assert failing(blocked) == ["risk_constraint"]
    assert blocked.results["risk_constraint"].reason_code == "hysteresis_not_entered"
    assert blocked.recommended_stage == "backtest_only"


@pytest.mark.parametrize("strategy_id", sorted(KNOWN_BAD_RUNS) + sorted(BAD_RUNS))
def test_known_bad_runs_never_pass_and_stay_backtest_only(strategy_id):
    record = KNOWN_BAD_RUNS.get(strategy_id) or BAD_RUNS[strategy_id]
    result = evaluate_run(record["metrics"], SAMPLE_POLICY, "backtest")
    assert result.status != "pass"
    assert result.recommended_stage == "backtest_only"


@pytest.mark.parametrize(
    ("strategy_id", "rules"),
    [
        ("known_bad_short_history_01", ["sample"]),
        ("known_bad_low_trades_01", ["sample"]),
        ("known_bad_extreme_drawdown_01", ["performance"]),
        ("known_bad_low_gain_to_pain_01", ["performance"]),
        ("known_bad_liquidity_adv_01", ["risk_constraint"]),
        ("known_bad_liquidity_participation_01", ["risk_constraint"]),
        ("known_bad_low_dsr_01", ["robustness"]),
        ("known_bad_compound_01", ["sample", "performance", "risk_constraint", "robustness"]),
    ],
)
def test_each_known_bad_run_fails_exactly_the_rules_of_its_breaches(strategy_id, rules):
    result = evaluate_run(KNOWN_BAD_RUNS[strategy_id]["metrics"], SAMPLE_POLICY, "backtest")
    assert failing(result) == rules


def test_short_history_fails_sample_not_performance():
    result = evaluate_run(BAD_RUNS["bad_short_history"]["metrics"], SAMPLE_POLICY, "backtest")
    assert failing(result) == ["sample"]
    assert result.results["sample"].reason_code == "sample_thresholds_failed"
    assert result.results["performance"].reason_code == "performance_ok"
    assert (result.status, result.recommended_stage) == ("fail", "backtest_only")


def test_liquidity_breaches_fail_risk_constraint():
    result = evaluate_run(BAD_RUNS["bad_liquidity_risk"]["metrics"], SAMPLE_POLICY, "backtest")
    assert failing(result) == ["risk_constraint"]
    risk = result.results["risk_constraint"]
    assert (risk.reason_code, risk.owner, risk.severity) == ("risk_thresholds_failed", "risk", "blocking")
    assert [v["metric"] for v in risk.details["violations"]] == ["risk.adv_utilization_p95", "risk.participation_rate_p95"]


def test_dsr_below_minimum_is_a_soft_robustness_fail_that_warns_and_blocks_promotion():
    result = evaluate_run(KNOWN_BAD_RUNS["known_bad_low_dsr_01"]["metrics"], SAMPLE_POLICY, "backtest")
    robustness = result.results["robustness"]
    assert (robustness.status, robustness.severity, robustness.reason_code) == ("fail", "soft", "dsr_below_min")
    assert (result.status, result.recommended_stage) == ("warn", "backtest_only")


def missing_dsr_metrics() -> dict:
    metrics = copy.deepcopy(GOOD_RUNS["good_set_1"]["metrics"])
    del metrics["robustness"]["deflated_sharpe_ratio"]
    return metrics


@pytest.mark.parametrize(
    ("mode", "rule_status", "code", "summary", "stage"),
    [
        ("fail", "fail", "dsr_missing", "warn", "backtest_only"),  # robustness is soft
        ("warn", "warn", "dsr_missing", "warn", "paper_only"),
        ("ignore", "pass", "missing_metric_ignored", "pass", "paper_only"),
    ],
)
def test_each_on_missing_metric_mode(mode, rule_status, code, summary, stage):
    policy = load_policy(SAMPLE_POLICY_TEXT + f"\nvalidation: {{on_missing_metric: {mode}}}\n")
    result = evaluate_run(missing_dsr_metrics(), policy, "backtest")
    robustness = result.results["robustness"]
    assert (robustness.status, robustness.reason_code) == (rule_status, code)
    assert (result.status, result.recommended_stage) == (summary, stage)


@pytest.mark.parametrize(
    ("mode", "summary"), [("fail", "fail"), ("warn", "warn"), ("ignore", "pass")]
)
def test_missing_blocking_metric_under_each_mode(mode, summary):
    policy = load_policy(SAMPLE_POLICY_TEXT + f"\nvalidation: {{on_missing_metric: {mode}}}\n")
    metrics = copy.deepcopy(GOOD_RUNS["good_set_1"]["metrics"])
    del metrics["sample"]["n_trades_total"]
    result = evaluate_run(metrics, policy, "backtest")
    assert result.status == summary
    assert result.results["sample"].details["missing_metrics" if mode != "ignore" else "ignored_missing_metrics"] == ["sample.n_trades_total"]


def test_high_tier_client_critical_world_is_forced_fail_closed():
    lenient = SAMPLE_POLICY_TEXT + "\nvalidation: {on_error: warn, on_missing_metric: ignore}\n"
    critical = load_policy(lenient + "risk_profile: {tier: high, client_critical: true}\n")
    ordinary = load_policy(lenient)
    metrics = missing_dsr_metrics()
    relaxed = evaluate_run(metrics, ordinary, "backtest")
    assert relaxed.status == "pass"
    forced = evaluate_run(metrics, critical, "backtest")
    robustness = forced.results["robustness"]
    assert (robustness.status, robustness.severity, robustness.reason_code) == ("fail", "blocking", "dsr_missing")
    assert (forced.status, forced.recommended_stage) == ("fail", "backtest_only")
    errored = evaluate_run(GOOD_RUNS["good_set_1"]["metrics"], critical, "backtest", correlations={"other": "n/a"})
    assert errored.results["risk_constraint"].reason_code == "rule_error"
    assert errored.results["risk_constraint"].status == "fail"
    assert forced.ruleset_hash != relaxed.ruleset_hash


def test_severity_override_changes_summary_and_ruleset_hash():
    softened = load_policy(SAMPLE_POLICY_TEXT.replace("      min_trades_total: 50\n", "      min_trades_total: 50\n      severity: soft\n"))
    metrics = BAD_RUNS["bad_short_history"]["metrics"]
    strict = evaluate_run(metrics, SAMPLE_POLICY, "backtest")
    soft = evaluate_run(metrics, softened, "backtest")
    assert (strict.status, soft.status) == ("fail", "warn")
    assert soft.results["sample"].severity == "soft"
    assert soft.recommended_stage == "backtest_only"  # still a fail under the profile
    assert strict.ruleset_hash != soft.ruleset_hash


def test_reordered_sample_policy_keeps_the_ruleset_hash():
    reordered = """
selection:
  hysteresis: {exit: 0.4, enter: 0.6, metric: sharpe}
  correlation: {max: 0.8}
  top_k: {k: 3, metric: sharpe}
default_profile_by_stage: {paper_only: paper, backtest_only: backtest}
validation_profiles:
  paper:
    robustness: {dsr_min: 0.25}
    performance: {gain_to_pain_min: 1.2, max_dd_max: 0.2, sharpe_min: 0.8}
    sample: {min_effective_years: 3}
  backtest:
    risk: {participation_rate_p95_max: 0.4, adv_utilization_p95_max: 0.5}
    robustness: {dsr_min: 0.15}
    performance: {gain_to_pain_min: 1, max_dd_max: 0.25, sharpe_min: 0.5}
    sample: {min_trades_total: 50, min_effective_years: 2}
"""
    metrics = GOOD_RUNS["good_set_2"]["metrics"]
    for stage in ("backtest", "paper", "live"):
        assert evaluate_run(metrics, load_policy(reordered), stage).ruleset_hash == evaluate_run(metrics, SAMPLE_POLICY, stage).ruleset_hash


def test_typo_in_the_sample_policy_raises_naming_the_key():
    with pytest.raises(PolicyError) as info:
        load_policy(SAMPLE_POLICY_TEXT.replace("gain_to_pain_min: 1.0", "gain_to_pain_mn: 1.0"))
    assert "validation_profiles.backtest.performance.gain_to_pain_mn: unknown key; did you mean 'gain_to_pain_min'?" in str(info.value)


# ---------------------------------------------------------------------------------------------
# The reference policies evaluate


def test_v1_paper_policy_evaluates_paper_runs():
    policy = load_policy(POLICIES / "v1_paper.yaml")
    good = evaluate_run(GOOD_RUNS["good_stable_2"]["metrics"], policy, "paper")
    assert good.profile == "paper" and good.status == "pass"
    assert good.recommended_stage == "paper_ok_live_candidate"  # no live profile: paper decides
    short = evaluate_run(BAD_RUNS["bad_short_history"]["metrics"], policy, "paper")
    assert failing(short) == ["sample"]
    backtest = evaluate_run(GOOD_RUNS["good_stable_2"]["metrics"], policy, "backtest")
    assert backtest.profile is None and backtest.recommended_stage == "backtest_only"


def test_everything_on_policy_evaluates_with_its_overrides():
    policy = load_policy(POLICIES / "everything_on.yaml")
    result = evaluate_run(GOOD_RUNS["good_stable_2"]["metrics"], policy, "backtest")
    performance = result.results["performance"]
    assert (performance.status, performance.severity) == ("fail", "soft")  # sharpe 0.9 < 1.0, soft
    assert result.results["sample"].owner == "risk"
    assert result.results["risk_constraint"].owner == "ops"
    assert result.results["robustness"].status == "pass"  # gap 0.1 <= 0.3
    assert (result.status, result.recommended_stage) == ("warn", "backtest_only")
    strong = evaluate_run(GOOD_RUNS["good_stable_1"]["metrics"], policy, "backtest")
    assert (strong.status, strong.recommended_stage) == ("pass", "paper_only")


DESIGN_TARGET_RUN = {
    "returns": {"sharpe": 1.3, "max_drawdown": 0.15, "gain_to_pain_ratio": 1.8},
    "sample": {"effective_history_years": 4.0, "n_trades_total": 400, "regime_coverage": {"low_vol": 0.3, "mid_vol": 0.4, "high_vol": 0.3}},
    "risk": {"adv_utilization_p95": 0.1, "participation_rate_p95": 0.1, "incremental_var_99": 0.2, "capacity_estimate_base": 2e7},
    "robustness": {"deflated_sharpe_ratio": 0.7, "sharpe_first_half": 1.2, "sharpe_second_half": 1.4},
}
FRESH = {"data_end": "2024-05-01T15:58:00Z", "submitted_at": "2024-05-01T16:00:00Z"}


def test_design_target_policy_promotes_a_strong_fresh_paper_run():
    policy = load_policy(POLICIES / "design_target.yaml")
    result = evaluate_run(DESIGN_TARGET_RUN, policy, "paper", **FRESH)
    assert result.profile == "paper"
    assert (result.status, result.recommended_stage) == ("pass", "paper_ok_live_candidate")
    assert result.results["robustness"].severity == "blocking"
    backtest = evaluate_run(DESIGN_TARGET_RUN, policy, "backtest", **FRESH)
    assert backtest.recommended_stage == "paper_only"


def test_design_target_policy_fails_closed_on_stale_data_and_missing_risk_inputs():
    policy = load_policy(POLICIES / "design_target.yaml")
    stale = evaluate_run(DESIGN_TARGET_RUN, policy, "paper", data_end="2024-05-01T15:00:00Z", submitted_at="2024-05-01T16:00:00Z")
    assert failing(stale) == ["data_currency"] and stale.results["data_currency"].reason_code == "data_lag_exceeds_max"
    metrics = copy.deepcopy(DESIGN_TARGET_RUN)
    del metrics["risk"]["incremental_var_99"]
    missing = evaluate_run(metrics, policy, "paper", **FRESH)
    assert missing.results["risk_constraint"].reason_code == "risk_metrics_missing"
    assert (missing.status, missing.recommended_stage) == ("fail", "backtest_only")
    calm = copy.deepcopy(DESIGN_TARGET_RUN)
    calm["sample"]["regime_coverage"]["high_vol"] = 0.0
    assert failing(evaluate_run(calm, policy, "paper", **FRESH)) == ["sample"]


def test_design_target_live_run_that_only_clears_paper_is_paper_only():
    policy = load_policy(POLICIES / "design_target.yaml")
    metrics = copy.deepcopy(DESIGN_TARGET_RUN)
    metrics["returns"]["sharpe"] = 0.9  # paper needs 0.8, live 1.0
    result = evaluate_run(metrics, policy, "live", **FRESH)
    assert result.profile == "live" and result.status == "fail"
    assert result.recommended_stage == "paper_only"
