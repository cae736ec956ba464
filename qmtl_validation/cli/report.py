"""``qmtl-validation report``: render validation reports and the world overview pages to files.

Three ways in:

- ``--run WORLD/STRATEGY/RUN`` (or ``WORLD/STRATEGY``: the strategy's latest run by submission
  time): one run from the warehouse catalog (its latest revision, its returns for the pictures,
  its overrides, its model card from the landing zone). The pipeline
  draws pictures only for the first runs of a large backfill; this renders any run with them.
- ``--run-json FILE``: one run from a run file (shape below), no warehouse needed.
- ``--overview``: ``<report root>/<world>/_overview.html`` for every world in the catalog (runs
  by status and recommended stage, open freshness breaches, overdue override reviews) and
  ``<report root>/index.html`` linking them: open ``index.html`` in a browser.

The sources are the entries of ``SOURCES`` (a loader from parsed arguments to
:class:`ReportInputs` plus its option in the ``source`` group).

Run file shape (JSON object)::

    {
      "run":        {"world_id": "...", "strategy_id": "...", "run_id": "...",      (required)
                     "stage": "backtest|paper|live", "risk_tier": "...",
                     "created_at": "...", "updated_at": "...",
                     "model_card_version": "...", "campaign_id": "..."},
      "evaluation": {"validation": {"policy_version", "ruleset_hash", "profile",
                                    "results": {rule: {status, severity, owner,
                                                       reason_code, reason, tags, details}}},
                     "summary": {"status", "recommended_stage"}},   (EvaluationResult.to_dict())
      "metrics":    {"returns": {...}, "sample": {...}, "risk": {...},
                     "robustness": {...}, "diagnostics": {"metric_notes": {...}, ...},
                     "benchmark": {...}},                                       (optional)
      "overrides":  [{"override_status", "override_reason", "override_actor",
                      "override_timestamp", "review_due_at", "review_overdue"}], (optional)
      "model_card": {...}                                 (optional; --model-card wins)
    }

``--returns`` is a CSV or Parquet file with ``date`` and ``ret`` columns (the landing-zone returns
file, SPEC §3) and optionally ``benchmark_ret``; it adds the pictures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from qmtl_validation.cli import CliError

RUN_FILE_HELP = """\
run file (JSON object):
  run         {world_id, strategy_id, run_id (required), stage, risk_tier, created_at,
               updated_at, model_card_version, campaign_id}
  evaluation  {validation: {policy_version, ruleset_hash, profile, results: {rule: {status,
               severity, owner, reason_code, reason, tags, details}}},
               summary: {status, recommended_stage}}
  metrics     {returns, sample, risk, robustness, diagnostics: {metric_notes, ...}, benchmark}
  overrides   [{override_status, override_reason, override_actor, override_timestamp,
                review_due_at, review_overdue}]
  model_card  optional card fields (--model-card wins)

examples:
  qmtl-validation report --run alpha_core/ac_trend_01/bt-20240501-0001
  qmtl-validation report --run alpha_core/ac_trend_01          (its latest run)
  qmtl-validation report --overview
  qmtl-validation report --run-json run.json --returns returns.csv --out reports/
