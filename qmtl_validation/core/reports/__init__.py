"""Validation, snapshot and world-overview reports (Markdown and standalone HTML) and their
pictures. Pure core: plain data in, text or bytes out; only ``files`` touches the filesystem.

Modules: ``validation`` / ``snapshot`` / ``overview`` decide what each report says (building a
``document.Document``); ``markdown`` and ``html`` render documents; ``charts`` draws PNGs with
matplotlib (Agg canvas, no pyplot); ``files`` lays reports out under a report root.

Names resolve lazily so that rendering Markdown never imports matplotlib.
"""

from __future__ import annotations

from qmtl_validation._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "render_validation_report_markdown": "markdown",
    "render_snapshot_report_markdown": "markdown",
    "render_world_overview_markdown": "markdown",
    "render_markdown": "markdown",
    "render_validation_report_html": "html",
    "render_snapshot_report_html": "html",
    "render_world_overview_html": "html",
    "render_html": "html",
    "equity_drawdown_png": "charts",
    "rolling_sharpe_png": "charts",
    "risk_contributions_png": "charts",
    "rolling_sharpe": "charts",
    "build_validation_report": "validation",
    "metric_rows": "validation",
    "build_snapshot_report": "snapshot",
    "build_world_overview": "overview",
    "render_validation_report_files": "files",
    "write_report_files": "files",
    "render_snapshot_report_files": "files",
    "write_snapshot_report_files": "files",
    "write_world_overview": "files",
    "run_report_dir": "files",
    "snapshot_report_dir": "files",
    "world_overview_path": "files",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
