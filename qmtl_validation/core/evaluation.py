"""Evaluating one run under a policy: rule results, summary status, recommended stage, ruleset hash.

:func:`evaluate_run` is the SPEC §10 entry point::

    result = evaluate_run(metrics, policy, "backtest", submitted_at=..., data_end=...)
    result.to_dict() == {
        "validation": {"policy_version", "ruleset_hash", "profile",
                       "results": {rule: {status, severity, owner, reason_code, reason, tags, details}}},
        "summary": {"status", "recommended_stage"},
    }

Profile (SPEC §7): ``default_profile_by_stage[stage]``, else ``[stage + "_only"]``, else (for
``live``) ``["paper_ok_live_candidate"]``, else a profile named like the stage. With no profile
only the selection thresholds apply and the run cannot be promoted.

Summary status: ``fail`` if a blocking rule fails, else ``warn`` if any rule fails or warns, else
``pass``. A profile is *cleared* when no rule fails under it (warnings allowed).
Recommended stage:

- backtest-stage run: clears its (backtest) profile → ``paper_only``, else ``backtest_only``;
- paper- or live-stage run: clears the live profile (the paper profile when no live profile
  exists) → ``paper_ok_live_candidate``; clears only the paper profile → ``paper_only``; else
  ``backtest_only``. A live-stage run also needs a profile of its own stage (else it "cannot be
  promoted");
- any other stage, no profile, or no policy (``policy=None``) → ``backtest_only``.

Nothing here ever recommends ``live``: going live needs operator intent outside this project.

Ruleset hash: ``sha256:`` + hex digest of the canonical JSON (sorted keys, no spaces, integral
floats written as integers) of everything that can change the outcome: the chosen profile's name
and the resolved configuration of each core rule (thresholds with their metric paths, severity,
owner, missing-metric and error modes, selection settings), the profiles that decide promotion,
the effective ``validation`` knobs and fail-closed flag, the risk profile with the effective tier,
the extended-layer configurations (the profile's portfolio block when it has one), ``risk_hub``,
``annualization`` and ``campaign``. It does not depend on YAML key order nor on
``policy_version``; ``governance`` (approval gates outside validation) is not part of it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Iterable, Mapping

from qmtl_validation.core.health import CORE_RULE_NAMES
from qmtl_validation.core.policy import Policy
from qmtl_validation.core.rules.base import RuleResult, summary_status
from qmtl_validation.core.rules.core_rules import CoreRule, build_core_rules, run_rule

# The result name under which a run evaluated without a usable policy records why.
POLICY_UNAVAILABLE_RULE = "policy"

CONTEXT_KEYS = (
    "now",
    "submitted_at",
    "data_end",
    "previously_active",
    "rank",
    "correlations",
    "imputed_correlations",
    "policy_version",
    "risk_tier",
    "strategy_id",
)


def _utc(value: Any, key: str, *, end_of_day: bool = False) -> datetime | None:
    """A timestamp as an aware UTC datetime (naive means UTC). A bare date (``date`` or
    ``'YYYY-MM-DD'``) is midnight UTC, or for ``end_of_day`` the next midnight (a daily data end
    covers its whole day); for ``end_of_day`` a naive datetime at exactly midnight counts as a
    date too."""
    if value is None:
        return None
    if hasattr(value, "to_pydatetime"):  # pandas Timestamp
        value = value.to_pydatetime()
    if isinstance(value, str):
        text = value.strip()
        try:
            value = date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"context {key}: {value!r} is not an ISO-8601 date or timestamp") from None
    if isinstance(value, datetime):
        if end_of_day and value.tzinfo is None and value.time() == time(0):
            # Run returns are daily (SPEC §3): a naive midnight is a calendar date that came
            # through a datetime column, not an instant.
            value = value.date()
        else:
            return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    if isinstance(value, date):
        moment = datetime.combine(value, time(0), tzinfo=timezone.utc)
        return moment + timedelta(days=1) if end_of_day else moment
    raise ValueError(f"context {key}: expected a datetime, date or ISO-8601 string, got {type(value).__name__}")


@dataclass(frozen=True)
class EvaluationContext:
    """Facts about a run that are not metrics. Keys accepted by :func:`evaluate_run`:

    - ``now``: reference time for the data lag when ``submitted_at`` is unknown (never defaulted
      to the wall clock, so a re-evaluation is reproducible).
    - ``submitted_at``: when the run was submitted (``run.json``); the data lag is measured to it.
    - ``data_end``: end of the run's data. A date (or ``'YYYY-MM-DD'``, or a naive datetime at
      exactly midnight, e.g. a pandas Timestamp from a daily ``date`` column) covers its whole
      day, i.e. ends at the next midnight UTC; any other datetime is used as is (naive = UTC).
    - ``previously_active``: the strategy is currently selected (hysteresis uses ``exit``
      instead of ``enter``). Default False.
    - ``rank``: 1-based rank by the ``top_k`` metric within its batch; default 1 (a single run).
    - ``correlations``: ``{other_strategy_id: rho}`` with the strategies already kept ahead of
      this run; None (default) means no correlation data (the check is reported as not run).
    - ``imputed_correlations``: ids in ``correlations`` whose rho was imputed (set by
      :func:`qmtl_validation.core.selection.evaluate_batch`).
    - ``policy_version``: version to record when the policy does not carry one (must agree when
      both are known).
    - ``risk_tier``: the run's risk tier; the world's ``risk_profile.tier`` wins when set.
    - ``strategy_id``: used in messages only.
    """

    now: datetime | None = None
    submitted_at: datetime | None = None
    data_end: datetime | None = None
    previously_active: bool = False
    rank: int | None = None
    correlations: Mapping[str, Any] | None = None
    imputed_correlations: frozenset[str] = frozenset()
    policy_version: str | None = None
    risk_tier: str | None = None
    strategy_id: str | None = None

    @classmethod
    def from_kwargs(cls, **context: Any) -> "EvaluationContext":
        unknown = sorted(set(context) - set(CONTEXT_KEYS))
        if unknown:
            raise TypeError(f"unknown evaluation context key(s) {', '.join(unknown)}; expected {', '.join(CONTEXT_KEYS)}")
        rank = context.get("rank")
        if rank is not None:
            if isinstance(rank, bool) or not isinstance(rank, int) and not (isinstance(rank, float) and rank.is_integer()):
                raise ValueError(f"context rank: expected a positive integer, got {rank!r}")
            rank = int(rank)
            if rank < 1:
                raise ValueError(f"context rank: expected a positive integer, got {rank!r}")
        correlations = context.get("correlations")
        if correlations is not None:
            if not isinstance(correlations, Mapping):
                raise ValueError("context correlations: expected a mapping of strategy id to correlation")
            correlations = {str(k): v for k, v in correlations.items()}
        version = context.get("policy_version")
        tier = context.get("risk_tier")
        return cls(
            now=_utc(context.get("now"), "now"),
            submitted_at=_utc(context.get("submitted_at"), "submitted_at"),
            data_end=_utc(context.get("data_end"), "data_end", end_of_day=True),
            previously_active=bool(context.get("previously_active", False)),
            rank=rank,
            correlations=correlations,
            imputed_correlations=frozenset(str(x) for x in context.get("imputed_correlations") or ()),
            policy_version=None if version is None else str(version),
            risk_tier=None if tier is None else str(tier).strip().lower() or None,
            strategy_id=context.get("strategy_id"),
        )


def normalise_stage(stage: Any) -> str:
    """``' Paper '`` → ``paper``; ``-`` counts as ``_``. Raises ValueError for an empty stage."""
    if not isinstance(stage, str) or not stage.strip():
        raise ValueError(f"stage must be a non-empty string, got {stage!r}")
    return stage.strip().lower().replace("-", "_")


# --------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class EvaluationResult:
    """One run's validation outcome. ``to_dict()`` is the SPEC §10 shape.

    ``stage`` and ``core_recommended_stage`` (the stage the core rules alone recommend, which
    :func:`merge_results` starts from) are bookkeeping kept out of ``to_dict``.
    """

    policy_version: str | None
    ruleset_hash: str | None
    profile: str | None
    results: Mapping[str, RuleResult]
    status: str
    recommended_stage: str
    stage: str | None = field(default=None, compare=False)
    core_recommended_stage: str | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "validation": {
                "policy_version": self.policy_version,
                "ruleset_hash": self.ruleset_hash,
                "profile": self.profile,
                "results": {name: result.to_dict() for name, result in self.results.items()},
            },
            "summary": {"status": self.status, "recommended_stage": self.recommended_stage},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EvaluationResult":
        """Inverse of :meth:`to_dict`. When the stored results include a failing extended-layer
        result the core-only recommendation is unknown, so :func:`merge_results` treats it as
        the stored one (it can only stay or drop, never rise without re-evaluating)."""
        validation = data["validation"]
        summary = data["summary"]
        results = {name: RuleResult.from_dict(r) for name, r in (validation.get("results") or {}).items()}
        return cls(
            policy_version=validation.get("policy_version"),
            ruleset_hash=validation.get("ruleset_hash"),
            profile=validation.get("profile"),
            results=results,
            status=summary["status"],
            recommended_stage=summary["recommended_stage"],
            core_recommended_stage=summary["recommended_stage"],
        )


def _clears(results: Iterable[RuleResult]) -> bool:
    return all(r.status != "fail" for r in results)


def merge_results(
    result: EvaluationResult, extra_results: Mapping[str, RuleResult | Mapping[str, Any]]
) -> EvaluationResult:
    """``result`` with extended-layer results added (or replaced, by rule name) and the summary
    recomputed: status over every result; recommended stage = the core recommendation unless an
    extended result fails (then ``backtest_only``: the run no longer clears its profile).

    Core rule names cannot be overwritten (ValueError). A result without a policy stays ``fail``
    / ``backtest_only``.
    """
    merged = dict(result.results)
    for name, extra in extra_results.items():
        if name in CORE_RULE_NAMES:
            raise ValueError(f"extended results cannot replace the core rule {name!r}")
        merged[name] = extra if isinstance(extra, RuleResult) else RuleResult.from_dict(extra)
    base = result.core_recommended_stage or result.recommended_stage
    extended = [r for name, r in merged.items() if name not in CORE_RULE_NAMES]
    if result.ruleset_hash is None:
        status, stage = "fail", "backtest_only"
    else:
        status = summary_status(merged)
        stage = base if _clears(extended) else "backtest_only"
    return EvaluationResult(
        policy_version=result.policy_version,
        ruleset_hash=result.ruleset_hash,
        profile=result.profile,
        results=merged,
        status=status,
        recommended_stage=stage,
        stage=result.stage,
        core_recommended_stage=base,
    )


# --------------------------------------------------------------------------------------------
# Plans: the compiled rules of (policy, stage, tier), cached on the policy object


@dataclass(frozen=True)
class _Promotion:
    profile: str
    rules: tuple[CoreRule, ...]


@dataclass(frozen=True)
class EvaluationPlan:
    stage: str
    profile: str | None
    rules: tuple[CoreRule, ...]
    live: _Promotion | None
    paper: _Promotion | None
    ruleset_hash: str
    canonical: str


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("non-finite number in the ruleset")
        return int(value) if value.is_integer() and abs(value) < 2**53 else value
    if isinstance(value, timedelta):
        return _plain(value.total_seconds())
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "to_dict"):
        return _plain(value.to_dict())
    return value


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, ASCII, integral floats as integers, durations in seconds."""
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _rules_config(rules: tuple[CoreRule, ...]) -> dict[str, Any]:
    return {rule.name: rule.config() for rule in rules}


