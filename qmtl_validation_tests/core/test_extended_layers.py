"""evaluate_extended_layers over a world's runs and apply_extended on run records: which runs get
which layer, hand-checked portfolio figures, fail-closed staleness, per-strategy live decay,
campaign cohorts, backtest baselines, and the summary recomputed after merging."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from qmtl_validation.core.evaluation import canonical_json, evaluate_run
from qmtl_validation.core.extended import apply_extended, change_reason, evaluate_extended_layers
from qmtl_validation.core.policy import load_policy
from qmtl_validation.core.portfolio import portfolio_risk
from qmtl_validation.core.rules.base import RuleResult, summary_status
from qmtl_validation.core.rules.cohort import cohort_contexts
from qmtl_validation.core.snapshot import conservative_fallback_snapshot

Z = norm.ppf(0.99)
ES_MULTIPLIER = norm.pdf(Z) / 0.01

PROFILES = """
validation_profiles:
  backtest: {performance: {sharpe_min: 0.2}}
  paper: {performance: {sharpe_min: 0.2}}
  live: {performance: {sharpe_min: 0.2}}
default_profile_by_stage: {backtest: backtest, paper: paper, live: live}
"""

WORLD_POLICY = load_policy(
    PROFILES
    + """
validation: {on_missing_metric: warn}
risk_hub: {fallback_correlation: 0.5}
portfolio: {max_incremental_var_99: 0.01, max_incremental_es_99: 0.01, min_portfolio_sharpe_uplift: 0.0, severity: blocking}
stress: {scenarios: {crash: {dd_max: 0.25, var_99: 0.06}}}
live_monitoring: {sharpe_min: 0.5, dd_max: 0.2}
paper_shadow_consistency: {stages: [paper], min_sharpe_ratio: 0.5}
benchmark: {min_vs_benchmark_sharpe: 0.0}
"""
)

GOOD_LIVE = [0.012, -0.008] * 45  # mean 0.002 per period, steady
DECAYING_LIVE = [0.012, -0.008] * 30 + [0.004, -0.008] * 15  # the last 30 periods lose money


def metrics(sharpe, *, volatility=None, benchmark=None, **returns):
    out = {
        "returns": {"sharpe": sharpe, "max_drawdown": 0.1, "gain_to_pain_ratio": 1.0, "volatility": volatility, **returns},
        "sample": {"effective_history_years": 3.0, "n_trades_total": 300},
    }
    if benchmark is not None:
        out["benchmark"] = {"vs_benchmark_sharpe": benchmark}
    return out


def record(policy, strategy, run_id, stage, m, *, world="w1", campaign=None, submitted="2026-01-05T00:00:00Z"):
    evaluation = evaluate_run(m, policy, stage).to_dict()
    return {
        "world_id": world,
        "strategy_id": strategy,
        "run_id": run_id,
        "stage": stage,
        "campaign_id": campaign,
        "submitted_at": submitted,
        "revision": 1,
        "revision_reason": "evaluated",
        "metrics": m,
        **evaluation,
    }


SNAPSHOT = {
    "world_id": "w1",
    "version": "v0004",
    "as_of": "2026-01-06T00:00:00Z",
    "weights": {"a": 0.6, "b": 0.4},
    # per-period: vol a 0.01, b 0.02, rho(a,b) 0.3; candidate c vol 0.015, rho(a,c) 0.2, (b,c) absent
    "covariance": {"a,a": 1e-4, "b,b": 4e-4, "a,b": 6e-5, "c,c": 2.25e-4, "a,c": 3e-5},
    "constraints": {"candidate_weight": 0.2},
    "realized_returns": {"a": GOOD_LIVE, "b": DECAYING_LIVE},
    "stress": {"crash": {"max_drawdown": 0.2, "var_99": 0.05, "es_99": 0.06, "shocks": {"a": -0.1, "b": -0.2, "c": -0.05}}},
    "provenance": {"actor": "risk-engine", "stage": "live"},
}


def world_runs(policy=WORLD_POLICY):
    """a, b: live and weighted; c: a backtest run recommended paper_only (in the covariance);
    d: a paper run recommended paper_ok_live_candidate (not in the covariance)."""
    runs = [
        record(policy, "a", "a-live", "live", metrics(1.0)),
        record(policy, "b", "b-live", "live", metrics(0.5)),
        record(policy, "c", "c-bt", "backtest", metrics(1.5, volatility=0.02 * math.sqrt(252), benchmark=0.2)),
        record(policy, "d", "d-paper", "paper", metrics(0.3, volatility=0.012 * math.sqrt(252))),
    ]
    assert [r["summary"]["recommended_stage"] for r in runs] == [
        "paper_ok_live_candidate", "paper_ok_live_candidate", "paper_only", "paper_ok_live_candidate"
    ]
    return runs


def hand_incremental(cross_with_held, candidate_variance, a=0.2):
    """VaR/ES increments and volatility with the candidate, from the formulas of SPEC §8."""
    w = np.array([0.6, 0.4])
    sigma = np.array([[1e-4, 6e-5], [6e-5, 4e-4]])
    base = math.sqrt(w @ sigma @ w)
    with_var = (1 - a) ** 2 * (w @ sigma @ w) + 2 * a * (1 - a) * (w @ np.array(cross_with_held)) + a**2 * candidate_variance
    with_vol = math.sqrt(with_var)
    return Z * (with_vol - base), ES_MULTIPLIER * (with_vol - base), base, with_vol


# ---------------------------------------------------------------------------------------------
# end to end


def test_small_world_two_candidates_get_the_right_layers_and_hand_checked_figures():
    out = evaluate_extended_layers(world_runs(), WORLD_POLICY, snapshot=SNAPSHOT, now="2026-01-06T00:02:00Z")
    assert {k: list(v) for k, v in out.items()} == {
        "w1/a/a-live": ["stress", "live_monitoring", "benchmark"],
        "w1/b/b-live": ["stress", "live_monitoring", "benchmark"],
        "w1/c/c-bt": ["portfolio", "stress", "benchmark"],
        "w1/d/d-paper": ["portfolio", "stress", "paper_shadow_consistency", "benchmark"],
    }
    # c: in the snapshot covariance; its missing (b, c) pair is imputed at rho 0.5 and flagged
    c = out["w1/c/c-bt"]["portfolio"]
    inc_var, inc_es, base_vol, with_vol = hand_incremental([3e-5, 0.5 * 0.02 * 0.015], 2.25e-4)
    assert c.details["values"]["incremental_var_99"] == pytest.approx(inc_var, abs=1e-14)
    assert c.details["values"]["incremental_es_99"] == pytest.approx(inc_es, abs=1e-14)
    uplift = (0.8 * (0.6 * 1.0 * 0.01 + 0.4 * 0.5 * 0.02) + 0.2 * 1.5 * 0.015) / with_vol - (
        0.6 * 1.0 * 0.01 + 0.4 * 0.5 * 0.02
    ) / base_vol
    assert c.details["values"]["portfolio_sharpe_uplift"] == pytest.approx(uplift, abs=1e-12)
    assert c.details["figures"]["imputed_pairs"] == ["b,c"]
    assert c.details["figures"]["variance_source"] == "snapshot"
    assert (c.status, c.reason_code) == ("pass", "portfolio_ok")
    # d: not in the covariance: variance from its volatility (0.012 per period), pairs imputed
    d = out["w1/d/d-paper"]["portfolio"]
    inc_var_d, _, base_vol, with_vol_d = hand_incremental([0.5 * 0.01 * 0.012, 0.5 * 0.02 * 0.012], 0.012**2)
    assert d.details["values"]["incremental_var_99"] == pytest.approx(inc_var_d, abs=1e-14)
    assert d.details["figures"]["variance_source"] == "run_volatility"
    assert d.details["figures"]["imputed_pairs"] == ["a,d", "b,d"]
    uplift_d = (0.8 * 0.01 + 0.2 * 0.3 * 0.012) / with_vol_d - 0.01 / base_vol
    assert d.details["values"]["portfolio_sharpe_uplift"] == pytest.approx(uplift_d, abs=1e-12)
    assert uplift_d < 0
    assert (d.status, d.severity, d.reason_code) == ("fail", "blocking", "portfolio_sharpe_uplift_below_min")
    # stress: the candidate's P&L with it at 0.2
    pnl = out["w1/c/c-bt"]["stress"].details["scenario_pnl"]["crash"]
    assert pnl["portfolio_pnl"] == pytest.approx(-0.14, abs=1e-15)
    assert pnl["pnl_with_candidate"] == pytest.approx(0.8 * -0.14 + 0.2 * -0.05, abs=1e-15)
    assert "pnl_with_candidate" not in out["w1/a/a-live"]["stress"].details["scenario_pnl"]["crash"]
    # live monitoring per strategy: the decaying b fails, a passes
    assert out["w1/a/a-live"]["live_monitoring"].status == "pass"
    assert out["w1/b/b-live"]["live_monitoring"].reason_code == "live_sharpe_below_min"
    # benchmark: only c has one
    assert out["w1/c/c-bt"]["benchmark"].status == "pass"
    assert out["w1/a/a-live"]["benchmark"].reason_code == "benchmark_uplift_missing"
    # paper run without a backtest of its strategy: ratios missing (warn in this world)
    assert out["w1/d/d-paper"]["paper_shadow_consistency"].reason_code == "paper_shadow_sharpe_ratio_missing"
    # snapshot provenance in the details; everything is plain JSON
    assert c.details["snapshot"]["version"] == "v0004" and c.details["snapshot"]["lag_seconds"] == 120.0
    canonical_json({k: {n: r.to_dict() for n, r in v.items()} for k, v in out.items()})


def test_merging_the_world_results_recomputes_each_summary():
    runs = world_runs()
    out = evaluate_extended_layers(runs, WORLD_POLICY, snapshot=SNAPSHOT)
    merged = {}
    for run in runs:
        key = f"{run['world_id']}/{run['strategy_id']}/{run['run_id']}"
        new, reason = apply_extended(run, out[key], snapshot=SNAPSHOT)
        assert reason == "extended:risk_snapshot w1/v0004"
        merged[run["strategy_id"]] = new
    assert merged["c"]["summary"] == {"status": "pass", "recommended_stage": "paper_only"}
    # the candidate that lowers the portfolio Sharpe fails a blocking portfolio rule
    assert merged["d"]["summary"] == {"status": "fail", "recommended_stage": "backtest_only"}
    # the decaying live strategy: soft live-monitoring failure → warn
    assert merged["b"]["summary"]["status"] == "warn"
    for new in merged.values():
        results = {n: RuleResult.from_dict(r) for n, r in new["validation"]["results"].items()}
        assert new["summary"]["status"] == summary_status(results)
        assert new["revision"] == 2 and new["validation"]["extended_revision"] == 1


def test_precomputed_portfolio_risk_gives_the_same_figures():
    runs = world_runs()
    precomputed = portfolio_risk(
        SNAPSHOT["weights"], SNAPSHOT["covariance"], candidates=["c"], candidate_weight=0.2, fallback_correlation=0.5
    )
    given = evaluate_extended_layers(runs, WORLD_POLICY, snapshot=SNAPSHOT, portfolio=precomputed)
    computed = evaluate_extended_layers(runs, WORLD_POLICY, snapshot=SNAPSHOT)
    for key in ("incremental_var_99", "incremental_es_99", "portfolio_sharpe_uplift"):
        assert given["w1/c/c-bt"]["portfolio"].details["values"][key] == pytest.approx(
            computed["w1/c/c-bt"]["portfolio"].details["values"][key], abs=1e-15
        )
    assert given["w1/c/c-bt"]["portfolio"].details["figures"]["source"] == "precomputed"
    assert given["w1/d/d-paper"]["portfolio"].details["figures"]["source"] == "portfolio_risk"


def test_a_resolved_covariance_ref_gives_the_same_figures_as_the_inline_map():
    import pandas as pd

    inline = evaluate_extended_layers(world_runs(), WORLD_POLICY, snapshot=SNAPSHOT)
    names = ["a", "b", "c"]
    square = pd.DataFrame(np.nan, index=names, columns=names)
    for key, value in SNAPSHOT["covariance"].items():
        x, y = key.split(",")
        square.loc[x, y] = value  # one triangle only, as a producer might write it
    by_ref = {**SNAPSHOT, "covariance": None, "covariance_ref": "v0004.covariance.parquet"}
    without = evaluate_extended_layers(world_runs(), WORLD_POLICY, snapshot=by_ref)
    assert without["w1/c/c-bt"]["portfolio"].details["notes"] == [
        "the snapshot has no covariance (resolve covariance_ref first)"
    ]
    resolved = evaluate_extended_layers(world_runs(), WORLD_POLICY, snapshot=by_ref, covariance=square)
    for key in ("w1/c/c-bt", "w1/d/d-paper"):
        assert resolved[key]["portfolio"].details["values"] == pytest.approx(inline[key]["portfolio"].details["values"], abs=1e-15)
        assert resolved[key]["portfolio"].details["figures"]["imputed_pairs"] == inline[key]["portfolio"].details["figures"]["imputed_pairs"]


def test_a_weighted_strategy_without_a_variance_is_a_rule_error_for_every_candidate():
    broken = {**SNAPSHOT, "covariance": {k: v for k, v in SNAPSHOT["covariance"].items() if k != "b,b"}}
    out = evaluate_extended_layers(world_runs(), WORLD_POLICY, snapshot=broken)
    for key in ("w1/c/c-bt", "w1/d/d-paper"):
        result = out[key]["portfolio"]
        assert (result.status, result.reason_code) == ("fail", "rule_error")
        assert "covariance has no variance for 'b'" in result.reason


def test_a_weighted_strategy_is_never_a_candidate_and_backtest_only_runs_are_not_either():
    policy = WORLD_POLICY
    runs = world_runs() + [record(policy, "e", "e-bt", "backtest", metrics(0.1))]  # below sharpe_min
    assert runs[-1]["summary"]["recommended_stage"] == "backtest_only"
    out = evaluate_extended_layers(runs, policy, snapshot=SNAPSHOT)
    with_portfolio = sorted(k for k, v in out.items() if "portfolio" in v)
    assert with_portfolio == ["w1/c/c-bt", "w1/d/d-paper"]


def test_without_a_snapshot_every_recommended_run_is_a_candidate_with_missing_figures():
    out = evaluate_extended_layers(world_runs(), WORLD_POLICY)
    assert sorted(k for k, v in out.items() if "portfolio" in v) == ["w1/a/a-live", "w1/b/b-live", "w1/c/c-bt", "w1/d/d-paper"]
    result = out["w1/c/c-bt"]["portfolio"]
    assert (result.status, result.reason_code) == ("warn", "incremental_var_missing")
    assert result.details["notes"] == ["no risk snapshot for the world"]
    # live runs have no realized series to monitor: reported missing, not skipped
    assert out["w1/a/a-live"]["live_monitoring"].reason_code == "live_sharpe_missing"
    assert out["w1/c/c-bt"]["stress"].reason_code == "crash_dd_missing"


def test_a_live_run_without_a_realized_series_is_reported_missing():
    snapshot = {**SNAPSHOT, "realized_returns": {"a": GOOD_LIVE}}
    out = evaluate_extended_layers(world_runs(), WORLD_POLICY, snapshot=snapshot)
    missing = out["w1/b/b-live"]["live_monitoring"]
    assert (missing.status, missing.reason_code) == ("warn", "live_sharpe_missing")
    assert missing.details["notes"] == ["no realized returns for the strategy in the risk snapshot"]


def test_no_policy_means_nothing_to_evaluate_and_one_world_at_a_time():
    assert evaluate_extended_layers(world_runs(), None, snapshot=SNAPSHOT) == {}
    runs = world_runs()
    runs[0] = {**runs[0], "world_id": "w2"}
    with pytest.raises(ValueError, match="runs of one world"):
        evaluate_extended_layers(runs, WORLD_POLICY)
    with pytest.raises(ValueError, match="snapshot of world"):
        evaluate_extended_layers(world_runs(), WORLD_POLICY, snapshot={**SNAPSHOT, "world_id": "w9"})


# ---------------------------------------------------------------------------------------------
# stale snapshots


def stale_policy(tier, critical):
    return load_policy(
        PROFILES
        + f"""
