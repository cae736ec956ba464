"""Measurement tools shared by every benchmark: repeated timings, memory, the machine, results.

A timing is a list of wall-clock samples (``time.perf_counter``) summarised as median / min / max;
the median is what targets are checked against. A ratio against a reference library is measured
*paired*: ours and theirs alternate in the same process, and the ratio is taken per pair, so a
burst of load from another process slows both sides of a pair instead of only one of them.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import glob
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_PATH = BENCH_DIR / "results.json"
QUICK_RESULTS_PATH = BENCH_DIR / "results-quick.json"
DOCS_DIR = REPO_ROOT / "docs"
PERFORMANCE_DOC = DOCS_DIR / "PERFORMANCE.md"
# The variables some machines set to pin OpenBLAS to a kernel; ``python -m bench`` drops them for
# its own process tree (see ``bench.__main__``) and records the values it found here.
BLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
ORIGINAL_BLAS_ENV = "QMTL_BENCH_ORIGINAL_BLAS_ENV"


def summarise(samples: Sequence[float]) -> dict[str, Any]:
    """median / min / max of ``samples`` (seconds) and the samples themselves."""
    values = [float(s) for s in samples]
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "repeats": len(values),
        "samples": values,
    }


def time_repeats(function: Callable[[], Any], repeats: int, *, warmup: int = 1) -> dict[str, Any]:
    """Wall time of ``function`` over ``repeats`` calls after ``warmup`` untimed ones; adds the
    median CPU time of this process (higher than wall when worker threads run in parallel)."""
    for _ in range(warmup):
        function()
    walls, cpus = [], []
    for _ in range(repeats):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        function()
        walls.append(time.perf_counter() - wall0)
        cpus.append(time.process_time() - cpu0)
    out = summarise(walls)
    out["cpu_median"] = statistics.median(cpus)
    return out


def paired_ratio(
    ours: Callable[[], Any], theirs: Callable[[], Any], repeats: int, *, warmup: int = 1
) -> dict[str, Any]:
    """Alternate ``ours`` and ``theirs`` ``repeats`` times; ratio = their time / our time per pair.

    Returns ``{"ours": timing, "theirs": timing, "ratio": summary of the per-pair ratios,
    "ratio_of_medians": ...}``.
    """
    for _ in range(warmup):
        ours()
        theirs()
    ours_s, theirs_s, ours_cpu, theirs_cpu = [], [], [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        ours()
        middle, middle_cpu = time.perf_counter(), time.process_time()
        theirs()
        end, end_cpu = time.perf_counter(), time.process_time()
        ours_s.append(middle - start)
        theirs_s.append(end - middle)
        ours_cpu.append(middle_cpu - start_cpu)
        theirs_cpu.append(end_cpu - middle_cpu)
    ratios = [t / o for o, t in zip(ours_s, theirs_s)]
    ours_summary, theirs_summary = summarise(ours_s), summarise(theirs_s)
    ours_summary["cpu_median"] = statistics.median(ours_cpu)
    theirs_summary["cpu_median"] = statistics.median(theirs_cpu)
    return {
        "ours": ours_summary,
        "theirs": theirs_summary,
        "ratio": summarise(ratios),
        "ratio_of_medians": theirs_summary["median"] / ours_summary["median"],
        # CPU seconds of this process, all threads: what each side costs, whatever the load
        "cpu_ratio": statistics.median(t / o if o else float("inf") for o, t in zip(ours_cpu, theirs_cpu)),
    }


def peak_traced_bytes(function: Callable[[], Any]) -> int:
    """Peak bytes allocated through Python's allocators (numpy's buffers included) during one
    call of ``function``, above what was allocated before it."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        function()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), without importing numpy here."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    position = (len(ordered) - 1) * q / 100.0
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports kilobytes)."""
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


# ---------------------------------------------------------------------------------------------
# the machine


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _memory_bytes() -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return None


def blas_kernel() -> dict[str, Any]:
    """Which OpenBLAS kernel numpy runs with: threadpoolctl when installed, else the bundled
    library's own ``get_corename``."""
    import numpy as np

    info: dict[str, Any] = {"numpy_blas": None, "core": None, "threads": None, "source": None}
    with contextlib.suppress(Exception):
        config = np.show_config(mode="dicts")
        info["numpy_blas"] = config["Build Dependencies"]["blas"].get("name")
    try:
        from threadpoolctl import threadpool_info  # optional

        for pool in threadpool_info():
            if pool.get("internal_api") == "openblas":
                info.update(core=pool.get("architecture"), threads=pool.get("num_threads"),
                            source="threadpoolctl")
                return info
    except ImportError:
        pass
    libraries = glob.glob(str(Path(np.__file__).parent.parent / "numpy.libs" / "*openblas*"))
    for path in libraries:
        with contextlib.suppress(OSError, AttributeError):
            library = ctypes.CDLL(path)
            for prefix in ("scipy_openblas_", "openblas_"):
                for suffix in ("64_", ""):
                    name = f"{prefix}get_corename{suffix}"
                    if hasattr(library, name):
                        corename = getattr(library, name)
                        corename.restype = ctypes.c_char_p
                        threads = getattr(library, f"{prefix}get_num_threads{suffix}", None)
                        info.update(core=corename().decode(), source=f"{Path(path).name}:{name}")
                        if threads is not None:
                            threads.restype = ctypes.c_int
                            info["threads"] = threads()
                        return info
    return info


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import numpy as np
    import pandas as pd

    versions: dict[str, str | None] = {
        "python": sys.version.split()[0], "numpy": np.__version__, "pandas": pd.__version__,
    }
    for module in ("scipy", "pyarrow", "duckdb", "pandera", "dagster", "empyrical", "quantstats"):
        try:
            versions[module] = __import__(module).__version__
        except Exception:  # noqa: BLE001 - an absent optional library is just not recorded
            versions[module] = None
    original = json.loads(os.environ.get(ORIGINAL_BLAS_ENV, "{}"))
    return {
        "cpu_model": _cpu_model(),
        "cpus": os.cpu_count(),
        "memory_bytes": _memory_bytes(),
        "platform": platform.platform(),
        "load_average_at_start": list(os.getloadavg()),
        "versions": versions,
        "blas": blas_kernel(),
        "blas_environment": {
            "found": original or {name: os.environ.get(name) for name in BLAS_VARIABLES},
            "unset_for_bench": bool(original),
            "effective": {name: os.environ.get(name) for name in BLAS_VARIABLES},
        },
    }


