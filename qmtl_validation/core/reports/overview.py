"""The world overview page: every run of a world at a glance, and what needs attention.

Inputs are plain data:

- ``runs``: one dict per run (typically the latest revision per run), with ``strategy_id``,
  ``run_id``, ``stage``, ``status``, ``recommended_stage`` and optionally ``policy_version``,
  ``updated_at``.
- ``open_breaches``: open freshness breaches (rows of ``freshness_breaches`` without an end),
  any columns.
- ``overdue_overrides``: rows of the override review queue whose review is overdue, any columns.

The page lives at ``<report root>/<world_id>/_overview.html`` (see ``reports.files``), so each run
links to its report at the relative path ``<strategy_id>/<run_id>/report.html``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from qmtl_validation.core.identifiers import IDENTIFIER_PATTERN
from qmtl_validation.core.reports._format import (
    MISSING,
    STATUS_RANK,
    as_mapping,
    format_timestamp,
    format_value,
    one_line,
    table_columns,
)
from qmtl_validation.core.reports.document import (
    Cell,
    Document,
    Fields,
    Link,
    Paragraph,
    Section,
    Table,
)

STAGES = ("backtest_only", "paper_only", "paper_ok_live_candidate")
STATUSES = ("fail", "warn", "pass")
BREACH_COLUMNS = ("world_id", "snapshot_version", "started_at", "lag_seconds", "max_lag_seconds",
                  "fallback_version")
OVERRIDE_COLUMNS = ("strategy_id", "run_id", "stage", "override_status", "override_actor",
                    "override_timestamp", "review_due_at", "override_reason")


def _text(value: Any) -> str:
    return MISSING if value is None or value == "" else one_line(str(value))


def report_href(strategy_id: Any, run_id: Any) -> str | None:
    """Relative link from the overview page to a run's HTML report; None for ids that are not
    valid identifiers (they can have no report folder)."""
    ids = (str(strategy_id), str(run_id))
    if all(IDENTIFIER_PATTERN.fullmatch(i) and i != ".." for i in ids):
        return f"{ids[0]}/{ids[1]}/report.html"
    return None


def _generic_table(rows: Sequence[Mapping[str, Any]], preferred: Sequence[str], row_class: str,
                   empty_text: str) -> Table:
    columns = table_columns(rows, preferred)
    return Table(
        tuple(columns),
        tuple(tuple(format_value(r.get(c)) for c in columns) for r in rows),
        row_classes=tuple(row_class for _ in rows),
        empty_text=empty_text,
    )


def build_world_overview(
    world_id: str,
    runs: Sequence[Mapping[str, Any]],
    open_breaches: Sequence[Mapping[str, Any]] = (),
    overdue_overrides: Sequence[Mapping[str, Any]] = (),
    *,
    generated_at: Any = None,
    link_reports: bool = True,
) -> Document:
    """The overview as a :class:`Document` (see the module docstring)."""
    runs = [as_mapping(r) for r in runs]
    breaches = [as_mapping(b) for b in open_breaches]
    overdue = [as_mapping(o) for o in overdue_overrides]

    def status_of(row: Mapping[str, Any]) -> str:
        return str(row.get("status") or "unknown").lower()

    def stage_of(row: Mapping[str, Any]) -> str:
        return str(row.get("recommended_stage") or "unknown")

    statuses = list(STATUSES) + sorted({status_of(r) for r in runs} - set(STATUSES))
    stages = list(STAGES) + sorted({stage_of(r) for r in runs} - set(STAGES))
    counts: dict[tuple[str, str], int] = {}
    for row in runs:
        key = (status_of(row), stage_of(row))
        counts[key] = counts.get(key, 0) + 1
    crosstab = tuple(
        (status.upper(), *(str(counts.get((status, stage), 0)) for stage in stages),
         str(sum(counts.get((status, stage), 0) for stage in stages)))
        for status in statuses
    )

    ordered = sorted(runs, key=lambda r: (STATUS_RANK.get(status_of(r), 3),
                                          str(r.get("strategy_id")), str(r.get("run_id"))))
    run_rows: list[tuple[Cell, ...]] = []
    for row in ordered:
        href = report_href(row.get("strategy_id"), row.get("run_id")) if link_reports else None
        report: Cell = Link("report", href) if href else ""
        run_rows.append((
            _text(row.get("strategy_id")), _text(row.get("run_id")), _text(row.get("stage")),
            status_of(row).upper(), stage_of(row), _text(row.get("policy_version")),
            format_timestamp(row.get("updated_at")), report,
        ))

    # The banner flags what needs an operator, not the strategies' own results: failing
    # strategies are the pipeline working, a stale risk picture is not.
    attention = "fail" if breaches else ("warn" if overdue else None)
    sections = (
        Section("0. Summary", (Fields((
            ("World", _text(world_id)),
            ("Runs", str(len(runs))),
            ("Strategies", str(len({str(r.get("strategy_id")) for r in runs}))),
            ("Open freshness breaches", str(len(breaches))),
            ("Overdue override reviews", str(len(overdue))),
            ("Generated at", format_timestamp(generated_at)),
        )),), "summary"),
        Section("1. Runs by status and recommended stage", (
            Table(("Status", *stages, "Total"), crosstab, row_classes=tuple(statuses)),
        ), "counts"),
        Section("2. Runs", (
            Table(("Strategy", "Run", "Stage", "Status", "Recommended stage", "Policy version",
                   "Updated at", "Report"), tuple(run_rows),
                  row_classes=tuple(status_of(r) for r in ordered),
                  empty_text="No runs recorded for this world."),
        ), "runs"),
        Section("3. Open freshness breaches", (
            _generic_table(breaches, BREACH_COLUMNS, "fail", "No open freshness breaches."),
        ), "breaches"),
        Section("4. Overdue override reviews", (
            _generic_table(overdue, OVERRIDE_COLUMNS, "overdue", "No overdue override reviews."),
            Paragraph("Approved overrides are re-reviewed within 30 days (live runs, high-tier "
                      "client-critical worlds) or 90 days; an override never changes a run's "
                      "computed status."),
        ), "overrides"),
    )
    return Document(title=f"World overview — {_text(world_id)}", sections=sections,
                    status=attention, subtitle=f"{len(runs)} runs")
