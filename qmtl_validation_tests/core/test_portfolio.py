"""Portfolio VaR/ES, Euler components and incremental risk on a hand-checked 3-asset example."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from qmtl_validation.core.portfolio import (
    historical_var_es,
    portfolio_risk,
    risk_contributions,
    snapshot_portfolio_risk,
)
from qmtl_validation.core.snapshot import SnapshotContractError

# Three strategies:      weights w = (0.5, 0.3, 0.2)
#                        vols    σ = (0.10, 0.20, 0.15)
#                        correlations ρ_ab = 0.3, ρ_ac = 0.1, ρ_bc = 0.5
# Covariance Σ_ij = ρ_ij σ_i σ_j:
#   Σ_aa = 0.01, Σ_bb = 0.04, Σ_cc = 0.0225
#   Σ_ab = 0.3·0.10·0.20 = 0.006, Σ_ac = 0.1·0.10·0.15 = 0.0015, Σ_bc = 0.5·0.20·0.15 = 0.015
WEIGHTS = {"a": 0.5, "b": 0.3, "c": 0.2}
COVARIANCE = {
    "a,a": 0.01,
    "b,b": 0.04,
    "c,c": 0.0225,
    "a,b": 0.006,
    "a,c": 0.0015,
    "b,c": 0.015,
}
# wᵀΣw = 0.25·0.01 + 0.09·0.04 + 0.04·0.0225 + 2·0.5·0.3·0.006 + 2·0.5·0.2·0.0015 + 2·0.3·0.2·0.015
#      = 0.0025 + 0.0036 + 0.0009 + 0.0018 + 0.0003 + 0.0018 = 0.0109
VARIANCE = 0.0109
SIGMA_P = math.sqrt(VARIANCE)  # 0.104403065...
Z_99 = 2.3263478740408408  # Φ⁻¹(0.99)
PHI_Z = 0.02665214220345808  # φ(z_0.99)
# VaR = z·σ_p = 2.3263479·0.1044031 = 0.2428778
# ES  = σ_p·φ(z)/(1−α) = 0.1044031·0.0266521/0.01 = 0.2782565   (ES/VaR = 1.14566, not 1.2)
VAR_99 = 0.24287784851338812
ES_99 = 0.278256533723173
# Σw = (0.5·0.01 + 0.3·0.006 + 0.2·0.0015, 0.5·0.006 + 0.3·0.04 + 0.2·0.015, 0.5·0.0015 + 0.3·0.015 + 0.2·0.0225)
#    = (0.0071, 0.018, 0.00975);  w_i(Σw)_i = (0.00355, 0.0054, 0.00195), summing to 0.0109
# component VaR_i = z·w_i(Σw)_i/σ_p = (0.0791024, 0.1203248, 0.0434506)
COMPONENTS = {"a": Z_99 * 0.00355 / SIGMA_P, "b": Z_99 * 0.0054 / SIGMA_P, "c": Z_99 * 0.00195 / SIGMA_P}


def test_three_asset_volatility_var_and_es_match_the_hand_computation():
    assert Z_99 == pytest.approx(norm.ppf(0.99), abs=1e-15)
    assert PHI_Z == pytest.approx(norm.pdf(norm.ppf(0.99)), abs=1e-15)
    risk = portfolio_risk(WEIGHTS, COVARIANCE)
    assert risk["volatility"] == pytest.approx(SIGMA_P, abs=1e-15)
    assert risk["var"] == pytest.approx(VAR_99, abs=1e-12)
    assert risk["es"] == pytest.approx(ES_99, abs=1e-12)
    # Neither QMTL's rounded z nor its fixed ES multiplier.
    assert risk["var"] != pytest.approx(2.33 * SIGMA_P, abs=1e-6)
    assert risk["es"] / risk["var"] == pytest.approx(1.1456645199, abs=1e-9)
    assert risk["imputed_pairs"] == []


def test_component_var_matches_hand_values_and_sums_to_var():
    risk = portfolio_risk(WEIGHTS, COVARIANCE)
    for name, value in COMPONENTS.items():
        assert risk["component_var"][name] == pytest.approx(value, abs=1e-12)
    assert sum(risk["component_var"].values()) == pytest.approx(risk["var"], abs=1e-12)
    assert sum(risk["component_es"].values()) == pytest.approx(risk["es"], abs=1e-12)


def test_square_dataframe_and_colon_keys_give_the_same_answer():
    names = ["a", "b", "c"]
    frame = pd.DataFrame(
        [[0.01, 0.006, 0.0015], [0.006, 0.04, 0.015], [0.0015, 0.015, 0.0225]], index=names, columns=names
    )
    colon = {k.replace(",", ":"): v for k, v in COVARIANCE.items()}
    assert portfolio_risk(WEIGHTS, frame)["var"] == pytest.approx(VAR_99, abs=1e-12)
    assert portfolio_risk(pd.Series(WEIGHTS), colon)["var"] == pytest.approx(VAR_99, abs=1e-12)


# Candidate d: σ_d = 0.25, ρ_ad = 0, ρ_bd = 0.2, ρ_cd not given → imputed at 0.5.
#   Σ_dd = 0.0625, Σ_ad = 0, Σ_bd = 0.2·0.20·0.25 = 0.01, Σ_cd = 0.5·0.15·0.25 = 0.01875 (imputed)
# α_c = 1/(n+1) = 1/4. wᵀΣ_{·d} = 0.5·0 + 0.3·0.01 + 0.2·0.01875 = 0.00675
# σ²_with = (1−α)²·0.0109 + 2α(1−α)·0.00675 + α²·0.0625
#         = 0.5625·0.0109 + 0.375·0.00675 + 0.0625·0.0625 = 0.00613125 + 0.00253125 + 0.00390625 = 0.01256875
# σ_with = 0.1121104; incremental VaR = z(σ_with − σ_p) = 2.3263479·0.0077074 = 0.0179300
# incremental ES = φ(z)/0.01·(σ_with − σ_p) = 2.6652142·0.0077074 = 0.0205418
SIGMA_WITH = math.sqrt(0.01256875)
CANDIDATE_COVARIANCE = {**COVARIANCE, "d,d": 0.0625, "a,d": 0.0, "b,d": 0.01}


def test_candidate_incremental_var_and_es_match_the_hand_computation():
    risk = portfolio_risk(WEIGHTS, CANDIDATE_COVARIANCE, candidates=["d"])
    assert risk["candidate_weight"] == 0.25
    assert risk["incremental_var"]["d"] == pytest.approx(Z_99 * (SIGMA_WITH - SIGMA_P), abs=1e-12)
    assert risk["incremental_var"]["d"] == pytest.approx(0.0179300274, abs=1e-9)
    assert risk["incremental_es"]["d"] == pytest.approx(0.0205417962, abs=1e-9)
    assert risk["var_with_candidate"]["d"] == pytest.approx(Z_99 * SIGMA_WITH, abs=1e-12)
    # The missing c,d cross term was imputed with the fallback correlation and flagged.
    assert risk["imputed_pairs"] == ["c,d"]
    # The base portfolio is unchanged by asking about a candidate.
    assert risk["var"] == pytest.approx(VAR_99, abs=1e-12)


def test_candidate_given_as_a_mapping_equals_candidate_in_the_matrix():
    by_id = portfolio_risk(WEIGHTS, CANDIDATE_COVARIANCE, candidates=["d"])
    by_spec = portfolio_risk(
        WEIGHTS, COVARIANCE, candidates={"d": {"variance": 0.0625, "covariances": {"a": 0.0, "b": 0.01}}}
    )
    assert by_spec["incremental_var"]["d"] == pytest.approx(by_id["incremental_var"]["d"], abs=1e-15)
    assert by_spec["imputed_pairs"] == ["c,d"]
    # A bare variance imputes every cross term.
    bare = portfolio_risk(WEIGHTS, COVARIANCE, candidates={"d": 0.0625})
    assert bare["imputed_pairs"] == ["a,d", "b,d", "c,d"]


def test_explicit_candidate_weight_and_many_candidates_at_once():
    cov = {**CANDIDATE_COVARIANCE, "e,e": 0.0004}  # e: σ = 0.02, uncorrelated pairs imputed at 0.5
    risk = portfolio_risk(WEIGHTS, cov, candidates=["d", "e"], candidate_weight=0.1)
    # e is a low-vol diversifier: σ²_with = 0.81·0.0109 + 0.18·(0.5·0.02·(0.5·0.1 + 0.3·0.2 + 0.2·0.15)) + 0.01·0.0004
    var_e = 0.81 * 0.0109 + 0.18 * (0.5 * 0.02 * (0.5 * 0.10 + 0.3 * 0.20 + 0.2 * 0.15)) + 0.01 * 0.0004
    assert risk["incremental_var"]["e"] == pytest.approx(Z_99 * (math.sqrt(var_e) - SIGMA_P), abs=1e-12)
    # d at 10%: 0.81·0.0109 + 0.18·0.00675 + 0.01·0.0625 = 0.010669 < 0.0109, also diversifying
    assert risk["incremental_var"]["d"] == pytest.approx(Z_99 * (math.sqrt(0.010669) - SIGMA_P), abs=1e-12)
    assert risk["incremental_var"]["e"] < risk["incremental_var"]["d"] < 0
    assert "d,e" not in risk["imputed_pairs"]  # candidate-vs-candidate pairs never enter


def test_missing_pair_among_held_strategies_is_imputed_not_zero():
    cov = {k: v for k, v in COVARIANCE.items() if k != "b,c"}
    risk = portfolio_risk(WEIGHTS, cov, fallback_correlation=0.5)
    # Σ_bc imputed as 0.5·0.20·0.15 = 0.015 — the value the full example used, so the same VaR.
    assert risk["imputed_pairs"] == ["b,c"]
    assert risk["var"] == pytest.approx(VAR_99, abs=1e-12)
    at_zero = portfolio_risk(WEIGHTS, cov, fallback_correlation=0.0)
    # With ρ = 0 (QMTL's silent choice) the variance loses 2·0.3·0.2·0.015 = 0.0018.
    assert at_zero["volatility"] == pytest.approx(math.sqrt(0.0109 - 0.0018), abs=1e-15)


def test_missing_variance_of_a_weighted_strategy_is_an_error():
    cov = {k: v for k, v in COVARIANCE.items() if k != "c,c"}
    with pytest.raises(SnapshotContractError, match="covariance has no variance for 'c'"):
        portfolio_risk(WEIGHTS, cov)


def test_zero_weight_strategy_needs_no_covariance_and_contributes_nothing():
    risk = portfolio_risk({**WEIGHTS, "z": 0.0}, COVARIANCE)
    assert risk["component_var"]["z"] == 0.0
    assert risk["var"] == pytest.approx(VAR_99, abs=1e-12)


def test_risk_contributions_table_sums_to_one_share():
    table = risk_contributions(WEIGHTS, COVARIANCE)
    assert table["strategy_id"].tolist() == ["b", "a", "c"]  # largest component first
    assert table["share_of_var"].sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(table["volatility"], [0.20, 0.10, 0.15])
    # marginal_i · w_i = component_i (Euler)
    np.testing.assert_allclose(table["marginal_var"] * table["weight"], table["component_var"], atol=1e-15)


def test_snapshot_portfolio_risk_uses_the_snapshot_candidate_weight():
    snapshot = {"weights": WEIGHTS, "covariance": CANDIDATE_COVARIANCE, "constraints": {"candidate_weight": 0.25}}
    risk = snapshot_portfolio_risk(snapshot, candidates=["d"])
    assert risk["candidate_weight"] == 0.25
    assert risk["incremental_var"]["d"] == pytest.approx(0.0179300274, abs=1e-9)


def test_historical_var_es_of_weighted_realized_returns():
    # p_t = 0.5·a + 0.5·b over the periods where both exist (a's first value has no b partner).
    realized = {"a": [0.05, -0.02, 0.01, -0.04, 0.03], "b": [0.0, 0.01, -0.06, 0.02]}
    out = historical_var_es({"a": 0.5, "b": 0.5}, realized, alpha=0.75)
    # right-aligned pairs: (-0.02, 0.0), (0.01, 0.01), (-0.04, -0.06), (0.03, 0.02)
    # p = (-0.01, 0.01, -0.05, 0.025); sorted (-0.05, -0.01, 0.01, 0.025)
    # linear 25% quantile at index 0.75: -0.05 + 0.75·(0.04) = -0.02 → VaR 0.02
    # tail p ≤ -0.02 = {-0.05} → ES 0.05
    assert out["n_periods"] == 4
    assert out["var"] == pytest.approx(0.02, abs=1e-15)
    assert out["es"] == pytest.approx(0.05, abs=1e-15)
    assert out["missing_strategies"] == [] and out["covered_weight"] == 1.0


def test_historical_var_reports_missing_strategies_and_short_history():
    out = historical_var_es({"a": 0.6, "b": 0.4}, pd.DataFrame({"a": [0.01]}))
    assert out["var"] is None and out["es"] is None
    assert out["missing_strategies"] == ["b"]
    assert out["covered_weight"] == pytest.approx(0.6)
    assert out["note"] == "fewer than 2 periods with every weighted strategy present"


def test_vectorised_incremental_risk_equals_recomputing_each_augmented_portfolio():
    rng = np.random.default_rng(7)
    n, m = 12, 5
    names = [f"s{i}" for i in range(n)] + [f"c{j}" for j in range(m)]
    factors = rng.normal(0, 0.01, (250, n + m)) + rng.normal(0, 0.006, (250, 1))
    cov = pd.DataFrame(np.cov(factors, rowvar=False), index=names, columns=names)
    raw = rng.uniform(0.2, 1.0, n)
    weights = dict(zip(names[:n], raw / raw.sum()))
    risk = portfolio_risk(weights, cov, candidates=names[n:], candidate_weight=0.15)

    w = np.array(list(weights.values()))
    base = math.sqrt(w @ cov.iloc[:n, :n].to_numpy() @ w)
    for j, candidate in enumerate(names[n:]):
        idx = list(range(n)) + [n + j]
        augmented = np.append(0.85 * w, 0.15)  # existing scaled by (1 − α_c), candidate at α_c
        with_vol = math.sqrt(augmented @ cov.to_numpy()[np.ix_(idx, idx)] @ augmented)
        assert risk["incremental_var"][candidate] == pytest.approx(Z_99 * (with_vol - base), abs=1e-14)
        assert risk["incremental_es"][candidate] == pytest.approx(PHI_Z / 0.01 * (with_vol - base), abs=1e-14)
