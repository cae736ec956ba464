"""Operations on the code location used outside a sensor tick: by the demo, the CLI and tests.

- ``register_run_partitions``: the intake the run-bundle sensor performs, run once on demand.
- ``materialize_runs``: validate runs in-process as one run over one partition range.
- ``make_contiguous``: put some run partitions next to each other in Dagster's partition order.
- ``register_snapshot_partitions`` / ``materialize_snapshots`` / ``materialize_fallbacks``: the
  same for risk snapshots (the snapshot sensor's intake) and a world's conservative fallback.

Why ``make_contiguous``: Dagster turns a single-run backfill into one run per *contiguous range*
of partition keys, and dynamic partitions are ordered by when they were added. A world's runs
arrive interleaved with other worlds', so before a backfill over one world we re-add that world's
keys together at the end of the order. The partition set is unchanged and materialisation
history is keyed by the key text, so nothing else moves.
"""

import datetime as dt
from typing import Sequence

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from qmtl_validation.defs.runs.partitions import evaluation_runs_partitions
from qmtl_validation.settings import Settings
from qmtl_validation.warehouse.intake import IntakeResult, record_intake, registered_drops, take_in_run_bundles
from qmtl_validation.warehouse.lake import Lake
from qmtl_validation.warehouse.landing import landing_zone_from_root

RUNS_PARTITIONS = evaluation_runs_partitions.name


def register_run_partitions(
    instance: dg.DagsterInstance,
    settings: Settings,
    *,
    today: dt.date,
    lookback_days: int = 30,
    max_bundles: int = 1_000_000,
) -> tuple[list[str], IntakeResult]:
    """Take in every bundle of the look-back and add the new ones as partitions.

    Returns every run this deployment's lake has registered (in registration order; they are all
    partitions of the instance afterwards) and the intake.
    """
    zone = landing_zone_from_root(
        settings.landing_root, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region
    )
    lake = Lake.from_settings(settings)
    now = dt.datetime.now(dt.timezone.utc)
    intake = take_in_run_bundles(
        zone, lake, today=today, lookback_days=lookback_days, max_bundles=max_bundles, now=now, sensor="intake"
    )
    record_intake(lake, intake, now=now, file_label="intake")
    registered = list(registered_drops(lake, "run_bundle"))
    known = set(instance.get_dynamic_partitions(RUNS_PARTITIONS))
    missing = [key for key in registered if key not in known]
    if missing:
        instance.add_dynamic_partitions(RUNS_PARTITIONS, missing)
    return registered, intake


def make_contiguous(
    instance: dg.DagsterInstance, keys: Sequence[str], partitions_name: str = RUNS_PARTITIONS
) -> list[str]:
    """Reorder so ``keys`` form one range of the partition order; returns them in that order."""
    order = list(instance.get_dynamic_partitions(partitions_name))
    wanted = set(keys)
    unknown = wanted.difference(order)
    if unknown:
        raise ValueError(f"not {partitions_name} partitions: {sorted(unknown)[:3]}")
    ordered = [key for key in order if key in wanted]
    if is_contiguous(order, ordered):
        return ordered
    for key in ordered:
        instance.delete_dynamic_partition(partitions_name, key)
    instance.add_dynamic_partitions(partitions_name, ordered)
    return ordered


def range_tags(keys: Sequence[str]) -> dict[str, str]:
    return {ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]}


def run_range(
    job: dg.JobDefinition,
    instance: dg.DagsterInstance,
    ordered_keys: Sequence[str],
    tags: dict[str, str] | None,
    log_level: str,
    raise_on_error: bool,
) -> dg.ExecuteInProcessResult:
    """Execute ``job`` in-process as one run over the partition range of ``ordered_keys``."""
    return job.execute_in_process(
        instance=instance,
        tags={**(tags or {}), **range_tags(ordered_keys)},
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        raise_on_error=raise_on_error,
    )


