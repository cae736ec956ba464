"""The ``paper_shadow_consistency`` layer: a paper run against its strategy's backtest (SPEC §7).

Applies only to runs whose stage is listed in ``stages`` (default ``paper``, ``shadow``). The
baseline is the latest backtest run of the same strategy (chosen by
:func:`qmtl_validation.core.extended.evaluate_extended_layers`). Ratios, paper over backtest:

- ``sharpe_ratio`` = paper ``returns.sharpe`` / backtest ``returns.sharpe``, defined when the
  backtest Sharpe is positive (a ratio to a non-positive expectation has no consistency meaning);
- ``drawdown_ratio``, ``var_p01_ratio``, ``es_p01_ratio`` = |paper| / |backtest| of
  ``returns.max_drawdown``, ``returns.var_p01``, ``returns.es_p01``, defined when the backtest
  figure is non-zero.

Settings (inclusive): ``min_sharpe_ratio``, ``max_drawdown_ratio``, ``max_var_p01_ratio``,
``max_es_p01_ratio``. An undefined ratio (no baseline, a missing metric, a zero or non-positive
denominator) is missing and follows ``on_missing_metric``; ``details.notes`` says why.

Reason codes (QMTL's, reference §2.3): ``paper_shadow_ok``,
``paper_shadow_{sharpe,dd,var,es}_ratio_missing``, ``paper_shadow_sharpe_ratio_below_min``,
``paper_shadow_{dd,var,es}_ratio_exceeds_max``, ``missing_metric_ignored``, ``rule_error``.
Default severity soft, owner ops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from qmtl_validation.core.health import get_path
from qmtl_validation.core.rules.base import RuleResult
from qmtl_validation.core.rules.core_rules import CoreRule, Findings, ThresholdCheck, number

# (ratio name, metric path, setting, bound kind, code stem, Sharpe-style denominator rule)
_RATIOS = (
    ("sharpe_ratio", "returns.sharpe", "min_sharpe_ratio", "min", "sharpe", True),
    ("drawdown_ratio", "returns.max_drawdown", "max_drawdown_ratio", "max", "dd", False),
    ("var_p01_ratio", "returns.var_p01", "max_var_p01_ratio", "max", "var", False),
    ("es_p01_ratio", "returns.es_p01", "max_es_p01_ratio", "max", "es", False),
)


@dataclass(frozen=True)
class PaperShadowContext:
    """The baseline of one paper/shadow run: ``baseline_run_id`` and ``baseline_metrics`` (the
    nested metrics of the strategy's latest backtest run; None when it has none)."""

    baseline_run_id: str | None = None
    baseline_metrics: Mapping[str, Any] | None = None


def consistency_ratios(metrics: Mapping[str, Any], baseline: Mapping[str, Any] | None) -> tuple[dict[str, float | None], dict[str, str]]:
    """The four paper/backtest ratios (module docstring) and, for each undefined one, why."""
    ratios: dict[str, float | None] = {}
    notes: dict[str, str] = {}
    for ratio, path, _, _, _, sharpe_like in _RATIOS:
        current = number(get_path(metrics, path))
        base = None if baseline is None else number(get_path(baseline, path))
        ratios[ratio] = None
        if baseline is None:
            notes[ratio] = "no backtest run of the strategy"
        elif current is None:
            notes[ratio] = f"{path} missing in the run"
        elif base is None:
            notes[ratio] = f"{path} missing in the backtest run"
        elif sharpe_like and base <= 0:
            notes[ratio] = "backtest Sharpe is not positive"
        elif not sharpe_like and base == 0:
            notes[ratio] = f"backtest {path} is zero"
        else:
            ratios[ratio] = current / base if sharpe_like else abs(current) / abs(base)
    return ratios, notes


@dataclass(frozen=True)
class PaperShadowConsistencyRule(CoreRule):
    """Paper (or shadow) versus backtest consistency ratios (module docstring)."""

    severity: str = "soft"
    owner: str = "ops"
    on_missing_metric: str = "fail"
    on_error: str = "fail"
    thresholds: tuple[ThresholdCheck, ...] = ()
    stages: tuple[str, ...] = ("paper", "shadow")

    name = "paper_shadow_consistency"
    default_severity = "soft"
    default_owner = "ops"

    def applies_to(self, stage: str | None) -> bool:
        """True for a listed stage (case-insensitive, ``-`` = ``_``)."""
        if stage is None:
            return False
        wanted = stage.strip().lower().replace("-", "_")
        return any(s.strip().lower().replace("-", "_") == wanted for s in self.stages)

    def config(self) -> dict[str, Any]:
        out = super().config()
        out["stages"] = sorted(self.stages)
        return out

    def evaluate(self, metrics: Mapping[str, Any], context: PaperShadowContext) -> RuleResult:
        ratios, notes = consistency_ratios(metrics, context.baseline_metrics)
        findings = Findings(self.on_missing_metric)
        for chk in self.thresholds:
            findings.check(chk, ratios)
        details: dict[str, Any] = {
            "baseline_run_id": context.baseline_run_id,
            "ratios": ratios,
            "notes": notes,
            "thresholds": self._thresholds_detail(findings),
        }
        reason = "Paper results consistent with the backtest" if self.thresholds else "No consistency limits configured"
        return findings.result(self, "paper_shadow_ok", reason, details)


def paper_shadow_thresholds(
    min_sharpe_ratio: float | None,
    max_drawdown_ratio: float | None,
    max_var_p01_ratio: float | None,
    max_es_p01_ratio: float | None,
    source: str = "paper_shadow_consistency",
) -> tuple[ThresholdCheck, ...]:
    """The checks of a ``paper_shadow_consistency`` block; ``source`` is its YAML path."""
    settings = {
        "min_sharpe_ratio": min_sharpe_ratio,
        "max_drawdown_ratio": max_drawdown_ratio,
        "max_var_p01_ratio": max_var_p01_ratio,
        "max_es_p01_ratio": max_es_p01_ratio,
    }
    out = []
    for ratio, _, setting, kind, stem, _ in _RATIOS:
        bound = settings[setting]
        if bound is None:
            continue
        out.append(
            ThresholdCheck(
                key=setting,
                path=ratio,
                min=bound if kind == "min" else None,
                max=bound if kind == "max" else None,
                source=f"{source}.{setting}",
                breach_code=f"paper_shadow_{stem}_ratio_below_min" if kind == "min" else f"paper_shadow_{stem}_ratio_exceeds_max",
                missing_code=f"paper_shadow_{stem}_ratio_missing",
            )
        )
    return tuple(out)
