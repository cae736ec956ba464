"""Re-validating historical runs as one single-run backfill through Dagster.

Each size runs in its own worker process (``python -m bench.backfill --worker ...``), so its peak
memory is its own and nothing leaks between sizes. A worker:

1. takes a cached fixed-seed landing zone of N run bundles (``bench.data.landing_zone``);
2. points a temporary deployment at it (lake, catalog and reports in a temp folder; a fresh
   PostgreSQL database with ``deploy/dagster.yaml``, or the SQLite development instance);
3. takes every bundle in with ``register_run_partitions`` (the run-bundle sensor's intake: new
   ``evaluation_runs`` partitions and landing-registry rows) — timed, not part of the row;
4. loads the code location the way the daemon does (a code server) and submits an asset backfill
   of every ``runs`` asset over all N partitions; the backfill daemon's own iteration turns it into
   ONE run (``BackfillPolicy.single_run()``), executed in this process. The first backfill is the
   initial validation; the next ones re-validate the same runs (a new history revision each),
   which is what a policy change does. The row is the wall time from submission to the
   backfill's completion, median over the re-validations;
5. checks the outcome (one run, success, N rows in the DuckDB catalog's ``evaluation_runs`` view)
   and records per-step times from the run's event log and the peak RSS.

With ``--profile`` the worker runs one more re-validation under cProfile and writes a text
summary of where the time goes to ``bench/profiles/`` (the raw pstats file stays in the cache
folder). The worker's own output (Dagster logs every event at DEBUG) goes to a log file there too.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import json
import pstats
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import BENCH_DIR, Row, peak_rss_bytes, summarise

PROFILES_DIR = BENCH_DIR / "profiles"
WORKER_TIMEOUT_S = 4 * 3600


# ---------------------------------------------------------------------------------------------
# the worker


def _backfill_once(context: Any, instance: Any, keys: list[str], asset_names: list[str]) -> dict[str, Any]:
    from dagster import DagsterRunStatus

    from qmtl_validation_tests.dagster_harness import launch_asset_backfill, run_backfill_daemon

    backfill_id = f"bench{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    launch_asset_backfill(context, instance, keys, asset_names, backfill_id=backfill_id)
    runs = run_backfill_daemon(context, instance, backfill_id, max_iterations=20)
    wall = time.perf_counter() - started
    if len(runs) != 1:
        raise RuntimeError(f"backfill {backfill_id} made {len(runs)} runs, expected one")
    run = runs[0]
    if run.status != DagsterRunStatus.SUCCESS:
        raise RuntimeError(f"backfill run {run.run_id} ended {run.status.value}")
    stats = instance.get_run_stats(run.run_id)
    steps = {
        step.step_key: (step.end_time or 0.0) - (step.start_time or 0.0)
        for step in instance.get_run_step_stats(run.run_id)
    }
    run_wall = (stats.end_time or 0.0) - (stats.start_time or 0.0)
    return {
        "backfill_id": backfill_id,
        "run_id": run.run_id,
        "backfill_s": wall,
        "run_s": run_wall,
        "steps_s": steps,
        "step_seconds_total": sum(steps.values()),
    }


def _profile_summary(profile: cProfile.Profile, limit: int = 45) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("cumulative").print_stats(r"qmtl_validation|dagster/_core/(storage|instance)", limit)
    stats.sort_stats("tottime").print_stats(limit)
    return out.getvalue()


def worker(args: argparse.Namespace) -> dict[str, Any]:
    from bench.data import landing_zone
    from bench.instances import dagster_instance, data_environment, environment
    from qmtl_validation.defs.pipeline import make_contiguous, register_run_partitions, runs_asset_keys
    from qmtl_validation.settings import load_settings
    from qmtl_validation.warehouse.catalog import connect_catalog, ensure_catalog
    from qmtl_validation.warehouse.lake import Lake
    from qmtl_validation_tests.dagster_harness import daemon_workspace

    landing, facts = landing_zone(Path(args.cache_dir), args.runs)
    today = dt.date.fromisoformat(facts["today"])
    result: dict[str, Any] = {"runs": args.runs, "landing": {k: v for k, v in facts.items()}}
    with tempfile.TemporaryDirectory(prefix="qmtl-bench-backfill-") as temp:
        root = Path(temp)
        with environment(data_environment(root, landing)):
            with dagster_instance(args.instance, root / "home", batch_events=not args.no_batching) as (instance, instance_facts):
                result.update(instance_facts)
                settings = load_settings()
                started = time.perf_counter()
                keys, intake = register_run_partitions(instance, settings, today=today, lookback_days=30)
                result["intake_s"] = time.perf_counter() - started
                if len(intake.registered) != args.runs or intake.rejections:
                    raise RuntimeError(
                        f"intake registered {len(intake.registered)} of {args.runs} bundles "
                        f"({len(intake.rejections)} rejected): {intake.rejections[:2]}"
                    )
                with daemon_workspace(instance) as context:
                    names = [key.path[-1] for key in runs_asset_keys(context.create_request_context().asset_graph)]
                    ordered = make_contiguous(instance, keys)
                    passes = [_backfill_once(context, instance, ordered, names)]
                    for _ in range(args.repeats):
                        passes.append(_backfill_once(context, instance, ordered, names))
                    if args.profile:
                        profile = cProfile.Profile()
                        profile.enable()
                        profiled = _backfill_once(context, instance, ordered, names)
                        profile.disable()
                        PROFILES_DIR.mkdir(parents=True, exist_ok=True)
                        stem = f"backfill_{args.runs}_{args.instance}"
                        raw = Path(args.cache_dir) / f"{stem}.prof"
                        profile.dump_stats(raw)
                        (PROFILES_DIR / f"{stem}.txt").write_text(_profile_summary(profile), encoding="utf-8")
                        result["profile"] = {
                            "summary": f"bench/profiles/{stem}.txt",
                            "pstats": str(raw),
                            "profiled_backfill_s": profiled["backfill_s"],
                        }
                lake = Lake.from_settings(settings)
                ensure_catalog(settings.catalog_path, lake)
                with connect_catalog(settings.catalog_path) as connection:
                    rows = connection.execute("SELECT count(*) FROM evaluation_runs").fetchone()[0]
                    revisions = connection.execute(
                        "SELECT max(revision) FROM evaluation_run_history"
                    ).fetchone()[0]
                if rows != args.runs:
                    raise RuntimeError(f"catalog shows {rows} evaluation runs, expected {args.runs}")
                result.update(
                    initial=passes[0],
                    revalidations=passes[1:],
                    catalog_rows=int(rows),
                    latest_revision=int(revisions),
                    lake_files=sum(1 for p in Path(settings.lake_root).rglob("*.parquet")),
                    report_files=sum(1 for p in Path(settings.report_root).rglob("*") if p.is_file()),
                )
    result["peak_rss_bytes"] = peak_rss_bytes()
    return result


# ---------------------------------------------------------------------------------------------
# the parent: one worker per size


def measure(config: Any, runs: int, *, instance: str, repeats: int, profile: bool = False,
            batching: bool = True) -> dict[str, Any]:
    out = Path(tempfile.mkstemp(prefix="qmtl-bench-backfill-", suffix=".json")[1])
    command = [
        sys.executable, "-m", "bench.backfill", "--worker", "--runs", str(runs),
        "--instance", instance, "--repeats", str(repeats), "--cache-dir", str(config.cache_dir),
        "--out", str(out),
    ]
    if profile:
        command.append("--profile")
    if not batching:
        command.append("--no-batching")
    print(f"  backfill of {runs:,} runs on {instance} ({repeats} re-validation(s)"
          f"{', then profiled' if profile else ''}) ...", flush=True)
    started = time.perf_counter()
    log_path = Path(config.cache_dir) / f"backfill-{runs}-{instance}.log"
    with open(log_path, "wb") as log:  # Dagster logs every event of the run at DEBUG
        completed = subprocess.run(command, cwd=BENCH_DIR.parent, timeout=WORKER_TIMEOUT_S,
                                   stdout=log, stderr=subprocess.STDOUT)
    if completed.returncode != 0:
        raise RuntimeError(f"backfill worker for {runs} runs exited {completed.returncode}; see {log_path}")
    result = json.loads(out.read_text(encoding="utf-8"))
    out.unlink(missing_ok=True)
    walls = [p["backfill_s"] for p in result["revalidations"]] or [result["initial"]["backfill_s"]]
    print(f"  backfill of {runs:,} runs: median {sorted(walls)[len(walls) // 2]:.1f} s "
          f"(worker {time.perf_counter() - started:.0f} s, intake {result['intake_s']:.1f} s)")
    return result


def _point(result: dict[str, Any]) -> dict[str, Any]:
    walls = [p["backfill_s"] for p in result["revalidations"]] or [result["initial"]["backfill_s"]]
    steps = [p["step_seconds_total"] for p in result["revalidations"]] or [result["initial"]["step_seconds_total"]]
    timing = summarise(walls)
    return {
        "runs": result["runs"],
        "instance": result["instance"],
        "event_batching": result["event_batching"],
        "backfill_s": timing["median"],
        "timing": timing,
        "initial_validation_s": result["initial"]["backfill_s"],
        "step_seconds_total": sorted(steps)[len(steps) // 2],
        "intake_s": result["intake_s"],
        "peak_rss_bytes": result["peak_rss_bytes"],
    }


def run(config: Any) -> tuple[list[Row], dict[str, Any]]:
    rows: list[Row] = []
    results: dict[int, dict[str, Any]] = {}
    target_runs = config.backfill_runs
    if config.wants("backfill"):
        result = measure(config, target_runs, instance=config.backfill_instance,
                         repeats=config.backfill_repeats)
        results[target_runs] = result
        point = _point(result)
        revalidation = result["revalidations"][len(result["revalidations"]) // 2] if result["revalidations"] else result["initial"]
        rows.append(Row(
            key=f"backfill_{target_runs}_runs",
            what=(f"re-validating {target_runs:,} historical runs (metrics + rules + warehouse "
                  "write) as one single-run backfill through Dagster"),
            target_text="≤ 60 s wall", target=60.0, comparison="<=", unit="s",
            value=point["backfill_s"], timing=point["timing"],
            details={
                "instance": result["instance"],
                "event_batching": result["event_batching"],
                "initial_validation_s": result["initial"]["backfill_s"],
                "run_s": revalidation["run_s"],
                "steps_s": revalidation["steps_s"],
                "intake_s": result["intake_s"],
                "catalog_rows": result["catalog_rows"],
                "latest_revision": result["latest_revision"],
                "lake_files": result["lake_files"],
                "report_files": result["report_files"],
                "peak_rss_bytes": result["peak_rss_bytes"],
                "landing": result["landing"],
                "profile": result.get("profile"),
            },
        ))
    scaling: dict[str, Any] = {}
    if config.wants("backfill_scaling"):
        points = []
        for runs in config.backfill_scaling_sizes:
            result = results.get(runs) if config.backfill_instance == "postgres" else None
            if result is None:
                # the profile is taken at the profile size: the time grows linearly with the
                # runs, so its shares hold at 10,000 and it costs a tenth of the time
                result = measure(config, runs, instance="postgres", repeats=config.backfill_repeats,
                                 profile=config.profile and runs == config.profile_runs)
            results[runs] = result
            points.append(_point(result))
        for runs in config.backfill_sqlite_sizes:
            # the development instance writes every event one at a time: one pass is enough
            points.append(_point(measure(config, runs, instance="sqlite", repeats=0)))
        scaling["backfill"] = points
        profiled = next((r["profile"] for r in results.values() if r.get("profile")), None)
        for row in rows:
            row.details["profile"] = profiled
    return rows, scaling


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.backfill")
    parser.add_argument("--worker", action="store_true", required=True)
    parser.add_argument("--runs", type=int, required=True)
    parser.add_argument("--instance", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--repeats", type=int, default=1, help="re-validations after the first pass")
    parser.add_argument("--cache-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--no-batching", action="store_true")
    args = parser.parse_args(argv)
    import warnings

    warnings.filterwarnings("ignore")  # Dagster beta warnings on every definition load
    result = worker(args)
    Path(args.out).write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
