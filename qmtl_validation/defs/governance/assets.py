"""Governance assets: what a policy change flips.

``policy_diff`` is partitioned by ``worlds``: each materialisation evaluates every run of the world
(its latest metrics and manifest) under the world's old and new policy version with
:func:`qmtl_validation.core.policy_diff.diff_policies`, writes one ``policy_diff`` row per run,
and appends a ``validation_profile_changed`` event whose counts are those of the rows.

Which versions: the run tags ``qmtl/world`` + ``qmtl/policy_version`` (new) and
``qmtl/previous_policy_version`` (old) set by the policy change sensor and ``qmtl-validation
backfill``; without them (a materialisation from the UI) the new version is the world's current
one and the old the version before it in natural order.
"""


import datetime as dt
import json
from collections import Counter
from typing import Any, Mapping, Sequence

import dagster as dg
import pandas as pd

from qmtl_validation.core import contracts
from qmtl_validation.core.events import cloud_event
from qmtl_validation.core.evaluation import ruleset_hash
from qmtl_validation.core.policy import Policy, PolicyError, load_policy
from qmtl_validation.core.policy_diff import PolicyDiff, diff_policies
from qmtl_validation.defs.contract_checks import TableOutput, contract_check_spec, table_type, validated_outputs
from qmtl_validation.defs.pipeline import PREVIOUS_POLICY_VERSION_TAG
from qmtl_validation.defs.resources import LandingZoneResource, WarehouseResource, now_utc
from qmtl_validation.defs.risk_hub.partitions import worlds_partitions
from qmtl_validation.defs.runs.assets import POLICY_VERSION_TAG, WORLD_TAG
from qmtl_validation.warehouse import run_rows
from qmtl_validation.warehouse.documents import POLICY_MAX_BYTES
from qmtl_validation.core.policy_store import version_sort_key
from qmtl_validation.warehouse.landing import LandingZone, list_policies
from qmtl_validation.warehouse.outbox import append_events

GROUP = "governance"
OWNERS = ["team:quant-validation"]
EVENT_SOURCE = "qmtl_validation/governance"
PREVIEW_ROWS = 50
STAGES = ("backtest", "paper", "live")

POLICY_DIFF_COLUMNS = (
    "world_id", "old_policy_version", "new_policy_version", "strategy_id", "run_id", "stage", "changed",
    "old_status", "new_status", "old_recommended_stage", "new_recommended_stage", "status_changed",
    "stage_changed", "flipped_rules", "old_ruleset_hash", "new_ruleset_hash", "computed_at",
)


def read_policy(zone: LandingZone, world_id: str, version: str) -> Policy:
    """Parse ``policies/<world>/<version>.yaml`` (or ``.yml``); raises PolicyError."""
    files = [p for p in list_policies(zone, world_id).policies if p.policy_version == version]
    if not files:
        raise PolicyError(f"world {world_id} has no policy version {version}")
    try:
        text = zone.read_bytes(files[0].key, POLICY_MAX_BYTES).decode("utf-8")
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise PolicyError(f"{files[0].key}: {error}") from None
    return load_policy(text, version=version)


def diff_versions(
    zone: LandingZone, world_id: str, tags: Mapping[str, str]
) -> tuple[str | None, str]:
    """(old, new) policy versions of ``world_id`` for a diff (module docstring)."""
    versions = [p.policy_version for p in list_policies(zone, world_id).policies]
    if not versions:
        raise PolicyError(f"world {world_id} has no policy")
    if tags.get(WORLD_TAG) == world_id and tags.get(POLICY_VERSION_TAG):
        return tags.get(PREVIOUS_POLICY_VERSION_TAG), tags[POLICY_VERSION_TAG]
    new = versions[-1]
    older = [v for v in versions if version_sort_key(v) < version_sort_key(new)]
    return (older[-1] if older else None), new


