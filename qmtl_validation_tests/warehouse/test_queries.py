"""The pipeline's lake reads: newest rows of the requested runs, and the narrow positional form a
backfill uses for millions of returns rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qmtl_validation.warehouse import run_rows
from qmtl_validation.warehouse.lake import Lake
from qmtl_validation.warehouse.queries import KEY_POSITION, latest_rows, lake_connection

DATES = pd.bdate_range("2025-01-01", periods=30).date
REVISIONS = (pd.Timestamp("2026-11-01", tz="UTC"), pd.Timestamp("2026-11-20", tz="UTC"))


def _returns(world: str, strategy: str, run: str, days: int, seed: int, recorded_at: pd.Timestamp) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "world_id": world, "strategy_id": strategy, "run_id": run, "date": DATES[-days:],
        "ret": rng.normal(0, 0.01, days),
        "benchmark_ret": rng.normal(0, 0.01, days) if seed % 2 else np.nan,
        "recorded_at": recorded_at,
    })


@pytest.fixture
def lake(tmp_path) -> Lake:
    """Two worlds, six runs of different lengths; every run written twice (an older and a newer
    revision with different values), the newer in a separate file."""
    lake = Lake(str(tmp_path / "lake"))
    for revision, recorded_at in enumerate(REVISIONS):
        for world in ("w1", "w2"):
            frame = pd.concat([
                _returns(world, f"s{i}", f"r{i}", 10 + 5 * i, seed=100 * revision + i + (world == "w2") * 7,
                         recorded_at=recorded_at)
                for i in range(3)
            ])
            lake.write("strategy_returns", frame, world_id=world, file_stem=f"rev{revision}")
    return lake


def _window_definition(lake: Lake, keys: list[str]) -> pd.DataFrame:
    """The straightforward definition: every row of the wanted runs whose version is the newest of
    its run, by a window function."""
    connection = lake_connection(lake)
    try:
        rows = connection.execute(
            f"SELECT * FROM read_parquet('{lake.root}/strategy_returns/*/*.parquet', hive_partitioning = false) "
            "QUALIFY recorded_at = max(recorded_at) OVER (PARTITION BY world_id, strategy_id, run_id)"
        ).df()
    finally:
        connection.close()
    return rows[run_rows.partition_keys_of(rows).isin(keys).to_numpy()]


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["world_id", "strategy_id", "run_id", "date"]).reset_index(drop=True)


def test_latest_rows_are_the_newest_revision_of_exactly_the_runs_asked_for(lake):
    keys = ["w1/s0/r0", "w2/s2/r2", "w2/s1/r1"]
    got = latest_rows(lake, "strategy_returns", partition_keys=keys)
    expected = _window_definition(lake, keys)
    assert set(run_rows.partition_keys_of(got)) == set(keys)
    assert (got["recorded_at"] == REVISIONS[1]).all()
    pd.testing.assert_frame_equal(_sorted(got)[list(expected.columns)], _sorted(expected), check_dtype=False)


def test_key_positions_index_the_requested_keys_and_narrow_the_columns(lake):
    keys = ["w2/s2/r2", "w1/s0/r0", "w1/s1/r1"]
    narrow = latest_rows(lake, "strategy_returns", partition_keys=keys, columns=("date", "ret"), key_positions=True)
    assert list(narrow.columns) == ["date", "ret", KEY_POSITION]
    full = latest_rows(lake, "strategy_returns", partition_keys=keys)
    full[KEY_POSITION] = pd.Index(keys).get_indexer(run_rows.partition_keys_of(full))
    by = [KEY_POSITION, "date"]
    pd.testing.assert_frame_equal(
        narrow.sort_values(by).reset_index(drop=True),
        full[["date", "ret", KEY_POSITION]].sort_values(by).reset_index(drop=True),
        check_dtype=False,
    )


def test_key_positions_without_keys_is_refused(lake):
    with pytest.raises(ValueError, match="key_positions needs partition_keys"):
        latest_rows(lake, "strategy_returns", key_positions=True)


def test_the_returns_panel_is_the_same_from_positions_as_from_the_id_columns(lake):
    keys = ["w1/s2/r2", "w2/s0/r0", "w1/s0/r0", "w2/s1/r1"]
    from_ids, bench_from_ids = run_rows.returns_panel(latest_rows(lake, "strategy_returns", partition_keys=keys), keys)
    narrow = latest_rows(
        lake, "strategy_returns", partition_keys=keys, columns=("date", "ret", "benchmark_ret"), key_positions=True
    )
    from_positions, bench_from_positions = run_rows.returns_panel(narrow, keys)
    pd.testing.assert_frame_equal(from_ids, from_positions)
    assert from_ids.notna().sum().tolist() == [20, 10, 10, 15]  # right-aligned, shorter runs padded
    assert bench_from_ids.keys() == bench_from_positions.keys()
    for key in bench_from_ids:
        pd.testing.assert_series_equal(bench_from_ids[key], bench_from_positions[key])


def test_a_position_outside_the_requested_keys_is_an_error():
    frame = pd.DataFrame({"date": DATES[:2], "ret": [0.01, 0.02], "benchmark_ret": np.nan, KEY_POSITION: [0, 3]})
    with pytest.raises(ValueError, match="positions outside the requested partitions"):
        run_rows.returns_panel(frame, ["w/s/r0", "w/s/r1"])
