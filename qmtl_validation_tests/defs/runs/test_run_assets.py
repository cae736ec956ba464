"""The run-scoped asset graph materialised for real: temp lake, temp landing zone, real instance."""

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from qmtl_validation.defs.pipeline import materialize_runs, register_run_partitions
from qmtl_validation.sample_data import generate_sample
from qmtl_validation.warehouse.catalog import connect_catalog, ensure_catalog
from qmtl_validation.warehouse.lake import Lake
from qmtl_validation.warehouse.queries import latest_rows
from qmtl_validation_tests.dagster_harness import deployment

TODAY = dt.date(2026, 11, 27)
RUN_ASSETS = ("run_manifests", "strategy_returns", "strategy_trades", "evaluation_metrics", "rule_results",
              "evaluation_run", "validation_report")


@pytest.fixture(scope="module")
def validated(tmp_path_factory):
    """The sample landing zone taken in, and five runs (one of each world, both stages) validated."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        env = deployment(tmp_path_factory.mktemp("runs"), monkeypatch)
        generate_sample(env.landing, seed=7, today=TODAY)
        instance = dg.DagsterInstance.ephemeral()
        keys, intake = register_run_partitions(instance, env.settings, today=TODAY)
        chosen = _pick(keys)
        result = materialize_runs(instance, chosen)
        yield env, instance, keys, chosen, result, monkeypatch


def _pick(keys):
    manifest_by_world = {}
    for key in keys:
        manifest_by_world.setdefault(key.split("/")[0], []).append(key)
    chosen = [keys_of_world[0] for keys_of_world in manifest_by_world.values()]
    paper = [k for k in keys if "/pp-" in k or "paper" in k]
    return chosen + [k for k in (paper[:1] + keys[1:2]) if k not in chosen]


def lake(env):
    return Lake(env.settings.lake_root)


def test_one_run_materialises_every_run_asset_for_every_chosen_partition(validated):
    env, instance, keys, chosen, result, _ = validated
    assert result.success
    for asset in RUN_ASSETS:
        materialized = {
            event.partition
            for event in result.get_asset_materialization_events()
            if event.asset_key == dg.AssetKey(asset)
        }
        assert materialized == set(chosen), asset


def test_warehouse_has_one_latest_row_per_run_with_summary_and_policy(validated):
    env, *_ , chosen, result, _ = validated
    runs = latest_rows(lake(env), "evaluation_run_history", partition_keys=chosen)
    assert len(runs) == len(chosen)
    assert set(runs["revision"]) == {1}
    assert set(runs["status"]) <= {"pass", "warn", "fail"}
    assert runs["policy_version"].notna().all()
    assert runs["ruleset_hash"].str.startswith("sha256:").all()
    payload = json.loads(runs["payload_json"].iloc[0])
    assert set(payload["validation"]["results"]) >= {"data_currency", "sample", "performance", "robustness", "risk_constraint"}
    health = payload["metrics"]["diagnostics"]["validation_health"]
    assert health["rules_executed_ratio"] == 1.0 and health["validation_error_count"] == 0


def test_rule_rows_carry_the_revision_and_the_run_summary(validated):
    env, *_ , chosen, result, _ = validated
    rules = latest_rows(lake(env), "rule_results", partition_keys=chosen)
    runs = latest_rows(lake(env), "evaluation_run_history", partition_keys=chosen)
    assert len(rules) == 5 * len(chosen)
    merged = rules.merge(runs, on=["world_id", "strategy_id", "run_id"], suffixes=("", "_run"))
    assert (merged["run_status"] == merged["status_run"]).all()
    assert (merged["revision"] == merged["revision_run"]).all()


def test_metrics_rows_match_the_metrics_engine_on_the_same_bundle(validated):
    from qmtl_validation.core.bundles import load_bundle
    from qmtl_validation.core.metrics import compute_metrics

    env, *_ , chosen, result, _ = validated
    metrics = latest_rows(lake(env), "evaluation_metrics", partition_keys=chosen[:1])
    registry = latest_rows(lake(env), "landing_registry", partition_keys=chosen[:1], key_expression="partition_key")
    bundle = load_bundle(env.landing / registry["landing_prefix"].iloc[0])
    direct = compute_metrics(
        bundle.returns, bundle.trades, search_intensity=bundle.manifest.search_intensity,
        trial_sharpes=bundle.manifest.trial_sharpes, complexity=bundle.manifest.complexity,
        capital=bundle.manifest.capital, benchmark_returns=bundle.benchmark,
        extra_metrics=bundle.manifest.extra_metrics, returns_source=bundle.manifest.returns_source,
    ).to_dict()
    row = metrics.iloc[0]
    assert row["returns__sharpe"] == pytest.approx(direct["returns"]["sharpe"], abs=1e-12)
    assert row["returns__max_drawdown"] == pytest.approx(direct["returns"]["max_drawdown"], abs=1e-12)
    if direct["sample"]["n_trades_total"] is None:
        assert pd.isna(row["sample__n_trades_total"])
    else:
        assert row["sample__n_trades_total"] == direct["sample"]["n_trades_total"]


def test_report_files_hold_every_section_and_the_rule_table_fails_first(validated):
    env, *_ , chosen, result, _ = validated
    reports = latest_rows(lake(env), "validation_reports", partition_keys=chosen)
    assert len(reports) == len(chosen)
    for path in reports["markdown_path"]:
        text = Path(path).read_text()
        assert text.startswith("# Validation report")
        for section in ("## 0. Summary", "## 4. Results", "## 5. Metrics"):
            assert section in text
    html = Path(reports["html_path"].iloc[0]).read_text()
    assert "data:image/png;base64," in html
    preview = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey("validation_report")]
    metadata = preview[0].step_materialization_data.materialization.metadata
    assert metadata["preview"].value.startswith("# Validation report")


def test_every_contract_check_passed(validated):
    *_, result, _ = validated
    evaluations = [
        event.event_specific_data
        for event in result.all_events
        if event.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    checked = {e.asset_key.to_user_string() for e in evaluations if e.check_name == "contract"}
    assert checked == set(RUN_ASSETS)
    assert all(e.passed for e in evaluations)


def test_rematerialising_a_run_adds_a_revision_and_keeps_the_first(validated):
    env, instance, keys, chosen, result, _ = validated
    key = chosen[0]
    world = key.split("/")[0]
    before = {Path(p).name: Path(p).read_bytes() for p in lake(env).list_files("evaluation_run_history", world)}
    again = materialize_runs(instance, [key])
    assert again.success
    history = latest_rows(lake(env), "evaluation_run_history", partition_keys=[key], latest=False)
    assert sorted(history["revision"]) == [1, 2]
    for name, content in before.items():
        assert (Path(env.settings.lake_root) / "evaluation_run_history" / f"world_id={world}" / name).read_bytes() == content
    ensure_catalog(env.settings.catalog_path, env.settings.lake_root)
    with connect_catalog(env.settings.catalog_path) as con:
        latest = con.execute(
            "SELECT revision FROM evaluation_runs WHERE world_id || '/' || strategy_id || '/' || run_id = ?", [key]
        ).fetchall()
    assert latest == [(2,)]


def test_a_bundle_broken_after_intake_fails_its_contract_check_and_writes_nothing(validated):
    env, instance, keys, chosen, result, _ = validated
    key = next(k for k in keys if k not in chosen)
    registry = latest_rows(lake(env), "landing_registry", partition_keys=[key], key_expression="partition_key")
    folder = env.landing / registry["landing_prefix"].iloc[0]
    returns_file = next(folder.glob("returns.*"))
    original = returns_file.read_bytes()
    broken = pd.DataFrame({"date": pd.to_datetime(["2026-01-02", "2026-01-05"]), "ret": [0.01, -1.5]})
    try:
        returns_file.unlink()
        broken.to_csv(folder / "returns.csv", index=False)
        failed = materialize_runs(instance, [key], raise_on_error=False)
    finally:
        (folder / "returns.csv").unlink()
        returns_file.write_bytes(original)
    assert not failed.success
    checks = [
        e.event_specific_data for e in failed.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    assert checks and not any(c.passed for c in checks)
    assert "must be > -1" in str(checks[0].metadata["first_problems"].value)
    for table in ("strategy_returns", "evaluation_run_history", "rule_results"):
        assert latest_rows(lake(env), table, partition_keys=[key]).empty, table