def world_run_records(
    metrics: pd.DataFrame, manifests: pd.DataFrame, now: dt.datetime
) -> list[dict[str, Any]]:
    """Run records for :func:`diff_policies` from a world's latest metrics and manifest rows
    (runs with both), with the context ``rule_results`` evaluates them with."""
    by_key = dict(zip(run_rows.partition_keys_of(metrics), metrics["metrics_json"], strict=True))
    parsed = run_rows.manifests_from_rows(manifests)
    data_end = dict(zip(run_rows.partition_keys_of(manifests), manifests["data_end"], strict=True))
    records = []
    for key in sorted(set(by_key) & set(parsed)):
        manifest = parsed[key]
        records.append({
            "world_id": manifest.world_id,
            "strategy_id": manifest.strategy_id,
            "run_id": manifest.run_id,
            "metrics": json.loads(by_key[key]),
            "stage": manifest.stage,
            "context": {
                "now": now,
                "submitted_at": manifest.submitted_at,
                "data_end": data_end[key],
                "risk_tier": manifest.risk_tier,
            },
        })
    return records


def diff_rows(
    diff: PolicyDiff,
    records: Sequence[Mapping[str, Any]],
    old: Policy | None,
    new: Policy,
    computed_at: dt.datetime,
) -> pd.DataFrame:
    """One ``policy_diff`` row per run of ``diff`` (same order as ``records``)."""
    hashes: dict[tuple[int, str, Any], str | None] = {}

    def hash_of(policy: Policy | None, stage: str, tier: Any) -> str | None:
        if policy is None:
            return None
        key = (id(policy), stage, tier)
        if key not in hashes:
            hashes[key] = ruleset_hash(policy, stage, risk_tier=tier)
        return hashes[key]

    rows = []
    for run, record in zip(diff.runs, records, strict=True):
        tier = record["context"].get("risk_tier")
        rows.append({
            "world_id": run.world_id,
            "old_policy_version": diff.old_version,
            "new_policy_version": diff.new_version,
            "strategy_id": run.strategy_id,
            "run_id": run.run_id,
            "stage": run.stage,
            "changed": run.changed,
            "old_status": run.old_status,
            "new_status": run.new_status,
            "old_recommended_stage": run.old_stage,
            "new_recommended_stage": run.new_stage,
            "status_changed": run.status_changed,
            "stage_changed": run.stage_changed,
            "flipped_rules": sorted(run.rule_changes),
            "old_ruleset_hash": hash_of(old, run.stage, tier),
            "new_ruleset_hash": hash_of(new, run.stage, tier),
            "computed_at": computed_at,
        })
    return pd.DataFrame(rows, columns=list(POLICY_DIFF_COLUMNS))


def diff_summary(frame: pd.DataFrame) -> dict[str, Any]:
    """Counts of a world's diff rows (what the metadata and the event report)."""
    total = len(frame)
    changed = int(frame["changed"].sum()) if total else 0
    transitions = lambda old, new: dict(  # noqa: E731
        sorted(Counter(f"{a}->{b}" for a, b in zip(frame[old], frame[new]) if a != b).items())
    )
    return {
        "total_runs": total,
        "changed_runs": changed,
        "impact_ratio": changed / total if total else 0.0,
        "status_changes": transitions("old_status", "new_status"),
        "stage_changes": transitions("old_recommended_stage", "new_recommended_stage"),
        "rule_changes": dict(sorted(Counter(r for rules in frame["flipped_rules"] for r in rules).items())),
    }


def preview_markdown(frame: pd.DataFrame, limit: int = PREVIEW_ROWS) -> str:
    changed = frame[frame["changed"]]
    if changed.empty:
        return f"No run changes ({len(frame)} runs evaluated under both versions)."
    lines = ["| run | stage | status | recommended stage | rules flipped |", "| --- | --- | --- | --- | --- |"]
    for row in changed.head(limit).itertuples():
        arrow = lambda a, b: a if a == b else f"{a} → {b}"  # noqa: E731
        lines.append(
            f"| {row.strategy_id}/{row.run_id} | {row.stage} | {arrow(row.old_status, row.new_status)} | "
            f"{arrow(row.old_recommended_stage, row.new_recommended_stage)} | {', '.join(row.flipped_rules) or '-'} |"
        )
    if len(changed) > limit:
        lines.append(f"\n… and {len(changed) - limit} more changed runs (query `policy_diff`).")
    return "\n".join(lines)


