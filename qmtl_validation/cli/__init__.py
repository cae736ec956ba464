"""``qmtl-validation``: thin commands over core/ and warehouse/.

Each subcommand lives in its own module of this package and exposes ``register(subparsers)``,
which adds its parser and sets ``handler``. Exit codes: 0 ok, 1 failure, 2 usage error or a
threshold exceeded. Expected errors print one line to stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from typing import Sequence

COMMAND_MODULES = (
    "evaluate",
    "lint_snapshot",
    "policy_diff",
    "override",
    "report",
    "backfill",
    "sql",
    "verify_log",
)


class CliError(Exception):
    """An expected failure: printed as one line, exit code ``exit_code``."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qmtl-validation",
        description="Validate trading strategies and portfolio risk snapshots.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        module_path = f"{__name__}.{name}"
        if importlib.util.find_spec(module_path) is not None:
            importlib.import_module(module_path).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except (ValueError, FileNotFoundError, PermissionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
