from __future__ import annotations

import base64
import io
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from qmtl_validation.core.health import CORE_METRIC_PATHS
from qmtl_validation.core.identifiers import InvalidIdentifierError
from qmtl_validation.core.model_cards import load_model_card
from qmtl_validation.core.reports import (
    build_snapshot_report,
    equity_drawdown_png,
    render_snapshot_report_html,
    render_snapshot_report_markdown,
    render_validation_report_html,
    render_validation_report_markdown,
    render_world_overview_html,
    render_world_overview_markdown,
    risk_contributions_png,
    rolling_sharpe,
    rolling_sharpe_png,
    write_report_files,
    write_snapshot_report_files,
    write_world_overview,
)
from qmtl_validation.core.reports.charts import equity_and_drawdown
from qmtl_validation.core.reports.markdown import render_markdown
from qmtl_validation.core.reports.validation import build_validation_report
from qmtl_validation.core.rules.base import RuleResult

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
GENERATED_AT = "2025-06-30T12:00:00+00:00"

RUN = {
    "world_id": "eu_equities",
    "strategy_id": "momo_eu",
    "run_id": "bt-2025-06-01",
    "stage": "backtest",
    "risk_tier": "high",
    "created_at": "2025-06-01T08:00:00Z",
    "updated_at": "2025-06-01T08:05:00Z",
    "model_card_version": None,
    "campaign_id": "cmp-7",
}


def _rule(status, severity, owner, code, reason, details=None):
    return {"status": status, "severity": severity, "owner": owner, "reason_code": code,
            "reason": reason, "tags": [], "details": details or {}}


EVALUATION = {
    "validation": {
        "policy_version": "4",
        "ruleset_hash": "sha256:" + "ab" * 32,
        "profile": "backtest",
        "results": {
            "sample": _rule("pass", "blocking", "quant", "ok", "history and trades sufficient"),
            "data_currency": _rule("pass", "blocking", "ops", "ok", "data is current"),
            "robustness": _rule("fail", "soft", "quant", "dsr_below_min",
                                "deflated Sharpe 0.41 < 0.5", {"deflated_sharpe_ratio": 0.41,
                                                               "min": 0.5}),
            "performance": _rule("warn", "blocking", "quant", "missing_metric",
                                 "gain_to_pain_ratio is null"),
            "risk_constraint": _rule("fail", "blocking", "risk", "max_drawdown_exceeded",
                                     "max drawdown 0.31 > 0.25",
                                     {"max_drawdown": 0.31, "max": 0.25}),
            "stress": _rule("fail", "info", "risk", "stress_dd_exceeded", "crash_2008 dd 0.45",
                            {"scenarios": {"crash_2008": {"max_drawdown": 0.45}}}),
            "benchmark": _rule("pass", "soft", "quant", "ok", "beats benchmark"),
            "cohort": _rule("warn", "soft", "quant", "cohort_top_k_exceeded", "rank 7 of 10"),
        },
    },
    "summary": {"status": "fail", "recommended_stage": "backtest_only"},
}
# fail → warn → pass, then blocking → soft → info, then name
EXPECTED_CORE_ORDER = ["risk_constraint", "robustness", "performance", "data_currency", "sample"]
EXPECTED_EXTENDED_ORDER = ["stress", "cohort", "benchmark"]