"""

FORMAT_CHOICES = {"md": ("md",), "html": ("html",), "both": ("md", "html")}


@dataclass
class ReportInputs:
    """Everything a run report is rendered from, whatever the source."""

    run: dict[str, Any]
    evaluation: dict[str, Any] | None
    metrics: dict[str, Any]
    overrides: list[dict[str, Any]] = field(default_factory=list)
    model_card: Any = None
    returns: Any = None


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CliError(f"run file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: "
                       f"{exc.msg}") from None


def _object(data: dict[str, Any], key: str, path: Path, *, required: bool) -> dict[str, Any] | None:
    value = data.get(key)
    if value is None:
        if required:
            raise CliError(f"{path}: '{key}' is required (an object)")
        return None
    if not isinstance(value, dict):
        raise CliError(f"{path}: '{key}' must be an object, got {type(value).__name__}")
    return value


def load_run_json(path: Path) -> ReportInputs:
    """Parse a run file (shape in the module docstring) into :class:`ReportInputs`."""
    data = _read_json(path)
    if not isinstance(data, dict):
        raise CliError(f"{path}: expected a JSON object with 'run', 'evaluation', 'metrics', "
                       "'overrides'")
    run = _object(data, "run", path, required=True)
    missing = [k for k in ("world_id", "strategy_id", "run_id") if not run.get(k)]
    if missing:
        raise CliError(f"{path}: run.{missing[0]} is required")
    evaluation = _object(data, "evaluation", path, required=False)
    metrics = _object(data, "metrics", path, required=False) or {}
    overrides = data.get("overrides") or []
    if not isinstance(overrides, list) or not all(isinstance(o, dict) for o in overrides):
        raise CliError(f"{path}: 'overrides' must be a list of objects")
    card = _object(data, "model_card", path, required=False)
    return ReportInputs(run=run, evaluation=evaluation, metrics=metrics, overrides=overrides,
                        model_card=card)


def load_returns_file(path: Path) -> Any:
    """A landing-zone returns file (CSV or Parquet: ``date``, ``ret``, optional
    ``benchmark_ret``) as a date-indexed frame, checked for what the charts rely on."""
    import pandas as pd

    if not path.is_file():
        raise CliError(f"returns file not found: {path}")
    try:
        if path.suffix.lower() == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path)
    except Exception as exc:  # pandas/pyarrow raise many types for a malformed file
        raise CliError(f"cannot read returns file {path}: {exc}") from None
    missing = [c for c in ("date", "ret") if c not in frame.columns]
    if missing:
        raise CliError(f"returns file {path}: missing column(s) {', '.join(missing)}")
    try:
        frame["date"] = pd.to_datetime(frame["date"])
        columns = ["ret"] + (["benchmark_ret"] if "benchmark_ret" in frame.columns else [])
        for column in columns:
            frame[column] = pd.to_numeric(frame[column], errors="raise").astype(float)
    except (ValueError, TypeError) as exc:
        raise CliError(f"returns file {path}: {exc}") from None
    if frame["date"].duplicated().any():
        first = frame.loc[frame["date"].duplicated(), "date"].iloc[0]
        raise CliError(f"returns file {path}: duplicate date {first.date()}")
    return frame.set_index("date").sort_index()[columns]


def _from_run_json(args: argparse.Namespace) -> ReportInputs:
    return load_run_json(Path(args.run_json))


def open_catalog(catalog: str | None) -> Any:
    """The profile's DuckDB catalog (or ``catalog``), read-only; a missing one is a CliError."""
    import duckdb

    from qmtl_validation.settings import load_settings
    from qmtl_validation.warehouse.catalog import connect_catalog

    settings = load_settings()
    path = catalog or settings.catalog_path
    try:
        return connect_catalog(path, read_only=True, endpoint_url=settings.s3_endpoint_url,
                               region=settings.s3_region)
    except FileNotFoundError as exc:
        raise CliError(f"{exc}; `make demo` builds one from the sample") from None
    except duckdb.Error as exc:
        raise CliError(f"cannot open catalog {path}: {str(exc).splitlines()[0]}") from None


def _frame(connection: Any, sql: str, params: list[Any], *, optional: bool = False) -> Any:
    """Query result as a DataFrame; an ``optional`` table that cannot be read is empty."""
    import duckdb
    import pandas as pd

    try:
        return connection.execute(sql, params).df()
    except duckdb.Error as exc:
        if optional:
            return pd.DataFrame()
        raise CliError(f"catalog query failed: {str(exc).splitlines()[0]}") from None


def split_run_key(key: str) -> tuple[str, ...]:
    """``world/strategy/run`` (or ``world/strategy``: its latest run) into checked identifiers
    (a CliError, exit 2, if not)."""
    from qmtl_validation.core.identifiers import InvalidIdentifierError, check_identifier

    parts = key.strip("/").split("/")
    if len(parts) not in (2, 3):
        raise CliError(f"--run {key!r}: expected WORLD/STRATEGY/RUN (or WORLD/STRATEGY for its latest run)", 2)
    try:
        return tuple(check_identifier(p, n) for p, n in zip(parts, ("world_id", "strategy_id", "run_id")))
    except InvalidIdentifierError as exc:
        raise CliError(f"--run {key!r}: {exc}", 2) from None


