"""Validation health: how much of the v1 core a run's metrics and rule results cover (SPEC §5)."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

# The twelve v1 core metric paths; metric_coverage_ratio is the share of them that are non-null.
CORE_METRIC_PATHS: tuple[str, ...] = (
    "returns.sharpe",
    "returns.max_drawdown",
    "returns.gain_to_pain_ratio",
    "returns.time_under_water_ratio",
    "sample.effective_history_years",
    "sample.n_trades_total",
    "sample.n_trades_per_year",
    "risk.adv_utilization_p95",
    "risk.participation_rate_p95",
    "robustness.deflated_sharpe_ratio",
    "robustness.sharpe_first_half",
    "robustness.sharpe_second_half",
)

# The five core rules every run is evaluated with; rules_executed_ratio counts against them.
CORE_RULE_NAMES: tuple[str, ...] = (
    "data_currency",
    "sample",
    "performance",
    "risk_constraint",
    "robustness",
)


def get_path(nested: Mapping[str, Any], dotted: str) -> Any:
    """Value at ``a.b.c`` in nested mappings, or None when any level is missing."""
    node: Any = nested
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def metric_coverage_ratio(metrics: Mapping[str, Any]) -> float:
    present = sum(1 for path in CORE_METRIC_PATHS if get_path(metrics, path) is not None)
    return present / len(CORE_METRIC_PATHS)


def validation_health(
    metrics: Mapping[str, Any], results: Mapping[str, Mapping[str, Any]] | Iterable[Any]
) -> dict[str, float | int]:
    """The ``diagnostics.validation_health`` block for a run's metrics and rule results.

    ``results`` maps rule name to a RuleResult or its dict. ``rules_executed_ratio`` is the share
    of the five core rules that produced a result; ``validation_error_count`` counts results whose
    reason_code is ``rule_error``.
    """
    items = dict(results) if isinstance(results, Mapping) else {}
    executed = sum(1 for name in CORE_RULE_NAMES if name in items)

    def reason_code(result: Any) -> str:
        code = result.get("reason_code") if isinstance(result, Mapping) else result.reason_code
        return str(code or "").lower()

    return {
        "metric_coverage_ratio": metric_coverage_ratio(metrics),
        "rules_executed_ratio": executed / len(CORE_RULE_NAMES),
        "validation_error_count": sum(1 for r in items.values() if reason_code(r) == "rule_error"),
    }
