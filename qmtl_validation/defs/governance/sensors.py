"""``policy_change_sensor``: a new policy version re-validates the world's history.

Each tick lists ``policies/`` (every world; a handful of small files) and compares it with the
``policy_versions`` table, the record of every version already seen. For each new version:

- it is parsed; one that does not parse is ``rejected`` (a ``policy_versions`` row with the error,
  a ``rejections`` row, a warning in the tick log) and never applied;
- a version that is not the world's highest is ``superseded`` (recorded, nothing launched);
- the world's new current version, when the world has run partitions, is ``revalidated``: the
  world's run partitions are made contiguous in the instance during the tick
  (:func:`~qmtl_validation.defs.pipeline.make_contiguous`; Dagster refuses a delete and an add of
  the same keys in one ``SensorResult``) and ONE backfill of the ``runs`` assets over them is
  requested, tagged ``qmtl/world``, ``qmtl/policy_version``, ``qmtl/previous_policy_version`` and
  ``qmtl/reason`` = ``policy_change``; single-run backfill policies make it one Dagster run. A
  second backfill, ``policy_diff`` of the world (old vs new version, same tags; it writes the
  ``validation_profile_changed`` event), is requested in the same tick. A world without runs gets
  the diff only (``recorded``). Both are asset backfills the backfill daemon launches, so they
  show under Backfills in the UI with their tags.

On its very first tick (no cursor) the sensor records what is there as the ``baseline`` and
launches nothing: runs taken in after that are evaluated under the current version anyway.

An applied version whose file changes afterwards is a ``policy_changed_in_place`` rejection
(versions are immutable: drop the change as a new version), recorded once per content.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from typing import Any, Mapping

import dagster as dg
import pandas as pd
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset

from qmtl_validation.core.evaluation import ruleset_hash
from qmtl_validation.core.policy import PolicyError, load_policy
from qmtl_validation.defs.governance.assets import STAGES
from qmtl_validation.defs.pipeline import (
    POLICY_REASON_SENSOR,
    make_contiguous,
    policy_backfill_tags,
    world_run_keys,
)
from qmtl_validation.defs.resources import LandingZoneResource, WarehouseResource
from qmtl_validation.defs.risk_hub.partitions import worlds_partitions
from qmtl_validation.defs.runs.partitions import evaluation_runs_partitions
from qmtl_validation.defs.runs.sensors import file_label, log_rejections, read_cursor, sensor_now, sensor_settings
from qmtl_validation.warehouse.documents import POLICY_MAX_BYTES
from qmtl_validation.warehouse.intake import REJECTIONS_TABLE, rejected_tokens
from qmtl_validation.warehouse.lake import Lake
from qmtl_validation.core.policy_store import version_sort_key
from qmtl_validation.warehouse.landing import LandingZone, PolicyFile, Rejection, list_policies
from qmtl_validation.warehouse.queries import latest_rows

POLICY_VERSIONS_TABLE = "policy_versions"
POLICY_DIFF_JOB = "policy_diff_job"
RUNS_GROUP = "runs"
POLICY_DIFF_ASSET = dg.AssetKey("policy_diff")


def known_policy_versions(lake: Lake) -> dict[tuple[str, str], dict[str, Any]]:
    """(world, version) → the first ``policy_versions`` row recorded for it."""
    frame = latest_rows(lake, POLICY_VERSIONS_TABLE, latest=False)
    frame = frame.sort_values("recorded_at", kind="stable").drop_duplicates(["world_id", "policy_version"])
    return {(row["world_id"], row["policy_version"]): row for row in frame.to_dict("records")}


def _parse(zone: LandingZone, policy: PolicyFile) -> tuple[dict[str, Any], str | None]:
    """The content columns of a version's row and its parse error (None when it parses)."""
    columns: dict[str, Any] = {"source_key": policy.key, "source_etag": policy.object.etag}
    try:
        text = zone.read_bytes(policy.key, POLICY_MAX_BYTES).decode("utf-8")
    except (OSError, UnicodeDecodeError, ValueError) as error:
        return columns, f"{policy.key}: {error}"
    columns["policy_yaml"] = text
    try:
        parsed = load_policy(text, version=policy.policy_version)
        columns["resolved_json"] = json.dumps(parsed.to_dict(), sort_keys=True, separators=(",", ":"), default=str)
        columns["ruleset_hashes_json"] = json.dumps(
            {stage: ruleset_hash(parsed, stage) for stage in STAGES}, sort_keys=True, separators=(",", ":")
        )
    except PolicyError as error:
        return columns, f"{policy.key}: {error}"
    return columns, None


def _rejection(policy: PolicyFile, reason: str, code: str, now, sensor: str) -> dict[str, Any]:
    fields = {"world_id": policy.world_id, "policy_version": policy.policy_version}
    row = Rejection(policy.key, reason, code, "policy", fields, policy.object).as_row(now, sensor=sensor)
    row["conflict"] = code == "policy_changed_in_place"
    return row


def runs_backfill_request(keys: list[str], asset_graph, tags: Mapping[str, str]) -> dg.RunRequest:
    """A request for one asset backfill of the runs assets over the run partitions ``keys``."""
    subset = evaluation_runs_partitions.subset_with_partition_keys(keys)
    selected = dg.AssetSelection.groups(RUNS_GROUP).resolve(asset_graph)
    return dg.RunRequest.for_asset_graph_subset(
        AssetGraphSubset(partitions_subsets_by_asset_key={key: subset for key in selected}),
        tags=dict(tags),
    )


