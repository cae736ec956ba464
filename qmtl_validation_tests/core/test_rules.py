"""The five core rules, evaluated directly on metrics and context."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pandas as pd
import pytest

from qmtl_validation.core.evaluation import EvaluationContext
from qmtl_validation.core.policy import load_policy
from qmtl_validation.core.rules.core_rules import (
    DataCurrencyRule,
    PerformanceRule,
    RiskConstraintRule,
    RobustnessRule,
    SampleRule,
    build_core_rules,
    run_rule,
)

GOOD = {
    "returns": {"sharpe": 1.2, "max_drawdown": 0.12, "gain_to_pain_ratio": 1.8},
    "sample": {"effective_history_years": 5.0, "n_trades_total": 500, "regime_coverage": {"low_vol": 0.4, "mid_vol": 0.4, "high_vol": 0.2}},
    "risk": {"adv_utilization_p95": 0.1, "participation_rate_p95": 0.05, "incremental_var_99": 0.2, "capacity_estimate_base": 8e6},
    "robustness": {"deflated_sharpe_ratio": 0.8, "sharpe_first_half": 1.1, "sharpe_second_half": 1.3},
}


def rules_of(text: str, profile: str | None = "bt", tier: str | None = None) -> dict:
    policy = load_policy(text)
    return {rule.name: rule for rule in build_core_rules(policy, profile, tier=tier)}


def ctx(**kwargs) -> EvaluationContext:
    return EvaluationContext.from_kwargs(**kwargs)


def with_value(path: str, value) -> dict:
    metrics = {block: dict(values) for block, values in GOOD.items()}
    block, _, leaf = path.partition(".")
    metrics.setdefault(block, {})[leaf] = value
    return metrics


# ---------------------------------------------------------------------------------------------
# data_currency

DC_POLICY = "validation_profiles: {bt: {data_currency: {max_lag: 2h, min_history: 180d}}}"


def test_data_lag_within_max_passes_and_reports_the_lag():
    rule = rules_of(DC_POLICY)["data_currency"]
    result = rule.evaluate(GOOD, ctx(data_end=datetime(2024, 5, 1, 20, 0), submitted_at="2024-05-01T21:30:00Z"))
    assert result.status == "pass" and result.reason_code == "data_currency_ok"
    assert result.details["lag_seconds"] == 5400
    assert result.severity == "blocking" and result.owner == "ops"


def test_data_lag_above_max_fails():
    rule = rules_of(DC_POLICY)["data_currency"]
    result = rule.evaluate(GOOD, ctx(data_end=datetime(2024, 5, 1, 20, 0), submitted_at=datetime(2024, 5, 1, 22, 0, 1)))
    assert result.status == "fail" and result.reason_code == "data_lag_exceeds_max"
    assert "above maximum 2h" in result.reason


def test_a_date_data_end_covers_its_whole_day():
    rule = rules_of(DC_POLICY)["data_currency"]
    # daily data for 2024-05-01 ends at midnight; submitted 01:30 the next day = 1.5 h lag
    ok = rule.evaluate(GOOD, ctx(data_end=date(2024, 5, 1), submitted_at="2024-05-02T01:30:00"))
    assert ok.status == "pass" and ok.details["lag_seconds"] == 5400
    late = rule.evaluate(GOOD, ctx(data_end="2024-05-01", submitted_at="2024-05-02T02:30:00"))
    assert late.reason_code == "data_lag_exceeds_max"
    # a daily date that travelled through a datetime column (naive midnight) reads the same way
    via_column = rule.evaluate(GOOD, ctx(data_end=pd.Timestamp("2024-05-01"), submitted_at="2024-05-02T01:30:00"))
    assert via_column.details["lag_seconds"] == 5400
    # an explicit instant is used as is
    instant = rule.evaluate(GOOD, ctx(data_end="2024-05-01T00:00:00Z", submitted_at="2024-05-02T01:30:00"))
    assert instant.details["lag_seconds"] == 91800


def test_lag_uses_now_when_submission_time_is_unknown():
    rule = rules_of(DC_POLICY)["data_currency"]
    result = rule.evaluate(GOOD, ctx(data_end=datetime(2024, 5, 1, 20), now=datetime(2024, 5, 3, tzinfo=timezone.utc)))
    assert result.reason_code == "data_lag_exceeds_max"


def test_min_history_compares_effective_history_in_days():
    rule = rules_of(DC_POLICY)["data_currency"]
    context = ctx(data_end=date(2024, 5, 1), submitted_at="2024-05-02T00:00:00")
    short = rule.evaluate(with_value("sample.effective_history_years", 0.4), context)
    assert short.status == "fail" and short.reason_code == "history_below_min"
    assert short.details["history_days"] == pytest.approx(0.4 * 365.25)
    exact = rule.evaluate(with_value("sample.effective_history_years", 180 / 365.25), context)
    assert exact.status == "pass"


@pytest.mark.parametrize(
    ("mode", "status", "code"),
    [("fail", "fail", "missing_metric"), ("warn", "warn", "missing_metric"), ("ignore", "pass", "missing_metric_ignored")],
)
def test_missing_data_end_follows_on_missing_metric(mode, status, code):
    rule = rules_of(DC_POLICY + f"\nvalidation: {{on_missing_metric: {mode}}}")["data_currency"]
    result = rule.evaluate(GOOD, ctx(submitted_at="2024-05-02T00:00:00"))
    assert (result.status, result.reason_code) == (status, code)
    if mode == "ignore":
        assert result.details["ignored_missing_metrics"] == ["context.data_end"]
    else:
        assert result.details["missing_metrics"] == ["context.data_end"]


def test_no_metrics_at_all_fails_data_currency_whatever_the_mode():
    rule = rules_of("validation: {on_missing_metric: ignore}", profile=None)["data_currency"]
    result = rule.evaluate({"returns": {"sharpe": None}, "sample": {}}, ctx())
    assert result.status == "fail" and result.reason_code == "metrics_missing"


def test_data_currency_thresholds_from_selection_are_checked_here():
    rules = rules_of("selection: {thresholds: {lag: {metric: lag_seconds, max: 60}}}", profile=None)
    metrics = {"diagnostics": {"extra_metrics": {"lag_seconds": 90}}}
    result = rules["data_currency"].evaluate(metrics, ctx())
    assert result.reason_code == "data_currency_thresholds_failed"
    assert [v["threshold"] for v in result.details["violations"]] == ["lag"]
    assert rules["performance"].thresholds == ()


# ---------------------------------------------------------------------------------------------
# sample

SAMPLE_POLICY = "validation_profiles: {bt: {sample: {min_effective_years: 2, min_trades_total: 50, require_high_vol_regime: true}}}"


def test_sample_passes_with_enough_history_trades_and_a_high_vol_regime():
    result = rules_of(SAMPLE_POLICY)["sample"].evaluate(GOOD, ctx())
    assert result.status == "pass" and result.reason_code == "sample_ok"
    assert result.details["high_vol_share"] == 0.2


def test_sample_without_a_high_vol_regime_fails():
    metrics = with_value("sample.regime_coverage", {"low_vol": 0.5, "mid_vol": 0.5, "high_vol": 0.0})
    result = rules_of(SAMPLE_POLICY)["sample"].evaluate(metrics, ctx())
    assert result.status == "fail" and result.reason_code == "sample_thresholds_failed"
    assert result.details["violations"][0]["reason"] == "no_high_vol_regime"


def test_short_history_fails_sample_with_every_breach_listed():
    metrics = with_value("sample.effective_history_years", 0.5)
    metrics["sample"]["n_trades_total"] = 20
    result = rules_of(SAMPLE_POLICY)["sample"].evaluate(metrics, ctx())
    assert result.reason_code == "sample_thresholds_failed"
    assert result.reason == "sample.effective_history_years 0.5 below minimum 2; sample.n_trades_total 20 below minimum 50"
    assert [v["reason"] for v in result.details["violations"]] == ["below_min", "below_min"]


def test_sample_minimum_is_inclusive():
    metrics = with_value("sample.effective_history_years", 2.0)
    metrics["sample"]["n_trades_total"] = 50
    assert rules_of(SAMPLE_POLICY)["sample"].evaluate(metrics, ctx()).status == "pass"


# ---------------------------------------------------------------------------------------------
# performance

PERF_POLICY = """
validation_profiles: {bt: {performance: {sharpe_min: 0.5, max_dd_max: 0.25, gain_to_pain_min: 1.0}}}
selection: {top_k: {metric: sharpe, k: 3}}
"""


def test_performance_reports_rank_and_passes_inside_top_k():
    result = rules_of(PERF_POLICY)["performance"].evaluate(GOOD, ctx(rank=3))
    assert result.status == "pass" and result.reason_code == "performance_ok"
    assert result.details["rank"] == 3 and result.details["top_k"] == {"metric": "returns.sharpe", "k": 3}
    assert result.tags == ("performance", "thresholds", "top_k")


def test_performance_fails_outside_top_k():
    result = rules_of(PERF_POLICY)["performance"].evaluate(GOOD, ctx(rank=4))
    assert result.reason_code == "performance_rank_outside_top_k"
    assert result.reason == "Rank 4 outside top_k=3"


def test_a_single_run_is_rank_one():
    result = rules_of(PERF_POLICY)["performance"].evaluate(GOOD, ctx())
    assert result.details["rank"] == 1 and result.status == "pass"


def test_drawdown_above_maximum_fails_performance():
    result = rules_of(PERF_POLICY)["performance"].evaluate(with_value("returns.max_drawdown", 0.45), ctx())
    assert result.reason_code == "performance_thresholds_failed"
    assert result.reason == "returns.max_drawdown 0.45 above maximum 0.25"
    assert result.details["violations"] == [
        {"threshold": "max_drawdown", "metric": "returns.max_drawdown", "reason": "above_max", "value": 0.45, "max": 0.25}
    ]


@pytest.mark.parametrize("bad", [None, "1.2", True, float("nan")])
def test_null_non_numeric_or_nan_metric_counts_as_missing(bad):
    result = rules_of(PERF_POLICY)["performance"].evaluate(with_value("returns.sharpe", bad), ctx())
    assert result.status == "fail" and result.reason_code == "performance_metrics_missing"
    assert result.details["missing_metrics"] == ["returns.sharpe"]  # once, though top_k reads it too


def test_bare_threshold_names_never_pick_another_block():
    rules = rules_of("selection: {thresholds: {sharpe: {min: 1.0}}}", profile=None)
    metrics = {"benchmark": {"sharpe": 3.0}, "returns": {"sharpe": 0.5}}
    result = rules["performance"].evaluate(metrics, ctx())
    assert result.status == "fail"
    assert result.details["thresholds"]["sharpe"]["metric"] == "returns.sharpe"
    assert result.details["thresholds"]["sharpe"]["value"] == 0.5


# ---------------------------------------------------------------------------------------------
# robustness

ROB_POLICY = "validation_profiles: {bt: {robustness: {dsr_min: 0.15, cv_sharpe_gap_max: 0.4}}}"


def test_dsr_below_minimum_is_a_soft_fail():
    result = rules_of(ROB_POLICY)["robustness"].evaluate(with_value("robustness.deflated_sharpe_ratio", 0.02), ctx())
    assert (result.status, result.severity, result.owner) == ("fail", "soft", "quant")
    assert result.reason_code == "dsr_below_min"


def test_robustness_is_blocking_in_a_high_tier_world():
    rule = rules_of(ROB_POLICY, tier="high")["robustness"]
    assert rule.severity == "blocking"


def test_half_sample_sharpe_gap_above_maximum_fails():
    metrics = with_value("robustness.sharpe_first_half", 1.2)
    metrics["robustness"]["sharpe_second_half"] = 0.6
    result = rules_of(ROB_POLICY)["robustness"].evaluate(metrics, ctx())
    assert result.reason_code == "cv_sharpe_gap_exceeds_max"
    assert result.details["sharpe_gap"] == pytest.approx(0.6)


def test_gap_exactly_at_maximum_passes():
    metrics = with_value("robustness.sharpe_first_half", 1.0)
    metrics["robustness"]["sharpe_second_half"] = 0.5
    rule = rules_of("validation_profiles: {bt: {robustness: {cv_sharpe_gap_max: 0.5}}}")["robustness"]
    assert rule.evaluate(metrics, ctx()).status == "pass"


def test_missing_dsr_reports_dsr_missing():
    metrics = with_value("robustness.deflated_sharpe_ratio", None)
    result = rules_of(ROB_POLICY + "\nvalidation: {on_missing_metric: warn}")["robustness"].evaluate(metrics, ctx())
    assert (result.status, result.reason_code) == ("warn", "dsr_missing")


def test_dsr_threshold_in_selection_is_reported_by_robustness_not_performance():
    rules = rules_of("selection: {thresholds: {dsr: {metric: deflated_sharpe_ratio, min: 0.5}}}", profile=None)
    metrics = with_value("robustness.deflated_sharpe_ratio", 0.3)
    assert rules["robustness"].evaluate(metrics, ctx()).reason_code == "dsr_below_min"
    assert rules["performance"].evaluate(metrics, ctx()).status == "pass"


# ---------------------------------------------------------------------------------------------
# risk_constraint

RISK_POLICY = """
validation_profiles:
  bt:
    risk: {adv_utilization_p95_max: 0.5, participation_rate_p95_max: 0.4, incremental_var_99_max: 0.3, capacity_estimate_base_min: 5000000}
