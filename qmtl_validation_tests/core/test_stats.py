"""The statistics functions of core.stats against hand-computed values and published examples."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from qmtl_validation.core import stats

# r = [1 %, −2 %, 3 %]: mean 2/300, deviations 1/300, −8/300, 7/300, Σd² = 114/90000
THREE = [0.01, -0.02, 0.03]
THREE_MEAN = 0.02 / 3
THREE_STD = math.sqrt((114 / 90000) / 2)


def test_per_period_sharpe_is_mean_over_sample_std():
    assert stats.sharpe_ratio_per_period(THREE) == pytest.approx(THREE_MEAN / THREE_STD, rel=1e-12)


def test_annualised_sharpe_scales_by_root_periods_and_subtracts_geometric_risk_free():
    rf_p = 1.05 ** (1 / 12) - 1
    expected = (THREE_MEAN - rf_p) / THREE_STD * math.sqrt(12)
    assert stats.sharpe_ratio(THREE, periods_per_year=12, risk_free_rate=0.05) == pytest.approx(
        expected, rel=1e-12
    )
    assert stats.de_annualise_rate(0.05, 12) == pytest.approx(rf_p, rel=1e-15)


def test_sharpe_is_nan_for_a_constant_series_whose_float_std_is_not_zero():
    constant = [0.1, 0.1, 0.1]
    assert np.std(constant, ddof=1) != 0.0  # the reason zero dispersion is tested on the range
    assert math.isnan(stats.sharpe_ratio(constant))
    assert stats.annual_volatility(constant) == 0.0


def test_sharpe_along_an_axis_skips_leading_nan_padding():
    panel = np.array([[np.nan, 0.01, -0.02, 0.03], [0.01, -0.02, 0.03, 0.0]])
    result = stats.sharpe_ratio_per_period(panel, axis=1)
    assert result[0] == pytest.approx(stats.sharpe_ratio_per_period(THREE), rel=1e-12)
    assert result[1] == pytest.approx(
        stats.sharpe_ratio_per_period([0.01, -0.02, 0.03, 0.0]), rel=1e-12
    )


def test_sortino_uses_downside_deviation_over_all_periods():
    # downside: only −2 % → √(0.0004/3); annualised with P = 4
    expected = THREE_MEAN / math.sqrt(0.0004 / 3) * math.sqrt(4)
    assert stats.sortino_ratio(THREE, periods_per_year=4) == pytest.approx(expected, rel=1e-12)
    assert math.isnan(stats.sortino_ratio([0.01, 0.02]))


def test_max_drawdown_is_measured_from_the_starting_equity_of_one():
    # E = 0.9, 0.945: the first-day loss is a 10 % drawdown
    assert stats.max_drawdown([-0.1, 0.05]) == pytest.approx(0.1, rel=1e-12)
    # E = 1.1, 0.88, 0.924: worst 1 − 0.88/1.1 = 20 %
    assert stats.max_drawdown([0.1, -0.2, 0.05]) == pytest.approx(0.2, rel=1e-12)
    assert stats.max_drawdown([0.01, 0.02]) == 0.0


def test_time_under_water_counts_periods_below_the_running_peak():
    returns = [0.1, -0.2, 0.05, 0.3, -0.01]  # E 1.1, .88, .924, 1.2012, 1.189188
    assert stats.time_under_water_ratio(returns) == pytest.approx(3 / 5)
    assert stats.max_time_under_water(returns) == 2
    assert stats.max_time_under_water([-0.1, 0.05]) == 2  # under water from the first day


def test_gain_to_pain_is_total_over_absolute_losses_and_nan_without_losses():
    assert stats.gain_to_pain_ratio([0.1, -0.2, 0.05]) == pytest.approx(-0.05 / 0.2, rel=1e-12)
    assert math.isnan(stats.gain_to_pain_ratio([0.01, 0.0, 0.02]))


def test_skewness_and_excess_kurtosis_equal_pandas():
    sample = [0.01, -0.02, 0.03, 0.005, -0.04, 0.02, 0.0]
    assert stats.sample_skewness(sample) == pytest.approx(pd.Series(sample).skew(), rel=1e-12)
    assert stats.sample_excess_kurtosis(sample) == pytest.approx(
        pd.Series(sample).kurt(), rel=1e-12
    )


def test_skewness_needs_three_and_kurtosis_four_observations():
    assert math.isnan(stats.sample_skewness([0.01, 0.02]))
    assert not math.isnan(stats.sample_skewness(THREE))
    assert math.isnan(stats.sample_excess_kurtosis(THREE))


def test_historical_var_and_es_are_positive_losses_at_the_linear_quantile():
    returns = [-0.05, -0.03, -0.01, 0.0, 0.02]
    # 25 % quantile: virtual index 1.0 → −3 %; tail = {−5 %, −3 %}
    assert stats.historical_var(returns, level=0.25) == pytest.approx(0.03, rel=1e-12)
    assert stats.historical_es(returns, level=0.25) == pytest.approx(0.04, rel=1e-12)
    # 10 % quantile: virtual 0.4 → −5 % + 0.4·2 % = −4.2 %; tail = {−5 %}
    assert stats.historical_var(returns, level=0.10) == pytest.approx(0.042, rel=1e-12)
    assert stats.historical_es(returns, level=0.10) == pytest.approx(0.05, rel=1e-12)
    assert (
        stats.historical_var([0.01, 0.02, 0.03], level=0.01) == 0.0
    )  # no loss: zero, not negative


def test_linear_quantile_index_and_lerp_reproduce_numpy_quantile():
    rng = np.random.default_rng(3)
    for n in (1, 2, 3, 7, 100, 2519):
        values = np.sort(rng.normal(size=n))
        for level in (0.01, 1 / 3, 0.5, 2 / 3, 0.95):
            lower, upper, gamma = stats.linear_quantile_index(n, level)
            got = stats.lerp(values[lower], values[upper], gamma)
            assert got == np.quantile(values, level)


def test_regime_coverage_splits_full_windows_into_volatility_terciles():
    rng = np.random.default_rng(5)
    shares = stats.regime_coverage(rng.normal(0, 0.01, 300))
    assert shares is not None
    m = 300 - 19
    assert shares["low_vol"] == pytest.approx((math.floor((m - 1) / 3) + 1) / m)
    assert sum(shares.values()) == pytest.approx(1.0)


def test_regime_coverage_of_a_single_volatility_level_is_all_low():
    pattern = np.array([0.01, -0.01, 0.02, -0.02, 0.0] * 4)  # every 20-window holds the same values
    shares = stats.regime_coverage(np.tile(pattern, 10))
    assert shares == {"low_vol": 1.0, "mid_vol": 0.0, "high_vol": 0.0}
    assert stats.regime_coverage(np.zeros(21) + 0.01) is None  # too short and constant


# --- Sharpe inference ------------------------------------------------------------------------

PAPER_SR = 2.5 / math.sqrt(250)  # the DSR paper's example, per period


def test_expected_max_sharpe_matches_the_deflated_sharpe_paper_example():
    threshold = stats.expected_max_sharpe_ratio(100, 0.5 / 250)
    assert threshold == pytest.approx(0.1132, abs=5e-5)


def test_deflated_sharpe_matches_the_paper_example():
    dsr = stats.deflated_sharpe_ratio(PAPER_SR, 1250, -3.0, 10.0, 100, 0.5 / 250)
    assert dsr == pytest.approx(0.9004, abs=5e-5)


def test_deflated_sharpe_formula_term_by_term():
    sigma = math.sqrt((1 + 3.0 * PAPER_SR + (10.0 - 1) / 4 * PAPER_SR**2) / 1249)
    threshold = math.sqrt(0.5 / 250) * (
        (1 - 0.5772156649015329) * norm.ppf(1 - 1 / 100)
        + 0.5772156649015329 * norm.ppf(1 - 1 / (100 * math.e))
    )
    expected = norm.cdf((PAPER_SR - threshold) / sigma)
    assert stats.sharpe_ratio_std(PAPER_SR, 1250, -3.0, 10.0) == pytest.approx(sigma, rel=1e-12)
    got = stats.deflated_sharpe_ratio(PAPER_SR, 1250, -3.0, 10.0, 100, 0.5 / 250)
    assert got == pytest.approx(expected, rel=1e-12)


def test_deflated_sharpe_with_one_trial_is_psr_against_zero():
    one = stats.deflated_sharpe_ratio(PAPER_SR, 1250, -3.0, 10.0, 1)
    assert stats.expected_max_sharpe_ratio(1, 0.3) == 0.0
    assert one == pytest.approx(
        stats.probabilistic_sharpe_ratio(PAPER_SR, 1250, -3.0, 10.0), rel=1e-15
    )


def test_deflated_sharpe_without_trial_variance_uses_the_estimator_variance():
    sigma = stats.sharpe_ratio_std(PAPER_SR, 1250, -3.0, 10.0)
    assert stats.deflated_sharpe_ratio(PAPER_SR, 1250, -3.0, 10.0, 100) == pytest.approx(
        stats.deflated_sharpe_ratio(PAPER_SR, 1250, -3.0, 10.0, 100, sigma**2), rel=1e-15
    )


def test_probabilistic_sharpe_on_the_2012_paper_inputs():
    # Bailey & López de Prado (2012): 24 monthly returns, mean 3.6 %, std 7.9 %, skew −2.448,
    # kurtosis 10.164. Non-normality lowers the confidence the Sharpe ratio is above zero.
    sr = 0.036 / 0.079
    bracket = 1 + 2.448 * sr + (10.164 - 1) / 4 * sr**2
    expected = norm.cdf(sr * math.sqrt(23) / math.sqrt(bracket))
    psr = stats.probabilistic_sharpe_ratio(sr, 24, -2.448, 10.164)
    assert psr == pytest.approx(expected, rel=1e-12)
    assert psr == pytest.approx(0.9127, abs=5e-5)
    assert stats.probabilistic_sharpe_ratio(sr, 24, 0.0, 3.0) == pytest.approx(0.9812, abs=5e-5)


def test_probabilistic_sharpe_against_a_benchmark_sharpe():
    sr, star = 0.2, 0.05
    bracket = 1 - 0.5 * sr + (4.0 - 1) / 4 * sr**2
    expected = norm.cdf((sr - star) * math.sqrt(99) / math.sqrt(bracket))
    assert stats.probabilistic_sharpe_ratio(
        sr, 100, 0.5, 4.0, sharpe_benchmark=star
    ) == pytest.approx(expected, rel=1e-12)


def test_min_track_record_length_formula():
    sr = 0.036 / 0.079
    bracket = 1 + 2.448 * sr + (10.164 - 1) / 4 * sr**2
    expected = 1 + bracket * (norm.ppf(0.95) / sr) ** 2
    assert stats.min_track_record_length(sr, -2.448, 10.164) == pytest.approx(expected, rel=1e-12)
    assert stats.min_track_record_length(-0.1, 0.0, 3.0) is None


def test_inference_functions_return_none_for_undefined_scalars_and_nan_in_arrays():
    assert stats.probabilistic_sharpe_ratio(0.1, 3, 0.0, 3.0) is None  # n < 4
    assert stats.deflated_sharpe_ratio(0.1, 3, 0.0, 3.0, 5) is None
    assert stats.probabilistic_sharpe_ratio(2.0, 100, 5.0, 1.0) is None  # bracket 1 − 10 + 0 < 0
    arrays = stats.deflated_sharpe_ratio(
        [PAPER_SR, PAPER_SR], [1250, 3], -3.0, 10.0, 100, 0.5 / 250
    )
    assert isinstance(arrays, np.ndarray)
    assert arrays[0] == pytest.approx(0.9004, abs=5e-5) and math.isnan(arrays[1])


def test_inference_functions_reject_impossible_trial_counts():
    with pytest.raises(ValueError, match="n_trials"):
        stats.expected_max_sharpe_ratio(0, 0.1)
    with pytest.raises(ValueError, match="variance"):
        stats.expected_max_sharpe_ratio(10, -0.1)


def test_strategy_complexity_weights_the_complexity_inputs():
    score = stats.strategy_complexity(
        9, {"n_features": 4, "n_parameters": 0, "code_cc": 9, "other": 100}
    )
    expected = 1 + math.log(10) + 0.2 * math.log(5) + 0.2 * math.log(1) + 0.1 * math.log(10)
    assert score == pytest.approx(expected, rel=1e-15)
    assert stats.strategy_complexity(1) == pytest.approx(1 + math.log(2))
    with pytest.raises(ValueError, match="n_features"):
        stats.strategy_complexity(1, {"n_features": -1})
