"""The metrics engine (SPEC §5): many runs' returns in, one ``EvaluationMetrics`` per run out.

The engine works on a *panel*: a matrix of simple returns with one column per run and one row per
period. Runs may have different lengths; a shorter run is padded with NaN at the start (leading
NaN = "not started yet"). Every metric is computed for all runs at once with numpy:

- the panel is processed as a runs × periods C-contiguous matrix, in chunks of runs sorted by start
  so that padding is trimmed and temporaries stay small (peak memory is a few chunks, not copies of
  the panel);
- sums and central moments come from one segmented two-pass (``np.add.reduceat``) over each run cut
  at its half and fold boundaries, and the whole-run, half and fold statistics are combined from
  those segments exactly (the shift formula for central sums), so the run is read once;
- the equity curve is one ``cumprod`` and one running maximum; the 1 % quantile sorts only the
  values below mean − 2·std (``np.partition`` when too few), the volatility terciles use
  ``np.partition``; chunks run on worker threads (numpy releases the GIL in its loops).

``compute_panel_arrays`` is that columnar core (a dict of arrays, one entry per metric path, for
wide tables of thousands of runs); ``compute_metrics_panel`` wraps it into ``EvaluationMetrics``
objects and ``compute_metrics`` is the panel with one column.

Definitions (per run, r_1..r_n the non-NaN returns, P periods per year, rf_p the per-period
risk-free rate (1 + rf)^(1/P) − 1, e = r − rf_p; std uses ddof=1). Every Sharpe-type ratio — halves,
folds, PSR/DSR and the benchmark's included — is on excess returns e; drawdowns, VaR/ES and
gain-to-pain use the raw returns r.

returns
    sharpe              mean(e)/std(r)·√P. Null for n < 2 or zero dispersion (max − min == 0).
    sharpe_per_period   mean(e)/std(r) (what PSR/DSR use).
    volatility          std(r)·√P; exactly 0 for a constant series.
    sortino_ratio       mean(e)/√(mean(min(e, 0)²))·√P (downside deviation vs rf_p over all n
                        periods, as empyrical). Null when no period is below rf_p.
    max_drawdown        max_t 1 − E_t/max(1, E_1..E_t), E_t = Π(1 + r): positive, anchored at 1, so a
                        first-period loss is a drawdown.
    gain_to_pain_ratio  Σr / |Σ min(r, 0)|; null when no period lost money.
    time_under_water_ratio      share of periods with E_t below its running peak (peak ≥ 1).
    max_time_under_water_days   longest run of consecutive such periods, counted in periods.
    var_p01, es_p01     q = linear 1 % quantile of r; VaR = max(−q, 0); ES = max(−mean(r ≤ q), 0).
    skew, excess_kurtosis       bias-corrected sample estimators (pandas ``skew()``, ``kurt()``).
sample
    n_periods, effective_history_years = n/P, n_trades_total = rows of the trades log (null without
    one), n_trades_per_year = n_trades_total / effective_history_years,
    regime_coverage.{low_vol, mid_vol, high_vol}: rolling std (ddof=1) over every full trailing
    window of 20 periods; cut points are the linear 1/3 and 2/3 quantiles of those volatilities;
    shares of windows ≤ the first cut (low), > the second (high), in between (mid). Variances are
    compared as rint(1e9 · window variance / run variance), a grid fine enough to separate real
    differences and coarse enough that windows equal in exact arithmetic tie. The cut points come
    from the run itself, so shares are ≈ 1/3 each unless volatility is flat; a single-volatility
    run is all low_vol. Needs ≥ 22 periods (three windows).
risk
    adv_utilization_p95 = linear 95th percentile of |notional|/adv_notional over trades with a
    positive adv_notional; participation_rate_p95 = same of |qty|/bar_volume;
    capacity_estimate_base = capital · adv_limit / adv_utilization_p95.
robustness
    probabilistic_sharpe_ratio  PSR vs 0 on per-period Sharpe, skew, non-excess kurtosis (n ≥ 4).
    deflated_sharpe_ratio       DSR with N = max(search_intensity, len(trial_sharpes)) and
                                V = var(trial_sharpes, ddof=1) when ≥ 2 are given, else σ_SR² (noted).
    dsr_n_trials, dsr_expected_max_sharpe   N and the threshold SR₀ (per period) the DSR used.
    min_track_record_years      MinTRL at 95 % vs 0, in years (null unless Sharpe > 0).
    sharpe_first_half / sharpe_second_half  annualised Sharpe of r[:n//2] and r[n//2:].
    cv_folds, cv_sharpe_mean, cv_sharpe_std five contiguous folds as ``numpy.array_split`` cuts
                                them (the first n mod 5 folds one period longer); mean and std
                                (ddof=1) of the five annualised fold Sharpe ratios; needs n ≥ 10.
benchmark (only for runs given benchmark returns, evaluated over the run's own periods)
    sharpe, max_drawdown, volatility as above; vs_benchmark_sharpe = returns.sharpe − benchmark.sharpe.
diagnostics
    search_intensity, returns_source, extra_metrics (passed through, non-finite floats → null),
    strategy_complexity, periods_per_year, risk_free_rate, validation_health, metric_notes.

Every null metric has a reason in ``diagnostics.metric_notes`` (dotted path → text); stored values
are never NaN or ±inf (an overflowing value becomes null with a note).
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping, Sequence

import numpy as np
import pandas as pd

from qmtl_validation.core import health, stats

MetricSet = Literal["full", "core"]

_FLOAT, _INT, _STR, _MAP = "float", "int", "str", "map"

# Every leaf of the nested metrics, in output order, with its kind. ``benchmark.*`` appears in
# ``to_dict()`` only for runs given a benchmark; ``to_flat_dict()`` always has every path.
METRIC_SCHEMA: tuple[tuple[str, str], ...] = (
    ("returns.sharpe", _FLOAT),
    ("returns.sharpe_per_period", _FLOAT),
    ("returns.volatility", _FLOAT),
    ("returns.sortino_ratio", _FLOAT),
    ("returns.max_drawdown", _FLOAT),
    ("returns.gain_to_pain_ratio", _FLOAT),
    ("returns.time_under_water_ratio", _FLOAT),
    ("returns.max_time_under_water_days", _INT),
    ("returns.var_p01", _FLOAT),
    ("returns.es_p01", _FLOAT),
    ("returns.skew", _FLOAT),
    ("returns.excess_kurtosis", _FLOAT),
    ("sample.n_periods", _INT),
    ("sample.effective_history_years", _FLOAT),
    ("sample.n_trades_total", _INT),
    ("sample.n_trades_per_year", _FLOAT),
    ("sample.regime_coverage.low_vol", _FLOAT),
    ("sample.regime_coverage.mid_vol", _FLOAT),
    ("sample.regime_coverage.high_vol", _FLOAT),
    ("risk.adv_utilization_p95", _FLOAT),
    ("risk.participation_rate_p95", _FLOAT),
    ("risk.capacity_estimate_base", _FLOAT),
    ("robustness.deflated_sharpe_ratio", _FLOAT),
    ("robustness.dsr_n_trials", _INT),
    ("robustness.dsr_expected_max_sharpe", _FLOAT),
    ("robustness.probabilistic_sharpe_ratio", _FLOAT),
    ("robustness.min_track_record_years", _FLOAT),
    ("robustness.sharpe_first_half", _FLOAT),
    ("robustness.sharpe_second_half", _FLOAT),
    ("robustness.cv_folds", _INT),
    ("robustness.cv_sharpe_mean", _FLOAT),
    ("robustness.cv_sharpe_std", _FLOAT),
    ("diagnostics.search_intensity", _INT),
    ("diagnostics.returns_source", _STR),
    ("diagnostics.extra_metrics", _MAP),
    ("diagnostics.strategy_complexity", _FLOAT),
    ("diagnostics.periods_per_year", _FLOAT),
    ("diagnostics.risk_free_rate", _FLOAT),
    ("diagnostics.validation_health.metric_coverage_ratio", _FLOAT),
    ("diagnostics.validation_health.rules_executed_ratio", _FLOAT),
    ("diagnostics.validation_health.validation_error_count", _INT),
    ("benchmark.sharpe", _FLOAT),
    ("benchmark.max_drawdown", _FLOAT),
    ("benchmark.volatility", _FLOAT),
    ("benchmark.vs_benchmark_sharpe", _FLOAT),
)
METRIC_KINDS: dict[str, str] = dict(METRIC_SCHEMA)
METRIC_PATHS: tuple[str, ...] = tuple(path for path, _ in METRIC_SCHEMA)
NOTES_PATH = "diagnostics.metric_notes"
# The columns of ``to_flat_dict()`` (and of a wide warehouse table), in order.
FLAT_COLUMNS: tuple[str, ...] = METRIC_PATHS + (NOTES_PATH,)
BLOCKS: tuple[str, ...] = ("returns", "sample", "risk", "robustness", "diagnostics")

# Reasons a metric is null (or, for the DSR, how it was computed). Code 0 = no note.
NOTE_REASONS: tuple[str, ...] = (
    "",
    "no return periods",
    "fewer than 2 periods",
    "fewer than 3 periods",
    "fewer than 4 periods",
    "zero dispersion (all returns equal)",
    "no losing period",
    "no period below the risk-free rate",
    "Sharpe ratio is not positive",
    "Sharpe-estimator variance bracket is not positive",
    "this half has fewer than 2 periods",
    "this half has zero dispersion",
    "fewer than 10 periods (5 folds of at least 2)",
    "a fold has zero dispersion",
    "fewer than 22 periods (3 full 20-period windows)",
    "no trades log",
    "trades log has no adv_notional column",
    "no trade with a positive adv_notional",
    "trades log has no bar_volume column",
    "no trade with a positive bar_volume",
    "no capital given",
    "adv_utilization_p95 is null",
    "adv_utilization_p95 is zero",
    "not given",
    "set after rule evaluation",
    "not computed (metric_set='core')",
    "benchmark returns missing, non-finite or <= -1 within the run's history",
    "strategy or benchmark Sharpe is null",
    "numeric overflow (non-finite result)",
    "V = sigma_SR^2: no trial Sharpe ratios given (SPEC §5)",
    "V = sigma_SR^2: fewer than 2 trial Sharpe ratios given (SPEC §5)",
)
_CODE = {text: code for code, text in enumerate(NOTE_REASONS)}
_NO_PERIODS = _CODE["no return periods"]
_LT2 = _CODE["fewer than 2 periods"]
_LT3 = _CODE["fewer than 3 periods"]
_LT4 = _CODE["fewer than 4 periods"]
_FLAT = _CODE["zero dispersion (all returns equal)"]
_NO_LOSS = _CODE["no losing period"]
_NO_BELOW_RF = _CODE["no period below the risk-free rate"]
_SR_NOT_POSITIVE = _CODE["Sharpe ratio is not positive"]
_BRACKET = _CODE["Sharpe-estimator variance bracket is not positive"]
_HALF_SHORT = _CODE["this half has fewer than 2 periods"]
_HALF_FLAT = _CODE["this half has zero dispersion"]
_CV_SHORT = _CODE["fewer than 10 periods (5 folds of at least 2)"]
_CV_FLAT = _CODE["a fold has zero dispersion"]
_REGIME_SHORT = _CODE["fewer than 22 periods (3 full 20-period windows)"]
_NO_TRADES = _CODE["no trades log"]
_NO_ADV_COLUMN = _CODE["trades log has no adv_notional column"]
_NO_ADV_ROWS = _CODE["no trade with a positive adv_notional"]
_NO_VOLUME_COLUMN = _CODE["trades log has no bar_volume column"]
_NO_VOLUME_ROWS = _CODE["no trade with a positive bar_volume"]
_NO_CAPITAL = _CODE["no capital given"]
_ADV_NULL = _CODE["adv_utilization_p95 is null"]
_ADV_ZERO = _CODE["adv_utilization_p95 is zero"]
_NOT_GIVEN = _CODE["not given"]
_AFTER_RULES = _CODE["set after rule evaluation"]
_NOT_COMPUTED = _CODE["not computed (metric_set='core')"]
_BENCHMARK_INVALID = _CODE[
    "benchmark returns missing, non-finite or <= -1 within the run's history"
]
_SHARPE_NULL = _CODE["strategy or benchmark Sharpe is null"]
_OVERFLOW = _CODE["numeric overflow (non-finite result)"]
_V_NO_TRIALS = _CODE["V = sigma_SR^2: no trial Sharpe ratios given (SPEC §5)"]
_V_FEW_TRIALS = _CODE["V = sigma_SR^2: fewer than 2 trial Sharpe ratios given (SPEC §5)"]

REGIME_WINDOW = 20
_PADDING_KEY = np.iinfo(np.int64).max
_REGIME_GRID = 1e9  # rolling variances are compared in units of 1e-9 of the run variance
_CV_FOLDS = 5
_VAR_LEVEL = 0.01
_LIQUIDITY_QUANTILE = 0.95
_MIN_TRL_CONFIDENCE = 0.95
_CHUNK_ELEMENTS = 1 << 18  # 2 MB of float64 per chunk buffer: a chunk's working set stays in cache


# =============================================================================================
# EvaluationMetrics


def _plain(value: Any) -> Any:
    """A JSON-friendly copy: numpy scalars → Python, tuples → lists, non-finite floats → None."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray, pd.Series)):
        return [_plain(v) for v in list(value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, (_dt.datetime, _dt.date, pd.Timestamp)):
        return value.isoformat()
    return str(value)


def _json_text(value: Any) -> str:
    """Canonical JSON text of a map (sorted keys, no spaces), as the flat row stores it."""
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"), allow_nan=False)


def _non_finite_paths(value: Any, prefix: str) -> list[str]:
    """Dotted paths of non-finite floats inside a nested extra_metrics map."""
    found: list[str] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            found.extend(_non_finite_paths(item, f"{prefix}.{key}"))
    elif isinstance(value, (float, np.floating)) and not math.isfinite(float(value)):
        found.append(prefix)
    return found


@dataclass(frozen=True)
class EvaluationMetrics:
    """The metrics of one run (SPEC §5), as nested blocks of plain values.

    Values are Python ``float``/``int``/``str``/``None`` (and a free map under
    ``diagnostics.extra_metrics``); never NaN or ±inf. ``diagnostics.metric_notes`` maps the dotted
    path of every null metric to the reason. ``benchmark`` is None for a run without a benchmark.
    Blocks other than the six known ones (e.g. a ``stress`` block added later) are kept in
    ``other_blocks`` so a stored record round-trips.
    """

    returns: Mapping[str, Any]
    sample: Mapping[str, Any]
    risk: Mapping[str, Any]
    robustness: Mapping[str, Any]
    diagnostics: Mapping[str, Any]
    benchmark: Mapping[str, Any] | None = None
    other_blocks: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """``{"returns": {...}, "sample": {...}, "risk": {...}, "robustness": {...},
        "diagnostics": {...}}`` plus ``"benchmark"`` when the run had one (deep copies)."""
        out: dict[str, Any] = {name: copy.deepcopy(dict(getattr(self, name))) for name in BLOCKS}
        if self.benchmark is not None:
            out["benchmark"] = copy.deepcopy(dict(self.benchmark))
        for name, block in self.other_blocks.items():
            out[name] = copy.deepcopy(block)
        return out

    def get(self, path: str, default: Any = None) -> Any:
        """Value at a dotted path (``"returns.sharpe"``), or ``default`` when absent or null."""
        head, _, rest = path.partition(".")
        if head in BLOCKS or head == "benchmark":
            block = getattr(self, head)
        else:
            block = self.other_blocks.get(head)
        if block is None:
            return default
        value = health.get_path(block, rest) if rest else block
        return default if value is None else value

    @property
    def metric_notes(self) -> dict[str, str]:
        return dict(self.diagnostics.get("metric_notes") or {})

    def to_flat_dict(self) -> dict[str, Any]:
        """Dotted path → value for every column of ``FLAT_COLUMNS`` (a stable, wide row).

        ``benchmark.*`` are None for a run without a benchmark; the two maps
        (``diagnostics.extra_metrics``, ``diagnostics.metric_notes``) are canonical JSON text (sorted
        keys, no spaces).
        """
        nested = self.to_dict()
        flat: dict[str, Any] = {}
        for path in METRIC_PATHS:
            value = health.get_path(nested, path)
            if METRIC_KINDS[path] == _MAP:
                value = _json_text(value if value is not None else {})
            flat[path] = value
        flat[NOTES_PATH] = _json_text(self.metric_notes)
        return flat

    @classmethod
    def from_dict(cls, nested: Mapping[str, Any]) -> EvaluationMetrics:
        """Inverse of ``to_dict``; missing blocks become empty, unknown blocks are kept."""
        if not isinstance(nested, Mapping):
            raise TypeError(f"metrics must be a mapping of blocks, got {type(nested).__name__}")
        blocks: dict[str, Any] = {}
        for name in BLOCKS:
            block = nested.get(name) or {}
            if not isinstance(block, Mapping):
                raise ValueError(
                    f"metrics block {name!r} must be a mapping, got {type(block).__name__}"
                )
            blocks[name] = copy.deepcopy(dict(block))
        benchmark = nested.get("benchmark")
        if benchmark is not None and not isinstance(benchmark, Mapping):
            raise ValueError("metrics block 'benchmark' must be a mapping")
        others = {
            str(k): copy.deepcopy(v)
            for k, v in nested.items()
            if k not in BLOCKS and k != "benchmark"
        }
        return cls(
            **blocks,
            benchmark=copy.deepcopy(dict(benchmark)) if benchmark is not None else None,
            other_blocks=others,
        )


# =============================================================================================
# public entry points


def compute_metrics(
    returns: Any,
    trades: pd.DataFrame | None = None,
    *,
    periods_per_year: float = 252,
    search_intensity: int = 1,
    trial_sharpes: Sequence[float] | None = None,
    complexity: Mapping[str, Any] | None = None,
    extra_metrics: Mapping[str, Any] | None = None,
    capital: float | None = None,
    adv_limit: float = 0.1,
    benchmark_returns: Any = None,
    returns_source: str | None = None,
    risk_free_rate: float = 0.0,
) -> EvaluationMetrics:
    """Metrics of one run: ``compute_metrics_panel`` on a one-column panel.

    ``returns``: simple returns as a list, 1-D numpy array or pandas Series (date index); leading
    NaN are ignored, any other NaN/inf or a return ≤ −1 is a ValueError. ``trades``: the run's
    trades log (SPEC §3 columns) or None. ``benchmark_returns``: same layout as ``returns``
    (aligned on the index when both are Series, else by position). See the module docstring for
    the definitions and ``compute_metrics_panel`` for the options.
    """
    label = "returns"
    if isinstance(returns, pd.Series):
        label = returns.name if returns.name is not None else label
        frame: Any = returns.to_frame(name=label)
    else:
        values = np.asarray(returns, dtype=np.float64)
        if values.ndim != 1:
            raise ValueError(f"returns must be one-dimensional, got shape {values.shape}")
        frame = values.reshape(-1, 1)
        label = 0  # the column label a 2-D array gets
    result = compute_metrics_panel(
        frame,
        {label: trades} if trades is not None else None,
        periods_per_year=periods_per_year,
        search_intensity=search_intensity,
        trial_sharpes={label: trial_sharpes} if trial_sharpes is not None else None,
        complexity={label: complexity} if complexity is not None else None,
        extra_metrics={label: extra_metrics} if extra_metrics is not None else None,
        capital=capital,
        adv_limit=adv_limit,
        benchmark_returns={label: benchmark_returns} if benchmark_returns is not None else None,
        returns_source={label: returns_source} if returns_source is not None else None,
        risk_free_rate=risk_free_rate,
    )
    return result[label]


def compute_metrics_panel(
    returns_frame: Any,
    trades: Mapping[Any, pd.DataFrame | None] | pd.DataFrame | None = None,
    *,
    periods_per_year: Any = 252,
    search_intensity: Any = 1,
    trial_sharpes: Any = None,
    complexity: Any = None,
    extra_metrics: Any = None,
    capital: Any = None,
    adv_limit: Any = 0.1,
    benchmark_returns: Any = None,
    returns_source: Any = None,
    risk_free_rate: Any = 0.0,
    metric_set: MetricSet = "full",
    n_threads: int | None = None,
) -> dict[Any, EvaluationMetrics]:
    """One ``EvaluationMetrics`` per column of ``returns_frame``, in column order.

    ``returns_frame``: a DataFrame (columns = runs, rows = periods) or a 2-D array of the same
    orientation. Shorter runs are padded with NaN at the start; NaN/inf after a run's first value
    or a return ≤ −1 raises ValueError naming the column.

    ``trades``: mapping column → trades DataFrame (a run absent or None has no trades log: its
    trade metrics are null with the note "no trades log"); a bare DataFrame is accepted for a
    one-column panel. Per-run options accept a scalar (every run), a mapping keyed by column
    (missing columns take the default) or a sequence with one value per column:
    ``periods_per_year``, ``search_intensity``, ``capital``, ``adv_limit``, ``risk_free_rate``
    (annual), ``returns_source``. ``trial_sharpes`` is one list of per-period Sharpe ratios for
    every run, or a mapping column → list (or a list of lists). ``complexity`` and
    ``extra_metrics`` are one mapping for every run, or a mapping column → mapping (or a list of
    mappings). ``benchmark_returns``: one 1-D series for every run, a DataFrame / 2-D array with
    the runs' columns, or a mapping column → series; evaluated over each run's own periods.
    ``metric_set="core"`` computes only what the v1 core needs (skipping VaR/ES, Sortino, the
    longest time under water and regime coverage, noted "not computed").
    """
    arrays = compute_panel_arrays(
        returns_frame,
        trades,
        periods_per_year=periods_per_year,
        search_intensity=search_intensity,
        trial_sharpes=trial_sharpes,
        complexity=complexity,
        extra_metrics=extra_metrics,
        capital=capital,
        adv_limit=adv_limit,
        benchmark_returns=benchmark_returns,
        returns_source=returns_source,
        risk_free_rate=risk_free_rate,
        metric_set=metric_set,
        n_threads=n_threads,
    )
    return metrics_from_arrays(arrays)


def compute_panel_arrays(
    returns_frame: Any,
    trades: Mapping[Any, pd.DataFrame | None] | pd.DataFrame | None = None,
    *,
    periods_per_year: Any = 252,
    search_intensity: Any = 1,
    trial_sharpes: Any = None,
    complexity: Any = None,
    extra_metrics: Any = None,
    capital: Any = None,
    adv_limit: Any = 0.1,
    benchmark_returns: Any = None,
    returns_source: Any = None,
    risk_free_rate: Any = 0.0,
    metric_set: MetricSet = "full",
    n_threads: int | None = None,
) -> dict[str, np.ndarray]:
    """The columnar core of ``compute_metrics_panel``: one array per metric, one entry per run.

    Same arguments as ``compute_metrics_panel`` (``n_threads``: worker threads for the chunk
    kernels, default up to 4 on large panels). Returns a dict with:

    - ``"run"``: the column labels (object array);
    - every path of ``METRIC_PATHS``: float64 arrays with NaN for null (integer metrics too),
      object arrays for ``diagnostics.returns_source`` and ``diagnostics.extra_metrics``;
    - ``"note:<path>"``: uint8 codes into ``NOTE_REASONS`` (0 = no note) for every path that can
      carry a note;
    - ``"has_benchmark"``: bool, whether the run was given benchmark returns;
    - ``"extra_notes"``: object array of {path: reason} for non-finite extra_metrics values.

    ``flat_columns(arrays)`` turns it into the ``to_flat_dict`` columns of a wide table and
    ``metrics_from_arrays(arrays)`` into ``EvaluationMetrics``.
    """
    if metric_set not in ("full", "core"):
        raise ValueError(f"metric_set must be 'full' or 'core', got {metric_set!r}")
    labels, matrix, index = _panel_matrix(returns_frame)
    k, t = matrix.shape
    options = _resolve_options(
        labels,
        periods_per_year=periods_per_year,
        search_intensity=search_intensity,
        trial_sharpes=trial_sharpes,
        complexity=complexity,
        extra_metrics=extra_metrics,
        capital=capital,
        adv_limit=adv_limit,
        returns_source=returns_source,
        risk_free_rate=risk_free_rate,
    )
    starts = _validate_panel(matrix, labels)
    bench_matrix, has_benchmark = _benchmark_matrix(benchmark_returns, labels, index, t, starts)
    raw = _run_series_kernels(
        matrix, bench_matrix, has_benchmark, starts, options, metric_set == "full", n_threads
    )
    _check_total_losses(matrix, labels, raw.values["low"])
    trade_raw = _trade_statistics(trades, labels)
    out = _assemble(labels, raw, trade_raw, options, has_benchmark, metric_set == "full")
    return out


# =============================================================================================
# input normalisation


def _panel_matrix(returns_frame: Any) -> tuple[list[Any], np.ndarray, Any]:
    """(labels, runs × periods float64 view, row index or None)."""
    if isinstance(returns_frame, pd.Series):
        returns_frame = returns_frame.to_frame(
            name=returns_frame.name if returns_frame.name is not None else "returns"
        )
    if isinstance(returns_frame, pd.DataFrame):
        labels = list(returns_frame.columns)
        if len(set(map(_hashable, labels))) != len(labels):
            raise ValueError("returns_frame has duplicate column labels")
        try:
            values = returns_frame.to_numpy(dtype=np.float64, copy=False, na_value=np.nan)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"returns_frame must hold numeric returns: {exc}") from exc
        return labels, values.T, returns_frame.index
    values = np.asarray(returns_frame)
    if values.ndim != 2:
        raise ValueError(
            f"returns_frame must be a DataFrame or a 2-D array (periods × runs), got {values.ndim}-D"
        )
    if not np.issubdtype(values.dtype, np.number):
        raise ValueError("returns_frame must hold numeric returns")
    values = values.astype(np.float64, copy=False)
    return list(range(values.shape[1])), values.T, None


