"""``make demo``: generate the sample landing zone and materialise the whole graph on it.

Runs on the dev instance (the root ``dagster.yaml``: SQLite under ``.dagster_home/``) with the
dev resources (``data/landing``, ``data/warehouse``). The runs are taken in exactly as the sensor
takes them in, then validated as one single-run backfill over every run partition; the summary
is read back from the DuckDB catalog, as an analyst would.
"""

import argparse
import datetime as dt
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import dagster as dg

from qmtl_validation.settings import REPO_ROOT, load_settings


def dev_instance() -> dg.DagsterInstance:
    """``$DAGSTER_HOME``'s instance when set, else the one ``dagster dev`` uses from the
    repository root (its ``dagster.yaml``: SQLite under ``.dagster_home/``)."""
    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    os.chdir(REPO_ROOT)
    return dg.DagsterInstance.from_config(str(REPO_ROOT))


def reset_dev_data(settings) -> None:
    """Remove the dev landing zone, lake, catalog and reports: a regenerated sample reuses run ids
    with new content, which the intake would rightly record as conflicts."""
    if settings.is_prod:
        raise SystemExit("the demo runs on the dev profile only (QMTL_PROFILE=dev)")
    for path in (settings.landing_root, settings.lake_root, settings.report_root):
        shutil.rmtree(path, ignore_errors=True)
    Path(settings.catalog_path).unlink(missing_ok=True)


def _step(message: str) -> None:
    print(f"==> {message}", flush=True)


def _risk_snapshots(instance: dg.DagsterInstance, settings: Any, today: dt.date) -> bool:
    """Take the sample risk snapshots in and through the risk hub as one run (after the runs)."""
    from qmtl_validation.defs.pipeline import materialize_snapshots, register_snapshot_partitions
    from qmtl_validation.sample_data import DEMO_SIGNING_KEYS, SIGNING_KEY_ENV

    # The sample signs alpha_core's snapshots with a demo-only key; a deployment exports the
    # real key under the variable the world's policy names.
    for world_id, variable in SIGNING_KEY_ENV.items():
        os.environ.setdefault(variable, DEMO_SIGNING_KEYS[world_id])
    _step("taking in risk snapshots (same code path as the risk snapshot sensor)")
    keys, intake = register_snapshot_partitions(instance, settings, today=today)
    print(f"    {intake.summary()}")
    for row in intake.rejections:
        print(f"    rejected {row['key']}: {row['reason']}")
    if not keys:
        return True
    _step(f"taking {len(keys)} risk snapshots through the risk hub as one run")
    result = materialize_snapshots(instance, keys, tags={"qmtl/reason": "demo"})
    print(f"    run {result.run_id}: {'success' if result.success else 'FAILED'}")
    return result.success


_LATEST_SNAPSHOTS_SQL = """
    SELECT world_id, version, as_of FROM risk_snapshots_latest WHERE NOT is_fallback
    QUALIFY row_number() OVER (PARTITION BY world_id ORDER BY as_of DESC, version DESC) = 1
"""


def _print_portfolio_risk(catalog_path: str) -> None:
    """Each world's portfolio VaR/ES at its latest snapshot and its candidates' incremental VaR,
    read back from the DuckDB catalog."""
    from qmtl_validation.warehouse.catalog import connect_catalog

    connection = connect_catalog(catalog_path)
    try:
        books = connection.execute(
            f"WITH latest AS ({_LATEST_SNAPSHOTS_SQL}) "
            "SELECT p.world_id, p.version, strftime(p.as_of AT TIME ZONE 'UTC', '%Y-%m-%d %H:%M'), "
            "p.volatility, p.var, p.es, p.historical_var, p.historical_es "
            "FROM portfolio_risk_latest p JOIN latest USING (world_id, version) "
            "WHERE p.scope = 'portfolio' ORDER BY p.world_id"
        ).fetchall()
        candidates = connection.execute(
            f"WITH latest AS ({_LATEST_SNAPSHOTS_SQL}) "
            "SELECT p.world_id, p.strategy_id, p.run_id, p.weight, p.incremental_var, p.incremental_es "
            "FROM portfolio_risk_latest p JOIN latest USING (world_id, version) "
            "WHERE p.scope = 'candidate' ORDER BY p.world_id, p.incremental_var DESC"
        ).fetchall()
    finally:
        connection.close()
    if not books:
        return

    def number(value: Any) -> str:
        return "-" if value is None else f"{value:.5f}"

    def signed(value: Any) -> str:
        return "-" if value is None else f"{value:+.5f}"

    _step("portfolio risk at each world's latest snapshot (Gaussian, 99 %, loss fraction per period)")
    header = ("world", "snapshot", "as of (UTC)", "sigma_p", "VaR 99", "ES 99", "hist VaR", "hist ES")
    lines = [header] + [(w, v, a, *(number(x) for x in rest)) for w, v, a, *rest in books]
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    for line in lines:
        print("    " + "  ".join(str(v).ljust(width) for v, width in zip(line, widths)))
    if candidates:
        print("    candidates (incremental VaR / ES when added at weight a_c, others scaled by 1 - a_c):")
        header = ("world", "candidate", "run", "a_c", "incr VaR 99", "incr ES 99")
        lines = [header] + [(w, s, r, f"{a:.4f}", signed(iv), signed(ie)) for w, s, r, a, iv, ie in candidates]
        widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
        for line in lines:
            print("      " + "  ".join(str(v).ljust(width) for v, width in zip(line, widths)))
    print()


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
    # The sample is dated relative to now so that the sensors' look-back and the snapshots'
    # freshness SLA see it as just dropped.
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    today = now.date()
    started = time.perf_counter()
    if not args.keep or not Path(settings.landing_root, "runs").exists():
        reset_dev_data(settings)
        _step(f"generating the sample landing zone in {settings.landing_root} (seed {args.seed})")
        summary = generate_sample(settings.landing_root, seed=args.seed, today=now)
        print("    " + summary.describe().replace("\n", "\n    "))

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

    if not _risk_snapshots(instance, settings, today):
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
    # The first run of the backfill's partition range is among those whose report has pictures.
    report = connection.execute(
        "SELECT html_path FROM validation_reports_latest "
        "WHERE world_id || '/' || strategy_id || '/' || run_id = ?",
        [keys[0]],
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
    _print_portfolio_risk(settings.catalog_path)
    if report:
        print(f"A report:       {report[0]}")
    print(f"Done in {time.perf_counter() - started:.1f} s. `make dev` opens the lineage UI.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
