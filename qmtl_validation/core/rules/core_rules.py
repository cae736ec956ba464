"""The five core validation rules: data_currency, sample, performance, robustness, risk_constraint.

Each rule is a small frozen object built from a policy and a profile by :func:`build_core_rules`
and evaluated with ``rule.evaluate(metrics, context) -> RuleResult``; :func:`run_rule` wraps it so
that an exception becomes a ``rule_error`` result (status per ``validation.on_error``).

``metrics`` is the nested metrics mapping of SPEC §5 (``{"returns": {...}, "sample": {...}, ...}``)
read by dotted path. ``context`` is an :class:`qmtl_validation.core.evaluation.EvaluationContext`
(the rules read its attributes ``submitted_at``, ``now``, ``data_end``, ``rank``,
``previously_active``, ``correlations`` and ``imputed_correlations``).

Every threshold is reported once, by the rule of its class: profile sections map to their rule
(``risk`` → ``risk_constraint``), ``selection.thresholds`` entries go where
:func:`~qmtl_validation.core.policy.classify_metric` puts them, and a profile threshold replaces a
selection threshold of the same name. Bounds are inclusive (a value equal to a bound passes).

A missing (null, absent or non-numeric) metric follows ``validation.on_missing_metric``: ``fail``
fails the rule, ``warn`` makes it warn, ``ignore`` drops the check (the rule then passes with
``missing_metric_ignored`` if nothing else is wrong, and lists what it ignored). A run with no
metric value at all fails ``data_currency`` with ``metrics_missing`` whatever the mode: there is
nothing to validate.

Reason codes (QMTL's where the behaviour matches, reference §2.7):

- data_currency: ``data_currency_ok``, ``metrics_missing``, ``missing_metric``,
  ``missing_metric_ignored``, ``data_lag_exceeds_max``, ``history_below_min``,
  ``data_currency_thresholds_failed``
- sample: ``sample_ok``, ``sample_thresholds_failed`` (also a missing high-volatility regime),
  ``sample_metrics_missing``
- performance: ``performance_ok``, ``performance_thresholds_failed``,
  ``performance_metrics_missing``, ``performance_rank_outside_top_k``
- robustness: ``robustness_ok``, ``dsr_below_min``, ``dsr_missing``,
  ``cv_sharpe_gap_exceeds_max``, ``robustness_thresholds_failed``, ``robustness_metrics_missing``
- risk_constraint: ``risk_constraints_ok``, ``risk_constraints_not_configured``,
  ``risk_thresholds_failed``, ``risk_metrics_missing``, ``correlation_constraint_failed``,
  ``hysteresis_exit``, ``hysteresis_not_entered``
- any rule: ``rule_error``, ``missing_metric_ignored``

The rule's ``reason_code`` is its first failing finding (else first warning); ``reason`` lists
every finding; ``details`` carries the evidence (``violations``, ``missing_metrics``, values and
bounds).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Mapping

from qmtl_validation.core.health import get_path
from qmtl_validation.core.policy import (
    Policy,
    Threshold,
    ValidationProfile,
    classify_metric,
    describe_duration,
    format_duration,
    resolve_metric_path,
)
from qmtl_validation.core.rules.base import RuleResult

DAYS_PER_YEAR = 365.25

DEFAULT_SEVERITY: Mapping[str, str] = {
    "data_currency": "blocking",
    "sample": "blocking",
    "performance": "blocking",
    "risk_constraint": "blocking",
    "robustness": "soft",
}
DEFAULT_OWNER: Mapping[str, str] = {
    "data_currency": "ops",
    "sample": "quant",
    "performance": "quant",
    "risk_constraint": "risk",
    "robustness": "quant",
}
# Profile section whose severity/owner override each rule.
PROFILE_SECTION: Mapping[str, str] = {
    "data_currency": "data_currency",
    "sample": "sample",
    "performance": "performance",
    "risk_constraint": "risk",
    "robustness": "robustness",
}
_CLASS_TO_RULE = {
    "data_currency": "data_currency",
    "sample": "sample",
    "performance": "performance",
    "robustness": "robustness",
    "risk": "risk_constraint",
}
_STRICTNESS = {"info": 0, "soft": 1, "blocking": 2}

_BREACH_CODE = {
    "data_currency": "data_currency_thresholds_failed",
    "sample": "sample_thresholds_failed",
    "performance": "performance_thresholds_failed",
    "robustness": "robustness_thresholds_failed",
    "risk_constraint": "risk_thresholds_failed",
}
_MISSING_CODE = {
    "data_currency": "missing_metric",
    "sample": "sample_metrics_missing",
    "performance": "performance_metrics_missing",
    "robustness": "robustness_metrics_missing",
    "risk_constraint": "risk_metrics_missing",
}
_DSR_PATH = "robustness.deflated_sharpe_ratio"
_HIGH_VOL_PATH = "sample.regime_coverage.high_vol"
_HISTORY_PATH = "sample.effective_history_years"


def number(value: Any) -> float | None:
    """``value`` as a finite float, or None when it is null, non-numeric (bools and strings
    included) or not finite — all of which count as a missing metric."""
    if type(value) is float:
        return value if math.isfinite(value) else None
    if type(value) is int:
        return float(value)
    if value is None or isinstance(value, (bool, str, bytes)) or not isinstance(value, numbers.Real):
        return None
    out = float(value)
    return out if math.isfinite(out) else None


def fmt(value: float) -> str:
    """Short human rendering of a number in reasons (``0.15``, ``2``, ``5,000,000``)."""
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:.6g}"


def has_any_value(node: Any) -> bool:
    """True when a nested metrics mapping holds at least one non-null leaf."""
    if isinstance(node, Mapping):
        return any(has_any_value(v) for v in node.values())
    return node is not None


@dataclass(frozen=True)
class ThresholdCheck:
    """One inclusive bound on one metric, with where it came from and the codes it reports."""

    key: str
    path: str
    min: float | None
    max: float | None
    source: str
    breach_code: str
    missing_code: str

    def config(self) -> dict[str, Any]:
        return {"metric": self.path, "min": self.min, "max": self.max}


class Findings:
    """What one rule found for one run: events in check order, violations and missing metrics.

    Reusable by other rule families: ``check`` a threshold, ``missing`` a metric, ``fail`` or
    ``warn`` with a code, then ``result(...)`` builds the RuleResult.
    """

    __slots__ = ("mode", "events", "violations", "missing", "ignored", "values")

    def __init__(self, on_missing_metric: str):
        self.mode = on_missing_metric
        self.events: list[tuple[str, str, str]] = []
        self.violations: list[dict[str, Any]] = []
        self.missing: list[str] = []
        self.ignored: list[str] = []
        self.values: dict[str, float | None] = {}

    def check(self, chk: ThresholdCheck, metrics: Mapping[str, Any]) -> float | None:
        value = number(get_path(metrics, chk.path))
        self.values[chk.key] = value
        if value is None:
            self.missing_metric(chk.path, chk.missing_code, threshold=chk.key)
        elif chk.min is not None and value < chk.min:
            self.violations.append(
                {"threshold": chk.key, "metric": chk.path, "reason": "below_min", "value": value, "min": chk.min}
            )
            self.events.append(("fail", chk.breach_code, f"{chk.path} {fmt(value)} below minimum {fmt(chk.min)}"))
        elif chk.max is not None and value > chk.max:
            self.violations.append(
                {"threshold": chk.key, "metric": chk.path, "reason": "above_max", "value": value, "max": chk.max}
            )
            self.events.append(("fail", chk.breach_code, f"{chk.path} {fmt(value)} above maximum {fmt(chk.max)}"))
        return value

    def missing_metric(self, path: str, code: str, *, threshold: str | None = None) -> None:
        if path in self.missing or path in self.ignored:
            return
        if self.mode == "ignore":
            self.ignored.append(path)
            return
        self.missing.append(path)
        self.violations.append(
            {"threshold": threshold, "metric": path, "reason": "missing_metric", "mode": self.mode}
        )
        self.events.append(("fail" if self.mode == "fail" else "warn", code, f"{path} missing"))

    def fail(self, code: str, message: str) -> None:
        self.events.append(("fail", code, message))

    def warn(self, code: str, message: str) -> None:
        self.events.append(("warn", code, message))

    def result(
        self,
        rule: "CoreRule",
        ok_code: str,
        ok_reason: str,
        details: dict[str, Any],
    ) -> RuleResult:
        details["violations"] = self.violations
        details["missing_metrics"] = self.missing
        details["ignored_missing_metrics"] = self.ignored
        details["policy_on_missing_metric"] = self.mode
        first = next((e for e in self.events if e[0] == "fail"), None) or next(
            (e for e in self.events if e[0] == "warn"), None
        )
        if first is not None:
            status, code = first[0], first[1]
            reason = "; ".join(e[2] for e in self.events)
        elif self.ignored:
            status, code = "pass", "missing_metric_ignored"
            reason = f"{ok_reason}; missing metrics ignored: {', '.join(self.ignored)}"
        else:
            status, code, reason = "pass", ok_code, ok_reason
        return RuleResult(
            status=status,  # type: ignore[arg-type]
            severity=rule.severity,  # type: ignore[arg-type]
            owner=rule.owner,  # type: ignore[arg-type]
            reason_code=code,
            reason=reason,
            tags=rule.tags,
            details=details,
        )


@dataclass(frozen=True)
class CoreRule:
    """Settings every core rule shares; subclasses add their checks and ``evaluate``."""

    severity: str
    owner: str
    on_missing_metric: str
    on_error: str
    thresholds: tuple[ThresholdCheck, ...] = ()

    name = "rule"

    @property
    def tags(self) -> tuple[str, ...]:
        return (self.name,)

    def config(self) -> dict[str, Any]:
        """Every setting that can change this rule's outcome (feeds the ruleset hash)."""
        return {
            "severity": self.severity,
            "owner": self.owner,
            "on_missing_metric": self.on_missing_metric,
            "on_error": self.on_error,
            "thresholds": {t.key: t.config() for t in self.thresholds},
        }

    def _thresholds_detail(self, findings: Findings) -> dict[str, Any]:
        return {
            t.key: {"metric": t.path, "min": t.min, "max": t.max, "value": findings.values.get(t.key), "source": t.source}
            for t in self.thresholds
        }

    def evaluate(self, metrics: Mapping[str, Any], context: Any) -> RuleResult:  # pragma: no cover
        raise NotImplementedError


