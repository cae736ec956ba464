"""Rules for one run, metrics given: ``evaluate_run`` latency, p95 over many evaluations.

Inputs are what the ``rule_results`` asset passes: a run's nested metrics (as stored, a dict),
its world's policy, its stage and the context keys the asset sets (``now``, ``submitted_at``,
``data_end``, ``policy_version``, ``risk_tier``). The metrics come from the engine on a fixed-seed
panel with runs of different lengths (short runs fail the sample rule, long ones clear it), and
the evaluations cycle through every sample world's every policy version and the three stages, so
the timed calls cover passing, warning and failing paths and the promotion re-checks of paper and
live runs. Each call is timed on its own (``perf_counter``); the policy's compiled plan is cached
on the policy object after its first use, as it is in a backfill.
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
from typing import Any

from bench.common import Row, percentile, stage, summarise
from bench.data import make_panel

STAGES = ("backtest", "paper", "live")


def _cases(n_runs: int, periods: int) -> tuple[list[dict[str, Any]], list[tuple[Any, str, str]]]:
    from qmtl_validation.core import load_policy
    from qmtl_validation.core.metrics import compute_metrics_panel
    from qmtl_validation.sample_data import WORLDS, render_policy, world_policies

    panel = make_panel(n_runs, periods, seed=7)
    metrics = [m.to_dict() for m in compute_metrics_panel(panel).values()]
    policies = []
    for world in WORLDS:
        for version in sorted(world_policies(world.world_id)):
            policy = load_policy(render_policy(world.world_id, version), version=str(version))
            policies.append((policy, world.tier, world.world_id))
    return metrics, policies


def run(config: Any) -> list[Row]:
    from qmtl_validation.core.evaluation import evaluate_run

    row = Row(
        key="rules_one_run_p95",
        what=f"rules for one run (metrics given), p95 over {config.rule_evaluations:,} evaluations",
        target_text="≤ 1 ms", target=1e-3, comparison="<=", unit="s",
    )
    with stage("rule inputs"):
        metrics, policies = _cases(config.rule_runs, config.periods)
    now = dt.datetime(2026, 11, 27, 12, tzinfo=dt.timezone.utc)
    submitted = now - dt.timedelta(hours=6)
    data_end = (now - dt.timedelta(days=1)).date()
    combos = list(itertools.product(range(len(policies)), STAGES))
    # warm-up: every (policy, stage) plan compiled once, as the first run of a backfill does
    for index, stage_name in combos:
        policy, tier, _ = policies[index]
        evaluate_run(metrics[0], policy, stage_name, now=now, submitted_at=submitted,
                     data_end=data_end, risk_tier=tier)
    samples: list[float] = []
    statuses: dict[str, int] = {}
    with stage(f"{config.rule_evaluations:,} evaluations"):
        for i in range(config.rule_evaluations):
            index, stage_name = combos[i % len(combos)]
            policy, tier, _ = policies[index]
            run_metrics = metrics[(i * 7919) % len(metrics)]
            start = time.perf_counter()
            result = evaluate_run(run_metrics, policy, stage_name, now=now, submitted_at=submitted,
                                  data_end=data_end, risk_tier=tier)
            samples.append(time.perf_counter() - start)
            statuses[result.status] = statuses.get(result.status, 0) + 1
    summary = summarise(samples)
    summary["samples"] = []  # 10,000 numbers add nothing the percentiles do not say
    p95 = percentile(samples, 95)
    row.value = p95
    row.timing = {**summary, "p50": percentile(samples, 50), "p95": p95, "p99": percentile(samples, 99)}
    row.details = {
        "evaluations": len(samples),
        "distinct_metric_sets": len(metrics),
        "policies": [f"{world}@{policy.policy_version}" for policy, _, world in policies],
        "stages": list(STAGES),
        "statuses": statuses,
    }
    return [row]
