"""evaluate_run: result shape, summary, recommended stage, ruleset hash, merging extended results."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qmtl_validation.core.evaluation import (
    EvaluationResult,
    evaluate_run,
    merge_results,
    ruleset_hash,
)
from qmtl_validation.core.policy import load_policy
from qmtl_validation.core.rules.base import RuleResult, summary_status

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SAMPLE_POLICY = load_policy(FIXTURES / "qmtl_scenarios" / "sample_policy.yml")

GOOD = {
    "returns": {"sharpe": 1.2, "max_drawdown": 0.12, "gain_to_pain_ratio": 1.8},
    "sample": {"effective_history_years": 5.0, "n_trades_total": 500},
    "risk": {"adv_utilization_p95": 0.1, "participation_rate_p95": 0.05},
    "robustness": {"deflated_sharpe_ratio": 0.8},
}
# Clears the sample policy's backtest profile, but not its paper profile (sharpe 0.7 < 0.8).
BACKTEST_ONLY_GRADE = {
    "returns": {"sharpe": 0.7, "max_drawdown": 0.2, "gain_to_pain_ratio": 1.2},
    "sample": {"effective_history_years": 2.5, "n_trades_total": 120},
    "risk": {"adv_utilization_p95": 0.3, "participation_rate_p95": 0.2},
    "robustness": {"deflated_sharpe_ratio": 0.2},
}

THREE_PROFILES = load_policy(
    """
validation_profiles:
  backtest: {performance: {sharpe_min: 0.5}}
  paper: {performance: {sharpe_min: 0.8}}
  live: {performance: {sharpe_min: 1.0}}
