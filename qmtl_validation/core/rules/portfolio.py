"""The ``portfolio`` layer: incremental risk and Sharpe uplift of adding a candidate (SPEC §7, §8).

A candidate is a run recommended for paper or live whose strategy carries no weight in the world's
latest risk snapshot; :func:`qmtl_validation.core.extended.evaluate_extended_layers` computes its
figures for all candidates at once and hands each run a :class:`PortfolioContext`.

Inputs (context), all per period in the snapshot's covariance units, positive loss fractions:

- ``incremental_var_99`` / ``incremental_es_99``: Gaussian VaR/ES at 99 % of the portfolio with the
  candidate entering at α_c (existing weights scaled by 1 − α_c) minus the portfolio without it
  (:func:`qmtl_validation.core.portfolio.portfolio_risk`).
- ``portfolio_sharpe_uplift``: annualised portfolio Sharpe with the candidate minus without
  (:func:`portfolio_sharpe_uplift`).

Settings (inclusive bounds): ``max_incremental_var_99``, ``max_incremental_es_99``,
``min_portfolio_sharpe_uplift``. A missing figure follows ``on_missing_metric``.

Stale snapshot: when ``context.snapshot_stale`` and the world is high-tier client-critical
(``fail_closed``), the rule fails closed with ``risk_snapshot_stale`` — severity ``blocking``
whatever the configured severity, because a fail-closed world never lets a stale risk picture
through as a warning. Otherwise a stale snapshot is used as given (normally the conservative
fallback snapshot) and ``details.snapshot`` says so.

Reason codes (QMTL's, reference §2.3, plus ``risk_snapshot_stale``): ``portfolio_ok``,
``incremental_var_missing``, ``incremental_var_exceeds_max``, ``incremental_es_missing``,
``incremental_es_exceeds_max``, ``portfolio_sharpe_uplift_missing``,
``portfolio_sharpe_uplift_below_min``, ``risk_snapshot_stale``, ``missing_metric_ignored``,
``rule_error`` (via ``run_rule``). Default severity soft, owner risk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from qmtl_validation.core.rules.base import RuleResult
from qmtl_validation.core.rules.core_rules import CoreRule, Findings, ThresholdCheck, fmt

VAR_PATH = "incremental_var_99"
ES_PATH = "incremental_es_99"
UPLIFT_PATH = "portfolio_sharpe_uplift"


def portfolio_sharpe_uplift(
    weights: np.ndarray,
    sharpes: np.ndarray,
    volatilities: np.ndarray,
    base_volatility: float,
    candidate_sharpes: np.ndarray,
    candidate_volatilities: np.ndarray,
    with_volatilities: np.ndarray,
    candidate_weight: float,
) -> np.ndarray:
    """Annualised portfolio Sharpe with each candidate minus without it, one value per candidate.

    Each strategy's expected return is implied by its annualised Sharpe S_i and its volatility
    σ_i: μ_i ∝ S_i·σ_i (any common volatility unit works, the unit cancels). Then

    - S_base = Σ w_i·S_i·σ_i / σ_p
    - S_with = ((1 − α_c)·Σ w_i·S_i·σ_i + α_c·S_c·σ_c) / σ_with
    - uplift = S_with − S_base

    with σ_p the portfolio volatility and σ_with the volatility with the candidate at weight α_c
    (existing weights scaled by 1 − α_c, the same mixing as the incremental VaR). ``weights``,
    ``sharpes``, ``volatilities``: held strategies; ``candidate_*`` and ``with_volatilities``:
    one entry per candidate. NaN where a volatility is 0 or an input is NaN.
    """
    exposure = float(np.dot(weights, sharpes * volatilities))
    a = float(candidate_weight)
    with np.errstate(invalid="ignore", divide="ignore"):
        base = exposure / base_volatility if base_volatility > 0 else np.nan
        with_candidate = ((1 - a) * exposure + a * candidate_sharpes * candidate_volatilities) / np.where(
            with_volatilities > 0, with_volatilities, np.nan
        )
    return np.asarray(with_candidate - base, dtype=np.float64)


@dataclass(frozen=True)
class PortfolioContext:
    """What the portfolio rule reads for one candidate run.

    - ``incremental_var_99``, ``incremental_es_99``, ``portfolio_sharpe_uplift``: the figures
      (None = not available; ``notes`` says why).
    - ``snapshot_stale``: the world's risk snapshot is past its freshness SLA.
    - ``snapshot``: provenance for the details (``version``, ``as_of``, ``lag_seconds``,
      ``stale``, ``fallback``, ``previous_version``); None without a snapshot.
    - ``figures``: further evidence for the details (candidate weight α_c, VaR/ES before and with
      the candidate, volatilities, imputed pairs).
    - ``notes``: why a figure is missing.
    - ``error``: a failure computing the world's figures; the rule raises it so that it becomes a
      ``rule_error`` result (``on_error``).
    """

    incremental_var_99: float | None = None
    incremental_es_99: float | None = None
    portfolio_sharpe_uplift: float | None = None
    snapshot_stale: bool = False
    snapshot: Mapping[str, Any] | None = None
    figures: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class PortfolioRule(CoreRule):
    """Incremental VaR/ES maxima and Sharpe-uplift minimum of a portfolio candidate.

    Build with :func:`portfolio_thresholds` for the checks; ``fail_closed`` is the world's
    high-tier client-critical flag (``Policy.fail_closed``).
    """

    severity: str = "soft"
    owner: str = "risk"
    on_missing_metric: str = "fail"
    on_error: str = "fail"
    thresholds: tuple[ThresholdCheck, ...] = ()
    fail_closed: bool = False

    name = "portfolio"
    default_severity = "soft"
    default_owner = "risk"

    def config(self) -> dict[str, Any]:
        out = super().config()
        out["fail_closed"] = self.fail_closed
        return out

    def evaluate(self, metrics: Mapping[str, Any], context: PortfolioContext) -> RuleResult:
        fails_closed = context.snapshot_stale and self.fail_closed
        if context.error is not None and not fails_closed:
            raise ValueError(context.error)
        values = {
            VAR_PATH: context.incremental_var_99,
            ES_PATH: context.incremental_es_99,
            UPLIFT_PATH: context.portfolio_sharpe_uplift,
        }
        details: dict[str, Any] = {
            "snapshot": None if context.snapshot is None else dict(context.snapshot),
            "values": dict(values),
            "figures": dict(context.figures),
            "notes": list(context.notes) + ([context.error] if context.error else []),
        }
        findings = Findings(self.on_missing_metric)
        for chk in self.thresholds:
            findings.check(chk, values)
        details["thresholds"] = self._thresholds_detail(findings)
        snapshot = context.snapshot or {}
        if fails_closed:
            lag = snapshot.get("lag_seconds")
            lag_text = "" if lag is None else f", {fmt(round(float(lag)))}s old"
            # The limits were still checked above so the evidence shows what a fresh picture
            # would be compared with; the verdict is the stale snapshot.
            details["violations"] = findings.violations
            return RuleResult(
                status="fail",
                severity="blocking",
                owner=self.owner,  # type: ignore[arg-type]
                reason_code="risk_snapshot_stale",
                reason=(
                    f"risk snapshot {snapshot.get('version') or '(none)'} is stale{lag_text}; "
                    "the world is high-tier client-critical, so portfolio rules fail closed"
                ),
                tags=self.tags,
                details=details,
            )
        reason = "Portfolio limits satisfied" if self.thresholds else "No portfolio limits configured"
        if context.snapshot_stale:
            used = "the conservative fallback snapshot" if snapshot.get("fallback") else "the stale snapshot as given"
            reason += f" (risk snapshot stale: computed on {used} {snapshot.get('version')})"
        return findings.result(self, "portfolio_ok", reason, details)


def portfolio_thresholds(
    max_incremental_var_99: float | None,
    max_incremental_es_99: float | None,
    min_portfolio_sharpe_uplift: float | None,
    source: str = "portfolio",
) -> tuple[ThresholdCheck, ...]:
    """The checks of a ``portfolio`` block; ``source`` is its YAML path (for the details)."""
    specs = (
        ("max_incremental_var_99", VAR_PATH, None, max_incremental_var_99, "incremental_var_exceeds_max", "incremental_var_missing"),
        ("max_incremental_es_99", ES_PATH, None, max_incremental_es_99, "incremental_es_exceeds_max", "incremental_es_missing"),
        ("min_portfolio_sharpe_uplift", UPLIFT_PATH, min_portfolio_sharpe_uplift, None, "portfolio_sharpe_uplift_below_min", "portfolio_sharpe_uplift_missing"),
    )
    return tuple(
        ThresholdCheck(
            key=key,
            path=path,
            min=low,
            max=high,
            source=f"{source}.{key}",
            breach_code=breach,
            missing_code=missing,
        )
        for key, path, low, high, breach, missing in specs
        if (low if low is not None else high) is not None
    )
