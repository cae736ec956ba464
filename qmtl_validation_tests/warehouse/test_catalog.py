import datetime as dt
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from qmtl_validation.warehouse.catalog import connect_catalog, ensure_catalog
from qmtl_validation.warehouse.lake import Lake
from qmtl_validation.warehouse.tables import TABLES, duckdb_type, latest_views

REPO_ROOT = Path(__file__).resolve().parents[2]
T0 = dt.datetime(2026, 11, 27, 9, 30, tzinfo=dt.timezone.utc)


def history(runs, *, revision=1, status="pass", world_id=None):
    frame = pd.DataFrame(
        {
            "strategy_id": "mom",
            "run_id": list(runs),
            "revision": revision,
            "recorded_at": T0 + dt.timedelta(minutes=revision),
            "stage": "backtest",
            "status": status,
            "recommended_stage": "paper_only" if status == "pass" else "backtest_only",
        }
    )
    if world_id is not None:
        frame["world_id"] = world_id
    return frame


@pytest.fixture
def lake(tmp_path):
    return Lake(tmp_path / "lake")


@pytest.fixture
def catalog(tmp_path):
    return tmp_path / "warehouse" / "validation.duckdb"


def query(catalog_path, sql):
    connection = connect_catalog(catalog_path)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def test_every_table_is_queryable_before_any_data_exists(lake, catalog):
    ensure_catalog(catalog, lake.root)
    connection = connect_catalog(catalog)
    try:
        for spec in TABLES.values():
            described = connection.execute(f"DESCRIBE {spec.name}").fetchall()
            assert [(name, type_) for name, type_, *_ in described] == [
                (name, duckdb_type(column.type)) for name, column in spec.columns.items()
            ], spec.name
            assert connection.execute(f"SELECT count(*) FROM {spec.name}").fetchall() == [(0,)]
        for view in latest_views():
            assert connection.execute(f"SELECT count(*) FROM {view}").fetchall() == [(0,)]
        assert connection.execute(
            "SELECT status, count(*) FROM evaluation_runs GROUP BY 1"
        ).fetchall() == []
    finally:
        connection.close()


def test_ensure_catalog_is_idempotent_and_quick_when_nothing_changed(lake, catalog):
    first = ensure_catalog(catalog, lake.root)
    lake.write("evaluation_run_history", history(["r1", "r2"]), world_id="w1", file_stem="b1")
    second = ensure_catalog(catalog, lake.root)
    third = ensure_catalog(catalog, lake.root)
    assert first.rebuilt and not second.rebuilt and not third.rebuilt
    assert first.fingerprint == second.fingerprint == third.fingerprint
    assert second.seconds < 0.5
    forced = ensure_catalog(catalog, lake.root, force=True)
    assert forced.rebuilt and forced.schema_files_written == ()
    assert query(catalog, "SELECT count(*) FROM evaluation_runs") == [(2,)]
    assert sorted(p.name for p in catalog.parent.iterdir()) == ["validation.duckdb"]  # no temp left


def test_new_files_appear_without_touching_the_catalog(lake, catalog):
    ensure_catalog(catalog, lake.root)
    stamp = catalog.stat().st_mtime_ns
    lake.write("evaluation_run_history", history(["r1"]), world_id="w1", file_stem="b1")
    lake.write("evaluation_run_history", history(["r2", "r3"], status="fail"), world_id="w2", file_stem="b1")
    assert query(catalog, "SELECT world_id, status, count(*) FROM evaluation_runs GROUP BY ALL ORDER BY 1") == [
        ("w1", "pass", 1),
        ("w2", "fail", 2),
    ]
    assert catalog.stat().st_mtime_ns == stamp


def test_evaluation_runs_shows_the_latest_revision_and_history_keeps_them_all(lake, catalog):
    ensure_catalog(catalog, lake.root)
    lake.write("evaluation_run_history", history(["r1", "r2"], revision=1, status="pass"), world_id="w1", file_stem="rev1")
    lake.write("evaluation_run_history", history(["r1"], revision=2, status="fail"), world_id="w1", file_stem="rev2")
    assert query(catalog, "SELECT run_id, revision, status FROM evaluation_runs ORDER BY run_id") == [
        ("r1", 2, "fail"),
        ("r2", 1, "pass"),
    ]
    assert query(catalog, "SELECT run_id, revision FROM evaluation_run_history ORDER BY run_id, revision") == [
        ("r1", 1), ("r1", 2), ("r2", 1),
    ]