def materialize_runs(
    instance: dg.DagsterInstance,
    keys: Sequence[str],
    *,
    tags: dict[str, str] | None = None,
    log_level: str = "WARNING",
    raise_on_error: bool = True,
) -> dg.ExecuteInProcessResult:
    """Validate ``keys`` in-process as one Dagster run (one partition range)."""
    from qmtl_validation.definitions import defs

    ordered = make_contiguous(instance, keys)
    return run_range(defs.resolve_job_def("validate_runs"), instance, ordered, tags, log_level, raise_on_error)


# ---------------------------------------------------------------------------------------------
# Risk snapshots: the same two steps for the risk hub.


def register_snapshot_partitions(
    instance: dg.DagsterInstance,
    settings: Settings,
    *,
    today: dt.date,
    lookback_days: int = 30,
    max_snapshots: int = 1_000_000,
) -> tuple[list[str], IntakeResult]:
    """Take in every risk snapshot of the look-back (the snapshot sensor's intake) and add the new
    ones as ``risk_snapshots`` partitions, and their worlds as ``worlds`` partitions.

    Returns every snapshot partition key the instance now has (in partition order) and the intake.
    """
    from qmtl_validation.defs.risk_hub.partitions import risk_snapshots_partitions, worlds_partitions
    from qmtl_validation.warehouse.snapshot_intake import take_in_snapshots

    zone = landing_zone_from_root(
        settings.landing_root, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region
    )
    lake = Lake.from_settings(settings)
    now = dt.datetime.now(dt.timezone.utc)
    intake = take_in_snapshots(
        zone, lake, today=today, lookback_days=lookback_days, max_snapshots=max_snapshots, now=now, sensor="intake"
    )
    record_intake(lake, intake, now=now, file_label="snapshot-intake")
    if intake.partition_keys:
        instance.add_dynamic_partitions(risk_snapshots_partitions.name, intake.partition_keys)
        known = set(instance.get_dynamic_partitions(worlds_partitions.name))
        worlds = sorted({drop.world_id for drop in intake.registered} - known)
        if worlds:
            instance.add_dynamic_partitions(worlds_partitions.name, worlds)
    return list(instance.get_dynamic_partitions(risk_snapshots_partitions.name)), intake


def materialize_snapshots(
    instance: dg.DagsterInstance,
    keys: Sequence[str],
    *,
    tags: dict[str, str] | None = None,
    log_level: str = "WARNING",
    raise_on_error: bool = True,
) -> dg.ExecuteInProcessResult:
    """Take risk snapshot partitions ``keys`` through the risk hub in-process as one Dagster run."""
    from qmtl_validation.definitions import defs
    from qmtl_validation.defs.risk_hub.definitions import VALIDATE_SNAPSHOTS_JOB
    from qmtl_validation.defs.risk_hub.partitions import risk_snapshots_partitions

    ordered = make_contiguous(instance, keys, risk_snapshots_partitions.name)
    return run_range(defs.resolve_job_def(VALIDATE_SNAPSHOTS_JOB), instance, ordered, tags, log_level, raise_on_error)


def materialize_fallbacks(
    instance: dg.DagsterInstance,
    world_ids: Sequence[str],
    *,
    tags: dict[str, str] | None = None,
    log_level: str = "WARNING",
    raise_on_error: bool = True,
) -> dg.ExecuteInProcessResult:
    """Materialise the conservative fallback snapshot of ``world_ids`` in-process as one run."""
    from qmtl_validation.definitions import defs
    from qmtl_validation.defs.risk_hub.definitions import FALLBACK_JOB
    from qmtl_validation.defs.risk_hub.partitions import worlds_partitions

    known = set(instance.get_dynamic_partitions(worlds_partitions.name))
    missing = [w for w in world_ids if w not in known]
    if missing:
        instance.add_dynamic_partitions(worlds_partitions.name, missing)
    ordered = make_contiguous(instance, world_ids, worlds_partitions.name)
    return run_range(defs.resolve_job_def(FALLBACK_JOB), instance, ordered, tags, log_level, raise_on_error)


# ---------------------------------------------------------------------------------------------
# Policy changes: re-validating a world's history under a policy version.

