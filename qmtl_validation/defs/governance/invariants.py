"""``validation_invariants``: the SPEC §7 invariants of a world, as rows and a blocking check.

Per world: the latest live run of each strategy passes under a policy version ≥ the world's
current; high-tier client-critical worlds are fail-closed; approved overrides carry reason,
actor and timestamp and a review that is not overdue; stored validation health equals a
recomputation; a missing or stale decision degrades to backtest-only
(:func:`qmtl_validation.core.invariants.check_invariants`).
"""

import json

import dagster as dg
import pandas as pd

from qmtl_validation.core.invariants import check_invariants
from qmtl_validation.defs.resources import LandingZoneResource, WarehouseResource, now_utc
from qmtl_validation.defs.risk_hub.partitions import worlds_partitions
from qmtl_validation.warehouse import run_rows
from qmtl_validation.warehouse.documents import WorldPolicies

# report field → invariant name in the table
INVARIANTS = {
    "live_status_failures": "latest_live_run_passes",
    "live_policy_version_mismatches": "live_run_under_current_policy",
    "fail_closed_violations": "high_tier_critical_fail_closed",
    "override_violations": "approved_overrides_documented_and_reviewed",
    "validation_health_gaps": "validation_health_recomputes",
    "live_without_current_decision": "live_decision_present",
}


@dg.asset(
    partitions_def=worlds_partitions,
    group_name="governance",
    owners=["team:quant-validation"],
    kinds={"python", "parquet"},
    io_manager_key="lake_io_manager",
    metadata={"lake_table": "validation_invariants"},
    check_specs=[
        dg.AssetCheckSpec(
            "invariants_hold",
            asset="validation_invariants",
            blocking=True,
            description="Every SPEC §7 invariant holds for the world (see the rows for evidence).",
        )
    ],
)
def validation_invariants(
    context: dg.AssetExecutionContext, landing: LandingZoneResource, warehouse: WarehouseResource
):
    """The governance invariants of each world over its run history: one row per invariant with
    pass/fail and the evidence, and a blocking check that fails when any invariant is broken."""
    now = now_utc()
    policies = WorldPolicies(landing.zone())
    rows, broken = [], []
    for world_id in context.partition_keys:
        history = warehouse.latest("evaluation_run_history", world_id=world_id)
        records = list(run_rows.records_from_history(history).values()) if not history.empty else []
        overrides = warehouse.latest("overrides", world_id=world_id, latest=False)
        loaded = policies.get(world_id)
        report = check_invariants(
            loaded.policy if loaded else {},
            records,
            current_policy_version=loaded.version if loaded else None,
            now=now,
            overrides=run_rows.override_entries(overrides),
            world_id=world_id,
        ).to_dict()
        for field, invariant in INVARIANTS.items():
            evidence = report.get(field) or []
            rows.append(
                {
                    "world_id": world_id,
                    "invariant": invariant,
                    "status": "fail" if evidence else "pass",
                    "details_json": json.dumps(evidence, sort_keys=True, default=str),
                    "checked_at": now,
                }
            )
            if evidence:
                broken.append(f"{world_id}: {invariant} ({len(evidence)})")
    frame = pd.DataFrame(rows)
    yield dg.Output(
        frame,
        metadata={"worlds": len(context.partition_keys), "broken": dg.MetadataValue.json(broken)},
    )
    yield dg.AssetCheckResult(
        check_name="invariants_hold",
        passed=not broken,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"broken": dg.MetadataValue.json(broken)},
    )