@dataclass(frozen=True)
class DataCurrencyRule(CoreRule):
    """Data freshness and history (profile ``data_currency`` plus data-currency thresholds).

    - ``max_lag``: lag = reference time − data end, reference = ``context.submitted_at`` else
      ``context.now``; fails ``data_lag_exceeds_max`` when lag > max_lag. Without a data end or
      a reference time the lag is a missing metric (``context.data_end`` /
      ``context.submitted_at``).
    - ``min_history``: effective history in days = ``sample.effective_history_years`` × 365.25;
      fails ``history_below_min`` when below.
    """

    max_lag: timedelta | None = None
    min_history: timedelta | None = None

    name = "data_currency"

    def config(self) -> dict[str, Any]:
        out = super().config()
        out["max_lag_seconds"] = None if self.max_lag is None else self.max_lag.total_seconds()
        out["min_history_days"] = None if self.min_history is None else self.min_history.total_seconds() / 86400
        return out

    def evaluate(self, metrics: Mapping[str, Any], context: Any) -> RuleResult:
        details: dict[str, Any] = {}
        if not has_any_value(metrics):
            return RuleResult(
                status="fail",
                severity=self.severity,  # type: ignore[arg-type]
                owner=self.owner,  # type: ignore[arg-type]
                reason_code="metrics_missing",
                reason="No metrics provided for the run",
                tags=self.tags,
                details={"policy_on_missing_metric": self.on_missing_metric},
            )
        findings = Findings(self.on_missing_metric)
        if self.max_lag is not None:
            reference = context.submitted_at if context.submitted_at is not None else context.now
            max_lag = self.max_lag.total_seconds()
            details["max_lag_seconds"] = max_lag
            if context.data_end is None:
                findings.missing_metric("context.data_end", "missing_metric")
            elif reference is None:
                findings.missing_metric("context.submitted_at", "missing_metric")
            else:
                lag = (reference - context.data_end).total_seconds()
                details["lag_seconds"] = lag
                if lag > max_lag:
                    findings.fail(
                        "data_lag_exceeds_max",
                        f"data lag {describe_duration(timedelta(seconds=lag))} above maximum {format_duration(self.max_lag)}",
                    )
        if self.min_history is not None:
            min_days = self.min_history.total_seconds() / 86400
            details["min_history_days"] = min_days
            years = number(get_path(metrics, _HISTORY_PATH))
            if years is None:
                findings.missing_metric(_HISTORY_PATH, "missing_metric")
            else:
                days = years * DAYS_PER_YEAR
                details["history_days"] = days
                if days < min_days:
                    findings.fail("history_below_min", f"history {fmt(round(days, 1))}d below minimum {fmt(min_days)}d")
        for chk in self.thresholds:
            findings.check(chk, metrics)
        details["thresholds"] = self._thresholds_detail(findings)
        configured = self.max_lag is not None or self.min_history is not None or bool(self.thresholds)
        reason = "Data currency requirements met" if configured else "No data currency requirements configured"
        return findings.result(self, "data_currency_ok", reason, details)