default_profile_by_stage: {backtest_only: backtest, paper_only: paper, paper_ok_live_candidate: live}
""",
    version="7",
)


def metrics_with_sharpe(value: float) -> dict:
    return {"returns": {"sharpe": value}}


def test_to_dict_has_exactly_the_documented_shape():
    result = evaluate_run(GOOD, SAMPLE_POLICY, "backtest").to_dict()
    assert set(result) == {"validation", "summary"}
    assert set(result["validation"]) == {"policy_version", "ruleset_hash", "profile", "results"}
    assert set(result["summary"]) == {"status", "recommended_stage"}
    assert list(result["validation"]["results"]) == ["data_currency", "sample", "performance", "risk_constraint", "robustness"]
    for entry in result["validation"]["results"].values():
        assert set(entry) == {"status", "severity", "owner", "reason_code", "reason", "tags", "details"}
        assert isinstance(entry["tags"], list)
    assert result["validation"]["profile"] == "backtest"
    assert result["validation"]["policy_version"] == "sample_policy"
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", result["validation"]["ruleset_hash"])
    assert result["summary"] == {"status": "pass", "recommended_stage": "paper_only"}
    json.dumps(result, allow_nan=False)


def test_result_round_trips_through_dict():
    result = evaluate_run(BACKTEST_ONLY_GRADE, SAMPLE_POLICY, "paper")
    again = EvaluationResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again.to_dict() == result.to_dict()


def test_metrics_object_with_to_dict_is_accepted():
    class Metrics:
        def to_dict(self):
            return GOOD

    assert evaluate_run(Metrics(), SAMPLE_POLICY, "backtest").to_dict() == evaluate_run(GOOD, SAMPLE_POLICY, "backtest").to_dict()


@pytest.mark.parametrize(
    ("stage", "sharpe", "expected"),
    [
        ("backtest", 0.6, "paper_only"),
        ("backtest", 0.4, "backtest_only"),
        ("backtest", 2.0, "paper_only"),  # a backtest run is never more than paper_only
        ("paper", 1.1, "paper_ok_live_candidate"),
        ("paper", 0.9, "paper_only"),
        ("paper", 0.6, "backtest_only"),
        ("live", 1.0, "paper_ok_live_candidate"),
        ("live", 0.85, "paper_only"),
        ("live", 0.3, "backtest_only"),
    ],
)
def test_recommended_stage_with_backtest_paper_and_live_profiles(stage, sharpe, expected):
    result = evaluate_run(metrics_with_sharpe(sharpe), THREE_PROFILES, stage)
    assert result.recommended_stage == expected


def test_paper_run_clearing_paper_profile_is_live_candidate_when_no_live_profile():
    result = evaluate_run(GOOD, SAMPLE_POLICY, "paper")
    assert result.profile == "paper"
    assert (result.status, result.recommended_stage) == ("pass", "paper_ok_live_candidate")
    failing = evaluate_run(BACKTEST_ONLY_GRADE, SAMPLE_POLICY, "paper")
    assert failing.recommended_stage == "backtest_only"


def test_live_run_without_a_profile_of_its_stage_cannot_be_promoted():
    result = evaluate_run(GOOD, SAMPLE_POLICY, "live")
    assert result.profile is None
    assert result.recommended_stage == "backtest_only"
    # only the selection settings applied: hysteresis and top_k still report
    assert result.results["risk_constraint"].details["hysteresis"]["value"] == 1.2
    assert result.results["sample"].reason == "No sample requirements configured"


def test_stage_without_any_profile_is_backtest_only_and_unknown_stages_too():
    policy = load_policy("selection: {thresholds: {sharpe: {min: 0.5}}}")
    assert evaluate_run(GOOD, policy, "backtest").recommended_stage == "backtest_only"
    assert evaluate_run(GOOD, SAMPLE_POLICY, "shadow").recommended_stage == "backtest_only"


def test_missing_policy_gives_fail_and_backtest_only():
    result = evaluate_run(GOOD, None, "paper", policy_version="3")
    assert result.to_dict() == {
        "validation": {"policy_version": "3", "ruleset_hash": None, "profile": None, "results": {}},
        "summary": {"status": "fail", "recommended_stage": "backtest_only"},
    }


def test_missing_policy_with_a_reason_records_one_failing_policy_result_that_says_why():
    result = evaluate_run(GOOD, None, "paper", missing_policy_reason="policies/w/2.yaml: python tag refused")
    assert (result.status, result.recommended_stage, result.ruleset_hash) == ("fail", "backtest_only", None)
    (name, note), = result.results.items()
    assert name == "policy"
    assert (note.status, note.severity, note.reason_code) == ("fail", "blocking", "policy_unavailable")
    assert note.reason.endswith("policies/w/2.yaml: python tag refused")
    # Extended layers cannot lift it: without a ruleset the run stays fail / backtest_only.
    merged = merge_results(result, {"cohort": {"status": "pass", "severity": "info", "owner": "quant",
                                               "reason_code": "ok", "reason": "", "tags": [], "details": {}}})
    assert (merged.status, merged.recommended_stage) == ("fail", "backtest_only")
    assert set(merged.results) == {"policy", "cohort"}


def test_soft_failure_warns_and_blocks_promotion():
    metrics = json.loads(json.dumps(GOOD))
    metrics["robustness"]["deflated_sharpe_ratio"] = 0.02
    result = evaluate_run(metrics, SAMPLE_POLICY, "backtest")
    assert result.results["robustness"].status == "fail"
    assert result.results["robustness"].severity == "soft"
    assert (result.status, result.recommended_stage) == ("warn", "backtest_only")


def test_warnings_do_not_block_promotion():
    policy = load_policy(FIXTURES / "qmtl_scenarios" / "sample_policy.yml")
    warn_policy = load_policy({**policy.to_dict(), "validation": {"on_missing_metric": "warn"}})
    metrics = json.loads(json.dumps(GOOD))
    del metrics["risk"]["participation_rate_p95"]
    result = evaluate_run(metrics, warn_policy, "backtest")
    assert result.results["risk_constraint"].status == "warn"
    assert (result.status, result.recommended_stage) == ("warn", "paper_only")


def test_context_keys_are_checked():
    with pytest.raises(TypeError, match="unknown evaluation context key"):
        evaluate_run(GOOD, SAMPLE_POLICY, "backtest", submited_at="2024-01-01")
    with pytest.raises(ValueError, match="does not match"):
        evaluate_run(GOOD, SAMPLE_POLICY, "backtest", policy_version="99")
    with pytest.raises(ValueError, match="rank"):
        evaluate_run(GOOD, SAMPLE_POLICY, "backtest", rank=0)


def test_run_risk_tier_makes_robustness_blocking_when_the_world_sets_no_tier():
    metrics = json.loads(json.dumps(GOOD))
    metrics["robustness"]["deflated_sharpe_ratio"] = 0.02
    high = evaluate_run(metrics, SAMPLE_POLICY, "backtest", risk_tier="HIGH")
    assert high.results["robustness"].severity == "blocking" and high.status == "fail"
    assert high.ruleset_hash != evaluate_run(metrics, SAMPLE_POLICY, "backtest", risk_tier="low").ruleset_hash


# ---------------------------------------------------------------------------------------------
# Ruleset hash

BASE_YAML = """
validation_profiles:
  backtest:
    sample: {min_effective_years: 2.0, min_trades_total: 50}
    performance: {sharpe_min: 0.5, max_dd_max: 0.25}