POLICY_REASON_SENSOR = "policy_change"
POLICY_REASON_OPERATOR = "operator_backfill"
PREVIOUS_POLICY_VERSION_TAG = "qmtl/previous_policy_version"


def world_run_keys(order: Sequence[str], world_id: str) -> list[str]:
    """The run partition keys (``world/strategy/run``) of ``world_id``, in partition order."""
    prefix = f"{world_id}/"
    return [key for key in order if key.startswith(prefix)]


def is_contiguous(order: Sequence[str], keys: Sequence[str]) -> bool:
    """True when ``keys`` form one range of the partition ``order`` (what a single-run backfill
    over them needs to be one run)."""
    wanted = set(keys)
    positions = [i for i, key in enumerate(order) if key in wanted]
    return not positions or positions[-1] - positions[0] + 1 == len(positions)


def policy_backfill_tags(
    world_id: str, policy_version: str, previous_version: str | None, reason: str
) -> dict[str, str]:
    """Tags of a policy backfill: the runs assets pin ``world_id`` to ``policy_version``
    (``qmtl/world`` + ``qmtl/policy_version``); ``qmtl/reason`` becomes the revision reason."""
    from qmtl_validation.defs.runs.assets import POLICY_VERSION_TAG, REASON_TAG, WORLD_TAG

    tags = {WORLD_TAG: world_id, POLICY_VERSION_TAG: policy_version, REASON_TAG: reason}
    if previous_version is not None:
        tags[PREVIOUS_POLICY_VERSION_TAG] = previous_version
    return tags


def runs_asset_keys(asset_graph) -> list[dg.AssetKey]:
    """Every asset of the ``runs`` group (what a re-validation materialises)."""
    return sorted(dg.AssetSelection.groups("runs").resolve(asset_graph), key=lambda k: k.to_user_string())


def launch_policy_backfill(
    instance: dg.DagsterInstance,
    world_id: str,
    policy_version: str,
    *,
    previous_version: str | None,
    reason: str = POLICY_REASON_OPERATOR,
) -> tuple[str, str, list[str]]:
    """Submit what a policy change does, as two backfills the daemon runs: the ``runs`` assets
    over every run partition of ``world_id`` (made contiguous first, so with single-run backfill
    policies it is one run) and ``policy_diff`` for the world. Returns the two backfill ids and
    the run keys covered. Raises ValueError when the world has no run partitions.
    """
    from dagster._core.execution.backfill import PartitionBackfill
    from dagster._core.utils import make_new_backfill_id

    from qmtl_validation.definitions import defs
    from qmtl_validation.defs.risk_hub.partitions import worlds_partitions

    keys = world_run_keys(instance.get_dynamic_partitions(RUNS_PARTITIONS), world_id)
    if not keys:
        raise ValueError(f"world {world_id} has no evaluation run partitions (are its bundles taken in?)")
    ordered = make_contiguous(instance, keys)
    if not instance.has_dynamic_partition(worlds_partitions.name, world_id):
        instance.add_dynamic_partitions(worlds_partitions.name, [world_id])
    asset_graph = defs.resolve_asset_graph()
    tags = policy_backfill_tags(world_id, policy_version, previous_version, reason)
    now = dt.datetime.now(dt.timezone.utc).timestamp()
    ids = []
    for partitions, assets, title in (
        (ordered, runs_asset_keys(asset_graph), f"Re-validate {world_id} under policy {policy_version}"),
        ([world_id], [dg.AssetKey("policy_diff")], f"Policy diff of {world_id}: {previous_version} -> {policy_version}"),
    ):
        backfill_id = make_new_backfill_id()
        instance.add_backfill(
            PartitionBackfill.from_asset_partitions(
                backfill_id=backfill_id,
                asset_graph=asset_graph,
                partition_names=list(partitions),
                asset_selection=assets,
                backfill_timestamp=now,
                tags=tags,
                dynamic_partitions_store=instance,
                all_partitions=False,
                title=title,
                description=None,
                run_config=None,
            )
        )
        ids.append(backfill_id)
    return ids[0], ids[1], ordered
