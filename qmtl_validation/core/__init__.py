"""Public Python API of the pure domain core (SPEC §10).

Nothing in ``qmtl_validation.core`` imports dagster. Names resolve lazily so that importing one
submodule does not pull in the others (pandera, scipy and yaml are not free to import).
"""

from __future__ import annotations

from qmtl_validation._lazy import lazy_exports

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

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
