"""Operations on the code location used outside a sensor tick: by the demo, the CLI and tests.

- ``register_run_partitions``: the intake the run-bundle sensor performs, run once on demand.
- ``materialize_runs``: validate runs in-process as one run over one partition range.
- ``make_contiguous``: put some run partitions next to each other in Dagster's partition order.

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
from qmtl_validation.warehouse.intake import IntakeResult, record_intake, take_in_run_bundles
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

    Returns every run partition key the instance now has (in partition order) and the intake.
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
    if intake.partition_keys:
        instance.add_dynamic_partitions(RUNS_PARTITIONS, intake.partition_keys)
    return list(instance.get_dynamic_partitions(RUNS_PARTITIONS)), intake


def make_contiguous(instance: dg.DagsterInstance, keys: Sequence[str]) -> list[str]:
    """Reorder so ``keys`` form one range of the partition order; returns them in that order."""
    order = list(instance.get_dynamic_partitions(RUNS_PARTITIONS))
    wanted = set(keys)
    unknown = wanted.difference(order)
    if unknown:
        raise ValueError(f"not run partitions: {sorted(unknown)[:3]}")
    positions = [i for i, key in enumerate(order) if key in wanted]
    ordered = [order[i] for i in positions]
    if positions and positions[-1] - positions[0] + 1 == len(positions):
        return ordered
    for key in ordered:
        instance.delete_dynamic_partition(RUNS_PARTITIONS, key)
    instance.add_dynamic_partitions(RUNS_PARTITIONS, ordered)
    return ordered


def range_tags(keys: Sequence[str]) -> dict[str, str]:
    return {ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]}


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
    job = defs.resolve_job_def("validate_runs")
    return job.execute_in_process(
        instance=instance,
        tags={**(tags or {}), **range_tags(ordered)},
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        raise_on_error=raise_on_error,
    )
