"""Report files and where they live under a report root.

Layout (static files, browsable from the root; ``_`` prefixes cannot clash with identifiers, which
start with a letter or digit):

```
<root>/<world_id>/_overview.html                              world overview
<root>/<world_id>/<strategy_id>/<run_id>/report.md            validation report (Markdown)
<root>/<world_id>/<strategy_id>/<run_id>/report.html          validation report (HTML)
<root>/<world_id>/<strategy_id>/<run_id>/equity.png           equity curve and drawdown
<root>/<world_id>/_snapshots/<version>/report.md|report.html   risk snapshot report
<root>/<world_id>/_snapshots/<version>/risk_contributions.png
```

``render_*_files`` return ``{file name: bytes}`` so any store (local folder, S3) can write them;
``write_*`` write them to a local folder atomically (temp file in the same folder, then rename),
so a reader never sees half a report.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from qmtl_validation.core.identifiers import check_identifier
from qmtl_validation.core.model_cards import ModelCard
from qmtl_validation.core.reports.charts import (
    DEFAULT_ROLLING_WINDOW,
    EQUITY_CHART_TITLE,
    risk_contributions_png,
    run_chart_pngs,
)
from qmtl_validation.core.reports.document import Image
from qmtl_validation.core.reports.html import render_html
from qmtl_validation.core.reports.markdown import render_markdown
from qmtl_validation.core.reports.overview import build_world_overview
from qmtl_validation.core.reports.snapshot import (
    RISK_CONTRIBUTIONS_CHART_TITLE,
    build_snapshot_report,
    component_var,
)
from qmtl_validation.core.reports.validation import build_validation_report

REPORT_MARKDOWN = "report.md"
REPORT_HTML = "report.html"
EQUITY_PNG = "equity.png"
RISK_CONTRIBUTIONS_PNG = "risk_contributions.png"
OVERVIEW_HTML = "_overview.html"
SNAPSHOTS_FOLDER = "_snapshots"
FORMATS = ("md", "html")


def _formats(formats: Iterable[str]) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(formats))
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown or not chosen:
        raise ValueError(
            f"report formats {list(chosen)!r}: expected a non-empty subset of {FORMATS}"
        )
    return chosen


def run_report_dir(root: str | os.PathLike[str], world_id: str, strategy_id: str,
                   run_id: str) -> Path:
    """``<root>/<world>/<strategy>/<run>``; the ids are checked so none can escape the root."""
    return (Path(root) / check_identifier(world_id, "world_id")
            / check_identifier(strategy_id, "strategy_id") / check_identifier(run_id, "run_id"))


def snapshot_report_dir(root: str | os.PathLike[str], world_id: str, version: str) -> Path:
    return (Path(root) / check_identifier(world_id, "world_id") / SNAPSHOTS_FOLDER
            / check_identifier(version, "version"))


def world_overview_path(root: str | os.PathLike[str], world_id: str) -> Path:
    return Path(root) / check_identifier(world_id, "world_id") / OVERVIEW_HTML


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same folder and ``os.replace``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                         suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, target)
    except BaseException:
        try:
            os.unlink(temp_name)
        except FileNotFoundError:
            pass
        raise
    return target


def render_validation_report_files(
    run: Mapping[str, Any],
    evaluation: Mapping[str, Any] | None,
    metrics: Mapping[str, Any] | None,
    model_card: ModelCard | Mapping[str, Any] | None = None,
    overrides: Sequence[Mapping[str, Any]] | None = None,
    *,
    returns: Any = None,
    generated_at: Any = None,
    formats: Iterable[str] = FORMATS,
    periods_per_year: float = 252,
    rolling_window: int = DEFAULT_ROLLING_WINDOW,
) -> dict[str, bytes]:
    """The files of one run's report as ``{file name: bytes}``: ``report.md`` and/or
    ``report.html`` per ``formats``, plus ``equity.png`` when ``returns`` has values (the
    Markdown links it; the HTML embeds it and the rolling-Sharpe chart)."""
    chosen = _formats(formats)
    pngs = (run_chart_pngs(returns, periods_per_year=periods_per_year,
                           rolling_window=rolling_window) if returns is not None else {})
    files: dict[str, bytes] = {}
    # Without pictures both formats render the same document: build it once (a backfill renders
    # thousands of text-only reports).
    shared = None if pngs else build_validation_report(
        run, evaluation, metrics, model_card, overrides, generated_at=generated_at, images=[])
    if "md" in chosen:
        links = [Image(EQUITY_CHART_TITLE, href=EQUITY_PNG)] if pngs else []
        document = shared or build_validation_report(run, evaluation, metrics, model_card,
                                                     overrides, generated_at=generated_at,
                                                     images=links)
        files[REPORT_MARKDOWN] = render_markdown(document).encode("utf-8")
    if "html" in chosen:
        images = [Image(title, png=png) for title, png in pngs.items()]
        document = shared or build_validation_report(run, evaluation, metrics, model_card,
                                                     overrides, generated_at=generated_at,
                                                     images=images)
        files[REPORT_HTML] = render_html(document).encode("utf-8")
    if pngs:
        files[EQUITY_PNG] = pngs[EQUITY_CHART_TITLE]
    return files


def write_report_files(
    out_dir: str | os.PathLike[str],
    run: Mapping[str, Any],
    evaluation: Mapping[str, Any] | None,
    metrics: Mapping[str, Any] | None,
    model_card: ModelCard | Mapping[str, Any] | None = None,
    overrides: Sequence[Mapping[str, Any]] | None = None,
    **options: Any,
) -> dict[str, Path]:
    """Write one run's report under ``<out_dir>/<world>/<strategy>/<run>/`` atomically.

    ``options`` are those of :func:`render_validation_report_files` (``returns``,
    ``generated_at``, ``formats``, ``periods_per_year``, ``rolling_window``). Returns
    ``{file name: path written}``. Raises ``InvalidIdentifierError`` (a ``ValueError``) when the
    run's world/strategy/run ids are missing or not identifiers.
    """
    folder = run_report_dir(out_dir, run.get("world_id"), run.get("strategy_id"),
                            run.get("run_id"))
    files = render_validation_report_files(run, evaluation, metrics, model_card, overrides,
                                           **options)
    return {name: atomic_write_bytes(folder / name, data) for name, data in files.items()}


def render_snapshot_report_files(
    snapshot: Mapping[str, Any],
    portfolio_risk: Mapping[str, Any] | None,
    stress_rows: Sequence[Mapping[str, Any]] | None = None,
    *,
    generated_at: Any = None,
    formats: Iterable[str] = FORMATS,
) -> dict[str, bytes]:
    """The files of a snapshot report: ``report.md``/``report.html`` and, when there are risk
    contributions, ``risk_contributions.png``."""
    chosen = _formats(formats)
    contributions = component_var(portfolio_risk)
    png = risk_contributions_png(contributions) if contributions else None
    files: dict[str, bytes] = {}
    if "md" in chosen:
        links = [Image(RISK_CONTRIBUTIONS_CHART_TITLE, href=RISK_CONTRIBUTIONS_PNG)] if png else []
        files[REPORT_MARKDOWN] = render_markdown(build_snapshot_report(
            snapshot, portfolio_risk, stress_rows, generated_at=generated_at, images=links
        )).encode("utf-8")
    if "html" in chosen:
        images = [Image(RISK_CONTRIBUTIONS_CHART_TITLE, png=png)] if png else []
        files[REPORT_HTML] = render_html(build_snapshot_report(
            snapshot, portfolio_risk, stress_rows, generated_at=generated_at, images=images
        )).encode("utf-8")
    if png is not None:
        files[RISK_CONTRIBUTIONS_PNG] = png
    return files


def write_snapshot_report_files(
    out_dir: str | os.PathLike[str],
    snapshot: Mapping[str, Any],
    portfolio_risk: Mapping[str, Any] | None,
    stress_rows: Sequence[Mapping[str, Any]] | None = None,
    **options: Any,
) -> dict[str, Path]:
    """Write a snapshot report under ``<out_dir>/<world>/_snapshots/<version>/`` atomically."""
    folder = snapshot_report_dir(out_dir, snapshot.get("world_id"), snapshot.get("version"))
    files = render_snapshot_report_files(snapshot, portfolio_risk, stress_rows, **options)
    return {name: atomic_write_bytes(folder / name, data) for name, data in files.items()}


def write_world_overview(
    out_dir: str | os.PathLike[str],
    world_id: str,
    runs: Sequence[Mapping[str, Any]],
    open_breaches: Sequence[Mapping[str, Any]] = (),
    overdue_overrides: Sequence[Mapping[str, Any]] = (),
    *,
    generated_at: Any = None,
) -> Path:
    """Write ``<out_dir>/<world>/_overview.html`` atomically; run rows link to their reports."""
    page = render_html(build_world_overview(world_id, runs, open_breaches, overdue_overrides,
                                            generated_at=generated_at, link_reports=True))
    return atomic_write_bytes(world_overview_path(out_dir, world_id), page.encode("utf-8"))
