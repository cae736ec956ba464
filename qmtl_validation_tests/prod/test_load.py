"""Load test: 2,000 run bundles and 200 risk snapshots dropped at once, all processed through the
sensors, with no loss and no duplicates. Prints (and writes to ``QMTL_LOAD_REPORT`` if set) the
wall time and the peak memory.

Not part of ``make test``: it runs only with ``QMTL_LOAD_TEST=1`` (``make load-test``). The sizes
can be changed with ``QMTL_LOAD_BUNDLES`` / ``QMTL_LOAD_SNAPSHOTS`` (e.g. for a quick rehearsal).

Set-up: dev profile (local landing zone and lake in a temp folder) and a temp instance with the
queued run coordinator, like production. Two phases, each measured:

1. intake: the two landing-zone sensors tick in turn (the daemon's ``execute_sensor_iteration``,
   the default bound of 200 drops per tick) until neither has anything new; every drop must have
   become exactly one partition and one queued run;
2. execution: the queue daemon drains the queue; its run launcher executes each run as it is
   launched, synchronously in this process (the launch path is the daemon's, the execution is the
   run worker's without the process start-up).

Peak memory is sampled every half second: the test process (which executes the runs) and the code
server (which evaluates the sensors).
"""

import datetime as dt
import json
import os
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from dagster._core.test_utils import instance_for_test

from qmtl_validation.sample_data import (
    DEMO_SIGNING_KEYS,
    SIGNING_KEY_ENV,
    bundle_files,
    make_run_manifest,
    snapshot_files,
)
from qmtl_validation.warehouse.lake import Lake
from qmtl_validation.warehouse.outbox import verify_events_chain
from qmtl_validation.warehouse.queries import latest_rows
from qmtl_validation_tests.dagster_harness import (
    SYNC_INSTANCE_OVERRIDES,
    Drops,
    daemon_workspace,
    deployment,
    partition_keys_of,
    policy_file,
    sensor_environment,
    set_clock,
    tick_sensor,
)
from qmtl_validation_tests.prod.daemons import _children_running, drain_queue, reap_code_servers

pytestmark = [
    pytest.mark.load,
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("QMTL_LOAD_TEST") != "1", reason="the load test runs with QMTL_LOAD_TEST=1"),
]

BUNDLES = int(os.environ.get("QMTL_LOAD_BUNDLES", "2000"))
SNAPSHOTS = int(os.environ.get("QMTL_LOAD_SNAPSHOTS", "200"))
WORLDS = ("alpha_core", "beta_growth", "gamma_lab")
STRATEGIES_PER_WORLD = 12
NOW = dt.datetime(2026, 11, 27, 15, 0, tzinfo=dt.timezone.utc)


def _rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


class PeakMemory:
    """Samples the resident memory of this process and of its code-server children."""

    def __init__(self, interval: float = 0.5):
        self.interval = interval
        self.test_process = 0.0
        self.code_server = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.test_process = max(self.test_process, _rss_mib(os.getpid()))
            for pid in _children_running("dagster api grpc"):
                self.code_server = max(self.code_server, _rss_mib(pid))

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _drops(landing: str) -> tuple[list[str], list[str]]:
    drops = Drops(landing)
    drops.put([policy_file(world, 1, world) for world in WORLDS])
    rng = np.random.default_rng(2026)
    run_keys = []
    for n in range(BUNDLES):
        world = WORLDS[n % len(WORLDS)]
        strategy = f"strategy_{(n // len(WORLDS)) % STRATEGIES_PER_WORLD:02d}"
        run_id = f"run-{n:05d}"
        manifest = make_run_manifest(world, strategy, run_id, submitted_at=NOW - dt.timedelta(hours=1))
        drops.put(bundle_files(manifest, rng.normal(0.0006, 0.01, 260), drop_date=NOW.date()))
        run_keys.append(f"{world}/{strategy}/{run_id}")
    snapshot_keys = []
    for n in range(SNAPSHOTS):
        world = WORLDS[n % len(WORLDS)]
        version = f"v{n // len(WORLDS) + 1:05d}"
        names = [f"strategy_{i:02d}" for i in range(STRATEGIES_PER_WORLD)]
        vols = rng.uniform(0.006, 0.012, len(names))
        covariance = {f"{a},{b}": float(vols[i] * vols[j] * (1.0 if i == j else 0.3))
                      for i, a in enumerate(names) for j, b in enumerate(names) if j >= i}
        payload = {
            "world_id": world,
            "as_of": (NOW - dt.timedelta(minutes=30) + dt.timedelta(seconds=n)).isoformat().replace("+00:00", "Z"),
            "version": version,
            "weights": {name: 1.0 / len(names) for name in names},
            "covariance": covariance,
            "provenance": {"actor": "risk-engine", "stage": "paper", "source": "load-test"},
            "ttl_sec": 3600,
        }
        # alpha_core's policy requires signed snapshots (its key comes from the environment).
        drops.put(snapshot_files(payload, drop_date=NOW.date(), signing_key=DEMO_SIGNING_KEYS.get(world)))
        snapshot_keys.append(f"{world}/{version}")
    return run_keys, snapshot_keys


