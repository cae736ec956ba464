"""``make demo``: generate the sample landing zone and materialise the whole graph on it.

Runs on the dev instance (the root ``dagster.yaml``: SQLite under ``.dagster_home/``) with the
dev resources (``data/landing``, ``data/warehouse``). The runs are taken in exactly as the sensor
takes them in, then validated as one single-run backfill over every run partition; the summary
is read back from the DuckDB catalog, as an analyst would.
"""

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

import dagster as dg

from qmtl_validation.settings import REPO_ROOT, load_settings


def dev_instance() -> dg.DagsterInstance:
    """The instance ``dagster dev`` uses from the repository root (its ``dagster.yaml``)."""
    os.chdir(REPO_ROOT)
    return dg.DagsterInstance.from_config(str(REPO_ROOT))


def _step(message: str) -> None:
    print(f"==> {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qmtl_validation.demo", description=__doc__)
    parser.add_argument("--seed", type=int, default=7, help="sample generator seed (default 7)")
    parser.add_argument("--keep", action="store_true", help="keep an existing landing zone instead of regenerating it")
    args = parser.parse_args(argv)

    from qmtl_validation.defs.pipeline import materialize_runs, register_run_partitions
    from qmtl_validation.sample_data import generate_sample
    from qmtl_validation.warehouse.catalog import connect_catalog, ensure_catalog
    from qmtl_validation.warehouse.lake import Lake

    settings = load_settings()
    today = dt.datetime.now(dt.timezone.utc).date()
    started = time.perf_counter()
    if not args.keep or not Path(settings.landing_root, "runs").exists():
        _step(f"generating the sample landing zone in {settings.landing_root} (seed {args.seed})")
        summary = generate_sample(settings.landing_root, seed=args.seed, today=today)
        print(f"    {summary}")

    instance = dev_instance()
    lake = Lake.from_settings(settings)
    _step("taking in run bundles (same code path as run_bundle_sensor)")
    keys, intake = register_run_partitions(instance, settings, today=today)
    print(f"    {intake.summary()}")
    _step(f"validating {len(keys)} runs as one single-run backfill on the dev instance")
    result = materialize_runs(instance, keys, tags={"qmtl/reason": "demo"})
    print(f"    run {result.run_id}: {'success' if result.success else 'FAILED'}")
    if not result.success:
        return 1

    status = ensure_catalog(settings.catalog_path, lake)
    connection = connect_catalog(settings.catalog_path)
    rows = connection.execute(
        "SELECT world_id, strategy_id, stage, status, recommended_stage FROM evaluation_runs "
        "ORDER BY world_id, strategy_id, run_id"
    ).fetchall()
    counts = connection.execute(
        "SELECT status, count(*) FROM evaluation_runs GROUP BY 1 ORDER BY 1"
    ).fetchall()
    report = connection.execute(
        "SELECT html_path FROM validation_reports ORDER BY world_id, strategy_id, run_id LIMIT 1"
    ).fetchone()
    connection.close()

    _step("evaluation runs")
    header = ("world", "strategy", "stage", "status", "recommended stage")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for line in [header, *rows]:
        print("    " + "  ".join(str(v).ljust(w) for v, w in zip(line, widths)))
    print("    " + ", ".join(f"{status}: {n}" for status, n in counts))
    print()
    print(f"DuckDB catalog: {status.path}")
    print(f"  try: .venv/bin/qmtl-validation sql \"select status, count(*) from evaluation_runs group by 1\"")
    if report:
        print(f"A report:       {report[0]}")
    print(f"Done in {time.perf_counter() - started:.1f} s. `make dev` opens the lineage UI.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
