"""HTML rendering of report documents, and the public HTML entry points.

Each page is one standalone file: inline CSS, pictures embedded as base64 PNG data URIs, no
script, and a Content-Security-Policy that forbids scripts anyway. Every piece of input text is
HTML-escaped. Rule and run tables are colour-coded by status (fail red, warn amber, pass green).
"""

from __future__ import annotations

import base64
import html
from typing import Any, Mapping, Sequence

from qmtl_validation.core.model_cards import ModelCard
from qmtl_validation.core.reports.charts import (
    DEFAULT_ROLLING_WINDOW,
    risk_contributions_png,
    run_chart_pngs,
)
from qmtl_validation.core.reports.document import (
    Block,
    Bullets,
    Document,
    Fields,
    Image,
    Link,
    Paragraph,
    Section,
    Subheading,
    Table,
)
from qmtl_validation.core.reports.overview import build_world_overview
from qmtl_validation.core.reports.snapshot import (
    RISK_CONTRIBUTIONS_CHART_TITLE,
    build_snapshot_report,
    component_var,
)
from qmtl_validation.core.reports.validation import build_validation_report

_CSS = """
:root { --fail: #c62828; --warn: #ef8f00; --pass: #2e7d32; --ink: #1d2430; --muted: #5f6b7a; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--ink); background: #f6f7f9; }
header.banner { padding: 20px 32px; background: #fff; border-bottom: 4px solid #9aa5b1; }
header.banner.status-fail { border-color: var(--fail); }
header.banner.status-warn { border-color: var(--warn); }
header.banner.status-pass { border-color: var(--pass); }
header h1 { margin: 0; font-size: 22px; }
header .subtitle { margin: 2px 0 0; color: var(--muted); }
.badge { display: inline-block; padding: 2px 10px; border-radius: 10px; font-weight: 600;
         font-size: 12px; letter-spacing: .04em; color: #fff; background: #9aa5b1;
         vertical-align: middle; margin-left: 8px; }
.badge.status-fail { background: var(--fail); } .badge.status-warn { background: var(--warn); }
.badge.status-pass { background: var(--pass); }
nav { padding: 8px 32px; background: #fff; border-bottom: 1px solid #e3e6ea; font-size: 13px; }
nav a { margin-right: 14px; color: #1f4e79; text-decoration: none; }
main { max-width: 1180px; margin: 0 auto; padding: 8px 32px 40px; }
section { background: #fff; border: 1px solid #e3e6ea; border-radius: 6px; padding: 4px 20px 16px;
          margin-top: 16px; }
h2 { font-size: 17px; border-bottom: 1px solid #eef0f3; padding-bottom: 6px; }
h3 { font-size: 14px; margin: 16px 0 6px; color: var(--muted); }
ul.fields { list-style: none; padding: 0; margin: 0; }
ul.fields > li { padding: 3px 0; border-bottom: 1px dotted #eef0f3; }
ul.fields .label { display: inline-block; min-width: 190px; color: var(--muted); }
ul.fields ul { margin: 2px 0 2px 190px; padding-left: 18px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid #eef0f3;
         vertical-align: top; }
th { background: #f0f2f5; font-weight: 600; }
td { overflow-wrap: anywhere; }
tr.fail td, tr.overdue td { background: #fdecea; }
tr.warn td { background: #fff4e5; }
tr.pass td { background: #edf7ee; }
tr.fail td:first-child, tr.overdue td:first-child { border-left: 4px solid var(--fail); }
tr.warn td:first-child { border-left: 4px solid var(--warn); }
tr.pass td:first-child { border-left: 4px solid var(--pass); }
tr.null td { color: var(--muted); font-style: italic; }
p.tone-fail { color: var(--fail); } p.tone-warn { color: #9a5b00; }
p.tone-pass { color: var(--pass); }
p.tone-note { padding: 8px 12px; background: #f0f2f5; border-radius: 4px; }
figure { margin: 12px 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eef0f3; }
figcaption { color: var(--muted); font-size: 12px; }
footer { text-align: center; color: var(--muted); font-size: 12px; padding: 16px; }
"""

# Defence in depth: even if some text escaped escaping, the page cannot run script or fetch.
_CSP = "default-src 'none'; img-src data: 'self'; style-src 'unsafe-inline'"


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _status_class(status: str | None) -> str:
    return f"status-{status}" if status in ("fail", "warn", "pass") else "status-unknown"


def _cell(cell: Any) -> str:
    if isinstance(cell, Link):
        return f'<a href="{_e(cell.href)}">{_e(cell.text)}</a>'
    return _e(cell)