# ---------------------------------------------------------------------------------------------
# rows and results


@dataclass
class Row:
    """One row of the target table: what is measured, the target, and what was measured.

    ``value`` is the number checked against ``target`` with ``comparison`` (``"<="`` for times,
    ``">="`` for speed-up ratios); ``timing`` is the median/min/max summary it comes from.
    """

    key: str
    what: str
    target_text: str
    target: float
    comparison: str
    unit: str
    value: float | None = None
    timing: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    # a second condition of the same target (the full set's memory bound), None when there is none
    also_met: bool | None = None
    # False in --quick mode: tiny sizes say nothing about targets set for the full sizes
    target_applies: bool = True

    @property
    def met(self) -> bool | None:
        if self.value is None or not self.target_applies:
            return None
        ok = self.value <= self.target if self.comparison == "<=" else self.value >= self.target
        return ok and self.also_met is not False

    def to_json(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "target": self.target_text,
            "target_value": self.target,
            "comparison": self.comparison,
            "unit": self.unit,
            "value": self.value,
            "met": self.met,
            "target_applies": self.target_applies,
            "timing": self.timing,
            "details": self.details,
            "error": self.error,
            "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }


def load_results(path: Path) -> dict[str, Any]:
    if path.exists():
        with contextlib.suppress(ValueError):
            return json.loads(path.read_text(encoding="utf-8"))
    return {}


def write_results(path: Path, results: Mapping[str, Any]) -> None:
    """Write atomically (temp file + rename), so an interrupted bench never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(results, indent=2, sort_keys=False, default=_json_default) + "\n",
                    encoding="utf-8")
    os.replace(temp, path)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


@contextlib.contextmanager
def stage(label: str, log: Callable[[str], None] = print) -> Iterator[None]:
    """Print ``label`` and how long the block took (progress for long benchmarks)."""
    log(f"  {label} ...")
    start = time.perf_counter()
    try:
        yield
    finally:
        log(f"  {label}: {time.perf_counter() - start:.1f} s")
