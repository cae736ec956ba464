"""The daemon's other jobs, run one iteration at a time: draining the run queue, monitoring runs
and retrying failed ones. With ``daemon_workspace`` (the code location in a code-server process)
and an instance whose run launcher is the ``DefaultRunLauncher``, launched runs execute exactly
as in production: each in its own ``dagster api execute_run`` process started by the code server,
with the environment of the moment (so a run never reuses settings a test process imported
earlier).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import time
from typing import Iterable, Sequence

import dagster as dg
from dagster._core.storage.dagster_run import DagsterRunStatus, RunsFilter

LOGGER = logging.getLogger("qmtl_validation_tests.daemons")
FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


def drain_queue(context) -> None:
    """One iteration of the queued-run coordinator daemon: launch what the limits allow."""
    from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

    daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)
    try:
        list(daemon.run_iteration(context))
    finally:
        daemon.__exit__(None, None, None)


def wait_for_runs(
    context, instance: dg.DagsterInstance, run_ids: Iterable[str] | None = None, *, timeout: float = 300.0
) -> list:
    """Drain the queue and wait until the runs (default: every run of the instance) are finished;
    returns them (``DagsterRun``) in creation order."""
    wanted = None if run_ids is None else list(run_ids)
    deadline = time.monotonic() + timeout
    while True:
        drain_queue(context)
        runs = instance.get_runs(RunsFilter(run_ids=wanted) if wanted is not None else None)
        if all(run.status in FINISHED for run in runs) and (wanted is None or len(runs) == len(wanted)):
            return list(reversed(runs))
        if time.monotonic() > deadline:
            states = {run.run_id[:8]: run.status.value for run in runs}
            raise AssertionError(f"runs not finished after {timeout:.0f} s: {states}")
        time.sleep(0.5)


def run_worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """Pid of the process executing the run's steps, from its engine events ("Executing steps in
    process (pid: N)", else "Started process for run (pid: N)")."""
    found = {}
    for record in instance.all_logs(run_id):
        for label in ("Executing steps in process", "Started process for run"):
            match = re.search(re.escape(label) + r" \(pid: (\d+)\)", record.message or "")
            if match:
                found.setdefault(label, int(match.group(1)))
    return found.get("Executing steps in process") or found.get("Started process for run")


def monitor_runs(context) -> None:
    """One iteration of the run-monitoring daemon (fails runs past their timeouts)."""
    from dagster._daemon.monitoring.run_monitoring import execute_run_monitoring_iteration

    list(execute_run_monitoring_iteration(context, LOGGER))


def retry_failed_runs(context, instance: dg.DagsterInstance, run_ids: Sequence[str]) -> list[str]:
    """What the auto-reexecution daemon does for failed runs; returns the retries' run ids."""
    from dagster._daemon.auto_run_reexecution.auto_run_reexecution import (
        consume_new_runs_for_automatic_reexecution,
    )

    records = instance.get_run_records(RunsFilter(run_ids=list(run_ids)))
    list(consume_new_runs_for_automatic_reexecution(context, records, LOGGER))
    retried = []
    for run_id in run_ids:
        retry = instance.get_run_by_id(run_id).tags.get("dagster/auto_retry_run_id")
        if retry:
            retried.append(retry)
    return retried


def _children_running(marker: str) -> list[int]:
    """Pids of this process's children whose command line contains ``marker``."""
    me = str(os.getpid())
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as handle:
                parent = handle.read().rsplit(")", 1)[1].split()[1]
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if parent == me and marker in command:
            found.append(int(entry))
    return found


def reap_code_servers(timeout: float = 60.0) -> list[int]:
    """Wait for the code servers this test process started to finish shutting down; SIGKILL the
    ones still there after ``timeout`` (returned). Call before dropping the database they use:
    a code server still winding down would otherwise retry its connections forever."""
    deadline = time.monotonic() + timeout
    while _children_running("dagster api grpc") and time.monotonic() < deadline:
        time.sleep(0.25)
    stuck = _children_running("dagster api grpc")
    for pid in stuck:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return stuck
