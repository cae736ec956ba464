"""``qmtl-validation backfill``: re-validate every historical run of a world under a policy version.

    qmtl-validation backfill --world W [--policy-version V] [--reason TEXT] [--wait [--timeout S]] [--json]

Does on demand what the policy change sensor does for a new version: puts the world's run
partitions next to each other in the partition order and submits two asset backfills to the
Dagster instance — the ``runs`` assets over every run of the world (one Dagster run, tagged
``qmtl/world``, ``qmtl/policy_version`` = V so ``rule_results`` evaluates under V, and
``qmtl/reason``) and ``policy_diff`` for the world (the version its runs were last evaluated
under vs V; it writes the ``validation_profile_changed`` event). ``--policy-version`` defaults to
the world's current (highest) version; it must exist and parse.

The instance is ``$DAGSTER_HOME``'s when set, else the dev instance (the repository's
``dagster.yaml``, what ``make dev`` runs). A running ``dagster-daemon`` (``make dev`` starts one)
launches the backfills; ``--wait`` follows them with a progress bar on stderr (materialised
asset partitions of the backfills' runs) and exits 0 only when both succeed. ``--json`` prints
one JSON document on stdout. Exit codes: 0 submitted (or, with ``--wait``, succeeded); 1 a
failure (no run partitions, a policy that does not parse, a failed backfill, no daemon, timeout);
2 a usage error (an unknown policy version).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from typing import Any, TextIO

from qmtl_validation.cli import CliError

TERMINAL_OK = ("COMPLETED_SUCCESS", "COMPLETED")
DAEMON_GRACE_SECONDS = 60.0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "backfill",
        help="re-validate a world's historical runs under a policy version (one backfill run)",
        description="Submit a backfill re-validating every run of a world under a policy version, "
        "and the policy diff of that change, to the Dagster instance.",
    )
    parser.add_argument("--world", required=True, metavar="WORLD_ID", help="world whose runs to re-validate")
    parser.add_argument("--policy-version", metavar="VERSION", help="policy version to apply (default: the world's current)")
    parser.add_argument("--reason", default=None, help="revision reason recorded on the runs (default: operator_backfill)")
    parser.add_argument("--wait", action="store_true", help="follow the backfills until they finish (needs a running dagster-daemon)")
    parser.add_argument("--timeout", type=float, default=3600.0, metavar="SECONDS", help="give up waiting after this long (default 3600)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.set_defaults(handler=run)


def open_instance():
    """``$DAGSTER_HOME``'s instance, else the dev instance of the repository."""
    import dagster as dg

    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    from qmtl_validation.demo import dev_instance

    return dev_instance()


def resolve_versions(world_id: str, requested: str | None) -> tuple[str, str | None]:
    """(version to apply, version the world's runs carry now) — validating the first."""
    from qmtl_validation.core.policy import PolicyError
    from qmtl_validation.core.policy_store import version_sort_key
    from qmtl_validation.defs.governance.assets import read_policy
    from qmtl_validation.settings import load_settings
    from qmtl_validation.warehouse.lake import Lake
    from qmtl_validation.warehouse.landing import landing_zone_from_root, list_policies
    from qmtl_validation.warehouse.queries import latest_rows

    settings = load_settings()
    zone = landing_zone_from_root(settings.landing_root, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region)
    versions = [p.policy_version for p in list_policies(zone, world_id).policies]
    if not versions:
        raise CliError(f"world {world_id} has no policy under {zone.uri('policies/' + world_id)}", 1)
    version = requested or versions[-1]
    if version not in versions:
        raise CliError(f"world {world_id} has no policy version {version} (versions: {', '.join(versions)})", 2)
    try:
        read_policy(zone, world_id, version)
    except PolicyError as error:
        raise CliError(f"policy {version} of world {world_id} does not parse, it is never applied: {error}", 1) from None
    history = latest_rows(Lake.from_settings(settings), "evaluation_run_history", world_id=world_id)
    carried = Counter(v for v in history["policy_version"].dropna()) if len(history) else Counter()
    if carried:
        previous = carried.most_common(1)[0][0]
    else:
        older = [v for v in versions if version_sort_key(v) < version_sort_key(version)]
        previous = older[-1] if older else None
    return version, previous