METRICS = {
    "returns": {
        "sharpe": 1.234567891, "sharpe_per_period": 0.0777, "max_drawdown": 0.31,
        "gain_to_pain_ratio": None, "time_under_water_ratio": 0.62, "sortino_ratio": 1.9,
        "var_p01": 0.031, "es_p01": 0.042, "max_time_under_water_days": 211, "skew": -0.4,
        "excess_kurtosis": 3.1,
    },
    "sample": {
        "effective_history_years": 4.0, "n_trades_total": 12840, "n_trades_per_year": 3210.0,
        "regime_coverage": {"low_vol": 0.33, "mid_vol": 0.34, "high_vol": 0.33},
    },
    "risk": {"adv_utilization_p95": 0.07, "participation_rate_p95": None,
             "capacity_estimate_base": 142857142.86},
    "robustness": {
        "deflated_sharpe_ratio": 0.41, "sharpe_first_half": 1.5, "sharpe_second_half": 0.9,
        "probabilistic_sharpe_ratio": 0.97, "min_track_record_years": None, "cv_folds": 5,
        "cv_sharpe_mean": 1.1, "cv_sharpe_std": 0.00001234,
    },
    "benchmark": {"sharpe": 0.8, "max_drawdown": 0.22, "volatility": 0.15,
                  "tracking_error": 0.06},
    "diagnostics": {
        "strategy_complexity": 2.94, "search_intensity": 25, "returns_source": "backtester-v3",
        "validation_health": {"metric_coverage_ratio": 0.9167, "rules_executed_ratio": 1.0,
                              "validation_error_count": 0},
        "extra_metrics": {"turnover_annual": 14.2, "venue": "XETRA"},
        "metric_notes": {
            "returns.gain_to_pain_ratio": "no losing period",
            "risk.participation_rate_p95": "trades log has no bar_volume",
            "robustness.min_track_record_years": "Sharpe at or below the 0 benchmark",
            "robustness.deflated_sharpe_ratio": "V = sigma_SR^2: no trial Sharpes given",
        },
    },
}
EXPECTED_PATHS = [
    *(f"returns.{k}" for k in METRICS["returns"]),
    "sample.effective_history_years", "sample.n_trades_total", "sample.n_trades_per_year",
    "sample.regime_coverage.low_vol", "sample.regime_coverage.mid_vol",
    "sample.regime_coverage.high_vol",
    *(f"risk.{k}" for k in METRICS["risk"]),
    *(f"robustness.{k}" for k in METRICS["robustness"]),
    *(f"benchmark.{k}" for k in METRICS["benchmark"]),
    "diagnostics.strategy_complexity", "diagnostics.search_intensity",
    "diagnostics.returns_source", "diagnostics.validation_health.metric_coverage_ratio",
    "diagnostics.validation_health.rules_executed_ratio",
    "diagnostics.validation_health.validation_error_count",
    "diagnostics.extra_metrics.turnover_annual", "diagnostics.extra_metrics.venue",
]

CARD = load_model_card("""\
strategy_id: momo_eu
version: "2.1"
owner: quant-desk
objective: Capture 3-12 month momentum in liquid EU equities.
data_overview: Daily adjusted closes 2010-2024 from the primary listing.
key_assumptions:
  - Momentum premium persists net of costs
  - Fills at the close within 10% of ADV
key_limitations:
  - Crashes in sharp market reversals
universe: STOXX 600 constituents
features: [mom_12_1, vol_63]
""")

OVERRIDES = [
    {"override_status": "approved", "override_reason": "desk head accepts drawdown for pilot",
     "override_actor": "risk.lead", "override_timestamp": "2025-02-01T09:00:00Z",
     "review_due_at": "2025-03-03T09:00:00Z", "review_overdue": True},
    {"override_status": "rejected", "override_reason": "first request incomplete",
     "override_actor": "risk.analyst", "override_timestamp": "2025-01-15T09:00:00Z",
     "review_due_at": None, "review_overdue": False},
]


def _returns(n=756, seed=7):
    rng = np.random.default_rng(seed)
    index = pd.bdate_range("2021-01-04", periods=n)
    return pd.Series(rng.normal(0.0005, 0.011, n), index=index, name="ret")


def _markdown(**kwargs):
    args = dict(run=RUN, evaluation=EVALUATION, metrics=METRICS, model_card=CARD,
                overrides=OVERRIDES, generated_at=GENERATED_AT)
    args.update(kwargs)
    return render_validation_report_markdown(
        args.pop("run"), args.pop("evaluation"), args.pop("metrics"), args.pop("model_card"),
        args.pop("overrides"), **args)


def _section(markdown: str, heading: str) -> str:
    start = markdown.index(f"## {heading}")
    end = markdown.find("\n## ", start + 1)
    return markdown[start:] if end < 0 else markdown[start:end]


