"""The optimised panel engine against a straightforward definition of every metric, to 1e-12.

``compute_panel_arrays`` reads each run once in chunks, combines moments from segments with the
shift formula, sorts only the lower tail for VaR/ES and partitions integer keys for the regime
terciles. The reference below does none of that: one column at a time, each metric written as
SPEC §5 states it with plain numpy / pandas / scipy calls (``np.quantile``, ``Series.skew``,
``np.array_split``, ``norm.cdf``...). Panels are random and ragged (runs starting late, runs of
0 to 23 periods, a constant run, a run that never loses), with per-run periods per year,
risk-free rates, search intensities, trial Sharpe ratios, trades logs, capital and benchmarks.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from qmtl_validation.core.health import CORE_METRIC_PATHS
from qmtl_validation.core.metrics import METRIC_KINDS, METRIC_PATHS, compute_panel_arrays

TOLERANCE = 1e-12
EULER_GAMMA = 0.5772156649015329
WINDOW = 20


# ---------------------------------------------------------------------------------------------
# the straightforward definitions, one run at a time


def sharpe_of(excess: np.ndarray, raw: np.ndarray, periods: float) -> float:
    if raw.size < 2 or raw.max() - raw.min() == 0:
        return math.nan
    return excess.mean() / raw.std(ddof=1) * math.sqrt(periods)


def drawdown_path(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    equity = np.cumprod(1.0 + r)
    peak = np.maximum.accumulate(np.maximum(equity, 1.0))
    return equity, peak


def longest_true_run(flags: np.ndarray) -> int:
    best = current = 0
    for flag in flags:
        current = current + 1 if flag else 0
        best = max(best, current)
    return best


def regime_shares(r: np.ndarray) -> tuple[float, float, float]:
    n = r.size
    if n < WINDOW + 2 or r.max() - r.min() == 0:
        return (math.nan,) * 3
    full_variance = np.var(r, ddof=1)
    keys = np.array([np.var(r[i : i + WINDOW], ddof=1) for i in range(n - WINDOW + 1)])
    keys = np.rint(keys * 1e9 / full_variance)
    low_cut, high_cut = np.quantile(keys, [1 / 3, 2 / 3])
    low = np.count_nonzero(keys <= low_cut)
    high = np.count_nonzero(keys > high_cut)
    return low / keys.size, (keys.size - low - high) / keys.size, high / keys.size


def expected_max_sharpe(n_trials: float, variance: float) -> float:
    if n_trials == 1:
        return 0.0
    return math.sqrt(variance) * (
        (1 - EULER_GAMMA) * norm.ppf(1 - 1 / n_trials)
        + EULER_GAMMA * norm.ppf(1 - 1 / (n_trials * math.e))
    )


def reference_metrics(
    r: np.ndarray,
    *,
    periods: float,
    risk_free: float,
    search_intensity: int,
    trials: list[float] | None,
    trades: pd.DataFrame | None,
    capital: float | None,
    benchmark: np.ndarray | None,
) -> dict[str, float]:
    n = r.size
    rf = (1 + risk_free) ** (1 / periods) - 1
    e = r - rf
    flat = n > 0 and r.max() - r.min() == 0
    out: dict[str, float] = {path: math.nan for path in METRIC_PATHS if METRIC_KINDS[path] in ("float", "int")}
    out["sample.n_periods"] = n
    out["diagnostics.search_intensity"] = search_intensity
    out["diagnostics.strategy_complexity"] = 1 + math.log(1 + search_intensity)  # no inputs given
    out["diagnostics.periods_per_year"] = periods
    out["diagnostics.risk_free_rate"] = risk_free
    n_trials = max(search_intensity, len(trials or ()))
    out["robustness.dsr_n_trials"] = n_trials
    out["robustness.cv_folds"] = 5 if n >= 10 else math.nan
    if trades is not None:
        out["sample.n_trades_total"] = len(trades)
        notional, adv = trades["notional"].to_numpy(), trades["adv_notional"].to_numpy()
        usable = np.isfinite(adv) & (adv > 0)
        if usable.any():
            out["risk.adv_utilization_p95"] = float(np.percentile(np.abs(notional[usable]) / adv[usable], 95))
            if capital is not None and out["risk.adv_utilization_p95"] > 0:
                out["risk.capacity_estimate_base"] = capital * 0.1 / out["risk.adv_utilization_p95"]
        qty, volume = trades["qty"].to_numpy(), trades["bar_volume"].to_numpy()
        usable = np.isfinite(volume) & (volume > 0)
        if usable.any():
            out["risk.participation_rate_p95"] = float(np.percentile(np.abs(qty[usable]) / volume[usable], 95))
    variance_given = trials is not None and len(trials) >= 2
    trials_variance = float(np.var(trials, ddof=1)) if variance_given else math.nan
    if variance_given:  # SR0 needs only N and V: defined whatever the run's own history
        out["robustness.dsr_expected_max_sharpe"] = expected_max_sharpe(n_trials, trials_variance)
    if n == 0:
        return with_coverage(out)
    years = n / periods
    out["sample.effective_history_years"] = years
    if trades is not None:
        out["sample.n_trades_per_year"] = len(trades) / years
    if n >= 2:
        out["returns.volatility"] = 0.0 if flat else r.std(ddof=1) * math.sqrt(periods)
        out["returns.sharpe"] = sharpe_of(e, r, periods)
        out["returns.sharpe_per_period"] = sharpe_of(e, r, 1.0)
        q = np.quantile(r, 0.01)
        out["returns.var_p01"] = max(-q, 0.0)
        out["returns.es_p01"] = max(-r[r <= q].mean(), 0.0)
    downside = math.sqrt(np.mean(np.minimum(e, 0.0) ** 2))
    if downside > 0:
        out["returns.sortino_ratio"] = e.mean() / downside * math.sqrt(periods)
    equity, peak = drawdown_path(r)
    out["returns.max_drawdown"] = float(np.max(1 - equity / peak))
    losses = r[r < 0]
    if losses.size:
        out["returns.gain_to_pain_ratio"] = r.sum() / abs(losses.sum())
    out["returns.time_under_water_ratio"] = np.count_nonzero(equity < peak) / n
    out["returns.max_time_under_water_days"] = longest_true_run(equity < peak)
    series = pd.Series(r)
    if n >= 3 and not flat:
        out["returns.skew"] = series.skew()
    if n >= 4 and not flat:
        out["returns.excess_kurtosis"] = series.kurt()
    low, mid, high = regime_shares(r)
    out["sample.regime_coverage.low_vol"] = low
    out["sample.regime_coverage.mid_vol"] = mid
    out["sample.regime_coverage.high_vol"] = high
    half = n // 2
    out["robustness.sharpe_first_half"] = sharpe_of(e[:half], r[:half], periods)
    out["robustness.sharpe_second_half"] = sharpe_of(e[half:], r[half:], periods)
    if n >= 10:
        folds = [sharpe_of(fe, fr, periods) for fe, fr in zip(np.array_split(e, 5), np.array_split(r, 5))]
        if not any(math.isnan(f) for f in folds):
            out["robustness.cv_sharpe_mean"] = float(np.mean(folds))
            out["robustness.cv_sharpe_std"] = float(np.std(folds, ddof=1))
    if n >= 4 and not flat:
        sr = out["returns.sharpe_per_period"]
        g3, g4 = out["returns.skew"], out["returns.excess_kurtosis"] + 3
        bracket = 1 - g3 * sr + (g4 - 1) / 4 * sr**2
        if bracket > 0:
            sigma = math.sqrt(bracket / (n - 1))
            out["robustness.probabilistic_sharpe_ratio"] = norm.cdf(sr / sigma)
            threshold = expected_max_sharpe(n_trials, trials_variance if variance_given else sigma**2)
            out["robustness.dsr_expected_max_sharpe"] = threshold
            out["robustness.deflated_sharpe_ratio"] = norm.cdf((sr - threshold) / sigma)
            if sr > 0:
                out["robustness.min_track_record_years"] = (1 + bracket * (norm.ppf(0.95) / sr) ** 2) / periods
    if benchmark is not None:
        b = benchmark
        if np.all(np.isfinite(b)) and np.all(b > -1):
            be = b - rf
            b_flat = b.max() - b.min() == 0
            if n >= 2:
                out["benchmark.sharpe"] = sharpe_of(be, b, periods)
                out["benchmark.volatility"] = 0.0 if b_flat else b.std(ddof=1) * math.sqrt(periods)
            b_equity, b_peak = drawdown_path(b)
            out["benchmark.max_drawdown"] = float(np.max(1 - b_equity / b_peak))
            out["benchmark.vs_benchmark_sharpe"] = out["returns.sharpe"] - out["benchmark.sharpe"]
    return with_coverage(out)


def with_coverage(out: dict[str, float]) -> dict[str, float]:
    present = sum(not math.isnan(out[path]) for path in CORE_METRIC_PATHS)
    out["diagnostics.validation_health.metric_coverage_ratio"] = present / len(CORE_METRIC_PATHS)
    return out


# ---------------------------------------------------------------------------------------------
# random ragged panels


def random_case(seed: int, runs: int, periods: int):
    rng = np.random.default_rng(seed)
    values = np.clip(rng.standard_t(4, size=(periods, runs)) * 0.01 + 0.0004, -0.6, 0.6)
    lengths = rng.integers(0, periods + 1, size=runs)
    lengths[: min(runs, 12)] = [0, 1, 2, 3, 4, 9, 10, 21, 22, 23, periods, periods][: min(runs, 12)]
    for column, length in enumerate(lengths):
        values[: periods - length, column] = np.nan
    values[-30:, runs - 1] = 0.002  # a constant run of 30 periods
    values[: periods - 30, runs - 1] = np.nan
    values[-60:, runs - 2] = np.abs(values[-60:, runs - 2])  # a run that never loses
    values[: periods - 60, runs - 2] = np.nan
    columns = [f"run{i:03d}" for i in range(runs)]
    frame = pd.DataFrame(values, columns=columns)
    options = {
        "periods_per_year": {c: float(rng.choice([252, 52, 365])) for c in columns},
        "risk_free_rate": {c: float(rng.choice([0.0, 0.0, 0.03])) for c in columns},
        "search_intensity": {c: int(rng.choice([1, 1, 5, 40])) for c in columns},
        "trial_sharpes": {c: list(rng.normal(0.02, 0.03, size=int(rng.integers(1, 6)))) for c in columns[::3]},
        "capital": {c: 5e6 for c in columns[::2]},
    }
    trades, benchmarks = {}, {}
    for column in columns[1::2]:
        size = int(rng.integers(1, 40))
        adv = rng.uniform(1e5, 1e7, size)
        adv[rng.random(size) < 0.2] = np.nan
        trades[column] = pd.DataFrame({
            "ts": pd.date_range("2024-01-01", periods=size, freq="h", tz="UTC"),
            "symbol": "AAA", "side": "buy",
            "qty": rng.uniform(-500, 500, size),
            "price": rng.uniform(10, 100, size),
            "notional": rng.uniform(-1e5, 1e5, size),
            "adv_notional": adv,
            "bar_volume": rng.uniform(1e3, 1e5, size),
        })
    for column in columns[::4]:
        benchmarks[column] = np.clip(rng.normal(0.0003, 0.008, periods), -0.5, 0.5)
    return frame, options, trades, benchmarks


def own_periods(frame: pd.DataFrame, column: str) -> np.ndarray:
    values = frame[column].to_numpy()
    return values[~np.isnan(values)]


@pytest.mark.parametrize("seed,runs,periods", [(1, 40, 300), (2, 17, 23), (3, 64, 1100)])
def test_every_metric_of_the_engine_equals_its_straightforward_definition(seed, runs, periods):
    frame, options, trades, benchmarks = random_case(seed, runs, periods)
    arrays = compute_panel_arrays(frame, trades, benchmark_returns=benchmarks, **options, n_threads=3)
    compared = 0
    for i, column in enumerate(frame.columns):
        r = own_periods(frame, column)
        bench = benchmarks.get(column)
        expected = reference_metrics(
            r,
            periods=options["periods_per_year"][column],
            risk_free=options["risk_free_rate"][column],
            search_intensity=options["search_intensity"][column],
            trials=options["trial_sharpes"].get(column),
            trades=trades.get(column),
            capital=options["capital"].get(column),
            benchmark=bench[len(bench) - r.size:] if bench is not None else None,
        )
        for path, want in expected.items():
            got = float(arrays[path][i])
            if math.isnan(want) or math.isnan(got):
                assert math.isnan(want) and math.isnan(got), f"{column} {path}: {got} vs {want}"
                continue
            assert abs(got - want) <= TOLERANCE * max(1.0, abs(want)), f"{column} {path}: {got} vs {want}"
            compared += 1
    assert compared > runs * 20


def test_the_core_metric_set_equals_the_full_set_on_the_paths_it_computes():
    frame, options, trades, benchmarks = random_case(4, 30, 400)
    full = compute_panel_arrays(frame, trades, benchmark_returns=benchmarks, **options)
    core = compute_panel_arrays(frame, trades, benchmark_returns=benchmarks, metric_set="core", **options)
    for path in CORE_METRIC_PATHS + ("returns.sharpe_per_period", "returns.skew", "robustness.probabilistic_sharpe_ratio"):
        np.testing.assert_array_equal(core[path], full[path], err_msg=path)


def test_threads_and_chunking_do_not_change_any_value():
    frame, options, trades, benchmarks = random_case(5, 300, 260)
    one = compute_panel_arrays(frame, trades, benchmark_returns=benchmarks, **options, n_threads=1)
    four = compute_panel_arrays(frame, trades, benchmark_returns=benchmarks, **options, n_threads=4)
    for path in METRIC_PATHS:
        if METRIC_KINDS[path] in ("float", "int"):
            np.testing.assert_array_equal(one[path], four[path], err_msg=path)
