"""The policy DSL: parsing, errors that name their path, schema, store."""

from __future__ import annotations

import pickle
from datetime import timedelta
from pathlib import Path

import pytest

from qmtl_validation.core.policy import (
    Policy,
    PolicyError,
    classify_metric,
    format_duration,
    load_policy,
    parse_duration,
    policy_schema,
    resolve_metric_path,
)
from qmtl_validation.core.policy_store import PolicyStore, version_sort_key

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SAMPLE_POLICY = FIXTURES / "qmtl_scenarios" / "sample_policy.yml"
POLICIES = FIXTURES / "policies"


def error_of(text: str) -> str:
    with pytest.raises(PolicyError) as info:
        load_policy(text)
    return str(info.value)


def test_sample_policy_parses_into_typed_profiles_and_selection():
    policy = load_policy(SAMPLE_POLICY)
    assert policy.policy_version == "sample_policy"
    backtest = policy.validation_profiles["backtest"]
    assert backtest.sample.min_effective_years == 2.0
    assert backtest.sample.min_trades_total == 50
    assert backtest.performance.sharpe_min == 0.5
    assert backtest.performance.max_dd_max == 0.25
    assert backtest.robustness.dsr_min == 0.15
    assert backtest.risk.participation_rate_p95_max == 0.4
    assert policy.validation_profiles["paper"].risk is None
    assert policy.selection.top_k.metric == "sharpe" and policy.selection.top_k.k == 3
    assert policy.selection.correlation.max == 0.8
    assert (policy.selection.hysteresis.enter, policy.selection.hysteresis.exit) == (0.6, 0.4)
    assert policy.validation.on_error == "fail" and policy.validation.on_missing_metric == "fail"
    assert policy.portfolio is None and policy.cohort is None


@pytest.mark.parametrize("name", ["v1_paper.yaml", "everything_on.yaml", "design_target.yaml"])
def test_reference_policies_load(name):
    policy = load_policy(POLICIES / name)
    assert policy.policy_version == Path(name).stem


def test_everything_on_policy_keeps_every_block():
    policy = load_policy(POLICIES / "everything_on.yaml")
    assert policy.selection.correlation.max == 0.9  # legacy top-level form merged in
    assert policy.validation.on_missing_metric == "warn"
    assert policy.cohort.top_k == 1 and policy.cohort.severity == "soft"
    assert policy.portfolio.max_incremental_var_99 == 0.5
    assert policy.benchmark.owner == "quant"
    assert policy.stress.scenarios["crash"].var_99 == 0.01
    assert policy.paper_shadow_consistency.stages == ("paper",)
    assert policy.live_monitoring.lookback_days == 30
    assert policy.governance.live_promotion.cooldown == timedelta(days=1)
    assert policy.governance.live_promotion.approvers == ("risk_team",)
    assert policy.campaign.backtest.window == timedelta(days=30)
    assert policy.campaign.common.min_trades_total == 100
    assert policy.validation_profiles["backtest"].risk.owner == "ops"


def test_design_target_policy_reads_designed_only_keys():
    policy = load_policy(POLICIES / "design_target.yaml")
    assert policy.risk_profile.tier == "high" and policy.risk_profile.client_critical
    assert policy.risk_profile.max_capital_at_risk_pct == 2.5
    assert policy.fail_closed
    live = policy.validation_profiles["live"]
    assert live.data_currency.max_lag == timedelta(minutes=5)
    assert live.data_currency.min_history == timedelta(days=180)
    assert live.sample.require_high_vol_regime is True
    assert live.risk.incremental_var_99_max == 0.3
    assert live.risk.capacity_estimate_base_min == 5_000_000
    assert live.robustness.cv_sharpe_gap_max == 0.4
    assert live.portfolio.min_portfolio_sharpe_uplift == 0.1
    assert policy.portfolio_for("live").max_incremental_var_99 == 0.5
    assert policy.portfolio_for("backtest") is None
    assert policy.risk_hub.allowed_producers == ("risk-engine", "gateway")
    assert policy.risk_hub.signing_key_env == "QMTL_RISK_HUB_SIGNING_KEY"
    assert policy.profile_for_stage("live") == "live"


