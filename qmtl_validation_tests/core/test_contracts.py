"""The pandera contracts and validate_frame's error reporting (SPEC §3)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pytest
from pandera.typing import Series

from qmtl_validation.core.contracts import (
    ContractError,
    Problem,
    ReturnsSchema,
    TradesSchema,
    validate_frame,
)


def returns_frame(**overrides) -> pd.DataFrame:
    data = {
        "date": ["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"],
        "ret": ["0.01", "-0.02", "0.005", "0.0"],
    }
    data.update(overrides)
    return pd.DataFrame(data)


def trades_frame(**overrides) -> pd.DataFrame:
    data = {
        "ts": ["2024-01-02T14:30:00Z", "2024-01-02T15:00:00+01:00", "2024-01-03 10:00:00"],
        "symbol": ["AAPL", "MSFT", "AAPL"],
        "side": ["buy", "SELL", " Buy "],
        "qty": ["100", "-50", "25"],
        "price": ["190.5", "370.25", "191"],
        "notional": ["19050", "-18512.5", "4775"],
    }
    data.update(overrides)
    return pd.DataFrame(data)


def failure(schema, frame, source="returns.csv", **kwargs) -> ContractError:
    with pytest.raises(ContractError) as info:
        validate_frame(schema, frame, source, **kwargs)
    return info.value


def test_valid_returns_are_coerced_to_dates_and_floats():
    out = validate_frame(ReturnsSchema, returns_frame(), "returns.csv")
    assert str(out["date"].dtype) == "datetime64[ns]"
    assert out["ret"].dtype == np.float64
    assert out["ret"].tolist() == [0.01, -0.02, 0.005, 0.0]
    assert out["date"].iloc[0] == pd.Timestamp("2024-01-02")


def test_input_frame_is_not_modified():
    frame = returns_frame()
    validate_frame(ReturnsSchema, frame, "returns.csv")
    assert frame["ret"].tolist() == ["0.01", "-0.02", "0.005", "0.0"]


def test_return_at_or_below_minus_one_names_file_column_and_row():
    error = failure(ReturnsSchema, returns_frame(ret=["0.01", "-0.02", "-1.2", "-1"]))
    assert str(error).splitlines() == [
        "returns.csv: column 'ret' row 3: value -1.2 must be > -1",
        "returns.csv: column 'ret' row 4: value -1.0 must be > -1",
    ]
    assert (error.file, error.column, error.row) == ("returns.csv", "ret", 3)
    assert error.problem_count == 2
    assert [p.row for p in error.problems] == [3, 4]


def test_nan_return_is_reported_as_missing():
    error = failure(ReturnsSchema, returns_frame(ret=["0.01", None, "0.005", "0.0"]))
    assert str(error) == "returns.csv: column 'ret' row 2: value is missing (empty or NaN)"


def test_infinite_return_is_not_finite():
    error = failure(ReturnsSchema, returns_frame(ret=["0.01", "inf", "0.005", "-inf"]))
    assert str(error).splitlines() == [
        "returns.csv: column 'ret' row 2: value inf must be finite",
        "returns.csv: column 'ret' row 4: value -inf must be > -1 and must be finite",
    ]


def test_duplicate_date_is_reported_at_every_occurrence():
    dates = ["2024-01-02", "2024-01-03", "2024-01-03", "2024-01-04"]
    error = failure(ReturnsSchema, returns_frame(date=dates))
    assert str(error).splitlines() == [
        "returns.csv: column 'date' row 2: value 2024-01-03 appears more than once",
        "returns.csv: column 'date' row 3: value 2024-01-03 appears more than once",
    ]


def test_unsorted_date_names_the_previous_date():
    dates = ["2024-01-02", "2024-01-05", "2024-01-03", "2024-01-06"]
    error = failure(ReturnsSchema, returns_frame(date=dates))
    assert str(error) == (
        "returns.csv: column 'date' row 3: value 2024-01-03 comes before the previous date "
        "2024-01-05 (dates must be increasing)"
    )


def test_unparseable_date_is_reported_once_and_other_checks_still_run():
    dates = ["2024-01-02", "02/01/2024", "2024-01-04", "2024-01-05"]
    error = failure(ReturnsSchema, returns_frame(date=dates, ret=["0.01", "0.0", "-3", "0.0"]))
    assert str(error).splitlines() == [
        "returns.csv: column 'date' row 2: value '02/01/2024' is not an ISO-8601 date",
        "returns.csv: column 'ret' row 3: value -3.0 must be > -1",
    ]


def test_intraday_timestamp_is_not_a_daily_date():
    dates = ["2024-01-02", "2024-01-03T16:00:00", "2024-01-04", "2024-01-05"]
    error = failure(ReturnsSchema, returns_frame(date=dates))
    assert error.problems == [
        Problem(
            "returns.csv",
            "value 2024-01-03T16:00:00 must be a calendar date without a time of day",
            column="date",
            row=2,
        )
    ]


def test_text_in_number_column_is_not_a_number():
    error = failure(ReturnsSchema, returns_frame(ret=["0.01", "abc", "0.005", "1,5"]))
    assert str(error).splitlines() == [
        "returns.csv: column 'ret' row 2: value 'abc' is not a number",
        "returns.csv: column 'ret' row 4: value '1,5' is not a number",
    ]


def test_boolean_column_is_a_wrong_type_for_returns():
    frame = pd.DataFrame({"date": pd.date_range("2024-01-02", periods=3), "ret": [True, False, True]})
    error = failure(ReturnsSchema, frame)
    assert str(error) == "returns.csv: column 'ret': has type bool, expected numbers"
    assert error.row is None and error.column == "ret"


def test_numeric_dates_are_a_wrong_type():
    frame = pd.DataFrame({"date": [20240102, 20240103], "ret": [0.01, 0.02]})
    error = failure(ReturnsSchema, frame)
    assert str(error) == "returns.csv: column 'date': has type int64, expected ISO-8601 dates"


def test_missing_and_unexpected_columns_are_file_level_problems():
    frame = pd.DataFrame({"day": ["2024-01-02"], "ret": [0.01], "note": ["x"]})
    error = failure(ReturnsSchema, frame)
    lines = str(error).splitlines()
    assert "returns.csv: missing required column 'date'" in lines
    assert (
        "returns.csv: unexpected column 'day' (expected columns: date, ret, benchmark_ret)" in lines
    )
    assert (
        "returns.csv: unexpected column 'note' (expected columns: date, ret, benchmark_ret)" in lines
    )
    assert all(p.row is None and p.column is None for p in error.problems)


def test_empty_frame_is_rejected_only_when_asked():
    empty = pd.DataFrame({"date": pd.Series([], dtype=str), "ret": pd.Series([], dtype=str)})
    error = failure(ReturnsSchema, empty, allow_empty=False)
    assert str(error) == "returns.csv: has no data rows"
    assert len(validate_frame(ReturnsSchema, empty, "returns.csv")) == 0


def test_optional_benchmark_obeys_the_return_rules():
    frame = returns_frame(benchmark_ret=["0.0", "-1.5", None, "0.01"])
    error = failure(ReturnsSchema, frame)
    assert str(error).splitlines() == [
        "returns.csv: column 'benchmark_ret' row 2: value -1.5 must be > -1",
        "returns.csv: column 'benchmark_ret' row 3: value is missing (empty or NaN)",
    ]
    ok = validate_frame(ReturnsSchema, returns_frame(benchmark_ret=["0", "0.1", "-0.1", "0"]), "x")
    assert ok["benchmark_ret"].tolist() == [0.0, 0.1, -0.1, 0.0]


def test_every_problem_is_collected_in_one_error():
    frame = pd.DataFrame(
        {
            "date": ["2024-01-02", "2024-01-02", "bad", "2023-12-01"],
            "ret": ["0.1", "nope", None, "-1"],
            "extra": [1, 2, 3, 4],
        }
    )
    error = failure(ReturnsSchema, frame)
    assert error.problem_count == 8
    assert str(error).splitlines()[0].startswith("returns.csv: unexpected column 'extra'")


def test_problems_are_capped_but_counted():
    frame = pd.DataFrame(
        {"date": pd.date_range("2000-01-01", periods=500), "ret": [np.nan] * 500}
    )
    error = failure(ReturnsSchema, frame, max_problems=10)
    assert len(error.problems) == 10
    assert error.problem_count == 500
    lines = str(error).splitlines()
    assert len(lines) == 11
    assert lines[-1] == "... and 490 more problems"


def test_rows_follow_positions_for_a_non_range_index():
    frame = returns_frame(ret=["0.01", "-2", "0.0", "0.0"])
    frame.index = ["a", "b", "c", "d"]
    error = failure(ReturnsSchema, frame)
    assert error.row == 2


def test_valid_trades_normalise_side_and_timestamps_to_utc():
    out = validate_frame(TradesSchema, trades_frame(), "trades.csv")
    assert out["side"].tolist() == ["buy", "sell", "buy"]
    assert str(out["ts"].dtype) == "datetime64[ns, UTC]"
    assert out["ts"].tolist() == [
        pd.Timestamp("2024-01-02T14:30:00Z"),
        pd.Timestamp("2024-01-02T14:00:00Z"),
        pd.Timestamp("2024-01-03T10:00:00Z"),
    ]
    assert out["qty"].tolist() == [100.0, -50.0, 25.0]


def test_trade_rules_each_report_their_cell():
    frame = trades_frame(
        ts=["2024-01-02T14:30:00Z", "yesterday", "2024-01-03 10:00:00"],
        symbol=["AAPL", "  ", "AAPL"],
        side=["buy", "sell", "hold"],
        qty=["100", "0", "25"],
        price=["0", "370.25", "-1"],
        notional=["19050", "nan", "4775"],
    )
    error = failure(TradesSchema, frame, "trades.csv")
    assert str(error).splitlines() == [
        "trades.csv: column 'price' row 1: value 0.0 must be > 0",
        "trades.csv: column 'notional' row 2: value is missing (empty or NaN)",
        "trades.csv: column 'qty' row 2: value 0.0 must not be 0",
        "trades.csv: column 'symbol' row 2: value '  ' must not be blank",
        "trades.csv: column 'ts' row 2: value 'yesterday' is not an ISO-8601 timestamp",
        "trades.csv: column 'price' row 3: value -1.0 must be > 0",
        "trades.csv: column 'side' row 3: value 'hold' must be one of buy, sell",
    ]


def test_optional_liquidity_columns_must_be_positive_and_finite():
    frame = trades_frame(adv_notional=["1e6", "0", "inf"], bar_volume=["1000", "500", "-1"])
    error = failure(TradesSchema, frame, "trades.csv")
    assert str(error).splitlines() == [
        "trades.csv: column 'adv_notional' row 2: value 0.0 must be > 0",
        "trades.csv: column 'adv_notional' row 3: value inf must be finite",
        "trades.csv: column 'bar_volume' row 3: value -1.0 must be > 0",
    ]


def test_non_text_symbols_in_an_object_column_are_not_text():
    frame = trades_frame(symbol=["AAPL", 7, "MSFT"])
    error = failure(TradesSchema, frame, "trades.parquet")
    assert str(error) == "trades.parquet: column 'symbol' row 2: value 7 is not text"


def test_validate_frame_works_for_any_model_such_as_an_output_table():
    class Scores(pa.DataFrameModel):
        run_id: Series[str] = pa.Field(unique=True)
        coverage: Series[float] = pa.Field(in_range={"min_value": 0, "max_value": 1})
        n_rules: Series[int] = pa.Field(ge=0)

        class Config:
            strict = True
            coerce = True

    good = pd.DataFrame({"run_id": ["a", "b"], "coverage": [0.5, 1.0], "n_rules": [5, 3]})
    assert validate_frame(Scores, good, "scores").shape == (2, 3)
    bad = pd.DataFrame({"run_id": ["a", "a"], "coverage": [1.5, 0.2], "n_rules": [2.5, -1]})
    error = failure(Scores, bad, "evaluation_metrics")
    assert str(error).splitlines() == [
        "evaluation_metrics: column 'coverage' row 1: value 1.5 must be in [0, 1]",
        "evaluation_metrics: column 'n_rules' row 1: value 2.5 is not an integer",
        "evaluation_metrics: column 'run_id' row 1: value 'a' appears more than once",
        "evaluation_metrics: column 'n_rules' row 2: value -1 must be >= 0",
        "evaluation_metrics: column 'run_id' row 2: value 'a' appears more than once",
    ]


def test_error_class_can_be_chosen_by_the_caller():
    class InputError(ContractError):
        pass

    with pytest.raises(InputError):
        validate_frame(ReturnsSchema, returns_frame(ret=["x"] * 4), "r", error_cls=InputError)


def test_problem_to_dict_round_trips_its_location():
    problem = Problem("returns.csv", "value -1.2 must be > -1", column="ret", row=17)
    assert str(problem) == "returns.csv: column 'ret' row 17: value -1.2 must be > -1"
    assert problem.to_dict() == {
        "file": "returns.csv",
        "column": "ret",
        "row": 17,
        "path": None,
        "message": "value -1.2 must be > -1",
    }


def test_dates_with_different_offsets_are_a_column_problem():
    frame = returns_frame(
        date=["2024-01-02T00:00:00+01:00", "2024-01-03T00:00:00+02:00", "2024-01-04", "2024-01-05"]
    )
    error = failure(ReturnsSchema, frame)
    assert str(error) == (
        "returns.csv: column 'date': mixes time zone offsets; use one offset or plain dates"
    )


def test_a_bad_id_in_a_run_table_is_reported_at_its_row_with_the_pattern():
    from qmtl_validation.core.contracts import StrategyReturnsTable

    frame = pd.DataFrame({
        "world_id": ["w1", "w1", "w1", "w1"],
        "strategy_id": ["s1", "s1", "../etc", "s1"],
        "run_id": ["r1", "r1", "r1", "r 1"],
        "recorded_at": pd.Timestamp("2026-11-27", tz="UTC"),
        "date": pd.bdate_range("2025-01-01", periods=4),
        "ret": [0.01, 0.0, -0.01, 0.02],
        "benchmark_ret": np.nan,
    })
    with pytest.raises(ContractError) as failure:
        validate_frame(StrategyReturnsTable, frame, "strategy_returns")
    found = {(p.column, p.row, p.message) for p in failure.value.problems}
    pattern = "must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
    assert found == {("strategy_id", 3, f"value '../etc' {pattern}"), ("run_id", 4, f"value 'r 1' {pattern}")}
