"""The extended-layer rule objects, evaluated directly: pass / warn / fail / missing per layer,
inclusive bounds, hand-checked figures, severity/owner defaults and overrides."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from qmtl_validation.core.extended import build_extended_rules
from qmtl_validation.core.policy import load_policy
from qmtl_validation.core.rules.benchmark import BenchmarkRule, benchmark_thresholds
from qmtl_validation.core.rules.cohort import CohortContext, CohortRule, cohort_contexts, cohort_thresholds
from qmtl_validation.core.rules.core_rules import run_rule
from qmtl_validation.core.rules.live_monitoring import LiveMonitoringContext, LiveMonitoringRule, live_windows
from qmtl_validation.core.rules.paper_shadow import (
    PaperShadowConsistencyRule,
    PaperShadowContext,
    paper_shadow_thresholds,
)
from qmtl_validation.core.rules.portfolio import (
    PortfolioContext,
    PortfolioRule,
    portfolio_sharpe_uplift,
    portfolio_thresholds,
)
from qmtl_validation.core.rules.stress import ScenarioLimits, StressContext, StressRule, stress_scenario_pnl

EULER_GAMMA = 0.5772156649015329


# ---------------------------------------------------------------------------------------------
# portfolio


def portfolio_rule(**kwargs) -> PortfolioRule:
    checks = portfolio_thresholds(0.004, 0.005, 0.0)
    return PortfolioRule(thresholds=checks, **kwargs)


def test_portfolio_within_limits_passes_with_default_severity_and_owner():
    result = portfolio_rule().evaluate({}, PortfolioContext(0.003, 0.0035, 0.1))
    assert (result.status, result.reason_code) == ("pass", "portfolio_ok")
    assert (result.severity, result.owner) == ("soft", "risk")
    assert result.details["thresholds"]["max_incremental_var_99"]["value"] == 0.003


def test_portfolio_bounds_are_inclusive():
    result = portfolio_rule().evaluate({}, PortfolioContext(0.004, 0.005, 0.0))
    assert result.status == "pass"


def test_incremental_var_above_max_fails():
    result = portfolio_rule().evaluate({}, PortfolioContext(0.0041, 0.0035, 0.1))
    assert (result.status, result.reason_code) == ("fail", "incremental_var_exceeds_max")
    assert result.details["violations"] == [
        {"threshold": "max_incremental_var_99", "metric": "incremental_var_99", "reason": "above_max", "value": 0.0041, "max": 0.004}
    ]


def test_incremental_es_and_uplift_breaches_report_every_finding_first_code_first():
    result = portfolio_rule().evaluate({}, PortfolioContext(0.001, 0.006, -0.2))
    assert result.reason_code == "incremental_es_exceeds_max"
    assert [v["threshold"] for v in result.details["violations"]] == ["max_incremental_es_99", "min_portfolio_sharpe_uplift"]
    assert "portfolio_sharpe_uplift -0.2 below minimum 0" in result.reason


@pytest.mark.parametrize(
    ("mode", "status", "code"),
    [("fail", "fail", "incremental_var_missing"), ("warn", "warn", "incremental_var_missing"), ("ignore", "pass", "missing_metric_ignored")],
)
def test_missing_incremental_var_follows_on_missing_metric(mode, status, code):
    result = portfolio_rule(on_missing_metric=mode).evaluate({}, PortfolioContext(None, 0.001, 0.1))
    assert (result.status, result.reason_code) == (status, code)


def test_stale_snapshot_fails_closed_and_blocking_in_a_critical_world():
    snapshot = {"version": "v0004", "lag_seconds": 1800.0, "stale": True, "fallback": False}
    context = PortfolioContext(0.001, 0.001, 0.5, snapshot_stale=True, snapshot=snapshot)
    result = portfolio_rule(fail_closed=True).evaluate({}, context)
    assert (result.status, result.severity, result.reason_code) == ("fail", "blocking", "risk_snapshot_stale")
    assert "v0004 is stale, 1,800s old" in result.reason
    # the same stale snapshot in a world that is not fail-closed is evaluated on its numbers
    relaxed = portfolio_rule().evaluate({}, context)
    assert (relaxed.status, relaxed.severity) == ("pass", "soft")
    assert "stale" in relaxed.reason and relaxed.details["snapshot"]["stale"] is True


def test_a_failed_portfolio_computation_is_a_rule_error_per_on_error():
    context = PortfolioContext(error="covariance has no variance for 'x'")
    assert run_rule(portfolio_rule(), {}, context).reason_code == "rule_error"
    assert run_rule(portfolio_rule(on_error="warn"), {}, context).status == "warn"


def test_sharpe_uplift_matches_the_hand_formula():
    # held a, b: weights 0.6/0.4, annual Sharpes 1.0/0.5, vols 0.01/0.02, sigma_p 0.012;
    # candidate c: Sharpe 1.5, vol 0.015, enters at 0.2, sigma_with 0.011
    uplift = portfolio_sharpe_uplift(
        weights=np.array([0.6, 0.4]),
        sharpes=np.array([1.0, 0.5]),
        volatilities=np.array([0.01, 0.02]),
        base_volatility=0.012,
        candidate_sharpes=np.array([1.5]),
        candidate_volatilities=np.array([0.015]),
        with_volatilities=np.array([0.011]),
        candidate_weight=0.2,
    )
    expected = (0.8 * 0.01 + 0.2 * 1.5 * 0.015) / 0.011 - 0.01 / 0.012
    assert uplift[0] == pytest.approx(expected, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# stress

STRESS_LIMITS = {"crash": ScenarioLimits(dd_max=0.25, var_99=0.04, es_99=0.06), "rates": ScenarioLimits(dd_max=0.1)}


def test_world_level_stress_within_limits_passes_as_info_owned_by_ops():
    stress = {"crash": {"max_drawdown": 0.2, "var_99": 0.04, "es_99": 0.05}, "rates": {"dd_max": 0.1}}
    result = StressRule(scenarios=STRESS_LIMITS).evaluate({}, StressContext(strategy_id="a", snapshot_stress=stress))
    assert (result.status, result.reason_code, result.severity, result.owner) == ("pass", "stress_ok", "info", "ops")
    assert result.details["scenarios"]["rates"]["max_drawdown"] == 0.1  # dd_max accepted for max_drawdown
    assert result.details["scenarios"]["crash"]["source"] == "snapshot_world"


def test_stress_compares_absolute_values_and_reports_the_first_failure():
    # producers reporting losses negative: |−0.3| > 0.25; the missing rates figure only warns
    stress = {"crash": {"max_drawdown": -0.3, "var_99": -0.03, "es_99": -0.07}}
    result = StressRule(scenarios=STRESS_LIMITS, on_missing_metric="warn").evaluate(
        {}, StressContext(strategy_id="a", snapshot_stress=stress)
    )
    assert result.status == "fail"
    assert result.reason_code == "crash_dd_exceeds_max"
    codes = [v["threshold"] for v in result.details["violations"]]
    assert codes == ["crash.dd_max", "crash.es_99", "rates.dd_max"]
    assert result.details["violations"][-1]["reason"] == "missing_metric"
    assert "stress.crash.es_99 0.07 above maximum 0.06" in result.reason


def test_missing_stress_scenario_is_missing_not_passed():
    result = StressRule(scenarios={"crash": ScenarioLimits(var_99=0.04)}).evaluate({}, StressContext(strategy_id="a"))
    assert (result.status, result.reason_code) == ("fail", "crash_var_missing")


def test_strategy_entry_wins_over_run_metrics_which_win_over_the_world_entry():
    stress = {
        "crash": {"max_drawdown": 0.5},
        "strategies": {"a": {"crash": {"max_drawdown": 0.1}}},
    }
    rule = StressRule(scenarios={"crash": ScenarioLimits(dd_max=0.25)})
    metrics = {"stress": {"crash": {"max_drawdown": 0.2}}}
    by_strategy = rule.evaluate(metrics, StressContext(strategy_id="a", snapshot_stress=stress))
    by_metrics = rule.evaluate(metrics, StressContext(strategy_id="b", snapshot_stress=stress))
    by_world = rule.evaluate({}, StressContext(strategy_id="b", snapshot_stress=stress))
    assert by_strategy.details["scenarios"]["crash"]["source"] == "snapshot_strategy" and by_strategy.status == "pass"
    assert by_metrics.details["scenarios"]["crash"]["source"] == "metrics" and by_metrics.status == "pass"
    assert by_world.details["scenarios"]["crash"]["source"] == "snapshot_world" and by_world.status == "fail"


def test_per_strategy_stress_blocks_keyed_by_strategy_id():
    stress = {"a": {"crash": {"max_drawdown": 0.3, "var_99": 0.01, "es_99": 0.02}}}
    result = StressRule(scenarios=STRESS_LIMITS, on_missing_metric="ignore").evaluate(
        {}, StressContext(strategy_id="a", snapshot_stress=stress)
    )
    assert result.reason_code == "crash_dd_exceeds_max"
    assert result.details["ignored_missing_metrics"] == ["stress.rates.max_drawdown"]


def test_scenario_pnl_from_shocks_matches_the_hand_sum():
    stress = {"crash": {"max_drawdown": 0.2, "shocks": {"a": -0.1, "b": -0.2, "c": -0.05}}, "rates": {"shocks": {"a": 0.01}}}
    pnl = stress_scenario_pnl(stress, {"a": 0.6, "b": 0.4, "z": 0.0})
    assert pnl["crash"]["portfolio_pnl"] == pytest.approx(0.6 * -0.1 + 0.4 * -0.2, abs=1e-15)
    assert pnl["crash"]["covered_weight"] == 1.0 and pnl["crash"]["missing_shocks"] == []
    # b has no rates shock: left out of the sum and flagged, never counted as 0 silently
    assert pnl["rates"]["portfolio_pnl"] == pytest.approx(0.006, abs=1e-15)
    assert pnl["rates"]["covered_weight"] == pytest.approx(0.6) and pnl["rates"]["missing_shocks"] == ["b"]
    context = StressContext(strategy_id="c", snapshot_stress=stress, scenario_pnl=pnl, candidate_weight=0.2)
    details = StressRule(scenarios={}).evaluate({}, context).details["scenario_pnl"]["crash"]
    assert details["strategy_shock"] == -0.05
    assert details["pnl_with_candidate"] == pytest.approx(0.8 * -0.14 + 0.2 * -0.05, abs=1e-15)


def test_a_non_numeric_shock_is_an_error():
    with pytest.raises(ValueError, match="stress.crash.shocks.a must be a finite number"):
        stress_scenario_pnl({"crash": {"shocks": {"a": "big"}}}, {"a": 1.0})


def test_malformed_snapshot_stress_becomes_a_rule_error():
    result = run_rule(StressRule(scenarios=STRESS_LIMITS), {}, StressContext(strategy_id="a", snapshot_stress={"crash": 3}))
    assert (result.status, result.reason_code) == ("fail", "rule_error")


# ---------------------------------------------------------------------------------------------
# live monitoring


def window(w, sharpe, dd, decay, backtest=2.0):
    return {"window": w, "n_periods": w, "sharpe": sharpe, "max_drawdown": dd, "backtest_sharpe": backtest, "sharpe_decay_ratio": decay}


LIVE = LiveMonitoringRule(sharpe_min=0.5, dd_max=0.2, decay_threshold=0.5)


def test_live_strategy_within_limits_passes_and_is_not_a_demotion_candidate():
    rows = [window(30, 1.2, 0.05, 0.6), window(60, 1.5, 0.08, 0.75), window(90, 1.4, 0.1, 0.7)]
    result = LIVE.evaluate({}, LiveMonitoringContext(strategy_id="s1", windows=rows))
    assert (result.status, result.reason_code, result.severity, result.owner) == ("pass", "live_monitoring_ok", "soft", "risk")
    assert result.details["demotion_candidate"] is False
    assert [w["window"] for w in result.details["windows"]] == [30, 60, 90]


def test_live_breaches_list_their_windows_and_flag_demotion():
    rows = [window(90, 0.9, 0.12, 0.45), window(30, -0.4, 0.21, -0.2), window(60, 0.5, 0.2, 0.25)]
    result = LIVE.evaluate({}, LiveMonitoringContext(strategy_id="s2", windows=rows))
    assert (result.status, result.reason_code) == ("fail", "live_sharpe_below_min")
    assert result.details["breached_windows"] == {"sharpe": [30], "max_drawdown": [30], "sharpe_decay_ratio": [30, 60, 90]}
    assert result.details["demotion_candidate"] is True
    # 0.5 Sharpe and 0.2 drawdown in the 60-period window sit exactly on the bounds: no breach
    sixty = next(w for w in result.details["windows"] if w["window"] == 60)
    assert sixty["breaches"] == ["live_decay_below_threshold"]
    assert "realized Sharpe -0.4 below minimum 0.5 over the last 30 periods" in result.reason


def test_no_backtest_sharpe_makes_decay_missing_per_mode():
    rows = [window(w, 1.0, 0.05, float("nan"), backtest=None) for w in (30, 60, 90)]
    warn = LiveMonitoringRule(decay_threshold=0.5, on_missing_metric="warn").evaluate({}, LiveMonitoringContext("s", rows))
    assert (warn.status, warn.reason_code) == ("warn", "live_decay_missing")
    ignored = LiveMonitoringRule(decay_threshold=0.5, on_missing_metric="ignore").evaluate({}, LiveMonitoringContext("s", rows))
    assert (ignored.status, ignored.reason_code) == ("pass", "missing_metric_ignored")


def test_no_realized_series_fails_every_configured_live_figure():
    result = LIVE.evaluate({}, LiveMonitoringContext(strategy_id="s", windows=(), notes=("no realized returns",)))
    assert result.reason_code == "live_sharpe_missing"
    assert result.details["missing_metrics"] == [
        "live_monitoring.sharpe", "live_monitoring.max_drawdown", "live_monitoring.sharpe_decay_ratio"
    ]
    assert result.details["missing_windows"] == [30, 60, 90]


def test_lookback_days_is_the_longest_window():
    assert live_windows(None) == (30, 60, 90)
    assert live_windows(60) == (30, 60)
    assert live_windows(45) == (30, 45)
    assert live_windows(120) == (30, 60, 90, 120)
    assert live_windows(10) == (10,)
    rule = LiveMonitoringRule(sharpe_min=0.5, lookback_days=60)
    rows = [window(30, 1.0, 0.0, 1.0), window(60, 1.0, 0.0, 1.0), window(90, -3.0, 0.0, 1.0)]
    assert rule.evaluate({}, LiveMonitoringContext("s", rows)).status == "pass"  # 90 is outside the lookback


# ---------------------------------------------------------------------------------------------
# cohort


def cohort_batch():
    """Four runs of one campaign: per-period Sharpes 0.10, 0.06, 0.03, 0.08 over 500 periods."""
    rows = [(0.10, -0.5, 1.0, 1), (0.06, 0.0, 0.5, 1), (0.03, 0.2, 0.0, 10), (0.08, -1.0, 3.0, 1)]
    return [
        {
            "returns": {"sharpe": sr * math.sqrt(252), "sharpe_per_period": sr, "skew": skew, "excess_kurtosis": excess},
            "sample": {"n_periods": 500},
            "diagnostics": {"search_intensity": trials},
        }
        for sr, skew, excess, trials in rows
    ]


def hand_dsr(sr, skew, excess, n_trials, variance, n_obs=500):
    sr0 = math.sqrt(variance) * (
        (1 - EULER_GAMMA) * norm.ppf(1 - 1 / n_trials) + EULER_GAMMA * norm.ppf(1 - 1 / (n_trials * math.e))
    )
    sigma = math.sqrt((1 - skew * sr + (excess + 3 - 1) / 4 * sr**2) / (n_obs - 1))
    return norm.cdf((sr - sr0) / sigma)


def test_cohort_dsr_uses_the_cross_trial_variance_of_the_campaign():
    contexts = cohort_contexts(cohort_batch(), campaign_id="camp", stage="backtest")
    # V by hand: mean 0.0675, squared deviations 0.00105625, 0.00005625, 0.00140625, 0.00015625
    variance = (0.00105625 + 0.00005625 + 0.00140625 + 0.00015625) / 3
    assert contexts[0].trials_sharpe_variance == pytest.approx(variance, abs=1e-15)
    expected = [
        hand_dsr(0.10, -0.5, 1.0, 4, variance),
        hand_dsr(0.06, 0.0, 0.5, 4, variance),
        hand_dsr(0.03, 0.2, 0.0, 10, variance),  # N = its own search intensity, above the campaign size
        hand_dsr(0.08, -1.0, 3.0, 4, variance),
    ]
    assert [c.deflated_sharpe_ratio for c in contexts] == pytest.approx(expected, abs=1e-12)
    assert [c.n_trials for c in contexts] == [4, 4, 10, 4]
    assert contexts[0].median_dsr == pytest.approx((expected[1] + expected[3]) / 2, abs=1e-12)
    assert contexts[0].median_sharpe == pytest.approx(0.07 * math.sqrt(252), abs=1e-12)
    assert [c.rank for c in contexts] == [1, 3, 4, 2]


def test_cohort_medians_and_top_k_pass_and_fail():
    contexts = cohort_contexts(cohort_batch(), campaign_id="camp")
    rule = CohortRule(thresholds=cohort_thresholds(1.0, 0.79), top_k=2)
    results = [rule.evaluate({}, c) for c in contexts]
    assert [r.status for r in results] == ["pass", "fail", "fail", "pass"]
    assert results[1].reason_code == "cohort_top_k_exceeded"
    assert results[1].reason == "rank 3 of 4 in campaign camp outside top_k=2"
    assert (results[0].severity, results[0].owner) == ("soft", "risk")
    stricter = CohortRule(thresholds=cohort_thresholds(1.2, 0.80))
    failed = stricter.evaluate({}, contexts[0])
    assert failed.reason_code == "cohort_median_sharpe_below_min"
    assert [v["threshold"] for v in failed.details["violations"]] == ["sharpe_median_min", "dsr_median_min"]


def test_cohort_top_k_is_inclusive_and_medians_on_the_bound_pass():
    rule = CohortRule(thresholds=cohort_thresholds(1.0, 0.5), top_k=3)
    at_bounds = CohortContext(campaign_id="c", size=5, median_sharpe=1.0, median_dsr=0.5, rank=3)
    assert (rule.evaluate({}, at_bounds).status, rule.evaluate({}, at_bounds).reason_code) == ("pass", "cohort_ok")
    fourth = CohortContext(campaign_id="c", size=5, median_sharpe=1.0, median_dsr=0.5, rank=4)
    assert rule.evaluate({}, fourth).reason_code == "cohort_top_k_exceeded"


def test_cohort_ties_share_the_best_rank():
    batch = [{"returns": {"sharpe": s}} for s in (1.0, 2.0, 2.0, 0.5)]
    assert [c.rank for c in cohort_contexts(batch)] == [3, 1, 1, 4]


def test_cohort_without_sharpes_reports_missing_medians_and_unrankable_runs():
    contexts = cohort_contexts([{"returns": {}}, {"returns": {}}], campaign_id="camp")
    assert contexts[0].variance_source == "sharpe_estimator"
    rule = CohortRule(thresholds=cohort_thresholds(1.0, 0.5), top_k=1, on_missing_metric="warn")
    result = rule.evaluate({}, contexts[0])
    assert (result.status, result.reason_code) == ("warn", "median_sharpe_missing")
    assert result.details["missing_metrics"] == ["median_sharpe", "median_dsr", "returns.sharpe"]
    top_k_only = CohortRule(top_k=1).evaluate({}, contexts[0])
    assert top_k_only.reason_code == "top_k_unavailable"


def test_cohort_of_one_run_falls_back_to_the_estimator_variance():
    (context,) = cohort_contexts(cohort_batch()[:1])
    assert context.trials_sharpe_variance is None and context.n_trials == 1
    # N = 1: SR0 = 0, the DSR is the PSR against 0
    sigma = math.sqrt((1 + 0.5 * 0.1 + (4.0 - 1) / 4 * 0.01) / 499)
    assert context.deflated_sharpe_ratio == pytest.approx(norm.cdf(0.1 / sigma), abs=1e-12)


# ---------------------------------------------------------------------------------------------
# paper / shadow consistency

PAPER = {"returns": {"sharpe": 1.0, "max_drawdown": 0.15, "var_p01": 0.02, "es_p01": 0.03}}
BACKTEST = {"returns": {"sharpe": 2.0, "max_drawdown": 0.1, "var_p01": 0.01, "es_p01": 0.02}}


def paper_rule(**kwargs) -> PaperShadowConsistencyRule:
    return PaperShadowConsistencyRule(thresholds=paper_shadow_thresholds(0.5, 1.5, 1.8, 1.5), **kwargs)


def test_paper_ratios_are_computed_against_the_backtest_and_bounds_are_inclusive():
    result = paper_rule().evaluate(PAPER, PaperShadowContext("bt-1", BACKTEST))
    assert result.details["ratios"] == pytest.approx(
        {"sharpe_ratio": 0.5, "drawdown_ratio": 1.5, "var_p01_ratio": 2.0, "es_p01_ratio": 1.5}
    )
    assert (result.status, result.reason_code) == ("fail", "paper_shadow_var_ratio_exceeds_max")
    assert [v["threshold"] for v in result.details["violations"]] == ["max_var_p01_ratio"]
    assert (result.severity, result.owner) == ("soft", "ops")
    assert result.details["baseline_run_id"] == "bt-1"


def test_paper_sharpe_ratio_below_min_fails():
    weak = {"returns": {**PAPER["returns"], "sharpe": 0.8}}
    result = PaperShadowConsistencyRule(thresholds=paper_shadow_thresholds(0.5, None, None, None)).evaluate(
        weak, PaperShadowContext("bt-1", BACKTEST)
    )
    assert (result.status, result.reason_code) == ("fail", "paper_shadow_sharpe_ratio_below_min")


def test_no_backtest_baseline_makes_every_ratio_missing():
    result = paper_rule(on_missing_metric="warn").evaluate(PAPER, PaperShadowContext())
    assert (result.status, result.reason_code) == ("warn", "paper_shadow_sharpe_ratio_missing")
    assert result.details["notes"]["drawdown_ratio"] == "no backtest run of the strategy"


def test_a_non_positive_backtest_sharpe_gives_no_sharpe_ratio():
    negative = {"returns": {**BACKTEST["returns"], "sharpe": -0.5}}
    result = paper_rule().evaluate(PAPER, PaperShadowContext("bt-1", negative))
    assert result.details["ratios"]["sharpe_ratio"] is None
    assert result.details["notes"]["sharpe_ratio"] == "backtest Sharpe is not positive"
    assert result.reason_code == "paper_shadow_sharpe_ratio_missing"


def test_paper_shadow_applies_only_to_listed_stages():
    rule = PaperShadowConsistencyRule(stages=("paper", "Shadow"))
    assert rule.applies_to("paper") and rule.applies_to("shadow")
    assert not rule.applies_to("backtest") and not rule.applies_to("live") and not rule.applies_to(None)


# ---------------------------------------------------------------------------------------------
# benchmark


def benchmark_rule(**kwargs) -> BenchmarkRule:
    return BenchmarkRule(thresholds=benchmark_thresholds(0.0), **kwargs)


def test_benchmark_uplift_at_the_minimum_passes_and_below_fails():
    at = benchmark_rule().evaluate({"benchmark": {"vs_benchmark_sharpe": 0.0}})
    below = benchmark_rule().evaluate({"benchmark": {"vs_benchmark_sharpe": -0.01}})
    assert (at.status, at.reason_code, at.severity, at.owner) == ("pass", "benchmark_ok", "soft", "quant")
    assert (below.status, below.reason_code) == ("fail", "benchmark_uplift_below_min")


@pytest.mark.parametrize(
    ("mode", "status", "code"),
    [("fail", "fail", "benchmark_uplift_missing"), ("warn", "warn", "benchmark_uplift_missing"), ("ignore", "pass", "missing_metric_ignored")],
)
def test_run_without_benchmark_follows_on_missing_metric(mode, status, code):
    result = benchmark_rule(on_missing_metric=mode).evaluate({"returns": {"sharpe": 1.0}})
    assert (result.status, result.reason_code) == (status, code)


# ---------------------------------------------------------------------------------------------
# building the rules from a policy


def test_layers_get_default_severities_and_owners_and_only_configured_layers_exist():
    policy = load_policy(
        """