@dataclass(frozen=True)
class SampleRule(CoreRule):
    """Sample size: sample-class thresholds (``min_effective_years``, ``min_trades_total``, ...)
    and ``require_high_vol_regime`` (``sample.regime_coverage.high_vol`` > 0)."""

    require_high_vol_regime: bool = False

    name = "sample"

    def config(self) -> dict[str, Any]:
        out = super().config()
        out["require_high_vol_regime"] = self.require_high_vol_regime
        return out

    def evaluate(self, metrics: Mapping[str, Any], context: Any) -> RuleResult:
        findings = Findings(self.on_missing_metric)
        for chk in self.thresholds:
            findings.check(chk, metrics)
        details: dict[str, Any] = {}
        if self.require_high_vol_regime:
            share = number(get_path(metrics, _HIGH_VOL_PATH))
            details["high_vol_share"] = share
            if share is None:
                findings.missing_metric(_HIGH_VOL_PATH, "sample_metrics_missing")
            elif share <= 0:
                findings.violations.append(
                    {"threshold": "require_high_vol_regime", "metric": _HIGH_VOL_PATH, "reason": "no_high_vol_regime", "value": share}
                )
                findings.fail("sample_thresholds_failed", "no high-volatility regime in the sample")
        details["thresholds"] = self._thresholds_detail(findings)
        configured = bool(self.thresholds) or self.require_high_vol_regime
        reason = "Sample requirements met" if configured else "No sample requirements configured"
        return findings.result(self, "sample_ok", reason, details)