def test_defaults_of_blocks_that_always_exist():
    policy = load_policy("")
    assert policy.risk_hub.max_snapshot_lag == timedelta(minutes=5)
    assert policy.risk_hub.fallback_correlation == 0.5
    assert policy.risk_hub.allowed_producers == ()
    assert policy.risk_hub.signing_key_env is None
    assert policy.annualization.periods_per_year == 252
    assert policy.annualization.risk_free_rate == 0
    assert policy.governance.live_promotion.mode == "manual_approval"
    assert policy.risk_profile.tier is None and not policy.fail_closed
    assert policy.selection.thresholds == {}
    assert policy.policy_version is None


def test_legacy_top_level_selection_merges_like_qmtl():
    policy = load_policy(
        """
thresholds:
  sharpe: {metric: sharpe, min: 0.7}
  win_rate: {min: 0.5}
top_k: {metric: sharpe, k: 5}
correlation: {max: 0.6}
selection:
  thresholds:
    sharpe: {metric: sharpe, min: 0.2}
    dd: {metric: max_drawdown, max: 0.3}
  top_k: {metric: sortino_ratio, k: 2}
"""
    )
    sel = policy.selection
    assert sel.thresholds["sharpe"].min == 0.7  # legacy wins for thresholds
    assert sel.thresholds["dd"].max == 0.3
    assert sel.thresholds["win_rate"].metric == "win_rate"  # metric defaults to the entry name
    assert sel.top_k.metric == "sortino_ratio" and sel.top_k.k == 2  # selection wins for the rest
    assert sel.correlation.max == 0.6


def test_typo_in_profile_key_names_path_and_closest_key():
    message = error_of("validation_profiles:\n  backtest:\n    performance: {sharp_min: 1.0}\n")
    assert "validation_profiles.backtest.performance.sharp_min" in message
    assert "did you mean 'sharpe_min'" in message


def test_unknown_key_without_close_match_lists_valid_keys():
    message = error_of("risk_hub: {zzz: 1}")
    assert "risk_hub.zzz: unknown key" in message
    assert "fallback_correlation" in message and "max_snapshot_lag" in message


@pytest.mark.parametrize(
    ("text", "path", "expected"),
    [
        ("validation: {on_error: maybe}", "validation.on_error", "one of fail, warn"),
        ("validation: {on_missing_metric: skip}", "validation.on_missing_metric", "one of fail, warn, ignore"),
        ("validation_profiles: {bt: {sample: {min_effective_years: -1}}}", "validation_profiles.bt.sample.min_effective_years", "a number >= 0"),
        ("validation_profiles: {bt: {performance: {sharpe_min: 'high'}}}", "validation_profiles.bt.performance.sharpe_min", "a number"),
        ("validation_profiles: {bt: {robustness: {dsr_min: 1.5}}}", "validation_profiles.bt.robustness.dsr_min", "<= 1"),
        ("validation_profiles: {bt: {sample: {require_high_vol_regime: 'yes please'}}}", "validation_profiles.bt.sample.require_high_vol_regime", "a boolean"),
        ("validation_profiles: {bt: {performance: {severity: fatal}}}", "validation_profiles.bt.performance.severity", "one of blocking, soft, info"),
        ("validation_profiles: {bt: {data_currency: {max_lag: 5}}}", "validation_profiles.bt.data_currency.max_lag", "a duration"),
        ("validation_profiles: {bt: {data_currency: {min_history: 6 months}}}", "validation_profiles.bt.data_currency.min_history", "a duration"),
        ("selection: {top_k: {metric: sharpe, k: 0}}", "selection.top_k.k", "an integer >= 1"),
        ("selection: {top_k: {metric: sharpe, k: 2.5}}", "selection.top_k.k", "an integer"),
        ("selection: {top_k: {k: 2}}", "selection.top_k.metric", "required"),
        ("selection: {correlation: {max: 1.2}}", "selection.correlation.max", "<= 1"),
        ("selection: {hysteresis: {metric: sharpe, enter: 0.4, exit: 0.6}}", "selection.hysteresis.exit", "above enter"),
        ("selection: {thresholds: {s: {metric: sharpe, min: 2, max: 1}}}", "selection.thresholds.s", "above max"),
        ("risk_profile: {tier: extreme}", "risk_profile.tier", "one of high, medium, low"),
        ("risk_hub: {fallback_correlation: 2}", "risk_hub.fallback_correlation", "<= 1"),
        ("risk_hub: {signing_key_env: 'not a name!'}", "risk_hub.signing_key_env", "an environment variable name"),
        ("annualization: {periods_per_year: 0}", "annualization.periods_per_year", "> 0"),
        ("validation_profiles: [a, b]", "validation_profiles", "a mapping"),
        ("governance: {live_promotion: {mode: yolo}}", "governance.live_promotion.mode", "one of disabled"),
        ("default_profile_by_stage: {backtest_only: bt}", "default_profile_by_stage.backtest_only", "unknown profile 'bt'"),
        ("[1, 2]", "<top level>", "expected a mapping"),
    ],
)
def test_bad_value_names_path_and_what_was_expected(text, path, expected):
    message = error_of(text)
    assert message.startswith(path + ":"), message
    assert expected in message


