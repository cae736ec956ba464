"""Scaling plots (PNG, in ``docs/``) drawn from ``results["scaling"]`` with matplotlib's Figure
API (no pyplot state, so nothing depends on a display or a global figure)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

PANEL_PNG = "perf_panel_scaling.png"
BACKFILL_PNG = "perf_backfill_scaling.png"
MIB = 2**20


def _linear_guide(axis: Any, xs: Sequence[float], ys: Sequence[float], label: str) -> None:
    """A dotted line through the origin and the largest point: what linear growth looks like."""
    if not xs or not ys or xs[-1] == 0:
        return
    slope = ys[-1] / xs[-1]
    axis.plot([0, xs[-1]], [0, slope * xs[-1]], linestyle=":", color="grey", linewidth=1, label=label)


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=110)
    return path


def panel_plot(points: Sequence[dict[str, Any]], path: Path) -> Path:
    runs = [p["runs"] for p in points]
    medians = [p["timing"]["median"] for p in points]
    lows = [p["timing"]["min"] for p in points]
    highs = [p["timing"]["max"] for p in points]
    peaks = [p["peak_traced_bytes"] / MIB for p in points]
    panel = [p["panel_bytes"] / MIB for p in points]
    figure = Figure(figsize=(10, 4), layout="constrained")
    left, right = figure.subplots(1, 2)
    left.errorbar(runs, medians, yerr=[[m - lo for m, lo in zip(medians, lows)],
                                       [hi - m for m, hi in zip(medians, highs)]],
                  marker="o", capsize=3, label="full metric set (median, min–max)")
    _linear_guide(left, runs, medians, "linear through the largest")
    left.set_xlabel("runs in the panel (2,520 periods each)")
    left.set_ylabel("wall time (s)")
    left.set_title("Time vs panel size")
    left.legend(loc="upper left", fontsize="small")
    right.plot(runs, peaks, marker="o", label="peak traced memory")
    right.plot(runs, panel, marker="s", linestyle="--", label="the panel itself")
    right.plot(runs, [3 * v for v in panel], linestyle=":", color="red", label="3× the panel (target)")
    right.set_xlabel("runs in the panel (2,520 periods each)")
    right.set_ylabel("MiB")
    right.set_title("Memory vs panel size")
    right.legend(loc="upper left", fontsize="small")
    figure.suptitle("Metrics engine (compute_panel_arrays, full set)")
    return _save(figure, path)


def backfill_plot(points: Sequence[dict[str, Any]], path: Path) -> Path:
    by_instance: dict[str, list[dict[str, Any]]] = {}
    for point in points:
        by_instance.setdefault(point.get("instance", "postgres"), []).append(point)
    figure = Figure(figsize=(10, 4), layout="constrained")
    left, right = figure.subplots(1, 2)
    for instance, series in sorted(by_instance.items()):
        series = sorted(series, key=lambda p: p["runs"])
        runs = [p["runs"] for p in series]
        walls = [p["backfill_s"] for p in series]
        left.plot(runs, walls, marker="o", label=f"backfill wall ({instance} instance)")
        computes = [p.get("step_seconds_total") for p in series]
        if all(c is not None for c in computes):
            left.plot(runs, computes, marker="s", linestyle="--", label=f"sum of step times ({instance})")
        _linear_guide(left, runs, walls, f"linear ({instance})")
        right.plot(runs, [p["peak_rss_bytes"] / MIB for p in series], marker="o",
                   label=f"peak RSS of the run process ({instance})")
    left.axhline(60, color="red", linestyle=":", label="target at 10,000 runs (60 s)")
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("run partitions in the backfill (one Dagster run)")
    left.set_ylabel("wall time (s)")
    left.set_title("Time vs partitions")
    left.legend(loc="upper left", fontsize="small")
    right.set_xscale("log")
    right.set_xlabel("run partitions in the backfill (one Dagster run)")
    right.set_ylabel("MiB")
    right.set_title("Memory vs partitions")
    right.legend(loc="upper left", fontsize="small")
    figure.suptitle("Re-validating historical runs as one single-run backfill")
    return _save(figure, path)


def write_all(scaling: dict[str, Any], folder: Path) -> list[Path]:
    written = []
    if scaling.get("panel"):
        written.append(panel_plot(scaling["panel"], folder / PANEL_PNG))
    if scaling.get("backfill"):
        written.append(backfill_plot(scaling["backfill"], folder / BACKFILL_PNG))
    return written