def test_rule_results_latest_shows_every_rule_of_the_latest_revision_only(lake, catalog):
    ensure_catalog(catalog, lake.root)
    base = {"strategy_id": "mom", "run_id": "r1", "severity": "blocking", "owner": "quant", "recorded_at": T0}
    rev1 = [{**base, "revision": 1, "rule": rule, "status": "pass", "reason_code": "ok"}
            for rule in ("sample", "performance", "risk_constraint")]
    rev2 = [{**base, "revision": 2, "rule": rule, "status": "fail", "reason_code": "x"}
            for rule in ("sample", "performance")]
    lake.write("rule_results", rev1, world_id="w1", file_stem="rev1")
    lake.write("rule_results", rev2, world_id="w1", file_stem="rev2")
    assert query(catalog, "SELECT rule, revision, status FROM rule_results_latest ORDER BY rule") == [
        ("performance", 2, "fail"),
        ("sample", 2, "fail"),
    ]


def test_older_files_without_a_new_column_read_it_as_null(lake, catalog):
    ensure_catalog(catalog, lake.root)
    folder = Path(lake.table_uri("evaluation_run_history")) / "world_id=w1"
    old = pa.table({"world_id": ["w1"], "strategy_id": ["mom"], "run_id": ["old"], "revision": [1],
                    "recorded_at": pa.array([T0], pa.timestamp("us", tz="UTC")), "stage": ["paper"],
                    "status": ["pass"], "recommended_stage": ["paper_only"]})
    folder.mkdir(parents=True)
    pq.write_table(old, folder / "written-by-an-older-version.parquet")
    lake.write("evaluation_run_history", history(["new"]).assign(policy_version="v3"), world_id="w1", file_stem="b2")
    assert query(catalog, "SELECT run_id, policy_version FROM evaluation_runs ORDER BY run_id") == [
        ("new", "v3"),
        ("old", None),
    ]


def test_extra_metric_columns_appear_after_the_declared_ones(lake, catalog):
    ensure_catalog(catalog, lake.root)
    base = {"strategy_id": "mom", "run_id": "r1", "computed_at": T0}
    lake.write("evaluation_metrics", [{**base, "returns__sharpe": 1.1}], world_id="w1", file_stem="m1")
    lake.write("evaluation_metrics", [{**base, "computed_at": T0 + dt.timedelta(hours=1),
                                       "returns__sharpe": 1.3, "benchmark__alpha": 0.02}],
               world_id="w1", file_stem="m2")
    connection = connect_catalog(catalog)
    try:
        columns = [row[0] for row in connection.execute("DESCRIBE evaluation_metrics_latest").fetchall()]
        assert columns[-1] == "benchmark__alpha"
        assert columns[: len(TABLES["evaluation_metrics"].columns)] == list(TABLES["evaluation_metrics"].columns)
        assert connection.execute(
            "SELECT returns__sharpe, benchmark__alpha FROM evaluation_metrics_latest"
        ).fetchall() == [(1.3, 0.02)]
    finally:
        connection.close()


def test_catalog_is_rebuilt_for_another_lake_root(tmp_path, catalog):
    first, second = Lake(tmp_path / "a"), Lake(tmp_path / "b")
    first.write("evaluation_run_history", history(["a1"]), world_id="w1", file_stem="b")
    second.write("evaluation_run_history", history(["b1", "b2"]), world_id="w1", file_stem="b")
    ensure_catalog(catalog, first.root)
    assert query(catalog, "SELECT count(*) FROM evaluation_runs") == [(1,)]
    assert ensure_catalog(catalog, second.root).rebuilt
    assert query(catalog, "SELECT count(*) FROM evaluation_runs") == [(2,)]


def test_missing_schema_files_are_restored(lake, catalog):
    ensure_catalog(catalog, lake.root)
    schema_file = Path(lake.schema_file_uri("overrides"))
    schema_file.unlink()
    status = ensure_catalog(catalog, lake.root)
    assert status.rebuilt and status.schema_files_written == (str(schema_file),)
    assert query(catalog, "SELECT count(*) FROM overrides") == [(0,)]