def test_durations_parse_and_format():
    assert parse_duration("30s") == timedelta(seconds=30)
    assert parse_duration("5m") == timedelta(minutes=5)
    assert parse_duration("2h") == timedelta(hours=2)
    assert parse_duration("180d") == timedelta(days=180)
    assert parse_duration(" 1.5h ") == timedelta(minutes=90)
    assert format_duration(timedelta(minutes=5)) == "5m"
    assert format_duration(timedelta(seconds=300)) == "5m"
    assert format_duration(timedelta(days=14)) == "2w"
    with pytest.raises(PolicyError):
        parse_duration("5 minutes")


def test_policy_version_key_must_agree_with_file_name(tmp_path):
    folder = tmp_path / "policies" / "w1"
    folder.mkdir(parents=True)
    (folder / "3.yaml").write_text("policy_version: 3\n")
    assert load_policy(folder / "3.yaml").policy_version == "3"
    (folder / "4.yaml").write_text("policy_version: 3\n")
    with pytest.raises(PolicyError, match="policy_version: '3' does not match the version '4'"):
        load_policy(folder / "4.yaml")
    with pytest.raises(PolicyError, match="does not match the file name"):
        load_policy(folder / "3.yaml", version="5")


def test_version_keyword_applies_to_yaml_text():
    assert load_policy("validation: {on_error: warn}", version=7).policy_version == "7"
    assert load_policy("policy_version: '7'").policy_version == "7"
    with pytest.raises(PolicyError):
        load_policy("policy_version: '7'", version="8")


def test_missing_policy_file_is_a_policy_error(tmp_path):
    with pytest.raises(PolicyError, match="not found"):
        load_policy(tmp_path / "nope.yaml")


def test_alias_bomb_is_refused():
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcde", "bcdef"):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 10) + "]")
    message = error_of("\n".join(lines))
    assert "alias bomb" in message


def test_small_anchors_are_allowed():
    policy = load_policy(
        """
validation_profiles:
  backtest:
    performance: &perf {sharpe_min: 0.5, max_dd_max: 0.3}
  paper:
    performance: *perf
"""
    )
    assert policy.validation_profiles["paper"].performance.sharpe_min == 0.5


def test_python_tags_are_refused():
    message = error_of("!!python/object/apply:os.system ['echo owned']")
    assert "not valid YAML" in message


