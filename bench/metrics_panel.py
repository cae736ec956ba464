"""Speed and memory of the metrics engine on large fixed-seed panels (SPEC §5, §11).

Run with ``.venv/bin/python -m bench.metrics_panel`` (or ``python -m bench``). Prints, for each
case, the median / min / max wall time of several repeats (and the median CPU time of this
process, which is what to read on a shared machine), checks them against the targets, measures
peak memory with ``tracemalloc`` and writes everything to ``bench/results.json``.

Panels: 2,520 daily periods (ten years); Student-t(4) returns (fat tails, as real strategies);
one run in five starts later (leading NaN padding, a ragged panel). The engine's input is what the
Dagster assets pass: a DataFrame with one column per run.

Targets: full metric set on 2,000 runs < 1 s (as ``EvaluationMetrics`` objects), on 10,000 runs
≤ 2 s (columnar), v1 core only on 10,000 runs ≤ 0.5 s, peak memory ≤ 3× the panel's bytes; one
run (what a sensor-triggered materialisation computes) well under 0.1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from qmtl_validation.core.metrics import (
    compute_metrics,
    compute_metrics_panel,
    compute_panel_arrays,
)

PERIODS = 2520
SEED = 20240601
RESULTS_PATH = Path(__file__).with_name("results.json")


def make_panel(n_runs: int, n_periods: int = PERIODS, seed: int = SEED) -> pd.DataFrame:
    """Fixed-seed ragged panel: rows = periods, columns = runs ``run-00000``..."""
    rng = np.random.default_rng(seed)
    by_run = rng.standard_t(4, size=(n_runs, n_periods)) * 0.007 + 0.0003
    np.clip(by_run, -0.5, 0.5, out=by_run)  # a t(4) draw can exceed a 100 % loss
    late = rng.random(n_runs) < 0.2
    starts = np.where(late, rng.integers(1, n_periods // 2, size=n_runs), 0)
    by_run[np.arange(n_periods) < starts[:, None]] = np.nan
    columns = [f"run-{i:05d}" for i in range(n_runs)]
    return pd.DataFrame(by_run.T, columns=columns)  # a view: the frame's block is runs × periods


def time_case(function: Callable[[], Any], repeats: int) -> dict[str, float]:
    function()  # warm up (imports, first-touch of buffers)
    walls, cpus = [], []
    for _ in range(repeats):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        function()
        walls.append(time.perf_counter() - wall0)
        cpus.append(time.process_time() - cpu0)
    return {
        "median_s": statistics.median(walls),
        "min_s": min(walls),
        "max_s": max(walls),
        "cpu_median_s": statistics.median(cpus),
        "repeats": repeats,
    }


def peak_memory(function: Callable[[], Any]) -> int:
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.metrics_panel", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per case (default 5)")
    parser.add_argument(
        "--threads", type=int, default=None, help="worker threads (default: engine's choice)"
    )
    args = parser.parse_args(argv)

    load = os.getloadavg()
    loads = " ".join(f"{value:.2f}" for value in load)
    print(f"metrics engine benchmark: {os.cpu_count()} CPUs, load average {loads}")
    print(f"numpy {np.__version__}, pandas {pd.__version__}, python {sys.version.split()[0]}")
    panel_2k = make_panel(2_000)
    panel_10k = make_panel(10_000)
    threads = args.threads

    one_run = panel_2k.iloc[:, 0]
    cases = [
        (
            "one run, 2,520 periods (compute_metrics)",
            0.1,
            lambda: compute_metrics(one_run),
        ),
        (
            "full set, 2,000 x 2,520, EvaluationMetrics objects",
            1.0,
            lambda: compute_metrics_panel(panel_2k, n_threads=threads),
        ),
        (
            "full set, 2,000 x 2,520, columnar",
            1.0,
            lambda: compute_panel_arrays(panel_2k, n_threads=threads),
        ),
        (
            "full set, 10,000 x 2,520, columnar",
            2.0,
            lambda: compute_panel_arrays(panel_10k, n_threads=threads),
        ),
        (
            "v1 core only, 10,000 x 2,520, columnar",
            0.5,
            lambda: compute_panel_arrays(panel_10k, metric_set="core", n_threads=threads),
        ),
    ]
    results: dict[str, Any] = {"cpus": os.cpu_count(), "load_average": load, "cases": {}}
    ok = True
    print(f"\n{'case':<52} {'median':>8} {'min':>8} {'max':>8} {'cpu':>8}  target")
    for name, target, function in cases:
        timing = time_case(function, args.repeats)
        timing["target_s"] = target
        timing["meets_target"] = timing["median_s"] <= target
        ok &= timing["meets_target"]
        results["cases"][name] = timing
        flag = "ok" if timing["meets_target"] else "MISSED"
        print(
            f"{name:<52} {timing['median_s']:8.3f} {timing['min_s']:8.3f} {timing['max_s']:8.3f} "
            f"{timing['cpu_median_s']:8.3f}  <= {target:.1f} s {flag}"
        )

    panel_bytes = panel_10k.to_numpy(copy=False).nbytes
    peak = peak_memory(lambda: compute_panel_arrays(panel_10k, n_threads=threads))
    ratio = peak / panel_bytes
    ok &= ratio <= 3.0
    results["memory"] = {"panel_bytes": panel_bytes, "peak_traced_bytes": peak, "ratio": ratio}
    print(
        f"\npeak traced memory, full set 10,000 x 2,520: {peak / 2**20:.1f} MiB "
        f"= {ratio:.2f} x the panel's {panel_bytes / 2**20:.1f} MiB (target <= 3x) "
        f"{'ok' if ratio <= 3.0 else 'MISSED'}"
    )
    RESULTS_PATH.write_text(json.dumps(results, indent=2))
    print(f"results written to {RESULTS_PATH}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