def _from_warehouse(args: argparse.Namespace) -> ReportInputs:
    import pandas as pd

    from qmtl_validation.warehouse import run_rows

    parts = split_run_key(args.run)
    connection = open_catalog(args.catalog)
    try:
        found = _frame(
            connection,
            "SELECT run_id, payload_json FROM evaluation_runs WHERE world_id = ? AND strategy_id = ? "
            + ("AND run_id = ? " if len(parts) == 3 else "")
            + "ORDER BY submitted_at DESC NULLS LAST, run_id DESC LIMIT 1",
            list(parts),
        )
        if found.empty:
            raise CliError(
                f"run {'/'.join(parts)} is not in the catalog; list the runs with: "
                "qmtl-validation sql \"select world_id, strategy_id, run_id from evaluation_runs\""
            )
        world, strategy, run_id = parts[0], parts[1], str(found["run_id"].iloc[0])
        params = [world, strategy, run_id]
        where = "world_id = ? AND strategy_id = ? AND run_id = ?"
        returns = _frame(
            connection,
            f"SELECT date, ret, benchmark_ret FROM strategy_returns WHERE {where} "
            "QUALIFY recorded_at = max(recorded_at) OVER () ORDER BY date",
            params,
            optional=True,
        )
        overrides = _frame(connection, f"SELECT * FROM overrides WHERE {where}", params, optional=True)
    finally:
        connection.close()
    record = json.loads(found["payload_json"].iloc[0])
    series = None
    if not returns.empty:
        columns = ["ret"] + (["benchmark_ret"] if returns["benchmark_ret"].notna().any() else [])
        series = returns.assign(date=pd.to_datetime(returns["date"])).set_index("date")[columns]
    now = dt.datetime.now(dt.timezone.utc)
    items = run_rows.review_items_by_run(overrides, now).get(f"{world}/{strategy}/{run_id}", []) if len(overrides) else []
    return ReportInputs(
        run=record,
        evaluation={"validation": record.get("validation"), "summary": record.get("summary")},
        metrics=record.get("metrics") or {},
        overrides=items,
        model_card=None if args.model_card else _landing_model_card(strategy),
        returns=series,
    )


def _landing_model_card(strategy_id: str) -> Any:
    """The strategy's card from the profile's landing zone (None when absent or unreadable)."""
    from qmtl_validation.settings import load_settings
    from qmtl_validation.warehouse.documents import ModelCards
    from qmtl_validation.warehouse.landing import landing_zone_from_root

    settings = load_settings()
    try:
        zone = landing_zone_from_root(settings.landing_root, endpoint_url=settings.s3_endpoint_url,
                                      region=settings.s3_region)
        return ModelCards(zone).get(strategy_id)
    except (OSError, ValueError):
        return None


# Input sources: (argument dest, loader). Exactly one is given on the command line.
SOURCES: dict[str, Callable[[argparse.Namespace], ReportInputs]] = {
    "run": _from_warehouse,
    "run_json": _from_run_json,
}


def resolve_inputs(args: argparse.Namespace) -> ReportInputs:
    """Load the report inputs from the chosen source, then apply the card/returns options."""
    from qmtl_validation.core.model_cards import (
        ModelCardError,
        ModelCardRegistry,
        load_model_card,
        model_card_from_mapping,
    )

    chosen = [dest for dest in SOURCES if getattr(args, dest, None)]
    if len(chosen) != 1:
        raise CliError("give exactly one of --run WORLD/STRATEGY/RUN, --run-json FILE or --overview", 2)
    inputs = SOURCES[chosen[0]](args)
    try:
        if args.model_card:
            inputs.model_card = load_model_card(Path(args.model_card))
        elif isinstance(inputs.model_card, dict):
            inputs.model_card = model_card_from_mapping(inputs.model_card, source="run file")
        elif inputs.model_card is None and args.model_card_root:
            inputs.model_card = ModelCardRegistry(args.model_card_root).get(
                inputs.run["strategy_id"])
    except ModelCardError as exc:
        raise CliError(str(exc)) from None
    if args.returns:
        inputs.returns = load_returns_file(Path(args.returns))
    return inputs