def _ruleset_payload(policy: Policy, plan_profile: str | None, rules: tuple[CoreRule, ...], promotion: dict[str, Any], tier: str | None) -> dict[str, Any]:
    validation = policy.effective_validation
    risk_hub = policy.risk_hub.to_dict()
    risk_hub["allowed_producers"] = sorted(risk_hub["allowed_producers"])
    risk_profile = policy.risk_profile.to_dict()
    risk_profile["effective_tier"] = tier
    psc = policy.paper_shadow_consistency
    psc_plain = None if psc is None else {**psc.to_dict(), "stages": sorted(psc.stages)}
    return {
        "profile": plan_profile,
        "rules": _rules_config(rules),
        "promotion": promotion,
        "validation": {
            "on_error": validation.on_error,
            "on_missing_metric": validation.on_missing_metric,
            "fail_closed": policy.fail_closed,
        },
        "risk_profile": risk_profile,
        "extended": {
            "cohort": policy.cohort,
            "portfolio": policy.portfolio_for(plan_profile),
            "benchmark": policy.benchmark,
            "stress": policy.stress,
            "paper_shadow_consistency": psc_plain,
            "live_monitoring": policy.live_monitoring,
        },
        "risk_hub": risk_hub,
        "annualization": policy.annualization,
        "campaign": policy.campaign,
    }


