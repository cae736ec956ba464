"""Single-run backfills through the daemon, and analysts reading the catalog while runs write."""

import datetime as dt
import subprocess
import sys
import textwrap
import time

import dagster as dg

from qmtl_validation.defs.pipeline import make_contiguous, register_run_partitions
from qmtl_validation.sample_data import generate_sample
from qmtl_validation.warehouse.catalog import connect_catalog, ensure_catalog
from qmtl_validation.warehouse.lake import Lake
from qmtl_validation.warehouse.queries import latest_rows
from qmtl_validation_tests.dagster_harness import (
    daemon_workspace,
    deployment,
    launch_asset_backfill,
    run_backfill_daemon,
    sync_instance,
)

TODAY = dt.date(2026, 11, 27)
RUN_ASSETS = ["run_manifests", "strategy_returns", "strategy_trades", "evaluation_metrics", "rule_results",
              "evaluation_run", "validation_report"]


def test_a_backfill_over_every_sample_run_is_one_dagster_run(tmp_path, monkeypatch):
    env = deployment(tmp_path, monkeypatch)
    generate_sample(env.landing, seed=7, today=TODAY)
    with sync_instance() as instance:
        keys, _ = register_run_partitions(instance, env.settings, today=TODAY)
        assert len(keys) >= 60
        with daemon_workspace(instance) as context:
            backfill_id = launch_asset_backfill(context, instance, keys, RUN_ASSETS, backfill_id="all-sample-runs")
            runs = run_backfill_daemon(context, instance, backfill_id)
    assert len(runs) == 1
    assert runs[0].status == dg.DagsterRunStatus.SUCCESS
    history = latest_rows(Lake(env.settings.lake_root), "evaluation_run_history")
    assert len(history) == len(keys)


def test_one_worlds_runs_become_one_contiguous_range_without_changing_the_partition_set(tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    keys = [f"{world}/s{i}/r{i}" for i in range(6) for world in ("w1", "w2")]
    instance.add_dynamic_partitions("evaluation_runs", keys)
    w1 = [k for k in keys if k.startswith("w1/")]
    ordered = make_contiguous(instance, w1)
    after = list(instance.get_dynamic_partitions("evaluation_runs"))
    assert sorted(after) == sorted(keys)
    start = after.index(ordered[0])
    assert after[start : start + len(w1)] == ordered
    assert make_contiguous(instance, w1) == ordered  # already contiguous: nothing moves
    assert list(instance.get_dynamic_partitions("evaluation_runs")) == after


WRITER = textwrap.dedent(
    """
    import datetime as dt, dagster as dg
    from qmtl_validation.defs.pipeline import materialize_runs, register_run_partitions
    from qmtl_validation.settings import load_settings
    instance = dg.DagsterInstance.ephemeral()
    keys, _ = register_run_partitions(instance, load_settings(), today=dt.date(2026, 11, 27))
    for start in range(0, 12, 4):
        assert materialize_runs(instance, keys[start:start + 4]).success
    """
)


def test_analysts_query_the_catalog_read_only_while_another_process_materialises(tmp_path, monkeypatch):
    env = deployment(tmp_path, monkeypatch)
    generate_sample(env.landing, seed=7, today=TODAY)
    ensure_catalog(env.settings.catalog_path, env.settings.lake_root)
    writer = subprocess.Popen([sys.executable, "-c", WRITER], stderr=subprocess.PIPE, text=True)
    counts, errors = [], []
    try:
        while writer.poll() is None:
            try:
                with connect_catalog(env.settings.catalog_path, read_only=True) as con:
                    counts.append(dict(con.execute("select status, count(*) from evaluation_runs group by 1").fetchall()))
            except Exception as error:  # any error is a failure of the design; collect to report
                errors.append(repr(error))
            time.sleep(0.2)
    finally:
        _, stderr = writer.communicate(timeout=300)
    assert writer.returncode == 0, stderr[-2000:]
    assert not errors
    assert len(counts) > 5
    totals = [sum(c.values()) for c in counts]
    assert totals == sorted(totals)  # rows only ever appear
    with connect_catalog(env.settings.catalog_path, read_only=True) as con:
        assert con.execute("select count(*) from evaluation_runs").fetchone()[0] == 12
