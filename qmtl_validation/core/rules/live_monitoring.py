"""The ``live_monitoring`` layer: one strategy's realized performance and decay (SPEC §7, §8).

Per strategy — never a batch mean copied to every strategy, as QMTL does. The figures are the rows
of :func:`qmtl_validation.core.live_monitoring.live_monitoring_metrics` for the run's strategy,
one per trailing window (30/60/90 periods by default, see :func:`live_windows`):

- ``sharpe``: annualised realized Sharpe over the window; breach when below ``sharpe_min``;
- ``max_drawdown``: compounded drawdown over the window (positive); breach when above ``dd_max``;
- ``sharpe_decay_ratio``: realized Sharpe / backtest Sharpe (both annualised, defined when the
  backtest Sharpe is positive); breach when below ``decay_threshold``.

Bounds are inclusive. A breach in any window fails the rule; ``details.breached_windows`` lists
which windows breach for each figure and ``details.demotion_candidate`` is true when any window
breaches (demotion itself stays a human decision). The thresholds are applied here, from the
policy, whatever flags the monitoring table carries. A figure that no window has (too few live
periods, no backtest Sharpe) is missing and follows ``on_missing_metric``.

Reason codes (QMTL's, reference §2.3): ``live_monitoring_ok``, ``live_sharpe_missing``,
``live_sharpe_below_min``, ``live_dd_missing``, ``live_dd_exceeds_max``, ``live_decay_missing``,
``live_decay_below_threshold``, ``missing_metric_ignored``, ``rule_error``. Default severity soft,
owner risk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from qmtl_validation.core.live_monitoring import DEFAULT_WINDOWS
from qmtl_validation.core.rules.base import RuleResult
from qmtl_validation.core.rules.core_rules import CoreRule, Findings, fmt, number


def live_windows(lookback_days: int | None) -> tuple[int, ...]:
    """Trailing windows (in periods) a policy's ``lookback_days`` asks for.

    None → 30/60/90. Otherwise ``lookback_days`` is the longest window considered: the default
    windows up to it, plus the lookback itself (60 → 30, 60; 45 → 30, 45; 120 → 30, 60, 90, 120).
    """
    if lookback_days is None:
        return DEFAULT_WINDOWS
    lookback = int(lookback_days)
    return tuple(sorted({w for w in DEFAULT_WINDOWS if w <= lookback} | {lookback}))


@dataclass(frozen=True)
class LiveMonitoringContext:
    """What the live-monitoring rule reads for one run.

    - ``strategy_id``: the run's strategy.
    - ``windows``: the strategy's rows of the live-monitoring table, as mappings with at least
      ``window``, ``n_periods``, ``sharpe``, ``max_drawdown``, ``backtest_sharpe``,
      ``sharpe_decay_ratio`` (NaN or None = undefined) and optionally ``notes``.
    - ``snapshot``: provenance for the details (``version``, ``as_of``, ``stale``, ...).
    - ``notes``: why there is no realized series, when there is none.
    - ``error``: a failure computing the world's monitoring table; raised so it becomes
      ``rule_error``.
    """

    strategy_id: str | None = None
    windows: Sequence[Mapping[str, Any]] = ()
    snapshot: Mapping[str, Any] | None = None
    notes: tuple[str, ...] = ()
    error: str | None = None


# (setting, row column, breach direction, metric path, missing code, breach code, label)
_FIGURES = (
    ("sharpe_min", "sharpe", "below", "live_monitoring.sharpe", "live_sharpe_missing", "live_sharpe_below_min", "realized Sharpe"),
    ("dd_max", "max_drawdown", "above", "live_monitoring.max_drawdown", "live_dd_missing", "live_dd_exceeds_max", "realized drawdown"),
    ("decay_threshold", "sharpe_decay_ratio", "below", "live_monitoring.sharpe_decay_ratio", "live_decay_missing", "live_decay_below_threshold", "live/backtest Sharpe ratio"),
)


@dataclass(frozen=True)
class LiveMonitoringRule(CoreRule):
    """Realized Sharpe floor, drawdown cap and decay floor of one strategy (module docstring)."""

    severity: str = "soft"
    owner: str = "risk"
    on_missing_metric: str = "fail"
    on_error: str = "fail"
    sharpe_min: float | None = None
    dd_max: float | None = None
    decay_threshold: float | None = None
    lookback_days: int | None = None

    name = "live_monitoring"
    default_severity = "soft"
    default_owner = "risk"

    @property
    def windows(self) -> tuple[int, ...]:
        return live_windows(self.lookback_days)

    def config(self) -> dict[str, Any]:
        out = super().config()
        out.update(
            sharpe_min=self.sharpe_min,
            dd_max=self.dd_max,
            decay_threshold=self.decay_threshold,
            lookback_days=self.lookback_days,
            windows=list(self.windows),
        )
        return out

    def evaluate(self, metrics: Mapping[str, Any], context: LiveMonitoringContext) -> RuleResult:
        if context.error is not None:
            raise ValueError(context.error)
        wanted = set(self.windows)
        rows = sorted(
            (r for r in context.windows if int(r["window"]) in wanted), key=lambda r: int(r["window"])
        )
        findings = Findings(self.on_missing_metric)
        table = []
        for r in rows:
            table.append(
                {
                    "window": int(r["window"]),
                    "n_periods": None if number(r.get("n_periods")) is None else int(r["n_periods"]),
                    "sharpe": number(r.get("sharpe")),
                    "max_drawdown": number(r.get("max_drawdown")),
                    "backtest_sharpe": number(r.get("backtest_sharpe")),
                    "sharpe_decay_ratio": number(r.get("sharpe_decay_ratio")),
                    "breaches": [],
                    "notes": r.get("notes") or "",
                }
            )
        breached: dict[str, list[int]] = {}
        for setting, column, direction, path, missing_code, breach_code, label in _FIGURES:
            bound = getattr(self, setting)
            if bound is None:
                continue
            present = [row for row in table if row[column] is not None]
            if not present:
                findings.missing_metric(path, missing_code, threshold=setting)
                continue
            hits = [
                row for row in present if (row[column] < bound if direction == "below" else row[column] > bound)
            ]
            breached[column] = [row["window"] for row in hits]
            if not hits:
                continue
            for row in hits:
                row["breaches"].append(breach_code)
                findings.violations.append(
                    {
                        "threshold": setting,
                        "metric": path,
                        "window": row["window"],
                        "reason": "below_min" if direction == "below" else "above_max",
                        "value": row[column],
                        ("min" if direction == "below" else "max"): bound,
                    }
                )
            worst = min(hits, key=lambda row: row[column]) if direction == "below" else max(hits, key=lambda row: row[column])
            windows_text = ", ".join(str(row["window"]) for row in hits)
            findings.fail(
                breach_code,
                f"{label} {fmt(worst[column])} {'below minimum' if direction == 'below' else 'above maximum'} "
                f"{fmt(bound)} over the last {worst['window']} periods (breached in windows {windows_text})",
            )
        demotion = any(row["breaches"] for row in table)
        details: dict[str, Any] = {
            "strategy_id": context.strategy_id,
            "windows": table,
            "missing_windows": sorted(wanted - {row["window"] for row in table}),
            "breached_windows": breached,
            "demotion_candidate": demotion,
            "thresholds": {
                "sharpe_min": self.sharpe_min,
                "dd_max": self.dd_max,
                "decay_threshold": self.decay_threshold,
                "lookback_days": self.lookback_days,
            },
            "snapshot": None if context.snapshot is None else dict(context.snapshot),
            "notes": list(context.notes),
        }
        configured = any(getattr(self, f[0]) is not None for f in _FIGURES)
        reason = (
            f"Live performance of {context.strategy_id or 'the strategy'} within limits"
            if configured
            else "No live-monitoring limits configured"
        )
        return findings.result(self, "live_monitoring_ok", reason, details)