selection:
  correlation: {max: 0.8}
  hysteresis: {metric: sharpe, enter: 0.6, exit: 0.4}
"""


def test_liquidity_breach_fails_risk_constraint_owned_by_risk():
    metrics = with_value("risk.adv_utilization_p95", 0.8)
    metrics["risk"]["participation_rate_p95"] = 0.5
    result = rules_of(RISK_POLICY)["risk_constraint"].evaluate(metrics, ctx())
    assert (result.status, result.severity, result.owner) == ("fail", "blocking", "risk")
    assert result.reason_code == "risk_thresholds_failed"
    assert {v["metric"] for v in result.details["violations"]} == {"risk.adv_utilization_p95", "risk.participation_rate_p95"}


def test_incremental_var_and_capacity_limits():
    rule = rules_of(RISK_POLICY)["risk_constraint"]
    over = rule.evaluate(with_value("risk.incremental_var_99", 0.31), ctx())
    assert over.details["violations"][0]["metric"] == "risk.incremental_var_99"
    small = rule.evaluate(with_value("risk.capacity_estimate_base", 1e6), ctx())
    assert "risk.capacity_estimate_base 1,000,000 below minimum 5,000,000" in small.reason


def test_correlation_above_max_with_a_kept_run_blocks():
    rule = rules_of(RISK_POLICY)["risk_constraint"]
    result = rule.evaluate(GOOD, ctx(correlations={"s2": 0.85, "s3": -0.2}))
    assert result.reason_code == "correlation_constraint_failed"
    assert result.details["blocked_by"] == [{"strategy_id": "s2", "correlation": 0.85, "imputed": False}]
    assert rule.evaluate(GOOD, ctx(correlations={"s2": 0.8})).status == "pass"  # inclusive


def test_correlation_without_data_is_reported_as_not_checked():
    result = rules_of(RISK_POLICY)["risk_constraint"].evaluate(GOOD, ctx())
    assert result.status == "pass"
    assert result.details["correlation"] == {"max": 0.8, "checked": False}


def test_hysteresis_new_run_must_reach_enter_and_active_run_stay_above_exit():
    rule = rules_of(RISK_POLICY)["risk_constraint"]
    metrics = with_value("returns.sharpe", 0.5)
    new = rule.evaluate(metrics, ctx())
    assert new.reason_code == "hysteresis_not_entered"
    active = rule.evaluate(metrics, ctx(previously_active=True))
    assert active.status == "pass" and active.details["hysteresis"]["mode"] == "exit"
    leaving = rule.evaluate(with_value("returns.sharpe", 0.39), ctx(previously_active=True))
    assert leaving.reason_code == "hysteresis_exit"
    assert rule.evaluate(with_value("returns.sharpe", 0.6), ctx()).status == "pass"  # inclusive


def test_risk_constraint_without_configuration_says_so():
    result = rules_of("{}", profile=None)["risk_constraint"].evaluate(GOOD, ctx())
    assert (result.status, result.reason_code) == ("pass", "risk_constraints_not_configured")


# ---------------------------------------------------------------------------------------------
# shared behaviour


@pytest.mark.parametrize(("on_error", "status"), [("fail", "fail"), ("warn", "warn")])
def test_a_raising_rule_becomes_rule_error(on_error, status):
    rule = rules_of(RISK_POLICY + f"\nvalidation: {{on_error: {on_error}}}")["risk_constraint"]
    result = run_rule(rule, GOOD, ctx(correlations={"s2": "high"}))
    assert (result.status, result.reason_code) == (status, "rule_error")
    assert "not a number" in result.reason and "ValueError" in result.details["error"]
    assert result.owner == "risk" and result.severity == "blocking"


def test_each_threshold_is_reported_by_exactly_one_rule():
    rules = rules_of(
        """
