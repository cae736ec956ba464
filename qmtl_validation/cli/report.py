"""``qmtl-validation report``: render one run's validation report to files.

Input today is a run file (``--run-json``); the warehouse-backed source (``--world W --run R``,
reading the lake) plugs in as one more entry of ``SOURCES``: a loader from parsed arguments to
:class:`ReportInputs` plus its option in the ``source`` group.

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

example:
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


# Input sources: (argument dest, loader). Exactly one is given on the command line.
SOURCES: dict[str, Callable[[argparse.Namespace], ReportInputs]] = {
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
        raise CliError("give exactly one input source (--run-json FILE)", 2)
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


def handle(args: argparse.Namespace) -> int:
    from qmtl_validation.core.identifiers import InvalidIdentifierError
    from qmtl_validation.core.reports.files import write_report_files

    inputs = resolve_inputs(args)
    out_dir = args.out or _default_out()
    if str(out_dir).startswith("s3://"):
        raise CliError("--out must be a local folder (write to S3 through the pipeline)", 2)
    generated_at = args.generated_at or dt.datetime.now(dt.timezone.utc).replace(
        microsecond=0).isoformat()
    try:
        paths = write_report_files(
            out_dir, inputs.run, inputs.evaluation, inputs.metrics, inputs.model_card,
            inputs.overrides, returns=inputs.returns, generated_at=generated_at,
            formats=FORMAT_CHOICES[args.format], periods_per_year=args.periods_per_year,
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
        help="render a run's validation report (Markdown and/or HTML with charts)",
        description=(
            "Render the validation report of one run to <out>/<world>/<strategy>/<run>/\n"
            "report.md, report.html and equity.png, and print the paths written."
        ),
        epilog=RUN_FILE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_argument_group("input source (exactly one)")
    source.add_argument("--run-json", metavar="FILE",
                        help="JSON file with run, evaluation, metrics, overrides")
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
    parser.add_argument("--periods-per-year", type=_positive_float, default=252.0, metavar="P",
                        help="annualisation for the rolling Sharpe chart (default 252)")
    parser.add_argument("--rolling-window", type=_window, default=63, metavar="N",
                        help="rolling Sharpe window in periods (default 63)")
    parser.add_argument("--json", action="store_true",
                        help="print {file name: path} as JSON instead of one path per line")
    parser.set_defaults(handler=handle)