def _hashable(label: Any) -> Any:
    try:
        hash(label)
    except TypeError:
        return repr(label)
    return label


def _validate_panel(matrix: np.ndarray, labels: list[Any]) -> np.ndarray:
    """Start index (first non-NaN period) of every run; ValueError on anything but leading NaN.

    A run whose every value is NaN starts at the end (no periods). Returns ≤ −1 are caught later,
    from the per-run minimum the kernels compute anyway (``_check_total_losses``).
    """
    k, t = matrix.shape
    starts = np.empty(k, dtype=np.int64)
    if t == 0:
        return np.zeros(k, dtype=np.int64)
    step = max(1, _CHUNK_ELEMENTS // t)
    for c0 in range(0, k, step):
        block = matrix[c0 : c0 + step]
        finite = np.isfinite(block)
        count = np.count_nonzero(finite, axis=1)
        first = np.where(count == 0, t, np.argmax(finite, axis=1))
        bad = count != t - first  # a non-finite value after the first finite one
        if np.isinf(block).any():
            bad |= np.isinf(block).any(axis=1)  # padding must be NaN, not ±inf
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            series = block[row]
            after_start = np.arange(t) >= first[row]
            period = int(np.flatnonzero(np.isinf(series) | (np.isnan(series) & after_start))[0])
            raise ValueError(
                f"returns column {labels[c0 + row]!r}: {series[period]!r} at period {period} "
                "(only leading NaN padding is allowed; returns must be finite)"
            )
        starts[c0 : c0 + step] = first
    return starts


def _check_total_losses(matrix: np.ndarray, labels: list[Any], lowest: np.ndarray) -> None:
    """ValueError naming the first column with a return ≤ −1 (equity at or below zero)."""
    bad = np.flatnonzero(lowest <= -1.0)
    if bad.size:
        row = int(bad[0])
        series = matrix[row]
        period = int(np.argmax(series <= -1.0))
        raise ValueError(
            f"returns column {labels[row]!r}: return {float(series[period])!r} at period {period} "
            "is <= -1 (simple returns must be > -1)"
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _per_run(name: str, value: Any, labels: list[Any], default: Any) -> tuple[list[Any], bool]:
    """(value per run, whether one value is shared by every run).

    ``value`` is a scalar for every run, a mapping keyed by column (missing columns take the
    default) or a sequence with one value per column.
    """
    k = len(labels)
    if value is None:
        return [default] * k, True
    if isinstance(value, pd.Series):
        value = value.to_dict()
    if isinstance(value, Mapping):
        positions = _positions(labels)
        out = [default] * k
        for key, item in value.items():
            position = positions.get(_hashable(key))
            if position is None:
                raise ValueError(f"{name}: {key!r} is not a column of the panel")
            out[position] = default if item is None else item
        return out, False
    if isinstance(value, (list, tuple, np.ndarray)):
        if len(value) != k:
            raise ValueError(f"{name}: expected one value per column ({k}), got {len(value)}")
        return [default if item is None else item for item in value], False
    return [value] * k, True


def _positions(labels: list[Any]) -> dict[Any, int]:
    return {_hashable(label): i for i, label in enumerate(labels)}


def _numbers(name: str, option: tuple[list[Any], bool], *, allow_none: bool = False) -> np.ndarray:
    """Validated float64 array of a per-run numeric option (None → NaN when allowed)."""
    values, shared = option
    for item in values[:1] if shared else values:
        if item is None and allow_none:
            continue
        if not _is_number(item) or not math.isfinite(float(item)):
            raise ValueError(f"{name} must be a finite number, got {item!r}")
    if shared:
        return np.full(len(values), np.nan if not values or values[0] is None else float(values[0]))
    return np.array([np.nan if item is None else float(item) for item in values], dtype=np.float64)


def _keyed_by_columns(value: Mapping[Any, Any], labels: list[Any]) -> bool:
    """Whether every key of a mapping option is a column label."""
    if not value:
        return False
    positions = _positions(labels)
    return all(_hashable(key) in positions for key in value)


@dataclass
class _Options:
    periods_per_year: np.ndarray
    risk_free_rate: np.ndarray
    rf_per_period: np.ndarray
    search_intensity: np.ndarray
    n_trials: np.ndarray
    trials_variance: np.ndarray  # NaN = use sigma_SR^2
    trials_note: np.ndarray  # annotation code when V falls back to sigma_SR^2
    capital: np.ndarray
    adv_limit: np.ndarray
    complexity_score: np.ndarray
    returns_source: list[Any]
    extra_metrics: list[dict[str, Any]]
    extra_notes: list[dict[str, str] | None]


def _trial_statistics(trials: Any, label: Any) -> tuple[int, float]:
    """(number of trials, ddof=1 variance of their Sharpe ratios or NaN below two)."""
    values = np.asarray(trials, dtype=np.float64).ravel()
    if not np.all(np.isfinite(values)):
        raise ValueError(f"trial_sharpes for column {label!r} must be finite numbers")
    return values.size, float(np.var(values, ddof=1)) if values.size >= 2 else math.nan


def _resolve_options(
    labels: list[Any],
    *,
    periods_per_year: Any,
    search_intensity: Any,
    trial_sharpes: Any,
    complexity: Any,
    extra_metrics: Any,
    capital: Any,
    adv_limit: Any,
    returns_source: Any,
    risk_free_rate: Any,
) -> _Options:
    k = len(labels)
    ppy = _numbers("periods_per_year", _per_run("periods_per_year", periods_per_year, labels, 252))
    if np.any(ppy <= 0):
        raise ValueError("periods_per_year must be > 0")
    rf = _numbers("risk_free_rate", _per_run("risk_free_rate", risk_free_rate, labels, 0.0))
    if np.any(rf <= -1):
        raise ValueError("risk_free_rate must be > -1 (an annual rate, decimal)")
    intensity_option = _per_run("search_intensity", search_intensity, labels, 1)
    intensity = _numbers("search_intensity", intensity_option)
    if np.any(intensity < 1) or np.any(intensity != np.floor(intensity)):
        raise ValueError("search_intensity must be an integer >= 1")
    cap = _numbers("capital", _per_run("capital", capital, labels, None), allow_none=True)
    if np.any(cap <= 0):
        raise ValueError("capital must be > 0")
    limit = _numbers("adv_limit", _per_run("adv_limit", adv_limit, labels, 0.1))
    if np.any(limit <= 0):
        raise ValueError("adv_limit must be > 0")

    # trial_sharpes: one list for every run, or one per run.
    per_run_trials = isinstance(trial_sharpes, Mapping) or (
        isinstance(trial_sharpes, (list, tuple))
        and len(trial_sharpes) > 0
        and all(
            item is None or isinstance(item, (list, tuple, np.ndarray, pd.Series))
            for item in trial_sharpes
        )
    )
    n_trials = intensity.copy()
    trials_variance = np.full(k, np.nan)
    trials_note = np.full(k, _V_NO_TRIALS, dtype=np.uint8)
    if trial_sharpes is not None and not per_run_trials:
        size, variance = _trial_statistics(trial_sharpes, "(all)")
        np.maximum(n_trials, size, out=n_trials)
        trials_variance[:] = variance
        trials_note[:] = 0 if size >= 2 else _V_FEW_TRIALS
    elif trial_sharpes is not None:
        trials_per_run, _ = _per_run(
            "trial_sharpes",
            dict(trial_sharpes) if isinstance(trial_sharpes, Mapping) else list(trial_sharpes),
            labels,
            None,
        )
        for i, trials in enumerate(trials_per_run):
            if trials is None:
                continue
            size, variance = _trial_statistics(trials, labels[i])
            n_trials[i] = max(n_trials[i], size)
            trials_variance[i] = variance
            trials_note[i] = 0 if size >= 2 else _V_FEW_TRIALS

    complexity_per_run, complexity_shared = _mapping_option("complexity", complexity, labels)
    extra_per_run, extra_shared = _mapping_option("extra_metrics", extra_metrics, labels)
    # QMTL reads the complexity inputs from extra_metrics; an explicit complexity map wins.
    inputs = [c if c is not None else e for c, e in zip(complexity_per_run, extra_per_run)]
    if complexity_shared and extra_shared and intensity_option[1]:
        score = np.full(k, stats.strategy_complexity(int(intensity[0]), inputs[0]) if k else 1.0)
    else:
        score = np.array(
            [stats.strategy_complexity(int(si), inp) for si, inp in zip(intensity, inputs)],
            dtype=np.float64,
        )

    def sanitise(extra: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, str] | None]:
        if extra is None:
            return {}, None
        bad = _non_finite_paths(extra, "diagnostics.extra_metrics")
        return _plain(extra), ({path: "non-finite value" for path in bad} or None)

    if extra_shared:
        plain, notes = sanitise(extra_per_run[0] if k else None)
        extra_plain, extra_notes = [plain] * k, [notes] * k
    else:
        pairs = [sanitise(extra) for extra in extra_per_run]
        extra_plain, extra_notes = [p for p, _ in pairs], [n for _, n in pairs]

    sources, shared_source = _per_run("returns_source", returns_source, labels, None)
    for source in sources[:1] if shared_source else sources:
        if source is not None and not isinstance(source, str):
            raise ValueError(f"returns_source must be a string, got {source!r}")

    return _Options(
        periods_per_year=ppy,
        risk_free_rate=rf,
        rf_per_period=np.power(1.0 + rf, 1.0 / ppy) - 1.0,
        search_intensity=intensity,
        n_trials=n_trials,
        trials_variance=trials_variance,
        trials_note=trials_note,
        capital=cap,
        adv_limit=limit,
        complexity_score=score,
        returns_source=sources,
        extra_metrics=extra_plain,
        extra_notes=extra_notes,
    )


def _mapping_option(
    name: str, value: Any, labels: list[Any]
) -> tuple[list[Mapping[str, Any] | None], bool]:
    """(mapping per run, shared): one mapping for every run, per column, or a list per column."""
    k = len(labels)
    if value is None:
        return [None] * k, True
    if isinstance(value, Mapping):
        if _keyed_by_columns(value, labels) and all(
            item is None or isinstance(item, Mapping) for item in value.values()
        ):
            return _per_run(name, dict(value), labels, None)
        return [value] * k, True
    if (
        isinstance(value, (list, tuple))
        and len(value) == k
        and all(item is None or isinstance(item, Mapping) for item in value)
    ):
        return list(value), False
    raise ValueError(f"{name} must be a mapping, a mapping per column, or a list of mappings")


def _labelled(index: Any) -> bool:
    """Whether an index carries labels worth aligning on (dates, ids), not just positions."""
    return index is not None and not isinstance(index, pd.RangeIndex)


def _benchmark_matrix(
    benchmark: Any, labels: list[Any], index: Any, t: int, starts: np.ndarray
) -> tuple[np.ndarray | None, np.ndarray]:
    """(runs × periods benchmark matrix or view, whether each run has a benchmark).

    A benchmark series is aligned on the panel's index when both carry labels (e.g. dates);
    otherwise by position, over the panel's periods (length = rows of the panel) or, for one
    run's series, over that run's own periods (length = its number of returns).
    """
    k = len(labels)
    has = np.zeros(k, dtype=bool)
    if benchmark is None:
        return None, has

    def series_values(series: Any, name: str, run: int | None) -> np.ndarray:
        if isinstance(series, pd.Series) and _labelled(index) and _labelled(series.index):
            return series.reindex(index).to_numpy(dtype=np.float64)
        values = np.asarray(series, dtype=np.float64)
        if values.ndim == 1 and values.size == t:
            return values
        own = t - int(starts[run]) if run is not None else None
        if values.ndim == 1 and values.size == own:
            padded = np.full(t, np.nan)
            padded[t - own :] = values
            return padded
        expected = f"{t} (the panel's periods)" + (f" or {own} (the run's own)" if own else "")
        raise ValueError(f"{name}: expected {expected} benchmark returns, got shape {values.shape}")

    positions = _positions(labels)
    if isinstance(benchmark, Mapping):
        matrix = np.full((k, t), np.nan)
        for key, series in benchmark.items():
            position = positions.get(_hashable(key))
            if position is None:
                raise ValueError(f"benchmark_returns: {key!r} is not a column of the panel")
            if series is None:
                continue
            matrix[position] = series_values(series, f"benchmark_returns[{key!r}]", position)
            has[position] = True
        return matrix, has
    if isinstance(benchmark, pd.DataFrame):
        matrix = np.full((k, t), np.nan)
        for column in benchmark.columns:
            position = positions.get(_hashable(column))
            if position is None:
                raise ValueError(f"benchmark_returns: {column!r} is not a column of the panel")
            matrix[position] = series_values(
                benchmark[column], f"benchmark_returns[{column!r}]", position
            )
            has[position] = True
        return matrix, has
    if not isinstance(benchmark, pd.Series):
        values = np.asarray(benchmark, dtype=np.float64)
        if values.ndim == 2:
            if values.shape != (t, k):
                raise ValueError(f"benchmark_returns: expected shape {(t, k)}, got {values.shape}")
            has[:] = True
            return values.T, has
    shared = series_values(benchmark, "benchmark_returns", None)
    has[:] = True
    return np.broadcast_to(shared, (k, t)), has


# =============================================================================================
# the series kernel


@dataclass
class _Raw:
    """Per-run statistics the kernels produce; metrics are derived from them in ``_assemble``."""

    k: int
    n: np.ndarray
    values: dict[str, np.ndarray]

    @classmethod
    def empty(cls, k: int, n: np.ndarray, shapes: Mapping[str, int]) -> _Raw:
        values = {
            name: np.full((k, width) if width > 1 else k, np.nan) for name, width in shapes.items()
        }
        return cls(k=k, n=n, values=values)


_RAW_SHAPES: dict[str, int] = {
    "sum": 1,
    "mean": 1,
    "m2": 1,
    "m3": 1,
    "m4": 1,
    "low": 1,
    "high": 1,
    "half_n": 2,
    "half_mean": 2,
    "half_m2": 2,
    "half_range": 2,
    "fold_n": _CV_FOLDS,
    "fold_mean": _CV_FOLDS,
    "fold_m2": _CV_FOLDS,
    "fold_range": _CV_FOLDS,
    "min_ratio": 1,
    "under_water": 1,
    "longest_under_water": 1,
    "loss_sum": 1,
    "downside_sq": 1,
    "q01": 1,
    "tail_mean": 1,
    "regime": 3,
    "bench_mean": 1,
    "bench_m2": 1,
    "bench_range": 1,
    "bench_min_ratio": 1,
    "bench_valid": 1,
}


def _run_series_kernels(
    matrix: np.ndarray,
    bench_matrix: np.ndarray | None,
    has_benchmark: np.ndarray,
    starts: np.ndarray,
    options: _Options,
    full: bool,
    n_threads: int | None,
) -> _Raw:
    k, t = matrix.shape
    n = (t - starts).astype(np.int64)
    raw = _Raw.empty(k, n, _RAW_SHAPES)
    order = np.argsort(starts, kind="stable")
    order = order[n[order] > 0]  # runs without any period get only notes
    step = max(1, _CHUNK_ELEMENTS // max(t, 1))
    chunks = [order[i : i + step] for i in range(0, order.size, step)]
    if n_threads is None:
        n_threads = min(4, os.cpu_count() or 1) if len(chunks) >= 8 else 1
    n_threads = max(1, min(int(n_threads), len(chunks) or 1))

    # Workers pull the next chunk from a shared queue rather than taking a fixed share, so a
    # thread that gets less CPU (a busy machine) does not hold the others up.
    queue = iter(chunks)
    lock = threading.Lock()

    def work() -> None:
        space = _Workspace(step, t)
        with np.errstate(all="ignore"):  # overflow becomes a noted null in _assemble
            while True:
                with lock:
                    rows = next(queue, None)
                if rows is None:
                    return
                _series_chunk(
                    matrix, bench_matrix, has_benchmark, starts, rows, options, full, raw, space
                )

    if n_threads > 1:
        with ThreadPoolExecutor(max_workers=n_threads) as pool:
            for future in [pool.submit(work) for _ in range(n_threads)]:
                future.result()
    elif chunks:
        work()
    return raw


class _Workspace:
    """Scratch buffers reused across the chunks one thread processes.

    Fresh multi-megabyte temporaries cost more than the arithmetic on them (page faults and
    zeroing), so every full-size intermediate of a chunk lives in one of these buffers. Each buffer
    has one spare element: the segmented reductions need a closing element after the last row.
    """

    def __init__(self, rows: int, width: int) -> None:
        size = rows * width + 1
        self.float_buffers = [np.empty(size) for _ in range(6)]
        self.ints = np.empty(size, dtype=np.int32 if width < 2**31 - 1 else np.int64)
        self.flags = np.empty(size, dtype=bool)
        self.wide = np.empty(rows * width)  # whole rows before trimming leading padding
        self.keys = np.empty(rows * width, dtype=np.int64)  # regime keys

    def flat(self, which: int, k: int, width: int) -> np.ndarray:
        return self.float_buffers[which][: k * width + 1]

    def block(self, which: int, k: int, width: int) -> np.ndarray:
        return self.float_buffers[which][: k * width].reshape(k, width)

    def int_block(self, k: int, width: int) -> np.ndarray:
        return self.ints[: k * width].reshape(k, width)

    def flag_block(self, k: int, width: int) -> np.ndarray:
        return self.flags[: k * width].reshape(k, width)


def _gather_rows(
    matrix: np.ndarray, rows: np.ndarray, first: int, out: np.ndarray, space: _Workspace
) -> None:
    """``out[:] = matrix[rows, first:]`` without a temporary when the matrix is C-contiguous.

    ``np.take`` only avoids copying its whole source when that source is contiguous, so rows are
    taken whole (into the workspace's wide buffer when the columns are trimmed) and then sliced.
    """
    k = rows.size
    if not matrix.flags.c_contiguous:
        np.copyto(out, matrix[rows, first:])
    elif first == 0:
        np.take(matrix, rows, axis=0, out=out, mode="clip")
    else:
        whole = space.wide[: k * matrix.shape[1]].reshape(k, matrix.shape[1])
        np.take(matrix, rows, axis=0, out=whole, mode="clip")
        np.copyto(out, whole[:, first:])


# buffer roles inside a chunk
_DATA, _A, _B, _C, _D, _E = range(6)


def _series_chunk(
    matrix: np.ndarray,
    bench_matrix: np.ndarray | None,
    has_benchmark: np.ndarray,
    starts: np.ndarray,
    rows: np.ndarray,
    options: _Options,
    full: bool,
    raw: _Raw,
    space: _Workspace,
) -> None:
    first = int(starts[rows].min())
    k, width = rows.size, matrix.shape[1] - first
    flat = space.flat(_DATA, k, width)
    block = space.block(_DATA, k, width)
    _gather_rows(matrix, rows, first, block, space)
    flat[-1] = 0.0
    offset = (starts[rows] - first).astype(np.int64)  # leading padding inside the block
    n = width - offset
    padding = np.arange(width) < offset[:, None] if offset.any() else None
    if padding is not None:
        block[padding] = 0.0
    rf = options.rf_per_period[rows]
    out = raw.values

    seg = _segment_stats(flat, block, offset, n, space)
    for name, values in seg.items():
        out[name][rows] = values

    # Equity E_t = Π(1 + r) from 1; padding has r = 0 so it stays at 1 and is never under water.
    equity = space.block(_A, k, width)
    np.add(block, 1.0, out=equity)
    np.cumprod(equity, axis=1, out=equity)
    ratio = space.block(_B, k, width)
    # peak_t = max(1, E_1..E_t) = running max of (max(E_1, 1), E_2, ..., E_t)
    first_equity = equity[:, 0].copy()
    np.maximum(equity[:, 0], 1.0, out=equity[:, 0])
    np.maximum.accumulate(equity, axis=1, out=ratio)
    equity[:, 0] = first_equity
    np.divide(equity, ratio, out=ratio)  # E_t / peak_t (< 1 exactly when E_t < peak_t)
    out["min_ratio"][rows] = ratio.min(axis=1)
    under = np.less(ratio, 1.0, out=space.flag_block(k, width))
    out["under_water"][rows] = np.count_nonzero(under, axis=1)
    if full:
        out["longest_under_water"][rows] = _longest_true_run(under, space.int_block(k, width))

    losses = space.block(_A, k, width)
    np.minimum(block, 0.0, out=losses)
    out["loss_sum"][rows] = losses.sum(axis=1)
    if not full:
        if bench_matrix is not None and has_benchmark[rows].any():
            _benchmark_chunk(bench_matrix, rows, first, offset, padding, out, space)
        return
    if np.any(rf != 0.0):
        np.subtract(block, rf[:, None], out=losses)
        np.minimum(losses, 0.0, out=losses)
        if padding is not None:
            losses[padding] = 0.0
    out["downside_sq"][rows] = np.einsum("ij,ij->i", losses, losses)
    with np.errstate(invalid="ignore", divide="ignore"):
        std = np.sqrt(seg["m2"] / (n - 1))
    q, tail_mean = _lower_tail(block, padding, n, seg["mean"], std, _VAR_LEVEL, space)
    out["q01"][rows] = q
    out["tail_mean"][rows] = tail_mean
    out["regime"][rows] = _regime_shares(block, offset, n, seg, space)
    if bench_matrix is not None and has_benchmark[rows].any():
        _benchmark_chunk(bench_matrix, rows, first, offset, padding, out, space)


def _segment_stats(
    flat: np.ndarray, block: np.ndarray, offset: np.ndarray, n: np.ndarray, space: _Workspace
) -> dict[str, np.ndarray]:
    """Moments of every run, of its two halves and of its five folds, in one segmented pass.

    Each row is cut at its fold boundaries (``np.array_split`` sizes) and at n//2 into six atomic
    segments (some possibly empty), after a leading padding segment. Per segment: count, sum, and
    the central sums Σd², Σd³, Σd⁴ about the segment's own mean (two-pass), min and max. Whole-run,
    half and fold statistics are then combined exactly with the shift formula
    Σ(x − μ)^p = Σ_j C(p, j)(μ_s − μ)^(p−j) Σ(x − μ_s)^j, which has no cancellation.
    """
    k, width = block.shape
    q, r = np.divmod(n, _CV_FOLDS)
    j = np.arange(1, _CV_FOLDS)
    fold_bounds = j * q[:, None] + np.minimum(j, r[:, None])
    half = n // 2
    cuts = np.concatenate([np.zeros((k, 1), np.int64), fold_bounds, half[:, None]], axis=1)
    cuts.sort(axis=1)
    seg_len = np.diff(np.concatenate([cuts, n[:, None]], axis=1), axis=1)
    nseg = cuts.shape[1]
    row_start = np.arange(k, dtype=np.int64) * width
    index = np.empty((k, nseg + 1), np.int64)
    index[:, 0] = row_start
    index[:, 1:] = (row_start + offset)[:, None] + cuts
    length = np.empty((k, nseg + 1), np.int64)
    length[:, 0] = offset
    length[:, 1:] = seg_len
    # A final one-element segment on the spare element closes the last real segment.
    index = np.append(index.ravel(), k * width)
    length = np.append(length.ravel(), 1)
    empty = length == 0  # reduceat returns the element at the index for empty segments

    sums = np.add.reduceat(flat, index)
    sums[empty] = 0.0
    means = np.where(length > 0, sums / np.maximum(length, 1), 0.0)
    deviation = space.flat(_A, k, width)
    deviation[:] = np.repeat(means, length)
    np.subtract(flat, deviation, out=deviation)
    square = np.multiply(deviation, deviation, out=space.flat(_B, k, width))
    m2 = np.add.reduceat(square, index)
    power = np.multiply(square, square, out=space.flat(_C, k, width))
    m4 = np.add.reduceat(power, index)
    np.multiply(square, deviation, out=power)
    m3 = np.add.reduceat(power, index)
    low = np.minimum.reduceat(flat, index)
    high = np.maximum.reduceat(flat, index)
    for values, neutral in ((m2, 0.0), (m3, 0.0), (m4, 0.0), (low, np.inf), (high, -np.inf)):
        values[empty] = neutral

    def segments(values: np.ndarray) -> np.ndarray:
        return values[:-1].reshape(k, nseg + 1)[:, 1:]

    count = seg_len.astype(np.float64)
    s_sum, s_mean = segments(sums), segments(means)
    s_m2, s_m3, s_m4 = segments(m2), segments(m3), segments(m4)
    s_low, s_high = segments(low), segments(high)

    total = s_sum.sum(axis=1)
    mean = total / n
    delta = s_mean - mean[:, None]
    whole_m2 = (s_m2 + count * delta**2).sum(axis=1)
    whole_m3 = (s_m3 + 3.0 * delta * s_m2 + count * delta**3).sum(axis=1)
    whole_m4 = (s_m4 + 4.0 * delta * s_m3 + 6.0 * delta**2 * s_m2 + count * delta**4).sum(axis=1)

    def grouped(group: np.ndarray, groups: int) -> tuple[np.ndarray, ...]:
        member = group[:, :, None] == np.arange(groups)
        g_count = np.einsum("ksg,ks->kg", member, count)
        g_sum = np.einsum("ksg,ks->kg", member, s_sum)
        g_mean = np.where(g_count > 0, g_sum / np.maximum(g_count, 1.0), 0.0)
        shift = s_mean[:, :, None] - g_mean[:, None, :]
        g_m2 = np.einsum("ksg,ksg->kg", member, s_m2[:, :, None] + count[:, :, None] * shift**2)
        g_low = np.where(member, s_low[:, :, None], np.inf).min(axis=1)
        g_high = np.where(member, s_high[:, :, None], -np.inf).max(axis=1)
        return g_count, g_mean, g_m2, g_high - g_low

    half_group = (cuts >= half[:, None]).astype(np.int64)
    fold_group = (cuts[:, :, None] >= fold_bounds[:, None, :]).sum(axis=2)
    half_n, half_mean, half_m2, half_range = grouped(half_group, 2)
    fold_n, fold_mean, fold_m2, fold_range = grouped(fold_group, _CV_FOLDS)
    return {
        "sum": total,
        "mean": mean,
        "m2": whole_m2,
        "m3": whole_m3,
        "m4": whole_m4,
        "low": s_low.min(axis=1),
        "high": s_high.max(axis=1),
        "half_n": half_n,
        "half_mean": half_mean,
        "half_m2": half_m2,
        "half_range": half_range,
        "fold_n": fold_n,
        "fold_mean": fold_mean,
        "fold_m2": fold_m2,
        "fold_range": fold_range,
    }


def _longest_true_run(flags: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """Length of the longest run of consecutive True along each row."""
    k, width = flags.shape
    if width == 0:
        return np.zeros(k)
    position = np.arange(width, dtype=scratch.dtype)
    # last index at or before t that is not flagged (−1 when none yet): t − flag·(t + 1)
    np.multiply(flags, position + 1, out=scratch)
    np.subtract(position, scratch, out=scratch)
    np.maximum.accumulate(scratch, axis=1, out=scratch)
    np.subtract(position, scratch, out=scratch)
    return scratch.max(axis=1)


def _lower_tail(
    block: np.ndarray,
    padding: np.ndarray | None,
    n: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    level: float,
    space: _Workspace,
) -> tuple[np.ndarray, np.ndarray]:
    """Linear ``level`` quantile q of each row and the mean of the values ≤ q.

    Only the lowest ``upper + 1`` values of a row decide q, so the values below a cut
    (mean − 2·std) are gathered and sorted per row; a row with too few of them falls back to
    ``np.partition``. q is interpolated exactly as ``numpy.quantile`` does, and every value ≤ q is
    a gathered value because q ≤ the largest one needed, which is below the cut.
    """
    k, width = block.shape
    lower, upper, gamma = stats.linear_quantile_index(n, level)
    cut = np.where(np.isfinite(std), mean - 2.0 * std, -np.inf)
    below = np.less(block, cut[:, None], out=space.flag_block(k, width))
    if padding is not None:
        below[padding] = False
    count = np.count_nonzero(below, axis=1)
    enough = count >= upper + 1
    q = np.full(k, np.nan)
    tail_mean = np.full(k, np.nan)
    if not enough.all():
        below[~enough] = False
        count[~enough] = 0
        rows = np.flatnonzero(~enough)
        q[rows], tail_mean[rows] = _lower_tail_by_partition(
            block[rows],
            None if padding is None else padding[rows],
            lower[rows],
            upper[rows],
            gamma[rows],
        )
    rows = np.flatnonzero(enough)
    if rows.size:
        values = block[below]  # row-major: the values of row 0, then row 1, ...
        owner = np.repeat(np.arange(k), count)
        first = np.cumsum(count) - count
        candidates = np.full((k, int(count.max())), np.inf)
        candidates[owner, np.arange(values.size) - first[owner]] = values
        candidates.sort(axis=1)
        sub = candidates[rows]
        value = stats.lerp(
            sub[np.arange(rows.size), lower[rows]],
            sub[np.arange(rows.size), upper[rows]],
            gamma[rows],
        )
        in_tail = sub <= value[:, None]
        q[rows] = value
        tail_mean[rows] = np.where(in_tail, sub, 0.0).sum(axis=1) / in_tail.sum(axis=1)
    return q, tail_mean


def _lower_tail_by_partition(
    block: np.ndarray,
    padding: np.ndarray | None,
    lower: np.ndarray,
    upper: np.ndarray,
    gamma: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    work = np.array(block)
    if padding is not None:
        work[padding] = np.inf
    kth = int(upper.max())
    work.partition(kth, axis=1)
    prefix = np.sort(work[:, : kth + 1], axis=1)
    rows = np.arange(work.shape[0])
    q = stats.lerp(prefix[rows, lower], prefix[rows, upper], gamma)
    in_tail = prefix <= q[:, None]
    tail_sum = np.where(in_tail, prefix, 0.0).sum(axis=1)
    tail_count = in_tail.sum(axis=1).astype(np.float64)
    ties = np.flatnonzero(prefix[:, kth] == q)  # values equal to q may sit beyond the prefix
    if ties.size and work.shape[1] > kth + 1:
        extra = np.count_nonzero(work[ties, kth + 1 :] == q[ties, None], axis=1)
        tail_sum[ties] += extra * q[ties]
        tail_count[ties] += extra
    return q, tail_sum / tail_count


def _window_sums(
    values: np.ndarray, keep: np.ndarray, scratch: np.ndarray, out: np.ndarray
) -> np.ndarray:
    """Sums over every window of 20 consecutive columns (width − 19 per row), written to ``out``.

    Built by doubling (2, 4, 8, 16, then 16 + 4) so each window is summed by the same fixed tree
    whatever its position, which keeps a run's result independent of the padding before it.
    ``keep``, ``scratch`` and ``out`` are distinct buffers shaped like ``values``.
    """
    w = values.shape[1]
    s2 = np.add(values[:, : w - 1], values[:, 1:], out=scratch[:, : w - 1])
    s4 = np.add(s2[:, : w - 3], s2[:, 2:], out=keep[:, : w - 3])
    s8 = np.add(s4[:, : w - 7], s4[:, 4:], out=scratch[:, : w - 7])
    s16 = np.add(s8[:, : w - 15], s8[:, 8:], out=out[:, : w - 15])
    return np.add(s16[:, : w - 19], s4[:, 16:], out=out[:, : w - 19])


def _regime_shares(
    block: np.ndarray,
    offset: np.ndarray,
    n: np.ndarray,
    seg: Mapping[str, np.ndarray],
    space: _Workspace,
) -> np.ndarray:
    """Shares (low, mid, high) of full 20-period windows per volatility tercile; NaN if undefined."""
    k, width = block.shape
    shares = np.full((k, 3), np.nan)
    window = REGIME_WINDOW
    count = n - window + 1  # full windows per run
    with np.errstate(invalid="ignore", divide="ignore"):
        variance = seg["m2"] / (n - 1)
    usable = (count >= 3) & (seg["high"] - seg["low"] > 0)
    if width < window + 2 or not usable.any():
        return shares
    centred = space.block(_A, k, width)
    np.subtract(block, seg["mean"][:, None], out=centred)
    if offset.any():
        centred[np.arange(width) < offset[:, None]] = 0.0
    keep, scratch = space.block(_B, k, width), space.block(_C, k, width)
    sums = _window_sums(centred, keep, scratch, space.block(_D, k, width))
    np.multiply(centred, centred, out=centred)
    squares = _window_sums(centred, keep, scratch, space.block(_E, k, width))
    # key = rint(1e9 · rolling variance / run variance): the grid on which windows are compared
    np.multiply(sums, sums, out=sums)
    sums /= window
    keys = np.subtract(squares, sums, out=squares)
    keys *= (_REGIME_GRID / (window - 1) / np.where(usable, variance, 1.0))[:, None]
    np.rint(keys, out=keys)
    # Integer-valued keys partition faster as int64 (and the values fit: a window's variance is
    # at most n times the run's); comparisons against a cut q become comparisons with floor(q).
    n_windows = keys.shape[1]
    grid = space.keys[: k * n_windows].reshape(k, n_windows)
    np.copyto(grid, keys, casting="unsafe")
    padded_windows = offset.any()
    if padded_windows:
        grid[np.arange(n_windows) < offset[:, None]] = _PADDING_KEY  # windows reaching into padding
    m = np.maximum(count, 1)
    lo1, hi1, g1 = stats.linear_quantile_index(m, 1.0 / 3.0)
    lo2, hi2, g2 = stats.linear_quantile_index(m, 2.0 / 3.0)
    kth = np.unique(np.concatenate([lo1, hi1, lo2, hi2])[np.tile(usable, 4)])
    grid.partition(kth[(kth >= 0) & (kth < n_windows)], axis=1)
    rows = np.arange(k)

    def pick(index: np.ndarray) -> np.ndarray:
        return grid[rows, np.clip(index, 0, n_windows - 1)].astype(np.float64)

    low_cut = np.floor(stats.lerp(pick(lo1), pick(hi1), g1)).astype(np.int64)
    high_cut = np.floor(stats.lerp(pick(lo2), pick(hi2), g2)).astype(np.int64)
    flags = space.flag_block(k, width)[:, :n_windows]
    low = np.count_nonzero(np.less_equal(grid, low_cut[:, None], out=flags), axis=1)
    high = np.count_nonzero(np.greater(grid, high_cut[:, None], out=flags), axis=1)
    high -= n_windows - count  # the padding windows are all "> cut"
    mid = count - low - high
    result = np.stack([low, mid, high], axis=1) / m[:, None]
    shares[usable] = result[usable]
    return shares


def _benchmark_chunk(
    bench_matrix: np.ndarray,
    rows: np.ndarray,
    first: int,
    offset: np.ndarray,
    padding: np.ndarray | None,
    out: dict[str, np.ndarray],
    space: _Workspace,
) -> None:
    k, width = rows.size, bench_matrix.shape[1] - first
    bench = space.block(_E, k, width)
    _gather_rows(bench_matrix, rows, first, bench, space)
    n = width - offset
    if padding is not None:
        bench[padding] = 0.0
    valid = np.isfinite(bench).all(axis=1) & ~(bench <= -1.0).any(axis=1)
    bench[~valid] = 0.0
    mean = bench.sum(axis=1) / n
    deviation = np.subtract(bench, mean[:, None], out=space.block(_A, k, width))
    if padding is not None:
        deviation[padding] = 0.0
    m2 = np.einsum("ij,ij->i", deviation, deviation)
    if padding is not None:
        high = np.where(padding, -np.inf, bench).max(axis=1)
        low = np.where(padding, np.inf, bench).min(axis=1)
    else:
        high, low = bench.max(axis=1), bench.min(axis=1)
    equity = np.add(bench, 1.0, out=space.block(_A, k, width))
    np.cumprod(equity, axis=1, out=equity)
    peak = np.maximum.accumulate(equity, axis=1, out=space.block(_B, k, width))
    np.maximum(peak, 1.0, out=peak)
    ratio = np.divide(equity, peak, out=peak).min(axis=1)
    out["bench_mean"][rows] = mean
    out["bench_m2"][rows] = m2
    out["bench_range"][rows] = high - low
    out["bench_min_ratio"][rows] = ratio
    out["bench_valid"][rows] = valid.astype(np.float64)


# =============================================================================================
# trades


def _trade_statistics(trades: Any, labels: list[Any]) -> dict[str, np.ndarray]:
    k = len(labels)
    count = np.full(k, np.nan)
    adv_missing = np.zeros(k, dtype=bool)
    volume_missing = np.zeros(k, dtype=bool)
    adv_parts: list[np.ndarray] = []
    adv_ids: list[np.ndarray] = []
    volume_parts: list[np.ndarray] = []
    volume_ids: list[np.ndarray] = []
    if trades is not None:
        if isinstance(trades, pd.DataFrame):
            if k != 1:
                raise ValueError(
                    "trades: pass a mapping column → trades DataFrame for a multi-column panel"
                )
            trades = {labels[0]: trades}
        if not isinstance(trades, Mapping):
            raise TypeError("trades must be a mapping column → DataFrame")
        positions = _positions(labels)
        for key, log in trades.items():
            position = positions.get(_hashable(key))
            if position is None:
                raise ValueError(f"trades: {key!r} is not a column of the panel")
            if log is None:
                continue
            if not isinstance(log, pd.DataFrame):
                raise TypeError(f"trades[{key!r}] must be a DataFrame, got {type(log).__name__}")
            count[position] = len(log)
            ratio = _trade_ratio(log, key, "notional", "adv_notional")
            if ratio is None:
                adv_missing[position] = True
            else:
                adv_parts.append(ratio)
                adv_ids.append(np.full(ratio.size, position, dtype=np.int64))
            ratio = _trade_ratio(log, key, "qty", "bar_volume")
            if ratio is None:
                volume_missing[position] = True
            else:
                volume_parts.append(ratio)
                volume_ids.append(np.full(ratio.size, position, dtype=np.int64))
    adv, adv_count = _grouped_quantile(adv_parts, adv_ids, k, _LIQUIDITY_QUANTILE)
    volume, volume_count = _grouped_quantile(volume_parts, volume_ids, k, _LIQUIDITY_QUANTILE)
    return {
        "n_trades": count,
        "adv_p95": adv,
        "adv_count": adv_count,
        "adv_missing": adv_missing,
        "volume_p95": volume,
        "volume_count": volume_count,
        "volume_missing": volume_missing,
    }


def _trade_ratio(
    log: pd.DataFrame, key: Any, size_column: str, base_column: str
) -> np.ndarray | None:
    """|size| / base over the rows whose base is a positive number; None without the base column."""
    if base_column not in log.columns:
        return None
    if size_column not in log.columns:
        raise ValueError(f"trades[{key!r}] has {base_column} but no {size_column} column")
    size = pd.to_numeric(log[size_column], errors="coerce").to_numpy(dtype=np.float64)
    base = pd.to_numeric(log[base_column], errors="coerce").to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        usable = np.isfinite(size) & np.isfinite(base) & (base > 0)
    return np.abs(size[usable]) / base[usable]


def _grouped_quantile(
    parts: list[np.ndarray], ids: list[np.ndarray], k: int, level: float
) -> tuple[np.ndarray, np.ndarray]:
    """numpy linear ``level`` quantile of the values of each group, NaN for empty groups."""
    result = np.full(k, np.nan)
    if not parts or not sum(part.size for part in parts):
        return result, np.zeros(k, dtype=np.int64)
    values = np.concatenate(parts)
    groups = np.concatenate(ids)
    counts = np.bincount(groups, minlength=k)
    order = np.lexsort((values, groups))
    ordered = values[order]
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    present = counts > 0
    lower, upper, gamma = stats.linear_quantile_index(np.maximum(counts, 1), level)
    low = ordered[np.minimum(first + lower, ordered.size - 1)]
    high = ordered[np.minimum(first + upper, ordered.size - 1)]
    result[present] = stats.lerp(low, high, gamma)[present]
    return result, counts


# =============================================================================================
# assembling metrics and notes


class _Columns:
    """Metric arrays and their note codes under construction."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.values: dict[str, np.ndarray] = {}
        self.notes: dict[str, np.ndarray] = {}

    def put(self, path: str, values: Any, *undefined: tuple[Any, int]) -> np.ndarray:
        """Store ``values`` with the first matching (condition, code) as the reason for a null.

        A value that is still NaN/±inf after the listed conditions becomes null with the overflow
        note, so nothing non-finite is ever stored.
        """
        values = np.array(np.broadcast_to(np.asarray(values, dtype=np.float64), (self.k,)))
        codes = np.zeros(self.k, dtype=np.uint8)
        for condition, code in undefined:
            condition = np.broadcast_to(np.asarray(condition, dtype=bool), (self.k,))
            codes[(codes == 0) & condition] = code
        values[codes != 0] = np.nan
        overflow = (codes == 0) & ~np.isfinite(values)
        codes[overflow] = _OVERFLOW
        values[overflow] = np.nan
        self.values[path] = values
        self.notes[path] = codes
        return values


def _assemble(
    labels: list[Any],
    raw: _Raw,
    trade: Mapping[str, np.ndarray],
    options: _Options,
    has_benchmark: np.ndarray,
    full: bool,
) -> dict[str, np.ndarray]:
    k = raw.k
    v = raw.values
    n = raw.n.astype(np.float64)
    ppy = options.periods_per_year
    rf = options.rf_per_period
    root = np.sqrt(ppy)
    cols = _Columns(k)
    none = n == 0
    skipped = not full
    flat = (v["high"] - v["low"]) == 0
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        std = np.sqrt(v["m2"] / (n - 1))
        dispersion = ((none, _NO_PERIODS), (n < 2, _LT2), (flat, _FLAT))
        sharpe_pp = cols.put("returns.sharpe_per_period", (v["mean"] - rf) / std, *dispersion)
        sharpe = cols.put("returns.sharpe", sharpe_pp * root, *dispersion)
        cols.put(
            "returns.volatility",
            np.where(flat, 0.0, std * root),
            (none, _NO_PERIODS),
            (n < 2, _LT2),
        )
        no_downside = v["downside_sq"] == 0
        cols.put(
            "returns.sortino_ratio",
            (v["mean"] - rf) / np.sqrt(v["downside_sq"] / n) * root,
            (none, _NO_PERIODS),
            (skipped, _NOT_COMPUTED),
            (no_downside & (rf == 0.0), _NO_LOSS),
            (no_downside, _NO_BELOW_RF),
        )
        cols.put("returns.max_drawdown", 1.0 - v["min_ratio"], (none, _NO_PERIODS))
        cols.put(
            "returns.gain_to_pain_ratio",
            v["sum"] / -v["loss_sum"],
            (none, _NO_PERIODS),
            (v["loss_sum"] == 0, _NO_LOSS),
        )
        cols.put("returns.time_under_water_ratio", v["under_water"] / n, (none, _NO_PERIODS))
        cols.put(
            "returns.max_time_under_water_days",
            v["longest_under_water"],
            (none, _NO_PERIODS),
            (skipped, _NOT_COMPUTED),
        )
        cols.put(
            "returns.var_p01",
            np.maximum(-v["q01"], 0.0),
            (none, _NO_PERIODS),
            (n < 2, _LT2),
            (skipped, _NOT_COMPUTED),
        )
        cols.put(
            "returns.es_p01",
            np.maximum(-v["tail_mean"], 0.0),
            (none, _NO_PERIODS),
            (n < 2, _LT2),
            (skipped, _NOT_COMPUTED),
        )
        skew = cols.put(
            "returns.skew",
            stats.skewness_from_moments(n, v["m2"], v["m3"]),
            (none, _NO_PERIODS),
            (n < 3, _LT3),
            (flat, _FLAT),
        )
        excess = cols.put(
            "returns.excess_kurtosis",
            stats.excess_kurtosis_from_moments(n, v["m2"], v["m4"]),
            (none, _NO_PERIODS),
            (n < 4, _LT4),
            (flat, _FLAT),
        )

        # sample
        cols.put("sample.n_periods", n)
        years = cols.put("sample.effective_history_years", n / ppy, (none, _NO_PERIODS))
        n_trades = trade["n_trades"]
        no_trades = np.isnan(n_trades)
        cols.put("sample.n_trades_total", n_trades, (no_trades, _NO_TRADES))
        cols.put(
            "sample.n_trades_per_year",
            n_trades / years,
            (no_trades, _NO_TRADES),
            (none, _NO_PERIODS),
        )
        for column, name in enumerate(("low_vol", "mid_vol", "high_vol")):
            cols.put(
                f"sample.regime_coverage.{name}",
                v["regime"][:, column],
                (none, _NO_PERIODS),
                (skipped, _NOT_COMPUTED),
                (n < REGIME_WINDOW + 2, _REGIME_SHORT),
                (flat, _FLAT),
            )

        # risk
        adv = cols.put(
            "risk.adv_utilization_p95",
            trade["adv_p95"],
            (no_trades, _NO_TRADES),
            (trade["adv_missing"], _NO_ADV_COLUMN),
            (trade["adv_count"] == 0, _NO_ADV_ROWS),
        )
        cols.put(
            "risk.participation_rate_p95",
            trade["volume_p95"],
            (no_trades, _NO_TRADES),
            (trade["volume_missing"], _NO_VOLUME_COLUMN),
            (trade["volume_count"] == 0, _NO_VOLUME_ROWS),
        )
        cols.put(
            "risk.capacity_estimate_base",
            options.capital * options.adv_limit / adv,
            (np.isnan(options.capital), _NO_CAPITAL),
            (no_trades, _NO_TRADES),
            (np.isnan(adv), _ADV_NULL),
            (adv == 0, _ADV_ZERO),
        )

        # robustness
        kurtosis = excess + 3.0
        bracket = 1.0 - skew * sharpe_pp + (kurtosis - 1.0) / 4.0 * sharpe_pp**2
        inference = ((none, _NO_PERIODS), (n < 4, _LT4), (flat, _FLAT), (~(bracket > 0), _BRACKET))
        sigma = np.sqrt(bracket / (n - 1))
        variance_given = ~np.isnan(options.trials_variance)
        variance = np.where(variance_given, options.trials_variance, sigma**2)
        threshold = np.asarray(
            stats.expected_max_sharpe_ratio(options.n_trials, variance), dtype=np.float64
        )
        dsr = np.asarray(
            stats.deflated_sharpe_ratio(sharpe_pp, n, skew, kurtosis, options.n_trials, variance),
            dtype=np.float64,
        )
        cols.put("robustness.deflated_sharpe_ratio", dsr, *inference)
        annotate = (cols.notes["robustness.deflated_sharpe_ratio"] == 0) & (options.n_trials > 1)
        annotate &= ~variance_given
        cols.notes["robustness.deflated_sharpe_ratio"][annotate] = options.trials_note[annotate]
        cols.put("robustness.dsr_n_trials", options.n_trials)
        cols.put(
            "robustness.dsr_expected_max_sharpe",
            threshold,
            *(((condition & ~variance_given), code) for condition, code in inference),
        )
        cols.put(
            "robustness.probabilistic_sharpe_ratio",
            stats.probabilistic_sharpe_ratio(sharpe_pp, n, skew, kurtosis),
            *inference,
        )
        trl = np.asarray(
            stats.min_track_record_length(sharpe_pp, skew, kurtosis, 0.0, _MIN_TRL_CONFIDENCE),
            dtype=np.float64,
        )
        cols.put(
            "robustness.min_track_record_years",
            trl / ppy,
            (none, _NO_PERIODS),
            (n < 4, _LT4),
            (flat, _FLAT),
            (~(sharpe_pp > 0), _SR_NOT_POSITIVE),
            (~(bracket > 0), _BRACKET),
        )
        half_n = v["half_n"]
        half_sharpe = (
            (v["half_mean"] - rf[:, None]) / np.sqrt(v["half_m2"] / (half_n - 1)) * root[:, None]
        )
        for column, name in enumerate(("sharpe_first_half", "sharpe_second_half")):
            cols.put(
                f"robustness.{name}",
                half_sharpe[:, column],
                (none, _NO_PERIODS),
                (half_n[:, column] < 2, _HALF_SHORT),
                (v["half_range"][:, column] == 0, _HALF_FLAT),
            )
        fold_sharpe = (
            (v["fold_mean"] - rf[:, None])
            / np.sqrt(v["fold_m2"] / (v["fold_n"] - 1))
            * root[:, None]
        )
        cv_short = n < 2 * _CV_FOLDS
        cv_flat = (v["fold_range"] == 0).any(axis=1)
        cols.put("robustness.cv_folds", np.full(k, float(_CV_FOLDS)), (cv_short, _CV_SHORT))
        cols.put(
            "robustness.cv_sharpe_mean",
            fold_sharpe.mean(axis=1),
            (cv_short, _CV_SHORT),
            (cv_flat, _CV_FLAT),
        )
        cols.put(
            "robustness.cv_sharpe_std",
            fold_sharpe.std(axis=1, ddof=1),
            (cv_short, _CV_SHORT),
            (cv_flat, _CV_FLAT),
        )

        # diagnostics
        cols.put("diagnostics.search_intensity", options.search_intensity)
        cols.put("diagnostics.strategy_complexity", options.complexity_score)
        cols.put("diagnostics.periods_per_year", ppy)
        cols.put("diagnostics.risk_free_rate", options.risk_free_rate)
        cols.put("diagnostics.validation_health.rules_executed_ratio", np.nan, (True, _AFTER_RULES))
        cols.put(
            "diagnostics.validation_health.validation_error_count", np.nan, (True, _AFTER_RULES)
        )

        # benchmark (runs without one: NaN and no note; the block is absent from to_dict)
        invalid = ~(v["bench_valid"] == 1.0)
        b_std = np.sqrt(v["bench_m2"] / (n - 1))
        b_flat = v["bench_range"] == 0
        b_sharpe = cols.put(
            "benchmark.sharpe",
            (v["bench_mean"] - rf) / b_std * root,
            (none, _NO_PERIODS),
            (invalid, _BENCHMARK_INVALID),
            (n < 2, _LT2),
            (b_flat, _FLAT),
        )
        cols.put(
            "benchmark.max_drawdown",
            1.0 - v["bench_min_ratio"],
            (none, _NO_PERIODS),
            (invalid, _BENCHMARK_INVALID),
        )
        cols.put(
            "benchmark.volatility",
            np.where(b_flat, 0.0, b_std * root),
            (none, _NO_PERIODS),
            (invalid, _BENCHMARK_INVALID),
            (n < 2, _LT2),
        )
        cols.put(
            "benchmark.vs_benchmark_sharpe",
            sharpe - b_sharpe,
            (np.isnan(sharpe) | np.isnan(b_sharpe), _SHARPE_NULL),
        )
        for path in (
            "benchmark.sharpe",
            "benchmark.max_drawdown",
            "benchmark.volatility",
            "benchmark.vs_benchmark_sharpe",
        ):
            cols.values[path][~has_benchmark] = np.nan
            cols.notes[path][~has_benchmark] = 0

    present = np.zeros(k)
    for path in health.CORE_METRIC_PATHS:
        present += ~np.isnan(cols.values[path])
    cols.put(
        "diagnostics.validation_health.metric_coverage_ratio",
        present / len(health.CORE_METRIC_PATHS),
    )

    out: dict[str, np.ndarray] = {"run": _object_array(labels)}
    sources = _object_array(options.returns_source)
    for path in METRIC_PATHS:
        if path == "diagnostics.returns_source":
            out[path] = sources
            out[f"note:{path}"] = np.where(
                np.array([s is None for s in options.returns_source], dtype=bool), _NOT_GIVEN, 0
            ).astype(np.uint8)
        elif path == "diagnostics.extra_metrics":
            out[path] = _object_array(options.extra_metrics)
        else:
            out[path] = cols.values[path]
            out[f"note:{path}"] = cols.notes[path]
    out["has_benchmark"] = has_benchmark.copy()
    out["extra_notes"] = _object_array(options.extra_notes)
    return out


def _object_array(items: Iterable[Any]) -> np.ndarray:
    items = list(items)
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = item
    return out


# =============================================================================================
# arrays → records


def _notes_of_run(
    arrays: Mapping[str, np.ndarray], note_lists: Mapping[str, list[int]], i: int
) -> dict[str, str]:
    notes: dict[str, str] = {}
    has_benchmark = bool(arrays["has_benchmark"][i])
    for path, codes in note_lists.items():
        code = codes[i]
        if code and (has_benchmark or not path.startswith("benchmark.")):
            notes[path] = NOTE_REASONS[code]
    extra = arrays["extra_notes"][i]
    if extra:
        notes.update(extra)
    return dict(sorted(notes.items()))


def metrics_from_arrays(arrays: Mapping[str, np.ndarray]) -> dict[Any, EvaluationMetrics]:
    """``EvaluationMetrics`` per run from ``compute_panel_arrays`` output, keyed by column label."""
    labels = list(arrays["run"])
    columns = [
        (path.split("."), kind, path.startswith("benchmark."), arrays[path].tolist())
        for path, kind in METRIC_SCHEMA
    ]
    note_lists = {key[5:]: arrays[key].tolist() for key in arrays if key.startswith("note:")}
    has_benchmark = arrays["has_benchmark"].tolist()
    result: dict[Any, EvaluationMetrics] = {}
    for i, label in enumerate(labels):
        nested: dict[str, Any] = {name: {} for name in BLOCKS}
        if has_benchmark[i]:
            nested["benchmark"] = {}
        for parts, kind, benchmark_path, values in columns:
            if benchmark_path and not has_benchmark[i]:
                continue
            value = values[i]
            if kind == _FLOAT:
                value = None if value != value else value
            elif kind == _INT:
                value = None if value != value else int(value)
            elif kind == _MAP:
                value = copy.deepcopy(value)
            node = nested[parts[0]]
            for part in parts[1:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
        diagnostics = nested["diagnostics"]
        diagnostics["metric_notes"] = _notes_of_run(arrays, note_lists, i)
        diagnostics["validation_health"]["metric_coverage_ratio"] = health.metric_coverage_ratio(
            nested
        )
        result[label] = EvaluationMetrics(**nested)
    return result


def flat_columns(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``FLAT_COLUMNS`` → column arrays (``to_flat_dict`` of every run, column-wise): a wide table.

    Numbers stay float64 with NaN for null; the two maps are JSON text.
    """
    k = len(arrays["run"])
    out: dict[str, np.ndarray] = {"run": arrays["run"]}
    for path in METRIC_PATHS:
        if METRIC_KINDS[path] == _MAP:
            out[path] = _object_array(_json_text(item or {}) for item in arrays[path])
        else:
            out[path] = arrays[path]
    note_lists = {key[5:]: arrays[key].tolist() for key in arrays if key.startswith("note:")}
    out[NOTES_PATH] = _object_array(
        _json_text(_notes_of_run(arrays, note_lists, i)) for i in range(k)
    )
    return out