def backfill_progress(instance, backfill_ids: list[str]) -> tuple[int, int, list[str]]:
    """(asset partitions materialised by the backfills' runs, target asset partitions, backfill
    statuses)."""
    from dagster._core.storage.dagster_run import RunsFilter

    done = total = 0
    statuses = []
    for backfill_id in backfill_ids:
        backfill = instance.get_backfill(backfill_id)
        statuses.append(backfill.status.value)
        data = backfill.asset_backfill_data
        if data is not None:
            total += data.target_subset.num_partitions_and_non_partitioned_assets
        for run in instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill_id})):
            done += instance.get_run_stats(run.run_id).materializations
    return done, total, statuses


def wait_for_daemon(instance, grace: float | None = None) -> None:
    """Return once a backfill daemon heartbeats for ``instance`` (waiting up to ``grace`` seconds,
    default ``DAEMON_GRACE_SECONDS``); raise CliError otherwise."""
    from dagster._daemon.controller import get_daemon_statuses
    from dagster._daemon.daemon import BackfillDaemon

    daemon_type = BackfillDaemon.daemon_type()
    deadline = time.monotonic() + (DAEMON_GRACE_SECONDS if grace is None else grace)
    while True:
        status = get_daemon_statuses(instance, [daemon_type], ignore_errors=True)[daemon_type]
        if status.healthy or not status.required:
            return
        if time.monotonic() >= deadline:
            raise CliError(
                "no dagster-daemon is processing backfills for this instance (start one with `make dev`); "
                "the backfills are submitted and will run when it starts",
                1,
            )
        time.sleep(1.0)


def follow(instance, backfill_ids: list[str], timeout: float, stream: TextIO) -> list[str]:
    """Poll the backfills until they are all terminal, drawing the asset partitions their runs
    have materialised out of the target; returns the backfills' final statuses."""
    from qmtl_validation.cli.progress import Progress

    wait_for_daemon(instance)
    deadline = time.monotonic() + timeout
    with Progress(None, "backfill", stream=stream, unit="asset partitions") as progress:
        while True:
            done, total, statuses = backfill_progress(instance, backfill_ids)
            finished = all(s not in ("REQUESTED", "CANCELING", "FAILING") for s in statuses)
            progress.total = total or None
            if finished and all(s in TERMINAL_OK for s in statuses):
                done = total  # a run can end without reporting every materialisation as a stat
            progress.advance(done - progress.done)
            if finished:
                return statuses
            if time.monotonic() >= deadline:
                raise CliError(f"timed out after {timeout:g} s; backfills {', '.join(backfill_ids)} are still running", 1)
            time.sleep(1.0)


def run(args: argparse.Namespace) -> int:
    from qmtl_validation.defs.pipeline import POLICY_REASON_OPERATOR, launch_policy_backfill

    if args.timeout <= 0:
        raise CliError(f"--timeout must be positive, got {args.timeout}", 2)
    version, previous = resolve_versions(args.world, args.policy_version)
    instance = open_instance()
    try:
        runs_backfill, diff_backfill, keys = launch_policy_backfill(
            instance,
            args.world,
            version,
            previous_version=previous,
            reason=args.reason or POLICY_REASON_OPERATOR,
        )
    except ValueError as error:
        raise CliError(str(error), 1) from None
    document: dict[str, Any] = {
        "world_id": args.world,
        "policy_version": version,
        "previous_policy_version": previous,
        "runs": len(keys),
        "backfill_id": runs_backfill,
        "policy_diff_backfill_id": diff_backfill,
        "instance": str(instance.root_directory),
    }
    if not args.json:
        print(
            f"backfill {runs_backfill}: re-validating {len(keys)} run(s) of {args.world} under policy "
            f"{version} (runs currently carry {previous or 'no version'}); policy diff: backfill {diff_backfill}"
        )
    exit_code = 0
    if args.wait:
        statuses = follow(instance, [runs_backfill, diff_backfill], args.timeout, sys.stderr)
        document["statuses"] = dict(zip(("backfill", "policy_diff"), statuses))
        exit_code = 0 if all(s in TERMINAL_OK for s in statuses) else 1
        if not args.json:
            print(f"backfill {statuses[0].lower()}, policy diff {statuses[1].lower()}")
    if args.json:
        print(json.dumps(document, indent=2, sort_keys=True))
    return exit_code