@dataclass(frozen=True)
class TopKCheck:
    metric: str
    path: str
    k: int


@dataclass(frozen=True)
class PerformanceRule(CoreRule):
    """Performance-class thresholds (``sharpe_min``, ``max_dd_max``, ``gain_to_pain_min``, ...)
    and the ``top_k`` rank (``context.rank``, 1-based; a single run is rank 1)."""

    top_k: TopKCheck | None = None

    name = "performance"

    @property
    def tags(self) -> tuple[str, ...]:
        return ("performance", "thresholds", "top_k") if self.top_k else ("performance", "thresholds")

    def config(self) -> dict[str, Any]:
        out = super().config()
        out["top_k"] = None if self.top_k is None else {"metric": self.top_k.path, "k": self.top_k.k}
        return out

    def evaluate(self, metrics: Mapping[str, Any], context: Any) -> RuleResult:
        findings = Findings(self.on_missing_metric)
        for chk in self.thresholds:
            findings.check(chk, metrics)
        details: dict[str, Any] = {}
        if self.top_k is not None:
            rank = 1 if context.rank is None else int(context.rank)
            details["rank"] = rank
            details["top_k"] = {"metric": self.top_k.path, "k": self.top_k.k}
            if number(get_path(metrics, self.top_k.path)) is None:
                findings.missing_metric(self.top_k.path, "performance_metrics_missing", threshold="top_k")
            if rank > self.top_k.k:
                findings.fail("performance_rank_outside_top_k", f"Rank {rank} outside top_k={self.top_k.k}")
        details["thresholds"] = self._thresholds_detail(findings)
        return findings.result(self, "performance_ok", "Passed thresholds and ranking", details)


