"""The risk hub asset graph materialised for real (temp landing zone and lake, ephemeral instance):
runs of two small worlds are validated, a signed snapshot lands for each, and the warehouse then
holds portfolio risk equal to ``core.portfolio`` on the same inputs, flagged imputed pairs,
per-strategy live monitoring, and new run revisions carrying the extended layers. A snapshot whose
signature no longer verifies fails its contract check and writes nothing; the conservative
fallback feeds portfolio risk for the medium-tier world and fails the critical world closed."""

import datetime as dt
import json
import math

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from qmtl_validation.core.evaluation import CORE_RULE_NAMES
from qmtl_validation.core.portfolio import historical_var_es, portfolio_risk
from qmtl_validation.core.rules.base import RuleResult, summary_status
from qmtl_validation.core.snapshot import conservative_fallback_snapshot, realized_returns_frame, validate_snapshot
from qmtl_validation.defs.pipeline import (
    materialize_fallbacks,
    materialize_runs,
    materialize_snapshots,
    register_run_partitions,
    register_snapshot_partitions,
)
from qmtl_validation.sample_data import make_run_manifest, write_bundle, write_snapshot
from qmtl_validation.warehouse.lake import Lake
from qmtl_validation.warehouse.queries import latest_rows
from qmtl_validation.warehouse.snapshot_rows import SNAPSHOT_KEY_SQL, world_in_breach
from qmtl_validation_tests.dagster_harness import deployment

KEY_ENV = "QMTL_TEST_RISK_KEY"
KEY = "risk-hub-test-key"
NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
TODAY = NOW.date()

MAIN_POLICY = f"""
risk_profile: {{tier: medium, client_critical: false}}
validation: {{on_missing_metric: warn}}
risk_hub: {{max_snapshot_lag: 1h, fallback_correlation: 0.5, allowed_producers: [risk-engine], signing_key_env: {KEY_ENV}}}
validation_profiles:
  backtest: {{performance: {{sharpe_min: 0.2}}}}
  paper: {{performance: {{sharpe_min: 0.2}}}}
default_profile_by_stage: {{backtest: backtest, paper: paper}}
portfolio: {{max_incremental_var_99: 0.01, max_incremental_es_99: 0.012}}
stress: {{scenarios: {{crash: {{dd_max: 0.25, var_99: 0.06}}}}}}
live_monitoring: {{lookback_days: 90, sharpe_min: 0.0, dd_max: 0.2, decay_threshold: 0.2}}
"""

CRITICAL_POLICY = """
risk_profile: {tier: high, client_critical: true}
risk_hub: {max_snapshot_lag: 5m, allowed_producers: [risk-engine]}
validation_profiles:
  backtest: {performance: {sharpe_min: 0.2}}
default_profile_by_stage: {backtest: backtest}
portfolio: {max_incremental_var_99: 0.01}
"""

# Per-period covariance of w_main: vols alpha 1 %, beta 1.5 %, eps 2 %, gamma 1.2 %;
# (alpha, eps), (beta, gamma) and (eps, gamma) are left out and must be imputed at ρ = 0.5.
MAIN_COVARIANCE = {
    "alpha,alpha": 1.0e-4,
    "alpha,beta": 0.3 * 0.01 * 0.015,
    "beta,beta": 2.25e-4,
    "beta,eps": 0.2 * 0.015 * 0.02,
    "eps,eps": 4.0e-4,
    "alpha,gamma": 0.15 * 0.01 * 0.012,
    "gamma,gamma": 1.44e-4,
}
MAIN_WEIGHTS = {"alpha": 0.5, "beta": 0.3, "eps": 0.2}
STEADY = [0.004, -0.002] * 45  # 90 periods, mean +0.1 % per period
DECAYING = [0.004, -0.002] * 30 + [0.001, -0.004] * 15  # the last 30 periods lose money


