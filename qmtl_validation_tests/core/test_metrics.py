"""The metrics engine: definitions of SPEC §5 on tiny hand-computed series, null handling, the
panel/single-series contract, and the vectorised kernels against straightforward references."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from qmtl_validation.core import health, stats
from qmtl_validation.core.metrics import (
    FLAT_COLUMNS,
    METRIC_PATHS,
    NOTE_REASONS,
    EvaluationMetrics,
    compute_metrics,
    compute_metrics_panel,
    compute_panel_arrays,
    flat_columns,
    metrics_from_arrays,
)

P = 252
# r = [1 %, 3 %, −1 %, 2 %, 0 %]: mean 1 %, Σd² = 1e-3, std √2.5e-4
FIVE = [0.01, 0.03, -0.01, 0.02, 0.0]


def close(a: float | None, b: float, rel: float = 1e-12) -> bool:
    return a is not None and abs(a - b) <= rel * max(1.0, abs(b))


def trades_log(rows: list[dict[str, Any]]) -> pd.DataFrame:
    base = {"ts": pd.Timestamp("2024-01-02"), "symbol": "AAA", "side": "buy", "price": 10.0}
    return pd.DataFrame([{**base, **row} for row in rows])


LIQUIDITY_TRADES = trades_log(
    [
        {"qty": 100, "notional": 1000.0, "adv_notional": 1e5, "bar_volume": 1000.0},
        {
            "qty": -200,
            "side": "sell",
            "notional": -2000.0,
            "adv_notional": 1e5,
            "bar_volume": 4000.0,
        },
        {"qty": 300, "notional": 3000.0, "adv_notional": 1e5, "bar_volume": 1500.0},
        {"qty": 400, "notional": 4000.0, "adv_notional": 1e5, "bar_volume": 0.0},
        {"qty": 500, "notional": 5000.0, "adv_notional": 1e5, "bar_volume": np.nan},
        {"qty": 10, "notional": 100.0, "adv_notional": np.nan, "bar_volume": 100.0},
    ]
)


def walk(value: Any, path: str = ""):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from walk(item, f"{path}.{key}" if path else key)
    else:
        yield path, value


# --- shape of the result ---------------------------------------------------------------------


def test_to_dict_has_every_spec_metric_in_its_block():
    nested = compute_metrics(FIVE).to_dict()
    assert set(nested) == {"returns", "sample", "risk", "robustness", "diagnostics"}
    leaves = {path for path, _ in walk(nested) if not path.startswith("diagnostics.metric_notes")}
    expected = {p for p in METRIC_PATHS if not p.startswith("benchmark.")}
    assert expected <= leaves | {"diagnostics.extra_metrics"}
    for path in health.CORE_METRIC_PATHS:
        assert (
            health.get_path(nested, path) is not None
            or path in nested["diagnostics"]["metric_notes"]
        )
    for path in (
        "returns.sortino_ratio",
        "returns.var_p01",
        "returns.es_p01",
        "returns.max_time_under_water_days",
        "returns.skew",
        "returns.excess_kurtosis",
        "robustness.probabilistic_sharpe_ratio",
        "robustness.min_track_record_years",
        "robustness.cv_folds",
        "robustness.cv_sharpe_mean",
        "robustness.cv_sharpe_std",
        "sample.regime_coverage.high_vol",
        "risk.capacity_estimate_base",
        "diagnostics.strategy_complexity",
        "diagnostics.search_intensity",
        "diagnostics.returns_source",
    ):
        assert path in leaves


def test_values_are_plain_python_types():
    for path, value in walk(compute_metrics(np.array(FIVE)).to_dict()):
        assert value is None or type(value) in (float, int, str, dict), path


def test_every_null_metric_has_a_reason():
    for returns in (FIVE, [0.1, 0.1, 0.1], [0.02], []):
        metrics = compute_metrics(returns).to_dict()
        notes = metrics["diagnostics"]["metric_notes"]
        for path, value in walk(metrics):
            if value is None:
                assert notes.get(path), path


def test_benchmark_block_is_present_only_with_a_benchmark():
    assert "benchmark" not in compute_metrics(FIVE).to_dict()
    with_benchmark = compute_metrics(
        FIVE, benchmark_returns=[0.0, 0.01, 0.0, -0.01, 0.02]
    ).to_dict()
    assert set(with_benchmark["benchmark"]) == {
        "sharpe",
        "max_drawdown",
        "volatility",
        "vs_benchmark_sharpe",
    }


def test_flat_dict_has_stable_columns_and_json_maps():
    flat = compute_metrics(FIVE, extra_metrics={"b": 1, "a": 2}).to_flat_dict()
    assert tuple(flat) == FLAT_COLUMNS
    assert flat["benchmark.sharpe"] is None
    assert flat["diagnostics.extra_metrics"] == '{"a":2,"b":1}'
    assert json.loads(flat["diagnostics.metric_notes"])["sample.n_trades_total"] == "no trades log"
    assert flat["sample.regime_coverage.low_vol"] is None


def test_from_dict_round_trips_and_get_reads_dotted_paths():
    metrics = compute_metrics(FIVE, benchmark_returns=[0.0, 0.01, 0.0, -0.01, 0.02])
    again = EvaluationMetrics.from_dict(metrics.to_dict())
    assert again == metrics
    assert again.to_dict() == metrics.to_dict()
    assert metrics.get("returns.sharpe") == metrics.to_dict()["returns"]["sharpe"]
    assert metrics.get("sample.n_trades_total", "missing") == "missing"
    assert metrics.get("benchmark.volatility") is not None
    assert EvaluationMetrics.from_dict(
        {"returns": {"sharpe": 1.0}, "stress": {"crash": {"var_99": 0.1}}}
    ).to_dict()["stress"] == {"crash": {"var_99": 0.1}}
    with pytest.raises(ValueError, match="sample"):
        EvaluationMetrics.from_dict({"sample": [1, 2]})


def test_validation_health_coverage_comes_from_the_health_module():
    metrics = compute_metrics(FIVE).to_dict()
    block = metrics["diagnostics"]["validation_health"]
    assert block["metric_coverage_ratio"] == health.metric_coverage_ratio(metrics)
    assert block["metric_coverage_ratio"] == pytest.approx(
        8 / 12
    )  # trade and liquidity metrics null
    assert block["rules_executed_ratio"] is None and block["validation_error_count"] is None
    notes = metrics["diagnostics"]["metric_notes"]
    assert (
        notes["diagnostics.validation_health.rules_executed_ratio"] == "set after rule evaluation"
    )


# --- definitions on hand-computed series -----------------------------------------------------


def test_sharpe_is_annualised_and_the_per_period_value_is_kept():
    returns = compute_metrics(FIVE).to_dict()["returns"]
    assert close(returns["sharpe_per_period"], math.sqrt(0.4))
    assert close(returns["sharpe"], math.sqrt(0.4 * 252))
    assert close(returns["volatility"], math.sqrt(2.5e-4 * 252))


def test_sharpe_uses_the_world_periods_per_year():
    returns = compute_metrics(FIVE, periods_per_year=52).to_dict()["returns"]
    assert close(returns["sharpe"], math.sqrt(0.4 * 52))


def test_drawdown_time_under_water_and_gain_to_pain_on_a_small_series():
    returns = compute_metrics(FIVE).to_dict()["returns"]
    # equity 1.01, 1.0403, 1.029897, 1.05049494, 1.05049494: one period under water, −1 % deep
    assert close(returns["max_drawdown"], 0.01)
    assert close(returns["time_under_water_ratio"], 0.2)
    assert returns["max_time_under_water_days"] == 1
    assert close(returns["gain_to_pain_ratio"], 5.0)


def test_a_first_day_loss_is_a_drawdown():
    # equity 0.9, 0.945, 1.01115: the loss on day one counts, and so do both days below 1
    returns = compute_metrics([-0.1, 0.05, 0.07]).to_dict()["returns"]
    assert close(returns["max_drawdown"], 0.1)
    assert close(returns["time_under_water_ratio"], 2 / 3)
    assert returns["max_time_under_water_days"] == 2


def test_drawdown_compounds_returns_instead_of_summing_them():
    # equity 1.1, 0.99, 0.891 → 1 − 0.891/1.1 = 19 % (summed returns would say 20 %)
    assert close(compute_metrics([0.1, -0.1, -0.1]).get("returns.max_drawdown"), 0.19)


def test_gain_to_pain_without_a_losing_period_is_null_with_a_note():
    metrics = compute_metrics([0.01, 0.0, 0.02])
    assert metrics.get("returns.gain_to_pain_ratio") is None
    assert metrics.metric_notes["returns.gain_to_pain_ratio"] == "no losing period"
    assert metrics.metric_notes["returns.sortino_ratio"] == "no losing period"


def test_constant_series_has_null_sharpe_even_though_its_float_std_is_not_zero():
    constant = [0.1] * 6
    assert np.std(constant, ddof=1) > 0.0
    metrics = compute_metrics(constant)
    for path in (
        "returns.sharpe",
        "returns.sharpe_per_period",
        "returns.skew",
        "robustness.deflated_sharpe_ratio",
        "robustness.probabilistic_sharpe_ratio",
        "robustness.sharpe_second_half",
    ):
        assert metrics.get(path) is None, path
    assert metrics.metric_notes["returns.sharpe"] == "zero dispersion (all returns equal)"
    assert metrics.metric_notes["robustness.sharpe_first_half"] == "this half has zero dispersion"
    assert metrics.get("returns.volatility") == 0.0


def test_short_histories_are_null_with_the_reason():
    one = compute_metrics([0.02])
    assert one.metric_notes["returns.sharpe"] == "fewer than 2 periods"
    assert one.metric_notes["robustness.deflated_sharpe_ratio"] == "fewer than 4 periods"
    assert (
        one.get("returns.max_drawdown") == 0.0
        and one.get("sample.effective_history_years") == 1 / 252
    )
    three = compute_metrics([0.01, -0.02, 0.03])
    assert three.get("returns.skew") is not None
    assert three.metric_notes["returns.excess_kurtosis"] == "fewer than 4 periods"
    assert three.metric_notes["robustness.probabilistic_sharpe_ratio"] == "fewer than 4 periods"
    empty = compute_metrics([])
    assert empty.get("sample.n_periods") == 0
    assert empty.metric_notes["returns.max_drawdown"] == "no return periods"


def test_halves_split_at_n_over_two_on_odd_lengths():
    robustness = compute_metrics(FIVE).to_dict()["robustness"]
    # first half [1 %, 3 %]: Sharpe √2 per period; second [−1 %, 2 %, 0 %]: √(1/21)
    assert close(robustness["sharpe_first_half"], math.sqrt(2 * 252))
    assert close(robustness["sharpe_second_half"], math.sqrt(252 / 21))


def test_halves_of_a_three_period_run_leave_the_first_half_too_short():
    metrics = compute_metrics([0.01, 0.02, -0.01])
    assert (
        metrics.metric_notes["robustness.sharpe_first_half"] == "this half has fewer than 2 periods"
    )
    assert close(
        metrics.get("robustness.sharpe_second_half"), 0.005 / math.sqrt(0.00045) * math.sqrt(252)
    )


def test_cross_validation_uses_five_contiguous_array_split_folds():
    returns = np.array(
        [0.01, -0.02, 0.03, 0.0, 0.02, -0.01, 0.015, 0.005, -0.03, 0.04, 0.01, -0.005]
    )
    folds = np.array_split(returns, 5)  # sizes 3, 3, 2, 2, 2
    sharpes = [f.mean() / f.std(ddof=1) * math.sqrt(P) for f in folds]
    robustness = compute_metrics(returns).to_dict()["robustness"]
    assert robustness["cv_folds"] == 5
    assert close(robustness["cv_sharpe_mean"], float(np.mean(sharpes)))
    assert close(robustness["cv_sharpe_std"], float(np.std(sharpes, ddof=1)))
    short = compute_metrics(returns[:9])
    assert (
        short.metric_notes["robustness.cv_folds"] == "fewer than 10 periods (5 folds of at least 2)"
    )


def test_var_and_es_are_positive_loss_fractions_at_the_linear_one_percent_quantile():
    returns = compute_metrics(FIVE).to_dict()["returns"]
    # sorted −1 %, 0, 1 %, 2 %, 3 %: virtual index 0.04 → q = −0.96 %; tail = {−1 %}
    assert close(returns["var_p01"], 0.0096)
    assert close(returns["es_p01"], 0.01)
    gains = compute_metrics([0.01, 0.02, 0.03]).to_dict()["returns"]
    assert gains["var_p01"] == 0.0 and gains["es_p01"] == 0.0


def test_var_and_es_with_ties_at_the_quantile():
    # n = 153: virtual index 1.52 falls between two tied −2 % values
    metrics = compute_metrics([-0.02] * 3 + [0.01] * 150).to_dict()["returns"]
    assert close(metrics["var_p01"], 0.02) and close(metrics["es_p01"], 0.02)
    # n = 203: virtual index 2.02 → −2 % + 0.02·3 % = −1.94 %; the tail is the three −2 %
    metrics = compute_metrics([-0.02] * 3 + [0.01] * 200).to_dict()["returns"]
    assert close(metrics["var_p01"], 0.0194) and close(metrics["es_p01"], 0.02)
    # right-skewed: no value far below the mean, the quantile sits in a block of ties
    metrics = compute_metrics([-0.01] * 50 + [0.5] * 3).to_dict()["returns"]
    assert close(metrics["var_p01"], 0.01) and close(metrics["es_p01"], 0.01)


def test_sortino_uses_downside_deviation_against_zero():
    # downside deviation √(0.01²/5); mean 1 %
    assert close(compute_metrics(FIVE).get("returns.sortino_ratio"), math.sqrt(5 * 252))


def test_skew_and_excess_kurtosis_are_the_pandas_estimators():
    sample = [0.01, -0.02, 0.03, 0.005, -0.04, 0.02, 0.0, 0.011]
    returns = compute_metrics(sample).to_dict()["returns"]
    assert close(returns["skew"], pd.Series(sample).skew())
    assert close(returns["excess_kurtosis"], pd.Series(sample).kurt())


def test_psr_dsr_and_min_track_record_use_per_period_sharpe_and_non_excess_kurtosis():
    rng = np.random.default_rng(11)
    returns = rng.normal(0.001, 0.01, 500)
    sr = returns.mean() / returns.std(ddof=1)
    skew, kurt = pd.Series(returns).skew(), pd.Series(returns).kurt() + 3
    metrics = compute_metrics(returns, search_intensity=20)
    bracket = 1 - skew * sr + (kurt - 1) / 4 * sr**2
    psr = norm.cdf(sr * math.sqrt(499) / math.sqrt(bracket))
    assert close(metrics.get("robustness.probabilistic_sharpe_ratio"), psr, rel=1e-10)
    sigma2 = bracket / 499
    assert close(
        metrics.get("robustness.deflated_sharpe_ratio"),
        stats.deflated_sharpe_ratio(sr, 500, skew, kurt, 20, sigma2),
        rel=1e-10,
    )
    assert metrics.get("robustness.dsr_n_trials") == 20
    assert close(
        metrics.get("robustness.dsr_expected_max_sharpe"),
        stats.expected_max_sharpe_ratio(20, sigma2),
        rel=1e-10,
    )
    assert "sigma_SR^2" in metrics.metric_notes["robustness.deflated_sharpe_ratio"]
    trl = 1 + bracket * (norm.ppf(0.95) / sr) ** 2
    assert close(metrics.get("robustness.min_track_record_years"), trl / 252, rel=1e-10)


def test_dsr_takes_the_larger_trial_count_and_the_trials_sharpe_variance():
    rng = np.random.default_rng(12)
    returns = rng.normal(0.001, 0.01, 300)
    trials = [0.01, 0.05, -0.02, 0.03, 0.04, 0.0]
    metrics = compute_metrics(returns, search_intensity=3, trial_sharpes=trials)
    sr = returns.mean() / returns.std(ddof=1)
    expected = stats.deflated_sharpe_ratio(
        sr,
        300,
        pd.Series(returns).skew(),
        pd.Series(returns).kurt() + 3,
        6,
        float(np.var(trials, ddof=1)),
    )
    assert metrics.get("robustness.dsr_n_trials") == 6
    assert close(metrics.get("robustness.deflated_sharpe_ratio"), expected, rel=1e-10)
    assert "robustness.deflated_sharpe_ratio" not in metrics.metric_notes
    assert (
        compute_metrics(returns, search_intensity=50, trial_sharpes=trials).get(
            "robustness.dsr_n_trials"
        )
        == 50
    )


def test_dsr_with_a_single_trial_equals_psr_and_has_no_variance_note():
    metrics = compute_metrics(np.random.default_rng(13).normal(0.001, 0.01, 100))
    assert metrics.get("robustness.deflated_sharpe_ratio") == metrics.get(
        "robustness.probabilistic_sharpe_ratio"
    )
    assert metrics.get("robustness.dsr_expected_max_sharpe") == 0.0
    assert "robustness.deflated_sharpe_ratio" not in metrics.metric_notes


def test_min_track_record_is_null_when_sharpe_is_not_positive():
    metrics = compute_metrics([-0.01, 0.005, -0.02, 0.01, -0.005])
    assert (
        metrics.metric_notes["robustness.min_track_record_years"] == "Sharpe ratio is not positive"
    )


def test_regime_coverage_matches_the_reference_terciles():
    returns = np.random.default_rng(14).standard_t(3, 400) * 0.01
    coverage = compute_metrics(returns).to_dict()["sample"]["regime_coverage"]
    assert coverage == stats.regime_coverage(returns)
    flat_vol = np.tile([0.01, -0.01, 0.02, -0.02, 0.0] * 4, 5)
    assert compute_metrics(flat_vol).to_dict()["sample"]["regime_coverage"] == {
        "low_vol": 1.0,
        "mid_vol": 0.0,
        "high_vol": 0.0,
    }
    short = compute_metrics(returns[:21])
    assert short.metric_notes["sample.regime_coverage.low_vol"].startswith("fewer than 22 periods")


def test_trade_counts_are_null_without_a_trades_log_never_the_number_of_periods():
    metrics = compute_metrics(np.full(300, 0.001) + np.linspace(0, 0.001, 300))
    assert metrics.get("sample.n_trades_total") is None
    assert metrics.get("sample.n_trades_per_year") is None
    assert metrics.metric_notes["sample.n_trades_total"] == "no trades log"
    assert metrics.get("sample.n_periods") == 300


def test_trade_counts_and_liquidity_percentiles_from_a_small_trades_log():
    returns = np.random.default_rng(15).normal(0.0005, 0.01, 126)
    metrics = compute_metrics(returns, LIQUIDITY_TRADES, capital=1e6)
    sample, risk = metrics.to_dict()["sample"], metrics.to_dict()["risk"]
    assert sample["n_trades_total"] == 6
    assert close(sample["effective_history_years"], 0.5)
    assert close(sample["n_trades_per_year"], 12.0)
    # |notional|/adv: 1 %..5 % (the NaN-adv row is skipped) → linear p95 = 4.8 %
    assert close(risk["adv_utilization_p95"], 0.048)
    # |qty|/bar_volume over rows with a positive bar volume: 0.05, 0.1, 0.1, 0.2 → 0.185
    assert close(risk["participation_rate_p95"], 0.185)
    assert close(risk["capacity_estimate_base"], 1e6 * 0.1 / 0.048)
    assert close(
        risk["adv_utilization_p95"], float(np.percentile([0.01, 0.02, 0.03, 0.04, 0.05], 95))
    )


def test_liquidity_metrics_are_null_with_a_reason_when_the_log_lacks_them():
    log = LIQUIDITY_TRADES.drop(columns=["adv_notional", "bar_volume"])
    metrics = compute_metrics(FIVE, log, capital=1e6)
    assert metrics.get("sample.n_trades_total") == 6
    assert (
        metrics.metric_notes["risk.adv_utilization_p95"] == "trades log has no adv_notional column"
    )
    assert (
        metrics.metric_notes["risk.participation_rate_p95"] == "trades log has no bar_volume column"
    )
    assert metrics.metric_notes["risk.capacity_estimate_base"] == "adv_utilization_p95 is null"
    empty = compute_metrics(FIVE, LIQUIDITY_TRADES.iloc[:0])
    assert empty.get("sample.n_trades_total") == 0 and empty.get("sample.n_trades_per_year") == 0.0
    assert empty.metric_notes["risk.adv_utilization_p95"] == "no trade with a positive adv_notional"
    assert (
        compute_metrics(FIVE, LIQUIDITY_TRADES).metric_notes["risk.capacity_estimate_base"]
        == "no capital given"
    )


def test_adv_limit_scales_the_capacity_estimate():
    metrics = compute_metrics(FIVE, LIQUIDITY_TRADES, capital=2e6, adv_limit=0.05)
    assert close(metrics.get("risk.capacity_estimate_base"), 2e6 * 0.05 / 0.048)


def test_risk_free_rate_is_de_annualised_geometrically_for_sharpe_sortino_psr_and_halves():
    rf_p = 1.04 ** (1 / 252) - 1
    metrics = compute_metrics(FIVE, risk_free_rate=0.04)
    r = np.array(FIVE)
    sd = r.std(ddof=1)
    assert close(metrics.get("returns.sharpe_per_period"), (0.01 - rf_p) / sd)
    down = np.minimum(r - rf_p, 0)
    assert close(
        metrics.get("returns.sortino_ratio"),
        (0.01 - rf_p) / math.sqrt(np.mean(down**2)) * math.sqrt(P),
    )
    first = r[:2]
    assert close(
        metrics.get("robustness.sharpe_first_half"),
        (first.mean() - rf_p) / first.std(ddof=1) * math.sqrt(P),
    )
    assert metrics.get("returns.max_drawdown") == compute_metrics(FIVE).get("returns.max_drawdown")
    assert metrics.get("diagnostics.risk_free_rate") == 0.04


def test_benchmark_block_compares_against_the_strategy_over_its_own_periods():
    bench = [0.0, 0.01, 0.0, -0.01, 0.02]
    metrics = compute_metrics(FIVE, benchmark_returns=bench)
    b = np.array(bench)
    b_sharpe = b.mean() / b.std(ddof=1) * math.sqrt(P)
    block = metrics.to_dict()["benchmark"]
    assert close(block["sharpe"], b_sharpe)
    assert close(block["volatility"], b.std(ddof=1) * math.sqrt(P))
    assert close(block["max_drawdown"], 1 - (1.01 * 0.99) / 1.01)
    assert close(block["vs_benchmark_sharpe"], math.sqrt(0.4 * 252) - b_sharpe)


def test_benchmark_series_is_aligned_on_the_date_index():
    dates = pd.date_range("2024-01-01", periods=5, freq="B")
    returns = pd.Series(FIVE, index=dates)
    bench = pd.Series(
        [0.02, -0.01, 0.0, 0.01, 0.0], index=dates[::-1]
    )  # same values, reversed order
    aligned = compute_metrics(returns, benchmark_returns=bench)
    positional = compute_metrics(FIVE, benchmark_returns=[0.0, 0.01, 0.0, -0.01, 0.02])
    assert aligned.get("benchmark.sharpe") == positional.get("benchmark.sharpe")


def test_a_run_benchmark_may_cover_only_the_runs_own_periods():
    own = [0.0, 0.01, 0.0, -0.01, 0.02]
    frame = pd.DataFrame({"late": [np.nan, np.nan, *FIVE], "early": [0.0, 0.01, *FIVE]})
    panel = compute_metrics_panel(frame, benchmark_returns={"late": own, "early": [0.0, 0.0, *own]})
    alone = compute_metrics(FIVE, benchmark_returns=own)
    assert panel["late"].to_dict()["benchmark"] == alone.to_dict()["benchmark"]
    assert panel["early"].get("benchmark.sharpe") is not None
    with pytest.raises(ValueError, match="expected 7"):
        compute_metrics_panel(frame, benchmark_returns={"late": own[:3]})


def test_benchmark_with_missing_values_in_the_run_window_is_null_with_a_note():
    metrics = compute_metrics(FIVE, benchmark_returns=[0.0, np.nan, 0.0, -0.01, 0.02])
    assert metrics.get("benchmark.sharpe") is None
    assert metrics.metric_notes["benchmark.sharpe"].startswith("benchmark returns missing")
    assert (
        metrics.metric_notes["benchmark.vs_benchmark_sharpe"]
        == "strategy or benchmark Sharpe is null"
    )


def test_diagnostics_pass_through_and_strategy_complexity():
    metrics = compute_metrics(
        FIVE,
        search_intensity=9,
        complexity={"n_features": 4, "nodes": 9},
        extra_metrics={"turnover": 1.5, "bad": float("nan"), "nested": {"x": np.float64(2.0)}},
        returns_source="backtest.vectorbt",
    )
    diagnostics = metrics.to_dict()["diagnostics"]
    assert diagnostics["search_intensity"] == 9
    assert diagnostics["returns_source"] == "backtest.vectorbt"
    assert diagnostics["extra_metrics"] == {"turnover": 1.5, "bad": None, "nested": {"x": 2.0}}
    assert diagnostics["metric_notes"]["diagnostics.extra_metrics.bad"] == "non-finite value"
    assert close(
        diagnostics["strategy_complexity"],
        1 + math.log(10) + 0.2 * math.log(5) + 0.1 * math.log(10),
    )
    assert "diagnostics.returns_source" not in diagnostics["metric_notes"]


def test_complexity_inputs_fall_back_to_extra_metrics():
    metrics = compute_metrics(FIVE, extra_metrics={"n_parameters": 3})
    assert close(
        metrics.get("diagnostics.strategy_complexity"), 1 + math.log(2) + 0.2 * math.log(4)
    )


# --- bad input -------------------------------------------------------------------------------


def test_interior_nan_is_an_error_naming_the_column():
    frame = pd.DataFrame({"good": [np.nan, 0.01, 0.02, 0.0], "alpha": [np.nan, 0.01, np.nan, 0.02]})
    with pytest.raises(ValueError, match="'alpha'.*period 2"):
        compute_metrics_panel(frame)


def test_infinite_values_and_total_losses_are_errors():
    with pytest.raises(ValueError, match="inf"):
        compute_metrics([0.01, np.inf, 0.02])
    with pytest.raises(ValueError, match="inf"):
        compute_metrics_panel(pd.DataFrame({"x": [np.inf, 0.01, 0.02]}))
    with pytest.raises(ValueError, match="<= -1"):
        compute_metrics([0.01, -1.0, 0.02])


def test_invalid_options_are_rejected():
    with pytest.raises(ValueError, match="search_intensity"):
        compute_metrics(FIVE, search_intensity=0)
    with pytest.raises(ValueError, match="periods_per_year"):
        compute_metrics(FIVE, periods_per_year=0)
    with pytest.raises(ValueError, match="capital"):
        compute_metrics(FIVE, capital=-5)
    with pytest.raises(ValueError, match="trial_sharpes"):
        compute_metrics(FIVE, trial_sharpes=[0.1, float("nan")])
    with pytest.raises(ValueError, match="not a column"):
        compute_metrics_panel(pd.DataFrame({"a": FIVE}), capital={"b": 1e6})
    with pytest.raises(ValueError, match="one value per column"):
        compute_metrics_panel(pd.DataFrame({"a": FIVE, "b": FIVE}), periods_per_year=[252])
    with pytest.raises(ValueError, match="2-D"):
        compute_metrics_panel(np.zeros(3))


# --- the panel -------------------------------------------------------------------------------


def ragged_panel(n_runs: int, n_periods: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    values = np.clip(rng.standard_t(3, size=(n_periods, n_runs)) * 0.01 + 0.0004, -0.5, 0.5)
    starts = rng.integers(0, n_periods - 1, size=n_runs)
    starts[: max(1, n_runs // 4)] = 0
    for j, start in enumerate(starts):
        values[:start, j] = np.nan
    return pd.DataFrame(values, columns=[f"run{j}" for j in range(n_runs)])


def test_panel_result_equals_the_single_series_result_for_every_column():
    frame = ragged_panel(24, 160, seed=21)
    frame.iloc[:, 3] = np.nan  # a run with no periods at all
    frame.iloc[-3:, 4], frame.iloc[:-3, 4] = 0.01, np.nan  # a short constant run
    trades = {"run0": LIQUIDITY_TRADES, "run5": LIQUIDITY_TRADES.iloc[:2]}
    bench = pd.Series(np.random.default_rng(22).normal(0, 0.01, len(frame)))
    intensity = {f"run{j}": j + 1 for j in range(24)}
    panel = compute_metrics_panel(
        frame,
        trades,
        search_intensity=intensity,
        capital=1e6,
        benchmark_returns=bench,
        risk_free_rate=0.03,
    )
    assert list(panel) == list(frame.columns)
    for j, column in enumerate(frame.columns):
        single = compute_metrics(
            frame[column],
            trades.get(column),
            search_intensity=j + 1,
            capital=1e6,
            benchmark_returns=bench,
            risk_free_rate=0.03,
        )
        a, b = panel[column].to_flat_dict(), single.to_flat_dict()
        for key in FLAT_COLUMNS:
            if isinstance(a[key], float) and isinstance(b[key], float):
                assert close(a[key], b[key], rel=1e-13), (column, key)
            else:
                assert a[key] == b[key], (column, key)


def test_all_nan_column_has_no_periods_and_notes_say_so():
    frame = pd.DataFrame({"a": FIVE, "b": [np.nan] * 5})
    metrics = compute_metrics_panel(frame)["b"]
    assert metrics.get("sample.n_periods") == 0
    assert metrics.metric_notes["returns.sharpe"] == "no return periods"
    assert metrics.metric_notes["sample.effective_history_years"] == "no return periods"


def test_per_run_options_accept_mappings_and_sequences():
    frame = pd.DataFrame({"a": FIVE, "b": FIVE})
    panel = compute_metrics_panel(
        frame,
        periods_per_year=[252, 52],
        returns_source={"b": "paper"},
        trial_sharpes={"a": [0.1, 0.2, 0.3]},
        extra_metrics={"a": {"k": 1}, "b": {"k": 2}},
        complexity=[{"n_features": 1}, None],
    )
    assert close(panel["b"].get("returns.sharpe"), math.sqrt(0.4 * 52))
    assert panel["a"].get("diagnostics.returns_source") is None
    assert panel["b"].get("diagnostics.returns_source") == "paper"
    assert (
        panel["a"].get("robustness.dsr_n_trials") == 3
        and panel["b"].get("robustness.dsr_n_trials") == 1
    )
    assert panel["a"].get("diagnostics.extra_metrics") == {"k": 1}
    assert panel["b"].get("diagnostics.extra_metrics") == {"k": 2}
    assert panel["a"].get("diagnostics.strategy_complexity") > panel["b"].get(
        "diagnostics.strategy_complexity"
    )


def test_a_two_dimensional_array_is_a_panel_of_periods_by_runs():
    values = np.column_stack([FIVE, [0.0, 0.01, -0.02, 0.0, 0.01]])
    panel = compute_metrics_panel(values)
    assert list(panel) == [0, 1]
    assert close(panel[0].get("returns.sharpe"), math.sqrt(0.4 * 252))
    fortran = compute_metrics_panel(np.asfortranarray(values))
    assert fortran[1].to_dict() == panel[1].to_dict()


def test_core_metric_set_skips_the_expensive_v15_metrics_with_a_note():
    frame = ragged_panel(5, 120, seed=23)
    core = compute_metrics_panel(frame, metric_set="core")
    full = compute_metrics_panel(frame)
    for column in frame.columns:
        assert core[column].metric_notes["returns.var_p01"] == "not computed (metric_set='core')"
        for path in health.CORE_METRIC_PATHS:
            assert core[column].get(path) == full[column].get(path)


def test_columnar_output_matches_the_objects():
    frame = ragged_panel(12, 90, seed=24)
    arrays = compute_panel_arrays(
        frame, {"run1": LIQUIDITY_TRADES}, benchmark_returns={"run2": frame["run0"]}
    )
    objects = metrics_from_arrays(arrays)
    table = flat_columns(arrays)
    assert list(table) == ["run", *FLAT_COLUMNS]
    for i, column in enumerate(frame.columns):
        flat = objects[column].to_flat_dict()
        for key in FLAT_COLUMNS:
            value = table[key][i]
            if isinstance(flat[key], (float, int)) and not isinstance(flat[key], bool):
                assert value == flat[key], (column, key)
            elif flat[key] is None and isinstance(value, float):
                assert math.isnan(value), (column, key)
            else:
                assert value == flat[key], (column, key)
    coverage = arrays["diagnostics.validation_health.metric_coverage_ratio"]
    for i, column in enumerate(frame.columns):
        assert coverage[i] == health.metric_coverage_ratio(objects[column].to_dict())
    assert NOTE_REASONS[arrays["note:sample.n_trades_total"][0]] == "no trades log"


def test_worker_threads_do_not_change_results():
    frame = ragged_panel(1200, 300, seed=25)  # several chunks of runs
    one = compute_panel_arrays(frame, n_threads=1)
    three = compute_panel_arrays(frame, n_threads=3)
    for key, values in one.items():
        if values.dtype.kind == "f":
            np.testing.assert_array_equal(values, three[key], err_msg=key)


# --- vectorised kernels against a straightforward per-column reference -----------------------


def reference(column: np.ndarray, periods: float = P, rf: float = 0.0) -> dict[str, float | None]:
    """The SPEC §5 definitions, one run at a time, with plain numpy / pandas."""
    r = column[~np.isnan(column)]
    n = r.size
    rf_p = (1 + rf) ** (1 / periods) - 1
    out: dict[str, float | None] = {}

    def sharpe(x: np.ndarray) -> float | None:
        if x.size < 2 or x.max() == x.min():
            return None
        return (x.mean() - rf_p) / x.std(ddof=1) * math.sqrt(periods)

    out["returns.sharpe"] = sharpe(r)
    out["returns.volatility"] = r.std(ddof=1) * math.sqrt(periods) if n >= 2 else None
    equity = np.cumprod(1 + r)
    peak = np.maximum(np.maximum.accumulate(equity), 1.0)
    out["returns.max_drawdown"] = float(np.max(1 - equity / peak))
    under = equity < peak
    out["returns.time_under_water_ratio"] = under.mean()
    longest = current = 0
    for flag in under:
        current = current + 1 if flag else 0
        longest = max(longest, current)
    out["returns.max_time_under_water_days"] = float(longest)
    losses = r[r < 0].sum()
    out["returns.gain_to_pain_ratio"] = r.sum() / abs(losses) if losses < 0 else None
    q = np.quantile(r, 0.01)
    out["returns.var_p01"] = max(-q, 0.0) if n >= 2 else None
    out["returns.es_p01"] = max(-r[r <= q].mean(), 0.0) if n >= 2 else None
    downside = np.minimum(r - rf_p, 0.0)
    out["returns.sortino_ratio"] = (
        (r.mean() - rf_p) / math.sqrt(np.mean(downside**2)) * math.sqrt(periods)
        if downside.any()
        else None
    )
    series = pd.Series(r)
    flat = r.max() == r.min()
    out["returns.skew"] = None if flat or n < 3 else series.skew()
    out["returns.excess_kurtosis"] = None if flat or n < 4 else series.kurt()
    out["robustness.sharpe_first_half"] = sharpe(r[: n // 2])
    out["robustness.sharpe_second_half"] = sharpe(r[n // 2 :])
    if n >= 10:
        folds = [sharpe(fold) for fold in np.array_split(r, 5)]
        if all(f is not None for f in folds):
            out["robustness.cv_sharpe_mean"] = float(np.mean(folds))
            out["robustness.cv_sharpe_std"] = float(np.std(folds, ddof=1))
    if n >= 4 and not flat:
        sr = (r.mean() - rf_p) / r.std(ddof=1)
        g3, g4 = series.skew(), series.kurt() + 3
        bracket = 1 - g3 * sr + (g4 - 1) / 4 * sr**2
        out["robustness.probabilistic_sharpe_ratio"] = norm.cdf(
            sr * math.sqrt(n - 1) / math.sqrt(bracket)
        )
        if sr > 0:
            out["robustness.min_track_record_years"] = (
                1 + bracket * (norm.ppf(0.95) / sr) ** 2
            ) / periods
    if n >= 22 and not flat:
        centred = r - r.mean()
        rolling = pd.Series(centred).rolling(20).var().dropna().to_numpy()
        keys = np.rint(rolling * (1e9 / (np.sum(centred**2) / (n - 1))))
        low_cut, high_cut = np.quantile(keys, [1 / 3, 2 / 3])
        out["sample.regime_coverage.low_vol"] = np.mean(keys <= low_cut)
        out["sample.regime_coverage.high_vol"] = np.mean(keys > high_cut)
    return out


@pytest.mark.parametrize("rf", [0.0, 0.035])
def test_vectorised_panel_matches_the_per_column_reference(rf):
    frame = ragged_panel(60, 700, seed=31)
    panel = compute_metrics_panel(frame, risk_free_rate=rf)
    checked = 0
    for column in frame.columns:
        expected = reference(frame[column].to_numpy(), rf=rf)
        metrics = panel[column]
        excess = frame[column].dropna().to_numpy() - ((1 + rf) ** (1 / P) - 1)
        # MinTRL ∝ 1/SR²: it inherits the rounding of the mean amplified by the mean's condition
        # number Σ|e|/|Σe| (squared), so its tolerance is scaled by it.
        condition = float(np.abs(excess).sum() / abs(excess.sum())) if excess.size else 1.0
        for path, value in expected.items():
            got = metrics.get(path)
            if value is None:
                assert got is None, (column, path)
            else:
                tolerance = 1e-12 * max(1.0, abs(value))
                if path == "robustness.min_track_record_years":
                    tolerance *= condition**2
                assert got is not None and abs(got - value) <= tolerance, (column, path, got, value)
                checked += 1
    assert checked > 60 * 15


# --- never NaN or inf ------------------------------------------------------------------------

returns_lists = st.lists(
    st.one_of(
        st.floats(min_value=-0.999, max_value=10.0, allow_nan=False, allow_infinity=False),
        st.sampled_from([0.0, 1e-300, -1e-300, 5e-324, 0.25, -0.5]),
    ),
    min_size=0,
    max_size=45,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(returns=returns_lists, padding=st.integers(min_value=0, max_value=3), constant=st.booleans())
def test_to_dict_never_holds_nan_or_inf_and_every_null_is_explained(returns, padding, constant):
    if constant and returns:
        returns = [returns[0]] * len(returns)
    series = [math.nan] * padding + returns
    bench = [0.001 * (i % 3 - 1) for i in range(len(series))]
    metrics = compute_metrics(
        series, LIQUIDITY_TRADES.iloc[: len(returns) % 4], capital=1e6, benchmark_returns=bench
    )
    nested = metrics.to_dict()
    notes = nested["diagnostics"]["metric_notes"]
    for path, value in walk(nested):
        if isinstance(value, float):
            assert math.isfinite(value), path
        if value is None and not path.startswith("diagnostics.metric_notes"):
            assert path in notes, path
    json.dumps(nested, allow_nan=False)
    json.dumps(metrics.to_flat_dict(), allow_nan=False)
