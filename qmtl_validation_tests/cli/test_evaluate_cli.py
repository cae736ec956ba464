"""``qmtl-validation evaluate``: one bundle + one policy → EvaluationResult JSON, no Dagster."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qmtl_validation.cli import main
from qmtl_validation.core.bundles import load_bundle
from qmtl_validation.core.evaluation import evaluate_run
from qmtl_validation.core.metrics import compute_metrics
from qmtl_validation.core.policy import load_policy

POLICY = """
validation_profiles:
  backtest:
    data_currency: {max_lag: 2d, min_history: 365d}
    sample: {min_effective_years: 2.0, min_trades_total: 100}
    performance: {sharpe_min: 0.5, max_dd_max: 0.35}
    robustness: {dsr_min: 0.1}
    risk: {adv_utilization_p95_max: 0.05, participation_rate_p95_max: 0.2}
  paper:
    performance: {sharpe_min: 5.0}
default_profile_by_stage: {backtest_only: backtest, paper_only: paper}
"""


def write_bundle(folder: Path, *, stage: str = "backtest", submitted_at: str = "2024-01-02T09:00:00Z") -> Path:
    rng = np.random.default_rng(7)
    dates = pd.bdate_range("2021-01-04", periods=756)
    noise = rng.normal(0.0, 0.01, size=len(dates))
    returns = noise - noise.mean() + 0.0008  # annualised Sharpe about 1.35 whatever the draw
    pd.DataFrame({"date": dates.strftime("%Y-%m-%d"), "ret": returns}).to_csv(folder / "returns.csv", index=False)
    n = 240
    qty = rng.integers(1, 100, size=n).astype(float)
    price = rng.uniform(50, 150, size=n)
    trades = pd.DataFrame(
        {
            "ts": pd.date_range("2021-01-05 14:30", periods=n, freq="3D").strftime("%Y-%m-%dT%H:%M:%SZ"),
            "symbol": np.where(np.arange(n) % 2 == 0, "AAA", "BBB"),
            "side": np.where(np.arange(n) % 3 == 0, "sell", "buy"),
            "qty": qty,
            "price": price,
            "notional": qty * price,
            "adv_notional": 1e6,
            "bar_volume": 5_000.0,
        }
    )
    trades.to_csv(folder / "trades.csv", index=False)
    manifest = {
        "world_id": "w1",
        "strategy_id": "s1",
        "run_id": "r1",
        "stage": stage,
        "risk_tier": "low",
        "submitted_at": submitted_at,
        "search_intensity": 3,
        "capital": 1_000_000,
    }
    (folder / "run.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    folder = tmp_path / "bundle"
    folder.mkdir()
    return write_bundle(folder)


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "5.yaml"
    path.write_text(POLICY)
    return path


def run_cli(capsys, *args: str) -> tuple[int, dict]:
    code = main(["evaluate", *args])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else {}


def test_evaluate_prints_metrics_and_the_evaluation_result(bundle, policy_file, capsys):
    code, document = run_cli(capsys, "--bundle", str(bundle), "--policy", str(policy_file))
    assert code == 0
    assert {k: document[k] for k in ("world_id", "strategy_id", "run_id", "stage")} == {
        "world_id": "w1", "strategy_id": "s1", "run_id": "r1", "stage": "backtest"
    }
    assert set(document) == {"world_id", "strategy_id", "run_id", "stage", "metrics", "validation", "summary"}
    assert document["metrics"]["sample"]["effective_history_years"] == pytest.approx(3.0)
    assert document["metrics"]["sample"]["n_trades_total"] == 240
    validation = document["validation"]
    assert validation["policy_version"] == "5" and validation["profile"] == "backtest"
    assert validation["ruleset_hash"].startswith("sha256:")
    # the data ends Friday 2023-11-24 and was submitted 2024-01-02: far beyond the 2-day lag
    assert validation["results"]["data_currency"]["reason_code"] == "data_lag_exceeds_max"
    assert document["summary"] == {"status": "fail", "recommended_stage": "backtest_only"}


def test_output_equals_the_python_api(bundle, policy_file, capsys):
    _, document = run_cli(capsys, "--bundle", str(bundle), "--policy", str(policy_file), "--compact")
    loaded = load_bundle(bundle)
    policy = load_policy(policy_file)
    metrics = compute_metrics(loaded.returns, loaded.trades, search_intensity=3, capital=1_000_000)
    expected = evaluate_run(
        metrics, policy, "backtest", submitted_at="2024-01-02T09:00:00Z", data_end=loaded.returns.index[-1].date(), risk_tier="low"
    )
    assert document["validation"] == json.loads(json.dumps(expected.to_dict()))["validation"]
    expected_metrics = json.loads(json.dumps(metrics.to_dict()))
    expected_metrics["diagnostics"]["validation_health"] = {
        "metric_coverage_ratio": 1.0, "rules_executed_ratio": 1.0, "validation_error_count": 0
    }
    for key in ("rules_executed_ratio", "validation_error_count"):
        expected_metrics["diagnostics"]["metric_notes"].pop(f"diagnostics.validation_health.{key}", None)
    assert document["metrics"] == expected_metrics


def test_fresh_bundle_passes_and_stage_option_overrides_the_manifest(tmp_path, policy_file, capsys):
    folder = tmp_path / "fresh"
    folder.mkdir()
    write_bundle(folder, submitted_at="2023-11-25T08:00:00Z")
    code, document = run_cli(capsys, "--bundle", str(folder), "--policy", str(policy_file), "--check")
    failing = {k: v["reason_code"] for k, v in document["validation"]["results"].items() if v["status"] != "pass"}
    assert failing == {}
    assert code == 0 and document["summary"] == {"status": "pass", "recommended_stage": "paper_only"}
    code, paper = run_cli(capsys, "--bundle", str(folder), "--policy", str(policy_file), "--stage", "paper")
    assert paper["stage"] == "paper" and paper["validation"]["profile"] == "paper"
    assert paper["summary"]["recommended_stage"] == "backtest_only"  # sharpe far below 5


def test_check_flag_exits_1_on_a_failing_summary(bundle, policy_file, capsys):
    code, document = run_cli(capsys, "--bundle", str(bundle), "--policy", str(policy_file), "--check")
    assert code == 1 and document["summary"]["status"] == "fail"


def test_bad_bundle_or_policy_is_a_one_line_error(tmp_path, bundle, policy_file, capsys):
    (bundle / "run.json").write_text('{"world_id": "w1"}')
    assert main(["evaluate", "--bundle", str(bundle), "--policy", str(policy_file)]) == 1
    assert "run.json" in capsys.readouterr().err
    broken = tmp_path / "6.yaml"
    broken.write_text("validation_profiles: {backtest: {performance: {sharp_min: 1}}}")
    assert main(["evaluate", "--bundle", str(bundle), "--policy", str(broken)]) == 1
    assert "did you mean 'sharpe_min'" in capsys.readouterr().err
    assert main(["evaluate", "--bundle", str(tmp_path / "nope"), "--policy", str(policy_file)]) == 1