def _table_rows(section: str) -> list[list[str]]:
    rows = []
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
            rows.append([c.strip() for c in cells])
    return rows[1:]  # drop the header


def test_sections_appear_in_order():
    markdown = _markdown()
    headings = [line for line in markdown.splitlines() if line.startswith("#")]
    assert headings[0] == "# Validation report — momo_eu @ eu_equities"
    top = [h for h in headings if h.startswith("## ")]
    assert top == [
        "## 0. Summary",
        "## 1. Scope & objective",
        "## 2. Model summary (model card)",
        "## 3. Validation profile & methods",
        "## 4. Results (rule outcomes)",
        "## 4-1. Extended validation",
        "## 5. Metrics",
        "## 6. Overrides",
        "## 7. Benchmark comparison",
        "## 8. Limitations & recommendations",
    ]


def test_summary_names_the_run_and_the_policy():
    summary = _section(_markdown(), "0. Summary")
    for expected in ("**Status:** FAIL", "**Recommended stage:** backtest_only",
                     "**World:** eu_equities", "**Strategy:** momo_eu",
                     "**Run ID:** bt-2025-06-01", "**Campaign ID:** cmp-7", "**Stage:** backtest",
                     "**Risk tier:** high", "**Model card version:** 2.1",
                     "**Validation profile:** backtest", "**Policy version:** 4",
                     f"**Ruleset hash:** sha256:{'ab' * 32}",
                     "**Rule outcomes:** 3 fail (1 blocking), 2 warn, 3 pass",
                     "**Created at:** 2025-06-01T08:00:00Z", "**Updated at:** 2025-06-01T08:05:00Z",
                     f"**Report generated at:** {GENERATED_AT}"):
        assert expected in summary


def test_rule_tables_are_sorted_fail_warn_pass_then_severity_then_name():
    markdown = _markdown()
    core = _table_rows(_section(markdown, "4. Results"))
    extended = _table_rows(_section(markdown, "4-1. Extended validation"))
    assert [row[0] for row in core] == EXPECTED_CORE_ORDER
    assert [row[0] for row in extended] == EXPECTED_EXTENDED_ORDER
    assert core[0] == ["risk_constraint", "FAIL", "blocking", "risk", "max_drawdown_exceeded",
                       "max drawdown 0.31 &gt; 0.25"]
    assert [row[1] for row in core] == ["FAIL", "FAIL", "WARN", "PASS", "PASS"]


def test_rule_result_objects_are_accepted_like_dicts():
    results = {name: RuleResult.from_dict(r)
               for name, r in EVALUATION["validation"]["results"].items()}
    evaluation = {**EVALUATION, "validation": {**EVALUATION["validation"], "results": results}}
    assert _markdown(evaluation=evaluation) == _markdown()


def test_every_metric_path_appears_with_no_row_cut():
    assert len(EXPECTED_PATHS) > 30
    rows = _table_rows(_section(_markdown(), "5. Metrics"))
    paths = [row[0] for row in rows]
    assert sorted(paths) == sorted(EXPECTED_PATHS) and len(paths) == len(EXPECTED_PATHS)
    # blocks in §5 order, core metrics first within a block, then alphabetical
    assert paths[:6] == ["returns.sharpe", "returns.max_drawdown", "returns.gain_to_pain_ratio",
                         "returns.time_under_water_ratio", "returns.es_p01",
                         "returns.excess_kurtosis"]
    blocks = [p.split(".")[0] for p in paths]
    assert list(dict.fromkeys(blocks)) == ["returns", "sample", "risk", "robustness", "benchmark",
                                           "diagnostics"]
    values = {row[0]: row[1] for row in rows}
    assert values["returns.sharpe"] == "1.23457"
    assert values["sample.n_trades_total"] == "12,840"
    assert values["risk.capacity_estimate_base"] == "142,857,143"
    assert values["robustness.cv_sharpe_std"] == "1.234e-05"
    assert values["diagnostics.returns_source"] == "backtester-v3"
    core_marked = {row[0] for row in rows if row[2] == "yes"}
    assert core_marked == set(CORE_METRIC_PATHS)


