"""``qmtl-validation lint-snapshot FILE...``: check risk snapshot files against the contract.

Prints ``OK <file>`` or ``ERROR <file>: <message>`` per file (or one JSON document with
``--json``) and exits 1 when any file fails. An unreadable or non-JSON file is an ERROR line like
any other, never a traceback. ``--world``, ``--actor`` and ``--stage`` play the part of the
landing path and transport headers (snapshots that omit ``world_id`` or provenance only lint
clean with them, as in QMTL). The signing key is read from the environment variable named by
``--signing-key-env`` so it never appears in a process listing.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from qmtl_validation.cli import CliError
from qmtl_validation.core.snapshot import parse_timestamp, validate_snapshot


def _csv(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "lint-snapshot",
        help="validate risk snapshot JSON files against the snapshot contract",
        description="Validate risk snapshot JSON files; exit 1 if any file fails.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="snapshot JSON file(s)")
    parser.add_argument("--world", help="world id the files belong to (injected when absent)")
    parser.add_argument("--actor", help="producer identity (the X-Actor header)")
    parser.add_argument("--stage", help="producer stage (the X-Stage header)")
    parser.add_argument("--allowed-actors", help="comma-separated producer allow-list")
    parser.add_argument("--allowed-stages", help="comma-separated stage allow-list")
    parser.add_argument(
        "--signing-key-env",
        metavar="VAR",
        help="environment variable holding the world's signing key (signature then required)",
    )
    parser.add_argument("--fallback-correlation", type=float, default=0.5,
                        help="correlation used to complete missing pairs for the PSD check")
    parser.add_argument("--now", help="reference time (ISO-8601, naive = UTC) for the as_of check")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.set_defaults(handler=run)


def _lint_file(path: str, options: dict[str, Any]) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return {"file": path, "ok": False, "error": f"cannot read file: {exc}"}
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        return {"file": path, "ok": False, "error": f"invalid JSON: {exc}"}
    try:
        snapshot = validate_snapshot(payload, **options)
    except ValueError as exc:
        return {"file": path, "ok": False, "error": str(exc)}
    return {
        "file": path,
        "ok": True,
        "error": None,
        "world_id": snapshot["world_id"],
        "version": snapshot["version"],
        "hash": snapshot["hash"],
    }


def run(args: argparse.Namespace) -> int:
    signing_key = None
    if args.signing_key_env:
        signing_key = os.environ.get(args.signing_key_env)
        if not signing_key:
            raise CliError(f"environment variable {args.signing_key_env} is not set", exit_code=2)
    now = None
    if args.now:
        try:
            now = parse_timestamp(args.now)
        except ValueError as exc:
            raise CliError(f"--now: invalid timestamp {args.now!r}", exit_code=2) from exc
    if not -1.0 <= args.fallback_correlation <= 1.0:
        raise CliError("--fallback-correlation must be in [-1, 1]", exit_code=2)
    options = {
        "world_id": args.world,
        "actor": args.actor,
        "stage": args.stage,
        "now": now,
        "allowed_actors": _csv(args.allowed_actors),
        "allowed_stages": _csv(args.allowed_stages),
        "signing_key": signing_key,
        "fallback_correlation": args.fallback_correlation,
    }
    results = [_lint_file(path, options) for path in args.files]
    failed = sum(1 for r in results if not r["ok"])
    if args.json:
        print(json.dumps({"ok": failed == 0, "failed": failed, "files": results}, indent=2))
    else:
        for r in results:
            print(f"OK {r['file']}" if r["ok"] else f"ERROR {r['file']}: {r['error']}")
    return 1 if failed else 0
