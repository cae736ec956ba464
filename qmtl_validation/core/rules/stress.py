"""The ``stress`` layer: per-scenario drawdown / VaR / ES limits and scenario P&L (SPEC §7, §8).

Where the scenario figures come from (most specific first, one source per scenario):

1. the risk snapshot's entry for the run's strategy — ``stress: {strategy: {scenario: {...}}}``
   or ``stress: {strategies: {strategy: {scenario: {...}}}}``;
2. the run's own metrics, ``metrics["stress"][scenario]``;
3. the snapshot's world-level entry — ``stress: {scenario: {...}}`` — which describes the whole
   book and applies to every strategy in it.

A scenario entry holds ``max_drawdown`` (or ``dd_max``), ``var_99`` and ``es_99``: loss fractions
compared by absolute value (a producer may report losses negative) against the policy's
``stress.scenarios.<name>.{dd_max, var_99, es_99}``, inclusive. A missing figure follows
``on_missing_metric``.

Shocks (optional, world-level): ``stress.<scenario>.shocks: {strategy: return}`` gives each
strategy's simple return in the scenario. :func:`stress_scenario_pnl` turns them into the
weighted portfolio's scenario P&L, Σ w_i·shock_i over the weighted strategies that have a shock
(``covered_weight`` and ``missing_shocks`` say what was left out — never read as 0). For a
portfolio candidate entering at α_c the P&L with it is (1 − α_c)·P&L + α_c·shock_c. The P&L is
evidence in ``details.scenario_pnl``; it is not compared with a limit.

Reason codes (QMTL's, reference §2.3): ``stress_ok``, ``<scenario>_dd_missing``,
``<scenario>_dd_exceeds_max``, ``<scenario>_es_missing``, ``<scenario>_es_exceeds_max``,
``<scenario>_var_missing``, ``<scenario>_var_exceeds_max``, ``missing_metric_ignored``,
``rule_error``. ``reason_code`` is the first failure, else the first warning. Default severity
info, owner ops: a stress breach alone only makes the summary ``warn``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd

from qmtl_validation.core.rules.base import RuleResult
from qmtl_validation.core.rules.core_rules import CoreRule, Findings, fmt, number

# Keys that mark a mapping as one scenario's entry (rather than a strategy's block of scenarios).
SCENARIO_FIELDS = ("max_drawdown", "dd_max", "var_99", "es_99", "shocks")

# (limit name in the policy, figure name in the entry, fallback figure name, reason-code stem)
_CHECKS = (
    ("dd_max", "max_drawdown", "dd_max", "dd"),
    ("es_99", "es_99", None, "es"),
    ("var_99", "var_99", None, "var"),
)


@dataclass(frozen=True)
class ScenarioLimits:
    """Maxima of one scenario (None = not checked)."""

    dd_max: float | None = None
    var_99: float | None = None
    es_99: float | None = None


def split_stress(stress: Mapping[str, Any] | None) -> tuple[dict[str, Mapping[str, Any]], dict[str, Mapping[str, Any]]]:
    """A snapshot's ``stress`` block as (world-level scenarios, per-strategy scenario blocks).

    A top-level value holding any of :data:`SCENARIO_FIELDS` (or empty) is a world-level
    scenario; ``strategies`` holds per-strategy blocks; any other mapping is the block of the
    strategy named by its key. Raises ValueError for a value that is not a mapping.
    """
    world: dict[str, Mapping[str, Any]] = {}
    per_strategy: dict[str, Mapping[str, Any]] = {}
    if stress is None:
        return world, per_strategy
    if not isinstance(stress, Mapping):
        raise ValueError("snapshot stress must be a mapping")
    for key, value in stress.items():
        if not isinstance(value, Mapping):
            raise ValueError(f"stress.{key} must be a mapping")
        if key == "strategies":
            for strategy, block in value.items():
                if not isinstance(block, Mapping):
                    raise ValueError(f"stress.strategies.{strategy} must be a mapping")
                per_strategy[str(strategy)] = block
        elif not value or any(f in value for f in SCENARIO_FIELDS):
            world[str(key)] = value
        else:
            per_strategy[str(key)] = value
    return world, per_strategy


def stress_scenario_pnl(stress: Mapping[str, Any] | None, weights: Mapping[str, float]) -> dict[str, dict[str, Any]]:
    """Scenario P&L of the weighted portfolio for every world-level scenario that has ``shocks``.

    Returns ``{scenario: {"portfolio_pnl", "covered_weight", "missing_shocks", "shocks"}}``:
    ``portfolio_pnl`` = Σ w_i·shock_i over the strategies with a non-zero weight and a shock (a
    simple return, negative = loss; None when no weighted strategy has a shock);
    ``covered_weight`` = Σ|w_i| of those / Σ|w_i|; ``missing_shocks`` the weighted strategies
    without one; ``shocks`` the scenario's shocks as floats. All scenarios in one matrix product.
    Raises ValueError for a shock that is not a finite number.
    """
    world, _ = split_stress(stress)
    shocked = {name: entry["shocks"] for name, entry in world.items() if entry.get("shocks") is not None}
    if not shocked:
        return {}
    for name, shocks in shocked.items():
        if not isinstance(shocks, Mapping):
            raise ValueError(f"stress.{name}.shocks must be a mapping of strategy to return")
        for strategy, value in shocks.items():
            if number(value) is None:
                raise ValueError(f"stress.{name}.shocks.{strategy} must be a finite number, got {value!r}")
    names = list(shocked)
    frame = pd.DataFrame.from_dict(
        {name: {str(k): float(v) for k, v in shocks.items()} for name, shocks in shocked.items()},
        orient="index",
        dtype="float64",
    ).reindex(index=names)
    w = pd.Series({str(k): float(v) for k, v in weights.items()}, dtype="float64")
    w = w[w != 0]
    held = list(w.index)
    values = frame.reindex(columns=held).to_numpy(dtype=np.float64)
    covered = np.isfinite(values)
    weight = w.to_numpy()
    total = float(np.abs(weight).sum())
    pnl = np.where(covered, values, 0.0) @ weight
    covered_weight = (covered * np.abs(weight)).sum(axis=1) / total if total > 0 else np.zeros(len(names))
    out: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(names):
        out[name] = {
            "portfolio_pnl": float(pnl[i]) if covered[i].any() else None,
            "covered_weight": float(covered_weight[i]),
            "missing_shocks": [held[j] for j in np.flatnonzero(~covered[i]).tolist()],
            "shocks": {k: float(v) for k, v in shocked[name].items()},
        }
    return out


@dataclass(frozen=True)
class StressContext:
    """What the stress rule reads for one run.

    - ``strategy_id``: the run's strategy (selects the per-strategy snapshot entry and shock).
    - ``snapshot_stress``: the snapshot's ``stress`` block (None without a snapshot).
    - ``scenario_pnl``: :func:`stress_scenario_pnl` of the snapshot (computed once per world).
    - ``candidate_weight``: α_c when the run is a portfolio candidate (adds the P&L with it).
    - ``snapshot``: provenance for the details (``version``, ``as_of``, ``stale``, ...).
    - ``error``: a failure computing the world's P&L; raised so it becomes ``rule_error``.
    """

    strategy_id: str | None = None
    snapshot_stress: Mapping[str, Any] | None = None
    scenario_pnl: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    candidate_weight: float | None = None
    snapshot: Mapping[str, Any] | None = None
    error: str | None = None


def _resolve(
    scenario: str,
    strategy_block: Mapping[str, Any] | None,
    metrics_block: Any,
    world: Mapping[str, Mapping[str, Any]],
) -> tuple[Mapping[str, Any] | None, str | None]:
    for source, block in (("snapshot_strategy", strategy_block), ("metrics", metrics_block), ("snapshot_world", world)):
        if isinstance(block, Mapping) and isinstance(block.get(scenario), Mapping):
            return block[scenario], source
    return None, None


@dataclass(frozen=True)
class StressRule(CoreRule):
    """Per-scenario maxima of |drawdown|, |VaR 99 %| and |ES 99 %| (module docstring)."""

    severity: str = "info"
    owner: str = "ops"
    on_missing_metric: str = "fail"
    on_error: str = "fail"
    scenarios: Mapping[str, ScenarioLimits] = field(default_factory=dict)

    name = "stress"
    default_severity = "info"
    default_owner = "ops"

    def config(self) -> dict[str, Any]:
        out = super().config()
        out["scenarios"] = {
            name: {"dd_max": s.dd_max, "var_99": s.var_99, "es_99": s.es_99} for name, s in self.scenarios.items()
        }
        return out

    def evaluate(self, metrics: Mapping[str, Any], context: StressContext) -> RuleResult:
        if context.error is not None:
            raise ValueError(context.error)
        world, per_strategy = split_stress(context.snapshot_stress)
        strategy_block = per_strategy.get(context.strategy_id) if context.strategy_id is not None else None
        metrics_block = metrics.get("stress") if isinstance(metrics, Mapping) else None
        findings = Findings(self.on_missing_metric)
        evidence: dict[str, Any] = {}
        for name, limits in self.scenarios.items():
            entry, source = _resolve(name, strategy_block, metrics_block, world)
            row: dict[str, Any] = {"source": source}
            for limit_key, figure, fallback, stem in _CHECKS:
                raw = None
                if entry is not None:
                    raw = entry.get(figure)
                    if raw is None and fallback is not None:
                        raw = entry.get(fallback)
                value = number(raw)
                value = None if value is None else abs(value)
                row[figure] = value
                bound = getattr(limits, limit_key)
                if bound is None:
                    continue
                path = f"stress.{name}.{figure}"
                if value is None:
                    findings.missing_metric(path, f"{name}_{stem}_missing", threshold=f"{name}.{limit_key}")
                elif value > bound:
                    findings.violations.append(
                        {"threshold": f"{name}.{limit_key}", "metric": path, "reason": "above_max", "value": value, "max": bound}
                    )
                    findings.fail(f"{name}_{stem}_exceeds_max", f"{path} {fmt(value)} above maximum {fmt(bound)}")
            row["limits"] = {"dd_max": limits.dd_max, "var_99": limits.var_99, "es_99": limits.es_99}
            evidence[name] = row
        details: dict[str, Any] = {
            "scenarios": evidence,
            "scenario_pnl": self._pnl(context),
            "snapshot": None if context.snapshot is None else dict(context.snapshot),
        }
        reason = "Stress limits satisfied" if self.scenarios else "No stress limits configured"
        return findings.result(self, "stress_ok", reason, details)

    @staticmethod
    def _pnl(context: StressContext) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, entry in context.scenario_pnl.items():
            shock = (entry.get("shocks") or {}).get(context.strategy_id) if context.strategy_id else None
            pnl = entry.get("portfolio_pnl")
            row = {
                "portfolio_pnl": pnl,
                "covered_weight": entry.get("covered_weight"),
                "missing_shocks": list(entry.get("missing_shocks") or ()),
                "strategy_shock": shock,
            }
            a = context.candidate_weight
            if a is not None and shock is not None and pnl is not None:
                row["pnl_with_candidate"] = (1 - a) * pnl + a * shock
                row["candidate_weight"] = a
            out[name] = row
        return out