def _covered(instance, runs) -> Counter:
    """How many of ``runs`` cover each partition (a run covers one partition or a range)."""
    orders = {"validate_runs": instance.get_dynamic_partitions("evaluation_runs"),
              "validate_snapshots": instance.get_dynamic_partitions("risk_snapshots")}
    return Counter(key for run in runs for key in partition_keys_of(run, orders[run.job_name]))


def test_thousands_of_drops_at_once_are_all_processed_once_through_the_sensors(tmp_path, monkeypatch):
    deploy = deployment(tmp_path, monkeypatch)
    clock = tmp_path / "clock.txt"
    set_clock(clock, NOW)
    sensor_environment(monkeypatch, clock)
    for world, variable in SIGNING_KEY_ENV.items():
        monkeypatch.setenv(variable, DEMO_SIGNING_KEYS[world])
    started = time.perf_counter()
    run_keys, snapshot_keys = _drops(deploy.settings.landing_root)  # all at once, before any tick
    drop_seconds = time.perf_counter() - started
    landing_files = sorted(p for p in Path(deploy.settings.landing_root).rglob("*") if p.is_file())

    figures: dict = {"bundles": BUNDLES, "snapshots": SNAPSHOTS, "drop_seconds": round(drop_seconds, 1)}
    ticks = []
    # The queue takes everything the sensors request; its launcher runs each run where it is launched.
    overrides = {"run_launcher": SYNC_INSTANCE_OVERRIDES["run_launcher"],
                 "run_queue": {"max_concurrent_runs": 50}}
    try:
        with PeakMemory() as memory, instance_for_test(overrides=overrides) as instance, \
                daemon_workspace(instance) as context:
            started = time.perf_counter()
            idle = 0
            while idle < 2:  # both sensors had nothing new
                for sensor in ("run_bundle_sensor", "risk_snapshot_sensor"):
                    outcome = tick_sensor(context, instance, sensor)
                    assert outcome.error is None, outcome.error
                    ticks.append((sensor, len(outcome.run_ids), round(outcome.seconds, 1), outcome.cursor))
                    idle = idle + 1 if not outcome.run_ids else 0
            intake_seconds = time.perf_counter() - started
            queued = instance.get_runs()
            queued_partitions = _covered(instance, queued)
            assert sum(queued_partitions.values()) == BUNDLES + SNAPSHOTS and max(queued_partitions.values()) == 1
            intake_memory = (memory.test_process, memory.code_server)

            started = time.perf_counter()
            while any(run.status.value in ("QUEUED", "STARTING", "STARTED") for run in instance.get_runs()):
                drain_queue(context)
            execution_seconds = time.perf_counter() - started
            runs = instance.get_runs()
            statuses = Counter(run.status.value for run in runs)
            partitions = _covered(instance, runs)
            jobs = Counter(run.job_name for run in runs)
    finally:
        reap_code_servers()
    figures.update(
        intake_seconds=round(intake_seconds, 1),
        ticks=len(ticks),
        execution_seconds=round(execution_seconds, 1),
        wall_seconds=round(intake_seconds + execution_seconds, 1),
        runs=len(runs),
        runs_by_job=dict(jobs),
        seconds_per_run=round(execution_seconds / max(1, len(runs)), 2),
        peak_rss_intake_test_process_mib=round(intake_memory[0], 1),
        peak_rss_intake_code_server_mib=round(intake_memory[1], 1),
        peak_rss_test_process_mib=round(memory.test_process, 1),
        peak_rss_code_server_mib=round(memory.code_server, 1),
    )

    # Every drop became exactly one partition, covered by exactly one successful run (a tick's
    # drops of one world share a run); nothing was rejected.
    assert statuses == Counter({"SUCCESS": len(runs)}), statuses
    assert set(partitions) == set(run_keys) | set(snapshot_keys)
    assert max(partitions.values()) == 1
    assert set(jobs) == {"validate_runs", "validate_snapshots"}
    lake = Lake(deploy.settings.lake_root)
    registry = latest_rows(lake, "landing_registry", latest=False)
    assert len(registry) == BUNDLES + SNAPSHOTS and registry["partition_key"].is_unique
    assert latest_rows(lake, "rejections", latest=False).empty
    history = latest_rows(lake, "evaluation_run_history", latest=False)
    history_keys = history["world_id"] + "/" + history["strategy_id"] + "/" + history["run_id"]
    assert set(history_keys) == set(run_keys)  # no run lost
    assert not history.duplicated(["world_id", "strategy_id", "run_id", "revision"]).any()  # none doubled
    manifests = latest_rows(lake, "run_manifests", latest=False)
    assert len(manifests) == BUNDLES
    assert all(check.ok for check in verify_events_chain(lake))
    assert sorted(p for p in Path(deploy.settings.landing_root).rglob("*") if p.is_file()) == landing_files

    figures["tick_log"] = [{"sensor": s, "runs": n, "seconds": sec, "new": c.get("new"),
                            "deferred": c.get("deferred")} for s, n, sec, c in ticks]
    report = json.dumps(figures, indent=2)
    print(report)
    if os.environ.get("QMTL_LOAD_REPORT"):
        Path(os.environ["QMTL_LOAD_REPORT"]).write_text(report, encoding="utf-8")