def test_duplicate_keys_are_refused():
    message = error_of("validation_profiles:\n  bt:\n    sample: {min_trades_total: 1}\n    sample: {min_trades_total: 2}\n")
    assert message.startswith("validation_profiles.bt.sample: duplicate key")


def test_non_string_keys_are_refused():
    message = error_of("validation_profiles: {bt: {sample: {1: 2}}}")
    assert "keys must be strings" in message


def test_profile_lookup_follows_stage_order():
    policy = load_policy(
        """
validation_profiles: {strict: {}, loose: {}, paper: {}, Live-Profile: {}}
default_profile_by_stage: {backtest: loose, backtest_only: strict, paper_ok_live_candidate: live-profile}
"""
    )
    assert policy.profile_for_stage("backtest") == "loose"  # [stage] before [stage_only]
    assert policy.profile_for_stage("paper") == "paper"  # a profile named like the stage
    assert policy.profile_for_stage("live") == "Live-Profile"  # paper_ok_live_candidate mapping
    assert policy.profile_for_stage("shadow") is None
    only = load_policy("validation_profiles: {bt: {}}\ndefault_profile_by_stage: {Backtest-Only: bt}")
    assert only.profile_for_stage("backtest") == "bt"


def test_policy_round_trips_through_to_dict():
    policy = load_policy(POLICIES / "design_target.yaml")
    again = load_policy(policy.to_dict())
    assert again == policy


def test_policy_models_are_immutable_and_picklable():
    policy = load_policy(SAMPLE_POLICY)
    with pytest.raises(Exception):
        policy.selection = None  # type: ignore[misc]
    with pytest.raises(TypeError):
        policy.validation_profiles["x"] = None  # type: ignore[index]
    assert pickle.loads(pickle.dumps(policy)) == policy


def test_schema_describes_every_key():
    entries = {e.path: e for e in policy_schema()}
    lag = entries["risk_hub.max_snapshot_lag"]
    assert lag.default == "5m" and "duration" in lag.type and lag.description
    assert entries["risk_hub.fallback_correlation"].default == 0.5
    assert entries["annualization.periods_per_year"].default == 252
    assert entries["validation.on_missing_metric"].type == "one of fail, warn, ignore"
    assert entries["validation_profiles.<profile>.data_currency.max_lag"].default is None
    assert entries["validation_profiles.<profile>.risk.capacity_estimate_base_min"].description
    assert entries["stress.scenarios.<scenario>.dd_max"]
    assert entries["selection.top_k.k"].required
    assert "merged into selection" in entries["hysteresis"].description
    assert all(e.description for e in entries.values())


def test_every_schema_key_is_accepted_by_the_parser():
    # Build a document that sets every leaf key of the schema once; it must parse.
    samples = {
        "a number": 0.5, "a boolean": True, "a duration": "5m", "one of": None, "a list": ["x"],
        "an integer": 2, "a metric": "sharpe", "a version": "1", "an environment": "KEY_ENV",
    }
    document: dict = {}
    for entry in policy_schema():
        if entry.type.startswith("mapping") or entry.path in ("thresholds", "top_k", "correlation", "hysteresis") or entry.path.startswith(("thresholds.", "top_k.", "correlation.", "hysteresis.")):
            continue
        value = next((v for prefix, v in samples.items() if entry.type.startswith(prefix)), "x")
        if entry.type.startswith("one of"):
            value = entry.type[len("one of "):].split(", ")[0]
        if entry.type.startswith("a number") and "<= 100" in entry.type:
            value = 1.0
        node = document
        parts = [p.replace("<profile>", "bt").replace("<scenario>", "crash").replace("<name>", "t").replace("<stage>", "backtest") for p in entry.path.split(".")]
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    document["default_profile_by_stage"] = {"backtest": "bt"}
    document["selection"]["hysteresis"] = {"metric": "sharpe", "enter": 0.6, "exit": 0.4}
    document["selection"]["thresholds"]["t"] = {"metric": "sharpe", "min": 0.1, "max": 2}
    policy = load_policy(document)
    assert policy.validation_profiles["bt"].data_currency.max_lag == timedelta(minutes=5)


