"""Validation, snapshot and world-overview reports (Markdown and standalone HTML) and their
pictures. Pure core: plain data in, text or bytes out; only ``files`` touches the filesystem.

Modules: ``validation`` / ``snapshot`` / ``overview`` decide what each report says (building a
``document.Document``); ``markdown`` and ``html`` render documents; ``charts`` draws PNGs with
matplotlib (Agg canvas, no pyplot); ``files`` lays reports out under a report root.

Names resolve lazily so that rendering Markdown never imports matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

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

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module_name}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