def policy_diff_request(world_id: str, tags: Mapping[str, str]) -> dg.RunRequest:
    """A request for a backfill of ``policy_diff`` over the world's ``worlds`` partition."""
    subset = worlds_partitions.subset_with_partition_keys([world_id])
    return dg.RunRequest.for_asset_graph_subset(
        AssetGraphSubset(partitions_subsets_by_asset_key={POLICY_DIFF_ASSET: subset}), tags=dict(tags)
    )


_SETTINGS = sensor_settings()


@dg.sensor(
    name="policy_change_sensor",
    asset_selection=dg.AssetSelection.groups(RUNS_GROUP) | dg.AssetSelection.assets(POLICY_DIFF_ASSET),
    minimum_interval_seconds=_SETTINGS.interval_seconds,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Watches policies/<world>/<version>.yaml: a new current version re-validates every run of "
        "the world in one single-run backfill (pinned to that version) and materialises "
        "policy_diff (old vs new); unparseable versions are rejected and never applied."
    ),
)
def policy_change_sensor(
    context: dg.SensorEvaluationContext, landing: LandingZoneResource, warehouse: WarehouseResource
) -> dg.SensorResult:
    now = sensor_now()
    zone, lake = landing.zone(), warehouse.lake()
    previous = read_cursor(context.cursor)
    baseline = context.cursor is None
    scan = list_policies(zone)
    known = known_policy_versions(lake)
    seen_bad = rejected_tokens(lake)
    rejections = [
        r.as_row(now, sensor="policy_change_sensor") | {"conflict": False}
        for r in scan.rejections
        if (r.key, r.object.etag if r.object else "") not in seen_bad
    ]
    current = scan.current()
    by_world: dict[str, list[PolicyFile]] = defaultdict(list)
    for policy in scan.policies:
        by_world[policy.world_id].append(policy)

    instance = context.instance
    run_order = list(instance.get_dynamic_partitions(evaluation_runs_partitions.name))
    known_worlds = set(instance.get_dynamic_partitions(worlds_partitions.name))
    version_rows: list[dict[str, Any]] = []
    run_requests: list[dg.RunRequest] = []
    partition_requests: list[Any] = []
    new_worlds: list[str] = []
    for world_id, policies in sorted(by_world.items()):
        applied = [v for (w, v), row in known.items() if w == world_id and row["status"] == "applied"]
        previous_version = max(applied, key=version_sort_key) if applied else None
        for policy in policies:
            row = known.get((world_id, policy.policy_version))
            if row is not None:
                etag = policy.object.etag
                if row.get("source_etag") not in (None, etag) and (policy.key, etag) not in seen_bad:
                    rejections.append(_rejection(
                        policy,
                        f"policy version {policy.policy_version} of world {world_id} changed after it was "
                        f"taken in (etag {row['source_etag']} -> {etag}); policy versions are immutable, "
                        "drop the change as a new version",
                        "policy_changed_in_place",
                        now,
                        "policy_change_sensor",
                    ))
                continue
            columns, error = _parse(zone, policy)
            action, launched = "rejected", 0
            if error is not None:
                rejections.append(_rejection(policy, error, "policy_invalid", now, "policy_change_sensor"))
            elif policy.policy_version != current[world_id].policy_version:
                action = "superseded"
            elif baseline:
                action = "baseline"
            else:
                tags = policy_backfill_tags(world_id, policy.policy_version, previous_version, POLICY_REASON_SENSOR)
                keys = world_run_keys(run_order, world_id)
                if keys:
                    keys = make_contiguous(instance, keys)
                    run_requests.append(runs_backfill_request(keys, context.repository_def.asset_graph, tags))
                    action, launched = "revalidated", len(keys)
                else:
                    action = "recorded"
                run_requests.append(policy_diff_request(world_id, tags))
                if world_id not in known_worlds and world_id not in new_worlds:
                    new_worlds.append(world_id)
                context.log.info(
                    f"{world_id}: policy {previous_version} -> {policy.policy_version}: "
                    + (f"re-validating {launched} run(s) in one backfill" if launched else "no runs to re-validate")
                    + " and materialising policy_diff"
                )
            version_rows.append({
                "world_id": world_id,
                "policy_version": policy.policy_version,
                "status": "rejected" if error else "applied",
                "error": error,
                "previous_policy_version": previous_version if action in ("revalidated", "recorded") else None,
                "action": action,
                "runs_revalidated": launched,
                "recorded_at": now,
                **columns,
            })

    label = file_label("policy_change_sensor")
    stem = f"{now:%Y%m%dT%H%M%S%fZ}-{label}"
    if version_rows:
        lake.write_partitioned(POLICY_VERSIONS_TABLE, pd.DataFrame(version_rows), file_stem=stem)
    if rejections:
        lake.write_partitioned(REJECTIONS_TABLE, pd.DataFrame(rejections), file_stem=stem)
    log_rejections(context, rejections)
    if new_worlds:
        partition_requests.append(worlds_partitions.build_add_request(new_worlds))

    actions = Counter(row["action"] for row in version_rows)
    cursor = json.dumps(
        {
            "date": now.date().isoformat(),
            "worlds": len(by_world),
            "versions": len(scan.policies),
            "new_versions": len(version_rows),
            "revalidated": actions.get("revalidated", 0),
            "rejected": len(rejections),
            "seen_total": int(previous.get("seen_total", 0)) + len(version_rows),
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    summary = ", ".join(f"{n} {a}" for a, n in sorted(actions.items())) or "no new policy versions"
    context.log.info(f"{len(scan.policies)} policy versions of {len(by_world)} worlds: {summary}")
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=partition_requests,
        cursor=cursor,
        skip_reason=None if run_requests else summary,
    )