@dataclass(frozen=True)
class RobustnessRule(CoreRule):
    """Robustness-class thresholds (``dsr_min`` → ``dsr_below_min`` / ``dsr_missing``) and
    ``cv_sharpe_gap_max`` on |``robustness.sharpe_first_half`` − ``sharpe_second_half``|."""

    cv_sharpe_gap_max: float | None = None

    name = "robustness"

    def config(self) -> dict[str, Any]:
        out = super().config()
        out["cv_sharpe_gap_max"] = self.cv_sharpe_gap_max
        return out

    def evaluate(self, metrics: Mapping[str, Any], context: Any) -> RuleResult:
        findings = Findings(self.on_missing_metric)
        for chk in self.thresholds:
            findings.check(chk, metrics)
        details: dict[str, Any] = {}
        if self.cv_sharpe_gap_max is not None:
            details["cv_sharpe_gap_max"] = self.cv_sharpe_gap_max
            first = number(get_path(metrics, "robustness.sharpe_first_half"))
            second = number(get_path(metrics, "robustness.sharpe_second_half"))
            if first is None:
                findings.missing_metric("robustness.sharpe_first_half", "robustness_metrics_missing")
            if second is None:
                findings.missing_metric("robustness.sharpe_second_half", "robustness_metrics_missing")
            if first is not None and second is not None:
                gap = abs(first - second)
                details["sharpe_gap"] = gap
                if gap > self.cv_sharpe_gap_max:
                    findings.violations.append(
                        {"threshold": "cv_sharpe_gap_max", "metric": "robustness.sharpe_gap", "reason": "above_max", "value": gap, "max": self.cv_sharpe_gap_max}
                    )
                    findings.fail(
                        "cv_sharpe_gap_exceeds_max",
                        f"first/second-half Sharpe gap {fmt(gap)} above maximum {fmt(self.cv_sharpe_gap_max)}",
                    )
        details["thresholds"] = self._thresholds_detail(findings)
        configured = bool(self.thresholds) or self.cv_sharpe_gap_max is not None
        reason = "Robustness requirements met" if configured else "No robustness requirements configured"
        return findings.result(self, "robustness_ok", reason, details)


@dataclass(frozen=True)
class HysteresisCheck:
    metric: str
    path: str
    enter: float
    exit: float


@dataclass(frozen=True)
class RiskConstraintRule(CoreRule):
    """Risk-class thresholds (liquidity, incremental VaR, capacity), the correlation limit and
    the hysteresis band from ``selection``.

    Correlation: ``context.correlations`` maps other strategies (those already kept ahead of this
    run) to their correlation with it; a run is blocked when any |rho| > ``correlation_max``
    (``details.blocked_by``; pairs imputed by the batch selection are flagged ``imputed``). With
    ``context.correlations`` None there is no correlation data and the check is reported as not
    evaluated (``details.correlation.checked`` false). Hysteresis: a run not previously active
    (``context.previously_active`` false, the default) must reach ``enter``; an active one must
    stay at or above ``exit``.
    """

    correlation_max: float | None = None
    hysteresis: HysteresisCheck | None = None

    name = "risk_constraint"

    @property
    def tags(self) -> tuple[str, ...]:
        tags = ["risk"]
        if self.thresholds:
            tags.append("thresholds")
        if self.correlation_max is not None:
            tags.append("correlation")
        if self.hysteresis is not None:
            tags.append("hysteresis")
        return tuple(tags)

    def config(self) -> dict[str, Any]:
        out = super().config()
        out["correlation_max"] = self.correlation_max
        out["hysteresis"] = (
            None
            if self.hysteresis is None
            else {"metric": self.hysteresis.path, "enter": self.hysteresis.enter, "exit": self.hysteresis.exit}
        )
        return out

    def evaluate(self, metrics: Mapping[str, Any], context: Any) -> RuleResult:
        findings = Findings(self.on_missing_metric)
        for chk in self.thresholds:
            findings.check(chk, metrics)
        details: dict[str, Any] = {}
        if self.correlation_max is not None:
            correlations = context.correlations
            info: dict[str, Any] = {"max": self.correlation_max, "checked": correlations is not None}
            details["correlation"] = info
            if correlations is not None:
                imputed = context.imputed_correlations or ()
                info["compared_with"] = sorted(correlations)
                info["imputed"] = sorted(o for o in correlations if o in imputed)
                blocked = []
                for other, rho in correlations.items():
                    value = number(rho)
                    if value is None:
                        raise ValueError(f"correlation with {other!r} is not a number: {rho!r}")
                    if abs(value) > self.correlation_max:
                        blocked.append({"strategy_id": other, "correlation": value, "imputed": other in imputed})
                details["blocked_by"] = blocked
                if blocked:
                    worst = max(blocked, key=lambda b: abs(b["correlation"]))
                    findings.fail(
                        "correlation_constraint_failed",
                        f"Correlation {fmt(worst['correlation'])} with {worst['strategy_id']} exceeds max {fmt(self.correlation_max)}",
                    )
        if self.hysteresis is not None:
            band = self.hysteresis
            active = bool(context.previously_active)
            value = number(get_path(metrics, band.path))
            bound = band.exit if active else band.enter
            details["hysteresis"] = {
                "metric": band.path,
                "value": value,
                "previously_active": active,
                "mode": "exit" if active else "enter",
                "threshold": bound,
            }
            if value is None:
                findings.missing_metric(band.path, "risk_metrics_missing", threshold="hysteresis")
            elif value < bound:
                if active:
                    findings.fail("hysteresis_exit", f"{band.path} {fmt(value)} below hysteresis exit {fmt(bound)}")
                else:
                    findings.fail("hysteresis_not_entered", f"{band.path} {fmt(value)} below hysteresis enter {fmt(bound)}")
        details["thresholds"] = self._thresholds_detail(findings)
        configured = bool(self.thresholds) or self.correlation_max is not None or self.hysteresis is not None
        if not configured:
            return findings.result(self, "risk_constraints_not_configured", "No risk constraints configured", details)
        return findings.result(self, "risk_constraints_ok", "Risk constraints satisfied", details)


