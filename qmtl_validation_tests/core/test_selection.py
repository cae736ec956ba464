"""Batch selection: top_k rank, greedy correlation, hysteresis, reported by the rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qmtl_validation.core.policy import load_policy
from qmtl_validation.core.selection import (
    evaluate_batch,
    normalise_correlations,
    pair_key,
    rank_runs,
    select,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SAMPLE_POLICY = load_policy(FIXTURES / "qmtl_scenarios" / "sample_policy.yml")


def run(strategy_id: str, sharpe: float, **overrides) -> dict:
    metrics = {
        "returns": {"sharpe": sharpe, "max_drawdown": 0.1, "gain_to_pain_ratio": 1.5},
        "sample": {"effective_history_years": 4.0, "n_trades_total": 300},
        "risk": {"adv_utilization_p95": 0.1, "participation_rate_p95": 0.1},
        "robustness": {"deflated_sharpe_ratio": 0.6},
    }
    for path, value in overrides.items():
        block, leaf = path.split("__")
        metrics[block][leaf] = value
    return {"strategy_id": strategy_id, "metrics": metrics, "stage": "backtest"}


def test_rank_runs_descending_with_ties_in_input_order_and_missing_last():
    ranks = rank_runs([1.0, None, 2.0, 1.0], [True, True, True, True])
    assert ranks.tolist() == [2, 4, 1, 3]


def test_non_candidates_get_the_rank_they_would_take():
    ranks = rank_runs([3.0, 1.0, 2.0, 0.5], [False, True, True, False])
    assert ranks.tolist() == [1, 2, 1, 3]


def test_correlation_pairs_are_order_independent_in_every_input_form():
    expected = {("a", "b"): 0.9, ("a", "c"): -0.3}
    assert normalise_correlations({("b", "a"): 0.9, "c,a": -0.3}) == expected
    assert normalise_correlations({"a": {"b": 0.9, "a": 1.0}, "c": {"a": -0.3}}) == expected
    assert normalise_correlations(None) is None
    assert pair_key("z", "a") == ("a", "z")
    with pytest.raises(ValueError, match="twice"):
        normalise_correlations({("a", "b"): 0.9, ("b", "a"): 0.1})
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        normalise_correlations({("a", "b"): 1.5})


def test_greedy_correlation_keeps_the_better_ranked_run():
    outcomes = select(
        ["a", "b", "c"],
        np.array([1.0, 2.0, 3.0]),
        [True, True, True],
        top_k=None,
        correlation_max=0.8,
        correlations={("b", "c"): 0.9, ("a", "c"): 0.1, ("a", "b"): 0.2},
    )
    by_id = {o.strategy_id: o for o in outcomes}
    assert by_id["c"].selected and by_id["c"].rank == 1
    assert not by_id["b"].selected and by_id["b"].reason == "correlation" and by_id["b"].blocked_by == ("c",)
    # a is compared only with runs kept ahead of it (c), not with the blocked b
    assert by_id["a"].selected and by_id["a"].peers == {"c": 0.1}


def test_unknown_pairs_are_imputed_with_the_fallback_and_flagged():
    outcomes = select(
        ["a", "b"], [2.0, 1.0], [True, True], top_k=None, correlation_max=0.4, correlations={}, fallback_correlation=0.5
    )
    assert outcomes[1].reason == "correlation"
    assert outcomes[1].imputed == frozenset({"a"}) and outcomes[1].peers == {"a": 0.5}


def test_batch_reports_rank_under_performance_and_correlation_under_risk_constraint():
    runs = [run("s1", 1.5), run("s2", 1.4), run("s3", 1.3), run("s4", 1.2), run("s5", 1.1)]
    batch = evaluate_batch(runs, SAMPLE_POLICY, correlations={("s1", "s2"): 0.95})
    results = {o.strategy_id: r for o, r in zip(batch.selection, batch.results)}
    assert results["s1"].status == "pass"
    s2 = results["s2"].results["risk_constraint"]
    assert s2.reason_code == "correlation_constraint_failed"
    assert s2.details["blocked_by"] == [{"strategy_id": "s1", "correlation": 0.95, "imputed": False}]
    assert results["s2"].results["performance"].status == "pass"  # reported once, not twice
    assert results["s3"].status == "pass" and results["s3"].results["risk_constraint"].details["blocked_by"] == []
    # s3's pair with s1 was not given: imputed at 0.5 (< 0.8) and flagged
    assert results["s3"].results["risk_constraint"].details["correlation"] == {
        "max": 0.8, "checked": True, "compared_with": ["s1"], "imputed": ["s1"]
    }
    s4 = results["s4"].results["performance"]
    assert (s4.reason_code, s4.details["rank"]) == ("performance_rank_outside_top_k", 4)
    assert results["s4"].results["risk_constraint"].status == "pass"
    assert batch.selected == ("s1", "s3")


def test_batch_without_correlation_data_does_not_check_correlation():
    batch = evaluate_batch([run("s1", 1.5), run("s2", 1.4)], SAMPLE_POLICY)
    assert batch.selected == ("s1", "s2")
    assert batch.results[1].results["risk_constraint"].details["correlation"]["checked"] is False


def test_previously_active_runs_use_the_hysteresis_exit():
    runs = [run("old", 0.5), run("new", 0.55)]
    policy = load_policy(
        "selection: {hysteresis: {metric: sharpe, enter: 0.6, exit: 0.4}}\n"
        "validation_profiles: {backtest: {}}\ndefault_profile_by_stage: {backtest_only: backtest}"
    )
    batch = evaluate_batch(runs, policy, previously_active={"old"})
    old, new = batch.results
    assert old.status == "pass" and old.results["risk_constraint"].details["hysteresis"]["mode"] == "exit"
    assert new.results["risk_constraint"].reason_code == "hysteresis_not_entered"
    assert batch.selected == ("old",)
    explicit = evaluate_batch([{**runs[1], "context": {"previously_active": True}}], policy)
    assert explicit.results[0].status == "pass"


def test_a_failing_run_keeps_its_solo_result_and_does_not_take_a_slot():
    runs = [run("short", 3.0, sample__effective_history_years=0.5), run("a", 1.0), run("b", 0.9), run("c", 0.8)]
    batch = evaluate_batch(runs, SAMPLE_POLICY, correlations={})
    short = batch.results[0]
    assert [name for name, r in short.results.items() if r.status == "fail"] == ["sample"]
    assert short.results["performance"].details["rank"] == 1
    assert batch.selection[0].reason == "not_candidate" and batch.selection[0].rank == 1
    assert batch.selected == ("a", "b", "c")


def test_a_batch_holds_one_run_per_strategy():
    with pytest.raises(ValueError, match="repeat"):
        evaluate_batch([run("s1", 1.0), run("s1", 1.1)], SAMPLE_POLICY)