def evaluation_plan(policy: Policy, stage: str, tier: str | None = None) -> EvaluationPlan:
    """The compiled rules, promotion profiles and ruleset hash for ``stage`` (cached)."""
    key = (stage, tier)
    plan = policy._plans.get(key)
    if plan is not None:
        return plan
    profile = policy.profile_for_stage(stage)
    rules = build_core_rules(policy, profile, tier=tier)
    live = paper = None
    promotion: dict[str, Any] = {}
    if stage in ("paper", "live") and profile is not None:
        live_name = policy.profile_for_stage("live")
        paper_name = policy.profile_for_stage("paper")

        def rules_for(name: str) -> tuple[CoreRule, ...]:
            return rules if name == profile else build_core_rules(policy, name, tier=tier)

        if live_name is not None:
            live = _Promotion(live_name, rules_for(live_name))
            promotion["live"] = {"profile": live_name, "rules": _rules_config(live.rules)}
        if paper_name is not None:
            paper = _Promotion(paper_name, rules_for(paper_name))
            promotion["paper"] = {"profile": paper_name, "rules": _rules_config(paper.rules)}
    canonical = canonical_json(_ruleset_payload(policy, profile, rules, promotion, tier))
    plan = EvaluationPlan(
        stage=stage,
        profile=profile,
        rules=rules,
        live=live,
        paper=paper,
        ruleset_hash="sha256:" + hashlib.sha256(canonical.encode("ascii")).hexdigest(),
        canonical=canonical,
    )
    policy._plans[key] = plan
    return plan


