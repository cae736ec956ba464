"""Markdown rendering of report documents, and the public Markdown entry points.

The output is deterministic (same inputs, same text) so it can be snapshot-tested and shown as a
Dagster metadata preview. Input text is escaped so it cannot break the layout (``|`` in a table
cell, a line break in a bullet) or inject links or raw HTML (``[``, ``]``, ``<``, ``>``).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence
from urllib.parse import quote

from qmtl_validation.core.model_cards import ModelCard
from qmtl_validation.core.reports._format import one_line
from qmtl_validation.core.reports.document import (
    Block,
    Bullets,
    Document,
    Fields,
    Image,
    Link,
    Paragraph,
    Subheading,
    Table,
)
from qmtl_validation.core.reports.overview import build_world_overview
from qmtl_validation.core.reports.snapshot import build_snapshot_report
from qmtl_validation.core.reports.validation import build_validation_report

_ESCAPES = str.maketrans({"\\": "\\\\", "[": "\\[", "]": "\\]", "<": "&lt;", ">": "&gt;"})


def escape_markdown(text: str) -> str:
    """One line of input text, safe to place in Markdown prose."""
    return one_line(str(text)).translate(_ESCAPES)


def _cell(cell: Any) -> str:
    if isinstance(cell, Link):
        return f"[{_cell(cell.text)}]({quote(cell.href, safe='/._-#')})"
    return escape_markdown(cell).replace("|", "\\|")


def _block(block: Block) -> str:
    if isinstance(block, Paragraph):
        return escape_markdown(block.text)
    if isinstance(block, Subheading):
        return f"### {escape_markdown(block.text)}"
    if isinstance(block, Bullets):
        return "\n".join(f"- {escape_markdown(item)}" for item in block.items)
    if isinstance(block, Fields):
        lines = []
        for label, value in block.items:
            if isinstance(value, tuple):
                lines.append(f"- **{escape_markdown(label)}:**")
                lines.extend(f"  - {escape_markdown(item)}" for item in value)
            else:
                lines.append(f"- **{escape_markdown(label)}:** {escape_markdown(value)}")
        return "\n".join(lines)
    if isinstance(block, Table):
        if not block.rows:
            return escape_markdown(block.empty_text)
        lines = [
            "| " + " | ".join(_cell(c) for c in block.columns) + " |",
            "|" + "|".join("---" for _ in block.columns) + "|",
        ]
        lines.extend("| " + " | ".join(_cell(c) for c in row) + " |" for row in block.rows)
        return "\n".join(lines)
    if isinstance(block, Image):
        # Markdown never embeds image bytes (previews must stay small); it links a file if any.
        if block.href is None:
            return ""
        return f"![{escape_markdown(block.title)}]({quote(block.href, safe='/._-')})"
    raise TypeError(f"unknown block {type(block).__name__}")


def render_markdown(document: Document) -> str:
    """A :class:`Document` as GitHub-flavoured Markdown, ending with one newline."""
    parts = [f"# {escape_markdown(document.title)}"]
    if document.subtitle:
        parts.append(f"_{escape_markdown(document.subtitle)}_")
    for section in document.sections:
        parts.append(f"## {escape_markdown(section.title)}")
        parts.extend(text for text in (_block(b) for b in section.blocks) if text)
    return "\n\n".join(parts) + "\n"


def render_validation_report_markdown(
    run: Mapping[str, Any],
    evaluation: Mapping[str, Any] | None,
    metrics: Mapping[str, Any] | None,
    model_card: ModelCard | Mapping[str, Any] | None = None,
    overrides: Sequence[Mapping[str, Any]] | None = None,
    *,
    generated_at: Any = None,
    image_links: Mapping[str, str] | None = None,
) -> str:
    """The validation report of one run as Markdown (inputs: ``reports.validation`` docstring).

    ``generated_at`` is printed as given (``n/a`` when None) — the renderer never reads the clock,
    so equal inputs give equal text. ``image_links`` maps a chart title to a relative file path
    (e.g. ``{"Equity curve and drawdown": "equity.png"}``) linked at the top of section 5.
    """
    images = [Image(title, href=href) for title, href in (image_links or {}).items()]
    document = build_validation_report(
        run, evaluation, metrics, model_card, overrides, generated_at=generated_at, images=images
    )
    return render_markdown(document)


def render_snapshot_report_markdown(
    snapshot: Mapping[str, Any],
    portfolio_risk: Mapping[str, Any] | None,
    stress_rows: Sequence[Mapping[str, Any]] | None = None,
    *,
    generated_at: Any = None,
    image_links: Mapping[str, str] | None = None,
) -> str:
    """The risk snapshot report as Markdown (inputs: ``reports.snapshot`` docstring)."""
    images = [Image(title, href=href) for title, href in (image_links or {}).items()]
    return render_markdown(
        build_snapshot_report(
            snapshot, portfolio_risk, stress_rows, generated_at=generated_at, images=images
        )
    )


def render_world_overview_markdown(
    world_id: str,
    runs: Sequence[Mapping[str, Any]],
    open_breaches: Sequence[Mapping[str, Any]] = (),
    overdue_overrides: Sequence[Mapping[str, Any]] = (),
    *,
    generated_at: Any = None,
    link_reports: bool = True,
) -> str:
    """The world overview page as Markdown (inputs: ``reports.overview`` docstring)."""
    return render_markdown(
        build_world_overview(
            world_id, runs, open_breaches, overdue_overrides,
            generated_at=generated_at, link_reports=link_reports,
        )
    )