def profile_changed_event(
    world_id: str, old: str | None, new: str, summary: Mapping[str, Any], new_policy: Policy, time: dt.datetime
) -> dict[str, Any]:
    """``validation_profile_changed`` for ``world_id`` moving from ``old`` to ``new``."""
    data = {
        "world_id": world_id,
        "old_policy_version": old,
        "new_policy_version": new,
        "ruleset_hashes": {stage: ruleset_hash(new_policy, stage) for stage in STAGES},
        **summary,
    }
    return cloud_event(
        "validation_profile_changed",
        world_id=world_id,
        subject=f"{world_id}/policy/{new}",
        data=data,
        idempotency_key=f"validation_profile_changed:{world_id}:{old}:{new}",
        time=time,
        source=EVENT_SOURCE,
    )


@dg.asset(
    partitions_def=worlds_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name=GROUP,
    owners=OWNERS,
    io_manager_key="lake_io_manager",
    dagster_type=table_type(contracts.PolicyDiffTable),
    metadata={"lake_table": "policy_diff"},
    kinds={"python", "parquet"},
    deps=[
        dg.AssetDep("evaluation_metrics", partition_mapping=dg.AllPartitionMapping()),
        dg.AssetDep("run_manifests", partition_mapping=dg.AllPartitionMapping()),
    ],
    check_specs=[contract_check_spec("policy_diff", contracts.PolicyDiffTable)],
)
def policy_diff(context: dg.AssetExecutionContext, landing: LandingZoneResource, warehouse: WarehouseResource):
    """Every run of the world under its old and new policy version: one row per run with the
    old/new status and recommended stage, whether anything changed and which rules flipped;
    the counts are in the metadata and the ``validation_profile_changed`` event."""
    zone = landing.zone()
    computed_at = now_utc()
    frames, summaries, events, problems = [], {}, [], []
    for world_id in context.partition_keys:
        try:
            old_version, new_version = diff_versions(zone, world_id, context.run.tags)
            new_policy = read_policy(zone, world_id, new_version)
        except PolicyError as error:
            problems.append(f"{world_id}: {error}")
            continue
        old_policy = None
        if old_version is not None:
            try:
                old_policy = read_policy(zone, world_id, old_version)
            except PolicyError as error:
                context.log.warning(f"{world_id}: old version {old_version} does not parse, diffing against no policy: {error}")
        records = world_run_records(
            warehouse.latest("evaluation_metrics", world_id=world_id),
            warehouse.latest("run_manifests", world_id=world_id),
            computed_at,
        )
        diff = diff_policies(records, old_policy, new_policy)
        diff = PolicyDiff(old_version, new_version, diff.runs)
        frame = diff_rows(diff, records, old_policy, new_policy, computed_at)
        summaries[world_id] = {"old_policy_version": old_version, "new_policy_version": new_version, **diff_summary(frame)}
        events.append(profile_changed_event(world_id, old_version, new_version, diff_summary(frame), new_policy, computed_at))
        frames.append(frame)
    if problems:
        raise dg.Failure(description="no policy diff for:\n" + "\n".join(problems))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(POLICY_DIFF_COLUMNS))
    single = next(iter(summaries.values())) if len(summaries) == 1 else None
    metadata: dict[str, Any] = {
        "worlds": dg.MetadataValue.json(summaries),
        "total_runs": len(frame),
        "changed_runs": int(frame["changed"].sum()) if len(frame) else 0,
        "preview": dg.MetadataValue.md(preview_markdown(frame)),
    }
    if single is not None:
        metadata.update(
            old_policy_version=str(single["old_policy_version"]),
            new_policy_version=single["new_policy_version"],
            impact_ratio=float(single["impact_ratio"]),
            status_changes=dg.MetadataValue.json(single["status_changes"]),
            stage_changes=dg.MetadataValue.json(single["stage_changes"]),
            rule_changes=dg.MetadataValue.json(single["rule_changes"]),
        )
    yield from validated_outputs(TableOutput("policy_diff", contracts.PolicyDiffTable, frame, metadata))
    written = append_events(warehouse.lake(), events)
    context.log.info(f"{written} validation_profile_changed event(s) written")
