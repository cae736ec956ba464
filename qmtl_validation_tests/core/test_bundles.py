"""Loading run bundles, manifests and guarded JSON from the landing zone (SPEC §3)."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qmtl_validation.core.bundles import (
    BundleError,
    RunManifest,
    bundle_content_hash,
    load_bundle,
    load_bundle_from_files,
    load_returns,
    load_trades,
    parse_json_document,
    parse_manifest,
    returns_series,
)
from qmtl_validation.core.contracts import ContractError

UTC = dt.timezone.utc

RETURNS_CSV = b"date,ret,benchmark_ret\n2024-01-02,0.01,0.002\n2024-01-03,-0.02,0.001\n2024-01-04,0.005,-0.003\n"
TRADES_CSV = (
    b"ts,symbol,side,qty,price,notional,adv_notional,bar_volume\n"
    b"2024-01-02T14:30:00Z,AAPL,BUY,100,190.5,19050,5e9,120000\n"
    b"2024-01-03T15:00:00Z,AAPL,sell,40,192,7680,5e9,80000\n"
)


def manifest_dict(**overrides) -> dict:
    data = {
        "world_id": "world-a",
        "strategy_id": "mom_12_1",
        "run_id": "run-001",
        "stage": "backtest",
        "risk_tier": "medium",
        "submitted_at": "2024-01-05T08:00:00Z",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not ...}


def manifest_bytes(**overrides) -> bytes:
    return json.dumps(manifest_dict(**overrides)).encode()


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def bundle_error(fn, *args, **kwargs) -> BundleError:
    with pytest.raises(BundleError) as info:
        fn(*args, **kwargs)
    return info.value


# --- returns and trades files ----------------------------------------------------------------


def test_returns_csv_loads_with_benchmark():
    frame = load_returns(RETURNS_CSV, source_name="returns.csv")
    assert frame["date"].tolist() == list(pd.to_datetime(["2024-01-02", "2024-01-03", "2024-01-04"]))
    assert frame["ret"].tolist() == [0.01, -0.02, 0.005]
    returns, benchmark = returns_series(frame)
    assert returns.index.name == "date" and returns.name == "ret"
    assert returns.loc["2024-01-03"] == -0.02
    assert benchmark is not None and benchmark.tolist() == [0.002, 0.001, -0.003]


def test_returns_parquet_with_date_objects_loads_like_csv():
    frame = pd.DataFrame(
        {"date": [dt.date(2024, 1, 2), dt.date(2024, 1, 3)], "ret": [0.01, -0.02]}
    )
    loaded = load_returns(parquet_bytes(frame), source_name="returns.parquet")
    assert str(loaded["date"].dtype) == "datetime64[ns]"
    assert loaded["ret"].tolist() == [0.01, -0.02]


def test_returns_parquet_with_utc_midnight_timestamps_keeps_the_calendar_day():
    dates = pd.date_range("2024-01-02", periods=3, tz="UTC")
    loaded = load_returns(
        parquet_bytes(pd.DataFrame({"date": dates, "ret": [0.0, 0.01, 0.02]})),
        source_name="returns.parquet",
    )
    assert loaded["date"].dt.strftime("%Y-%m-%d").tolist() == ["2024-01-02", "2024-01-03", "2024-01-04"]


def test_returns_file_on_disk_is_named_by_its_file_name(tmp_path: Path):
    path = tmp_path / "returns.csv"
    path.write_bytes(b"date,ret\n2024-01-02,0.01\n2024-01-03,NaN\n")
    error = bundle_error(load_returns, path)
    assert str(error) == "returns.csv: column 'ret' row 2: value is missing (empty or NaN)"


@pytest.mark.parametrize(
    ("csv", "expected"),
    [
        (
            b"date,ret\n2024-01-02,0.01\n2024-01-03,\n",
            "returns.csv: column 'ret' row 2: value is missing (empty or NaN)",
        ),
        (
            b"date,ret\n2024-01-02,0.01\n2024-01-02,0.02\n",
            "returns.csv: column 'date' row 1: value 2024-01-02 appears more than once\n"
            "returns.csv: column 'date' row 2: value 2024-01-02 appears more than once",
        ),
        (
            b"date,ret\n2024-01-03,0.01\n2024-01-02,0.02\n",
            "returns.csv: column 'date' row 2: value 2024-01-02 comes before the previous date "
            "2024-01-03 (dates must be increasing)",
        ),
        (b"date\n2024-01-02\n", "returns.csv: missing required column 'ret'"),
        (
            b"date,ret\n2024-01-02,0.01\n2024-01-03,-1.0\n",
            "returns.csv: column 'ret' row 2: value -1.0 must be > -1",
        ),
        (
            b"date,ret\n2024-01-02,0.01\n2024-01-03,-1.2\n",
            "returns.csv: column 'ret' row 2: value -1.2 must be > -1",
        ),
        (b"", "returns.csv: is empty"),
        (b"date,ret\n", "returns.csv: has no data rows"),
        (
            b"date,ret\n2024-01-02,0.01\nJan 3rd,0.02\n",
            "returns.csv: column 'date' row 2: value 'Jan 3rd' is not an ISO-8601 date",
        ),
        (
            b"date,ret\n2024-01-02,1%\n",
            "returns.csv: column 'ret' row 1: value '1%' is not a number",
        ),
        (
            b"date,ret,weight\n2024-01-02,0.01,1\n",
            "returns.csv: unexpected column 'weight' (expected columns: date, ret, benchmark_ret)",
        ),
    ],
    ids=[
        "nan", "duplicate-date", "unsorted", "missing-column", "return-minus-one",
        "return-below-minus-one", "empty-file", "header-only", "unparseable-date", "wrong-type",
        "extra-column",
    ],
)
def test_bad_returns_csv_raises_a_precise_error(csv: bytes, expected: str):
    error = bundle_error(load_returns, csv, source_name="returns.csv")
    assert str(error) == expected
    assert isinstance(error, ContractError) and isinstance(error, ValueError)


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (
            pd.DataFrame({"date": pd.to_datetime(["2024-01-02", "2024-01-03"]), "ret": [0.01, np.nan]}),
            "returns.parquet: column 'ret' row 2: value is missing (empty or NaN)",
        ),
        (
            pd.DataFrame({"date": pd.to_datetime(["2024-01-03", "2024-01-02"]), "ret": [0.01, 0.0]}),
            "returns.parquet: column 'date' row 2: value 2024-01-02 comes before the previous date "
            "2024-01-03 (dates must be increasing)",
        ),
        (
            pd.DataFrame({"date": pd.to_datetime(["2024-01-02", "2024-01-02"]), "ret": [0.01, 0.0]}),
            "returns.parquet: column 'date' row 1: value 2024-01-02 appears more than once\n"
            "returns.parquet: column 'date' row 2: value 2024-01-02 appears more than once",
        ),
        (
            pd.DataFrame({"date": pd.to_datetime(["2024-01-02"]), "ret": [-1.5]}),
            "returns.parquet: column 'ret' row 1: value -1.5 must be > -1",
        ),
        (
            pd.DataFrame({"date": pd.to_datetime(["2024-01-02"]), "ret": [np.inf]}),
            "returns.parquet: column 'ret' row 1: value inf must be finite",
        ),
        (
            pd.DataFrame({"date": pd.to_datetime(["2024-01-02"])}),
            "returns.parquet: missing required column 'ret'",
        ),
        (
            pd.DataFrame({"date": ["2024-01-02"], "ret": ["0.01"]}).iloc[:0],
            "returns.parquet: has no data rows",
        ),
        (
            pd.DataFrame({"date": pd.to_datetime(["2024-01-02"]), "ret": [True]}),
            "returns.parquet: column 'ret': has type bool, expected numbers",
        ),
    ],
    ids=["nan", "unsorted", "duplicate", "below-minus-one", "infinite", "missing-column", "empty", "bool"],
)
def test_bad_returns_parquet_raises_a_precise_error(frame: pd.DataFrame, expected: str):
    error = bundle_error(load_returns, parquet_bytes(frame), source_name="returns.parquet")
    assert str(error) == expected


def test_corrupt_parquet_is_not_readable():
    error = bundle_error(load_returns, b"PAR1 not really", source_name="returns.parquet")
    assert str(error).startswith("returns.parquet: is not a readable Parquet file (")


def test_non_utf8_csv_names_the_offending_byte():
    data = "date,ret\n2024-01-02,0.01\n".encode() + b"\xff\xfe,0.1\n"
    error = bundle_error(load_returns, data, source_name="returns.csv")
    assert str(error) == "returns.csv: is not UTF-8 text: byte 0xff at offset 25"


def test_ragged_csv_is_not_valid_csv():
    error = bundle_error(load_returns, b"date,ret\n2024-01-02,0.01,7,8\n", source_name="returns.csv")
    assert str(error).startswith("returns.csv: is not valid CSV (")


def test_unknown_extension_needs_an_explicit_format():
    error = bundle_error(load_returns, RETURNS_CSV, source_name="returns.txt")
    assert str(error) == "returns.txt: has an unknown table format (expected a .csv or .parquet file)"
    assert len(load_returns(RETURNS_CSV, source_name="returns.txt", format="csv")) == 3


def test_table_above_the_size_cap_is_rejected_before_parsing():
    error = bundle_error(load_returns, RETURNS_CSV, source_name="returns.csv", max_bytes=10)
    assert "above the 10-byte limit" in str(error)


def test_trades_csv_loads_with_lowercased_side_and_utc_times():
    trades = load_trades(TRADES_CSV, source_name="trades.csv")
    assert trades["side"].tolist() == ["buy", "sell"]
    assert str(trades["ts"].dtype) == "datetime64[ns, UTC]"
    assert trades["adv_notional"].tolist() == [5e9, 5e9]


def test_trades_parquet_round_trip():
    frame = load_trades(TRADES_CSV, source_name="trades.csv")
    again = load_trades(parquet_bytes(frame), source_name="trades.parquet")
    pd.testing.assert_frame_equal(frame, again)


def test_bad_trades_report_each_problem():
    csv = (
        b"ts,symbol,side,qty,price,notional\n"
        b"2024-01-02T14:30:00Z,AAPL,long,100,190.5,19050\n"
        b"2024-01-02T14:31:00Z,,buy,10,-1,inf\n"
    )
    error = bundle_error(load_trades, csv, source_name="trades.csv")
    assert str(error).splitlines() == [
        "trades.csv: column 'side' row 1: value 'long' must be one of buy, sell",
        "trades.csv: column 'notional' row 2: value inf must be finite",
        "trades.csv: column 'price' row 2: value -1.0 must be > 0",
        "trades.csv: column 'symbol' row 2: value is missing (empty or NaN)",
    ]


# --- guarded JSON ----------------------------------------------------------------------------


def test_json_document_parses_an_object():
    assert parse_json_document(b'{"a": [1, 2.5, "x"]}', source_name="doc.json") == {"a": [1, 2.5, "x"]}


def test_json_utf8_bom_is_accepted():
    assert parse_json_document(b'\xef\xbb\xbf{"a": 1}', source_name="doc.json") == {"a": 1}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'{"a": NaN}', "doc.json: is not valid JSON: NaN is not valid JSON (numbers must be finite)"),
        (b'{"a": -Infinity}', "doc.json: is not valid JSON: -Infinity is not valid JSON (numbers must be finite)"),
        (b'{"a": 1e999}', "doc.json: is not valid JSON: number 1e999 is out of range"),
        (b'{"a": 1, "a": 2}', "doc.json: is not valid JSON: duplicate key 'a'"),
        (b'{"a": 1,}', "doc.json: is not valid JSON: line 1 column 9: Expecting property name enclosed in double quotes"),
        (b"[1, 2]", "doc.json: must be a JSON object, not an array"),
        (b"   ", "doc.json: is empty"),
        (b'{"a": "caf\xe9"}', "doc.json: is not UTF-8 text: byte 0xe9 at offset 10"),
    ],
    ids=["nan", "infinity", "overflow", "duplicate-key", "syntax", "not-object", "blank", "latin-1"],
)
def test_bad_json_documents_are_rejected(data: bytes, expected: str):
    assert str(bundle_error(parse_json_document, data, source_name="doc.json")) == expected


def test_json_nesting_deeper_than_the_limit_is_rejected():
    ok = b'{"a":' + b"[" * 31 + b"]" * 31 + b"}"
    assert parse_json_document(ok, source_name="doc.json")["a"]
    deep = b'{"a":' + b"[" * 32 + b"]" * 32 + b"}"
    assert str(bundle_error(parse_json_document, deep, source_name="doc.json")) == (
        "doc.json: nests deeper than 32 levels"
    )


def test_json_nesting_far_beyond_the_interpreter_limit_is_an_error_not_a_crash():
    bomb = b"[" * 200_000 + b"]" * 200_000
    error = bundle_error(parse_json_document, bomb, source_name="doc.json", max_bytes=10**6)
    assert str(error) == "doc.json: nests deeper than 32 levels"


def test_json_above_the_size_cap_is_rejected():
    data = b'{"a": "' + b"x" * 100 + b'"}'
    error = bundle_error(parse_json_document, data, source_name="doc.json", max_bytes=64)
    assert str(error) == "doc.json: is 109 bytes, above the 64-byte limit"


# --- run.json --------------------------------------------------------------------------------


def test_minimal_manifest_gets_defaults():
    manifest = parse_manifest(manifest_bytes())
    assert manifest.partition_key == "world-a/mom_12_1/run-001"
    assert manifest.stage == "backtest" and manifest.risk_tier == "medium"
    assert manifest.submitted_at == dt.datetime(2024, 1, 5, 8, tzinfo=UTC)
    assert manifest.search_intensity == 1
    assert manifest.trial_sharpes is None and manifest.capital is None
    assert manifest.complexity == {} and manifest.extra_metrics == {}


def test_full_manifest_round_trips_through_to_dict():
    manifest = parse_manifest(
        manifest_bytes(
            stage="Paper",
            risk_tier="HIGH",
            submitted_at="2024-01-05T09:00:00+01:00",
            model_card_version="v1.2",
            search_intensity=40,
            trial_sharpes=[0.05, 0.08, -0.01],
            campaign_id="campaign_2024q1",
            complexity={"n_parameters": 12, "n_features": 30.0},
            capital=2_000_000,
            returns_source="backtest.engine",
            extra_metrics={"turnover": 1.7, "venue": "XNAS", "hedged": True, "note": None},
        )
    )
    assert manifest.stage == "paper" and manifest.risk_tier == "high"
    assert manifest.submitted_at == dt.datetime(2024, 1, 5, 8, tzinfo=UTC)
    assert manifest.trial_sharpes == (0.05, 0.08, -0.01)
    assert manifest.complexity == {"n_parameters": 12.0, "n_features": 30.0}
    assert manifest.capital == 2_000_000.0
    as_dict = manifest.to_dict()
    assert as_dict["submitted_at"] == "2024-01-05T08:00:00Z"
    assert RunManifest.from_dict(as_dict) == manifest


def test_naive_submission_time_is_utc():
    manifest = parse_manifest(manifest_bytes(submitted_at="2024-01-05 08:00:00"))
    assert manifest.submitted_at == dt.datetime(2024, 1, 5, 8, tzinfo=UTC)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"strategy": "x"}, "run.json: key 'strategy': unknown key (did you mean 'strategy_id'?)"),
        ({"sumbitted_at": "x"}, "run.json: key 'sumbitted_at': unknown key (did you mean 'submitted_at'?)"),
        ({"world_id": "../x"}, "run.json: key 'world_id': world_id '../x' is not a valid identifier"),
        ({"run_id": ".."}, "run.json: key 'run_id': run_id '..' is not a valid identifier"),
        ({"strategy_id": "a/b"}, "run.json: key 'strategy_id': strategy_id 'a/b' is not a valid identifier"),
        ({"run_id": "a,b"}, "run.json: key 'run_id': run_id 'a,b' is not a valid identifier"),
        ({"world_id": 7}, "run.json: key 'world_id': world_id 7 is not a valid identifier"),
        ({"stage": "prod"}, "run.json: key 'stage': 'prod' is not one of backtest, paper, live"),
        ({"risk_tier": "extreme"}, "run.json: key 'risk_tier': 'extreme' is not one of low, medium, high"),
        ({"submitted_at": "yesterday"}, "run.json: key 'submitted_at': 'yesterday' is not an ISO-8601 timestamp"),
        ({"submitted_at": 1704441600}, "run.json: key 'submitted_at': must be an ISO-8601 string, not a number"),
        ({"run_id": ...}, "run.json: key 'run_id': required key is missing"),
        ({"search_intensity": 0}, "run.json: key 'search_intensity': 0 must be an integer >= 1"),
        ({"search_intensity": 2.5}, "run.json: key 'search_intensity': 2.5 must be an integer >= 1"),
        ({"search_intensity": True}, "run.json: key 'search_intensity': True must be an integer >= 1"),
        ({"trial_sharpes": [0.1, "x"]}, "run.json: key 'trial_sharpes': entries must be finite numbers: [1]='x'"),
        ({"trial_sharpes": []}, "run.json: key 'trial_sharpes': must not be empty"),
        ({"campaign_id": "camp 1"}, "run.json: key 'campaign_id': campaign_id 'camp 1' is not a valid identifier"),
        ({"complexity": {"n_features": -1}}, "run.json: key 'complexity.n_features': -1 must be a finite number >= 0"),
        ({"complexity": [1]}, "run.json: key 'complexity': must be an object of numbers, not an array"),
        ({"capital": 0}, "run.json: key 'capital': 0 must be a finite number > 0"),
        ({"returns_source": "  "}, "run.json: key 'returns_source': must be a non-blank string"),
        ({"extra_metrics": {"x": {"y": 1}}}, "run.json: key 'extra_metrics.x': must be a string, number, boolean or null, not an object"),
        ({"extra_metrics": [1]}, "run.json: key 'extra_metrics': must be an object, not an array"),
        ({"client_critical": True}, "run.json: key 'client_critical': not a run field: it is a world setting"),
    ],
    ids=lambda v: str(v)[:40] if isinstance(v, dict) else None,
)
def test_bad_manifest_raises_a_precise_error(overrides: dict, expected: str):
    error = bundle_error(parse_manifest, manifest_bytes(**overrides))
    assert str(error).startswith(expected)
    assert error.file == "run.json"


def test_manifest_reports_every_problem_at_once():
    error = bundle_error(
        parse_manifest, manifest_bytes(stage="prod", capital=-1, strategy_id="../../etc", colour="red")
    )
    assert [p.path for p in error.problems] == ["colour", "strategy_id", "stage", "capital"]
    assert error.problem_count == 4


def test_manifest_with_nan_literal_is_rejected():
    data = manifest_bytes()[:-1] + b', "capital": NaN}'
    assert "NaN is not valid JSON" in str(bundle_error(parse_manifest, data))


def test_manifest_above_five_megabytes_is_rejected():
    padding = "x" * (5 * 1024 * 1024)
    data = manifest_bytes(returns_source=padding)
    assert "above the 5,242,880-byte limit" in str(bundle_error(parse_manifest, data))


# --- bundles ---------------------------------------------------------------------------------


def write_bundle(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return folder


def test_local_csv_bundle_loads_completely(tmp_path: Path):
    folder = write_bundle(
        tmp_path / "runs/2024-01-05/world-a/mom_12_1/run-001",
        {"returns.csv": RETURNS_CSV, "trades.csv": TRADES_CSV, "run.json": manifest_bytes()},
    )
    bundle = load_bundle(folder, expected_key="world-a/mom_12_1/run-001")
    assert bundle.partition_key == "world-a/mom_12_1/run-001"
    assert bundle.returns.tolist() == [0.01, -0.02, 0.005]
    assert isinstance(bundle.returns.index, pd.DatetimeIndex)
    assert bundle.benchmark is not None and len(bundle.benchmark) == 3
    assert bundle.trades is not None and len(bundle.trades) == 2
    assert set(bundle.files) == {"returns.csv", "trades.csv", "run.json"}
    assert bundle.content_hash.startswith("sha256:") and len(bundle.content_hash) == 71


def test_parquet_bundle_without_trades_from_s3_style_keys():
    prefix = "runs/2024-01-05/world-a/mom_12_1/run-001"
    returns = pd.DataFrame({"date": pd.date_range("2024-01-02", periods=4), "ret": [0.01, 0.0, -0.01, 0.02]})
    bundle = load_bundle_from_files(
        {f"{prefix}/returns.parquet": parquet_bytes(returns), f"{prefix}/run.json": manifest_bytes()}
    )
    assert bundle.trades is None and bundle.benchmark is None
    assert bundle.returns.tolist() == [0.01, 0.0, -0.01, 0.02]
    assert bundle.files["run.json"] == f"{prefix}/run.json"


def test_content_hash_ignores_order_and_location_but_not_content():
    files = {"returns.csv": RETURNS_CSV, "run.json": manifest_bytes()}
    reordered = {"run.json": manifest_bytes(), "returns.csv": RETURNS_CSV}
    assert bundle_content_hash(files) == bundle_content_hash(reordered)
    from_keys = load_bundle_from_files({f"a/b/{k}": v for k, v in files.items()})
    assert from_keys.content_hash == load_bundle_from_files(files).content_hash
    changed = dict(files, **{"returns.csv": RETURNS_CSV.replace(b"0.01", b"0.011")})
    assert bundle_content_hash(changed) != bundle_content_hash(files)


def test_bundle_without_run_json_is_incomplete():
    error = bundle_error(load_bundle_from_files, {"runs/x/returns.csv": RETURNS_CSV})
    assert str(error) == "runs/x/run.json: is missing: the bundle is not complete"


def test_bundle_without_returns_is_rejected():
    error = bundle_error(load_bundle_from_files, {"run.json": manifest_bytes()})
    assert str(error) == "returns.parquet: is missing, and so is returns.csv: no returns"


def test_bundle_with_both_formats_of_returns_is_ambiguous():
    files = {"returns.csv": RETURNS_CSV, "returns.parquet": b"x", "run.json": manifest_bytes()}
    error = bundle_error(load_bundle_from_files, files)
    assert "both present: keep one format" in str(error)


def test_unexpected_files_are_rejected_but_markers_ignored(tmp_path: Path):
    folder = write_bundle(
        tmp_path / "b",
        {"returns.csv": RETURNS_CSV, "run.json": manifest_bytes(), ".DS_Store": b"x", "_SUCCESS": b""},
    )
    assert load_bundle(folder).returns.size == 3
    (folder / "notes.txt").write_text("hi")
    error = bundle_error(load_bundle, folder)
    assert str(error).endswith("notes.txt: is not a bundle file (expected returns.parquet, returns.csv, trades.parquet, trades.csv, run.json)")


def test_problems_in_several_files_are_reported_together():
    files = {
        "returns.csv": b"date,ret\n2024-01-02,-1.5\n",
        "trades.csv": b"ts,symbol,side,qty,price,notional\n2024-01-02T10:00:00Z,A,buy,1,0,1\n",
        "run.json": manifest_bytes(stage="prod"),
    }
    error = bundle_error(load_bundle_from_files, files)
    assert str(error).splitlines() == [
        "run.json: key 'stage': 'prod' is not one of backtest, paper, live",
        "returns.csv: column 'ret' row 1: value -1.5 must be > -1",
        "trades.csv: column 'price' row 1: value 0.0 must be > 0",
    ]
    assert error.files == ["run.json", "returns.csv", "trades.csv"]


def test_manifest_must_match_the_landing_path():
    files = {"returns.csv": RETURNS_CSV, "run.json": manifest_bytes(run_id="run-002")}
    error = bundle_error(load_bundle_from_files, files, expected_key="world-a/mom_12_1/run-001")
    assert str(error) == (
        "run.json: identifies run 'world-a/mom_12_1/run-002' but was dropped under "
        "'world-a/mom_12_1/run-001'"
    )


def test_path_like_identifier_in_bundle_is_rejected():
    files = {"returns.csv": RETURNS_CSV, "run.json": manifest_bytes(world_id="../../etc")}
    error = bundle_error(load_bundle_from_files, files)
    assert error.path == "world_id"
    assert "is not a valid identifier" in str(error)


def test_missing_bundle_folder_is_file_not_found(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        load_bundle(tmp_path / "nope")


def test_csv_line_with_missing_fields_reports_missing_values():
    error = bundle_error(load_returns, b"date,ret\n2024-01-02\n", source_name="returns.csv")
    assert str(error) == "returns.csv: column 'ret' row 1: value is missing (empty or NaN)"


def test_csv_header_repeating_a_column_is_rejected():
    error = bundle_error(load_returns, b"date,ret,ret\n2024-01-02,0.1,0.2\n", source_name="returns.csv")
    assert str(error) == "returns.csv: header repeats column 'ret'"