def test_null_metrics_show_their_note():
    rows = {row[0]: row for row in _table_rows(_section(_markdown(), "5. Metrics"))}
    assert rows["returns.gain_to_pain_ratio"][1:] == ["n/a", "yes", "no losing period"]
    assert rows["risk.participation_rate_p95"][3] == "trades log has no bar_volume"
    assert rows["robustness.min_track_record_years"][3] == "Sharpe at or below the 0 benchmark"
    # a note on a computed value is shown too
    assert rows["robustness.deflated_sharpe_ratio"][1:] == [
        "0.41", "yes", "V = sigma_SR^2: no trial Sharpes given"]
    recommendations = _section(_markdown(), "8. Limitations")
    assert "returns.gain_to_pain_ratio: no losing period" in recommendations


def test_null_without_a_note_says_so_and_a_note_without_a_value_gets_a_row():
    metrics = {"returns": {"sharpe": None},
               "diagnostics": {"metric_notes": {"sample.n_trades_total": "no trades log"}}}
    rows = {row[0]: row for row in _table_rows(_section(_markdown(metrics=metrics), "5. Metrics"))}
    assert rows["returns.sharpe"][1:] == ["n/a", "yes", "null; no reason recorded"]
    assert rows["sample.n_trades_total"][1:] == ["n/a", "yes", "no trades log"]


def test_registry_card_fields_appear_in_scope_and_model_summary():
    markdown = _markdown()
    scope = _section(markdown, "1. Scope & objective")
    model = _section(markdown, "2. Model summary")
    assert "**Objective:** Capture 3-12 month momentum in liquid EU equities." in scope
    assert "**Universe:** STOXX 600 constituents" in scope
    assert "**Owner:** quant-desk" in scope
    assert "**Data overview:** Daily adjusted closes 2010-2024 from the primary listing." in model
    assert ("  - Momentum premium persists net of costs\n"
            "  - Fills at the close within 10% of ADV") in model
    assert "  - Crashes in sharp market reversals" in model
    assert "  - mom_12_1\n  - vol_63" in model
    assert "Model card fields not provided" not in markdown
    assert "Crashes in sharp market reversals" in _section(markdown, "8. Limitations")


def test_card_keys_outside_the_schema_are_shown_with_a_hint():
    card = load_model_card("strategy_id: momo_eu\nassumptions: [old name]\n")
    model = _section(_markdown(model_card=card), "2. Model summary")
    assert "**Key assumptions:** none stated" in model
    assert "**assumptions:** \\[old name\\]" in model
    assert "did you mean 'key_assumptions'?" in model


def test_a_missing_card_is_called_out():
    markdown = _markdown(model_card=None)
    assert "No model card is registered for strategy momo_eu" in _section(markdown, "1. Scope")
    assert "Write a model card (model_cards/momo_eu.yaml)" in _section(markdown, "8. Limitations")


def test_overrides_show_due_date_and_overdue_flag_in_log_order():
    section = _section(_markdown(), "6. Overrides")
    rows = _table_rows(section)
    assert rows == [
        ["rejected", "risk.analyst", "2025-01-15T09:00:00Z", "first request incomplete", "n/a",
         "no", ""],
        ["approved", "risk.lead", "2025-02-01T09:00:00Z", "desk head accepts drawdown for pilot",
         "2025-03-03T09:00:00Z", "OVERDUE", ""],
    ]
    assert "never changes the computed status (here FAIL)" in section
    summary = _section(_markdown(), "0. Summary")
    assert "**Latest override:** approved, re-review due 2025-03-03T09:00:00Z (OVERDUE)" in summary
    assert "re-review was due 2025-03-03T09:00:00Z" in _section(_markdown(), "8. Limitations")


