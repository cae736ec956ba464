"""``python -m bench [--quick] [--only NAME ...]``: run the benchmarks, print the target table,
write ``bench/results.json`` and the scaling plots in ``docs/``.

Names for ``--only`` (a row runs when any given name is a prefix of its key):
``full_metric_set``, ``core_metrics``, ``vs_quantstats``, ``vs_empyrical``, ``panel_scaling``,
``rules``, ``backfill``, ``backfill_scaling``, ``sensor_overhead``, ``drop_to_catalog``.

``--quick`` shrinks every size (a few seconds per row, for the smoke test and a first look) and
writes ``bench/results-quick.json`` unless ``--results`` says otherwise. Rows not run keep their
previous entry in the results file, so ``--only`` refreshes part of it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bench.common import (
    DOCS_DIR,
    PERFORMANCE_DOC,
    QUICK_RESULTS_PATH,
    RESULTS_PATH,
    Row,
    load_results,
    machine,
    write_results,
)

NAMES = (
    "full_metric_set",
    "core_metrics",
    "vs_quantstats",
    "vs_empyrical",
    "panel_scaling",
    "rules",
    "backfill",
    "backfill_scaling",
    "sensor_overhead",
    "drop_to_catalog",
)


KEPT_KEYS = ("rows", "scaling", "section_seconds", "errors")


@dataclass
class Config:
    """Sizes of every benchmark. ``full()`` is the target table's; ``quick()`` a tiny version."""

    quick: bool
    only: tuple[str, ...] = ()
    periods: int = 2520
    panel_runs: int = 10_000
    repeats: int = 5
    reference_repeats: int = 3
    quantstats_columns: int = 1_000
    threads: int | None = None
    panel_scaling_sizes: list[int] = field(default_factory=lambda: [1_000, 5_000, 10_000, 20_000])
    scaling_repeats: int = 3
    rule_runs: int = 500
    rule_evaluations: int = 10_000
    backfill_runs: int = 10_000
    backfill_scaling_sizes: list[int] = field(default_factory=lambda: [100, 1_000, 10_000])
    backfill_sqlite_sizes: list[int] = field(default_factory=lambda: [100, 1_000])
    backfill_repeats: int = 1
    profile_runs: int = 1_000
    backfill_instance: str = "postgres"
    sensor_samples: int = 5
    drops: int = 50
    drop_interval_s: float = 6.0
    sensor_interval_s: int = 5
    cache_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "qmtl_bench_cache")
    profile: bool = True

    @classmethod
    def full(cls, **overrides: Any) -> "Config":
        return cls(quick=False, **overrides)

    @classmethod
    def tiny(cls, **overrides: Any) -> "Config":
        values: dict[str, Any] = dict(
            quick=True,
            periods=252,
            panel_runs=400,
            repeats=2,
            reference_repeats=1,
            quantstats_columns=10,
            panel_scaling_sizes=[100, 200, 400],
            scaling_repeats=1,
            rule_runs=20,
            rule_evaluations=300,
            backfill_runs=12,
            backfill_scaling_sizes=[12, 20],  # the sample generator needs a dozen runs or more
            backfill_sqlite_sizes=[12],
            backfill_repeats=1,
            profile_runs=12,
            sensor_samples=1,
            drops=3,
            drop_interval_s=1.0,
            sensor_interval_s=1,
            profile=False,
        )
        values.update(overrides)
        return cls(**values)

    def wants(self, *names: str) -> bool:
        if not self.only:
            return True
        return any(name.startswith(prefix) for name in names for prefix in self.only)


# ---------------------------------------------------------------------------------------------
# output


def _format_value(row: dict[str, Any], value: float | None) -> str:
    if value is None:
        return "—"
    if row["unit"] == "×":
        return f"{value:,.1f}×"
    if value == float("inf"):
        return "∞"
    if value < 0.01:
        return f"{value * 1000:.3f} ms"
    return f"{value:,.3f} s"