def ruleset_hash(policy: Policy, stage: str, *, risk_tier: str | None = None) -> str:
    """The ruleset hash a run of ``stage`` gets under ``policy`` (see the module docstring)."""
    stage = normalise_stage(stage)
    return evaluation_plan(policy, stage, policy.effective_tier(risk_tier)).ruleset_hash


# --------------------------------------------------------------------------------------------
# evaluate_run


def _metrics_dict(metrics: Any) -> Mapping[str, Any]:
    if metrics is None:
        return {}
    to_dict = getattr(metrics, "to_dict", None)
    if callable(to_dict) and not isinstance(metrics, Mapping):
        metrics = to_dict()
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be an EvaluationMetrics or a nested mapping, got {type(metrics).__name__}")
    return metrics


def _recommend(plan: EvaluationPlan, results: Mapping[str, RuleResult], metrics: Mapping[str, Any], ctx: EvaluationContext) -> str:
    if plan.profile is None:
        return "backtest_only"
    if plan.stage == "backtest":
        return "paper_only" if _clears(results.values()) else "backtest_only"
    if plan.stage not in ("paper", "live"):
        return "backtest_only"

    def clears(promotion: _Promotion) -> bool:
        if promotion.profile == plan.profile:
            return _clears(results.values())
        return _clears(run_rule(rule, metrics, ctx) for rule in promotion.rules)

    if plan.live is not None:
        if clears(plan.live):
            return "paper_ok_live_candidate"
        if plan.paper is not None and clears(plan.paper):
            return "paper_only"
        return "backtest_only"
    if plan.paper is not None and clears(plan.paper):
        return "paper_ok_live_candidate"
    return "backtest_only"


def policy_unavailable_result(reason: str) -> RuleResult:
    """The result recorded under :data:`POLICY_UNAVAILABLE_RULE` for a run evaluated without a
    usable policy: a blocking failure that says why, so the stored run explains its verdict."""
    return RuleResult(
        status="fail",
        severity="blocking",
        owner="risk",
        reason_code="policy_unavailable",
        reason=f"no valid policy, so the run fails and stays backtest_only: {reason}",
    )


def evaluate_run(
    metrics: Any,
    policy: Policy | None,
    stage: str = "backtest",
    *,
    missing_policy_reason: str | None = None,
    **context: Any,
) -> EvaluationResult:
    """Evaluate one run's metrics under ``policy`` at ``stage`` (see the module docstring).

    ``metrics``: an ``EvaluationMetrics`` (anything with ``to_dict()``) or the nested mapping of
    SPEC §5. ``context``: the keys of :class:`EvaluationContext` (unknown keys raise TypeError).
    ``policy=None`` (missing or unparseable policy) gives status ``fail`` and ``backtest_only``
    with no rule results, or, given ``missing_policy_reason`` (why there is no policy), the one
    result :func:`policy_unavailable_result` under :data:`POLICY_UNAVAILABLE_RULE`.
    """
    ctx = EvaluationContext.from_kwargs(**context)
    data = _metrics_dict(metrics)
    stage = normalise_stage(stage)
    if policy is None:
        return EvaluationResult(
            policy_version=ctx.policy_version,
            ruleset_hash=None,
            profile=None,
            results=(
                {POLICY_UNAVAILABLE_RULE: policy_unavailable_result(missing_policy_reason)}
                if missing_policy_reason
                else {}
            ),
            status="fail",
            recommended_stage="backtest_only",
            stage=stage,
            core_recommended_stage="backtest_only",
        )
    version = policy.policy_version
    if ctx.policy_version is not None:
        if version is not None and version != ctx.policy_version:
            raise ValueError(f"context policy_version {ctx.policy_version!r} does not match the policy's {version!r}")
        version = ctx.policy_version
    plan = evaluation_plan(policy, stage, policy.effective_tier(ctx.risk_tier))
    results = {rule.name: run_rule(rule, data, ctx) for rule in plan.rules}
    recommended = _recommend(plan, results, data, ctx)
    return EvaluationResult(
        policy_version=version,
        ruleset_hash=plan.ruleset_hash,
        profile=plan.profile,
        results=results,
        status=summary_status(results),
        recommended_stage=recommended,
        stage=stage,
        core_recommended_stage=recommended,
    )