def test_benchmark_comparison_pairs_strategy_and_benchmark_values():
    rows = _table_rows(_section(_markdown(), "7. Benchmark comparison"))
    assert rows == [
        ["sharpe", "1.23457", "0.8", "+0.434568"],
        ["max_drawdown", "0.31", "0.22", "+0.09"],
    ]
    section = _section(_markdown(), "7. Benchmark comparison")
    assert "**benchmark.volatility:** 0.15" in section
    assert "No benchmark" in _section(_markdown(metrics={"returns": {}}), "7. Benchmark")


def test_recommendation_explains_the_stage_and_never_sets_live():
    section = _section(_markdown(), "8. Limitations")
    assert "**Recommended stage:** backtest_only — Keep the strategy in backtest." in section
    assert "- risk_constraint (max_drawdown_exceeded): max drawdown 0.31 &gt; 0.25" in section
    assert "- robustness (dsr_below_min)" in _section(section, "8.").split(
        "Other findings")[1]
    assert "Nothing in this report or in the validation pipeline sets a strategy live" in section
    candidate = {**EVALUATION, "summary": {"status": "pass",
                                           "recommended_stage": "paper_ok_live_candidate"}}
    text = _section(_markdown(evaluation=candidate), "8. Limitations")
    assert "candidate for live trading" in text and "explicit operator decision" in text


def test_markdown_is_deterministic_and_independent_of_metric_key_order():
    first = _markdown()
    assert first == _markdown()
    shuffled = {block: dict(reversed(list(values.items())))
                for block, values in reversed(list(METRICS.items()))}
    assert _markdown(metrics=shuffled) == first
    later = _markdown(generated_at="2025-07-01T00:00:00+00:00")
    changed = [(a, b) for a, b in zip(first.splitlines(), later.splitlines()) if a != b]
    assert changed == [(f"- **Report generated at:** {GENERATED_AT}",
                        "- **Report generated at:** 2025-07-01T00:00:00+00:00")]


def test_markdown_input_cannot_break_tables_or_inject_html_and_links():
    evaluation = {"validation": {"results": {"sample": _rule(
        "fail", "blocking", "quant", "x|y",
        "line one\nline two | [click](javascript:alert(1)) <img>")}},
        "summary": {"status": "fail"}}
    markdown = _markdown(evaluation=evaluation)
    rows = _table_rows(_section(markdown, "4. Results"))
    assert len(rows) == 1 and len(rows[0]) == 6
    assert rows[0][5] == "line one line two \\| \\[click\\](javascript:alert(1)) &lt;img&gt;"
    assert "<img>" not in markdown


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.rows, self.scripts, self.text = [], [], 0, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        if tag == "tr" and attrs.get("class"):
            self.rows.append(attrs["class"])
        if tag == "script":
            self.scripts += 1

    def handle_data(self, data):
        self.text.append(data)


def _parse(html: str) -> _Collector:
    collector = _Collector()
    collector.feed(html)
    return collector


def test_html_escapes_script_from_the_card():
    card = load_model_card(
        "strategy_id: momo_eu\nobjective: '<script>alert(\"x\")</script> & more'\n"
        "key_limitations: ['<img src=x onerror=alert(1)>']\n")
    page = render_validation_report_html(RUN, EVALUATION, METRICS, card, OVERRIDES,
                                         generated_at=GENERATED_AT)
    assert "<script>" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; more" in page
    parsed = _parse(page)
    assert parsed.scripts == 0
    assert '<script>alert("x")</script> & more' in "".join(parsed.text)
    assert "script-src" not in page and "default-src 'none'" in page


def test_html_rule_rows_are_colour_coded_in_sorted_order():
    page = render_validation_report_html(RUN, EVALUATION, METRICS, CARD, OVERRIDES,
                                         generated_at=GENERATED_AT)
    rule_rows = [c for c in _parse(page).rows if c in ("fail", "warn", "pass")]
    assert rule_rows[:5] == ["fail", "fail", "warn", "pass", "pass"]
    assert rule_rows[5:8] == ["fail", "warn", "pass"]
    assert "tr.fail td, tr.overdue td { background: #fdecea; }" in page
    assert 'class="banner status-fail"' in page
    assert "overdue" in _parse(page).rows


