"""The ``benchmark`` layer: Sharpe uplift over the run's benchmark (SPEC §7).

Reads ``benchmark.vs_benchmark_sharpe`` of the run's metrics (= ``returns.sharpe`` −
``benchmark.sharpe``, both annualised over the run's own periods; present only for runs given
``benchmark_ret``) and requires it to be at least ``min_vs_benchmark_sharpe`` (inclusive). A run
without a benchmark has the figure missing and follows ``on_missing_metric``.

Reason codes (QMTL's, reference §2.3): ``benchmark_ok``, ``benchmark_uplift_missing``,
``benchmark_uplift_below_min``, ``missing_metric_ignored``, ``rule_error``. Default severity
soft, owner quant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from qmtl_validation.core.rules.base import RuleResult
from qmtl_validation.core.rules.core_rules import CoreRule, Findings, ThresholdCheck

UPLIFT_PATH = "benchmark.vs_benchmark_sharpe"


@dataclass(frozen=True)
class BenchmarkRule(CoreRule):
    """``benchmark.vs_benchmark_sharpe`` ≥ ``min_vs_benchmark_sharpe`` (module docstring).

    ``context`` is not read (anything, e.g. None, may be passed).
    """

    severity: str = "soft"
    owner: str = "quant"
    on_missing_metric: str = "fail"
    on_error: str = "fail"
    thresholds: tuple[ThresholdCheck, ...] = ()

    name = "benchmark"
    default_severity = "soft"
    default_owner = "quant"

    def evaluate(self, metrics: Mapping[str, Any], context: Any = None) -> RuleResult:
        findings = Findings(self.on_missing_metric)
        for chk in self.thresholds:
            findings.check(chk, metrics)
        details: dict[str, Any] = {"thresholds": self._thresholds_detail(findings)}
        reason = "Benchmark uplift satisfied" if self.thresholds else "No benchmark requirement configured"
        return findings.result(self, "benchmark_ok", reason, details)


def benchmark_thresholds(min_vs_benchmark_sharpe: float | None, source: str = "benchmark") -> tuple[ThresholdCheck, ...]:
    """The check of a ``benchmark`` block; ``source`` is its YAML path."""
    if min_vs_benchmark_sharpe is None:
        return ()
    return (
        ThresholdCheck(
            key="min_vs_benchmark_sharpe",
            path=UPLIFT_PATH,
            min=min_vs_benchmark_sharpe,
            max=None,
            source=f"{source}.min_vs_benchmark_sharpe",
            breach_code="benchmark_uplift_below_min",
            missing_code="benchmark_uplift_missing",
        ),
    )
