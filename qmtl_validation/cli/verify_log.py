"""``qmtl-validation verify-log``: check the hash chain of a JSONL override log.

Prints ``OK`` with the entry count and head hash (exit 0), or the first broken link (exit 1):
a row whose ``prev_hash`` is not the previous row's ``row_hash`` (a row was removed, inserted or
reordered before it) or whose ``row_hash`` does not match its content (the row was edited). Rows
cut from the end cannot be seen by the chain alone: pass the head hash recorded earlier with
``--expected-head`` to check that too.
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


def run(args: argparse.Namespace) -> int:
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


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "verify-log",
        help="verify the hash chain of a JSONL override log",
        description="Verify the hash chain of a JSONL override log; exit 1 at the first broken link.",
    )
    parser.add_argument("file", metavar="FILE.jsonl", help="override log")
    parser.add_argument("--expected-head", metavar="HASH",
                        help="row_hash the last entry must have (detects entries cut from the end)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.set_defaults(handler=run)
