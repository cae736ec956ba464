"""Conventions every ``qmtl-validation`` subcommand keeps: ``--help`` works, an expected error is
one ``error:`` line with its documented exit code (1 failure, 2 usage), never a traceback; and the
shared stderr progress bar."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from qmtl_validation.cli import build_parser, main
from qmtl_validation.cli.progress import Progress, progress_iter
from qmtl_validation.cli.report import render_index, split_run_key

QMTL = [sys.executable, "-m", "qmtl_validation"]


def subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sorted(action.choices)


def run_cli(*args: str, env_extra: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([*QMTL, *args], capture_output=True, text=True, timeout=120, env=env, cwd=cwd)


def test_top_level_help_documents_the_exit_codes():
    result = run_cli("--help")
    assert result.returncode == 0
    for line in ("0  ok", "1  failure", "2  usage error, or a threshold exceeded"):
        assert line in result.stdout


@pytest.mark.parametrize("command", subcommands())
def test_every_subcommand_has_help(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: qmtl-validation {command}")
    assert "Traceback" not in result.stderr


def _expected_errors(tmp: Path) -> dict[str, tuple[list[str], int, str]]:
    """One expected error per subcommand: (arguments, exit code, text the error line holds)."""
    missing = str(tmp / "missing")
    return {
        "evaluate": (["evaluate", "--bundle", missing, "--policy", missing + ".yaml"], 1, "policy file not found"),
        "lint-snapshot": (["lint-snapshot", missing + ".json", "--now", "not-a-time"], 2, "--now: invalid timestamp"),
        "policy-diff": (["policy-diff", "--old", "a.yaml", "--new", "b.yaml", "--runs", "r.json", "--threshold", "3"],
                        2, "--threshold must be between 0 and 1"),
        "override": (["override", "--world", "w", "--strategy", "s", "--run", "r", "--status", "approved",
                      "--log", str(tmp / "o.jsonl")], 1, "approved"),
        "report": (["report", "--run", "only-one-part"], 2, "expected WORLD/STRATEGY/RUN"),
        "sql": (["sql", "select 1", "--catalog", missing + ".duckdb"], 1, "no DuckDB catalog"),
        "verify-log": (["verify-log", missing + ".jsonl"], 1, "no such override log"),
        "backfill": (["backfill"], 2, ""),
    }


def test_every_subcommand_has_an_expected_error_case(tmp_path):
    assert set(_expected_errors(tmp_path)) >= set(subcommands()) - {"backfill"}


@pytest.mark.parametrize("command", subcommands())
def test_expected_error_is_one_line_with_its_exit_code(command, tmp_path):
    cases = _expected_errors(tmp_path)
    if command not in cases:
        pytest.fail(f"add an expected-error case for the new subcommand {command}")
    args, code, text = cases[command]
    result = run_cli(*args, cwd=tmp_path, env_extra={"QMTL_DATA_ROOT": str(tmp_path / "data")})
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert text in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:") or ": error:" in line]
    assert len(errors) == 1, result.stderr


def test_unexpected_os_errors_are_one_line_not_a_traceback(tmp_path, capsys):
    folder = tmp_path / "a_folder.yaml"
    folder.mkdir()
    code = main(["evaluate", "--bundle", str(tmp_path), "--policy", str(folder)])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err.startswith("error: ") and "Traceback" not in captured.err


def test_progress_bar_redraws_in_place_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    with Progress(4, "evaluating runs", stream=stream, interval=0.0, unit="runs") as progress:
        for _ in range(4):
            progress.advance()
    text = stream.getvalue()
    assert text.count("\r") >= 4
    assert text.endswith("\n")
    assert "[" + "#" * 28 + "] 4/4 runs 100%" in text


def test_progress_is_quiet_in_logs_for_quick_work_and_summarises_slow_work():
    quick = io.StringIO()
    assert list(progress_iter(range(3), "quick", stream=quick)) == [0, 1, 2]
    assert quick.getvalue() == ""
    slow = io.StringIO()
    with Progress(2, "slow work", stream=slow, quiet_below=0.0) as progress:
        progress.advance(2)
    assert slow.getvalue().startswith("slow work: done: 2 in ")
    stopped = io.StringIO()
    with pytest.raises(RuntimeError):
        with Progress(5, "failing", stream=stopped, quiet_below=60.0) as progress:
            progress.advance()
            raise RuntimeError("boom")
    assert stopped.getvalue().startswith("failing: stopped after 1 in ")


def test_disabled_progress_writes_nothing():
    stream = io.StringIO()
    assert list(progress_iter([1, 2], "silent", stream=stream, enabled=False, total=2)) == [1, 2]
    assert stream.getvalue() == ""


def test_run_keys_for_report_are_checked_identifiers():
    from qmtl_validation.cli import CliError

    assert split_run_key("w/s/r1") == ("w", "s", "r1")
    assert split_run_key("w/s") == ("w", "s")
    for bad in ("w", "w/s/r/x", "w/../r", "w/s p/r"):
        with pytest.raises(CliError) as raised:
            split_run_key(bad)
        assert raised.value.exit_code == 2


def test_report_index_links_each_world_and_colours_by_worst_status():
    html = render_index([("alpha", 3, 1, 0, 2, 0, 0), ("beta", 2, 0, 0, 2, 1, 0)], "2024-01-01T00:00:00+00:00").decode()
    assert 'href="alpha/_overview.html"' in html and 'href="beta/_overview.html"' in html
    assert "Open freshness breaches" in html