def run_rule(rule: CoreRule, metrics: Mapping[str, Any], context: Any) -> RuleResult:
    """``rule.evaluate`` with errors contained: an exception becomes a ``rule_error`` result,
    ``fail`` or ``warn`` per the rule's ``on_error``, with ``details.error`` = repr(exception)."""
    try:
        return rule.evaluate(metrics, context)
    except Exception as exc:  # noqa: BLE001 - a raising rule must never abort the evaluation
        return RuleResult(
            status="fail" if rule.on_error == "fail" else "warn",
            severity=rule.severity,  # type: ignore[arg-type]
            owner=rule.owner,  # type: ignore[arg-type]
            reason_code="rule_error",
            reason=str(exc) or type(exc).__name__,
            tags=rule.tags,
            details={"error": repr(exc)},
        )


# --------------------------------------------------------------------------------------------
# Building the rules of a profile


def resolve_severity(policy: Policy, rule: str, override: str | None, tier: str | None) -> str:
    """Default severity (robustness blocking in a high-tier world), then the profile override.

    In a high-tier client-critical world an override can only make a core rule stricter.
    """
    default = DEFAULT_SEVERITY[rule]
    if rule == "robustness" and tier == "high":
        default = "blocking"
    if override is None:
        return default
    if policy.fail_closed and _STRICTNESS[override] < _STRICTNESS[default]:
        return default
    return override


def _section(profile: ValidationProfile | None, rule: str) -> Any:
    return None if profile is None else getattr(profile, PROFILE_SECTION[rule])


def _profile_thresholds(profile: ValidationProfile | None, name: str | None) -> dict[str, tuple[str, ThresholdCheck]]:
    """Thresholds generated by a profile's sections, keyed by metric leaf, with their rule."""
    out: dict[str, tuple[str, ThresholdCheck]] = {}
    if profile is None:
        return out
    base = f"validation_profiles.{name}"

    def add(rule: str, key: str, path: str, section: str, setting: str, value: float | None, bound: str) -> None:
        if value is None:
            return
        breach = "dsr_below_min" if path == _DSR_PATH else _BREACH_CODE[rule]
        missing = "dsr_missing" if path == _DSR_PATH else _MISSING_CODE[rule]
        out[key] = (
            rule,
            ThresholdCheck(
                key=key,
                path=path,
                min=value if bound == "min" else None,
                max=value if bound == "max" else None,
                source=f"{base}.{section}.{setting}",
                breach_code=breach,
                missing_code=missing,
            ),
        )

    if profile.sample is not None:
        s = profile.sample
        add("sample", "effective_history_years", "sample.effective_history_years", "sample", "min_effective_years", s.min_effective_years, "min")
        add("sample", "n_trades_total", "sample.n_trades_total", "sample", "min_trades_total", s.min_trades_total, "min")
    if profile.performance is not None:
        p = profile.performance
        add("performance", "sharpe", "returns.sharpe", "performance", "sharpe_min", p.sharpe_min, "min")
        add("performance", "max_drawdown", "returns.max_drawdown", "performance", "max_dd_max", p.max_dd_max, "max")
        add("performance", "gain_to_pain_ratio", "returns.gain_to_pain_ratio", "performance", "gain_to_pain_min", p.gain_to_pain_min, "min")
    if profile.robustness is not None:
        add("robustness", "deflated_sharpe_ratio", _DSR_PATH, "robustness", "dsr_min", profile.robustness.dsr_min, "min")
    if profile.risk is not None:
        r = profile.risk
        add("risk_constraint", "adv_utilization_p95", "risk.adv_utilization_p95", "risk", "adv_utilization_p95_max", r.adv_utilization_p95_max, "max")
        add("risk_constraint", "participation_rate_p95", "risk.participation_rate_p95", "risk", "participation_rate_p95_max", r.participation_rate_p95_max, "max")
        add("risk_constraint", "incremental_var_99", "risk.incremental_var_99", "risk", "incremental_var_99_max", r.incremental_var_99_max, "max")
        add("risk_constraint", "capacity_estimate_base", "risk.capacity_estimate_base", "risk", "capacity_estimate_base_min", r.capacity_estimate_base_min, "min")
    return out


