import math

import pyarrow as pa
import pytest

from qmtl_validation.core.health import CORE_METRIC_PATHS
from qmtl_validation.warehouse.tables import (
    DOUBLE,
    TABLES,
    catalogue_markdown,
    flatten_metrics,
    get_table,
    latest_views,
    metric_column,
    metric_path,
)

SPEC_TABLES = {
    "evaluation_run_history", "evaluation_metrics", "rule_results", "overrides", "risk_snapshots",
    "snapshot_weights", "covariance", "portfolio_risk", "stress_results", "live_monitoring",
    "cohort_results", "freshness_breaches", "rejections", "policy_versions", "policy_diff", "events",
}


def test_every_spec_table_is_catalogued_and_partitioned_by_world():
    assert SPEC_TABLES <= set(TABLES)
    assert all(spec.partitioned_by == "world_id" for spec in TABLES.values())
    assert all("world_id" in spec.columns for spec in TABLES.values())


def test_evaluation_runs_is_the_latest_view_over_the_history():
    views = latest_views()
    history = views["evaluation_runs"]
    assert history.name == "evaluation_run_history"
    assert history.version_column == "revision"
    assert history.latest_partition_columns == ("world_id", "strategy_id", "run_id")
    expected = [
        "world_id", "strategy_id", "run_id", "revision", "recorded_at", "reason", "stage",
        "risk_tier", "status", "recommended_stage", "profile", "policy_version", "ruleset_hash",
        "model_card_version",
    ]
    assert list(history.columns)[: len(expected)] == expected
    assert "payload_json" in history.columns
    assert history.columns["recorded_at"].type == pa.timestamp("us", tz="UTC")


def test_rule_results_latest_view_keeps_every_rule_of_the_latest_revision():
    spec = get_table("rule_results")
    assert spec.key == ("world_id", "strategy_id", "run_id", "rule")
    assert spec.latest_partition_columns == ("world_id", "strategy_id", "run_id")
    assert spec.columns["tags"].type == pa.list_(pa.string())


def test_every_core_metric_path_has_a_double_column_in_the_wide_table():
    spec = get_table("evaluation_metrics")
    for path in CORE_METRIC_PATHS:
        assert spec.columns[metric_column(path)].type == DOUBLE, path
    assert spec.open_columns
    assert spec.columns["diagnostics__returns_source"].type == pa.string()


def test_metric_column_names_round_trip():
    assert metric_column("returns.sharpe") == "returns__sharpe"
    assert metric_column("diagnostics.validation_health.metric_coverage_ratio") == (
        "diagnostics__validation_health__metric_coverage_ratio"
    )
    assert metric_path("sample__regime_coverage__high_vol") == "sample.regime_coverage.high_vol"


def test_flatten_metrics_spreads_leaves_and_keeps_notes_as_json():
    nested = {
        "returns": {"sharpe": 1.25, "gain_to_pain_ratio": None, "sortino_ratio": math.inf},
        "sample": {"regime_coverage": {"high_vol": 0.3}},
        "benchmark": {"alpha": 0.01},
        "diagnostics": {
            "returns_source": "backtest",
            "metric_notes": {"returns.gain_to_pain_ratio": "no losing period"},
            "extra_metrics": {},
        },
    }
    row = flatten_metrics(nested)
    assert row == {
        "returns__sharpe": 1.25,
        "returns__gain_to_pain_ratio": None,
        "returns__sortino_ratio": None,
        "sample__regime_coverage__high_vol": 0.3,
        "benchmark__alpha": 0.01,
        "diagnostics__returns_source": "backtest",
        "metric_notes_json": '{"returns.gain_to_pain_ratio":"no losing period"}',
        "extra_metrics_json": None,
    }


def test_unknown_table_name_suggests_the_closest():
    with pytest.raises(KeyError, match="did you mean 'evaluation_runs'|did you mean 'evaluation_run_history'"):
        get_table("evaluation_run")


def test_catalogue_markdown_documents_every_table_and_column():
    text = catalogue_markdown()
    for spec in TABLES.values():
        assert f"## `{spec.name}`" in text
        for name in spec.columns:
            assert f"| `{name}` |" in text
    assert "Latest view: `evaluation_runs`" in text
    assert "| `recorded_at` | TIMESTAMP WITH TIME ZONE | yes |" in text
