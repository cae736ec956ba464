"""Live monitoring: per-strategy realized Sharpe, drawdown and decay over trailing windows (§8).

Each strategy gets its own figures (QMTL averaged the batch and copied the mean to every
strategy). Definitions are those of SPEC §5, so live and backtest numbers are comparable:

- window w: the last w rows of the frame (the common live calendar, newest last). A strategy
  with fewer values uses what it has (``n_periods`` says how many); NaN — leading padding of a
  ragged series, or a gap — is a missing period: skipped by mean/std, flat for the equity curve.
- ``sharpe`` = mean(r)/std(r, ddof=1)·√P (annualised, risk-free 0); NaN with a note when fewer
  than 2 periods or zero dispersion (max − min = 0).
- ``max_drawdown`` = max_t 1 − E_t / max(1, E_1..E_t), E_t = Π(1+r) over the window, i.e. the
  compounded equity curve anchored at 1 at the window start (a positive fraction). NaN when the
  window holds no value.
- ``sharpe_decay_ratio`` = live ``sharpe`` / backtest Sharpe (both annualised), defined when the
  backtest Sharpe is positive (a ratio to a non-positive expectation has no decay meaning).
- breaches (bounds inclusive, a NaN metric never breaches — the note says why it is missing):
  ``breach_sharpe``: sharpe < ``sharpe_min``; ``breach_drawdown``: max_drawdown > ``dd_max``;
  ``breach_decay``: sharpe_decay_ratio < ``decay_threshold``. A threshold left as None is not
  checked. ``demotion_candidate`` = any breach in that row; ``strategy_demotion_candidate`` = the
  strategy breaches in any of its windows. Demotion itself stays a human decision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from qmtl_validation.core import stats
from qmtl_validation.core.snapshot import realized_returns_frame

DEFAULT_WINDOWS: tuple[int, ...] = (30, 60, 90)

LIVE_MONITORING_COLUMNS: tuple[str, ...] = (
    "strategy_id",
    "window",
    "n_periods",
    "sharpe",
    "max_drawdown",
    "backtest_sharpe",
    "sharpe_decay_ratio",
    "breach_sharpe",
    "breach_drawdown",
    "breach_decay",
    "demotion_candidate",
    "demotion_reasons",
    "strategy_demotion_candidate",
    "notes",
)


def _join_notes(parts: Sequence[np.ndarray], separator: str = "; ") -> np.ndarray:
    """Row-wise join of string arrays, skipping empty strings (no Python loop over rows)."""
    out = np.full(parts[0].shape, "", dtype=object)
    for part in parts:
        sep = np.where((out != "") & (part != ""), separator, "")
        out = out + sep + part
    return out


def _window_metrics(block: np.ndarray, periods_per_year: float) -> dict[str, np.ndarray]:
    """Metrics of every column of one window block (rows = periods), via the shared stats core."""
    finite = np.isfinite(block)
    n = finite.sum(axis=0)
    spread = np.where(finite, block, -np.inf).max(axis=0, initial=-np.inf) - np.where(
        finite, block, np.inf
    ).min(axis=0, initial=np.inf)
    sharpe = np.asarray(stats.sharpe_ratio(block, periods_per_year, axis=0), dtype=np.float64)
    drawdown = np.asarray(stats.max_drawdown(block, axis=0), dtype=np.float64)
    notes = _join_notes(
        [
            np.where(n < 2, "sharpe: fewer than 2 periods", ""),
            np.where((n >= 2) & ~(spread > 0), "sharpe: zero dispersion", ""),
            np.where(n == 0, "max_drawdown: no periods", ""),
        ]
    )
    return {"n_periods": n, "sharpe": sharpe, "max_drawdown": drawdown, "notes": notes}


def live_monitoring_metrics(
    realized_returns: pd.DataFrame | Mapping[str, Sequence[float]],
    *,
    backtest_sharpe: Mapping[str, float] | pd.Series | None = None,
    windows: Sequence[int] = DEFAULT_WINDOWS,
    periods_per_year: float = 252,
    sharpe_min: float | None = None,
    dd_max: float | None = None,
    decay_threshold: float | None = None,
) -> pd.DataFrame:
    """One row per strategy × window with the live metrics and demotion flags (module docstring).

    ``realized_returns``: simple per-period returns, columns = strategies, oldest row first,
    ragged leading NaN allowed; or the snapshot's inline ``{strategy: [r...]}`` mapping (series
    right-aligned at ``as_of``). ``backtest_sharpe``: annualised ``returns.sharpe`` of each
    strategy's reference (backtest) run. Columns: ``LIVE_MONITORING_COLUMNS``; rows ordered by
    strategy (input order) then window. Computed for all strategies at once per window.
    """
    frame = (
        realized_returns
        if isinstance(realized_returns, pd.DataFrame)
        else realized_returns_frame(realized_returns)
    )
    windows = [int(w) for w in windows]
    if not windows or min(windows) < 1:
        raise ValueError(f"windows must be positive integers, got {windows!r}")
    if periods_per_year <= 0:
        raise ValueError(f"periods_per_year must be positive, got {periods_per_year!r}")
    strategies = [str(c) for c in frame.columns]
    values = frame.to_numpy(dtype=np.float64)
    if np.isinf(values).any():
        raise ValueError("realized returns must be finite (NaN marks a missing period)")
    k = len(strategies)
    backtest = (
        pd.Series(dict(backtest_sharpe or {}), dtype="float64").reindex(strategies).to_numpy()
    )

    pieces: list[pd.DataFrame] = []
    for order, window in enumerate(windows):
        m = _window_metrics(values[-window:], periods_per_year)
        with np.errstate(invalid="ignore", divide="ignore"):
            decay = np.where(backtest > 0, m["sharpe"] / backtest, np.nan)
        breach_sharpe = np.zeros(k, bool) if sharpe_min is None else m["sharpe"] < sharpe_min
        breach_drawdown = np.zeros(k, bool) if dd_max is None else m["max_drawdown"] > dd_max
        breach_decay = np.zeros(k, bool) if decay_threshold is None else decay < decay_threshold
        notes = _join_notes(
            [
                m["notes"],
                np.where(np.isnan(backtest), "sharpe_decay_ratio: no backtest sharpe", ""),
                np.where(backtest <= 0, "sharpe_decay_ratio: backtest sharpe not positive", ""),
            ]
        )
        pieces.append(
            pd.DataFrame(
                {
                    "strategy_id": strategies,
                    "window": np.full(k, window, dtype=np.int64),
                    "n_periods": m["n_periods"].astype(np.int64),
                    "sharpe": m["sharpe"],
                    "max_drawdown": m["max_drawdown"],
                    "backtest_sharpe": backtest,
                    "sharpe_decay_ratio": decay,
                    "breach_sharpe": breach_sharpe,
                    "breach_drawdown": breach_drawdown,
                    "breach_decay": breach_decay,
                    "demotion_reasons": _join_notes(
                        [
                            np.where(breach_sharpe, "sharpe_below_min", ""),
                            np.where(breach_drawdown, "drawdown_above_max", ""),
                            np.where(breach_decay, "sharpe_decay", ""),
                        ],
                        separator=",",
                    ),
                    "notes": notes,
                    "_strategy_order": np.arange(k),
                    "_window_order": order,
                }
            )
        )
    if not pieces or k == 0:
        return pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in LIVE_MONITORING_COLUMNS})
    out = pd.concat(pieces, ignore_index=True)
    out["demotion_candidate"] = out["breach_sharpe"] | out["breach_drawdown"] | out["breach_decay"]
    out["strategy_demotion_candidate"] = out.groupby("strategy_id", sort=False)[
        "demotion_candidate"
    ].transform("any")
    out = out.sort_values(["_strategy_order", "_window_order"], kind="stable")
    return out.loc[:, list(LIVE_MONITORING_COLUMNS)].reset_index(drop=True)


def _dtype(column: str) -> Any:
    if column in ("window", "n_periods"):
        return "int64"
    if column.startswith(("breach_", "demotion_candidate", "strategy_demotion")):
        return "bool"
    if column in ("strategy_id", "demotion_reasons", "notes"):
        return "object"
    return "float64"


def demotion_candidates(monitoring: pd.DataFrame) -> list[str]:
    """Strategies flagged in any window of a ``live_monitoring_metrics`` frame, in row order."""
    flagged = monitoring.loc[monitoring["strategy_demotion_candidate"], "strategy_id"]
    return list(dict.fromkeys(flagged.tolist()))
