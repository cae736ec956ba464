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


EXIT_CODES_HELP = """\
exit codes:
  0  ok (the command ran; an evaluated run may still have status fail unless --check)
  1  failure: bad input, a failed check, a broken log, a SQL error
  2  usage error, or a threshold exceeded (policy-diff above --threshold)

environment: QMTL_PROFILE (dev|prod), QMTL_DATA_ROOT moves every dev folder at once.
docs: docs/README.md; `qmtl-validation COMMAND --help` for each command.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qmtl-validation",
        description="Validate trading strategies and portfolio risk snapshots.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
        print(f"error: {_error_text(exc)}", file=sys.stderr)
        return exc.exit_code
    except (ValueError, OSError) as exc:
        if isinstance(exc, BrokenPipeError):  # `qmtl-validation sql ... | head`: not an error
            return _quiet_broken_pipe()
        print(f"error: {_error_text(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _error_text(exc: BaseException) -> str:
    """The message on one line; a message listing several problems keeps them, one per
    indented line below the first (a bundle that breaks its contract in three places)."""
    lines = [line.rstrip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return "\n".join([lines[0], *(f"  {line.strip()}" for line in lines[1:])])


def _quiet_broken_pipe() -> int:
    # Point stdout at /dev/null so the interpreter's final flush does not raise again.
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
