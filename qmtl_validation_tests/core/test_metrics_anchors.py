"""The engine against empyrical and quantstats, the libraries quant teams already trust, to 1e-9.

Sign conventions differ: they report drawdown, VaR and ES as negative returns; this project
reports them as positive loss fractions. empyrical's ``risk_free`` is per period; ours is an annual
rate de-annualised geometrically, so the anchors pass the per-period equivalent.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from qmtl_validation.core import compute_metrics_panel
from qmtl_validation.core.metrics import compute_metrics

empyrical = pytest.importorskip("empyrical")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    qs = pytest.importorskip("quantstats")

TOLERANCE = 1e-9


def anchored(ours: float | None, theirs: float) -> bool:
    return ours is not None and abs(ours - theirs) <= TOLERANCE * max(1.0, abs(theirs))


@pytest.fixture(scope="module")
def daily() -> pd.Series:
    """1,001 fat-tailed daily returns on a calendar-day index ((n − 1)·1 % is a whole index)."""
    rng = np.random.default_rng(2024)
    values = np.clip(rng.standard_t(4, 1001) * 0.01 + 0.0005, -0.3, 0.3)
    return pd.Series(
        values, index=pd.date_range("2021-01-01", periods=1001, freq="D"), name="strategy"
    )


@pytest.fixture(scope="module")
def metrics(daily: pd.Series):
    return compute_metrics(daily)


def test_sharpe_matches_empyrical_and_quantstats(daily, metrics):
    assert anchored(metrics.get("returns.sharpe"), empyrical.sharpe_ratio(daily.to_numpy()))
    assert anchored(metrics.get("returns.sharpe"), qs.stats.sharpe(daily))
    assert anchored(
        metrics.get("returns.sharpe_per_period"), qs.stats.sharpe(daily, annualize=False)
    )


def test_sharpe_with_risk_free_matches_empyrical_per_period_rate(daily):
    rf_p = 1.03 ** (1 / 252) - 1
    ours = compute_metrics(daily, risk_free_rate=0.03)
    assert anchored(
        ours.get("returns.sharpe"), empyrical.sharpe_ratio(daily.to_numpy(), risk_free=rf_p)
    )
    assert anchored(
        ours.get("returns.sortino_ratio"),
        empyrical.sortino_ratio(daily.to_numpy(), required_return=rf_p),
    )


def test_sharpe_annualisation_follows_periods_per_year(daily):
    weekly = compute_metrics(daily, periods_per_year=52)
    assert anchored(
        weekly.get("returns.sharpe"), empyrical.sharpe_ratio(daily.to_numpy(), annualization=52)
    )
    assert anchored(weekly.get("returns.sharpe"), qs.stats.sharpe(daily, periods=52))


def test_volatility_matches(daily, metrics):
    assert anchored(
        metrics.get("returns.volatility"), empyrical.annual_volatility(daily.to_numpy())
    )
    assert anchored(metrics.get("returns.volatility"), qs.stats.volatility(daily))


def test_sortino_matches(daily, metrics):
    assert anchored(metrics.get("returns.sortino_ratio"), empyrical.sortino_ratio(daily.to_numpy()))
    assert anchored(metrics.get("returns.sortino_ratio"), qs.stats.sortino(daily))


def test_max_drawdown_matches_with_opposite_sign(daily, metrics):
    assert anchored(metrics.get("returns.max_drawdown"), -empyrical.max_drawdown(daily.to_numpy()))
    assert anchored(metrics.get("returns.max_drawdown"), -qs.stats.max_drawdown(daily))


def test_max_drawdown_counts_a_first_day_loss_like_the_anchors():
    series = pd.Series(
        [-0.05, 0.01, 0.02, -0.01], index=pd.date_range("2022-01-03", periods=4, freq="D")
    )
    ours = compute_metrics(series).get("returns.max_drawdown")
    assert anchored(ours, -empyrical.max_drawdown(series.to_numpy()))
    assert anchored(ours, -qs.stats.max_drawdown(series))
    assert anchored(ours, 0.05)


def test_value_at_risk_matches_empyrical_historical_var(daily, metrics):
    assert anchored(
        metrics.get("returns.var_p01"), -empyrical.value_at_risk(daily.to_numpy(), cutoff=0.01)
    )


def test_expected_shortfall_matches_historical_cvar(daily, metrics):
    # quantstats' historical CVaR is the mean of returns at or below the linear 1 % quantile
    assert anchored(
        metrics.get("returns.es_p01"), -qs.stats.cvar(daily, confidence=0.99, method="historical")
    )
    # empyrical averages the lowest ⌊(n−1)·1 %⌋ + 1 values: the same set when (n−1)·1 % is whole
    assert anchored(
        metrics.get("returns.es_p01"),
        -empyrical.conditional_value_at_risk(daily.to_numpy(), cutoff=0.01),
    )


def test_skew_and_kurtosis_match_quantstats(daily, metrics):
    assert anchored(metrics.get("returns.skew"), qs.stats.skew(daily))
    assert anchored(metrics.get("returns.excess_kurtosis"), qs.stats.kurtosis(daily))


def test_probabilistic_sharpe_matches_quantstats(daily, metrics):
    assert anchored(
        metrics.get("robustness.probabilistic_sharpe_ratio"),
        qs.stats.probabilistic_sharpe_ratio(daily),
    )


def test_gain_to_pain_matches_quantstats(daily, metrics):
    assert anchored(metrics.get("returns.gain_to_pain_ratio"), qs.stats.gain_to_pain_ratio(daily))


def test_panel_columns_match_the_anchors_column_by_column():
    rng = np.random.default_rng(7)
    frame = pd.DataFrame(
        np.clip(rng.standard_t(5, size=(400, 6)) * 0.012 + 0.0003, -0.3, 0.3),
        index=pd.date_range("2020-01-01", periods=400, freq="D"),
        columns=[f"s{i}" for i in range(6)],
    )
    frame.iloc[:150, 2] = np.nan  # a run that started later
    panel = compute_metrics_panel(frame)
    for column in frame.columns:
        series = frame[column].dropna()
        got = panel[column]
        assert anchored(got.get("returns.sharpe"), empyrical.sharpe_ratio(series.to_numpy()))
        assert anchored(got.get("returns.max_drawdown"), -empyrical.max_drawdown(series.to_numpy()))
        assert anchored(
            got.get("returns.sortino_ratio"), empyrical.sortino_ratio(series.to_numpy())
        )
        assert anchored(
            got.get("returns.volatility"), empyrical.annual_volatility(series.to_numpy())
        )
        assert anchored(
            got.get("returns.var_p01"), -empyrical.value_at_risk(series.to_numpy(), cutoff=0.01)
        )
        assert anchored(
            got.get("returns.es_p01"), -qs.stats.cvar(series, confidence=0.99, method="historical")
        )
        assert anchored(got.get("returns.skew"), qs.stats.skew(series))
        assert anchored(got.get("returns.excess_kurtosis"), qs.stats.kurtosis(series))
        assert anchored(
            got.get("robustness.probabilistic_sharpe_ratio"),
            qs.stats.probabilistic_sharpe_ratio(series),
        )
        assert not math.isnan(got.get("returns.sharpe"))
