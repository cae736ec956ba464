"""What a policy change would flip: historical runs evaluated under an old and a new policy.

Each run is evaluated on its own (:func:`~qmtl_validation.core.evaluation.evaluate_run`, rank 1,
no correlation data): historical runs are not one concurrent batch, and a diff must explain a
change run by run. A run *changes* when its summary status, its recommended stage or the status
of any rule differs. ``impact_ratio`` = changed runs / runs (0 for no runs).

Runs are records ``{world_id, strategy_id, run_id, metrics, [stage], [context]}`` as in the QMTL
regression sets; ``stage`` defaults to the diff's stage, ``context`` holds the
:func:`evaluate_run` context keys (``submitted_at``, ``data_end``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from qmtl_validation.core.evaluation import EvaluationResult, evaluate_run
from qmtl_validation.core.policy import Policy

RUNS_FILE_MAX_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class RunDiff:
    """One run under both policies. ``rule_changes`` maps a rule to ``(old, new)`` status
    (None when the rule produced no result under that policy)."""

    world_id: str | None
    strategy_id: str | None
    run_id: str | None
    stage: str
    old_status: str
    new_status: str
    old_stage: str
    new_stage: str
    rule_changes: Mapping[str, tuple[str | None, str | None]] = field(default_factory=dict)

    @property
    def status_changed(self) -> bool:
        return self.old_status != self.new_status

    @property
    def stage_changed(self) -> bool:
        return self.old_stage != self.new_stage

    @property
    def changed(self) -> bool:
        return self.status_changed or self.stage_changed or bool(self.rule_changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "world_id": self.world_id,
            "strategy_id": self.strategy_id,
            "run_id": self.run_id,
            "stage": self.stage,
            "old": {"status": self.old_status, "recommended_stage": self.old_stage},
            "new": {"status": self.new_status, "recommended_stage": self.new_stage},
            "changed": self.changed,
            "rule_changes": {rule: {"old": old, "new": new} for rule, (old, new) in self.rule_changes.items()},
        }


@dataclass(frozen=True)
class PolicyDiff:
    old_version: str | None
    new_version: str | None
    runs: tuple[RunDiff, ...]

    @property
    def total(self) -> int:
        return len(self.runs)

    @property
    def changed(self) -> int:
        return sum(1 for r in self.runs if r.changed)

    @property
    def impact_ratio(self) -> float:
        return self.changed / self.total if self.runs else 0.0

    def transitions(self, kind: str) -> dict[str, int]:
        """Counts of ``"old->new"`` for ``kind`` ``status`` or ``recommended_stage``."""
        counts: dict[str, int] = {}
        for run in self.runs:
            old, new = (run.old_status, run.new_status) if kind == "status" else (run.old_stage, run.new_stage)
            if old != new:
                key = f"{old}->{new}"
                counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items()))

    def rule_change_counts(self) -> dict[str, int]:
        """Per rule, the number of runs whose status under that rule changed."""
        counts: dict[str, int] = {}
        for run in self.runs:
            for rule in run.rule_changes:
                counts[rule] = counts.get(rule, 0) + 1
        return dict(sorted(counts.items()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "old_version": self.old_version,
            "new_version": self.new_version,
            "total_runs": self.total,
            "changed_runs": self.changed,
            "impact_ratio": self.impact_ratio,
            "status_changes": self.transitions("status"),
            "stage_changes": self.transitions("recommended_stage"),
            "rule_changes": self.rule_change_counts(),
            "runs": [r.to_dict() for r in self.runs],
        }


def _rule_changes(old: EvaluationResult, new: EvaluationResult) -> dict[str, tuple[str | None, str | None]]:
    changes = {}
    for rule in list(old.results) + [r for r in new.results if r not in old.results]:
        before = old.results[rule].status if rule in old.results else None
        after = new.results[rule].status if rule in new.results else None
        if before != after:
            changes[rule] = (before, after)
    return changes


def diff_policies(
    runs: Iterable[Mapping[str, Any]],
    old_policy: Policy | None,
    new_policy: Policy | None,
    *,
    stage: str = "backtest",
) -> PolicyDiff:
    """Evaluate every run under both policies and collect what changes (module docstring)."""
    diffs = []
    for run in runs:
        run_stage = run.get("stage") or stage
        context = dict(run.get("context") or {})
        context.pop("policy_version", None)
        old = evaluate_run(run.get("metrics"), old_policy, run_stage, **context)
        new = evaluate_run(run.get("metrics"), new_policy, run_stage, **context)
        diffs.append(
            RunDiff(
                world_id=run.get("world_id"),
                strategy_id=run.get("strategy_id"),
                run_id=run.get("run_id"),
                stage=old.stage or str(run_stage),
                old_status=old.status,
                new_status=new.status,
                old_stage=old.recommended_stage,
                new_stage=new.recommended_stage,
                rule_changes=_rule_changes(old, new),
            )
        )
    return PolicyDiff(
        old_version=None if old_policy is None else old_policy.policy_version,
        new_version=None if new_policy is None else new_policy.policy_version,
        runs=tuple(diffs),
    )


def load_runs(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Run records from JSON files, or every ``*.json`` directly inside a folder (sorted).

    Each file holds a list of run records (or one record), read with the project's guarded JSON
    reader. Raises ValueError naming the file for anything else.
    """
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.glob("*.json") if p.is_file()))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"runs file or folder not found: {path}")
    from qmtl_validation.core.bundles import parse_json_document

    runs: list[dict[str, Any]] = []
    for path in files:
        data = parse_json_document(
            path.read_bytes(), source_name=str(path), max_bytes=RUNS_FILE_MAX_BYTES, expect_object=False
        )
        records = data if isinstance(data, list) else [data]
        for i, record in enumerate(records):
            if not isinstance(record, Mapping) or not isinstance(record.get("metrics"), Mapping):
                raise ValueError(f"{path}[{i}]: expected a run record with a 'metrics' mapping")
            runs.append(dict(record))
    return runs
