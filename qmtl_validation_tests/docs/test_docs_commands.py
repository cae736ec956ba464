"""Every shell command shown in the README and ``docs/*.md`` works as written.

The fenced ``sh`` blocks (and the README's ``python`` blocks) are run, each block as one bash
script, in a sandbox shaped like a checkout: a temp folder with ``.venv`` linked to this
checkout's and ``data/`` holding a freshly generated sample whose ``beta_growth`` runs were taken
in and validated on a temp Dagster instance, then catalogued as ``make demo`` does
(``QMTL_DATA_ROOT`` points there, so nothing touches the checkout's ``data/``). A command expected to fail says so with a trailing ``# exit N``
comment, which the docs show to the reader too.

Commands that cannot run here (they start servers, run the suite itself, or need a daemon) are
listed in :data:`COVERED_ELSEWHERE` with what exercises them; a command in the docs that is
neither run here nor listed fails the test, and so does a listed prefix no doc uses any more.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from qmtl_validation.settings import REPO_ROOT

pytestmark = pytest.mark.slow

DOC_FILES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
SANDBOX_WORLD = "beta_growth"

# Command prefix -> what exercises it instead of this test.
COVERED_ELSEWHERE = {
    "make test": "CI itself: .ci/run runs `make test`",
    "make demo": "by hand (it uses the checkout's .dagster_home); its steps are this sandbox's fixture: "
    "generate_sample, register_run_partitions, materialize_runs",
    "make dev": "qmtl_validation_tests/ui/test_lineage_ui.py starts dagster dev on workspace.yaml",
    "make docs-check": "it runs this test and `python -m qmtl_validation.docs_gen --check` "
    "(test_generated_docs.py)",
    ".venv/bin/qmtl-validation backfill": "qmtl_validation_tests/cli/test_backfill_cli.py (needs a daemon)",
    "make bench": "qmtl_validation_tests/bench/test_bench_entry_point.py runs the same entry point at toy "
    "sizes (the full run takes about an hour)",
    ".venv/bin/python -m bench": "qmtl_validation_tests/bench/test_bench_entry_point.py (--quick, --only)",
    ".venv/bin/python -m pytest": "`make test` runs the whole suite, these tests included",
}


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    language: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO_ROOT)}:{self.line}"


def fenced_blocks(path: Path) -> list[Block]:
    blocks, language, start, lines = [], None, 0, []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = line.strip()
        if language is None and stripped.startswith("```") and len(stripped) > 3:
            language, start, lines = stripped[3:].strip(), number, []
        elif language is not None and stripped == "```":
            blocks.append(Block(path, start, language, "\n".join(lines)))
            language = None
        elif language is not None:
            lines.append(line)
    return blocks


def logical_lines(script: str) -> list[str]:
    """Command lines with backslash continuations joined (heredoc bodies are left alone)."""
    out, current, heredoc_end = [], "", None
    for line in script.splitlines():
        if heredoc_end is not None:
            if line.strip() == heredoc_end:
                heredoc_end = None
            continue
        current = f"{current.rstrip()} {line.strip()}" if current else line
        if current.endswith("\\"):
            current = current[:-1]
            continue
        match = re.search(r"<<-?\s*'?\"?(\w+)", current)
        if match:
            heredoc_end = match.group(1)
        if current.strip():
            out.append(current.strip())
        current = ""
    return out


def shell_blocks() -> list[Block]:
    return [b for path in DOC_FILES for b in fenced_blocks(path) if b.language in ("sh", "bash", "shell")]


def python_blocks() -> list[Block]:
    return [b for b in fenced_blocks(REPO_ROOT / "README.md") if b.language == "python"]


def elsewhere(command: str) -> str | None:
    for prefix, reason in COVERED_ELSEWHERE.items():
        if command == prefix or command.startswith(prefix + " ") or command.startswith(prefix + "\t"):
            return reason
    return None


EXPECTED_EXIT = re.compile(r"#\s*exit\s+(\d+)\s*$")


def runnable_script(block: Block) -> str:
    """The block as a bash script: commands covered elsewhere become no-ops, ``# exit N`` lines
    are checked for that exit code."""
    out = ["set -eo pipefail"]
    heredoc_end = None
    for number, raw in enumerate(block.text.splitlines(), start=1):
        if heredoc_end is not None:
            out.append(raw)
            if raw.strip() == heredoc_end:
                heredoc_end = None
            continue
        command = raw.strip()
        match = re.search(r"<<-?\s*'?\"?(\w+)", command)
        if match:
            heredoc_end = match.group(1)
        if elsewhere(command):
            out.append(": covered elsewhere")
            continue
        expected = EXPECTED_EXIT.search(command)
        if expected and not raw.rstrip().endswith("\\"):
            body = command[: expected.start()].rstrip()
            code = expected.group(1)
            out.append(
                f"set +e; {body}; rc=$?; set -e; "
                f'[ "$rc" -eq {code} ] || {{ echo "line {number} of the block: expected exit {code}, got $rc" >&2; exit 97; }}'
            )
        else:
            out.append(raw)
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """A checkout-shaped folder whose ``data/`` is a materialised sample (module docstring)."""
    import dagster as dg

    from qmtl_validation.defs.pipeline import materialize_runs, register_run_partitions
    from qmtl_validation.sample_data import generate_sample
    from qmtl_validation.settings import load_settings
    from qmtl_validation.warehouse.catalog import ensure_catalog
    from qmtl_validation.warehouse.lake import Lake

    root = tmp_path_factory.mktemp("docs_sandbox")
    work, home = root / "work", root / "dagster_home"
    work.mkdir()
    home.mkdir()
    (work / ".venv").symlink_to(REPO_ROOT / ".venv")
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    env_names = ("QMTL_LANDING_ROOT", "QMTL_LAKE_ROOT", "QMTL_CATALOG_PATH", "QMTL_REPORT_ROOT", "QMTL_PROFILE")
    with pytest.MonkeyPatch.context() as patch:
        for name in env_names:
            patch.delenv(name, raising=False)
        patch.setenv("QMTL_DATA_ROOT", str(work / "data"))
        patch.chdir(home)
        settings = load_settings()
        today = dt.datetime.now(dt.timezone.utc).date()
        generate_sample(settings.landing_root, today=today)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            keys, _ = register_run_partitions(instance, settings, today=today)
            assert materialize_runs(instance, [k for k in keys if k.startswith(f"{SANDBOX_WORLD}/")]).success
        # As `make demo` does after its runs: the analysts' catalog of views over the lake.
        ensure_catalog(settings.catalog_path, Lake.from_settings(settings))
    env = {k: v for k, v in os.environ.items() if k not in env_names}
    env.update({"QMTL_DATA_ROOT": str(work / "data"), "DAGSTER_HOME": str(home), "COLUMNS": "120"})
    return work, env


def run_in(sandbox, script: str, *, interpreter: str = "bash") -> subprocess.CompletedProcess:
    work, env = sandbox
    command = ["bash", "-c", script] if interpreter == "bash" else [str(work / ".venv" / "bin" / "python"), "-c", script]
    return subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=600)


def test_the_docs_show_commands_and_every_one_is_run_or_covered():
    commands = [line for block in shell_blocks() for line in logical_lines(block.text)]
    assert len(commands) >= 20
    assert any(c.startswith("make demo") for c in commands) and any(c.startswith("make test") for c in commands)
    used = {prefix for prefix in COVERED_ELSEWHERE for c in commands if elsewhere(c) == COVERED_ELSEWHERE[prefix]}
    stale = set(COVERED_ELSEWHERE) - used
    assert not stale, f"COVERED_ELSEWHERE lists commands no doc shows any more: {sorted(stale)}"


def test_the_readme_shows_make_demo_and_make_test_first():
    first = next(b for b in fenced_blocks(REPO_ROOT / "README.md") if b.language == "sh")
    lines = logical_lines(first.text)
    assert lines[0].startswith("make demo") and lines[1].startswith("make test")


@pytest.mark.parametrize("block", shell_blocks(), ids=lambda b: b.where)
def test_documented_shell_block_runs_as_written(sandbox, block):
    result = run_in(sandbox, runnable_script(block))
    output = f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
    assert result.returncode == 0, f"{block.where} failed (exit {result.returncode}):\n{block.text}\n{output}"
    assert "Traceback" not in result.stderr, f"{block.where} printed a traceback:\n{output}"


@pytest.mark.parametrize("block", python_blocks(), ids=lambda b: b.where)
def test_documented_python_block_runs_as_written(sandbox, block):
    result = run_in(sandbox, block.text, interpreter="python")
    assert result.returncode == 0, f"{block.where}:\n{block.text}\n{result.stderr[-3000:]}"


def test_quickstart_overview_writes_an_index_linking_every_world(sandbox):
    work, _ = sandbox
    result = run_in(sandbox, ".venv/bin/qmtl-validation report --overview --json")
    assert result.returncode == 0, result.stderr
    index = work / "data" / "warehouse" / "reports" / "index.html"
    html = index.read_text()
    assert f'href="{SANDBOX_WORLD}/_overview.html"' in html
    overview = (work / "data" / "warehouse" / "reports" / SANDBOX_WORLD / "_overview.html").read_text()
    assert "Runs by status and recommended stage" in overview
    assert "report.html" in overview  # each run links its report


def test_runnable_script_checks_documented_exit_codes(sandbox):
    ok = Block(REPO_ROOT / "README.md", 1, "sh", "false  # exit 1\ntrue")
    wrong = Block(REPO_ROOT / "README.md", 1, "sh", "true  # exit 2")
    skipped = Block(REPO_ROOT / "README.md", 1, "sh", "make dev    # serves forever")
    assert run_in(sandbox, runnable_script(ok)).returncode == 0
    assert run_in(sandbox, runnable_script(wrong)).returncode == 97
    assert run_in(sandbox, runnable_script(skipped)).returncode == 0


def test_continuations_and_heredocs_make_one_command_each():
    script = "a \\\n  --b c\n.venv/bin/python - <<'PY'\nprint(1)\nPY\nd  # exit 2\n"
    assert logical_lines(script) == ["a --b c", ".venv/bin/python - <<'PY'", "d  # exit 2"]
