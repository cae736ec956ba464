"""Sensor-triggered runs: the orchestration overhead of one run, and drop → row in the catalog.

``sensor_overhead_single_run``: a bundle is dropped, one tick of ``run_bundle_sensor`` is
evaluated through the sensor daemon's own code path (``execute_sensor_iteration``, the sensor in a
code server), and the run it requests is launched synchronously in this process (in-process
executor, as every run of this code location). Per run, from Dagster's own records:

- run time = launch (run created) → run finished;
- compute = the sum of the step durations (each step's asset body, its IO manager reads and
  writes, and its contract checks);
- overhead = run time − compute: planning, launch, run start/finish, resources, events written
  outside the steps.

The first run is a warm-up (imports, first connections) and is not counted. Measured on the
development instance (SQLite, the root ``dagster.yaml``) and on the production one (PostgreSQL,
``deploy/dagster.yaml``); the row is the development instance.

``drop_to_catalog_p95``: the real development stack — ``dagster dev`` (webserver + daemon, the
run-bundle sensor at a 5 s minimum interval, queued runs launched as run-worker processes) on a
temporary deployment. Bundles are dropped one at a time into the landing folder (``run.json``
last, as producers do) and the DuckDB catalog is polled read-only, as an analyst would, until
each run's row shows in ``evaluation_runs``. Latency = row first seen − ``run.json`` written. The
whole ``dagster dev`` process group is stopped at the end (it shuts down slowly on SIGTERM, so it
is killed after a grace period).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT, Row, percentile, stage, summarise

WORLD = "bench_world"
PERIODS = 1260  # five years of daily returns: a typical run


def _drop_files(run_number: int, day: dt.date) -> list[tuple[str, bytes]]:
    from qmtl_validation_tests.dagster_harness import bundle

    return bundle(WORLD, f"strategy_{run_number:03d}", f"run-{run_number:03d}", day=day,
                  seed=1000 + run_number, periods=PERIODS, risk_tier="medium")


def _policy_files() -> list[tuple[str, bytes]]:
    from qmtl_validation_tests.dagster_harness import policy_file

    return [policy_file(WORLD, 1)]


def _run_times(instance: Any, run_id: str) -> dict[str, Any]:
    import dagster as dg

    record = instance.get_run_records(filters=dg.RunsFilter(run_ids=[run_id]), limit=1)[0]
    stats = instance.get_run_stats(run_id)
    steps = {
        step.step_key: (step.end_time or 0.0) - (step.start_time or 0.0)
        for step in instance.get_run_step_stats(run_id)
    }
    created = record.create_timestamp.timestamp()
    run_s = (stats.end_time or 0.0) - created
    compute = sum(steps.values())
    return {
        "run_id": run_id,
        "status": record.dagster_run.status.value,
        "launch_to_start_s": (stats.start_time or 0.0) - created,
        "run_s": run_s,
        "compute_s": compute,
        "overhead_s": run_s - compute,
        "steps_s": steps,
    }


def _overhead_samples(kind: str, samples: int) -> dict[str, Any]:
    """``samples`` + 1 sensor-triggered single-partition runs on a ``kind`` instance."""
    from bench.instances import dagster_instance, data_environment, environment
    from qmtl_validation_tests.dagster_harness import Drops, daemon_workspace, tick_sensor

    with tempfile.TemporaryDirectory(prefix="qmtl-bench-sensor-") as temp:
        root = Path(temp)
        variables = {**data_environment(root), "QMTL_SENSOR_INTERVAL_SECONDS": "1", "QMTL_NOW": None}
        with environment(variables), dagster_instance(kind, root / "home") as (instance, facts):
            from qmtl_validation.settings import load_settings

            landing = Path(load_settings().landing_root)
            drops = Drops(str(landing))
            drops.put(_policy_files())
            measured = []
            with daemon_workspace(instance) as context:
                for number in range(samples + 1):
                    drops.put(_drop_files(number, dt.datetime.now(dt.timezone.utc).date()))
                    outcome = tick_sensor(context, instance, "run_bundle_sensor")
                    if len(outcome.runs) != 1:
                        raise RuntimeError(f"tick launched {len(outcome.runs)} runs: {outcome.error or outcome.skip_reason}")
                    times = _run_times(instance, outcome.runs[0].run_id)
                    if times["status"] != "SUCCESS":
                        raise RuntimeError(f"sensor-triggered run ended {times['status']}")
                    times["tick_s"] = outcome.seconds
                    measured.append(times)
            return {"instance": kind, **facts, "warm_up": measured[0], "samples": measured[1:]}


def run_overhead(config: Any) -> list[Row]:
    row = Row(
        key="sensor_overhead_single_run",
        what=("sensor-triggered single-run materialisation of one run partition: orchestration "
              "overhead beyond the compute"),
        target_text="≤ 1 s (in-process executor)", target=1.0, comparison="<=", unit="s",
    )
    by_instance: dict[str, Any] = {}
    for kind in ("sqlite", "postgres"):
        with stage(f"{config.sensor_samples} sensor-triggered runs, {kind} instance"):
            by_instance[kind] = _overhead_samples(kind, config.sensor_samples)
    chosen = by_instance["sqlite"]["samples"]
    row.timing = summarise([s["overhead_s"] for s in chosen])
    row.value = row.timing["median"]
    row.details = {
        "instance": "sqlite (development instance, root dagster.yaml)",
        "definition": "run time (created → finished) − Σ step durations",
        "run_s": summarise([s["run_s"] for s in chosen]),
        "compute_s": summarise([s["compute_s"] for s in chosen]),
        "tick_s": summarise([s["tick_s"] for s in chosen]),
        "postgres": {
            "overhead_s": summarise([s["overhead_s"] for s in by_instance["postgres"]["samples"]]),
            "run_s": summarise([s["run_s"] for s in by_instance["postgres"]["samples"]]),
            "compute_s": summarise([s["compute_s"] for s in by_instance["postgres"]["samples"]]),
        },
        "runs": by_instance,
        "periods_per_run": PERIODS,
    }
    return [row]


# ---------------------------------------------------------------------------------------------
# drop → visible, on the real dev stack


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stop_group(process: subprocess.Popen, grace_s: float = 20.0) -> str:
    """SIGTERM the whole process group, then SIGKILL what is left after ``grace_s``."""
    if process.poll() is not None:
        return "exited"
    group = os.getpgid(process.pid)
    os.killpg(group, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
        outcome = "terminated"
    except subprocess.TimeoutExpired:
        outcome = "killed"
    # run workers and code servers may outlive the parent: kill the group either way
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if process.poll() is None:
        process.wait(timeout=10)
    return outcome


def _visible_runs(catalog: Path) -> set[str]:
    from qmtl_validation.warehouse.catalog import connect_catalog

    try:
        connection = connect_catalog(catalog, retry_seconds=1.0)
    except FileNotFoundError:
        return set()
    try:
        rows = connection.execute(
            "SELECT world_id || '/' || strategy_id || '/' || run_id FROM evaluation_runs"
        ).fetchall()
    finally:
        connection.close()
    return {row[0] for row in rows}


def _drop_bundle(landing: Path, files: list[tuple[str, bytes]]) -> float:
    """Write a bundle as producers do (each file atomically, run.json last); returns the time
    run.json became visible."""
    for key, data in files:
        target = landing / key
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.tmp")
        temp.write_bytes(data)
        os.replace(temp, target)
    return time.time()


def run_drop_to_catalog(config: Any) -> list[Row]:
    from bench.instances import data_environment, sqlite_home
    from qmtl_validation.settings import load_settings
    from qmtl_validation.warehouse.catalog import ensure_catalog
    from qmtl_validation.warehouse.lake import Lake

    row = Row(
        key="drop_to_catalog_p95",
        what=(f"drop → row visible in the DuckDB catalog, dev stack, sensor interval set to "
              f"{config.sensor_interval_s} s, over {config.drops} drops"),
        target_text="p95 ≤ 15 s over 50 drops", target=15.0, comparison="<=", unit="s",
    )
    with tempfile.TemporaryDirectory(prefix="qmtl-bench-dev-") as temp:
        root = Path(temp)
        home = sqlite_home(root / "home", sync_launch=False)  # the dev instance as shipped
        env = {key: value for key, value in os.environ.items()}
        for name, value in data_environment(root).items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        env.update({
            "DAGSTER_HOME": str(home),
            "QMTL_SENSOR_INTERVAL_SECONDS": str(config.sensor_interval_s),
            "PYTHONWARNINGS": "ignore",
        })
        env.pop("QMTL_NOW", None)
        old = {name: os.environ.get(name) for name in ("QMTL_DATA_ROOT",)}
        os.environ["QMTL_DATA_ROOT"] = env["QMTL_DATA_ROOT"]
        try:
            settings = load_settings(env)
            landing, catalog = Path(settings.landing_root), Path(settings.catalog_path)
            for key, data in _policy_files():
                (landing / key).parent.mkdir(parents=True, exist_ok=True)
                (landing / key).write_bytes(data)
            ensure_catalog(catalog, Lake(settings.lake_root))  # an analyst opening the catalog
            port = _free_port()
            log_path = root / "dagster-dev.log"
            dagster = Path(sys.executable).with_name("dagster")
            with open(log_path, "wb") as log:
                process = subprocess.Popen(
                    [str(dagster), "dev", "-p", str(port), "-h", "127.0.0.1"],
                    cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            dropped: dict[str, float] = {}
            seen: dict[str, float] = {}
            stopped = "not started"
            try:
                with stage("waiting for dagster dev's first sensor tick"):
                    started = time.monotonic()
                    while time.monotonic() - started < 180:
                        if process.poll() is not None:
                            raise RuntimeError(f"dagster dev exited {process.returncode}; see {log_path}")
                        if _daemon_ticked(home):
                            break
                        time.sleep(0.5)
                    else:
                        raise RuntimeError("dagster dev's sensor never ticked within 180 s")
                today = dt.datetime.now(dt.timezone.utc).date()
                next_drop = time.monotonic()
                number = 0
                deadline = None
                with stage(f"{config.drops} drops every {config.drop_interval_s:.0f} s, polling the catalog"):
                    while True:
                        now = time.monotonic()
                        if number < config.drops and now >= next_drop:
                            key = f"{WORLD}/strategy_{number:03d}/run-{number:03d}"
                            dropped[key] = _drop_bundle(landing, _drop_files(number, today))
                            number += 1
                            next_drop += config.drop_interval_s
                            if number == config.drops:
                                deadline = now + 600
                        for key in _visible_runs(catalog) - seen.keys():
                            seen[key] = time.time()
                        if number == config.drops and seen.keys() >= dropped.keys():
                            break
                        if deadline is not None and now > deadline:
                            break
                        if process.poll() is not None:
                            raise RuntimeError(f"dagster dev exited {process.returncode}; see {log_path}")
                        time.sleep(0.2)
            finally:
                with stage("stopping dagster dev (process group)"):
                    stopped = _stop_group(process)
            launch = _launch_delays(home)
        finally:
            for name, value in old.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        latencies = [seen[key] - dropped[key] for key in dropped if key in seen]
        missing = sorted(set(dropped) - set(seen))
        summary = summarise(latencies) if latencies else None
        if summary is not None:
            summary["p50"] = percentile(latencies, 50)
            summary["p95"] = percentile(latencies, 95)
            summary["samples"] = latencies
        row.timing = summary
        row.value = summary["p95"] if summary and not missing else float("inf")
        row.details = {
            "drops": len(dropped),
            "visible": len(latencies),
            "never_visible": missing,
            "sensor_interval_s": config.sensor_interval_s,
            "drop_interval_s": config.drop_interval_s,
            "instance": "development (SQLite, QueuedRunCoordinator, a run-worker process per run)",
            "run_launch": launch,
            "dagster_dev_stop": stopped,
            "periods_per_run": PERIODS,
        }
    return [row]


def _daemon_ticked(home: Path) -> bool:
    """Whether the daemon has evaluated the run-bundle sensor at least once."""
    import dagster as dg

    try:
        instance = dg.DagsterInstance.from_config(str(home))
    except Exception:  # noqa: BLE001 - storage not created yet
        return False
    try:
        for state in instance.all_instigator_state():
            if state.name == "run_bundle_sensor":
                ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
                return bool(ticks)
        return False
    finally:
        instance.dispose()


def _launch_delays(home: Path) -> dict[str, Any] | None:
    """Per run of the dev stack: created → started (queue + run-worker process start) and
    started → finished, from the instance's run records."""
    import dagster as dg

    instance = dg.DagsterInstance.from_config(str(home))
    try:
        queued, running = [], []
        for record in instance.get_run_records(limit=1000):
            stats = instance.get_run_stats(record.dagster_run.run_id)
            if stats.start_time and stats.end_time:
                queued.append(stats.start_time - record.create_timestamp.timestamp())
                running.append(stats.end_time - stats.start_time)
        if not queued:
            return None
        return {"created_to_started_s": summarise(queued), "started_to_finished_s": summarise(running)}
    finally:
        instance.dispose()