validation_profiles:
  bt:
    sample: {min_effective_years: 2}
    performance: {sharpe_min: 0.5}
    robustness: {dsr_min: 0.1}
    risk: {adv_utilization_p95_max: 0.5}
selection:
  thresholds:
    trades: {metric: n_trades_total, min: 10}
    liquidity: {metric: participation_rate_p95, max: 0.3}
    win: {metric: win_rate, min: 0.5}
    sharpe: {metric: sharpe, min: 0.1}
"""
    ).values()
    owners = {chk.key: rule.name for rule in rules for chk in rule.thresholds}
    assert owners == {
        "effective_history_years": "sample",
        "trades": "sample",
        "sharpe": "performance",
        "win": "performance",
        "deflated_sharpe_ratio": "robustness",
        "adv_utilization_p95": "risk_constraint",
        "liquidity": "risk_constraint",
    }
    sharpe = next(c for r in rules for c in r.thresholds if c.key == "sharpe")
    assert sharpe.min == 0.5 and sharpe.source == "validation_profiles.bt.performance.sharpe_min"


def test_profile_severity_and_owner_override_the_defaults():
    rules = rules_of(
        "validation_profiles: {bt: {sample: {min_effective_years: 1, severity: soft, owner: risk}, risk: {severity: info, owner: ops}}}"
    )
    assert (rules["sample"].severity, rules["sample"].owner) == ("soft", "risk")
    assert (rules["risk_constraint"].severity, rules["risk_constraint"].owner) == ("info", "ops")
    assert (rules["performance"].severity, rules["performance"].owner) == ("blocking", "quant")


def test_fail_closed_world_cannot_lower_a_core_rule_severity():
    rules = rules_of(
        """
risk_profile: {tier: high, client_critical: true}
validation: {on_error: warn, on_missing_metric: ignore}
validation_profiles: {bt: {sample: {severity: soft}, performance: {severity: info}}}
""",
        tier="high",
    )
    assert rules["sample"].severity == "blocking"
    assert rules["performance"].severity == "blocking"
    assert rules["robustness"].severity == "blocking"
    assert all(r.on_error == "fail" and r.on_missing_metric == "fail" for r in rules.values())


def test_rule_objects_expose_name_and_evaluate():
    rules = build_core_rules(load_policy("{}"), None)
    assert [type(r) for r in rules] == [DataCurrencyRule, SampleRule, PerformanceRule, RiskConstraintRule, RobustnessRule]
    assert [r.name for r in rules] == ["data_currency", "sample", "performance", "risk_constraint", "robustness"]
