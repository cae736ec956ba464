"""Return statistics as small pure functions (SPEC §5), in the manner of empyrical.

Each function takes simple returns (decimal, e.g. 0.01 for +1 %) as a scalar sequence, a 1-D array
or a 2-D array and reduces along ``axis`` (default: the last). NaN entries are treated as missing
periods: they are skipped by moments and quantiles and leave the equity curve unchanged. A
statistic that is undefined for a series comes back as NaN from the array functions; the
published Sharpe-inference functions (PSR, DSR, expected maximum Sharpe, minimum track record)
return ``None`` instead when every input is a scalar.

Conventions shared with the panel engine in ``core.metrics``:

- standard deviations use ddof=1; "zero dispersion" means max − min == 0 (a constant series whose
  floating-point std is not exactly 0 is still constant);
- skewness and excess kurtosis are the bias-corrected sample estimators pandas uses
  (``Series.skew()``, ``Series.kurt()``); the Sharpe-inference formulas take the *non-excess*
  kurtosis, i.e. ``excess + 3``;
- quantiles are numpy's default ("linear", Hyndman & Fan type 7);
- drawdown, VaR and ES are positive loss fractions (empyrical and quantstats report them negative);
- an annual risk-free rate is de-annualised geometrically: (1 + rf)^(1/P) − 1.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
from scipy import special

EULER_MASCHERONI = float(np.euler_gamma)

# Weights of the complexity inputs in the strategy complexity score (SPEC §5).
COMPLEXITY_WEIGHTS: dict[str, float] = {
    "n_features": 0.2,
    "feature_dim": 0.2,
    "n_parameters": 0.2,
    "code_cc": 0.1,
    "nodes": 0.1,
}


# --------------------------------------------------------------------------------------------
# helpers


def _returns_array(returns: Any) -> np.ndarray:
    values = np.asarray(returns, dtype=np.float64)
    if values.ndim == 0:
        raise ValueError("returns must be a sequence or an array, not a scalar")
    return values


def _nan_count(x: np.ndarray, axis: int) -> np.ndarray:
    return np.sum(~np.isnan(x), axis=axis)


def _nan_mean(x: np.ndarray, axis: int) -> np.ndarray:
    n = _nan_count(x, axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nansum(x, axis=axis) / n


def _central_sums(
    x: np.ndarray, axis: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """n, and the sums of squared, cubed and fourth-power deviations from the mean (two-pass)."""
    n = _nan_count(x, axis)
    mean = np.expand_dims(_nan_mean(x, axis), axis)
    d = x - mean
    d2 = d * d
    return (
        n,
        np.nansum(d2, axis=axis),
        np.nansum(d2 * d, axis=axis),
        np.nansum(d2 * d2, axis=axis),
    )


def _value_range(x: np.ndarray, axis: int) -> np.ndarray:
    """max − min of the non-NaN values (NaN when there are none)."""
    if x.shape[axis] == 0:
        return np.full(np.delete(x.shape, axis if axis >= 0 else x.ndim + axis), np.nan)
    with np.errstate(invalid="ignore"):
        all_nan = np.all(np.isnan(x), axis=axis)
        safe = np.where(np.isnan(x), 0.0, x)
        hi = np.max(np.where(np.isnan(x), -np.inf, safe), axis=axis)
        lo = np.min(np.where(np.isnan(x), np.inf, safe), axis=axis)
        out = hi - lo
    return np.where(all_nan, np.nan, out)


def _finish(values: np.ndarray) -> Any:
    """0-d results as a Python float, otherwise the array."""
    values = np.asarray(values, dtype=np.float64)
    return float(values) if values.ndim == 0 else values


def de_annualise_rate(annual_rate: Any, periods_per_year: Any) -> Any:
    """Per-period rate equivalent to an annual rate, compounded: (1 + rf)^(1/P) − 1."""
    rate = np.asarray(annual_rate, dtype=np.float64)
    ppy = np.asarray(periods_per_year, dtype=np.float64)
    return _finish(np.power(1.0 + rate, 1.0 / ppy) - 1.0)


# --------------------------------------------------------------------------------------------
# return statistics


def sharpe_ratio_per_period(returns: Any, risk_free_per_period: Any = 0.0, axis: int = -1) -> Any:
    """Per-period Sharpe ratio mean(r − rf) / std(r, ddof=1).

    NaN when fewer than two periods or zero dispersion (max − min == 0).
    """
    x = _returns_array(returns)
    n, m2, _, _ = _central_sums(x, axis)
    mean = _nan_mean(x, axis)
    spread = _value_range(x, axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        std = np.sqrt(m2 / (n - 1))
        out = (mean - np.asarray(risk_free_per_period, dtype=np.float64)) / std
    return _finish(np.where((n >= 2) & (spread > 0), out, np.nan))


def sharpe_ratio(
    returns: Any, periods_per_year: Any = 252, risk_free_rate: Any = 0.0, axis: int = -1
) -> Any:
    """Annualised Sharpe ratio: mean(r − rf_p) / std(r, ddof=1) · √P.

    ``risk_free_rate`` is annual and de-annualised geometrically to rf_p. Same anchor as
    ``empyrical.sharpe_ratio`` and ``quantstats.stats.sharpe`` (rf = 0). NaN when undefined.
    """
    rf_p = de_annualise_rate(risk_free_rate, periods_per_year)
    per_period = sharpe_ratio_per_period(returns, rf_p, axis=axis)
    return _finish(np.asarray(per_period) * np.sqrt(np.asarray(periods_per_year, dtype=np.float64)))


def annual_volatility(returns: Any, periods_per_year: Any = 252, axis: int = -1) -> Any:
    """std(r, ddof=1) · √P; exactly 0.0 for a constant series, NaN below two periods."""
    x = _returns_array(returns)
    n, m2, _, _ = _central_sums(x, axis)
    spread = _value_range(x, axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        vol = np.sqrt(m2 / (n - 1)) * np.sqrt(np.asarray(periods_per_year, dtype=np.float64))
    vol = np.where(spread == 0, 0.0, vol)
    return _finish(np.where(n >= 2, vol, np.nan))


def downside_deviation(
    returns: Any, periods_per_year: Any = 252, required_return: Any = 0.0, axis: int = -1
) -> Any:
    """Annualised downside deviation √(mean(min(r − required, 0)²)) · √P (empyrical's)."""
    x = _returns_array(returns)
    excess = x - np.asarray(required_return, dtype=np.float64)
    below = np.where(np.isnan(excess), np.nan, np.minimum(excess, 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        dd = np.sqrt(_nan_mean(below * below, axis))
    return _finish(dd * np.sqrt(np.asarray(periods_per_year, dtype=np.float64)))


def sortino_ratio(
    returns: Any, periods_per_year: Any = 252, risk_free_rate: Any = 0.0, axis: int = -1
) -> Any:
    """mean(r − rf_p) · P / downside deviation vs rf_p (annualised), as empyrical computes it.

    NaN when no period falls below rf_p (zero downside deviation).
    """
    x = _returns_array(returns)
    rf_p = np.asarray(de_annualise_rate(risk_free_rate, periods_per_year), dtype=np.float64)
    ppy = np.asarray(periods_per_year, dtype=np.float64)
    mean_excess = _nan_mean(x, axis) - rf_p
    dd = np.asarray(downside_deviation(x, ppy, rf_p, axis=axis))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = mean_excess * ppy / dd
    return _finish(np.where(dd > 0, out, np.nan))


def _equity_and_peak(x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    growth = np.where(np.isnan(x), 1.0, 1.0 + x)
    equity = np.cumprod(growth, axis=axis)
    peak = np.maximum(np.maximum.accumulate(equity, axis=axis), 1.0)
    return equity, peak


def max_drawdown(returns: Any, axis: int = -1) -> Any:
    """max_t 1 − E_t / max(1, E_1..E_t), E_t = Π(1 + r): positive, on the equity curve from 1.

    A loss on the first period is a drawdown. NaN for an empty series.
    """
    x = _returns_array(returns)
    if x.shape[axis] == 0:
        return _finish(np.full(np.delete(x.shape, axis % x.ndim), np.nan))
    equity, peak = _equity_and_peak(x, axis)
    out = np.max(1.0 - equity / peak, axis=axis)
    return _finish(np.where(_nan_count(x, axis) > 0, out, np.nan))


def time_under_water_ratio(returns: Any, axis: int = -1) -> Any:
    """Share of (non-NaN) periods whose equity is below its running peak (peak ≥ 1)."""
    x = _returns_array(returns)
    equity, peak = _equity_and_peak(x, axis)
    under = (equity < peak) & ~np.isnan(x)
    n = _nan_count(x, axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _finish(np.where(n > 0, np.sum(under, axis=axis) / n, np.nan))


def max_time_under_water(returns: Any) -> int | None:
    """Longest run of consecutive periods with equity below its running peak, in periods.

    1-D only (the reference definition); NaN periods are skipped. None for an empty series.
    """
    x = _returns_array(returns)
    if x.ndim != 1:
        raise ValueError("max_time_under_water takes a 1-D series")
    x = x[~np.isnan(x)]
    if x.size == 0:
        return None
    equity, peak = _equity_and_peak(x, 0)
    position = np.arange(x.size)
    # index of the last period at or before t that is at its peak (−1 before the first)
    last_dry = np.maximum.accumulate(np.where(equity < peak, -1, position))
    return int((position - last_dry).max())


def gain_to_pain_ratio(returns: Any, axis: int = -1) -> Any:
    """Σr / |Σ min(r, 0)|; NaN when no period lost money."""
    x = _returns_array(returns)
    pain = -np.nansum(np.minimum(x, 0.0), axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.nansum(x, axis=axis) / pain
    return _finish(np.where(pain > 0, out, np.nan))


def skewness_from_moments(n: Any, m2: Any, m3: Any) -> Any:
    """Bias-corrected sample skewness G1 from n and the central sums Σd², Σd³ (pandas ``skew``).

    G1 = n·√(n−1)/(n−2) · Σd³ / (Σd²)^1.5; NaN for n < 3 or Σd² == 0.
    """
    n, m2, m3 = (np.asarray(v, dtype=np.float64) for v in (n, m2, m3))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = n * np.sqrt(n - 1.0) / (n - 2.0) * (m3 / m2**1.5)
    return _finish(np.where((n >= 3) & (m2 > 0), out, np.nan))


def excess_kurtosis_from_moments(n: Any, m2: Any, m4: Any) -> Any:
    """Bias-corrected sample excess kurtosis G2 from n, Σd², Σd⁴ (pandas ``kurt``).

    G2 = n(n+1)(n−1)Σd⁴ / ((n−2)(n−3)(Σd²)²) − 3(n−1)²/((n−2)(n−3)); NaN for n < 4 or Σd² == 0.
    """
    n, m2, m4 = (np.asarray(v, dtype=np.float64) for v in (n, m2, m4))
    with np.errstate(invalid="ignore", divide="ignore"):
        numerator = n * (n + 1.0) * (n - 1.0) * m4
        denominator = (n - 2.0) * (n - 3.0) * m2 * m2
        adjustment = 3.0 * (n - 1.0) ** 2 / ((n - 2.0) * (n - 3.0))
        out = numerator / denominator - adjustment
    return _finish(np.where((n >= 4) & (m2 > 0), out, np.nan))


def sample_skewness(returns: Any, axis: int = -1) -> Any:
    """Bias-corrected sample skewness (equals pandas ``Series.skew()``); NaN if n < 3 or constant."""
    x = _returns_array(returns)
    n, m2, m3, _ = _central_sums(x, axis)
    spread = _value_range(x, axis)
    return _finish(np.where(spread > 0, skewness_from_moments(n, m2, m3), np.nan))


def sample_excess_kurtosis(returns: Any, axis: int = -1) -> Any:
    """Bias-corrected excess kurtosis (pandas ``Series.kurt()``); NaN if n < 4 or constant.

    The non-excess kurtosis PSR/DSR take is this value + 3.
    """
    x = _returns_array(returns)
    n, m2, _, m4 = _central_sums(x, axis)
    spread = _value_range(x, axis)
    return _finish(np.where(spread > 0, excess_kurtosis_from_moments(n, m2, m4), np.nan))


def linear_quantile_index(n: Any, q: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Neighbouring order-statistic indices and weight of numpy's linear quantile of n values.

    Returns ``(lower, upper, gamma)`` such that the quantile is ``lerp(sorted[lower],
    sorted[upper], gamma)`` (see ``lerp``), reproducing ``numpy.quantile(..., method="linear")``
    bit for bit.
    """
    n = np.asarray(n, dtype=np.int64)
    virtual = (n - 1) * np.float64(q)
    lower = np.floor(virtual)
    gamma = virtual - lower
    lower = lower.astype(np.int64)
    upper = lower + 1
    at_top = virtual >= n - 1
    lower = np.where(at_top, n - 1, lower)
    upper = np.where(at_top, n - 1, upper)
    return lower, upper, gamma


def lerp(a: Any, b: Any, gamma: Any) -> np.ndarray:
    """numpy's quantile interpolation: a + (b−a)·γ, or b − (b−a)·(1−γ) when γ ≥ 0.5."""
    a, b, gamma = (np.asarray(v, dtype=np.float64) for v in (a, b, gamma))
    diff = b - a
    return np.where(gamma >= 0.5, b - diff * (1.0 - gamma), a + diff * gamma)


def historical_var(returns: Any, level: float = 0.01, axis: int = -1) -> Any:
    """Historical value at risk as a positive loss fraction: max(−q, 0), q the linear ``level``
    quantile of the returns. NaN when there are no returns."""
    x = _returns_array(returns)
    with np.errstate(invalid="ignore"):
        q = np.nanquantile(x, level, axis=axis) if x.shape[axis] else np.nan
    return _finish(np.maximum(-np.asarray(q), 0.0))


def historical_es(returns: Any, level: float = 0.01, axis: int = -1) -> Any:
    """Historical expected shortfall: max(−mean(r | r ≤ q), 0), q the linear ``level`` quantile."""
    x = _returns_array(returns)
    if x.shape[axis] == 0:
        return _finish(np.nan)
    with np.errstate(invalid="ignore"):
        q = np.expand_dims(np.nanquantile(x, level, axis=axis), axis)
        tail = np.where(x <= q, x, np.nan)
        mean_tail = _nan_mean(tail, axis)
    return _finish(np.maximum(-mean_tail, 0.0))


def regime_coverage(returns: Any, window: int = 20) -> dict[str, float] | None:
    """Share of full rolling windows in the low / mid / high volatility tercile (1-D reference).

    Rolling volatility is the ddof=1 standard deviation of each full trailing ``window``; the cut
    points are the linear 1/3 and 2/3 quantiles of those volatilities; a window is low when its
    volatility is ≤ the first cut, high when > the second, mid otherwise. Variances are compared
    as rint(1e9 · window variance / full-sample variance) so that windows equal in exact
    arithmetic tie. Because the cut points come from the run itself, the shares are close to 1/3 each unless
    volatility is flat (ties); a run with a single volatility level is all ``low_vol``. None when
    fewer than ``window + 2`` periods (three windows) or zero dispersion.
    """
    x = _returns_array(returns)
    x = x[~np.isnan(x)]
    n = x.size
    if n < window + 2 or float(x.max() - x.min()) == 0.0:
        return None
    centred = x - x.sum() / n
    sums = np.lib.stride_tricks.sliding_window_view(centred, window).sum(axis=1)
    squares = np.lib.stride_tricks.sliding_window_view(centred * centred, window).sum(axis=1)
    variances = (squares - sums * sums / window) / (window - 1)
    full_variance = float((centred * centred).sum() / (n - 1))
    keys = np.rint(variances * (1e9 / full_variance))
    low_cut, high_cut = np.quantile(keys, [1.0 / 3.0, 2.0 / 3.0])
    m = keys.size
    low = int(np.count_nonzero(keys <= low_cut))
    high = int(np.count_nonzero(keys > high_cut))
    return {"low_vol": low / m, "mid_vol": (m - low - high) / m, "high_vol": high / m}


# --------------------------------------------------------------------------------------------
# Sharpe-ratio inference (Bailey & López de Prado 2012, 2014). All Sharpe ratios per period.


def _broadcast_float(*values: Any) -> tuple[bool, list[np.ndarray]]:
    scalar = all(np.ndim(v) == 0 for v in values)
    arrays = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in values))
    return scalar, [np.array(a, dtype=np.float64) for a in arrays]


def _scalar_or_array(values: np.ndarray, scalar: bool) -> Any:
    if scalar:
        value = float(values)
        return value if math.isfinite(value) else None
    return values


def sharpe_ratio_std(sharpe: Any, n_obs: Any, skew: Any, kurtosis: Any) -> Any:
    """Standard error of the per-period Sharpe estimator under non-normal returns:

    σ_SR = √((1 − γ3·SR + (γ4 − 1)/4 · SR²) / (T − 1)), γ4 the non-excess kurtosis.
    None/NaN when T < 2 or the bracket is not positive.
    """
    scalar, (sr, n, g3, g4) = _broadcast_float(sharpe, n_obs, skew, kurtosis)
    bracket = 1.0 - g3 * sr + (g4 - 1.0) / 4.0 * sr * sr
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.sqrt(bracket / (n - 1.0))
    out = np.where((n >= 2) & (bracket > 0) & np.isfinite(out), out, np.nan)
    return _scalar_or_array(out, scalar)


def probabilistic_sharpe_ratio(
    sharpe: Any, n_obs: Any, skew: Any, kurtosis: Any, sharpe_benchmark: Any = 0.0
) -> Any:
    """PSR: probability that the true per-period Sharpe exceeds ``sharpe_benchmark``.

    PSR = Φ((SR − SR*)·√(T − 1) / √(1 − γ3·SR + (γ4 − 1)/4 · SR²)) (Bailey & López de Prado,
    "The Sharpe Ratio Efficient Frontier", 2012), with per-period SR, sample skewness γ3 and
    non-excess kurtosis γ4 over T = ``n_obs`` observations. Undefined (None for scalar inputs, NaN
    in arrays) when T < 4 or the bracket is not positive.
    """
    scalar, (sr, n, g3, g4, sr_star) = _broadcast_float(
        sharpe, n_obs, skew, kurtosis, sharpe_benchmark
    )
    bracket = 1.0 - g3 * sr + (g4 - 1.0) / 4.0 * sr * sr
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (sr - sr_star) * np.sqrt(n - 1.0) / np.sqrt(bracket)
        out = special.ndtr(z)
    out = np.where((n >= 4) & (bracket > 0) & np.isfinite(z), out, np.nan)
    return _scalar_or_array(out, scalar)


def expected_max_sharpe_ratio(n_trials: Any, trials_sharpe_variance: Any) -> Any:
    """SR₀, the expected maximum per-period Sharpe of N unskilled trials (the DSR threshold).

    SR₀ = √V · ((1 − γ)·Φ⁻¹(1 − 1/N) + γ·Φ⁻¹(1 − 1/(N·e))), γ the Euler–Mascheroni constant,
    V the variance of the trials' per-period Sharpe ratios; SR₀ = 0 for N = 1. ``n_trials``
    must be ≥ 1 and ``trials_sharpe_variance`` ≥ 0 (ValueError otherwise; NaN passes through).
    """
    scalar, (n, v) = _broadcast_float(n_trials, trials_sharpe_variance)
    if np.any(n < 1):
        raise ValueError("n_trials must be >= 1")
    if np.any(v < 0):
        raise ValueError("trials_sharpe_variance must be >= 0")
    with np.errstate(invalid="ignore", divide="ignore"):
        z1 = special.ndtri(1.0 - 1.0 / n)
        z2 = special.ndtri(1.0 - 1.0 / (n * math.e))
        out = np.sqrt(v) * ((1.0 - EULER_MASCHERONI) * z1 + EULER_MASCHERONI * z2)
    out = np.where(n == 1, np.where(np.isnan(v), np.nan, 0.0), out)
    return _scalar_or_array(out, scalar)


def deflated_sharpe_ratio(
    sharpe: Any,
    n_obs: Any,
    skew: Any,
    kurtosis: Any,
    n_trials: Any,
    trials_sharpe_variance: Any = None,
) -> Any:
    """DSR (Bailey & López de Prado, "The Deflated Sharpe Ratio", 2014): Φ((SR − SR₀)/σ_SR).

    SR per period over T = ``n_obs`` observations, γ3 sample skewness, γ4 non-excess kurtosis;
    σ_SR as in ``sharpe_ratio_std``; SR₀ = ``expected_max_sharpe_ratio(n_trials, V)`` with V the
    variance of the trials' per-period Sharpe ratios, or σ_SR² when ``trials_sharpe_variance`` is
    None. N = 1 gives SR₀ = 0, i.e. DSR = PSR(0). Undefined (None for scalars, NaN in arrays)
    when T < 4 or the bracket is not positive.

    The paper's example: N = 100, V = 0.5/250, T = 1250, γ3 = −3, γ4 = 10, SR = 2.5/√250 gives
    SR₀ ≈ 0.1132 and DSR ≈ 0.9004.
    """
    variance_given = trials_sharpe_variance is not None
    scalar, (sr, n, g3, g4, trials) = _broadcast_float(sharpe, n_obs, skew, kurtosis, n_trials)
    scalar = scalar and (not variance_given or np.ndim(trials_sharpe_variance) == 0)
    bracket = 1.0 - g3 * sr + (g4 - 1.0) / 4.0 * sr * sr
    ok = (n >= 4) & (bracket > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        sigma = np.sqrt(np.where(ok, bracket, np.nan) / (n - 1.0))
    variance = (
        np.asarray(trials_sharpe_variance, dtype=np.float64) if variance_given else sigma * sigma
    )
    threshold = np.asarray(expected_max_sharpe_ratio(trials, variance), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (sr - threshold) / sigma
        out = special.ndtr(z)
    out = np.where(ok & np.isfinite(z), out, np.nan)
    return _scalar_or_array(np.asarray(out, dtype=np.float64), scalar)


def min_track_record_length(
    sharpe: Any, skew: Any, kurtosis: Any, sharpe_benchmark: Any = 0.0, confidence: float = 0.95
) -> Any:
    """Minimum track record length, in periods, for PSR(SR*) to reach ``confidence``:

    MinTRL = 1 + (1 − γ3·SR + (γ4 − 1)/4 · SR²) · (Φ⁻¹(confidence) / (SR − SR*))²
    (Bailey & López de Prado 2012). Undefined (None/NaN) when SR ≤ SR* or the bracket is not
    positive.
    """
    scalar, (sr, g3, g4, sr_star) = _broadcast_float(sharpe, skew, kurtosis, sharpe_benchmark)
    bracket = 1.0 - g3 * sr + (g4 - 1.0) / 4.0 * sr * sr
    z = special.ndtri(confidence)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = 1.0 + bracket * (z / (sr - sr_star)) ** 2
    out = np.where((sr > sr_star) & (bracket > 0) & np.isfinite(out), out, np.nan)
    return _scalar_or_array(out, scalar)


def strategy_complexity(
    search_intensity: int, complexity: Mapping[str, Any] | None = None
) -> float:
    """1 + ln(1 + search_intensity) + Σ wᵢ·ln(1 + xᵢ) over the known complexity inputs.

    Weights: 0.2 for ``n_features``, ``feature_dim``, ``n_parameters``; 0.1 for ``code_cc``,
    ``nodes`` (other keys are ignored, missing or None inputs count as absent). Inputs must be
    non-negative numbers.
    """
    score = 1.0 + math.log1p(float(search_intensity))
    for key, weight in COMPLEXITY_WEIGHTS.items():
        value = (complexity or {}).get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"complexity.{key} must be a number, got {value!r}")
        if not math.isfinite(float(value)) or float(value) < 0:
            raise ValueError(f"complexity.{key} must be a finite number >= 0, got {value!r}")
        score += weight * math.log1p(float(value))
    return score