def _block(block: Block) -> str:
    if isinstance(block, Paragraph):
        tone = f' class="tone-{_e(block.tone)}"' if block.tone else ""
        return f"<p{tone}>{_e(block.text)}</p>"
    if isinstance(block, Subheading):
        return f"<h3>{_e(block.text)}</h3>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{_e(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Fields):
        items = []
        for label, value in block.items:
            if isinstance(value, tuple):
                inner = "<ul>" + "".join(f"<li>{_e(v)}</li>" for v in value) + "</ul>"
                items.append(f'<li><span class="label">{_e(label)}</span>{inner}</li>')
            else:
                items.append(f'<li><span class="label">{_e(label)}</span> {_e(value)}</li>')
        return '<ul class="fields">' + "".join(items) + "</ul>"
    if isinstance(block, Table):
        if not block.rows:
            return f"<p>{_e(block.empty_text)}</p>"
        head = "".join(f"<th>{_e(c)}</th>" for c in block.columns)
        body = []
        for index, row in enumerate(block.rows):
            css = block.row_classes[index] if index < len(block.row_classes) else None
            attr = f' class="{_e(css)}"' if css else ""
            body.append(f"<tr{attr}>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>")
        return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    if isinstance(block, Image):
        if block.png is not None:
            source = "data:image/png;base64," + base64.b64encode(block.png).decode("ascii")
        elif block.href is not None:
            source = block.href
        else:
            return ""
        return (f'<figure><img src="{_e(source)}" alt="{_e(block.title)}">'
                f"<figcaption>{_e(block.title)}</figcaption></figure>")
    raise TypeError(f"unknown block {type(block).__name__}")


def _section(section: Section, index: int) -> str:
    anchor = section.anchor or f"section-{index}"
    blocks = "".join(_block(b) for b in section.blocks)
    return f'<section id="{_e(anchor)}"><h2>{_e(section.title)}</h2>{blocks}</section>'


def render_html(document: Document) -> str:
    """A :class:`Document` as a standalone HTML5 page."""
    status = document.status
    badge = (f'<span class="badge {_status_class(status)}">{_e(status.upper())}</span>'
             if status else "")
    subtitle = f'<p class="subtitle">{_e(document.subtitle)}</p>' if document.subtitle else ""
    nav = "".join(
        f'<a href="#{_e(s.anchor or f"section-{i}")}">{_e(s.title)}</a>'
        for i, s in enumerate(document.sections)
    )
    sections = "".join(_section(s, i) for i, s in enumerate(document.sections))
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(document.title)}</title><style>{_CSS}</style></head>\n"
        f'<body><header class="banner {_status_class(status)}"><h1>{_e(document.title)}{badge}</h1>'
        f"{subtitle}</header>\n<nav>{nav}</nav>\n<main>{sections}</main>\n"
        "<footer>qmtl_validation report. Nothing here sets a strategy live.</footer>"
        "</body></html>\n"
    )


def render_validation_report_html(
    run: Mapping[str, Any],
    evaluation: Mapping[str, Any] | None,
    metrics: Mapping[str, Any] | None,
    model_card: ModelCard | Mapping[str, Any] | None = None,
    overrides: Sequence[Mapping[str, Any]] | None = None,
    *,
    returns: Any = None,
    generated_at: Any = None,
    periods_per_year: float = 252,
    rolling_window: int = DEFAULT_ROLLING_WINDOW,
) -> str:
    """The validation report of one run as a standalone HTML page.

    Same content as the Markdown report, plus embedded pictures when ``returns`` (a Series with
    a date index, or a frame with ``date``/``ret``/optional ``benchmark_ret``) is given: equity
    curve with drawdown, and rolling Sharpe over ``rolling_window`` periods annualised with
    ``periods_per_year``.
    """
    pngs = run_chart_pngs(returns, periods_per_year=periods_per_year,
                          rolling_window=rolling_window) if returns is not None else {}
    images = [Image(title, png=png) for title, png in pngs.items()]
    document = build_validation_report(
        run, evaluation, metrics, model_card, overrides, generated_at=generated_at, images=images
    )
    return render_html(document)


def render_snapshot_report_html(
    snapshot: Mapping[str, Any],
    portfolio_risk: Mapping[str, Any] | None,
    stress_rows: Sequence[Mapping[str, Any]] | None = None,
    *,
    generated_at: Any = None,
) -> str:
    """The risk snapshot report as a standalone HTML page with the risk-contribution chart."""
    contributions = component_var(portfolio_risk)
    images = (
        [Image(RISK_CONTRIBUTIONS_CHART_TITLE, png=risk_contributions_png(contributions))]
        if contributions else []
    )
    return render_html(
        build_snapshot_report(
            snapshot, portfolio_risk, stress_rows, generated_at=generated_at, images=images
        )
    )


def render_world_overview_html(
    world_id: str,
    runs: Sequence[Mapping[str, Any]],
    open_breaches: Sequence[Mapping[str, Any]] = (),
    overdue_overrides: Sequence[Mapping[str, Any]] = (),
    *,
    generated_at: Any = None,
    link_reports: bool = True,
) -> str:
    """The world overview page (runs by status and recommended stage, open freshness breaches,
    overdue overrides) as a standalone HTML page; see ``reports.overview``."""
    return render_html(
        build_world_overview(
            world_id, runs, open_breaches, overdue_overrides,
            generated_at=generated_at, link_reports=link_reports,
        )
    )
