"""``qmtl-validation evaluate``: validate one run bundle under a policy file, no Dagster needed.

    qmtl-validation evaluate --bundle runs/2024-05-01/w/s/r1 --policy policies/w/3.yaml [--stage paper]

Loads the bundle (``returns.parquet|csv``, optional trades, ``run.json``; SPEC §3), computes its
metrics with the policy's annualisation, evaluates them at ``--stage`` (default: the run's own
stage) and prints one JSON document::

    {"world_id", "strategy_id", "run_id", "stage", "metrics": {...},
     "validation": {...}, "summary": {"status", "recommended_stage"}}

The data lag is measured from the last return date (covering its whole day) to ``submitted_at``.
``metrics.diagnostics.validation_health`` is filled in from the rule results. Exit code 0 when
the evaluation ran (whatever its outcome), 1 for a bad bundle or policy; with
``--check``, also 1 when the summary status is ``fail``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from qmtl_validation.core.bundles import load_bundle
from qmtl_validation.core.evaluation import evaluate_run
from qmtl_validation.core.health import validation_health
from qmtl_validation.core.policy import Policy, load_policy


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="compute metrics for one run bundle and evaluate them under a policy (JSON out)",
        description="Compute one run bundle's metrics and evaluate them under a policy file.",
    )
    parser.add_argument("--bundle", required=True, metavar="DIR", help="run bundle folder")
    parser.add_argument("--policy", required=True, metavar="FILE", help="policy YAML file")
    parser.add_argument("--stage", help="stage to evaluate at (default: the stage in run.json)")
    parser.add_argument("--compact", action="store_true", help="print the JSON on one line")
    parser.add_argument("--check", action="store_true", help="exit 1 when the summary status is fail")
    parser.set_defaults(handler=run)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def bundle_metrics(bundle: Any, policy: Policy) -> Any:
    """The bundle's ``EvaluationMetrics`` under the policy's annualisation and risk-free rate."""
    from qmtl_validation.core.metrics import compute_metrics

    manifest = bundle.manifest
    return compute_metrics(
        bundle.returns,
        bundle.trades,
        periods_per_year=policy.annualization.periods_per_year,
        risk_free_rate=policy.annualization.risk_free_rate,
        search_intensity=manifest.search_intensity,
        trial_sharpes=list(manifest.trial_sharpes) if manifest.trial_sharpes is not None else None,
        complexity=dict(manifest.complexity) or None,
        extra_metrics=dict(manifest.extra_metrics) or None,
        capital=manifest.capital,
        benchmark_returns=bundle.benchmark,
        returns_source=manifest.returns_source,
    )


def with_validation_health(metrics: dict[str, Any], result: Any) -> dict[str, Any]:
    """``metrics`` with ``diagnostics.validation_health`` computed from the rule results (the
    metrics engine leaves the rule-dependent parts null until rules have run)."""
    diagnostics = metrics.setdefault("diagnostics", {})
    diagnostics["validation_health"] = validation_health(metrics, result.results)
    notes = diagnostics.get("metric_notes")
    if isinstance(notes, dict):
        for key in [k for k in notes if k.startswith("diagnostics.validation_health.")]:
            del notes[key]
    return metrics


def run(args: argparse.Namespace) -> int:
    policy = load_policy(args.policy)
    bundle = load_bundle(args.bundle)
    manifest = bundle.manifest
    metrics = bundle_metrics(bundle, policy)
    returns = bundle.returns
    data_end = returns.index[-1].date() if len(returns) else None
    stage = args.stage or manifest.stage
    result = evaluate_run(
        metrics,
        policy,
        stage,
        submitted_at=manifest.submitted_at,
        data_end=data_end,
        risk_tier=manifest.risk_tier,
        strategy_id=manifest.strategy_id,
    )
    document = {
        "world_id": manifest.world_id,
        "strategy_id": manifest.strategy_id,
        "run_id": manifest.run_id,
        "stage": result.stage,
        "metrics": with_validation_health(metrics.to_dict(), result),
        **result.to_dict(),
    }
    print(json.dumps(document, indent=None if args.compact else 2, default=_json_default, allow_nan=False))
    return 1 if args.check and result.status == "fail" else 0
