"""``qmtl-validation verify-log``: check a hash-chained log and report its first broken link.

Two logs are chained this way:

- an override log (``verify-log FILE.jsonl``): one JSON object per line;
- the events outbox in the lake (``verify-log --events [--world W] [--lake ROOT]``): one chain per
  world, read from the profile's lake (or ``--lake``, a folder or ``s3://`` root).

Prints ``OK`` with the entry count and head hash (exit 0), or the first broken link (exit 1): a
row whose ``prev_hash`` is not the previous row's ``row_hash`` (a row was removed, inserted or
reordered before it) or whose ``row_hash`` does not match its content (the row was edited). Rows
cut from the end cannot be seen by the chain alone: pass the head hash recorded earlier with
``--expected-head`` to check that too (with ``--events``, it needs ``--world``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from qmtl_validation.cli import CliError
from qmtl_validation.cli.override import read_log_rows
from qmtl_validation.core.overrides import GENESIS_HASH, row_hash, verify_chain


def _problem(rows: list[dict], index: int) -> str:
    if index >= len(rows):
        return "the last entry is not the expected head (entries missing from the end?)"
    row = rows[index]
    previous = rows[index - 1].get("row_hash") if index else GENESIS_HASH
    if row.get("prev_hash") != previous:
        return "prev_hash does not match the previous entry (an entry was removed, inserted or reordered)"
    try:
        if row_hash(row) != row.get("row_hash"):
            return "row_hash does not match the entry's content (the entry was edited)"
    except (TypeError, ValueError):
        pass
    return "the entry cannot be hashed (malformed fields)"


def _verify_override_log(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"{path}: no such override log")
    with open(path, encoding="utf-8") as handle:
        rows = read_log_rows(handle, str(path))
    broken = verify_chain(rows, expected_head=args.expected_head)
    head = rows[-1].get("row_hash") if rows else GENESIS_HASH
    if args.json:
        print(json.dumps({
            "log": str(path),
            "ok": broken is None,
            "entries": len(rows),
            "head": head,
            "broken_at_entry": None if broken is None else broken + 1,
            "problem": None if broken is None else _problem(rows, broken),
        }, indent=2))
    elif broken is None:
        print(f"OK: {path}: {len(rows)} entries, chain intact, head {head}")
    else:
        where = "end of log" if broken >= len(rows) else f"entry {broken + 1} of {len(rows)}"
        print(f"BROKEN: {path}: {where}: {_problem(rows, broken)}")
    return 0 if broken is None else 1


def _verify_events(args: argparse.Namespace) -> int:
    from qmtl_validation.core.identifiers import InvalidIdentifierError, check_identifier
    from qmtl_validation.settings import load_settings
    from qmtl_validation.warehouse.lake import Lake
    from qmtl_validation.warehouse.outbox import verify_events_chain, verify_world_chain

    if args.expected_head and not args.world:
        raise CliError("--expected-head with --events needs --world (each world has its own chain)", 2)
    if args.world:
        try:
            check_identifier(args.world, "world_id")
        except InvalidIdentifierError as error:
            raise CliError(str(error), 2) from None
    settings = load_settings()
    lake = Lake(args.lake or settings.lake_root, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region)
    if args.world:
        checks = [verify_world_chain(lake, args.world, expected_head=args.expected_head)]
    else:
        checks = verify_events_chain(lake)
    if args.json:
        print(json.dumps({"lake": lake.root, "ok": all(c.ok for c in checks),
                          "worlds": [c.to_dict() for c in checks]}, indent=2, default=str))
    else:
        if not checks:
            print(f"OK: {lake.root}: no events")
        for check in checks:
            if check.ok:
                print(f"OK: events of world {check.world_id}: {check.events} events in {check.files} files, "
                      f"chain intact, head {check.head}")
            elif check.file is None:
                print(f"BROKEN: events of world {check.world_id}: end of chain: {check.problem}")
            else:
                print(f"BROKEN: events of world {check.world_id}: event {check.broken_at + 1} "
                      f"(id {check.event_id}, row {check.row_in_file + 1} of {check.file}): {check.problem}")
    return 0 if all(c.ok for c in checks) else 1


def run(args: argparse.Namespace) -> int:
    if args.events:
        if args.file:
            raise CliError("give either FILE.jsonl or --events, not both", 2)
        return _verify_events(args)
    if args.world or args.lake:
        raise CliError("--world and --lake apply to --events", 2)
    if not args.file:
        raise CliError("give an override log FILE.jsonl, or --events to verify the lake's events", 2)
    return _verify_override_log(args)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "verify-log",
        help="verify the hash chain of an override log or of the events outbox",
        description=(
            "Verify a hash chain and report its first broken link (exit 1): a JSONL override log, "
            "or with --events every world's chain of the events outbox in the lake."
        ),
    )
    parser.add_argument("file", metavar="FILE.jsonl", nargs="?", help="override log")
    parser.add_argument("--events", action="store_true", help="verify the events outbox in the lake instead")
    parser.add_argument("--world", metavar="WORLD", help="with --events: only this world's chain")
    parser.add_argument("--lake", metavar="ROOT",
                        help="with --events: lake root (folder or s3://bucket/prefix; default: the profile's)")
    parser.add_argument("--expected-head", metavar="HASH",
                        help="row_hash the last entry must have (detects entries cut from the end)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.set_defaults(handler=run)