def _default_out() -> str:
    from qmtl_validation.settings import load_settings

    return load_settings().report_root


def _periods_per_year(args: argparse.Namespace, metrics: dict[str, Any]) -> float:
    """``--periods-per-year``, else the run's own annualisation, else 252."""
    if args.periods_per_year is not None:
        return args.periods_per_year
    value = (metrics.get("diagnostics") or {}).get("periods_per_year")
    return float(value) if isinstance(value, (int, float)) and value > 0 else 252.0


def handle(args: argparse.Namespace) -> int:
    from qmtl_validation.core.identifiers import InvalidIdentifierError
    from qmtl_validation.core.reports.files import write_report_files

    out_dir = args.out or _default_out()
    if str(out_dir).startswith("s3://"):
        raise CliError("--out must be a local folder (write to S3 through the pipeline)", 2)
    generated_at = args.generated_at or dt.datetime.now(dt.timezone.utc).replace(
        microsecond=0).isoformat()
    if args.overview:
        if args.run or args.run_json:
            raise CliError("give exactly one of --run WORLD/STRATEGY/RUN, --run-json FILE or --overview", 2)
        return write_overviews(args, out_dir, generated_at)
    if args.world:
        raise CliError("--world applies to --overview", 2)
    inputs = resolve_inputs(args)
    try:
        paths = write_report_files(
            out_dir, inputs.run, inputs.evaluation, inputs.metrics, inputs.model_card,
            inputs.overrides, returns=inputs.returns, generated_at=generated_at,
            formats=FORMAT_CHOICES[args.format],
            periods_per_year=_periods_per_year(args, inputs.metrics),
            rolling_window=args.rolling_window,
        )
    except InvalidIdentifierError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(json.dumps({name: str(path) for name, path in paths.items()}, indent=2))
    else:
        for path in paths.values():
            print(path)
    for warning in getattr(inputs.model_card, "warnings", ()):
        print(f"warning: model card: {warning}", file=sys.stderr)
    return 0


def _latest_items(items: list[dict[str, Any]]) -> dict[str, Any] | None:
    return items[-1] if items else None


def write_overviews(args: argparse.Namespace, out_dir: str, generated_at: str) -> int:
    """Write every world's overview page and the root ``index.html``; print their paths."""
    from qmtl_validation.cli.progress import progress_iter
    from qmtl_validation.core.reports.files import atomic_write_bytes, write_world_overview
    from qmtl_validation.warehouse import run_rows

    now = dt.datetime.now(dt.timezone.utc)
    connection = open_catalog(args.catalog)
    try:
        runs = _frame(
            connection,
            "SELECT world_id, strategy_id, run_id, stage, status, recommended_stage, policy_version, "
            "recorded_at AS updated_at FROM evaluation_runs ORDER BY world_id, strategy_id, run_id",
            [],
        )
        breaches = _frame(connection, "SELECT * FROM freshness_breaches_latest WHERE ended_at IS NULL", [],
                          optional=True)
        overrides = _frame(connection, "SELECT * FROM overrides", [], optional=True)
    finally:
        connection.close()
    worlds = sorted(set(runs["world_id"])) if len(runs) else []
    if args.world:
        if args.world not in worlds:
            raise CliError(f"world {args.world!r} has no runs in the catalog (worlds: {', '.join(worlds) or 'none'})")
        worlds = [args.world]
    overdue: dict[str, list[dict[str, Any]]] = {}
    if len(overrides):
        for key, items in run_rows.review_items_by_run(overrides, now).items():
            latest = _latest_items(items)
            if latest and latest.get("override_status") == "approved" and latest.get("review_overdue"):
                overdue.setdefault(key.split("/", 1)[0], []).append(latest)
    written: dict[str, str] = {}
    summary = []
    for world in progress_iter(worlds, "writing world overviews", enabled=not args.json, unit="worlds"):
        rows = runs[runs["world_id"] == world].to_dict("records")
        open_breaches = breaches[breaches["world_id"] == world].to_dict("records") if len(breaches) else []
        path = write_world_overview(out_dir, world, rows, open_breaches, overdue.get(world, []),
                                    generated_at=generated_at)
        written[world] = str(path)
        statuses = [str(r.get("status") or "unknown") for r in rows]
        summary.append((world, len(rows), *(statuses.count(s) for s in ("fail", "warn", "pass")),
                        len(open_breaches), len(overdue.get(world, []))))
    index = atomic_write_bytes(Path(out_dir) / "index.html", render_index(summary, generated_at))
    if args.json:
        print(json.dumps({"index": str(index), "worlds": written}, indent=2))
    else:
        for path in written.values():
            print(path)
        print(index)
    return 0


