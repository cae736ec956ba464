"""Extended validation after a risk snapshot lands: merge the extended layers into each affected
run and shape the new ``evaluation_run_history`` revisions.

Used by ``extended_validation`` (a producer snapshot) and ``risk_snapshot_fallback`` (the
conservative fallback while the world's feed is stale). The domain work is
:func:`qmtl_validation.core.extended.evaluate_extended_layers` and
:func:`~qmtl_validation.core.extended.apply_extended`; this module loads the world's latest run
records, normalises what is compared (so a replay of the same snapshot writes nothing), and
turns changed records into history, rule-result rows and ``evaluation_run_updated`` events.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import pandas as pd

from qmtl_validation.core import contracts
from qmtl_validation.core.contracts import validate_frame
from qmtl_validation.core.extended import apply_extended, evaluate_extended_layers, run_key
from qmtl_validation.core.policy import Policy
from qmtl_validation.defs.resources import WarehouseResource
from qmtl_validation.warehouse import run_rows
from qmtl_validation.warehouse.lake import unique_file_stem
from qmtl_validation.warehouse.tables import to_json_text

HISTORY_TABLE = "evaluation_run_history"
RULES_TABLE = "rule_results"


def normalised(value: Any) -> Any:
    """``value`` through canonical JSON (NaN/±inf → null, tuples → lists): the form it is stored
    in, so a stored record and a recomputed one compare equal when nothing changed."""
    return json.loads(to_json_text(value))


def world_run_records(warehouse: WarehouseResource, world_id: str) -> list[dict[str, Any]]:
    """The latest revision of every run of ``world_id`` (``evaluation_runs``), as records."""
    frame = warehouse.latest(HISTORY_TABLE, None, world_id=world_id)
    if frame.empty:
        return []
    records = run_rows.records_from_history(frame)
    return [normalised(records[key]) for key in sorted(records)]


@dataclass
class ExtendedOutcome:
    """The new revisions of one world's extended pass and what it looked at."""

    world_id: str
    records: list[dict[str, Any]] = field(default_factory=list)
    evaluated: int = 0
    unchanged: int = 0
    reason: str | None = None

    @property
    def updated_keys(self) -> list[str]:
        return [run_key(r) for r in self.records]


def extended_revisions(
    world_id: str,
    records: Sequence[Mapping[str, Any]],
    policy: Policy | None,
    *,
    snapshot: Mapping[str, Any] | None,
    stale: bool,
    recorded_at: dt.datetime,
    covariance: Any = None,
    realized_returns: Any = None,
    portfolio: Mapping[str, Any] | None = None,
    live_monitoring: pd.DataFrame | None = None,
) -> ExtendedOutcome:
    """Evaluate the world's extended layers against ``snapshot`` and merge them into each run.

    A run whose merged results, status and recommended stage equal its latest revision's is left
    alone (a replay writes nothing); every other affected run gets ``revision + 1`` with the
    reason ``extended:risk_snapshot <world>/<version>`` and its summary recomputed. ``now`` is not
    passed to the layers, so stored evidence does not carry a wall-clock lag that would make
    every replay look like a change; ``stale`` is the freshness verdict.
    """
    outcome = ExtendedOutcome(world_id)
    if policy is None or not records:
        return outcome
    results = evaluate_extended_layers(
        list(records),
        policy,
        snapshot=snapshot,
        portfolio=portfolio,
        live_monitoring=live_monitoring,
        snapshot_stale=stale,
        covariance=covariance,
        realized_returns=realized_returns,
    )
    by_key = {run_key(r): r for r in records}
    for key, layers in results.items():
        outcome.evaluated += 1
        extra = {name: normalised(result.to_dict()) for name, result in layers.items()}
        updated, reason = apply_extended(normalised(by_key[key]), extra, snapshot=snapshot, now=recorded_at)
        if reason is None:
            outcome.unchanged += 1
            continue
        outcome.reason = reason
        outcome.records.append(normalised(updated))
    return outcome


def revision_frames(
    records: Sequence[Mapping[str, Any]], recorded_at: dt.datetime, pipeline_run_id: str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(``evaluation_run_history`` rows, ``rule_results`` rows) of new revisions, both checked
    against their contracts (raises ``ContractError``)."""
    history = run_rows.history_rows(records, recorded_at, pipeline_run_id)
    rules = run_rows.rule_rows(
        {run_key(r): {"validation": r["validation"], "summary": r["summary"]} for r in records},
        {run_key(r): int(r["revision"]) for r in records},
        recorded_at,
    )
    history = validate_frame(contracts.EvaluationRunHistoryTable, history, source=HISTORY_TABLE)
    rules = validate_frame(contracts.RuleResultsTable, rules, source=RULES_TABLE)
    return history, rules


def write_rule_rows(warehouse: WarehouseResource, rules: pd.DataFrame, label: str) -> list[str]:
    """Append the new revisions' rule rows (one file per world)."""
    if rules.empty:
        return []
    return warehouse.lake().write_partitioned(RULES_TABLE, rules, file_stem=unique_file_stem(label))


def write_history_rows(warehouse: WarehouseResource, history: pd.DataFrame, label: str) -> list[str]:
    """Append history revisions (one file per world) — for assets whose own output is another table."""
    if history.empty:
        return []
    return warehouse.lake().write_partitioned(HISTORY_TABLE, history, file_stem=unique_file_stem(label))
