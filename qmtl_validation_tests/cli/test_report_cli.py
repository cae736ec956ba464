from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from qmtl_validation.cli import main

RUN_FILE = {
    "run": {"world_id": "apac_fx", "strategy_id": "carry_g10", "run_id": "bt-001",
            "stage": "backtest", "risk_tier": "medium", "created_at": "2025-05-01T00:00:00Z"},
    "evaluation": {
        "validation": {
            "policy_version": "2", "ruleset_hash": "sha256:" + "0f" * 32, "profile": "backtest",
            "results": {
                "sample": {"status": "pass", "severity": "blocking", "owner": "quant",
                           "reason_code": "ok", "reason": "enough history", "tags": [],
                           "details": {}},
                "performance": {"status": "fail", "severity": "blocking", "owner": "quant",
                                "reason_code": "sharpe_below_min", "reason": "Sharpe 0.3 < 0.8",
                                "tags": [], "details": {"sharpe": 0.3, "min": 0.8}},
            },
        },
        "summary": {"status": "fail", "recommended_stage": "backtest_only"},
    },
    "metrics": {"returns": {"sharpe": 0.3, "max_drawdown": 0.12, "gain_to_pain_ratio": None},
                "diagnostics": {"metric_notes": {
                    "returns.gain_to_pain_ratio": "no losing period"}}},
    "overrides": [{"override_status": "approved", "override_reason": "pilot",
                   "override_actor": "cro", "override_timestamp": "2025-05-02T00:00:00Z",
                   "review_due_at": "2025-08-01T00:00:00Z", "review_overdue": False}],
}
CARD = "strategy_id: carry_g10\nversion: 1\nobjective: Earn G10 FX carry.\n" \
       "key_assumptions: [rate differentials persist]\nkey_limitations: [carry crashes]\n"


@pytest.fixture
def run_file(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(RUN_FILE), encoding="utf-8")
    return path


@pytest.fixture
def returns_file(tmp_path):
    rng = np.random.default_rng(11)
    dates = pd.bdate_range("2022-01-03", periods=300)
    frame = pd.DataFrame({"date": dates.strftime("%Y-%m-%d"),
                          "ret": rng.normal(0.0003, 0.006, 300)})
    path = tmp_path / "returns.csv"
    frame.to_csv(path, index=False)
    return path


def test_cli_writes_markdown_html_and_picture_and_prints_the_paths(tmp_path, run_file,
                                                                   returns_file, capsys):
    card = tmp_path / "card.yaml"
    card.write_text(CARD, encoding="utf-8")
    out = tmp_path / "reports"
    code = main(["report", "--run-json", str(run_file), "--model-card", str(card),
                 "--returns", str(returns_file), "--out", str(out),
                 "--generated-at", "2025-06-01T00:00:00Z"])
    assert code == 0
    folder = out / "apac_fx" / "carry_g10" / "bt-001"
    printed = capsys.readouterr().out.split()
    assert printed == [str(folder / "report.md"), str(folder / "report.html"),
                       str(folder / "equity.png")]
    markdown = (folder / "report.md").read_text(encoding="utf-8")
    assert "**Objective:** Earn G10 FX carry." in markdown
    assert "  - rate differentials persist" in markdown
    assert "| returns.gain_to_pain_ratio | n/a | yes | no losing period |" in markdown
    assert "| 2025-08-01T00:00:00Z | no |" in markdown
    assert "**Report generated at:** 2025-06-01T00:00:00Z" in markdown
    assert (folder / "equity.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert (folder / "report.html").read_text(encoding="utf-8").count("data:image/png;base64,") == 2


def test_cli_markdown_only_with_json_output_and_card_from_the_registry(tmp_path, run_file,
                                                                       capsys):
    (tmp_path / "landing" / "model_cards").mkdir(parents=True)
    (tmp_path / "landing" / "model_cards" / "carry_g10.yml").write_text(CARD, encoding="utf-8")
    code = main(["report", "--run-json", str(run_file), "--model-card-root",
                 str(tmp_path / "landing"), "--out", str(tmp_path / "out"), "--format", "md",
                 "--json", "--generated-at", "fixed"])
    assert code == 0
    written = json.loads(capsys.readouterr().out)
    assert list(written) == ["report.md"]
    with open(written["report.md"], encoding="utf-8") as stream:
        assert "**Objective:** Earn G10 FX carry." in stream.read()


def test_cli_same_inputs_give_the_same_markdown(tmp_path, run_file):
    args = ["report", "--run-json", str(run_file), "--format", "md", "--generated-at", "t0"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    relative = "apac_fx/carry_g10/bt-001/report.md"
    assert (tmp_path / "a" / relative).read_bytes() == (tmp_path / "b" / relative).read_bytes()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "invalid JSON at line 1, column 2"),
        ("[]", "expected a JSON object"),
        (json.dumps({"evaluation": {}}), "'run' is required"),
        (json.dumps({"run": {"world_id": "w", "strategy_id": "s"}}), "run.run_id is required"),
        (json.dumps({"run": {"world_id": "w", "strategy_id": "../s", "run_id": "r"}}),
         "strategy_id '../s' is not a valid identifier"),
        (json.dumps({"run": {"world_id": "w", "strategy_id": "s", "run_id": "r"},
                     "overrides": {"a": 1}}), "'overrides' must be a list of objects"),
        (json.dumps({"run": {"world_id": "w", "strategy_id": "s", "run_id": "r"},
                     "model_card": {"objective": "no id"}}), "'strategy_id' is required"),
    ],
)
def test_cli_bad_run_file_is_one_line_error_with_exit_1(tmp_path, capsys, content, message):
    path = tmp_path / "run.json"
    path.write_text(content, encoding="utf-8")
    code = main(["report", "--run-json", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_cli_rejects_a_returns_file_without_the_contract_columns(tmp_path, run_file, capsys):
    bad = tmp_path / "returns.csv"
    bad.write_text("day,value\n2024-01-02,0.01\n", encoding="utf-8")
    code = main(["report", "--run-json", str(run_file), "--returns", str(bad),
                 "--out", str(tmp_path / "out")])
    assert code == 1
    assert "missing column(s) date, ret" in capsys.readouterr().err


def test_cli_rejects_duplicate_return_dates(tmp_path, run_file, capsys):
    bad = tmp_path / "returns.csv"
    bad.write_text("date,ret\n2024-01-02,0.01\n2024-01-02,0.02\n", encoding="utf-8")
    assert main(["report", "--run-json", str(run_file), "--returns", str(bad),
                 "--out", str(tmp_path / "out")]) == 1
    assert "duplicate date 2024-01-02" in capsys.readouterr().err


def test_cli_without_an_input_source_is_a_usage_error(capsys):
    assert main(["report", "--format", "md"]) == 2
    assert "--run-json" in capsys.readouterr().err