INDEX_COLUMNS = ("World", "Runs", "Fail", "Warn", "Pass", "Open freshness breaches", "Overdue reviews")


def render_index(summary: list[tuple[Any, ...]], generated_at: str) -> bytes:
    """The report root's ``index.html``: one row per world, linking its overview page."""
    from qmtl_validation.core.reports.document import Document, Link, Paragraph, Section, Table
    from qmtl_validation.core.reports.html import render_html

    rows = tuple((Link(world, f"{world}/_overview.html"), *(str(v) for v in rest)) for world, *rest in summary)
    classes = tuple("fail" if fail else ("warn" if warn else "pass") for _, _, fail, warn, *_ in summary)
    document = Document(
        title="Validation reports",
        subtitle=f"generated {generated_at}",
        sections=(
            Section("Worlds", (
                Table(INDEX_COLUMNS, rows, row_classes=classes, empty_text="No evaluated runs yet."),
                Paragraph("Each world's page lists its runs (linking their reports) by status and "
                          "recommended stage, its open freshness breaches and overdue override reviews."),
            )),
        ),
    )
    return render_html(document).encode("utf-8")


def _window(text: str) -> int:
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError("must be at least 2")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "report",
        help="render a run's validation report (HTML with charts) or the world overview pages",
        description=(
            "Render the validation report of one run to <out>/<world>/<strategy>/<run>/\n"
            "report.md, report.html and equity.png, or the world overview pages and index.html\n"
            "(--overview), and print the paths written."
        ),
        epilog=RUN_FILE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_argument_group("what to render (exactly one)")
    source.add_argument("--run", metavar="WORLD/STRATEGY/RUN",
                        help="a run from the warehouse catalog (latest revision, with pictures); "
                             "WORLD/STRATEGY picks the strategy's latest run")
    source.add_argument("--run-json", metavar="FILE",
                        help="JSON file with run, evaluation, metrics, overrides")
    source.add_argument("--overview", action="store_true",
                        help="every world's overview page and the report root's index.html")
    parser.add_argument("--world", metavar="WORLD", help="with --overview: only this world")
    parser.add_argument("--catalog", metavar="FILE",
                        help="catalog for --run/--overview (default: the profile's catalog_path)")
    parser.add_argument("--model-card", metavar="FILE",
                        help="model card YAML (overrides a model_card in the run file)")
    parser.add_argument("--model-card-root", metavar="DIR",
                        help="folder holding model_cards/<strategy_id>.yaml, used when no card "
                             "is given otherwise")
    parser.add_argument("--returns", metavar="FILE",
                        help="returns CSV/Parquet (date, ret[, benchmark_ret]) for the charts")
    parser.add_argument("--out", metavar="DIR",
                        help="report root (default: the profile's report root)")
    parser.add_argument("--format", choices=sorted(FORMAT_CHOICES), default="both",
                        help="files to write (default: both)")
    parser.add_argument("--generated-at", metavar="ISO",
                        help="timestamp printed in the report (default: now, UTC); fix it for "
                             "reproducible files")
    parser.add_argument("--periods-per-year", type=_positive_float, default=None, metavar="P",
                        help="annualisation for the rolling Sharpe chart (default: the run's own, "
                             "else 252)")
    parser.add_argument("--rolling-window", type=_window, default=63, metavar="N",
                        help="rolling Sharpe window in periods (default 63)")
    parser.add_argument("--json", action="store_true",
                        help="print {file name: path} as JSON instead of one path per line")
    parser.set_defaults(handler=handle)