def _decoded_pngs(page: str) -> list[bytes]:
    sources = [img["src"] for img in _parse(page).images]
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    return [base64.b64decode(s.split(",", 1)[1]) for s in sources]


def _assert_real_chart(png: bytes, min_width=600):
    assert png.startswith(PNG_SIGNATURE)
    assert len(png) < 100_000
    pixels = imread(io.BytesIO(png))
    height, width = pixels.shape[:2]
    assert width >= min_width and height >= 200
    colours = np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)
    assert len(colours) > 20  # lines, text, fills — not a blank canvas
    assert float(pixels[..., :3].std()) > 0.02


def test_html_embeds_equity_drawdown_and_rolling_sharpe_pictures():
    page = render_validation_report_html(RUN, EVALUATION, METRICS, CARD, OVERRIDES,
                                         returns=_returns(), generated_at=GENERATED_AT)
    pngs = _decoded_pngs(page)
    assert len(pngs) == 2
    for png in pngs:
        _assert_real_chart(png)
    titles = [img["alt"] for img in _parse(page).images]
    assert titles == ["Equity curve and drawdown", "Rolling Sharpe (63 periods, annualised)"]
    assert page.index("Equity curve and drawdown") < page.index("<table><thead><tr><th>Metric")


def test_equity_and_drawdown_follow_the_definition():
    returns = pd.Series([0.10, -0.20, 0.05, 0.30, -0.10])
    equity, drawdown = equity_and_drawdown(returns)
    expected_equity = np.cumprod(1 + returns.to_numpy())
    np.testing.assert_allclose(equity.to_numpy(), expected_equity, rtol=0, atol=1e-12)
    peak = np.maximum.accumulate(np.maximum(expected_equity, 1.0))
    np.testing.assert_allclose(drawdown.to_numpy(), 1 - expected_equity / peak, atol=1e-12)
    assert drawdown.iloc[1] == pytest.approx(0.2)  # 1.1 → 0.88
    # the peak starts at 1: an initial loss is a drawdown from the starting capital
    _, first_loss = equity_and_drawdown([-0.05, 0.01])
    assert first_loss.iloc[0] == pytest.approx(0.05)


def test_rolling_sharpe_matches_a_direct_computation_and_gaps_flat_windows():
    returns = _returns(200)
    returns.iloc[100:140] = 0.001  # a flat stretch: zero dispersion
    values = rolling_sharpe(returns, 63, periods_per_year=252)
    assert values.iloc[:62].isna().all()
    for end in (62, 99, 150, 199):
        window = returns.iloc[end - 62:end + 1].to_numpy()
        expected = window.mean() / window.std(ddof=1) * np.sqrt(252)
        assert values.iloc[end] == pytest.approx(expected, rel=1e-9)
    short = rolling_sharpe(returns, 30)  # windows ending at 129..139 lie inside the flat stretch
    assert short.iloc[129:140].isna().all()
    assert short.iloc[[128, 140]].notna().all()


def test_charts_are_small_real_pngs_and_deterministic():
    long_returns = _returns(2520, seed=3)
    frame = pd.DataFrame({"date": long_returns.index, "ret": long_returns.to_numpy(),
                          "benchmark_ret": _returns(2520, seed=4).to_numpy()})
    equity = equity_drawdown_png(frame)
    rolling = rolling_sharpe_png(long_returns, 63)
    contributions = risk_contributions_png({"a": 0.012, "b": 0.004, "c": -0.002, "d": 0.0})
    for png in (equity, rolling, contributions):
        _assert_real_chart(png)
    assert equity == equity_drawdown_png(frame)
    assert equity != equity_drawdown_png(long_returns)  # the benchmark line is drawn


def test_charts_render_identically_from_several_threads():
    series = [_returns(300, seed=s) for s in range(4)]
    sequential = [equity_drawdown_png(s) for s in series]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(equity_drawdown_png, series))
    assert parallel == sequential


def test_charts_handle_too_short_series_without_failing():
    png = rolling_sharpe_png(_returns(20), 63)
    assert png.startswith(PNG_SIGNATURE)
    assert equity_drawdown_png([0.01]).startswith(PNG_SIGNATURE)


