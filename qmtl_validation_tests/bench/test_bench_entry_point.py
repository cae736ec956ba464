"""``python -m bench`` runs in its tiny mode and writes what the docs promise; the plots draw."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.cli import Config, format_table
from bench.common import REPO_ROOT, paired_ratio, percentile, summarise
from bench.plots import BACKFILL_PNG, PANEL_PNG, write_all

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_quick_bench_runs_and_writes_every_selected_row_with_reference_timings(tmp_path):
    results = tmp_path / "results.json"
    environment = {**os.environ, "OPENBLAS_CORETYPE": "Haswell"}  # dropped for the bench's own process
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "full_metric_set", "core_metrics",
         "vs_quantstats", "vs_empyrical", "panel_scaling", "rules",
         "--results", str(results), "--plots-dir", str(tmp_path / "plots")],
        cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    written = json.loads(results.read_text())
    rows = written["rows"]
    assert set(rows) == {
        "full_metric_set_400x252", "core_metrics_400x252", "vs_quantstats_4_metrics_10_columns",
        "vs_empyrical_sharpe_max_drawdown_400x252", "rules_one_run_p95",
    }
    for row in rows.values():
        assert row["timing"]["min"] <= row["timing"]["median"] <= row["timing"]["max"]
        assert row["met"] is None  # targets apply to the full sizes only
    assert rows["vs_quantstats_4_metrics_10_columns"]["details"]["reference_timing"]["median"] > 0
    assert rows["vs_empyrical_sharpe_max_drawdown_400x252"]["details"]["reference_timing"]["median"] > 0
    for difference in rows["vs_quantstats_4_metrics_10_columns"]["details"]["max_abs_difference"].values():
        assert difference < 1e-9
    assert [p["runs"] for p in written["scaling"]["panel"]] == [100, 200, 400]
    blas = written["machine"]["blas_environment"]
    assert blas["found"]["OPENBLAS_CORETYPE"] == "Haswell" and blas["unset_for_bench"]
    assert blas["effective"]["OPENBLAS_CORETYPE"] is None
    assert (tmp_path / "plots" / PANEL_PNG).read_bytes().startswith(PNG_SIGNATURE)
    assert "full_metric_set_400x252" in completed.stdout


def test_an_unknown_row_name_is_a_usage_error():
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "no_such_row"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 2
    assert "unknown row name" in completed.stderr


def test_scaling_plots_are_drawn_from_results(tmp_path):
    timing = summarise([1.0, 1.2, 0.9])
    scaling = {
        "panel": [
            {"runs": runs, "periods": 2520, "panel_bytes": runs * 2520 * 8, "timing": timing,
             "peak_traced_bytes": runs * 2520 * 2}
            for runs in (1_000, 5_000)
        ],
        "backfill": [
            {"runs": runs, "instance": instance, "backfill_s": runs / 100, "step_seconds_total": runs / 120,
             "peak_rss_bytes": 2**30}
            for runs in (100, 1_000) for instance in ("postgres", "sqlite")
        ],
    }
    written = write_all(scaling, tmp_path)
    assert {p.name for p in written} == {PANEL_PNG, BACKFILL_PNG}
    assert all(p.read_bytes().startswith(PNG_SIGNATURE) for p in written)


def test_the_table_shows_the_median_the_range_and_the_verdict():
    rows = {
        "core_metrics_10000x2520": {
            "target": "≤ 0.5 s", "unit": "s", "value": 0.31, "met": True,
            "timing": {"median": 0.31, "min": 0.29, "max": 0.4}, "details": {},
        },
        "vs_empyrical_sharpe_max_drawdown_10000x2520": {
            "target": "≥ 3× faster", "unit": "×", "value": 2.5, "met": False,
            "timing": {"median": 0.3, "min": 0.3, "max": 0.31},
            "details": {"reference": "empyrical", "reference_timing": {"median": 0.75, "min": 0.7, "max": 0.8}},
        },
    }
    table = format_table(rows)
    assert "0.310 s" in table and "2.5×" in table and "NO" in table and "empyrical (same run)" in table


def test_sizes_of_the_full_and_tiny_modes():
    full, tiny = Config.full(), Config.tiny()
    assert (full.panel_runs, full.periods, full.quantstats_columns) == (10_000, 2520, 1_000)
    assert full.rule_evaluations == 10_000 and full.backfill_runs == 10_000 and full.drops == 50
    assert full.panel_scaling_sizes == [1_000, 5_000, 10_000, 20_000]
    assert full.backfill_scaling_sizes == [100, 1_000, 10_000]
    assert tiny.panel_runs < 1_000 and tiny.backfill_runs < 100
    assert Config.full(only=("vs_quantstats",)).wants("vs_quantstats")
    assert not Config.full(only=("rules",)).wants("vs_quantstats")


def test_ratios_are_taken_per_pair_and_percentiles_interpolate():
    calls = []
    measured = paired_ratio(lambda: calls.append("ours"), lambda: calls.append("theirs"), 3, warmup=0)
    assert calls == ["ours", "theirs"] * 3
    assert measured["ratio"]["repeats"] == 3
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile([5.0], 95) == 5.0
