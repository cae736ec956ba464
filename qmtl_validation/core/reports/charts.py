"""Report pictures as PNG bytes: equity curve with drawdown, rolling Sharpe, risk contributions.

Charts are drawn on :class:`matplotlib.figure.Figure` objects with the Agg canvas attached
directly: no pyplot, no global backend switch, no shared figure registry, so rendering is safe
from several threads and never opens a window. PNGs are written by Pillow (a dependency of
matplotlib) as 128-colour palette images with no timestamp, so the same series gives the same
bytes; a chart of ten years of daily returns is about 30 KB.

Definitions (SPEC §5): equity ``E_t = Π(1 + r)`` starting at 1; drawdown ``1 − E_t /
max(1, E_1..E_t)``, a positive loss fraction (drawn below zero as an underwater chart); rolling
Sharpe ``mean/std(ddof=1)·√P`` over the trailing ``window`` periods, undefined (gap) where the
window's returns are all equal.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import pandas as pd
from PIL import Image as PILImage

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DEFAULT_ROLLING_WINDOW = 63
EQUITY_CHART_TITLE = "Equity curve and drawdown"

_STRATEGY_COLOUR = "#1f4e79"
_BENCHMARK_COLOUR = "#8c8c8c"
_DRAWDOWN_COLOUR = "#c62828"
_DPI = 100
_PALETTE_COLOURS = 128


def returns_series(returns: Any) -> pd.Series:
    """Simple returns as a float Series.

    Accepts a Series (date or integer index), a DataFrame with a ``ret`` column (indexed by
    date, or with a ``date`` column), or any 1-D array-like. Missing values (e.g. the NaN
    padding of a ragged panel column) are dropped; the index is sorted.
    """
    if isinstance(returns, pd.DataFrame):
        frame = returns
        if "date" in frame.columns:
            frame = frame.set_index("date")
        if "ret" not in frame.columns:
            raise ValueError("returns frame needs a 'ret' column")
        series = frame["ret"]
    elif isinstance(returns, pd.Series):
        series = returns
    else:
        series = pd.Series(np.asarray(returns, dtype=float).ravel())
    series = pd.to_numeric(series, errors="raise").astype(float).dropna()
    if not series.index.is_monotonic_increasing:
        series = series.sort_index()
    return series


def benchmark_series(returns: Any) -> pd.Series | None:
    """The ``benchmark_ret`` column of a returns frame, when it has one."""
    if isinstance(returns, pd.DataFrame) and "benchmark_ret" in returns.columns:
        frame = returns.set_index("date") if "date" in returns.columns else returns
        return returns_series(frame["benchmark_ret"])
    return None


def equity_and_drawdown(returns: Any) -> tuple[pd.Series, pd.Series]:
    """``(equity, drawdown)``: compounded equity from 1 and the positive drawdown fraction."""
    series = returns_series(returns)
    values = series.to_numpy()
    equity = np.cumprod(1.0 + values)
    peak = np.maximum(np.maximum.accumulate(equity), 1.0) if values.size else equity
    drawdown = 1.0 - equity / peak if values.size else equity
    return pd.Series(equity, index=series.index), pd.Series(drawdown, index=series.index)


def rolling_sharpe(
    returns: Any, window: int = DEFAULT_ROLLING_WINDOW, *, periods_per_year: float = 252
) -> pd.Series:
    """Annualised Sharpe over each trailing ``window`` periods; NaN before the window fills and
    where the window has zero dispersion (max − min = 0)."""
    if window < 2:
        raise ValueError(f"rolling Sharpe window must be at least 2, got {window}")
    series = returns_series(returns)
    rolling = series.rolling(window, min_periods=window)
    mean, std = rolling.mean(), rolling.std(ddof=1)
    spread = rolling.max() - rolling.min()
    sharpe = mean / std * np.sqrt(periods_per_year)
    return sharpe.where(spread > 0)


def _x(index: pd.Index) -> np.ndarray:
    if isinstance(index, pd.DatetimeIndex):
        return index.tz_localize(None).to_numpy() if index.tz is not None else index.to_numpy()
    return np.arange(len(index))


def _figure(height: float, *, left: float = 0.075) -> Figure:
    # matplotlib is imported on first use: it adds about a second to the start of every process
    # that loads the code location (each run worker), and most runs draw no picture.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Fixed margins instead of a layout engine: constrained layout re-runs the date tick
    # locators several times and would triple the rendering time.
    figure = Figure(figsize=(9.0, height), dpi=_DPI, facecolor="white")
    FigureCanvasAgg(figure)
    top = 1.0 - 0.32 / height
    bottom = 0.3 / height
    figure.subplots_adjust(left=left, right=0.985, top=top, bottom=bottom, hspace=0.28)
    return figure


def _style(axes: Any, dated: bool) -> None:
    axes.grid(True, color="#e0e0e0", linewidth=0.6)
    axes.spines[["top", "right"]].set_visible(False)
    axes.tick_params(labelsize=8)
    if dated:
        from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

        locator = AutoDateLocator()
        axes.xaxis.set_major_locator(locator)
        axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))


def _png(figure: Figure) -> bytes:
    # A 128-colour palette keeps a 900-px chart of ten years of daily returns near 30 KB (the
    # full-colour PNG is ~80 KB) with no visible difference; no dithering keeps lines crisp.
    figure.canvas.draw()
    rgb = np.asarray(figure.canvas.buffer_rgba())[..., :3]
    image = PILImage.fromarray(np.ascontiguousarray(rgb)).quantize(
        colors=_PALETTE_COLOURS, method=PILImage.Quantize.MEDIANCUT, dither=PILImage.Dither.NONE
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _no_data(axes: Any, message: str) -> None:
    axes.text(0.5, 0.5, message, ha="center", va="center", transform=axes.transAxes,
              fontsize=10, color="#666666")


def equity_drawdown_png(
    returns: Any, *, benchmark: Any = None, title: str = EQUITY_CHART_TITLE
) -> bytes:
    """Two stacked panels sharing the time axis: equity (starting at 1) with the optional
    benchmark, and the underwater chart (drawdown drawn as −fraction). ``benchmark`` defaults to
    the ``benchmark_ret`` column when ``returns`` is a frame."""
    series = returns_series(returns)
    bench = returns_series(benchmark) if benchmark is not None else benchmark_series(returns)
    figure = _figure(5.6)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(2.2, 1.0))
    dated = isinstance(series.index, pd.DatetimeIndex)
    top.set_title(title, fontsize=11, loc="left")
    if series.empty:
        _no_data(top, "no returns")
    else:
        equity, drawdown = equity_and_drawdown(series)
        x = _x(series.index)
        top.plot(x, equity.to_numpy(), color=_STRATEGY_COLOUR, linewidth=1.2, label="strategy")
        if bench is not None and not bench.empty:
            bench_equity, _ = equity_and_drawdown(bench)
            top.plot(_x(bench.index), bench_equity.to_numpy(), color=_BENCHMARK_COLOUR,
                     linewidth=1.0, label="benchmark")
            top.legend(fontsize=8, frameon=False, loc="upper left")
        top.axhline(1.0, color="#999999", linewidth=0.6)
        underwater = -drawdown.to_numpy()
        bottom.fill_between(x, underwater, 0.0, color=_DRAWDOWN_COLOUR, alpha=0.35, linewidth=0)
        bottom.plot(x, underwater, color=_DRAWDOWN_COLOUR, linewidth=0.8)
        worst = float(drawdown.max())
        bottom.set_title(f"Drawdown (max {worst:.1%})", fontsize=9, loc="left")
    top.set_ylabel("equity (start = 1)", fontsize=8)
    bottom.set_ylabel("drawdown", fontsize=8)
    bottom.yaxis.set_major_formatter(lambda value, _pos: f"{value:.0%}")
    _style(top, dated)
    _style(bottom, dated)
    return _png(figure)


def rolling_sharpe_png(
    returns: Any,
    window: int = DEFAULT_ROLLING_WINDOW,
    *,
    periods_per_year: float = 252,
    title: str | None = None,
) -> bytes:
    """Line chart of :func:`rolling_sharpe` with the full-sample Sharpe as a reference line."""
    series = returns_series(returns)
    figure = _figure(3.4)
    axes = figure.subplots()
    axes.set_title(title or rolling_sharpe_title(window), fontsize=11, loc="left")
    values = rolling_sharpe(series, window, periods_per_year=periods_per_year)
    if values.notna().sum() == 0:
        _no_data(axes, f"fewer than {window} periods with dispersion: no rolling Sharpe")
    else:
        axes.plot(_x(series.index), values.to_numpy(), color=_STRATEGY_COLOUR, linewidth=1.0)
        axes.axhline(0.0, color="#999999", linewidth=0.6)
        if series.max() - series.min() > 0 and len(series) > 1:
            full = float(series.mean() / series.std(ddof=1) * np.sqrt(periods_per_year))
            axes.axhline(full, color="#ef8f00", linewidth=0.9, linestyle="--",
                         label=f"full sample {full:.2f}")
            axes.legend(fontsize=8, frameon=False, loc="upper left")
    axes.set_ylabel("Sharpe", fontsize=8)
    _style(axes, isinstance(series.index, pd.DatetimeIndex))
    return _png(figure)


def _label(name: str, limit: int = 32) -> str:
    """Shorten long ids in the middle: prefixes and suffixes both tend to carry meaning."""
    if len(name) <= limit:
        return name
    head = (limit - 1) // 2
    return name[:head] + "…" + name[len(name) - (limit - 1 - head):]


def risk_contributions_png(
    contributions: Mapping[str, float], *, title: str = "Risk contributions (component VaR)"
) -> bytes:
    """Horizontal bar chart, largest contribution on top; negative contributions (hedges) are
    drawn left of zero in green."""
    items = sorted(
        ((str(k), float(v)) for k, v in contributions.items() if v is not None and np.isfinite(v)),
        key=lambda item: (-abs(item[1]), item[0]),
    )
    height = min(2.0 + 0.32 * len(items), 12.0)
    labels = [_label(name) for name, _ in items]
    figure = _figure(height)
    axes = figure.subplots()
    axes.set_title(title, fontsize=11, loc="left")
    if not items:
        _no_data(axes, "no contributions")
    else:
        values = np.array([value for _, value in reversed(items)])
        colours = np.where(values >= 0, _DRAWDOWN_COLOUR, "#2e7d32")
        # Numeric positions: two strategies whose shortened labels coincide keep two bars.
        positions = np.arange(len(values))
        axes.barh(positions, values, color=colours, alpha=0.8)
        axes.set_yticks(positions, list(reversed(labels)))
        axes.axvline(0.0, color="#666666", linewidth=0.6)
        axes.margins(x=0.08)  # room for the share labels at both bar ends
        total = values.sum()
        if total:
            for y, value in enumerate(values):
                axes.annotate(f"{value / total:.0%}", (value, y),
                              xytext=(3 if value >= 0 else -3, 0),
                              textcoords="offset points", va="center",
                              ha="left" if value >= 0 else "right", fontsize=7)
    if items:
        # Make room for the widest strategy label, measured with the renderer that draws it.
        renderer = figure.canvas.get_renderer()
        widest = max(t.get_window_extent(renderer).width for t in axes.get_yticklabels())
        figure.subplots_adjust(left=min(0.45, (widest + 16) / figure.bbox.width))
    axes.set_axisbelow(True)
    axes.grid(True, axis="x", color="#e0e0e0", linewidth=0.6)
    axes.spines[["top", "right"]].set_visible(False)
    axes.tick_params(labelsize=8)
    return _png(figure)


def rolling_sharpe_title(window: int) -> str:
    return f"Rolling Sharpe ({window} periods, annualised)"


def run_chart_pngs(
    returns: Any,
    *,
    periods_per_year: float = 252,
    rolling_window: int = DEFAULT_ROLLING_WINDOW,
) -> dict[str, bytes]:
    """The pictures of a run report, keyed by title in display order: equity curve with
    drawdown, then rolling Sharpe. Empty when ``returns`` holds no values."""
    series = returns_series(returns)
    if series.empty:
        return {}
    return {
        EQUITY_CHART_TITLE: equity_drawdown_png(returns),
        rolling_sharpe_title(rolling_window): rolling_sharpe_png(
            series, rolling_window, periods_per_year=periods_per_year
        ),
    }
