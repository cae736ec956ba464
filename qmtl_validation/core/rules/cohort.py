"""The ``cohort`` layer: a campaign's runs judged together (SPEC §7; multiple testing).

A cohort is the runs of one campaign (same ``campaign_id``) at one stage.
:func:`cohort_contexts` computes, for all of them at once:

- ``median_sharpe``: median of the runs' annualised ``returns.sharpe`` (missing values skipped);
- each run's DSR recomputed against the cohort (Bailey & López de Prado 2014, SPEC §5, through
  :func:`qmtl_validation.core.stats.deflated_sharpe_ratio`): per-period Sharpe SR
  (``returns.sharpe_per_period``), T = ``sample.n_periods``, skewness ``returns.skew``,
  kurtosis ``returns.excess_kurtosis`` + 3; the trials' variance V = sample variance (ddof=1)
  of the per-period Sharpes of the campaign's runs; N = the largest of the campaign size, the
  run's ``diagnostics.search_intensity`` and its ``robustness.dsr_n_trials`` (which already
  counts its ``trial_sharpes``). With fewer than two per-period Sharpes in the cohort V is
  unknown and σ_SR² is used (``variance_source`` says so);
- ``median_dsr``: median of those recomputed DSRs;
- ``rank``: 1-based rank by ``returns.sharpe``, descending; ties share the best rank (1, 2, 2, 4)
  and a run without a Sharpe has none.

Rule settings (inclusive): ``sharpe_median_min``, ``dsr_median_min``, ``top_k`` (rank ≤ k).

Reason codes (QMTL's, reference §2.3): ``cohort_ok``, ``median_sharpe_missing``,
``cohort_median_sharpe_below_min``, ``median_dsr_missing``, ``cohort_median_dsr_below_min``,
``top_k_unavailable`` (the run has no Sharpe to rank), ``cohort_top_k_exceeded``,
``missing_metric_ignored``, ``rule_error``. Missing figures follow ``on_missing_metric``.
Default severity soft, owner risk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from qmtl_validation.core import stats
from qmtl_validation.core.health import get_path
from qmtl_validation.core.rules.base import RuleResult
from qmtl_validation.core.rules.core_rules import CoreRule, Findings, ThresholdCheck, number


@dataclass(frozen=True)
class CohortContext:
    """One run's standing in its cohort (see :func:`cohort_contexts`)."""

    campaign_id: str | None = None
    stage: str | None = None
    size: int = 1
    median_sharpe: float | None = None
    median_dsr: float | None = None
    rank: int | None = None
    sharpe: float | None = None
    deflated_sharpe_ratio: float | None = None
    n_trials: int | None = None
    trials_sharpe_variance: float | None = None
    variance_source: str = "cohort"
    notes: tuple[str, ...] = field(default_factory=tuple)


def _column(batch: Sequence[Mapping[str, Any]], path: str) -> np.ndarray:
    values = [number(get_path(m, path)) for m in batch]
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def cohort_contexts(
    batch: Sequence[Mapping[str, Any]],
    *,
    campaign_id: str | None = None,
    stage: str | None = None,
) -> list[CohortContext]:
    """The :class:`CohortContext` of every run of one cohort, in ``batch`` order.

    ``batch``: the runs' nested metrics (SPEC §5). Everything is computed in array form over the
    cohort (one DSR call for all runs); see the module docstring for the definitions.
    """
    size = len(batch)
    if size == 0:
        return []
    sharpe = _column(batch, "returns.sharpe")
    per_period = _column(batch, "returns.sharpe_per_period")
    n_obs = _column(batch, "sample.n_periods")
    skew = _column(batch, "returns.skew")
    kurtosis = _column(batch, "returns.excess_kurtosis") + 3.0
    search = _column(batch, "diagnostics.search_intensity")
    counted = _column(batch, "robustness.dsr_n_trials")
    n_trials = np.nanmax(np.vstack([np.full(size, float(size)), search, counted]), axis=0)

    known = per_period[np.isfinite(per_period)]
    notes: list[str] = []
    if known.size >= 2:
        variance: float | None = float(np.var(known, ddof=1))
        source = "cohort"
    else:
        variance = None
        source = "sharpe_estimator"
        notes.append(
            "fewer than 2 per-period Sharpe ratios in the cohort: the trials' variance is unknown, "
            "sigma_SR^2 of each run is used instead"
        )
    dsr = np.asarray(
        stats.deflated_sharpe_ratio(per_period, n_obs, skew, kurtosis, n_trials, variance), dtype=np.float64
    )
    finite_sharpe = sharpe[np.isfinite(sharpe)]
    finite_dsr = dsr[np.isfinite(dsr)]
    median_sharpe = float(np.median(finite_sharpe)) if finite_sharpe.size else None
    median_dsr = float(np.median(finite_dsr)) if finite_dsr.size else None
    ranks = pd.Series(sharpe).rank(ascending=False, method="min").to_numpy()
    return [
        CohortContext(
            campaign_id=campaign_id,
            stage=stage,
            size=size,
            median_sharpe=median_sharpe,
            median_dsr=median_dsr,
            rank=int(ranks[i]) if np.isfinite(ranks[i]) else None,
            sharpe=_finite(sharpe[i]),
            deflated_sharpe_ratio=_finite(dsr[i]),
            n_trials=int(n_trials[i]),
            trials_sharpe_variance=variance,
            variance_source=source,
            notes=tuple(notes)
            + (() if np.isfinite(dsr[i]) else ("DSR undefined for this run (needs per-period Sharpe, n_periods >= 4, skew and kurtosis)",)),
        )
        for i in range(size)
    ]


