import csv
import datetime as dt
import io
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from qmtl_validation.cli import main
from qmtl_validation.warehouse.catalog import ensure_catalog
from qmtl_validation.warehouse.lake import Lake

REPO_ROOT = Path(__file__).resolve().parents[2]
T0 = dt.datetime(2026, 11, 27, 9, 30, tzinfo=dt.timezone.utc)
QUERY = "SELECT status, count(*) AS runs, avg(revision) AS mean_revision FROM evaluation_runs GROUP BY 1 ORDER BY 1"


@pytest.fixture
def warehouse(tmp_path, monkeypatch):
    lake = Lake(tmp_path / "lake")
    catalog = tmp_path / "validation.duckdb"
    monkeypatch.setenv("QMTL_PROFILE", "dev")
    monkeypatch.setenv("QMTL_LAKE_ROOT", lake.root)
    monkeypatch.setenv("QMTL_CATALOG_PATH", str(catalog))
    rows = pd.DataFrame(
        {
            "strategy_id": ["mom", "mom", "carry"],
            "run_id": ["r1", "r2", "r3"],
            "revision": [1, 1, 2],
            "recorded_at": T0,
            "stage": "backtest",
            "status": ["pass", "pass", "fail"],
            "recommended_stage": ["paper_only", "paper_only", "backtest_only"],
        }
    )
    lake.write("evaluation_run_history", rows, world_id="alpha", file_stem="b1")
    ensure_catalog(catalog, lake.root)
    return catalog


def test_sql_prints_an_aligned_table_from_the_default_catalog(warehouse, capsys):
    assert main(["sql", QUERY]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "status  runs  mean_revision",
        "------  ----  -------------",
        "fail       1              2",
        "pass       2              1",
        "(2 rows)",
    ]


def test_sql_json_output(warehouse, capsys):
    assert main(["sql", "SELECT run_id, recorded_at, world_id FROM evaluation_runs ORDER BY 1 LIMIT 1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"run_id": "r1", "recorded_at": "2026-11-27T09:30:00+00:00", "world_id": "alpha"}
    ]


def test_sql_csv_output_with_explicit_catalog(warehouse, capsys, monkeypatch):
    monkeypatch.setenv("QMTL_CATALOG_PATH", "/nonexistent/elsewhere.duckdb")
    assert main(["sql", QUERY, "--csv", "--catalog", str(warehouse)]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows == [["status", "runs", "mean_revision"], ["fail", "1", "2.0"], ["pass", "2", "1.0"]]


def test_sql_error_exits_1_with_one_line(warehouse, capsys):
    assert main(["sql", "SELECT * FROM evaluation_run"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: SQL error: Catalog Error:") and "evaluation_run" in lines[0]


def test_sql_cannot_write_through_the_catalog(warehouse, capsys):
    assert main(["sql", "CREATE TABLE scratch AS SELECT 1"]) == 1
    assert "read-only" in capsys.readouterr().err


def test_missing_catalog_gives_a_clear_message(tmp_path, capsys):
    missing = tmp_path / "none.duckdb"
    assert main(["sql", "SELECT 1", "--catalog", str(missing)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: no DuckDB catalog at {missing}")
    assert len(err.splitlines()) == 1


def test_refresh_builds_the_catalog_for_the_profile_lake(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("QMTL_PROFILE", "dev")
    monkeypatch.setenv("QMTL_LAKE_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("QMTL_CATALOG_PATH", str(tmp_path / "new.duckdb"))
    assert main(["sql", "--refresh", "SELECT count(*) AS n FROM rejections"]) == 0
    assert capsys.readouterr().out.splitlines()[2] == "0"


def test_entry_point_runs_as_a_module(warehouse):
    result = subprocess.run(
        [sys.executable, "-m", "qmtl_validation", "sql", QUERY, "--json"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        {"status": "fail", "runs": 1, "mean_revision": 2.0},
        {"status": "pass", "runs": 2, "mean_revision": 1.0},
    ]
