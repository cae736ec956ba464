"""Invariants over a world's run history (SPEC §7; QMTL reference §7).

:func:`check_invariants` returns an :class:`InvariantReport`; the world is ``ok`` when none of
these holds:

1. **Live status** — the latest live-stage run of a strategy (by ``created_at``, then list
   order) does not have ``summary.status == "pass"``. An approved override is shown next to the
   failure but does not clear it: an override never changes a computed status.
2. **Live policy version** — that run was validated under a policy version older than the
   world's current one (or records none).
3. **Fail-closed** — in a high-tier client-critical world, the policy's ``validation.on_error``
   or ``on_missing_metric`` is not ``fail``, or a run validated under the current policy shows a
   fail-open result (a ``rule_error`` that did not fail, a missing metric that warned or was
   ignored). Only outcomes count: a run evaluated in ``warn`` mode with nothing missing shows
   nothing fail-open.
4. **Overrides** — an approved override lacks its reason, actor or timestamp, or its re-review
   is overdue. Well-documented approvals within their review window are listed in
   ``approved_overrides`` and do *not* make the world not ok (QMTL flags every approval).
5. **Validation health** — a run's stored ``diagnostics.validation_health`` is missing or differs
   from a recomputation with :func:`qmtl_validation.core.health.validation_health` (ratios within
   1e-9, counts exactly).
6. **Live without a current decision** — a strategy's latest run is live-stage but its decision
   is missing, inconsistent or stale, so it degrades to ``backtest_only``
   (:func:`effective_stage`). Degraded decisions of other stages are listed in
   ``degraded_decisions`` for information.

Policy versions compare numerically when both are integers (``"10" > "9"``), otherwise in
natural order: digit runs compare as numbers, other text as text, a number before text
(``"v2" < "v10"``, ``"2024.1" < "2024.10"``).

``world`` is the world's :class:`~qmtl_validation.core.policy.Policy` or a plain mapping with the
same keys (``risk_profile: {tier, client_critical}``, ``validation: {on_error,
on_missing_metric}``; a top-level ``client_critical`` is honoured too, as QMTL does). Runs are the
plain dicts the warehouse stores (``world_id``, ``strategy_id``, ``run_id``, ``stage``,
``created_at``, optional ``updated_at``, ``validation{policy_version, results}``,
``summary{status, recommended_stage}``, ``metrics{...}``).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from qmtl_validation.core.health import get_path, validation_health
from qmtl_validation.core.overrides import OverrideEntry, OverrideLog, review_queue

__all__ = [
    "InvariantReport",
    "RECOMMENDED_STAGES",
    "check_invariants",
    "compare_policy_versions",
    "decision_problem",
    "effective_stage",
]

RECOMMENDED_STAGES: tuple[str, ...] = ("backtest_only", "paper_only", "paper_ok_live_candidate")
SAFE_STAGE = "backtest_only"
HEALTH_TOLERANCE = 1e-9
_STATUSES = ("pass", "warn", "fail")
_HEALTH_RATIOS = ("metric_coverage_ratio", "rules_executed_ratio")


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------


def _setting(source: Any, *path: str) -> Any:
    """``source.a.b`` or ``source["a"]["b"]`` (objects and mappings alike), None when absent."""
    node = source
    for key in path:
        if node is None:
            return None
        node = node.get(key) if isinstance(node, Mapping) else getattr(node, key, None)
    return node


def _parse_time(value: Any) -> dt.datetime | None:
    """Aware UTC datetime from an ISO-8601 string or datetime (naive = UTC), else None."""
    if hasattr(value, "to_pydatetime"):
        value = value.to_pydatetime()
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    if not isinstance(value, dt.datetime):
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


def _iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if value.microsecond else "%Y-%m-%dT%H:%M:%SZ")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.strip().lower() if isinstance(value, str) else str(value)


def _version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part)
        for part in re.findall(r"\d+|\D+", version.strip())
    )


def compare_policy_versions(a: Any, b: Any) -> int:
    """-1, 0 or 1 as policy version ``a`` is older than, equal to or newer than ``b``.

    Integers (or integer strings) compare numerically; anything else in natural order (see the
    module docstring).
    """
    text_a, text_b = str(a).strip(), str(b).strip()
    if re.fullmatch(r"[+-]?\d+", text_a) and re.fullmatch(r"[+-]?\d+", text_b):
        key_a: Any = int(text_a)
        key_b: Any = int(text_b)
    else:
        key_a, key_b = _version_key(text_a), _version_key(text_b)
    return (key_a > key_b) - (key_a < key_b)


def _run_id(run: Mapping[str, Any]) -> dict[str, Any]:
    return {"strategy_id": run.get("strategy_id"), "run_id": run.get("run_id")}


# ---------------------------------------------------------------------------------------------
# Decisions
# ---------------------------------------------------------------------------------------------


def decision_problem(
    run: Mapping[str, Any], now: dt.datetime | str | None = None, max_age: dt.timedelta | None = None
) -> str | None:
    """Why a run's decision cannot be used (then it counts as ``backtest_only``), or None.

    A decision is unusable when the summary or its ``status`` / ``recommended_stage`` is missing
    or not a known value; when a backtest-stage run claims ``paper_ok_live_candidate`` (which
    SPEC §7 never allows); or, with ``max_age``, when it is undated or older than ``max_age`` at
    ``now``. The decision's time is ``updated_at``, else ``created_at``.
    """
    summary = run.get("summary")
    if not isinstance(summary, Mapping):
        return "no decision recorded"
    status = _text(summary.get("status"))
    if status not in _STATUSES:
        return f"summary.status {summary.get('status')!r} is not a decision"
    recommended = _text(summary.get("recommended_stage"))
    if recommended not in RECOMMENDED_STAGES:
        return f"summary.recommended_stage {summary.get('recommended_stage')!r} is not a decision"
    if _text(run.get("stage")) == "backtest" and recommended == "paper_ok_live_candidate":
        return "a backtest-stage run cannot be a live candidate"
    if max_age is not None:
        decided = _parse_time(run.get("updated_at")) or _parse_time(run.get("created_at"))
        if decided is None:
            return "decision has no time"
        clock = _parse_time(now) if now is not None else dt.datetime.now(dt.timezone.utc)
        if clock is None:
            raise ValueError(f"now {now!r} is not an ISO-8601 timestamp")
        if clock - decided > max_age:
            return f"decision from {_iso(decided)} is older than {max_age}"
    return None


def effective_stage(
    run: Mapping[str, Any], now: dt.datetime | str | None = None, max_age: dt.timedelta | None = None
) -> str:
    """The stage a run's decision allows: its ``recommended_stage``, or ``backtest_only`` when
    the decision is missing, inconsistent or stale (:func:`decision_problem`)."""
    if decision_problem(run, now, max_age) is not None:
        return SAFE_STAGE
    return _text(run["summary"]["recommended_stage"])  # type: ignore[index, return-value]


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InvariantReport:
    """The outcome of :func:`check_invariants`; every list holds plain, JSON-ready dicts.

    Violations (any non-empty list makes ``ok`` false): ``live_status_failures``,
    ``live_policy_version_mismatches``, ``fail_closed_violations``, ``override_violations``,
    ``validation_health_gaps``, ``live_without_current_decision``. Information only:
    ``approved_overrides`` (the re-review queue of the world) and ``degraded_decisions``.
    """

    world_id: str | None
    checked_at: dt.datetime
    current_policy_version: str | None
    fail_closed_world: bool
    live_status_failures: tuple[dict[str, Any], ...] = ()
    live_policy_version_mismatches: tuple[dict[str, Any], ...] = ()
    fail_closed_violations: tuple[dict[str, Any], ...] = ()
    override_violations: tuple[dict[str, Any], ...] = ()
    validation_health_gaps: tuple[dict[str, Any], ...] = ()
    live_without_current_decision: tuple[dict[str, Any], ...] = ()
    approved_overrides: tuple[dict[str, Any], ...] = ()
    degraded_decisions: tuple[dict[str, Any], ...] = ()
    runs_checked: int = 0

    VIOLATION_FIELDS = (
        "live_status_failures",
        "live_policy_version_mismatches",
        "fail_closed_violations",
        "override_violations",
        "validation_health_gaps",
        "live_without_current_decision",
    )

    @property
    def violation_count(self) -> int:
        return sum(len(getattr(self, name)) for name in self.VIOLATION_FIELDS)

    @property
    def ok(self) -> bool:
        return self.violation_count == 0

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "world_id": self.world_id,
            "ok": self.ok,
            "violation_count": self.violation_count,
            "checked_at": _iso(self.checked_at),
            "current_policy_version": self.current_policy_version,
            "fail_closed_world": self.fail_closed_world,
            "runs_checked": self.runs_checked,
        }
        for name in (*self.VIOLATION_FIELDS, "approved_overrides", "degraded_decisions"):
            result[name] = [dict(item) for item in getattr(self, name)]
        return result


# ---------------------------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------------------------

# Reason codes that mean "a metric was missing" (core rules, QMTL catalogue §2.7).
_MISSING_CODES = frozenset(
    {
        "missing_metric",
        "metrics_missing",
        "sample_metrics_missing",
        "performance_metrics_missing",
        "robustness_metrics_missing",
        "risk_metrics_missing",
        "dsr_missing",
    }
)


def _fail_open_findings(run: Mapping[str, Any]) -> list[dict[str, Any]]:
    results = _setting(run, "validation", "results")
    if not isinstance(results, Mapping):
        return []
    findings = []
    for rule, result in results.items():
        if not isinstance(result, Mapping):
            continue
        status = _text(result.get("status"))
        code = _text(result.get("reason_code")) or ""
        ignored = _setting(result, "details", "ignored_missing_metrics")
        problem = None
        if code == "rule_error" and status != "fail":
            problem = f"rule_error with status {status}"
        elif code == "missing_metric_ignored" or (isinstance(ignored, (list, tuple)) and ignored):
            problem = "missing metrics were ignored"
        elif (code in _MISSING_CODES or code.endswith("_missing")) and status != "fail":
            problem = f"missing metric with status {status}"
        if problem is not None:
            findings.append(
                {
                    "kind": "run_evaluated_fail_open",
                    **_run_id(run),
                    "rule": rule,
                    "reason_code": code or None,
                    "problem": problem,
                }
            )
    return findings


def _health_gaps(run: Mapping[str, Any]) -> list[dict[str, Any]]:
    metrics = run.get("metrics") if isinstance(run.get("metrics"), Mapping) else {}
    results = _setting(run, "validation", "results")
    recomputed = validation_health(metrics, results if isinstance(results, Mapping) else {})
    stored = get_path(metrics, "diagnostics.validation_health")
    if not isinstance(stored, Mapping):
        return [{**_run_id(run), "field": None, "stored": None, "recomputed": recomputed,
                 "problem": "validation health not stored"}]
    gaps = []
    for name, expected in recomputed.items():
        value = stored.get(name)
        if name in _HEALTH_RATIOS:
            same = (
                isinstance(value, (int, float)) and not isinstance(value, bool)
                and abs(float(value) - float(expected)) <= HEALTH_TOLERANCE
            )
        else:
            same = isinstance(value, int) and not isinstance(value, bool) and value == expected
        if not same:
            gaps.append({**_run_id(run), "field": name, "stored": value, "recomputed": expected,
                         "problem": "stored value differs from recomputation"})
    return gaps


def _latest_by_strategy(
    runs: Sequence[Mapping[str, Any]], *, stage: str | None = None
) -> dict[str, Mapping[str, Any]]:
    floor = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    latest: dict[str, tuple[tuple[dt.datetime, int], Mapping[str, Any]]] = {}
    for position, run in enumerate(runs):
        if stage is not None and _text(run.get("stage")) != stage:
            continue
        key = (_parse_time(run.get("created_at")) or floor, position)
        strategy = str(run.get("strategy_id"))
        if strategy not in latest or key >= latest[strategy][0]:
            latest[strategy] = (key, run)
    return {strategy: run for strategy, (_, run) in sorted(latest.items())}


def check_invariants(
    world: Any,
    runs: Iterable[Mapping[str, Any]],
    *,
    current_policy_version: Any = None,
    now: dt.datetime | str | None = None,
    overrides: OverrideLog | Iterable[OverrideEntry | Mapping[str, Any]] | None = None,
    world_id: str | None = None,
    max_decision_age: dt.timedelta | None = None,
) -> InvariantReport:
    """Check the SPEC §7 invariants for one world (see the module docstring for each).

    ``current_policy_version`` None skips the version check. ``now`` (default: the current
    time; naive = UTC) dates the override reviews and decision ages. ``overrides`` is the
    world's override log or its rows (other worlds' rows are ignored). ``max_decision_age``
    None means decisions never go stale (only missing or inconsistent ones degrade). Runs of
    more than one world are a ValueError.
    """
    clock = _parse_time(now) if now is not None else dt.datetime.now(dt.timezone.utc)
    if clock is None:
        raise ValueError(f"now {now!r} is not an ISO-8601 timestamp")
    run_list = [run for run in runs]
    worlds = {run.get("world_id") for run in run_list}
    world_id = world_id or _setting(world, "world_id") or (next(iter(worlds)) if len(worlds) == 1 else None)
    others = sorted(str(w) for w in worlds if w != world_id)
    if others:
        raise ValueError(f"runs of other worlds than {world_id!r}: {', '.join(others)}")

    tier = _text(_setting(world, "risk_profile", "tier"))
    critical = bool(_setting(world, "risk_profile", "client_critical") or _setting(world, "client_critical"))
    fail_closed_world = tier == "high" and critical
    current = None if current_policy_version is None else str(current_policy_version)

    approvals = []
    if overrides is not None:
        approvals = review_queue(overrides, now=clock, world_id=world_id)
    current_override = {(item.strategy_id, item.run_id): item for item in approvals}

    live_status_failures: list[dict[str, Any]] = []
    version_mismatches: list[dict[str, Any]] = []
    live_without_decision: list[dict[str, Any]] = []
    degraded: list[dict[str, Any]] = []

    for strategy, run in _latest_by_strategy(run_list, stage="live").items():
        status = _setting(run, "summary", "status")
        version = _setting(run, "validation", "policy_version")
        if _text(status) != "pass":
            approval = current_override.get((strategy, str(run.get("run_id"))))
            live_status_failures.append(
                {
                    **_run_id(run),
                    "status": status,
                    "policy_version": version,
                    "override_status": "approved" if approval else None,
                }
            )
        if current is not None and (
            version is None or compare_policy_versions(version, current) < 0
        ):
            version_mismatches.append(
                {**_run_id(run), "policy_version": version, "current_policy_version": current}
            )

    for strategy, run in _latest_by_strategy(run_list).items():
        problem = decision_problem(run, clock, max_decision_age)
        if problem is None:
            continue
        row = {**_run_id(run), "stage": run.get("stage"),
               "recommended_stage": _setting(run, "summary", "recommended_stage"),
               "effective_stage": SAFE_STAGE, "problem": problem}
        degraded.append(row)
        if _text(run.get("stage")) == "live":
            live_without_decision.append(row)

    fail_closed: list[dict[str, Any]] = []
    if fail_closed_world:
        for knob in ("on_error", "on_missing_metric"):
            value = _text(_setting(world, "validation", knob))
            if value != "fail":
                fail_closed.append(
                    {"kind": "policy_not_fail_closed", "setting": f"validation.{knob}",
                     "value": value, "expected": "fail"}
                )
        for run in run_list:
            version = _setting(run, "validation", "policy_version")
            # Runs validated under an older policy may predate the world becoming critical.
            if current is not None and (version is None or compare_policy_versions(version, current) < 0):
                continue
            fail_closed.extend(_fail_open_findings(run))

    health_gaps = [gap for run in run_list for gap in _health_gaps(run)]

    return InvariantReport(
        world_id=world_id,
        checked_at=clock,
        current_policy_version=current,
        fail_closed_world=fail_closed_world,
        live_status_failures=tuple(live_status_failures),
        live_policy_version_mismatches=tuple(version_mismatches),
        fail_closed_violations=tuple(fail_closed),
        override_violations=tuple(item.to_dict() for item in approvals if not item.ok),
        validation_health_gaps=tuple(health_gaps),
        live_without_current_decision=tuple(live_without_decision),
        approved_overrides=tuple(item.to_dict() for item in approvals),
        degraded_decisions=tuple(degraded),
        runs_checked=len(run_list),
    )