def main_snapshot(version="v0001", as_of=None):
    return {
        "world_id": "w_main",
        "version": version,
        "as_of": (as_of or NOW - dt.timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "weights": MAIN_WEIGHTS,
        "covariance": MAIN_COVARIANCE,
        "realized_returns": {"alpha": STEADY, "beta": STEADY[:60], "eps": DECAYING},
        "stress": {
            "crash": {"max_drawdown": 0.3, "var_99": 0.05, "es_99": 0.06,
                      "shocks": {"alpha": -0.1, "beta": -0.05, "eps": -0.2}},
            "rates": {"max_drawdown": 0.1},
        },
        "constraints": {"candidate_weight": 0.1},
        "provenance": {"actor": "risk-engine", "stage": "live", "source": "test"},
        "ttl_sec": 3600,
    }


def critical_snapshot():
    return {
        "world_id": "w_crit",
        "version": "v0001",
        "as_of": (NOW - dt.timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "weights": {"hold": 1.0},
        "covariance": {"hold,hold": 1e-4, "hold,cand": 3e-5, "cand,cand": 2e-4},
        "provenance": {"actor": "risk-engine", "stage": "live"},
    }


def returns(seed, n=260):
    rng = np.random.default_rng(seed)
    return (0.0009 + 0.008 * rng.standard_normal(n)).round(8)


RUNS = [
    ("w_main", "alpha", "bt1", "backtest", 1),
    ("w_main", "alpha", "pp1", "paper", 2),
    ("w_main", "beta", "bt1", "backtest", 3),
    ("w_main", "eps", "bt1", "backtest", 4),
    ("w_main", "eps", "pp1", "paper", 5),
    ("w_main", "gamma", "bt1", "backtest", 6),
    ("w_crit", "hold", "bt1", "backtest", 7),
    ("w_crit", "cand", "bt1", "backtest", 8),
]


def lake_of(env):
    return Lake(env.settings.lake_root)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """Both worlds' runs validated, then their first snapshots taken through the risk hub."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        env = deployment(tmp_path_factory.mktemp("risk_hub"), monkeypatch)
        monkeypatch.setenv(KEY_ENV, KEY)
        for world, text in (("w_main", MAIN_POLICY), ("w_crit", CRITICAL_POLICY)):
            path = env.landing / "policies" / world / "1.yaml"
            path.parent.mkdir(parents=True)
            path.write_text(text)
        for world, strategy, run, stage, seed in RUNS:
            manifest = make_run_manifest(
                world, strategy, run, stage=stage, risk_tier="high" if world == "w_crit" else "medium",
                submitted_at=NOW - dt.timedelta(hours=1),
            )
            write_bundle(env.landing, manifest, returns(seed), drop_date=TODAY)
        instance = dg.DagsterInstance.ephemeral()
        run_keys, _ = register_run_partitions(instance, env.settings, today=TODAY, lookback_days=2)
        runs_result = materialize_runs(instance, run_keys)
        history_before = latest_rows(lake_of(env), "evaluation_run_history", latest=False)

        write_snapshot(env.landing, main_snapshot(), signing_key=KEY, drop_date=TODAY)
        write_snapshot(env.landing, critical_snapshot(), drop_date=TODAY)
        snapshot_keys, intake = register_snapshot_partitions(instance, env.settings, today=TODAY, lookback_days=2)
        result = materialize_snapshots(instance, snapshot_keys)
        yield env, instance, runs_result, history_before, intake, result, monkeypatch


def test_both_worlds_are_validated_and_their_snapshots_taken_in(hub):
    env, instance, runs_result, _, intake, result, _ = hub
    assert runs_result.success and result.success
    assert sorted(intake.partition_keys) == ["w_crit/v0001", "w_main/v0001"]
    assert intake.rejections == []
    assert set(instance.get_dynamic_partitions("worlds")) == {"w_crit", "w_main"}
    for asset in ("risk_snapshot", "snapshot_weights", "covariance_matrix", "realized_returns",
                  "stress_results", "portfolio_risk", "live_monitoring", "extended_validation"):
        partitions = {e.partition for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset)}
        assert partitions == {"w_crit/v0001", "w_main/v0001"}, asset
    checks = [e for e in result.get_asset_check_evaluations()]
    assert checks and all(c.passed for c in checks)


def test_snapshot_header_records_signature_forms_and_weights(hub):
    env, *_ = hub
    header = latest_rows(lake_of(env), "risk_snapshots", key_expression=SNAPSHOT_KEY_SQL).set_index("world_id")
    main = header.loc["w_main"]
    assert main["signed"] and not header.loc["w_crit", "signed"]
    assert (main["covariance_form"], main["realized_returns_form"]) == ("inline", "inline")
    assert main["n_strategies"] == 3 and not main["is_fallback"]
    assert main["hash"] == validate_snapshot(main_snapshot(), now=NOW)["hash"]
    payload = json.loads(main["payload_json"])
    assert "covariance" not in payload and payload["weights"] == MAIN_WEIGHTS
    weights = latest_rows(lake_of(env), "snapshot_weights", world_id="w_main", key_expression=SNAPSHOT_KEY_SQL)
    assert dict(zip(weights["strategy_id"], weights["weight"])) == MAIN_WEIGHTS
    events = latest_rows(lake_of(env), "events", latest=False)
    updated = events[events["type"] == "risk_snapshot_updated"]
    assert sorted(updated["subject"]) == ["w_crit/v0001", "w_main/v0001"]


def test_covariance_rows_flag_the_imputed_pairs(hub):
    env, *_ = hub
    rows = latest_rows(lake_of(env), "covariance", world_id="w_main", key_expression=SNAPSHOT_KEY_SQL)
    pairs = {(a, b): (c, r, i) for a, b, c, r, i in rows[["strategy_a", "strategy_b", "covariance", "correlation", "imputed"]].itertuples(index=False)}
    assert len(rows) == 10  # upper triangle with the diagonal over alpha, beta, eps, gamma
    imputed = {pair for pair, (_, _, flag) in pairs.items() if flag}
    assert imputed == {("alpha", "eps"), ("beta", "gamma"), ("eps", "gamma")}
    covariance, correlation, _ = pairs[("alpha", "eps")]
    assert covariance == pytest.approx(0.5 * 0.01 * 0.02, rel=1e-12) and correlation == pytest.approx(0.5)
    assert pairs[("alpha", "beta")][1] == pytest.approx(0.3)
    assert pairs[("eps", "eps")][0] == 4.0e-4 and not pairs[("eps", "eps")][2]


def test_portfolio_risk_rows_equal_core_portfolio_on_the_same_inputs(hub):
    env, *_ = hub
    rows = latest_rows(lake_of(env), "portfolio_risk", world_id="w_main", key_expression=SNAPSHOT_KEY_SQL)
    expected = portfolio_risk(
        MAIN_WEIGHTS, MAIN_COVARIANCE, candidates=["gamma"], candidate_weight=0.1, fallback_correlation=0.5
    )
    book = rows[rows["scope"] == "portfolio"].iloc[0]
    assert book["volatility"] == pytest.approx(expected["volatility"], rel=1e-12)
    assert book["var"] == pytest.approx(expected["var"], rel=1e-12)
    assert book["es"] == pytest.approx(expected["es"], rel=1e-12)
    z = norm.ppf(0.99)
    assert book["es"] / book["var"] == pytest.approx(norm.pdf(z) / 0.01 / z, rel=1e-12)  # ≈ 1.1457, not 1.2
    assert book["imputed_pairs"] == 1 and book["alpha"] == 0.99
    history = historical_var_es(MAIN_WEIGHTS, realized_returns_frame(main_snapshot()["realized_returns"]))
    assert book["historical_var"] == pytest.approx(history["var"], rel=1e-12)
    assert book["historical_es"] == pytest.approx(history["es"], rel=1e-12)
    assert book["historical_periods"] == 60
    members = rows[rows["scope"] == "member"].set_index("strategy_id")
    for strategy, value in expected["component_var"].items():
        assert members.loc[strategy, "component_var"] == pytest.approx(value, rel=1e-12)
    assert members["component_var"].sum() == pytest.approx(book["var"], rel=1e-12)
    (candidate,) = rows[rows["scope"] == "candidate"].itertuples()
    assert (candidate.strategy_id, candidate.run_id, candidate.weight) == ("gamma", "bt1", 0.1)
    assert candidate.incremental_var == pytest.approx(expected["incremental_var"]["gamma"], rel=1e-12)
    assert candidate.incremental_es == pytest.approx(expected["incremental_es"]["gamma"], rel=1e-12)
    assert candidate.variance_source == "snapshot" and candidate.imputed_pairs == 2


def test_portfolio_risk_writes_the_snapshot_report_and_shows_the_picture(hub):
    env, instance, _, _, _, result, _ = hub
    report = env.root / "data" / "warehouse" / "reports" / "w_main" / "_snapshots" / "v0001"
    assert (report / "report.md").read_text().startswith("# Risk snapshot — w_main @ v0001")
    assert (report / "risk_contributions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    event = next(e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey("portfolio_risk"))
    metadata = event.step_materialization_data.materialization.metadata
    assert "data:image/png;base64," in metadata["risk_contributions"].value
    assert set(metadata["var_es_99"].value) == {"w_main/v0001", "w_crit/v0001"}


def test_stress_results_compare_each_scenario_and_sum_the_shocks(hub):
    env, *_ = hub
    rows = latest_rows(lake_of(env), "stress_results", world_id="w_main", key_expression=SNAPSHOT_KEY_SQL)
    book = rows[rows["strategy_id"].isna()].set_index("scenario")
    assert book.loc["crash", "status"] == "fail" and "max_drawdown 0.3 above dd_max 0.25" in book.loc["crash", "reason"]
    assert book.loc["crash", "stress_pnl"] == pytest.approx(0.5 * -0.1 + 0.3 * -0.05 + 0.2 * -0.2)
    assert book.loc["crash", "pnl_covered_weight"] == pytest.approx(1.0)
    assert pd.isna(book.loc["rates", "status"])  # no limits for that scenario
    shocks = rows[rows["strategy_id"].notna()].set_index("strategy_id")
    assert shocks.loc["eps", "shock"] == -0.2 and shocks.loc["eps", "stress_pnl"] == pytest.approx(-0.04)


def test_live_monitoring_is_per_strategy_and_flags_only_the_decaying_one(hub):
    env, *_ = hub
    rows = latest_rows(lake_of(env), "live_monitoring", world_id="w_main", key_expression=SNAPSHOT_KEY_SQL)
    assert sorted(set(rows["window_periods"])) == [30, 60, 90]
    flagged = rows.groupby("strategy_id")["strategy_demotion_candidate"].first().to_dict()
    assert flagged == {"alpha": False, "beta": False, "eps": True}
    eps30 = rows[(rows["strategy_id"] == "eps") & (rows["window_periods"] == 30)].iloc[0]
    last30 = np.array(DECAYING[-30:])
    assert eps30["realized_sharpe"] == pytest.approx(last30.mean() / last30.std(ddof=1) * math.sqrt(252), rel=1e-9)
    assert eps30["breach_sharpe"] and eps30["breach_decay"] and eps30["demotion_candidate"]
    beta90 = rows[(rows["strategy_id"] == "beta") & (rows["window_periods"] == 90)].iloc[0]
    assert beta90["n_periods"] == 60  # beta has 60 realized periods: its own figures, not a batch mean
    alpha90 = rows[(rows["strategy_id"] == "alpha") & (rows["window_periods"] == 90)].iloc[0]
    steady = np.array(STEADY)
    assert alpha90["realized_sharpe"] == pytest.approx(steady.mean() / steady.std(ddof=1) * math.sqrt(252), rel=1e-9)
    assert alpha90["realized_max_drawdown"] == pytest.approx(0.002, rel=1e-9)


def _payloads(history, world=None):
    rows = history if world is None else history[history["world_id"] == world]
    return {(r.strategy_id, r.run_id, int(r.revision)): json.loads(r.payload_json) for r in rows.itertuples()}


def test_runs_gain_extended_results_in_a_new_revision_with_the_summary_recomputed(hub):
    env, _, _, history_before, *_ = hub
    history = latest_rows(lake_of(env), "evaluation_run_history", latest=False)
    before = _payloads(history_before)
    after = _payloads(history)
    assert all(after[key] == payload for key, payload in before.items())  # revision 1 intact
    revised = {key: p for key, p in after.items() if key[2] == 2 and key not in before and p["world_id"] == "w_main"}
    # stress covers each held strategy's representative run (its paper run when it has one),
    # live monitoring the paper runs, portfolio the candidate: the backtests of alpha and eps
    # get nothing new and keep their single revision.
    assert {key[:2] for key in revised} == {("alpha", "pp1"), ("beta", "bt1"), ("eps", "pp1"), ("gamma", "bt1")}
    assert ("alpha", "bt1", 2) not in after and ("eps", "bt1", 2) not in after
    for record in revised.values():
        results = record["validation"]["results"]
        extended = set(results) - set(CORE_RULE_NAMES)
        assert extended and record["revision_reason"] == "extended:risk_snapshot w_main/v0001"
        assert record["summary"]["status"] == summary_status({n: RuleResult.from_dict(r) for n, r in results.items()})
        failing = [n for n in extended if results[n]["status"] == "fail"]
        if failing:
            assert record["summary"]["recommended_stage"] == "backtest_only"
    gamma = revised[("gamma", "bt1", 2)]["validation"]["results"]
    assert gamma["portfolio"]["status"] == "pass"
    assert gamma["portfolio"]["details"]["values"]["incremental_var_99"] == pytest.approx(
        portfolio_risk(MAIN_WEIGHTS, MAIN_COVARIANCE, candidates=["gamma"], candidate_weight=0.1)["incremental_var"]["gamma"],
        rel=1e-12,
    )
    eps_live = revised[("eps", "pp1", 2)]["validation"]["results"]["live_monitoring"]
    assert eps_live["status"] == "fail" and eps_live["details"]["demotion_candidate"]
    assert revised[("alpha", "pp1", 2)]["validation"]["results"]["live_monitoring"]["status"] == "pass"
    assert revised[("eps", "pp1", 2)]["validation"]["results"]["stress"]["reason_code"] == "crash_dd_exceeds_max"


def test_rule_rows_and_events_follow_the_new_revision(hub):
    env, *_ = hub
    rules = latest_rows(lake_of(env), "rule_results", partition_keys=["w_main/gamma/bt1"])
    assert set(rules["revision"]) == {2} and "portfolio" in set(rules["rule"])
    events = latest_rows(lake_of(env), "events", latest=False)
    updated = events[(events["type"] == "evaluation_run_updated") & (events["subject"] == "w_main/gamma/bt1")]
    data = json.loads(updated["data_json"].iloc[0])
    assert data["revision"] == 2 and data["change_reason"] == "extended:risk_snapshot w_main/v0001"


def test_rematerialising_the_same_snapshot_adds_no_revision(hub):
    env, instance, *_ = hub
    # Once more first, so the test holds whatever ran before it (a fallback changes the verdicts).
    assert materialize_snapshots(instance, ["w_main/v0001"]).success
    before = latest_rows(lake_of(env), "evaluation_run_history", latest=False)
    events_before = len(latest_rows(lake_of(env), "events", latest=False))
    result = materialize_snapshots(instance, ["w_main/v0001"])
    assert result.success
    after = latest_rows(lake_of(env), "evaluation_run_history", latest=False)
    assert len(after) == len(before)
    assert len(latest_rows(lake_of(env), "events", latest=False)) == events_before
    metadata = next(
        e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey("extended_validation")
    ).step_materialization_data.materialization.metadata
    assert metadata["runs_updated"].value == 0
    assert metadata["worlds"].value["w_main"]["runs_unchanged"] == metadata["worlds"].value["w_main"]["runs_evaluated"] > 0


def test_a_snapshot_whose_signature_no_longer_verifies_fails_its_check_and_writes_nothing(hub):
    env, instance, *_, monkeypatch = hub
    write_snapshot(env.landing, main_snapshot("v0002"), signing_key=KEY, drop_date=TODAY)
    keys, intake = register_snapshot_partitions(instance, env.settings, today=TODAY, lookback_days=2)
    assert intake.partition_keys == ["w_main/v0002"]
    monkeypatch.setenv(KEY_ENV, "a-rotated-key")
    try:
        result = materialize_snapshots(instance, ["w_main/v0002"], raise_on_error=False)
    finally:
        monkeypatch.setenv(KEY_ENV, KEY)
    assert not result.success
    checks = {(c.asset_key.to_user_string(), c.check_name): c for c in result.get_asset_check_evaluations()}
    failed = checks[("risk_snapshot", "contract")]
    assert not failed.passed and "signature mismatch" in failed.metadata["first_problems"].value
    assert not result.get_asset_materialization_events()
    for table in ("risk_snapshots", "snapshot_weights", "covariance", "portfolio_risk"):
        rows = latest_rows(lake_of(env), table, partition_keys=["w_main/v0002"], key_expression=SNAPSHOT_KEY_SQL)
        assert rows.empty, table


def test_fallback_feeds_portfolio_risk_for_the_medium_world_and_fails_the_critical_world_closed(hub):
    env, instance, *_ = hub
    lake = lake_of(env)
    assert not world_in_breach(lake, "w_main")
    result = materialize_fallbacks(instance, ["w_main", "w_crit"])
    assert result.success

    header = latest_rows(lake, "risk_snapshots", key_expression=SNAPSHOT_KEY_SQL)
    fallback = header[header["is_fallback"]].set_index("world_id")
    assert set(fallback.index) == {"w_main", "w_crit"}
    assert fallback.loc["w_main", "version"] == "v0001-fallback"
    assert fallback.loc["w_main", "fallback_of_version"] == "v0001"
    assert fallback.loc["w_main", "source"] == "conservative_fallback"

    covariance = latest_rows(lake, "covariance", partition_keys=["w_main/v0001-fallback"], key_expression=SNAPSHOT_KEY_SQL)
    off_diagonal = covariance[covariance["strategy_a"] != covariance["strategy_b"]]
    assert (off_diagonal["correlation"] >= 0.5 - 1e-12).all() and covariance["is_fallback"].all()

    previous = validate_snapshot(main_snapshot(), now=NOW)
    expected = conservative_fallback_snapshot(previous, [], 0.5)
    risk = portfolio_risk(expected["weights"], expected["covariance"])
    rows = latest_rows(lake, "portfolio_risk", partition_keys=["w_main/v0001-fallback"], key_expression=SNAPSHOT_KEY_SQL)
    book = rows[rows["scope"] == "portfolio"].iloc[0]
    assert book["is_fallback"] and book["var"] == pytest.approx(risk["var"], rel=1e-12)
    assert book["var"] > latest_rows(lake, "portfolio_risk", partition_keys=["w_main/v0001"], key_expression=SNAPSHOT_KEY_SQL).query("scope == 'portfolio'")["var"].iloc[0]
    assert rows[rows["scope"] == "candidate"]["variance_source"].tolist() == ["run_volatility"]
    critical_rows = latest_rows(lake, "portfolio_risk", world_id="w_crit", key_expression=SNAPSHOT_KEY_SQL)
    assert not critical_rows["is_fallback"].any()  # the critical world's fallback feeds no figures

    runs = latest_rows(lake, "evaluation_run_history", partition_keys=["w_crit/cand/bt1", "w_main/gamma/bt1"])
    records = {r.world_id: json.loads(r.payload_json) for r in runs.itertuples()}
    critical = records["w_crit"]
    assert critical["revision_reason"] == "extended:risk_snapshot w_crit/v0001-fallback"
    portfolio = critical["validation"]["results"]["portfolio"]
    assert (portfolio["status"], portfolio["severity"], portfolio["reason_code"]) == ("fail", "blocking", "risk_snapshot_stale")
    assert critical["summary"] == {"status": "fail", "recommended_stage": "backtest_only"}
    medium = records["w_main"]["validation"]["results"]["portfolio"]
    assert medium["details"]["snapshot"]["fallback"] and medium["details"]["snapshot"]["stale"]
    assert medium["reason_code"] != "risk_snapshot_stale"

    revisions = len(latest_rows(lake, "evaluation_run_history", latest=False))
    assert materialize_fallbacks(instance, ["w_main", "w_crit"]).success
    assert len(latest_rows(lake, "evaluation_run_history", latest=False)) == revisions  # a replay stacks nothing