@dataclass(frozen=True)
class CohortRule(CoreRule):
    """Campaign median Sharpe / median DSR floors and the top-k cut (module docstring)."""

    severity: str = "soft"
    owner: str = "risk"
    on_missing_metric: str = "fail"
    on_error: str = "fail"
    thresholds: tuple[ThresholdCheck, ...] = ()
    top_k: int | None = None

    name = "cohort"
    default_severity = "soft"
    default_owner = "risk"

    def config(self) -> dict[str, Any]:
        out = super().config()
        out["top_k"] = self.top_k
        return out

    def evaluate(self, metrics: Mapping[str, Any], context: CohortContext) -> RuleResult:
        values = {"median_sharpe": context.median_sharpe, "median_dsr": context.median_dsr}
        findings = Findings(self.on_missing_metric)
        for chk in self.thresholds:
            findings.check(chk, values)
        if self.top_k is not None:
            if context.rank is None:
                findings.missing_metric("returns.sharpe", "top_k_unavailable", threshold="top_k")
            elif context.rank > self.top_k:
                findings.violations.append(
                    {"threshold": "top_k", "metric": "returns.sharpe", "reason": "rank_outside_top_k", "value": context.rank, "max": self.top_k}
                )
                findings.fail(
                    "cohort_top_k_exceeded",
                    f"rank {context.rank} of {context.size} in campaign {context.campaign_id} outside top_k={self.top_k}",
                )
        details: dict[str, Any] = {
            "campaign_id": context.campaign_id,
            "stage": context.stage,
            "size": context.size,
            "median_sharpe": context.median_sharpe,
            "median_dsr": context.median_dsr,
            "rank": context.rank,
            "top_k": self.top_k,
            "sharpe": context.sharpe,
            "deflated_sharpe_ratio": context.deflated_sharpe_ratio,
            "n_trials": context.n_trials,
            "trials_sharpe_variance": context.trials_sharpe_variance,
            "variance_source": context.variance_source,
            "notes": list(context.notes),
            "thresholds": self._thresholds_detail(findings),
        }
        configured = bool(self.thresholds) or self.top_k is not None
        reason = "Cohort requirements met" if configured else "No cohort requirements configured"
        return findings.result(self, "cohort_ok", reason, details)


def cohort_thresholds(
    sharpe_median_min: float | None, dsr_median_min: float | None, source: str = "cohort"
) -> tuple[ThresholdCheck, ...]:
    """The median checks of a ``cohort`` block; ``source`` is its YAML path."""
    specs = (
        ("sharpe_median_min", "median_sharpe", sharpe_median_min, "cohort_median_sharpe_below_min", "median_sharpe_missing"),
        ("dsr_median_min", "median_dsr", dsr_median_min, "cohort_median_dsr_below_min", "median_dsr_missing"),
    )
    return tuple(
        ThresholdCheck(key=key, path=path, min=bound, max=None, source=f"{source}.{key}", breach_code=breach, missing_code=missing)
        for key, path, bound, breach, missing in specs
        if bound is not None
    )