risk_profile: {{tier: {tier}, client_critical: {str(critical).lower()}}}
portfolio: {{max_incremental_var_99: 0.01, max_incremental_es_99: 0.01}}
"""
    )


def test_stale_snapshot_fails_closed_for_a_high_tier_critical_world_only():
    critical, low = stale_policy("high", True), stale_policy("low", False)
    fallback = conservative_fallback_snapshot(SNAPSHOT, fallback_correlation=0.5)
    closed = evaluate_extended_layers(world_runs(critical), critical, snapshot=fallback, snapshot_stale=True)
    for key in ("w1/c/c-bt", "w1/d/d-paper"):
        result = closed[key]["portfolio"]
        assert (result.status, result.severity, result.reason_code) == ("fail", "blocking", "risk_snapshot_stale")
    open_ = evaluate_extended_layers(world_runs(low), low, snapshot=fallback, snapshot_stale=True)
    result = open_["w1/c/c-bt"]["portfolio"]
    assert (result.status, result.reason_code) == ("pass", "portfolio_ok")
    assert result.details["snapshot"]["stale"] is True
    assert result.details["snapshot"]["fallback"] is True
    assert result.details["snapshot"]["previous_version"] == "v0004"
    assert "conservative fallback snapshot v0004-fallback" in result.reason
    # the fallback covers only the weighted strategies: c's variance now comes from its run
    assert result.details["figures"]["variance_source"] == "run_volatility"
    assert result.details["values"]["incremental_var_99"] is not None


def test_lag_beyond_the_sla_is_stale_even_without_the_flag():
    critical = stale_policy("high", True)
    fresh = evaluate_extended_layers(world_runs(critical), critical, snapshot=SNAPSHOT, now="2026-01-06T00:05:00Z")
    late = evaluate_extended_layers(world_runs(critical), critical, snapshot=SNAPSHOT, now="2026-01-06T00:05:01Z")
    assert fresh["w1/c/c-bt"]["portfolio"].reason_code == "portfolio_ok"  # exactly 5 minutes: within the SLA
    assert late["w1/c/c-bt"]["portfolio"].reason_code == "risk_snapshot_stale"
    assert late["w1/c/c-bt"]["portfolio"].details["snapshot"]["lag_seconds"] == 301.0


def test_a_stale_critical_world_fails_its_summary_after_merging():
    critical = stale_policy("high", True)
    runs = world_runs(critical)
    out = evaluate_extended_layers(runs, critical, snapshot=SNAPSHOT, snapshot_stale=True)
    new, _ = apply_extended(runs[2], out["w1/c/c-bt"])
    assert new["summary"] == {"status": "fail", "recommended_stage": "backtest_only"}


# ---------------------------------------------------------------------------------------------
# live monitoring per strategy


def reference_sharpe(r):
    r = np.asarray(r, dtype=float)
    return r.mean() / r.std(ddof=1) * math.sqrt(252)


def test_only_the_decaying_strategy_fails_live_monitoring_and_is_flagged():
    policy = load_policy(PROFILES + "live_monitoring: {sharpe_min: 0.5, dd_max: 0.2, decay_threshold: 0.5}")
    runs = [
        record(policy, "steady", "steady-bt", "backtest", metrics(3.0), submitted="2025-06-01T00:00:00Z"),
        record(policy, "steady", "steady-live", "live", metrics(2.5)),
        record(policy, "decaying", "decaying-bt", "backtest", metrics(3.0), submitted="2025-06-01T00:00:00Z"),
        record(policy, "decaying", "decaying-live", "live", metrics(2.5)),
    ]
    snapshot = {**SNAPSHOT, "weights": {"steady": 0.5, "decaying": 0.5}, "covariance": None,
                "realized_returns": {"steady": GOOD_LIVE, "decaying": DECAYING_LIVE}}
    out = evaluate_extended_layers(runs, policy, snapshot=snapshot)
    assert sorted(k for k, v in out.items() if "live_monitoring" in v) == ["w1/decaying/decaying-live", "w1/steady/steady-live"]

    steady = out["w1/steady/steady-live"]["live_monitoring"]
    assert (steady.status, steady.reason_code) == ("pass", "live_monitoring_ok")
    assert steady.details["demotion_candidate"] is False
    assert steady.details["windows"][0]["sharpe"] == pytest.approx(reference_sharpe(GOOD_LIVE[-30:]), abs=1e-12)
    assert steady.details["windows"][0]["sharpe_decay_ratio"] == pytest.approx(reference_sharpe(GOOD_LIVE[-30:]) / 3.0, abs=1e-12)

    decaying = out["w1/decaying/decaying-live"]["live_monitoring"]
    sharpes = {w: reference_sharpe(DECAYING_LIVE[-w:]) for w in (30, 60, 90)}
    assert decaying.status == "fail" and decaying.reason_code == "live_sharpe_below_min"
    assert decaying.details["demotion_candidate"] is True
    assert decaying.details["breached_windows"]["sharpe"] == [w for w, s in sharpes.items() if s < 0.5] == [30, 60]
    assert decaying.details["breached_windows"]["sharpe_decay_ratio"] == [w for w, s in sharpes.items() if s / 3.0 < 0.5]
    assert decaying.details["breached_windows"]["sharpe_decay_ratio"] == [30, 60, 90]
    assert decaying.details["windows"][0]["sharpe"] == pytest.approx(sharpes[30], abs=1e-12)


def test_a_precomputed_monitoring_table_is_judged_with_the_policy_thresholds():
    from qmtl_validation.core.live_monitoring import live_monitoring_metrics

    policy = load_policy(PROFILES + "live_monitoring: {sharpe_min: 0.5}")
    runs = [record(policy, "decaying", "decaying-live", "live", metrics(2.5))]
    # the table was built with a looser floor; the rule applies the policy's own
    table = live_monitoring_metrics({"decaying": DECAYING_LIVE}, sharpe_min=-10.0)
    out = evaluate_extended_layers(runs, policy, live_monitoring=table)
    assert out["w1/decaying/decaying-live"]["live_monitoring"].status == "fail"


# ---------------------------------------------------------------------------------------------
# cohorts and baselines


def campaign_metrics():
    rows = [(0.10, -0.5, 1.0, 1), (0.06, 0.0, 0.5, 1), (0.03, 0.2, 0.0, 10), (0.08, -1.0, 3.0, 1)]
    return [
        metrics(sr * math.sqrt(252), sharpe_per_period=sr, skew=skew, excess_kurtosis=excess)
        | {"sample": {"n_periods": 500, "effective_history_years": 2.0, "n_trades_total": 100},
           "diagnostics": {"search_intensity": trials}}
        for sr, skew, excess, trials in rows
    ]


def test_cohorts_are_campaigns_per_stage_and_runs_without_a_campaign_get_none():
    policy = load_policy(PROFILES + "cohort: {sharpe_median_min: 1.0, dsr_median_min: 0.79, top_k: 2}")
    batch = campaign_metrics()
    runs = [record(policy, f"s{i}", f"r{i}", "backtest", m, campaign="camp") for i, m in enumerate(batch)]
    runs.append(record(policy, "s0", "p0", "paper", batch[0], campaign="camp"))
    runs.append(record(policy, "loner", "l0", "backtest", batch[1]))
    out = evaluate_extended_layers(runs, policy)
    expected = cohort_contexts(batch, campaign_id="camp", stage="backtest")
    got = [out[f"w1/s{i}/r{i}"]["cohort"] for i in range(4)]
    assert [g.details["deflated_sharpe_ratio"] for g in got] == [e.deflated_sharpe_ratio for e in expected]
    assert [g.status for g in got] == ["pass", "fail", "fail", "pass"]
    assert got[0].details["size"] == 4 and got[0].details["trials_sharpe_variance"] == pytest.approx(0.002675 / 3)
    paper = out["w1/s0/p0"]["cohort"]
    assert (paper.details["size"], paper.details["stage"], paper.details["rank"]) == (1, "paper", 1)
    assert "w1/loner/l0" not in out


def test_paper_baseline_is_the_latest_backtest_of_the_strategy():
    policy = load_policy(PROFILES + "paper_shadow_consistency: {stages: [paper], min_sharpe_ratio: 0.7}")
    runs = [
        record(policy, "x", "bt-new", "backtest", metrics(1.0), submitted="2026-02-01T00:00:00Z"),
        record(policy, "x", "bt-old", "backtest", metrics(2.0), submitted="2026-01-01T00:00:00Z"),
        record(policy, "x", "paper-1", "paper", metrics(0.8), submitted="2026-03-01T00:00:00Z"),
    ]
    out = evaluate_extended_layers(runs, policy)
    result = out["w1/x/paper-1"]["paper_shadow_consistency"]
    assert result.details["baseline_run_id"] == "bt-new"
    assert result.details["ratios"]["sharpe_ratio"] == pytest.approx(0.8)
    assert result.status == "pass"
    assert list(out) == ["w1/x/paper-1"]  # backtest runs are not a listed stage


# ---------------------------------------------------------------------------------------------
# apply_extended


def soft_or_blocking(status, severity):
    return RuleResult(status=status, severity=severity, owner="risk", reason_code=f"portfolio_{status}", reason="r")


def passing_record():
    run = record(WORLD_POLICY, "c", "c-bt", "backtest", metrics(1.5, benchmark=0.2))
    assert run["summary"] == {"status": "pass", "recommended_stage": "paper_only"}
    return run


def test_a_blocking_extended_failure_turns_a_pass_summary_into_fail():
    new, reason = apply_extended(passing_record(), {"portfolio": soft_or_blocking("fail", "blocking")}, reason="extended:test")
    assert new["summary"] == {"status": "fail", "recommended_stage": "backtest_only"}
    assert (reason, new["revision_reason"], new["revision"]) == ("extended:test", "extended:test", 2)


def test_a_soft_extended_failure_turns_a_pass_summary_into_warn():
    new, _ = apply_extended(passing_record(), {"portfolio": soft_or_blocking("fail", "soft")})
    assert new["summary"]["status"] == "warn"


def test_a_replayed_pass_writes_no_revision_and_a_later_pass_restores_the_recommendation():
    failed, _ = apply_extended(passing_record(), {"portfolio": soft_or_blocking("fail", "blocking")}, now="2026-01-07T00:00:00Z")
    assert failed["validation"]["extended_evaluated_at"] == "2026-01-07T00:00:00+00:00"
    replay, reason = apply_extended(failed, {"portfolio": soft_or_blocking("fail", "blocking")})
    assert reason is None and replay == failed
    repaired, reason = apply_extended(failed, {"portfolio": soft_or_blocking("pass", "blocking").to_dict()})
    assert reason == "extended:layers"
    assert repaired["summary"] == {"status": "pass", "recommended_stage": "paper_only"}
    assert repaired["validation"]["extended_revision"] == 2 and repaired["revision"] == 3


def test_apply_extended_leaves_the_input_alone_and_recounts_rule_errors():
    run = passing_record()
    run["metrics"]["diagnostics"] = {"validation_health": {"validation_error_count": 0}}
    before = canonical_json(run)
    error = RuleResult(status="fail", severity="info", owner="ops", reason_code="rule_error", reason="boom")
    new, _ = apply_extended(run, {"stress": error})
    assert canonical_json(run) == before
    assert new["metrics"]["diagnostics"]["validation_health"]["validation_error_count"] == 1
    assert new["metrics"]["diagnostics"]["validation_health"]["rules_executed_ratio"] == 1.0


def test_change_reason_names_the_snapshot():
    assert change_reason({"world_id": "alpha_core", "version": "v0004"}) == "extended:risk_snapshot alpha_core/v0004"
    assert change_reason(None) == "extended:layers"


def test_a_bad_realized_series_is_a_rule_error_for_the_monitored_runs_only():
    snapshot = {**SNAPSHOT, "realized_returns": {"a": GOOD_LIVE, "b": GOOD_LIVE[:-1] + [float("inf")]}}
    out = evaluate_extended_layers(world_runs(), WORLD_POLICY, snapshot=snapshot)
    for key in ("w1/a/a-live", "w1/b/b-live"):
        assert out[key]["live_monitoring"].reason_code == "rule_error"
    assert "realized returns must be finite" in out["w1/a/a-live"]["live_monitoring"].reason
    assert out["w1/c/c-bt"]["portfolio"].reason_code == "portfolio_ok"
