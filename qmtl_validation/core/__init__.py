"""Public Python API of the pure domain core (SPEC §10).

Nothing in ``qmtl_validation.core`` imports dagster. Names resolve lazily so that importing one
submodule does not pull in the others (pandera, scipy and yaml are not free to import).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "EvaluationMetrics": "metrics",
    "compute_metrics": "metrics",
    "compute_metrics_panel": "metrics",
    "probabilistic_sharpe_ratio": "stats",
    "deflated_sharpe_ratio": "stats",
    "Policy": "policy",
    "PolicyError": "policy",
    "load_policy": "policy",
    "EvaluationResult": "evaluation",
    "evaluate_run": "evaluation",
    "RuleResult": "rules.base",
    "SnapshotContractError": "snapshot",
    "validate_snapshot": "snapshot",
    "portfolio_risk": "portfolio",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module_name}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