def _selection_threshold(key: str, threshold: Threshold) -> tuple[str, ThresholdCheck]:
    metric = threshold.metric or key
    rule = _CLASS_TO_RULE[classify_metric(metric)]
    path = resolve_metric_path(metric)
    is_dsr = path == _DSR_PATH
    return rule, ThresholdCheck(
        key=key,
        path=path,
        min=threshold.min,
        max=threshold.max,
        source=f"selection.thresholds.{key}",
        breach_code="dsr_below_min" if is_dsr else _BREACH_CODE[rule],
        missing_code="dsr_missing" if is_dsr else _MISSING_CODE[rule],
    )


def build_core_rules(policy: Policy, profile_name: str | None, *, tier: str | None = None) -> tuple[CoreRule, ...]:
    """The five core rules of ``policy`` under ``profile_name`` (None: selection settings only).

    ``tier`` is the world's effective risk tier (:meth:`Policy.effective_tier`). The
    ``validation`` knobs are the effective ones (fail/fail in a high-tier client-critical world).
    """
    profile = policy.profile(profile_name)
    validation = policy.effective_validation
    merged: dict[str, tuple[str, ThresholdCheck]] = {
        key: _selection_threshold(key, t) for key, t in policy.selection.thresholds.items()
    }
    merged.update(_profile_thresholds(profile, profile_name))
    by_rule: dict[str, list[ThresholdCheck]] = {rule: [] for rule in DEFAULT_SEVERITY}
    for rule, chk in merged.values():
        by_rule[rule].append(chk)

    def common(rule: str) -> dict[str, Any]:
        section = _section(profile, rule)
        return {
            "severity": resolve_severity(policy, rule, getattr(section, "severity", None), tier),
            "owner": getattr(section, "owner", None) or DEFAULT_OWNER[rule],
            "on_missing_metric": validation.on_missing_metric,
            "on_error": validation.on_error,
            "thresholds": tuple(by_rule[rule]),
        }

    selection = policy.selection
    data_currency = _section(profile, "data_currency")
    sample = _section(profile, "sample")
    robustness = _section(profile, "robustness")
    top_k = selection.top_k
    hysteresis = selection.hysteresis
    return (
        DataCurrencyRule(
            **common("data_currency"),
            max_lag=getattr(data_currency, "max_lag", None),
            min_history=getattr(data_currency, "min_history", None),
        ),
        SampleRule(**common("sample"), require_high_vol_regime=bool(getattr(sample, "require_high_vol_regime", False))),
        PerformanceRule(
            **common("performance"),
            top_k=None if top_k is None else TopKCheck(top_k.metric, resolve_metric_path(top_k.metric), top_k.k),
        ),
        RiskConstraintRule(
            **common("risk_constraint"),
            correlation_max=None if selection.correlation is None else selection.correlation.max,
            hysteresis=None
            if hysteresis is None
            else HysteresisCheck(hysteresis.metric, resolve_metric_path(hysteresis.metric), hysteresis.enter, hysteresis.exit),
        ),
        RobustnessRule(**common("robustness"), cv_sharpe_gap_max=getattr(robustness, "cv_sharpe_gap_max", None)),
    )
