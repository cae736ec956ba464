"""Per-strategy live monitoring over 30/60/90 periods: Sharpe, drawdown, decay, demotion flags."""

from __future__ import annotations

import math

import empyrical
import numpy as np
import pandas as pd
import pytest

from qmtl_validation.core.live_monitoring import (
    LIVE_MONITORING_COLUMNS,
    demotion_candidates,
    live_monitoring_metrics,
)

GOOD = [0.012, -0.008] * 45  # mean 0.002, alternating: a steady live track record
# The decaying strategy matched GOOD for 60 periods, then turned: mean −0.002 over the last 30.
DECAYING = [0.012, -0.008] * 30 + [0.004, -0.008] * 15
THRESHOLDS = {"sharpe_min": 0.5, "dd_max": 0.2, "decay_threshold": 0.5}


def reference_sharpe(r, periods_per_year=252):
    r = np.asarray(r)
    return r.mean() / r.std(ddof=1) * math.sqrt(periods_per_year)


def reference_max_drawdown(r):
    """Period-by-period loop: equity starts at 1, peak never below 1."""
    equity, peak, worst = 1.0, 1.0, 0.0
    for x in r:
        equity *= 1 + x
        peak = max(peak, equity)
        worst = max(worst, 1 - equity / peak)
    return worst


@pytest.fixture
def monitoring():
    frame = pd.DataFrame({"steady": GOOD, "decaying": DECAYING})
    return live_monitoring_metrics(frame, backtest_sharpe={"steady": 3.0, "decaying": 3.0}, **THRESHOLDS)


def test_only_the_decaying_strategy_is_a_demotion_candidate(monitoring):
    assert demotion_candidates(monitoring) == ["decaying"]
    steady = monitoring[monitoring["strategy_id"] == "steady"]
    assert not steady["demotion_candidate"].any()
    assert not steady["strategy_demotion_candidate"].any()
    decaying = monitoring[monitoring["strategy_id"] == "decaying"].set_index("window")
    assert decaying["strategy_demotion_candidate"].all()
    # 30: mean −0.002 → negative Sharpe; 60: mean 0 → Sharpe 0; 90: Sharpe ≈ 1.0 but < half of 3.0.
    assert decaying.loc[30, "demotion_reasons"] == "sharpe_below_min,sharpe_decay"
    assert decaying.loc[60, "demotion_reasons"] == "sharpe_below_min,sharpe_decay"
    assert decaying.loc[90, "demotion_reasons"] == "sharpe_decay"
    assert decaying.loc[90, "sharpe_decay_ratio"] == pytest.approx(reference_sharpe(DECAYING) / 3.0, abs=1e-12)
    assert not decaying["breach_drawdown"].any()


def test_one_row_per_strategy_and_window_with_documented_columns(monitoring):
    assert tuple(monitoring.columns) == LIVE_MONITORING_COLUMNS
    assert list(zip(monitoring["strategy_id"], monitoring["window"])) == [
        ("steady", 30), ("steady", 60), ("steady", 90), ("decaying", 30), ("decaying", 60), ("decaying", 90)
    ]
    assert monitoring["n_periods"].tolist() == [30, 60, 90, 30, 60, 90]


def test_window_metrics_follow_the_spec_definitions(monitoring):
    rows = monitoring.set_index(["strategy_id", "window"])
    for name, series in (("steady", GOOD), ("decaying", DECAYING)):
        for window in (30, 60, 90):
            tail = series[-window:]
            assert rows.loc[(name, window), "sharpe"] == pytest.approx(reference_sharpe(tail), abs=1e-12)
            assert rows.loc[(name, window), "max_drawdown"] == pytest.approx(reference_max_drawdown(tail), abs=1e-15)
            # Anchor: empyrical's annualised Sharpe uses the same convention.
            assert rows.loc[(name, window), "sharpe"] == pytest.approx(
                empyrical.sharpe_ratio(np.asarray(tail), annualization=252), abs=1e-9
            )
    # Decaying, last 30 = (+0.4%, −0.8%)×15: the peak is the first step, 1.004; each pair multiplies
    # equity by 1.004·0.992 < 1, so the end is the trough: 1 − (1.004·0.992)^15 / 1.004.
    assert rows.loc[("decaying", 30), "max_drawdown"] == pytest.approx(
        1 - (1.004 * 0.992) ** 15 / 1.004, abs=1e-15
    )


def test_ragged_leading_nan_uses_the_available_history_per_strategy():
    frame = pd.DataFrame({"steady": GOOD, "new": [np.nan] * 70 + GOOD[:20]})
    out = live_monitoring_metrics(frame, backtest_sharpe={"steady": 3.0, "new": 3.0}).set_index(["strategy_id", "window"])
    assert out.loc[("new", 30), "n_periods"] == 20
    assert out.loc[("new", 90), "n_periods"] == 20
    assert out.loc[("new", 90), "sharpe"] == pytest.approx(reference_sharpe(GOOD[:20]), abs=1e-12)
    assert out.loc[("new", 90), "max_drawdown"] == pytest.approx(reference_max_drawdown(GOOD[:20]), abs=1e-15)


def test_undefined_metrics_are_null_with_a_note_and_never_breach():
    frame = pd.DataFrame({"flat": [0.001] * 40, "single": [np.nan] * 39 + [0.01], "nothing": [np.nan] * 40})
    out = live_monitoring_metrics(frame, windows=(30,), **THRESHOLDS).set_index("strategy_id")
    assert np.isnan(out.loc["flat", "sharpe"])
    assert out.loc["flat", "notes"] == "sharpe: zero dispersion; sharpe_decay_ratio: no backtest sharpe"
    assert np.isnan(out.loc["single", "sharpe"]) and out.loc["single", "max_drawdown"] == 0.0
    assert out.loc["single", "notes"].startswith("sharpe: fewer than 2 periods")
    assert np.isnan(out.loc["nothing", "max_drawdown"])
    assert "max_drawdown: no periods" in out.loc["nothing", "notes"]
    assert not out["demotion_candidate"].any()


def test_negative_backtest_sharpe_gives_no_decay_ratio():
    out = live_monitoring_metrics(pd.DataFrame({"s": GOOD}), backtest_sharpe={"s": -0.4}, windows=(30,))
    assert np.isnan(out.loc[0, "sharpe_decay_ratio"])
    assert out.loc[0, "notes"] == "sharpe_decay_ratio: backtest sharpe not positive"


def test_snapshot_mapping_input_and_periods_per_year():
    out = live_monitoring_metrics({"s": GOOD[:40]}, windows=(30,), periods_per_year=52)
    assert out.loc[0, "sharpe"] == pytest.approx(reference_sharpe(GOOD[-30:], 52), abs=1e-12)


def test_drawdown_threshold_is_inclusive():
    crash = [0.0] * 10 + [-0.1]  # max drawdown exactly 0.1
    at = live_monitoring_metrics(pd.DataFrame({"s": crash}), windows=(30,), dd_max=0.1)
    assert at.loc[0, "max_drawdown"] == pytest.approx(0.1, abs=1e-15)
    assert not at.loc[0, "breach_drawdown"]
    above = live_monitoring_metrics(pd.DataFrame({"s": crash}), windows=(30,), dd_max=0.099)
    assert above.loc[0, "breach_drawdown"]