def test_catalog_documents_tables_and_columns(lake, catalog):
    ensure_catalog(catalog, lake.root)
    assert query(
        catalog,
        "SELECT type, required FROM catalog_columns WHERE table_name = 'evaluation_run_history' AND column_name = 'revision'",
    ) == [("BIGINT", True)]
    assert query(catalog, "SELECT source_table FROM catalog_tables WHERE table_name = 'evaluation_runs'") == [
        ("evaluation_run_history",)
    ]
    comment = query(
        catalog,
        "SELECT comment FROM duckdb_columns() WHERE table_name = 'rule_results' AND column_name = 'severity'",
    )
    assert comment == [("blocking, soft or info.",)]
    assert query(catalog, "SELECT value FROM catalog_info WHERE key = 'lake_root'") == [(lake.root,)]


def test_analyst_connection_is_read_only(lake, catalog):
    ensure_catalog(catalog, lake.root)
    connection = connect_catalog(catalog)
    try:
        with pytest.raises(duckdb.Error, match="read-only"):
            connection.execute("CREATE TABLE scratch (x INTEGER)")
    finally:
        connection.close()


def test_connect_without_a_catalog_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no DuckDB catalog at {tmp_path / 'nope.duckdb'}"):
        connect_catalog(tmp_path / "nope.duckdb")


def test_an_open_reader_keeps_working_across_a_catalog_rebuild(lake, catalog):
    ensure_catalog(catalog, lake.root)
    reader = connect_catalog(catalog)
    try:
        lake.write("evaluation_run_history", history(["r1"]), world_id="w1", file_stem="b1")
        assert ensure_catalog(catalog, lake.root, force=True).rebuilt
        lake.write("evaluation_run_history", history(["r2"]), world_id="w1", file_stem="b2")
        assert reader.execute("SELECT count(*) FROM evaluation_runs").fetchall() == [(2,)]
    finally:
        reader.close()


READER = """
    import json, os, sys, time
    from qmtl_validation.warehouse.catalog import connect_catalog
    catalog, ready, stop = sys.argv[1:4]
    held = connect_catalog(catalog)  # stays open for the whole test
    open(ready, "w").close()
    counts, errors, queries = [], [], 0
    sql = "SELECT status, count(*) FROM evaluation_runs GROUP BY 1"
    while not os.path.exists(stop):
        for fresh in (False, True):
            try:
                connection = connect_catalog(catalog) if fresh else held
                counts.append(sum(n for _, n in connection.execute(sql).fetchall()))
                if fresh:
                    connection.close()
                queries += 1
            except Exception as exc:
                errors.append(repr(exc))
    final = connect_catalog(catalog)
    counts.append(sum(n for _, n in final.execute(sql).fetchall()))
    print(json.dumps({"queries": queries, "errors": errors[:5], "counts": counts}))
"""


def test_read_only_reader_in_another_process_works_while_runs_write_and_refresh(tmp_path, lake, catalog):
    lake.write("evaluation_run_history", history([f"seed{i}" for i in range(10)]), world_id="w1", file_stem="seed")
    ensure_catalog(catalog, lake.root)
    ready, stop = tmp_path / "ready", tmp_path / "stop"
    reader = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(READER), str(catalog), str(ready), str(stop)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert reader.poll() is None, reader.communicate()[1]
            assert time.monotonic() < deadline, "reader never started"
            time.sleep(0.01)
        total = 10
        for batch in range(12):
            runs = [f"b{batch}r{i}" for i in range(50)]
            worlds = ["w1" if i % 2 else "w2" for i in range(50)]
            lake.write_partitioned("evaluation_run_history", history(runs, world_id=worlds), file_stem=f"batch{batch}")
            total += 50
            # Alternate a no-op refresh with a full rebuild that replaces the catalog file.
            status = ensure_catalog(catalog, lake.root, force=batch % 2 == 0)
            assert status.rebuilt == (batch % 2 == 0)
            time.sleep(0.05)
        stop.touch()
        out, err = reader.communicate(timeout=60)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.communicate()
    assert reader.returncode == 0, err
    result = json.loads(out)
    assert result["errors"] == []
    assert result["queries"] >= 10
    assert result["counts"] == sorted(result["counts"])  # data only ever appears, all at once per file
    assert result["counts"][-1] == total
