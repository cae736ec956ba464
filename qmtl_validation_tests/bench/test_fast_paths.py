"""Every shortcut taken for the benchmarks' targets returns what the straightforward path returns.

- bundle tables: the vectorised checks of clean Parquet/CSV tables (``bundles._clean_returns`` /
  ``_clean_trades`` / ``_typed``) against the full pandera contract (``validate_frame``) — same
  frame when the table is valid, and, when it is not, the same error (the shortcut steps aside);
- Parquet reading through ``ParquetFile`` against ``pandas.read_parquet``;
- the column-wise ``strategy_returns`` / ``strategy_trades`` rows and the one-pass rule-row reader
  against the per-run frames and ``groupby`` they replaced;
- model cards parsed by libyaml against ``yaml.safe_load``;
- a report rendered from one shared document against two separately built ones;
- the Dagster type that trusts a frame just validated against its own contract, and only that.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qmtl_validation.core import bundles, contracts
from qmtl_validation.core.bundles import BundleError, load_bundle_from_files, load_returns, load_trades
from qmtl_validation.core.contracts import ReturnsSchema, TradesSchema, validate_frame
from qmtl_validation.sample_data import generate_sample
from qmtl_validation.warehouse import run_rows

TODAY = "2026-11-27"


@pytest.fixture(scope="module")
def landing(tmp_path_factory) -> Path:
    """A sample landing zone: three worlds, Parquet and CSV bundles, trades, benchmarks, cards."""
    root = tmp_path_factory.mktemp("landing")
    generate_sample(root, seed=11, today=TODAY, n_runs=90)
    return root


def table_files(landing: Path) -> list[Path]:
    return sorted(p for p in landing.glob("runs/*/*/*/*/*") if p.name != "run.json")


def straightforward(path_name: str, data: bytes) -> pd.DataFrame:
    """What loading meant before the shortcut: read, then the full contract."""
    fmt = "csv" if path_name.endswith(".csv") else "parquet"
    frame = bundles._read_table(data, path_name, fmt).reset_index(drop=True)
    schema = ReturnsSchema if path_name.startswith("returns") else TradesSchema
    return validate_frame(schema, frame, path_name, allow_empty=False, error_cls=BundleError)


def load(path_name: str, data: bytes) -> pd.DataFrame:
    loader = load_returns if path_name.startswith("returns") else load_trades
    return loader(data, source_name=path_name)


def same_outcome(path_name: str, data: bytes) -> None:
    """Either both succeed with identical frames or both fail with the identical message."""
    try:
        expected = straightforward(path_name, data)
    except BundleError as error:
        with pytest.raises(BundleError) as raised:
            load(path_name, data)
        assert str(raised.value) == str(error)
        return
    pd.testing.assert_frame_equal(load(path_name, data), expected, check_exact=True)


# ---------------------------------------------------------------------------------------------
# bundle tables


def test_every_sample_table_takes_the_shortcut_and_loads_exactly_as_the_full_contract(landing):
    files = table_files(landing)
    assert {p.suffix for p in files} == {".csv", ".parquet"}
    for path in files:
        data = path.read_bytes()
        raw = bundles._read_table(data, path.name, path.suffix[1:])
        kinds = bundles._RETURNS_KINDS if path.name.startswith("returns") else bundles._TRADES_KINDS
        clean = bundles._clean_returns if path.name.startswith("returns") else bundles._clean_trades
        shortcut = clean(bundles._typed(raw, kinds) if path.suffix == ".csv" else raw)
        assert shortcut is not None, f"{path} did not take the shortcut"
        pd.testing.assert_frame_equal(shortcut, straightforward(path.name, data), check_exact=True)


def test_whole_bundles_load_the_same_through_the_shortcut(landing):
    for folder in sorted(landing.glob("runs/*/*/*/*"))[:30]:
        files = {str(p): p.read_bytes() for p in folder.iterdir()}
        bundle = load_bundle_from_files(files)
        returns_name = next(p for p in folder.iterdir() if p.name.startswith("returns"))
        expected = straightforward(returns_name.name, returns_name.read_bytes())
        np.testing.assert_array_equal(bundle.returns.to_numpy(), expected["ret"].to_numpy())
        np.testing.assert_array_equal(bundle.returns.index.to_numpy(), expected["date"].to_numpy())


def _returns_frame(n: int = 30) -> pd.DataFrame:
    days = pd.bdate_range("2024-01-01", periods=n)
    rng = np.random.default_rng(n)
    return pd.DataFrame({"date": days.date, "ret": rng.normal(0.0005, 0.01, n),
                         "benchmark_ret": rng.normal(0.0003, 0.009, n)})


def _trades_frame(n: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(n)
    return pd.DataFrame({
        "ts": pd.date_range("2024-01-02 15:00", periods=n, freq="37min", tz="UTC"),
        "symbol": ["AAA", "BBB", "CCC"] * (n // 3),
        "side": ["buy", "sell"] * (n // 2),
        "qty": rng.uniform(1, 500, n),
        "price": rng.uniform(10, 90, n),
        "notional": rng.uniform(-1e5, 1e5, n),
        "adv_notional": rng.uniform(1e6, 1e7, n),
        "bar_volume": rng.uniform(1e3, 1e5, n),
    })


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _csv(frame: pd.DataFrame) -> bytes:
    out = frame.copy()
    if "ts" in out.columns and pd.api.types.is_datetime64_any_dtype(out["ts"]):
        out["ts"] = out["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return out.to_csv(index=False).encode()


RETURNS_CHANGES = {
    "nan return": lambda f: f.assign(ret=f["ret"].where(f.index != 3)),
    "infinite return": lambda f: f.assign(ret=f["ret"].where(f.index != 4, np.inf)),
    "total loss": lambda f: f.assign(ret=f["ret"].where(f.index != 5, -1.0)),
    "benchmark below -1": lambda f: f.assign(benchmark_ret=f["benchmark_ret"].where(f.index != 6, -1.5)),
    "repeated date": lambda f: f.assign(date=[*f["date"][:-1], f["date"].iloc[-2]]),
    "dates out of order": lambda f: f.iloc[::-1].reset_index(drop=True),
    "time of day": lambda f: f.assign(date=pd.to_datetime(f["date"]) + pd.Timedelta(hours=6)),
    "midnight timestamps": lambda f: f.assign(date=pd.to_datetime(f["date"])),
    "missing ret": lambda f: f.drop(columns=["ret"]),
    "extra column": lambda f: f.assign(note="x"),
    "no benchmark": lambda f: f.drop(columns=["benchmark_ret"]),
    "integer returns": lambda f: f.assign(ret=0, benchmark_ret=0),
    "text returns": lambda f: f.assign(ret=f["ret"].map(repr)),
    "no rows": lambda f: f.iloc[:0],
}
TRADES_CHANGES = {
    "shouted sides": lambda f: f.assign(side=[" BUY", "Sell "] * (len(f) // 2)),
    "unknown side": lambda f: f.assign(side=["buy", "hold"] * (len(f) // 2)),
    "blank symbol": lambda f: f.assign(symbol=["AAA", " ", "CCC"] * (len(f) // 3)),
    "zero quantity": lambda f: f.assign(qty=f["qty"].where(f.index != 2, 0.0)),
    "negative price": lambda f: f.assign(price=-f["price"]),
    "whole quantities": lambda f: f.assign(qty=np.arange(1, len(f) + 1)),
    "another time zone": lambda f: f.assign(ts=f["ts"].dt.tz_convert("America/New_York")),
    "naive timestamps": lambda f: f.assign(ts=f["ts"].dt.tz_localize(None)),
    "missing volume column": lambda f: f.drop(columns=["bar_volume"]),
    "missing adv value": lambda f: f.assign(adv_notional=f["adv_notional"].where(f.index != 1)),
    "missing symbol": lambda f: f.assign(symbol=f["symbol"].where(f.index != 0)),
    "no rows": lambda f: f.iloc[:0],
}


@pytest.mark.parametrize("change", sorted(RETURNS_CHANGES))
@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_returns_tables_good_or_bad_load_exactly_as_the_full_contract_says(change, fmt):
    frame = RETURNS_CHANGES[change](_returns_frame())
    data = _parquet(frame) if fmt == "parquet" else _csv(frame)
    same_outcome(f"returns.{fmt}", data)


@pytest.mark.parametrize("change", sorted(TRADES_CHANGES))
@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_trades_logs_good_or_bad_load_exactly_as_the_full_contract_says(change, fmt):
    frame = TRADES_CHANGES[change](_trades_frame())
    data = _parquet(frame) if fmt == "parquet" else _csv(frame)
    same_outcome(f"trades.{fmt}", data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    returns=st.lists(st.one_of(st.floats(-1.5, 1.0), st.just(float("nan"))), min_size=1, max_size=12),
    day_steps=st.lists(st.integers(-1, 3), min_size=12, max_size=12),
    fmt=st.sampled_from(["parquet", "csv"]),
)
def test_any_returns_table_loads_as_the_full_contract_says(returns, day_steps, fmt):
    offsets = np.cumsum(day_steps[: len(returns)])
    frame = pd.DataFrame({"date": [dt.date(2024, 1, 1) + dt.timedelta(days=int(o)) for o in offsets],
                          "ret": returns})
    same_outcome(f"returns.{fmt}", _parquet(frame) if fmt == "parquet" else _csv(frame))


def test_csv_spellings_the_shortcut_does_not_know_go_through_the_full_contract():
    text = "date,ret\n2024-01-02,0.01\n2024-01-03T00:00:00,0.02\n2024-1-4,0.0\n"
    same_outcome("returns.csv", text.encode())
    text = "date,ret\n2024-01-02, 0.01\n2024-01-03,nan\n"
    same_outcome("returns.csv", text.encode())
    trades = _csv(_trades_frame()).decode().replace("Z\n", "+00:00\n", 2)
    same_outcome("trades.csv", trades.encode())


def test_parquet_is_read_as_pandas_reads_it():
    frames = [
        _returns_frame(),
        _trades_frame(),
        pd.DataFrame({"x": pd.array([1, None, 3], dtype="Int64"), "c": pd.Categorical(["a", "b", "a"])}),
        pd.DataFrame({"ret": [0.1, 0.2]}, index=pd.Index(["a", "b"], name="key")),
    ]
    for frame in frames:
        buffer = io.BytesIO()
        frame.to_parquet(buffer)
        data = buffer.getvalue()
        pd.testing.assert_frame_equal(
            bundles._read_table(data, "t.parquet", "parquet"), pd.read_parquet(io.BytesIO(data)),
            check_exact=True,
        )


# ---------------------------------------------------------------------------------------------
# run rows


def returns_rows_per_run(bundle_list, recorded_at):
    """The straightforward construction: one small frame per run, Python dates, one concat."""
    frames = []
    for bundle in bundle_list:
        m = bundle.manifest
        frame = pd.DataFrame({
            "date": pd.to_datetime(bundle.returns.index).date,
            "ret": bundle.returns.to_numpy(dtype=float),
            "benchmark_ret": bundle.benchmark.to_numpy(dtype=float)
            if bundle.benchmark is not None else np.full(len(bundle.returns), np.nan),
        })
        frame.insert(0, "run_id", m.run_id)
        frame.insert(0, "strategy_id", m.strategy_id)
        frame.insert(0, "world_id", m.world_id)
        frames.append(frame)
    out = pd.concat(frames, ignore_index=True)
    out["recorded_at"] = pd.Timestamp(recorded_at)
    return out


def trades_rows_per_run(bundle_list, recorded_at):
    frames = []
    for bundle in bundle_list:
        if bundle.trades is None:
            continue
        m = bundle.manifest
        frame = bundle.trades.reindex(columns=list(run_rows.TRADE_COLUMNS)).copy()
        frame.insert(0, "run_id", m.run_id)
        frame.insert(0, "strategy_id", m.strategy_id)
        frame.insert(0, "world_id", m.world_id)
        frames.append(frame)
    out = pd.concat(frames, ignore_index=True)
    for column in ("qty", "price", "notional", "adv_notional", "bar_volume"):
        out[column] = pd.to_numeric(out[column], errors="raise").astype(float)
    out["ts"] = pd.to_datetime(out["ts"], utc=True)
    out["recorded_at"] = pd.Timestamp(recorded_at)
    return out


@pytest.fixture(scope="module")
def loaded(landing):
    return [
        load_bundle_from_files({str(p): p.read_bytes() for p in folder.iterdir()})
        for folder in sorted(landing.glob("runs/*/*/*/*"))
    ]


def test_long_returns_and_trades_rows_validate_to_the_same_tables(loaded):
    recorded_at = dt.datetime(2026, 11, 27, 12, tzinfo=dt.timezone.utc)
    for subset in (loaded, loaded[:1], loaded[5:9]):
        for build, reference, model in (
            (run_rows.returns_rows, returns_rows_per_run, contracts.StrategyReturnsTable),
            (run_rows.trades_rows, trades_rows_per_run, contracts.StrategyTradesTable),
        ):
            if reference is trades_rows_per_run and not any(b.trades is not None for b in subset):
                continue
            ours = validate_frame(model, build(subset, recorded_at), model.Config.name)
            theirs = validate_frame(model, reference(subset, recorded_at), model.Config.name)
            pd.testing.assert_frame_equal(ours, theirs, check_exact=True)


def evaluations_by_groupby(frame):
    """The straightforward reader: one group per run."""
    out = {}
    for key, group in frame.groupby(run_rows.partition_keys_of(frame), sort=False):
        first = group.iloc[0]
        out[key] = {
            "validation": {
                "policy_version": run_rows._none_if_nan(first["policy_version"]),
                "ruleset_hash": run_rows._none_if_nan(first["ruleset_hash"]),
                "profile": run_rows._none_if_nan(first["profile"]),
                "results": {
                    row.rule: {
                        "status": row.status, "severity": row.severity, "owner": row.owner,
                        "reason_code": row.reason_code, "reason": row.reason,
                        "tags": list(row.tags) if row.tags is not None else [],
                        "details": json.loads(row.details_json),
                    }
                    for row in group.itertuples(index=False)
                },
            },
            "summary": {"status": first["run_status"], "recommended_stage": first["recommended_stage"]},
        }
    return out


def test_rule_rows_read_back_in_one_pass_equal_the_groupby_reader(loaded, landing):
    from qmtl_validation.core import load_policy
    from qmtl_validation.core.evaluation import evaluate_run
    from qmtl_validation.core.metrics import compute_metrics

    evaluations = {}
    for bundle in loaded[:40]:
        m = bundle.manifest
        policy_path = sorted((landing / "policies" / m.world_id).glob("*.yaml"))[-1]
        policy = None if m.run_id.endswith(("0", "5")) else load_policy(policy_path)
        result = evaluate_run(compute_metrics(bundle.returns), policy, m.stage, now=dt.datetime(2026, 11, 27))
        evaluations[m.partition_key] = result.to_dict()
    frame = run_rows.rule_rows(evaluations, {k: 1 for k in evaluations}, dt.datetime(2026, 11, 27))
    shuffled = frame.sample(frac=1.0, random_state=3).reset_index(drop=True)
    for rows in (frame, shuffled):
        assert run_rows.evaluations_from_rule_rows(rows) == evaluations_by_groupby(rows)
    with_rules = {k: v for k, v in evaluations.items() if v["validation"]["results"]}
    assert run_rows.evaluations_from_rule_rows(frame) == with_rules  # no policy: no rule rows


# ---------------------------------------------------------------------------------------------
# model cards, reports, Dagster types


def test_model_cards_parse_as_safe_load_parses_them(landing):
    from qmtl_validation.core.model_cards import ModelCardError, load_model_card_text, model_card_from_mapping

    cards = sorted((landing / "model_cards").glob("*.yaml"))
    assert cards
    for path in cards:
        text = path.read_text()
        assert load_model_card_text(text) == model_card_from_mapping(yaml.safe_load(text))
    broken = "strategy_id: x\nobjective: [unclosed\n"
    with pytest.raises(yaml.YAMLError) as pure:
        yaml.safe_load(broken)
    with pytest.raises(ModelCardError) as ours:
        load_model_card_text(broken, source="x.yaml")
    mark = pure.value.problem_mark
    assert f"at line {mark.line + 1}, column {mark.column + 1}: {pure.value.problem}" in str(ours.value)


def test_a_text_only_report_is_the_same_rendered_from_one_document(loaded):
    from qmtl_validation.core.metrics import compute_metrics
    from qmtl_validation.core.reports.files import render_validation_report_files
    from qmtl_validation.core.reports.html import render_html
    from qmtl_validation.core.reports.markdown import render_markdown
    from qmtl_validation.core.reports.validation import build_validation_report

    bundle = loaded[0]
    run = {"world_id": bundle.manifest.world_id, "strategy_id": bundle.manifest.strategy_id,
           "run_id": bundle.manifest.run_id, "stage": bundle.manifest.stage}
    metrics = compute_metrics(bundle.returns).to_dict()
    when = dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc)
    files = render_validation_report_files(run, None, metrics, generated_at=when)
    markdown = render_markdown(build_validation_report(run, None, metrics, generated_at=when, images=[]))
    html = render_html(build_validation_report(run, None, metrics, generated_at=when, images=[]))
    assert files == {"report.md": markdown.encode(), "report.html": html.encode()}


def test_the_contract_type_trusts_only_a_frame_validated_against_the_same_contract():
    from qmtl_validation.defs.contract_checks import TableOutput, table_type, validated_outputs

    bad = pd.DataFrame({"world_id": ["w"], "strategy_id": ["s"], "run_id": ["r"]})
    manifests_type = table_type(contracts.RunManifestsTable)
    assert not manifests_type.type_check(None, bad).success
    stamped = bad.copy()
    stamped.attrs["qmtl_contract"] = contracts.StrategyReturnsTable.Config.name
    assert not manifests_type.type_check(None, stamped).success  # another contract's stamp
    frame = pd.DataFrame({
        "world_id": ["w"], "strategy_id": ["s"], "run_id": ["r"], "date": [pd.Timestamp("2024-01-02")],
        "ret": [0.01], "benchmark_ret": [np.nan], "recorded_at": [pd.Timestamp("2024-01-03", tz="UTC")],
    })
    outputs = list(validated_outputs(TableOutput("strategy_returns", contracts.StrategyReturnsTable, frame, {})))
    returns_type = table_type(contracts.StrategyReturnsTable)
    assert returns_type.type_check(None, outputs[0].value).success
    assert returns_type.type_check(None, frame).success  # unstamped and valid: pandera says so