cohort: {top_k: 3}
portfolio: {max_incremental_var_99: 0.01}
stress: {scenarios: {crash: {dd_max: 0.3}}}
live_monitoring: {sharpe_min: 0.5}
paper_shadow_consistency: {min_sharpe_ratio: 0.5}
"""
    )
    rules = build_extended_rules(policy)
    assert list(rules) == ["cohort", "portfolio", "stress", "live_monitoring", "paper_shadow_consistency"]
    assert {n: (r.severity, r.owner) for n, r in rules.items()} == {
        "cohort": ("soft", "risk"),
        "portfolio": ("soft", "risk"),
        "stress": ("info", "ops"),
        "live_monitoring": ("soft", "risk"),
        "paper_shadow_consistency": ("soft", "ops"),
    }
    assert rules["paper_shadow_consistency"].stages == ("paper", "shadow")


def test_section_overrides_and_the_profile_portfolio_block():
    policy = load_policy(
        """
validation_profiles:
  live: {portfolio: {max_incremental_var_99: 0.003, min_portfolio_sharpe_uplift: 0.1, owner: quant}}
  paper: {}
portfolio: {max_incremental_var_99: 0.005, severity: blocking}
stress: {scenarios: {crash: {dd_max: 0.3}}, severity: soft, owner: risk}
validation: {on_missing_metric: warn, on_error: warn}
"""
    )
    top = build_extended_rules(policy, "paper")["portfolio"]
    live = build_extended_rules(policy, "live")["portfolio"]
    assert [(t.key, t.max, t.source) for t in top.thresholds] == [
        ("max_incremental_var_99", 0.005, "portfolio.max_incremental_var_99")
    ]
    assert (top.severity, top.owner) == ("blocking", "risk")
    assert [t.key for t in live.thresholds] == ["max_incremental_var_99", "min_portfolio_sharpe_uplift"]
    assert live.thresholds[0].source == "validation_profiles.live.portfolio.max_incremental_var_99"
    assert (live.severity, live.owner) == ("soft", "quant")
    stress = build_extended_rules(policy)["stress"]
    assert (stress.severity, stress.owner, stress.on_missing_metric, stress.on_error) == ("soft", "risk", "warn", "warn")


def test_a_fail_closed_world_cannot_loosen_a_layer_and_forces_fail_fail():
    policy = load_policy(
        """
risk_profile: {tier: high, client_critical: true}
validation: {on_missing_metric: ignore, on_error: warn}
portfolio: {max_incremental_var_99: 0.005, severity: info}
live_monitoring: {sharpe_min: 0.3, severity: blocking}
"""
    )
    rules = build_extended_rules(policy)
    assert rules["portfolio"].severity == "soft" and rules["portfolio"].fail_closed is True
    assert rules["live_monitoring"].severity == "blocking"
    assert (rules["portfolio"].on_missing_metric, rules["portfolio"].on_error) == ("fail", "fail")