def test_rendering_markdown_does_not_import_matplotlib():
    code = ("import sys; from qmtl_validation.core.reports import render_validation_report_markdown"
            " as r; r({}, None, {}); assert 'matplotlib' not in sys.modules, 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_write_report_files_lays_out_files_atomically(tmp_path):
    paths = write_report_files(tmp_path, RUN, EVALUATION, METRICS, CARD, OVERRIDES,
                               returns=_returns(), generated_at=GENERATED_AT)
    folder = tmp_path / "eu_equities" / "momo_eu" / "bt-2025-06-01"
    assert paths == {"report.md": folder / "report.md", "report.html": folder / "report.html",
                     "equity.png": folder / "equity.png"}
    assert sorted(p.name for p in folder.iterdir()) == ["equity.png", "report.html", "report.md"]
    markdown = paths["report.md"].read_text(encoding="utf-8")
    assert "![Equity curve and drawdown](equity.png)" in markdown
    assert markdown == _markdown().replace(
        "## 5. Metrics\n\n", "## 5. Metrics\n\n![Equity curve and drawdown](equity.png)\n\n")
    _assert_real_chart(paths["equity.png"].read_bytes())
    assert len(_decoded_pngs(paths["report.html"].read_text(encoding="utf-8"))) == 2


def test_write_report_files_rejects_ids_that_would_escape_the_root(tmp_path):
    with pytest.raises(InvalidIdentifierError, match="strategy_id '../../x'"):
        write_report_files(tmp_path, {**RUN, "strategy_id": "../../x"}, EVALUATION, METRICS)
    assert list(tmp_path.iterdir()) == []


SNAPSHOT = {
    "world_id": "eu_equities", "version": "v42", "as_of": "2025-06-30T11:55:00Z",
    "hash": "sha256:" + "cd" * 32, "provenance": {"actor": "risk-engine", "stage": "live",
                                                  "source": "nightly"},
    "ttl_sec": 900, "weights": {"momo_eu": 0.5, "carry_fx": 0.3, "hedge": 0.2},
    "covariance": {"momo_eu,momo_eu": 0.0004},
}
PORTFOLIO_RISK = {
    "volatility": 0.0123, "var": 0.0286, "es": 0.0328,
    "component_var": {"momo_eu": 0.02, "carry_fx": 0.0106, "hedge": -0.002},
    "incremental_var": {"new_strat": 0.0011}, "incremental_es": {"new_strat": 0.0013},
    "imputed_pairs": [["carry_fx", "hedge"]],
}
STRESS_ROWS = [
    {"scenario": "rates_shock", "strategy_id": "momo_eu", "pnl": -0.021, "max_drawdown": 0.05},
    {"scenario": "crash_2008", "strategy_id": "momo_eu", "pnl": -0.12, "max_drawdown": 0.31,
     "status": "fail"},
]


def test_snapshot_report_shows_contributions_candidates_and_stress_pnl():
    markdown = render_snapshot_report_markdown(SNAPSHOT, PORTFOLIO_RISK, STRESS_ROWS,
                                               generated_at=GENERATED_AT)
    contributions = _table_rows(_section(markdown, "2. Risk contributions"))
    assert contributions == [
        ["momo_eu", "0.5", "0.02", "69.9%"],
        ["carry_fx", "0.3", "0.0106", "37.1%"],
        ["hedge", "0.2", "-0.002", "-7.0%"],
    ]
    assert _table_rows(_section(markdown, "3. Candidates")) == [["new_strat", "0.0011", "0.0013"]]
    stress = _table_rows(_section(markdown, "4. Stress"))
    assert stress == [["crash_2008", "momo_eu", "-0.12", "0.31", "fail"],
                      ["rates_shock", "momo_eu", "-0.021", "0.05", "n/a"]]
    assert "**Producer:** risk-engine / live / nightly" in markdown
    assert "- carry_fx,hedge" in markdown
    assert "momo_eu,momo_eu" not in markdown  # the covariance is not dumped
    page = render_snapshot_report_html(SNAPSHOT, PORTFOLIO_RISK, STRESS_ROWS)
    (png,) = _decoded_pngs(page)
    _assert_real_chart(png)


def test_snapshot_report_without_risk_or_stress_says_so():
    document = build_snapshot_report({"world_id": "w", "version": "1"}, None, [])
    markdown = render_markdown(document)
    assert "No portfolio risk was computed" in markdown
    assert "No stress results in this snapshot." in markdown


RUN_ROWS = [
    {"strategy_id": "momo_eu", "run_id": "r1", "stage": "backtest", "status": "fail",
     "recommended_stage": "backtest_only", "policy_version": "4"},
    {"strategy_id": "carry_fx", "run_id": "r2", "stage": "paper", "status": "pass",
     "recommended_stage": "paper_ok_live_candidate", "policy_version": "4"},
    {"strategy_id": "carry_fx", "run_id": "r3", "stage": "backtest", "status": "warn",
     "recommended_stage": "paper_only", "policy_version": "3"},
    {"strategy_id": "<b>bad</b>", "run_id": "r4", "stage": "backtest", "status": "pass",
     "recommended_stage": "paper_only"},
]


def test_world_overview_counts_runs_and_lists_what_needs_attention():
    breaches = [{"world_id": "eu_equities", "started_at": "2025-06-30T10:00:00Z",
                 "lag_seconds": 1800}]
    overdue = [{"strategy_id": "momo_eu", "run_id": "r1", "override_status": "approved",
                "review_due_at": "2025-03-03"}]
    markdown = render_world_overview_markdown("eu_equities", RUN_ROWS, breaches, overdue,
                                              generated_at=GENERATED_AT)
    crosstab = _table_rows(_section(markdown, "1. Runs by status"))
    assert crosstab == [["FAIL", "1", "0", "0", "1"], ["WARN", "0", "1", "0", "1"],
                        ["PASS", "0", "1", "1", "2"]]
    runs = _table_rows(_section(markdown, "2. Runs"))
    assert [r[:2] for r in runs] == [["momo_eu", "r1"], ["carry_fx", "r3"],
                                     ["&lt;b&gt;bad&lt;/b&gt;", "r4"], ["carry_fx", "r2"]]
    assert runs[0][-1] == "[report](momo_eu/r1/report.html)"
    assert runs[2][-1] == ""  # not an identifier: no report folder to link
    assert _table_rows(_section(markdown, "3. Open freshness breaches")) == [
        ["eu_equities", "2025-06-30T10:00:00Z", "1,800"]]
    assert _table_rows(_section(markdown, "4. Overdue")) == [
        ["momo_eu", "r1", "approved", "2025-03-03"]]
    page = render_world_overview_html("eu_equities", RUN_ROWS, breaches, overdue)
    assert '<a href="momo_eu/r1/report.html">report</a>' in page
    assert "<b>bad</b>" not in page and 'class="banner status-fail"' in page


def test_report_files_for_snapshot_and_overview_land_beside_run_reports(tmp_path):
    snapshot_paths = write_snapshot_report_files(tmp_path, SNAPSHOT, PORTFOLIO_RISK, STRESS_ROWS,
                                                 generated_at=GENERATED_AT)
    folder = tmp_path / "eu_equities" / "_snapshots" / "v42"
    assert snapshot_paths == {"report.md": folder / "report.md",
                              "report.html": folder / "report.html",
                              "risk_contributions.png": folder / "risk_contributions.png"}
    assert "(risk_contributions.png)" in snapshot_paths["report.md"].read_text(encoding="utf-8")
    overview = write_world_overview(tmp_path, "eu_equities", RUN_ROWS)
    assert overview == tmp_path / "eu_equities" / "_overview.html"
    assert overview.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_report_of_an_empty_run_still_renders_every_section():
    markdown = render_markdown(build_validation_report({}, None, None))
    assert markdown.count("\n## ") == 10
    assert "No core rule results recorded." in markdown
    assert "No metrics recorded for this run." in markdown
    assert "**Status:** N/A" in markdown
