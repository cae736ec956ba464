"""The sample landing zone: deterministic, SPEC §3 shaped, and truthful about what it contains."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from qmtl_validation import sample_data
from qmtl_validation.core.identifiers import IDENTIFIER_PATTERN, check_identifier
from qmtl_validation.sample_data import (
    ARCHETYPES,
    DEMO_SIGNING_KEYS,
    MANIFEST_NAME,
    SIGNING_KEY_ENV,
    generate_sample,
    make_run_manifest,
    write_bundle,
    write_snapshot,
)

RUN_PATH = re.compile(
    r"runs/(\d{4}-\d{2}-\d{2})/([^/]+)/([^/]+)/([^/]+)/(returns\.parquet|returns\.csv|"
    r"trades\.parquet|trades\.csv|run\.json)"
)
SNAPSHOT_PATH = re.compile(
    r"snapshots/(\d{4}-\d{2}-\d{2})/([^/]+)/([^/.]+)(\.json|\.covariance\.parquet|\.realized\.parquet)"
)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("landing")
    summary = generate_sample(root)
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    return root, summary, manifest


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _read_table(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def _bundle_file(root: Path, bundle: dict, stem: str) -> Path | None:
    for name in bundle["files"]:
        if name.startswith(stem + "."):
            return root / bundle["path"] / name
    return None


# ------------------------------------------------------------------------------ determinism


def test_same_seed_writes_identical_bytes_and_another_seed_does_not(sample, tmp_path):
    root, _, _ = sample
    again = tmp_path / "again"
    generate_sample(again)
    assert _tree_digest(again) == _tree_digest(root)

    other = tmp_path / "other"
    generate_sample(other, seed=8)
    assert _tree_digest(other) != _tree_digest(root)


def test_default_clock_is_fixed_and_no_wall_clock_leaks_into_files(sample):
    root, summary, manifest = sample
    assert summary.today == dt.date(2026, 11, 27)
    assert manifest["clock"] == "2026-11-27T12:00:00Z"
    real_today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    if real_today != "2026-11-27":
        for path in root.rglob("*.json"):
            assert real_today not in path.read_text(), path


def test_today_option_dates_drops_and_snapshots_relative_to_that_day(tmp_path):
    summary = generate_sample(tmp_path, today="2027-03-10")
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    drop_dates = {dt.date.fromisoformat(b["drop_date"]) for b in manifest["bundles"]}
    assert max(drop_dates) <= dt.date(2027, 3, 10)
    assert min(drop_dates) >= dt.date(2027, 3, 10) - dt.timedelta(days=9)
    latest = {}
    for snap in manifest["snapshots"]:
        latest[snap["world_id"]] = max(latest.get(snap["world_id"], ""), snap["as_of"])
    assert latest == {
        "alpha_core": "2027-03-10T11:58:30Z",
        "beta_growth": "2027-03-10T11:20:00Z",
        "gamma_lab": "2027-03-10T11:40:00Z",
    }
    assert summary.now == dt.datetime(2027, 3, 10, 12, tzinfo=dt.timezone.utc)


def test_real_clock_option_puts_drops_in_the_last_ten_days(tmp_path):
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    summary = generate_sample(tmp_path, today="today", n_runs=20)
    after = dt.datetime.now(dt.timezone.utc)
    assert before <= summary.now <= after
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    for bundle in manifest["bundles"]:
        drop = dt.date.fromisoformat(bundle["drop_date"])
        assert summary.today - dt.timedelta(days=9) <= drop <= summary.today
        submitted = dt.datetime.fromisoformat(bundle["submitted_at"].replace("Z", "+00:00"))
        assert submitted <= summary.now  # never submitted in the future


# ------------------------------------------------------------------------------ layout and counts


def test_layout_has_three_worlds_sixty_bundles_both_stages_and_every_archetype(sample):
    root, summary, manifest = sample
    assert set(manifest["worlds"]) == {"alpha_core", "beta_growth", "gamma_lab"}
    assert {w["tier"] for w in manifest["worlds"].values()} == {"high", "medium", "low"}
    assert manifest["worlds"]["alpha_core"]["client_critical"] is True
    assert summary.n_bundles == len(manifest["bundles"]) >= 60
    assert {b["stage"] for b in manifest["bundles"]} == {"backtest", "paper"}
    assert {b["archetype"] for b in manifest["bundles"]} == set(ARCHETYPES)
    assert {b["world_id"] for b in manifest["bundles"]} == set(manifest["worlds"])

    for bundle in manifest["bundles"]:
        folder = root / bundle["path"]
        assert sorted(p.name for p in folder.iterdir()) == sorted(bundle["files"])
        assert "run.json" in bundle["files"] and bundle["files"][-1] == "run.json"
        assert any(name.startswith("returns.") for name in bundle["files"])
        assert bundle["has_trades"] == any(name.startswith("trades.") for name in bundle["files"])

    files = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    assert sorted(files) == list(summary.files)
    for path in files:
        if path.startswith("runs/"):
            assert RUN_PATH.fullmatch(path), path
        elif path.startswith("snapshots/"):
            assert SNAPSHOT_PATH.fullmatch(path), path
        elif path.startswith("policies/"):
            assert re.fullmatch(r"policies/[^/]+/\d+\.yaml", path), path
        elif path.startswith("model_cards/"):
            assert re.fullmatch(r"model_cards/[^/]+\.yaml", path), path
        else:
            assert path == MANIFEST_NAME


def test_formats_and_optional_files_are_mixed(sample):
    _, _, manifest = sample
    bundles = manifest["bundles"]
    assert sum("returns.csv" in b["files"] for b in bundles) >= 5
    assert sum("trades.csv" in b["files"] for b in bundles) >= 3
    assert sum(not b["has_trades"] for b in bundles) >= 3
    assert sum(b["has_benchmark"] for b in bundles) >= 5
    assert sum(not b["model_card"] for b in bundles) >= 3


def test_policies_cover_every_world_with_a_stricter_second_version(sample):
    root, _, manifest = sample
    versions = {(p["world_id"], p["version"]) for p in manifest["policies"]}
    assert versions == {("alpha_core", 1), ("beta_growth", 1), ("beta_growth", 2), ("gamma_lab", 1)}

    alpha = yaml.safe_load((root / "policies/alpha_core/1.yaml").read_text())
    assert alpha["risk_profile"] == {"tier": "high", "client_critical": True, "max_capital_at_risk_pct": 2.0}
    assert alpha["risk_hub"]["signing_key_env"] == SIGNING_KEY_ENV["alpha_core"]
    assert "portfolio" in alpha["validation_profiles"]["live"]
    assert alpha["validation_profiles"]["backtest"]["data_currency"] == {"max_lag": "5d", "min_history": "730d"}
    policy_text = "".join(p.read_text() for p in (root / "policies").rglob("*.yaml"))
    assert DEMO_SIGNING_KEYS["alpha_core"] not in policy_text  # the key never sits in a policy

    v1 = yaml.safe_load((root / "policies/beta_growth/1.yaml").read_text())
    v2 = yaml.safe_load((root / "policies/beta_growth/2.yaml").read_text())
    b1, b2 = v1["validation_profiles"]["backtest"], v2["validation_profiles"]["backtest"]
    assert b2["performance"]["sharpe_min"] > b1["performance"]["sharpe_min"]
    assert b2["performance"]["max_dd_max"] < b1["performance"]["max_dd_max"]
    beta = [b for b in manifest["bundles"] if b["world_id"] == "beta_growth"]
    flips = {b["strategy_id"] for b in beta if b["expected"]["1"]["status"] != b["expected"]["2"]["status"]}
    # The three designed flips (Sharpe, drawdown, trade count) plus soft → blocking robustness.
    assert {"bg_spread_09", "bg_curve_10", "bg_roll_12", "bg_genetic_18", "bg_regime_21"} <= flips


def test_every_generated_policy_loads_with_the_policy_loader(sample):
    policy_module = pytest.importorskip("qmtl_validation.core.policy")
    root, _, manifest = sample
    for entry in manifest["policies"]:
        policy = policy_module.load_policy(str(root / entry["path"]))
        assert str(policy.policy_version) == str(entry["version"])


def test_model_cards_carry_the_schema_fields(sample):
    root, summary, manifest = sample
    assert summary.n_model_cards == len(manifest["model_cards"]) >= 40
    from qmtl_validation.core.model_cards import load_model_card

    for entry in manifest["model_cards"]:
        card = load_model_card(root / entry["path"])
        assert card.strategy_id == entry["strategy_id"]
        assert card.model_card_version == entry["model_card_version"]
        assert card.objective and card.data_overview and card.owner and card.universe
        assert len(card.key_assumptions) >= 2 and len(card.key_limitations) >= 2
        assert card.unknown_keys == ()


# ------------------------------------------------------------------------------ run bundles


def test_identifiers_are_valid_and_run_ids_have_no_commas(sample):
    root, _, manifest = sample
    for bundle in manifest["bundles"]:
        run = json.loads((root / bundle["path"] / "run.json").read_text())
        for field in ("world_id", "strategy_id", "run_id"):
            assert check_identifier(run[field], field) == bundle[field]
        assert "," not in run["run_id"]
        assert bundle["path"] == f"runs/{bundle['drop_date']}/{run['world_id']}/{run['strategy_id']}/{run['run_id']}"
    for snap in manifest["snapshots"]:
        assert IDENTIFIER_PATTERN.fullmatch(snap["version"])
        for strategy_id in snap["strategies"]:
            assert IDENTIFIER_PATTERN.fullmatch(strategy_id)
    run_keys = [(b["world_id"], b["strategy_id"], b["run_id"]) for b in manifest["bundles"]]
    assert len(set(run_keys)) == len(run_keys)


def test_run_json_has_the_spec_fields(sample):
    root, _, manifest = sample
    tiers = {w: v["tier"] for w, v in manifest["worlds"].items()}
    n_with_trials = 0
    for bundle in manifest["bundles"]:
        run = json.loads((root / bundle["path"] / "run.json").read_text())
        assert run["stage"] == bundle["stage"] in {"backtest", "paper"}
        assert run["risk_tier"] == tiers[run["world_id"]]
        submitted = dt.datetime.fromisoformat(run["submitted_at"].replace("Z", "+00:00"))
        assert submitted.tzinfo is not None and submitted.utcoffset() == dt.timedelta(0)
        assert submitted.date().isoformat() == bundle["drop_date"]
        assert run["search_intensity"] >= 1
        assert set(run["complexity"]) == {"n_parameters", "n_features"}
        assert run["capital"] > 0
        assert run["returns_source"] and isinstance(run["extra_metrics"], dict)
        assert "campaign_id" in run
        if "trial_sharpes" in run:
            n_with_trials += 1
            assert len(run["trial_sharpes"]) <= run["search_intensity"]
        if bundle["archetype"] == "over_searched":
            assert run["search_intensity"] >= 200 and len(run["trial_sharpes"]) >= 200
    assert n_with_trials >= 8


def _one_of_each_format(root: Path, manifest: dict, stem: str) -> list[Path]:
    """A bundle file of each (format, benchmark) kind: the pandera contracts are slow per file."""
    chosen: dict[tuple[str, bool], Path] = {}
    for bundle in manifest["bundles"]:
        path = _bundle_file(root, bundle, stem)
        if path is not None:
            chosen.setdefault((path.suffix, bundle["has_benchmark"]), path)
    return list(chosen.values())


def test_returns_and_trades_files_pass_the_input_contracts(sample):
    root, _, manifest = sample
    from qmtl_validation.core.contracts import ReturnsSchema, TradesSchema, validate_frame

    returns_files = _one_of_each_format(root, manifest, "returns")
    trades_files = _one_of_each_format(root, manifest, "trades")
    assert {p.suffix for p in returns_files} == {p.suffix for p in trades_files} == {".csv", ".parquet"}
    for path in returns_files:
        validate_frame(ReturnsSchema, _read_table(path), str(path), allow_empty=False)
    for path in trades_files:
        validate_frame(TradesSchema, _read_table(path), str(path), allow_empty=False)


def test_returns_are_daily_business_days_finite_and_above_minus_one(sample):
    root, _, manifest = sample
    for bundle in manifest["bundles"]:
        validated = _read_table(_bundle_file(root, bundle, "returns"))
        ret = validated["ret"].to_numpy()
        assert ret.dtype == np.float64
        assert np.isfinite(ret).all() and (ret > -1).all()
        dates = pd.DatetimeIndex(pd.to_datetime(validated["date"]))
        assert dates.is_monotonic_increasing and dates.is_unique
        assert (dates.dayofweek < 5).all()
        assert len(ret) == bundle["metrics"]["n_periods"]
        # Realistic daily volatility (a crash series runs hotter).
        assert 0.003 < ret.std(ddof=1) < 0.05
        assert ("benchmark_ret" in validated.columns) == bundle["has_benchmark"]


def test_returns_show_volatility_clustering(sample):
    root, _, manifest = sample
    autocorrelations = []
    for bundle in manifest["bundles"]:
        if bundle["archetype"] != "good":
            continue
        ret = _read_table(_bundle_file(root, bundle, "returns"))["ret"].to_numpy()
        magnitude = np.abs(ret - ret.mean())
        autocorrelations.append(np.corrcoef(magnitude[:-1], magnitude[1:])[0, 1])
    # |r| is positively autocorrelated in clustered returns; i.i.d. returns give ≈ 0.
    assert np.median(autocorrelations) > 0.05


def test_archetypes_look_like_their_names(sample):
    _, _, manifest = sample
    for bundle in manifest["bundles"]:
        m, archetype = bundle["metrics"], bundle["archetype"]
        if archetype == "good":
            assert 1.0 - 0.01 <= m["sharpe"] <= 1.5 + 0.01
            assert 3.0 <= m["effective_history_years"] <= 6.0
        elif archetype in {"bad", "paper_decay"}:
            assert m["sharpe"] < 0.2
        elif archetype == "short_history":
            assert m["effective_history_years"] < 1.0
        elif archetype == "high_drawdown":
            assert m["max_drawdown"] >= 0.5
        elif archetype == "illiquid":
            assert m["adv_utilization_p95"] > 0.6 and m["participation_rate_p95"] > 0.5
        elif archetype == "over_searched":
            assert max(m["deflated_sharpe_ratio"]) < 0.1 and m["sharpe"] >= 1.5
        elif archetype == "stale_data":
            assert min(m["data_lag_days"]) > 25
        elif archetype == "unstable":
            assert m["sharpe_half_gap"] > 2.0
        elif archetype == "missing_trades":
            assert m["n_trades_total"] is None
        if bundle["stage"] == "paper":
            assert 0.5 < m["effective_history_years"] < 1.2


def test_trades_logs_are_consistent_with_fifty_to_four_hundred_trades_a_year(sample):
    root, _, manifest = sample
    for bundle in manifest["bundles"]:
        path = _bundle_file(root, bundle, "trades")
        if path is None:
            continue
        trades = _read_table(path)
        trades["ts"] = pd.to_datetime(trades["ts"], utc=True)
        assert set(trades.columns) == {"ts", "symbol", "side", "qty", "price", "notional", "adv_notional", "bar_volume"}
        assert set(trades["side"]) <= {"buy", "sell"}
        assert np.allclose(trades["notional"], trades["qty"] * trades["price"], atol=0.01)
        assert (trades["adv_notional"] > 0).all() and (trades["bar_volume"] > 0).all()
        assert trades["ts"].is_monotonic_increasing
        per_year = len(trades) / bundle["metrics"]["effective_history_years"]
        if bundle["archetype"] == "low_trades" or bundle["strategy_id"] == "bg_roll_12":
            assert len(trades) < 150
        else:
            assert 50 <= per_year <= 400, (bundle["path"], per_year)
        assert len(trades) == bundle["metrics"]["n_trades_total"]


def test_paper_runs_reuse_backtested_strategies_with_a_shorter_later_history(sample):
    _, _, manifest = sample
    backtests = {}
    for bundle in manifest["bundles"]:
        if bundle["stage"] == "backtest":
            backtests.setdefault((bundle["world_id"], bundle["strategy_id"]), []).append(bundle)
    papers = [b for b in manifest["bundles"] if b["stage"] == "paper"]
    assert len(papers) >= 8
    for paper in papers:
        earlier = backtests[(paper["world_id"], paper["strategy_id"])]
        assert all(b["run_id"] != paper["run_id"] for b in earlier)
        assert all(b["drop_date"] <= paper["drop_date"] for b in earlier)
        assert all(
            b["metrics"]["effective_history_years"] > paper["metrics"]["effective_history_years"]
            for b in earlier
        )


def test_drop_dates_spread_over_the_last_ten_days(sample):
    _, summary, manifest = sample
    drops = {dt.date.fromisoformat(b["drop_date"]) for b in manifest["bundles"]}
    assert len(drops) >= 8
    assert all(summary.today - dt.timedelta(days=9) <= d <= summary.today for d in drops)


def test_manifest_expectations_cover_every_policy_version(sample):
    _, _, manifest = sample
    for bundle in manifest["bundles"]:
        versions = manifest["worlds"][bundle["world_id"]]["policy_versions"]
        assert sorted(bundle["expected"]) == [str(v) for v in versions]
        first = bundle["expected"]["1"]
        assert bundle["expected_status"] == first["status"]
        assert first["status"] in {"pass", "warn", "fail"}
    by_archetype = {}
    for bundle in manifest["bundles"]:
        by_archetype.setdefault(bundle["archetype"], set()).add(bundle["expected_status"])
    assert by_archetype["good"] == {"pass"}
    assert by_archetype["bad"] == {"fail"}
    assert by_archetype["high_drawdown"] == {"fail"}
    assert "warn" in by_archetype["missing_trades"] and "pass" in by_archetype["missing_trades"]
    stages = {b["expected_recommended_stage"] for b in manifest["bundles"] if b["stage"] == "paper"}
    assert stages == {"paper_ok_live_candidate", "paper_only", "backtest_only"}


def test_manifest_expectations_match_the_evaluation_engine(sample):
    """Every bundle, under every policy version of its world, gets the status, failing core rules
    and recommended stage the manifest promises from the real metrics and rules."""
    pytest.importorskip("qmtl_validation.core.evaluation")
    from qmtl_validation.cli.evaluate import bundle_metrics
    from qmtl_validation.core.bundles import load_bundle
    from qmtl_validation.core.evaluation import evaluate_run
    from qmtl_validation.core.policy import load_policy

    root, _, manifest = sample
    policies = {
        (p["world_id"], str(p["version"])): load_policy(str(root / p["path"])) for p in manifest["policies"]
    }
    mismatches = []
    for entry in manifest["bundles"]:
        bundle = load_bundle(root / entry["path"])
        for version, expected in entry["expected"].items():
            policy = policies[(entry["world_id"], version)]
            result = evaluate_run(
                bundle_metrics(bundle, policy),
                policy,
                bundle.manifest.stage,
                submitted_at=bundle.manifest.submitted_at,
                data_end=bundle.returns.index[-1].date(),
                risk_tier=bundle.manifest.risk_tier,
            ).to_dict()
            failing = sorted(
                name for name, r in result["validation"]["results"].items()
                if r["status"] == "fail" and name in sample_data.CORE_RULES
            )
            got = (result["summary"]["status"], failing, result["summary"]["recommended_stage"])
            want = (expected["status"], sorted(expected["failing_rules"]), expected["recommended_stage"])
            if got != want:
                mismatches.append((entry["path"], version, got, want))
    assert mismatches == []


# ------------------------------------------------------------------------------ snapshots


def _load_snapshot(root: Path, entry: dict) -> dict:
    return json.loads((root / entry["path"]).read_text())


def test_each_world_has_a_sequence_of_three_to_five_snapshots(sample):
    root, summary, manifest = sample
    by_world = {}
    for entry in manifest["snapshots"]:
        by_world.setdefault(entry["world_id"], []).append(entry)
    assert set(by_world) == {"alpha_core", "beta_growth", "gamma_lab"}
    for world_id, entries in by_world.items():
        assert 3 <= len(entries) <= 5
        as_ofs = [e["as_of"] for e in entries]
        assert as_ofs == sorted(as_ofs) and len(set(as_ofs)) == len(as_ofs)
        assert [e["version"] for e in entries] == [f"v{i:04d}" for i in range(1, len(entries) + 1)]
        latest = dt.datetime.fromisoformat(as_ofs[-1].replace("Z", "+00:00"))
        assert dt.timedelta(0) < summary.now - latest <= dt.timedelta(hours=1)
        for entry in entries:
            payload = _load_snapshot(root, entry)
            assert payload["world_id"] == world_id and payload["version"] == entry["version"]
            assert entry["path"].startswith(f"snapshots/{payload['as_of'][:10]}/{world_id}/")
            assert payload["provenance"]["actor"] and payload["provenance"]["stage"]
            assert payload["provenance"]["source"]
            assert 1 <= payload["ttl_sec"] <= 86400
            assert set(payload["stress"]) >= {"crash_2008", "rates_shock"}
            for scenario in payload["stress"].values():
                assert set(scenario) == {"max_drawdown", "var_99", "es_99"}
                assert scenario["es_99"] >= scenario["var_99"] > 0
    assert manifest["worlds"]["beta_growth"]["max_snapshot_lag"] == "15m"
    freshness = {e["world_id"]: e["fresh_at_clock"] for e in manifest["snapshots"] if e["version"] == max(
        x["version"] for x in manifest["snapshots"] if x["world_id"] == e["world_id"])}
    assert freshness == {"alpha_core": True, "beta_growth": False, "gamma_lab": True}


def test_snapshot_weights_sum_to_one_and_complete_covariances_are_symmetric_psd(sample):
    root, _, manifest = sample
    incomplete = 0
    for entry in manifest["snapshots"]:
        payload = _load_snapshot(root, entry)
        weights = payload["weights"]
        assert abs(sum(weights.values()) - 1.0) <= 1e-9
        assert all(w > 0 for w in weights.values())
        if "covariance" in payload:
            pairs = {tuple(k.split(",")): v for k, v in payload["covariance"].items()}
        else:
            table = pd.read_parquet(root / Path(entry["path"]).parent / payload["covariance_ref"])
            pairs = {(a, b): v for a, b, v in table[["strategy_a", "strategy_b", "covariance"]].itertuples(index=False)}
        names = sorted(weights)
        matrix = np.full((len(names), len(names)), np.nan)
        index = {n: i for i, n in enumerate(names)}
        for (a, b), value in pairs.items():
            matrix[index[a], index[b]] = matrix[index[b], index[a]] = value
        assert np.isfinite(np.diag(matrix)).all()
        if np.isnan(matrix).any():
            incomplete += 1
            missing = sorted(
                f"{names[i]},{names[j]}" for i, j in zip(*np.where(np.isnan(np.triu(matrix)))) if i < j
            )
            assert missing == entry["missing_pairs"] and entry["world_id"] == "beta_growth"
            continue
        assert np.allclose(matrix, matrix.T)
        assert np.linalg.eigvalsh(matrix).min() >= -1e-12
        vols = np.sqrt(np.diag(matrix))
        assert ((vols > 0.003) & (vols < 0.02)).all()  # daily vols
    assert incomplete == 5


def test_snapshots_carry_realized_returns_with_one_decaying_strategy(sample):
    root, _, manifest = sample
    decaying = {e["world_id"]: e["decaying_strategies"] for e in manifest["snapshots"]}
    assert decaying == {"alpha_core": ["ac_momentum_04"], "beta_growth": [], "gamma_lab": []}
    latest_alpha = [e for e in manifest["snapshots"] if e["world_id"] == "alpha_core"][-1]
    realized = _load_snapshot(root, latest_alpha)["realized_returns"]
    assert set(realized) == set(latest_alpha["strategies"])
    sharpes = {}
    for strategy_id, series in realized.items():
        values = np.asarray(series)
        assert len(values) == 120 and np.isfinite(values).all() and (values > -1).all()
        sharpes[strategy_id] = values.mean() / values.std(ddof=1) * np.sqrt(252)
    assert sharpes["ac_momentum_04"] < -1.5
    assert all(s > 0 for k, s in sharpes.items() if k != "ac_momentum_04")


def test_alpha_core_signatures_verify_with_the_documented_key(sample):
    root, _, manifest = sample
    key = DEMO_SIGNING_KEYS["alpha_core"].encode("utf-8")
    signed = [e for e in manifest["snapshots"] if e["signed"]]
    assert {e["world_id"] for e in signed} == {"alpha_core"} and len(signed) == 4
    for entry in signed:
        assert entry["signing_key_env"] == "QMTL_SIGNING_KEY_ALPHA_CORE"
        payload = _load_snapshot(root, entry)
        body = {k: v for k, v in payload.items() if k not in {"signature", "hash", "created_at"}}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")
        assert payload["signature"] == hmac.new(key, canonical, hashlib.sha256).hexdigest()
        assert re.fullmatch(r"[0-9a-f]{64}", payload["signature"])
        assert payload["hash"] == "sha256:" + hashlib.sha256(canonical).hexdigest()
        tampered = dict(payload, ttl_sec=payload["ttl_sec"] + 1)
        body = {k: v for k, v in tampered.items() if k not in {"signature", "hash", "created_at"}}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")
        assert payload["signature"] != hmac.new(key, canonical, hashlib.sha256).hexdigest()
    assert all("signature" not in _load_snapshot(root, e) for e in manifest["snapshots"] if not e["signed"])


def test_every_snapshot_passes_the_snapshot_contract(sample):
    snapshot_module = pytest.importorskip("qmtl_validation.core.snapshot")
    policy_module = pytest.importorskip("qmtl_validation.core.policy")
    root, _, manifest = sample
    for entry in manifest["snapshots"]:
        policy = policy_module.load_policy(str(root / f"policies/{entry['world_id']}/1.yaml"))
        normalised = snapshot_module.validate_snapshot(
            _load_snapshot(root, entry),
            world_id=entry["world_id"],
            now=manifest["clock"],
            allowed_actors=list(policy.risk_hub.allowed_producers),
            signing_key=DEMO_SIGNING_KEYS[entry["world_id"]] if entry["signed"] else None,
            fallback_correlation=policy.risk_hub.fallback_correlation,
        )
        assert normalised["hash"].startswith("sha256:")
    alpha = [e for e in manifest["snapshots"] if e["world_id"] == "alpha_core"][-1]
    with pytest.raises(snapshot_module.SnapshotContractError):
        snapshot_module.validate_snapshot(
            _load_snapshot(root, alpha), now=manifest["clock"], signing_key="not-the-demo-key"
        )


def test_one_snapshot_references_parquet_files_beside_its_json(sample):
    root, _, manifest = sample
    refs = [e for e in manifest["snapshots"] if e["form"] == "parquet_ref"]
    assert len(refs) == 1
    entry = refs[0]
    payload = _load_snapshot(root, entry)
    assert "covariance" not in payload and "realized_returns" not in payload
    folder = (root / entry["path"]).parent
    assert payload["covariance_ref"] == f"{entry['version']}.covariance.parquet"
    assert payload["realized_returns_ref"] == f"{entry['version']}.realized.parquet"
    covariance = pd.read_parquet(folder / payload["covariance_ref"])
    assert list(covariance.columns) == ["strategy_a", "strategy_b", "covariance"]
    n = len(payload["weights"])
    assert len(covariance) == n * (n + 1) // 2
    realized = pd.read_parquet(folder / payload["realized_returns_ref"])
    assert list(realized.columns) == ["date", "strategy_id", "ret"]
    assert realized.groupby("strategy_id").size().to_dict() == {s: 120 for s in payload["weights"]}
    last_day = pd.Timestamp(payload["as_of"][:10])
    assert pd.to_datetime(realized["date"]).max() < last_day
    snapshot_module = pytest.importorskip("qmtl_validation.core.snapshot")
    matrix, imputed = snapshot_module.parse_covariance(covariance, sorted(payload["weights"]))
    assert imputed == [] and matrix.shape == (n, n)


# ------------------------------------------------------------------------------ helpers for other tests


def test_write_bundle_drops_a_bundle_the_bundle_loader_accepts(tmp_path):
    run = make_run_manifest(
        "alpha_core", "ac_probe_01", "bt-probe-1", submitted_at="2026-11-20T09:00:00Z", capital=1e7
    )
    returns = np.random.default_rng(3).normal(0.0005, 0.01, 300)
    trades = pd.DataFrame({
        "ts": pd.to_datetime(["2026-01-05T14:30:00Z", "2026-02-05T15:00:00Z"]),
        "symbol": ["AAPL", "MSFT"],
        "side": ["buy", "sell"],
        "qty": [100.0, 50.0],
        "price": [190.0, 410.0],
        "notional": [19000.0, 20500.0],
        "adv_notional": [1e9, 8e8],
        "bar_volume": [5e4, 3e4],
    })
    folder = write_bundle(tmp_path, run, returns, trades, returns_format="csv", trades_format="parquet")
    assert folder == tmp_path / "runs/2026-11-20/alpha_core/ac_probe_01/bt-probe-1"
    assert sorted(p.name for p in folder.iterdir()) == ["returns.csv", "run.json", "trades.parquet"]
    assert not list(folder.glob(".*"))  # no temp files left behind
    from qmtl_validation.core.bundles import load_bundle

    bundle = load_bundle(folder)
    assert bundle.manifest.risk_tier == "high" and bundle.manifest.capital == 1e7
    assert len(bundle.returns) == 300
    assert bundle.returns.index[-1] == pd.Timestamp("2026-11-19")  # the business day before the drop
    assert np.allclose(bundle.returns.to_numpy(), returns)
    assert len(bundle.trades) == 2


def test_write_bundle_checks_identifiers_unless_told_not_to_but_never_escapes_the_root(tmp_path):
    bad = make_run_manifest("alpha_core", "bad,strategy", "r1")
    with pytest.raises(ValueError, match="strategy_id"):
        write_bundle(tmp_path, bad, [0.01, -0.01])
    folder = write_bundle(tmp_path, bad, [0.01, -0.01], check_ids=False)
    assert folder.name == "r1" and folder.parent.name == "bad,strategy"
    escaping = make_run_manifest("alpha_core", "..", "..")
    with pytest.raises(ValueError):
        write_bundle(tmp_path / "inner", dict(escaping, world_id="../../.."), [0.01], check_ids=False)
    assert not (tmp_path.parent / "run.json").exists()


def test_write_snapshot_signs_and_can_move_data_to_parquet_refs(tmp_path):
    payload = {
        "world_id": "alpha_core",
        "as_of": "2026-11-27T11:59:00Z",
        "version": "v0042",
        "weights": {"s1": 0.6, "s2": 0.4},
        "covariance": {"s1,s1": 0.0001, "s1,s2": 0.00002, "s2,s2": 0.00015},
        "realized_returns": {"s1": [0.01, -0.004, 0.002], "s2": [0.0, 0.003, -0.001]},
        "provenance": {"actor": "risk-engine", "stage": "live", "source": "test"},
        "ttl_sec": 600,
    }
    path = write_snapshot(tmp_path, payload, signing_key="k", with_hash=True, as_refs=True)
    assert path == tmp_path / "snapshots/2026-11-27/alpha_core/v0042.json"
    written = json.loads(path.read_text())
    assert written["covariance_ref"] == "v0042.covariance.parquet"
    assert written["realized_returns_ref"] == "v0042.realized.parquet"
    body = {k: v for k, v in written.items() if k not in {"signature", "hash"}}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    assert written["signature"] == hmac.new(b"k", canonical, hashlib.sha256).hexdigest()
    covariance = pd.read_parquet(path.parent / written["covariance_ref"])
    assert covariance.to_dict("list") == {
        "strategy_a": ["s1", "s1", "s2"], "strategy_b": ["s1", "s2", "s2"],
        "covariance": [0.0001, 0.00002, 0.00015],
    }
    realized = pd.read_parquet(path.parent / written["realized_returns_ref"])
    assert realized["strategy_id"].tolist() == ["s1"] * 3 + ["s2"] * 3
    assert pd.to_datetime(realized["date"]).iloc[:3].dt.strftime("%Y-%m-%d").tolist() == [
        "2026-11-24", "2026-11-25", "2026-11-26"
    ]
    assert payload["covariance"]  # the caller's payload is not modified

    inline = write_snapshot(tmp_path, dict(payload, version="v0043"), drop_date="2026-11-28")
    assert inline == tmp_path / "snapshots/2026-11-28/alpha_core/v0043.json"
    assert json.loads(inline.read_text())["covariance"] == payload["covariance"]


# ------------------------------------------------------------------------------ scale, size, CLI


def test_n_runs_scales_with_the_same_archetype_mix_and_keeps_the_base_bundles(sample, tmp_path):
    root, summary, manifest = sample
    base = len(manifest["bundles"])
    scaled = generate_sample(tmp_path, n_runs=2 * base + 5)
    scaled_manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert scaled.n_bundles == 2 * base + 5
    mix = lambda bundles: sorted((b["archetype"], b["stage"]) for b in bundles)  # noqa: E731
    assert mix(scaled_manifest["bundles"][base : 2 * base]) == mix(manifest["bundles"])
    second = {b["strategy_id"] for b in scaled_manifest["bundles"][base : 2 * base]}
    assert all(s.endswith("_r0001") for s in second)
    for entry in manifest["bundles"]:
        for name in entry["files"]:
            relative = f"{entry['path']}/{name}"
            assert (tmp_path / relative).read_bytes() == (root / relative).read_bytes()

    small = generate_sample(tmp_path / "small", n_runs=10)
    assert small.n_bundles == 10


def test_sample_is_small_and_quick(sample):
    _, summary, _ = sample
    assert summary.total_bytes < 5_000_000
    assert summary.elapsed_seconds < 5.0


def test_command_line_prints_what_it_wrote(tmp_path, capsys):
    assert sample_data.main(["--out", str(tmp_path), "--seed", "7", "--today", "2026-11-27", "--n-runs", "12"]) == 0
    out = capsys.readouterr().out
    assert f"sample landing zone: {tmp_path}" in out
    assert "run bundles: 12" in out and "manifest:" in out
    assert (tmp_path / MANIFEST_NAME).is_file()