def test_bare_metric_names_resolve_through_a_fixed_table():
    assert resolve_metric_path("sharpe") == "returns.sharpe"
    assert resolve_metric_path("deflated_sharpe_ratio") == "robustness.deflated_sharpe_ratio"
    assert resolve_metric_path("n_trades_total") == "sample.n_trades_total"
    assert resolve_metric_path("benchmark.sharpe") == "benchmark.sharpe"
    assert resolve_metric_path("win_rate") == "diagnostics.extra_metrics.win_rate"


@pytest.mark.parametrize(
    ("metric", "cls"),
    [
        ("sharpe", "performance"),
        ("max_drawdown", "performance"),
        ("win_rate", "performance"),
        ("lag_seconds", "data_currency"),
        ("n_trades_total", "sample"),
        ("effective_history_years", "sample"),
        ("sample.regime_coverage.high_vol", "sample"),
        ("adv_utilization_p95", "risk"),
        ("risk.participation_rate_p95", "risk"),
        ("incremental_var_99", "risk"),
        ("es_p01", "risk"),
        ("deflated_sharpe_ratio", "robustness"),
        ("robustness.sharpe_first_half", "robustness"),
    ],
)
def test_threshold_metrics_are_classified_by_name(metric, cls):
    assert classify_metric(metric) == cls


# ---------------------------------------------------------------------------------------------
# Policy store


def write_policy(root: Path, world: str, name: str, text: str = "") -> Path:
    folder = root / "policies" / world
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def test_store_lists_versions_numerically_and_loads_the_current_one(tmp_path):
    for version in ("1", "2", "10", "9"):
        write_policy(tmp_path, "w1", f"{version}.yaml", f"validation_profiles: {{v{version}: {{}}}}")
    write_policy(tmp_path, "w1", "notes.txt", "ignored")
    store = PolicyStore(tmp_path)
    assert store.worlds() == ["w1"]
    assert store.versions("w1") == ["1", "2", "9", "10"]
    assert store.current_version("w1") == "10"
    policy = store.load("w1")
    assert policy.policy_version == "10" and "v10" in policy.validation_profiles
    assert store.load("w1", 2).policy_version == "2"
    assert store.load("w1") is policy  # cached while the file is unchanged


def test_store_natural_sort_for_non_integer_versions():
    versions = ["1.10", "1.9", "v2", "2024-01-15", "2023-12-31", "1.9a"]
    assert sorted(versions, key=version_sort_key) == ["1.9", "1.9a", "1.10", "2023-12-31", "2024-01-15", "v2"]


def test_store_without_policies_and_with_conflicting_files(tmp_path):
    store = PolicyStore(tmp_path)
    assert store.current_version("w2") is None
    with pytest.raises(PolicyError, match="has no policy"):
        store.load("w2")
    write_policy(tmp_path, "w3", "1.yaml")
    write_policy(tmp_path, "w3", "1.yml")
    with pytest.raises(PolicyError, match="exists twice"):
        store.versions("w3")
    with pytest.raises(PolicyError, match="not a valid identifier"):
        store.versions("../etc")
    write_policy(tmp_path, "w4", "1.yaml")
    with pytest.raises(PolicyError, match="no policy version '2'"):
        store.load("w4", "2")


def test_store_rejects_a_broken_policy_with_its_path(tmp_path):
    path = write_policy(tmp_path, "w5", "1.yaml", "validation: {on_eror: fail}\n")
    with pytest.raises(PolicyError) as info:
        PolicyStore(tmp_path).load("w5")
    assert str(path) in str(info.value) and "validation.on_eror" in str(info.value)


def test_policy_type_is_exported_from_core():
    import qmtl_validation.core as core

    assert core.Policy is Policy
    assert core.load_policy is load_policy
    assert issubclass(core.PolicyError, ValueError)
