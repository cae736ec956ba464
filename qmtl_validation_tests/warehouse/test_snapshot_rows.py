"""Snapshot row shaping round-trips through the lake, and the freshness-breach read the sensor uses."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from qmtl_validation.core import contracts
from qmtl_validation.core.contracts import validate_frame
from qmtl_validation.core.snapshot import parse_covariance
from qmtl_validation.warehouse.lake import Lake
from qmtl_validation.warehouse.queries import latest_rows
from qmtl_validation.warehouse import snapshot_rows as rows

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.timezone.utc)
SNAPSHOT = {
    "world_id": "w",
    "version": "v1",
    "as_of": "2026-11-27T11:58:00Z",
    "weights": {"a": 0.7, "b": 0.3, "idle": 0.0},
    "stress": {
        "crash": {"max_drawdown": -0.3, "var_99": 0.05, "shocks": {"a": -0.1, "b": 0.02}},
        "strategies": {"b": {"crash": {"max_drawdown": 0.1, "var_99": 0.08}}},
    },
}


def test_covariance_rows_hold_the_upper_triangle_and_round_trip_with_their_flags(tmp_path):
    matrix, imputed = parse_covariance({"a,a": 1e-4, "b,b": 4e-4, "c,c": 9e-4, "a,b": 6e-5}, ["a", "b", "c"])
    frame = validate_frame(
        contracts.CovarianceTable, rows.covariance_rows(SNAPSHOT, matrix, imputed, recorded_at=NOW), source="covariance"
    )
    assert list(zip(frame["strategy_a"], frame["strategy_b"])) == [
        ("a", "a"), ("a", "b"), ("a", "c"), ("b", "b"), ("b", "c"), ("c", "c")
    ]
    assert frame.set_index(["strategy_a", "strategy_b"])["imputed"].to_dict() == {
        ("a", "a"): False, ("a", "b"): False, ("a", "c"): True, ("b", "b"): False, ("b", "c"): True, ("c", "c"): False
    }
    assert frame["correlation"].iloc[1] == pytest.approx(0.3)
    lake = Lake(str(tmp_path))
    lake.write_partitioned("covariance", frame, file_stem="one")
    back, labels = rows.covariance_from_rows(latest_rows(lake, "covariance", key_expression=rows.SNAPSHOT_KEY_SQL))["w/v1"]
    np.testing.assert_array_equal(back.to_numpy(), matrix.to_numpy())
    assert list(back.index) == ["a", "b", "c"] and sorted(labels) == ["a,c", "b,c"]


def test_realized_rows_count_periods_back_from_the_newest_and_keep_dates(tmp_path):
    wide = pd.DataFrame(
        {"a": [0.01, -0.02, 0.03], "b": [np.nan, 0.005, 0.001]},
        index=pd.DatetimeIndex(["2026-11-24", "2026-11-25", "2026-11-26"]),
    )
    frame = validate_frame(
        contracts.RealizedReturnsTable, rows.realized_rows(SNAPSHOT, wide, recorded_at=NOW), source="realized_returns"
    )
    assert frame[frame["strategy_id"] == "b"]["period"].tolist() == [-1, 0]  # the leading gap is no row
    assert frame[frame["strategy_id"] == "a"]["date"].dt.strftime("%Y-%m-%d").tolist() == ["2026-11-24", "2026-11-25", "2026-11-26"]
    lake = Lake(str(tmp_path))
    lake.write_partitioned("realized_returns", frame, file_stem="one")
    back = rows.realized_from_rows(latest_rows(lake, "realized_returns", key_expression=rows.SNAPSHOT_KEY_SQL))["w/v1"]
    np.testing.assert_array_equal(back.to_numpy(), wide.to_numpy())
    assert rows.realized_as_inline(back) == {"a": [0.01, -0.02, 0.03], "b": [0.005, 0.001]}


def test_stress_rows_take_absolute_figures_per_strategy_blocks_and_shock_pnl():
    limits = {"crash": {"dd_max": 0.25, "var_99": 0.06, "es_99": 0.07}}
    frame = validate_frame(
        contracts.StressResultsTable,
        rows.stress_frame(rows.stress_rows(SNAPSHOT, limits, computed_at=NOW)),
        source="stress_results",
    )
    by = {(r.scenario, r.strategy_id): r for r in frame.itertuples()}
    book = by[("crash", None)]
    assert (book.max_drawdown, book.status) == (0.3, "fail")
    assert book.reason == "max_drawdown 0.3 above dd_max 0.25; es_99 missing (limit 0.07)"
    assert book.stress_pnl == pytest.approx(0.7 * -0.1 + 0.3 * 0.02) and book.pnl_covered_weight == 1.0
    block = by[("crash", "b")]
    assert (block.var_99, block.status, block.shock) == (0.08, "fail", 0.02)
    assert block.stress_pnl == pytest.approx(0.3 * 0.02)
    assert by[("crash", "a")].status is None  # a shock alone is no figure to compare


def test_world_in_breach_follows_the_latest_row_of_each_episode(tmp_path):
    lake = Lake(str(tmp_path))

    def breach(breach_id, status, minutes):
        lake.write(
            "freshness_breaches",
            [{"world_id": "w", "breach_id": breach_id, "status": status, "started_at": NOW,
              "recorded_at": NOW + dt.timedelta(minutes=minutes)}],
            world_id="w",
            file_stem=f"{breach_id}-{status}",
        )

    assert not rows.world_in_breach(lake, "w")
    breach("w-1", "open", 0)
    assert rows.world_in_breach(lake, "w")
    breach("w-1", "closed", 5)
    assert not rows.world_in_breach(lake, "w")
    breach("w-2", "open", 10)
    assert rows.world_in_breach(lake, "w") and not rows.world_in_breach(lake, "other")
    assert rows.open_breaches(lake)["breach_id"].tolist() == ["w-2"]
