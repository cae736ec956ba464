"""The reference pages cannot drift from the code, and the hand-written pages cover what they must."""

from __future__ import annotations

import re

import pytest

from qmtl_validation import docs_gen
from qmtl_validation.settings import REPO_ROOT

DOCS = REPO_ROOT / "docs"
# Pages linked from docs/ that other areas of the project own (written alongside this one).
OWNED_ELSEWHERE = {"OPERATIONS.md", "SCALING.md", "PERFORMANCE.md"}


def test_generated_pages_match_the_code():
    stale = docs_gen.stale_pages()
    assert not stale, f"out of date: {stale}; run `.venv/bin/python -m qmtl_validation.docs_gen`"


def test_check_mode_fails_on_a_drifted_page(tmp_path):
    docs_gen.write_pages(tmp_path)
    assert docs_gen.stale_pages(tmp_path) == []
    page = tmp_path / "POLICY_DSL.md"
    page.write_text(page.read_text().replace("`selection.top_k.k`", "`selection.top_k.kk`"))
    assert docs_gen.stale_pages(tmp_path) == ["POLICY_DSL.md"]


def test_policy_reference_lists_every_key_with_type_default_and_description():
    from qmtl_validation.core.policy import policy_schema

    page = (DOCS / "POLICY_DSL.md").read_text()
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([^`]+)` \|.*$", page, re.M)}
    for entry in policy_schema():
        assert entry.path in rows, entry.path
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", rows[entry.path])[1:-1]]
        assert len(cells) == 4 and all(cells), rows[entry.path]
    assert "`5m`" in rows["risk_hub.max_snapshot_lag"] and "**required**" in rows["selection.top_k.k"]


def test_policy_reference_example_is_a_valid_policy():
    from qmtl_validation.core.policy import load_policy

    page = (DOCS / "POLICY_DSL.md").read_text()
    example = page.split("```yaml\n", 1)[1].split("```", 1)[0]
    policy = load_policy(example, version="3")
    assert policy.risk_profile.fail_closed
    assert set(policy.validation_profiles) == {"backtest", "paper", "live"}


def test_warehouse_page_lists_every_table_and_column():
    from qmtl_validation.warehouse.tables import TABLES

    page = (DOCS / "WAREHOUSE.md").read_text()
    for name, spec in TABLES.items():
        section = page.split(f"## `{name}`", 1)[1].split("\n## ", 1)[0]
        for column in spec.columns:
            assert f"| `{column}` |" in section, (name, column)


def test_metrics_page_defines_every_metric_path():
    from qmtl_validation.core.health import CORE_METRIC_PATHS
    from qmtl_validation.core.metrics import METRIC_PATHS, NOTES_PATH

    page = (DOCS / "METRICS.md").read_text()
    for path in (*METRIC_PATHS, NOTES_PATH):
        assert re.search(rf"^\| `{re.escape(path)}`", page, re.M), path
    for path in CORE_METRIC_PATHS:
        assert re.search(rf"^\| `{re.escape(path)}` \*\*core\*\*", page, re.M), path
    for reference in ("Bailey & López de Prado", "Euler–Mascheroni", "0.9004"):
        assert reference in page


def test_cli_page_documents_every_subcommand_and_the_exit_codes():
    from qmtl_validation.cli import build_parser

    page = (DOCS / "CLI.md").read_text()
    parser = build_parser()
    commands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    for name in commands:
        assert f"## `{name}`" in page
    assert "2  usage error, or a threshold exceeded" in page


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.md")) + ["../README.md"])
def test_relative_links_resolve(page):
    path = (DOCS / page).resolve()
    text = path.read_text()
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" in target or target.startswith("mailto:"):
            continue
        resolved = (path.parent / target).resolve()
        if resolved.name in OWNED_ELSEWHERE and resolved.parent == DOCS:
            continue
        assert resolved.exists(), f"{page}: broken link {target}"


def test_docs_cover_every_topic_of_the_issue():
    index = (DOCS / "README.md").read_text()
    for page in ("QUICKSTART.md", "LANDING_ZONE.md", "POLICY_DSL.md", "METRICS.md", "WAREHOUSE.md",
                 "TROUBLESHOOTING.md", "OPERATIONS.md", "SCALING.md", "CLI.md"):
        assert f"]({page})" in index, page
    landing = (DOCS / "LANDING_ZONE.md").read_text()
    for topic in ("run.json", "returns.parquet", "trades", "Identifiers", "Size caps", "Quarantine", "conflict"):
        assert topic in landing, topic
    trouble = (DOCS / "TROUBLESHOOTING.md").read_text()
    for topic in ("did you mean", "backtest_only", "Could not set lock", "rejections", "no DuckDB catalog",
                  "signature", "freshness"):
        assert topic in trouble, topic
    readme = (REPO_ROOT / "README.md").read_text()
    assert "docs/README.md" in readme and "docs/QUICKSTART.md" in readme


def test_lineage_screenshot_is_a_png():
    data = (DOCS / "lineage.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
