"""``qmtl-validation override``: record an operator override of a run's decision.

Appends one row to a JSONL override log (one JSON object per line, hash-chained; see
:mod:`qmtl_validation.core.overrides`) and prints it. The default log is
``overrides.jsonl`` next to the profile's DuckDB catalog (``data/warehouse/overrides.jsonl`` in
dev); every new entry of that default log is also appended to the warehouse's ``overrides``
table, which reports, the re-review queue and the invariants read. The log is locked while it is
read and appended, so concurrent commands cannot fork the chain; a log whose chain does not
verify is never appended to.

Requesting the run's current status is a no-op (exit 0, "unchanged"). An override never changes
the run's computed status.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import json
import os
from pathlib import Path
from typing import IO, Any

from qmtl_validation.cli import CliError
from qmtl_validation.core.bundles import BundleError, parse_json_document
from qmtl_validation.core.overrides import (
    OVERRIDE_STATUSES,
    OverrideEntry,
    OverrideError,
    OverrideLog,
    review_item,
    verify_chain,
)

LOG_LINE_MAX_BYTES = 64 * 1024


def default_log_path() -> Path:
    """``overrides.jsonl`` beside the profile's DuckDB catalog."""
    from qmtl_validation.settings import load_settings

    return Path(load_settings().catalog_path).parent / "overrides.jsonl"


def read_log_rows(handle: IO[str], source: str) -> list[dict[str, Any]]:
    """Rows of a JSONL override log; a line that is not a JSON object is a :class:`CliError`."""
    rows: list[dict[str, Any]] = []
    for line_number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            rows.append(
                parse_json_document(
                    line.encode("utf-8"),
                    source_name=f"{source} line {line_number}",
                    max_bytes=LOG_LINE_MAX_BYTES,
                    max_depth=2,
                )
            )
        except BundleError as exc:
            raise CliError(str(exc).splitlines()[0]) from None
    return rows


def _print_entry(entry: OverrideEntry, *, now: dt.datetime, log_path: Path, recorded: bool) -> None:
    verb = "recorded" if recorded else "unchanged: already"
    who = f" by {entry.override_actor}" if entry.override_actor else ""
    print(
        f"{verb} {entry.override_status}{who} at {entry.to_dict()['override_timestamp']}: "
        f"{entry.world_id}/{entry.strategy_id}/{entry.run_id}"
    )
    if entry.override_reason:
        print(f"reason: {entry.override_reason}")
    if entry.override_status == "approved":
        item = review_item(entry, now=now)
        state = "OVERDUE" if item.review_overdue else "due"
        print(f"review {state} {item.to_dict()['review_due_at']} ({item.review_window_days} days)")
    print(f"log: {log_path} (head {entry.row_hash})")


def publish_to_lake(entry: OverrideEntry) -> None:
    """Append the entry to the warehouse's ``overrides`` table too (one new file, never a
    rewrite), so reports, the review queue and the invariants see it."""
    import pandas as pd

    from qmtl_validation.warehouse.lake import Lake

    row = entry.to_dict()
    if entry.override_status == "approved":
        row["review_due_at"] = review_item(entry, now=entry.recorded_at).review_due_at
    stem = f"{entry.recorded_at:%Y%m%dT%H%M%S%fZ}-{entry.row_hash.split(':')[-1][:12]}"
    Lake.from_settings().write("overrides", pd.DataFrame([row]), world_id=entry.world_id, file_stem=stem)


def run(args: argparse.Namespace) -> int:
    log_path = Path(args.log) if args.log else default_log_path()
    now = dt.datetime.now(dt.timezone.utc)
    options = dict(
        reason=args.reason,
        actor=args.actor,
        timestamp=args.timestamp,
        stage=args.stage,
        risk_tier=args.risk_tier,
        client_critical=args.client_critical,
        now=now,
    )
    try:
        # Validate the request before the log is created or locked.
        OverrideLog().record(args.world, args.strategy, args.run, args.status, **options)
    except OverrideError as exc:
        raise CliError(str(exc)) from None
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a+", encoding="utf-8") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        handle.seek(0)
        rows = read_log_rows(handle, str(log_path))
        broken = verify_chain(rows)
        if broken is not None:
            raise CliError(
                f"{log_path}: hash chain broken at entry {broken + 1}; "
                f"run 'qmtl-validation verify-log {log_path}' and repair before appending"
            )
        log = OverrideLog(rows)
        try:
            entry = log.record(args.world, args.strategy, args.run, args.status, **options)
        except OverrideError as exc:
            raise CliError(str(exc)) from None
        if entry is not None:
            handle.seek(0, os.SEEK_END)
            handle.write(json.dumps(entry.to_dict(), sort_keys=False, allow_nan=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        shown = entry or log.current(args.world, args.strategy, args.run)
        if entry is not None and not args.log:
            publish_to_lake(entry)

    if args.json:
        document = {
            "recorded": entry is not None,
            "entry": shown.to_dict() if shown else None,
            "review": (
                review_item(shown, now=now).to_dict()
                if shown is not None and shown.override_status == "approved"
                else None
            ),
            "log": str(log_path),
        }
        print(json.dumps(document, indent=2))
    elif shown is None:
        print(f"unchanged: {args.world}/{args.strategy}/{args.run} has no override (status none)")
    else:
        _print_entry(shown, now=now, log_path=log_path, recorded=entry is not None)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "override",
        help="record an operator override (approved, rejected or none) of a run's decision",
        description=(
            "Append an override of one run's decision to the hash-chained override log. "
            "approved needs --reason, --actor and --timestamp. Repeating the current status "
            "changes nothing. The computed status of the run is never changed."
        ),
    )
    parser.add_argument("--world", required=True, help="world id")
    parser.add_argument("--strategy", required=True, help="strategy id")
    parser.add_argument("--run", required=True, help="run id")
    parser.add_argument("--status", required=True, choices=OVERRIDE_STATUSES, help="override status")
    parser.add_argument("--reason", help="why (required for approved)")
    parser.add_argument("--actor", help="who decides (required for approved)")
    parser.add_argument(
        "--timestamp", metavar="ISO",
        help="when the decision was taken, ISO-8601, naive = UTC (required for approved; "
        "default now otherwise)",
    )
    parser.add_argument("--stage", choices=("backtest", "paper", "live"),
                        help="the run's stage (sets the re-review window; unknown = 30 days)")
    parser.add_argument("--risk-tier", choices=("low", "medium", "high"), help="the world's risk tier")
    parser.add_argument("--client-critical", action="store_true",
                        help="the world is client-critical (with --risk-tier high: 30-day review)")
    parser.add_argument("--log", metavar="FILE.jsonl",
                        help="override log (default: overrides.jsonl beside the catalog)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.set_defaults(handler=run)