def format_table(rows: dict[str, dict[str, Any]]) -> str:
    """The target table as text: row, target, median, min, max, ratio/value, verdict."""
    header = f"{'row':<46} {'target':<38} {'median':>11} {'min':>11} {'max':>11} {'value':>11}  met"
    lines = [header, "-" * len(header)]
    for key, row in rows.items():
        timing = row.get("timing") or {}
        scale_row = {**row, "unit": "s"}
        median = _format_value(scale_row, timing.get("median"))
        low = _format_value(scale_row, timing.get("min"))
        high = _format_value(scale_row, timing.get("max"))
        verdict = {True: "yes", False: "NO", None: "—"}[row.get("met")]
        if row.get("error"):
            verdict = "ERROR"
        lines.append(
            f"{key:<46} {row['target']:<38} {median:>11} {low:>11} {high:>11} "
            f"{_format_value(row, row.get('value')):>11}  {verdict}"
        )
        details = row.get("details") or {}
        reference = details.get("reference_timing")
        if reference:
            lines.append(
                f"{'  ' + details.get('reference', 'reference') + ' (same run)':<46} {'':<38} "
                f"{_format_value(scale_row, reference['median']):>11} "
                f"{_format_value(scale_row, reference['min']):>11} "
                f"{_format_value(scale_row, reference['max']):>11}"
            )
        if "memory_ratio" in details:
            memory_verdict = "yes" if details["memory_met"] else "NO"
            if row.get("target_applies") is False:
                memory_verdict = "—"
            lines.append(f"{'  peak memory / panel bytes':<46} {details['memory_target']:<38} "
                         f"{'':>11} {'':>11} {'':>11} {details['memory_ratio']:>10.2f}×  "
                         f"{memory_verdict}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test, first look)")
    parser.add_argument("--only", nargs="+", default=(), metavar="NAME",
                        help=f"rows to run (prefixes of: {', '.join(NAMES)})")
    parser.add_argument("--results", type=Path, default=None,
                        help="results file (default bench/results.json, or results-quick.json)")
    parser.add_argument("--plots-dir", type=Path, default=None,
                        help="where the scaling PNGs go (default docs/, or none in --quick)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="where generated landing zones are kept between runs")
    parser.add_argument("--threads", type=int, default=None,
                        help="engine worker threads (default: the engine's choice)")
    parser.add_argument("--backfill-instance", choices=("postgres", "sqlite"), default=None,
                        help="Dagster instance storage for the backfill rows (default postgres)")
    parser.add_argument("--no-profile", action="store_true",
                        help="skip the profiled re-run of the largest backfill")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    unknown = [name for name in args.only if not any(n.startswith(name) for n in NAMES)]
    if unknown:
        print(f"unknown row name(s): {', '.join(unknown)}; expected prefixes of {', '.join(NAMES)}",
              file=sys.stderr)
        return 2
    overrides: dict[str, Any] = {"only": tuple(args.only), "threads": args.threads}
    if args.cache_dir is not None:
        overrides["cache_dir"] = args.cache_dir
    if args.backfill_instance is not None:
        overrides["backfill_instance"] = args.backfill_instance
    if args.no_profile:
        overrides["profile"] = False
    config = Config.tiny(**overrides) if args.quick else Config.full(**overrides)
    results_path = args.results or (QUICK_RESULTS_PATH if args.quick else RESULTS_PATH)
    plots_dir = args.plots_dir if args.plots_dir is not None else (None if args.quick else DOCS_DIR)
    config.cache_dir.mkdir(parents=True, exist_ok=True)

    previous = load_results(results_path)
    # rows not run this time keep their last measurement; anything else is rewritten
    results: dict[str, Any] = {key: previous[key] for key in KEPT_KEYS if isinstance(previous.get(key), dict)}
    results.setdefault("rows", {})
    results.setdefault("scaling", {})
    results["machine"] = machine()
    results["mode"] = "quick" if args.quick else "full"
    results["started_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    print(f"qmtl_validation benchmarks ({results['mode']}) on {results['machine']['cpus']} CPUs "
          f"({results['machine']['cpu_model']}), load {os.getloadavg()[0]:.2f}; "
          f"OpenBLAS kernel {results['machine']['blas'].get('core')}")
    failures = 0

    def section(name: str, body: Callable[[], Any]) -> None:
        nonlocal failures
        print(f"\n== {name}")
        started = time.perf_counter()
        try:
            produced = body()
        except Exception as error:  # noqa: BLE001 - one broken row must not lose the others
            failures += 1
            traceback.print_exc()
            results.setdefault("errors", {})[name] = f"{type(error).__name__}: {error}"
            return
        results.setdefault("errors", {}).pop(name, None)
        rows, scaling = produced if isinstance(produced, tuple) else (produced, {})
        for row in rows:
            row.target_applies = not config.quick
            results["rows"][row.key] = row.to_json()
        results["scaling"].update(scaling)
        results.setdefault("section_seconds", {})[name] = time.perf_counter() - started
        write_results(results_path, results)

    from bench import backfill, metrics_panel, rules, sensors

    if config.wants("full_metric_set", "core_metrics", "vs_quantstats", "vs_empyrical", "panel_scaling"):
        section("metrics engine", lambda: metrics_panel.run(config))
    if config.wants("rules"):
        section("rules", lambda: rules.run(config))
    if config.wants("backfill", "backfill_scaling"):
        section("backfill", lambda: backfill.run(config))
    if config.wants("sensor_overhead"):
        section("sensor overhead", lambda: sensors.run_overhead(config))
    if config.wants("drop_to_catalog"):
        section("drop to catalog", lambda: sensors.run_drop_to_catalog(config))

    results["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    if plots_dir is not None and results["scaling"]:
        from bench import plots

        results["plots"] = [str(p.relative_to(plots_dir.parent)) if plots_dir.parent in p.parents
                            else str(p) for p in plots.write_all(results["scaling"], plots_dir)]
    write_results(results_path, results)
    if not args.quick and results_path == RESULTS_PATH:
        from bench import report

        report.update_document(PERFORMANCE_DOC, results, _ordered_rows(results["rows"]))
    print("\n" + format_table(_ordered_rows(results["rows"])))
    print(f"\nresults written to {results_path}")
    missed = [key for key, row in results["rows"].items() if row.get("met") is False]
    if missed:
        print(f"targets missed: {', '.join(missed)}")
    return 1 if failures else 0


def _ordered_rows(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    def rank(key: str) -> tuple[int, str]:
        for position, name in enumerate(NAMES):
            if key.startswith(name):
                return position, key
        return len(NAMES), key

    return {key: rows[key] for key in sorted(rows, key=rank)}