default_profile_by_stage: {backtest_only: backtest}
selection:
  top_k: {metric: sharpe, k: 3}
"""
REORDERED_YAML = """
selection:
  top_k: {k: 3, metric: sharpe}
default_profile_by_stage: {backtest_only: backtest}
validation_profiles:
  backtest:
    performance: {max_dd_max: 0.25, sharpe_min: 0.5}
    sample: {min_trades_total: 50, min_effective_years: 2}
"""


def hash_of(text: str, version: str | None = None, stage: str = "backtest") -> str:
    return ruleset_hash(load_policy(text, version=version), stage)


def test_reordered_yaml_keeps_the_hash_and_version_does_not_matter():
    assert hash_of(BASE_YAML) == hash_of(REORDERED_YAML)
    assert hash_of(BASE_YAML, version="1") == hash_of(BASE_YAML, version="2")


@pytest.mark.parametrize(
    "extra",
    [
        "validation: {on_missing_metric: warn}",
        "risk_profile: {tier: high}",
        "risk_hub: {fallback_correlation: 0.6}",
        "annualization: {periods_per_year: 365}",
        "portfolio: {max_incremental_var_99: 0.4}",
        "stress: {scenarios: {crash: {dd_max: 0.3}}}",
        "live_monitoring: {sharpe_min: 0.5}",
        "benchmark: {min_vs_benchmark_sharpe: 0.0}",
        "selection: {top_k: {metric: sharpe, k: 3}, correlation: {max: 0.7}}",
    ],
)
def test_outcome_changing_settings_change_the_hash(extra):
    changed = BASE_YAML + extra
    if extra.startswith("selection"):
        changed = BASE_YAML.replace("selection:\n  top_k: {metric: sharpe, k: 3}\n", extra + "\n")
    assert hash_of(BASE_YAML) != hash_of(changed)


def test_severity_and_owner_overrides_change_the_hash():
    base = hash_of(BASE_YAML)
    severity = hash_of(BASE_YAML.replace("{sharpe_min: 0.5, max_dd_max: 0.25}", "{sharpe_min: 0.5, max_dd_max: 0.25, severity: soft}"))
    owner = hash_of(BASE_YAML.replace("{sharpe_min: 0.5, max_dd_max: 0.25}", "{sharpe_min: 0.5, max_dd_max: 0.25, owner: risk}"))
    assert len({base, severity, owner}) == 3


def test_governance_does_not_change_the_hash():
    assert hash_of(BASE_YAML) == hash_of(BASE_YAML + "governance: {live_promotion: {mode: disabled}}")


def test_forced_fail_closed_changes_the_hash():
    critical = "risk_profile: {tier: high, client_critical: true}\nvalidation: {on_missing_metric: warn}\n"
    merely_high = "risk_profile: {tier: high}\nvalidation: {on_missing_metric: warn}\n"
    assert hash_of(BASE_YAML + critical) != hash_of(BASE_YAML + merely_high)


def test_paper_hash_covers_the_live_profile_that_decides_promotion():
    stricter = THREE_PROFILES.to_dict()
    stricter["validation_profiles"]["live"]["performance"]["sharpe_min"] = 1.5
    assert ruleset_hash(THREE_PROFILES, "paper") != ruleset_hash(load_policy(stricter), "paper")
    assert ruleset_hash(THREE_PROFILES, "backtest") == ruleset_hash(load_policy(stricter), "backtest")


# ---------------------------------------------------------------------------------------------
# Extended results


def extended(status: str, severity: str = "soft") -> RuleResult:
    return RuleResult(status=status, severity=severity, owner="risk", reason_code=f"portfolio_{status}", reason="r")


def test_merging_extended_results_recomputes_the_summary():
    result = evaluate_run(GOOD, SAMPLE_POLICY, "backtest")
    assert (result.status, result.recommended_stage) == ("pass", "paper_only")
    warned = merge_results(result, {"stress": extended("warn", "info")})
    assert (warned.status, warned.recommended_stage) == ("warn", "paper_only")
    failed = merge_results(warned, {"portfolio": extended("fail", "blocking")})
    assert (failed.status, failed.recommended_stage) == ("fail", "backtest_only")
    assert list(failed.results)[-2:] == ["stress", "portfolio"]
    # a later pass replacing the failing layer restores the core recommendation
    repaired = merge_results(failed, {"portfolio": extended("pass").to_dict()})
    assert (repaired.status, repaired.recommended_stage) == ("warn", "paper_only")


def test_soft_extended_failure_warns_and_blocks_promotion():
    merged = merge_results(evaluate_run(GOOD, SAMPLE_POLICY, "backtest"), {"portfolio": extended("fail", "soft")})
    assert (merged.status, merged.recommended_stage) == ("warn", "backtest_only")
    assert merged.status == summary_status(merged.results)


def test_core_results_cannot_be_replaced_by_extended_ones():
    with pytest.raises(ValueError, match="core rule"):
        merge_results(evaluate_run(GOOD, SAMPLE_POLICY, "backtest"), {"performance": extended("pass")})


def test_merge_on_a_stored_result_and_on_a_missing_policy():
    stored = EvaluationResult.from_dict(evaluate_run(GOOD, SAMPLE_POLICY, "paper").to_dict())
    assert merge_results(stored, {"cohort": extended("pass")}).recommended_stage == "paper_ok_live_candidate"
    nothing = merge_results(evaluate_run(GOOD, None, "backtest"), {"cohort": extended("pass")})
    assert (nothing.status, nothing.recommended_stage) == ("fail", "backtest_only")


# ---------------------------------------------------------------------------------------------
# Properties

metric_value = st.one_of(st.none(), st.floats(min_value=-5, max_value=10, allow_nan=False))
random_metrics = st.fixed_dictionaries(
    {
        "returns": st.fixed_dictionaries({"sharpe": metric_value, "max_drawdown": metric_value, "gain_to_pain_ratio": metric_value}),
        "sample": st.fixed_dictionaries({"effective_history_years": metric_value, "n_trades_total": metric_value}),
        "risk": st.fixed_dictionaries({"adv_utilization_p95": metric_value, "participation_rate_p95": metric_value}),
        "robustness": st.fixed_dictionaries({"deflated_sharpe_ratio": metric_value}),
    }
)
POLICIES = [SAMPLE_POLICY, THREE_PROFILES, load_policy(FIXTURES / "policies" / "v1_paper.yaml"), load_policy(FIXTURES / "policies" / "everything_on.yaml")]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(metrics=random_metrics, policy_index=st.integers(0, len(POLICIES) - 1), active=st.booleans(), tier=st.sampled_from([None, "low", "high"]))
def test_a_backtest_run_never_becomes_a_live_candidate(metrics, policy_index, active, tier):
    result = evaluate_run(metrics, POLICIES[policy_index], "backtest", previously_active=active, risk_tier=tier)
    assert result.recommended_stage in ("backtest_only", "paper_only")
    assert result.status == summary_status(result.results)
    if result.recommended_stage == "paper_only":
        assert all(r.status != "fail" for r in result.results.values())
