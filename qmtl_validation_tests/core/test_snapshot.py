"""Snapshot contract: QMTL's accept/reject cases with its messages (reference §5.2) plus ours (SPEC §8)."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import math
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from qmtl_validation.core.snapshot import (
    SnapshotContractError,
    conservative_fallback_snapshot,
    parse_covariance,
    realized_returns_frame,
    sign_snapshot,
    snapshot_hash,
    snapshot_ingest_decision,
    validate_snapshot,
)

NOW = "2025-01-15T12:00:00Z"


def payload(**changes):
    """A valid snapshot; keyword ``field=None`` drops a field, anything else replaces it."""
    base = {
        "world_id": "world-a",
        "as_of": "2025-01-15T11:59:00Z",
        "version": "v42",
        "weights": {"strat_a": 0.35, "strat_b": 0.25, "strat_c": 0.40},
        # σ = 0.02, 0.03, 0.01 (daily); ρ_ab = 0.5, ρ_ac = 0.2, ρ_bc = -0.1
        "covariance": {
            "strat_a,strat_a": 0.0004,
            "strat_b,strat_b": 0.0009,
            "strat_c,strat_c": 0.0001,
            "strat_a,strat_b": 0.0003,
            "strat_a,strat_c": 0.00004,
            "strat_b,strat_c": -0.00003,
        },
        "realized_returns": {"strat_a": [0.01, -0.005, 0.002], "strat_b": [0.008, -0.004, 0.001]},
        "stress": {"crash": {"max_drawdown": 0.25, "var_99": 0.12, "es_99": 0.15}},
        "constraints": {"max_leverage": 3.0},
        "provenance": {"actor": "gateway", "stage": "live", "source": "gateway"},
        "ttl_sec": 600,
    }
    for key, value in changes.items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    return base


def reject(data, message, **kwargs):
    kwargs.setdefault("now", NOW)
    with pytest.raises(SnapshotContractError) as info:
        validate_snapshot(data, **kwargs)
    assert str(info.value) == message
    return info.value


# ----------------------------------------------------------------------------- accepted shapes


def test_valid_snapshot_is_normalised_and_hashed():
    snap = validate_snapshot(payload(), now=NOW)
    assert snap["world_id"] == "world-a"
    assert snap["as_of"] == "2025-01-15T11:59:00Z"
    assert snap["ttl_sec"] == 600
    assert snap["provenance"] == {"actor": "gateway", "stage": "live", "source": "gateway"}
    assert snap["created_at"] == NOW
    assert snap["hash"].startswith("sha256:") and len(snap["hash"]) == 7 + 64


def test_qmtl_repo_sample_lints_clean_only_with_world_actor_and_stage():
    sample = {
        "as_of": "2025-01-01T00:00:00Z",
        "version": "v1",
        "weights": {"strategy_a": 0.6, "strategy_b": 0.4},
        "realized_returns": {"strategy_a": [0.01, -0.005, 0.002], "strategy_b": [0.008, -0.004, 0.001]},
        "stress": {"crash": {"max_drawdown": 0.25}, "slowdown": {"max_drawdown": 0.12}},
    }
    reject(sample, "world_id is required")
    reject(sample, "actor is required", world_id="w")
    reject(sample, "stage is required", world_id="w", actor="gateway")
    snap = validate_snapshot(sample, world_id="w", actor="gateway", stage="live", now=NOW)
    assert snap["world_id"] == "w"
    assert snap["provenance"] == {"actor": "gateway", "stage": "live"}
    assert snap["ttl_sec"] == 900  # QMTL's default


def test_offset_as_of_is_normalised_to_utc_and_naive_is_utc():
    assert validate_snapshot(payload(as_of="2025-01-15T13:00:00+02:00"), now=NOW)["as_of"] == "2025-01-15T11:00:00Z"
    assert validate_snapshot(payload(as_of="2025-01-15T11:00:00"), now=NOW)["as_of"] == "2025-01-15T11:00:00Z"


def test_weights_within_tolerance_and_negative_entries_are_accepted():
    validate_snapshot(payload(weights={"a": 0.6, "b": 0.4005}, covariance=None), now=NOW)
    validate_snapshot(payload(weights={"a": 1.2, "b": -0.2}, covariance=None), now=NOW)


def test_explicit_null_ttl_gets_the_default():
    assert validate_snapshot(payload(ttl_sec=None), now=NOW)["ttl_sec"] == 900
    data = payload()
    data["ttl_sec"] = None
    assert validate_snapshot(data, now=NOW)["ttl_sec"] == 900


def test_bare_realized_returns_list_is_accepted_and_ref_is_trimmed():
    snap = validate_snapshot(
        payload(realized_returns=[0.01, -0.02, 3], realized_returns_ref="  s3://b/r.parquet "), now=NOW
    )
    assert snap["realized_returns"] == [0.01, -0.02, 3.0]
    assert snap["realized_returns_ref"] == "s3://b/r.parquet"


# ----------------------------------------------------------------------------- QMTL rejections (§5.2)

QMTL_REJECTIONS = [
    # 1. world_id
    (payload(world_id=None), {}, "world_id is required"),
    (payload(world_id=""), {}, "world_id is required"),
    # 2. as_of
    (payload(as_of=None), {}, "as_of is required"),
    (payload(as_of=20250115), {}, "as_of is required"),
    (payload(as_of="yesterday"), {}, "invalid as_of timestamp: yesterday"),
    # 3. version
    (payload(version=None), {}, "version is required"),
    (payload(version=42), {}, "version is required"),
    (payload(version=""), {}, "version is required"),
    # 4. weights
    (payload(weights=None), {}, "weights are required"),
    (payload(weights={}), {}, "weights are required"),
    (payload(weights=[0.5, 0.5]), {}, "weights are required"),
    (payload(weights={"strat_a": "heavy", "strat_b": 0.5}), {}, "weights must be numeric"),
    (payload(weights={"strat_a": 0.7, "strat_b": 0.2}), {}, "weights must sum to ~1.0"),
    (payload(weights={"strat_a": 1.0, "strat_b": -1.0}), {}, "weights must sum to ~1.0"),
    # 5. ttl_sec
    (payload(ttl_sec="soon"), {}, "ttl_sec must be an integer"),
    (payload(ttl_sec=1.5), {}, "ttl_sec must be an integer"),
    (payload(ttl_sec=0), {}, "ttl_sec must be positive"),
    (payload(ttl_sec=-5), {}, "ttl_sec must be positive"),
    (payload(ttl_sec=86_401), {}, "ttl_sec must be <= 86400"),
    # 6. realized returns
    (payload(realized_returns_ref="   "), {}, "realized_returns_ref must be a non-empty string when provided"),
    (payload(realized_returns_ref=7), {}, "realized_returns_ref must be a non-empty string when provided"),
    (payload(realized_returns="abc"), {},
     "realized_returns must be a mapping[str, sequence[float]] or a sequence[float]"),
    (payload(realized_returns=12), {},
     "realized_returns must be a mapping[str, sequence[float]] or a sequence[float]"),
    (payload(realized_returns={}), {}, "realized_returns must be non-empty when provided"),
    (payload(realized_returns={"s1": []}), {}, "realized_returns[s1] must be non-empty"),
    (payload(realized_returns={"s1": [0.1, True]}), {}, "realized_returns[s1] contains invalid boolean value"),
    (payload(realized_returns={"s1": [0.1, "x"]}), {}, "realized_returns[s1] contains non-numeric value"),
    (payload(realized_returns={"s1": [0.1, float("nan")]}), {}, "realized_returns[s1] contains non-finite value"),
    (payload(realized_returns={"s1": [float("inf")]}), {}, "realized_returns[s1] contains non-finite value"),
    (payload(realized_returns={"s1": 0.1}), {}, "realized_returns[s1] must be a sequence of finite floats"),
    (payload(realized_returns={"": [0.1]}), {}, "realized_returns keys must be non-empty strings"),
    (payload(realized_returns={"  ": [0.1]}), {}, "realized_returns keys must be non-empty strings"),
    (payload(realized_returns={"s1": [0.1, 0.2, 0.3]}), {"max_points_per_series": 2},
     "realized_returns series too long for 's1'"),
    (payload(realized_returns={"s1": [0.1, 0.2], "s2": [0.3, 0.4]}), {"max_points_total": 3},
     "realized_returns total points exceed limit"),
    (payload(realized_returns=[0.1, 0.2, 0.3, 0.4]), {"max_points_total": 3}, "realized_returns series too long"),
    # 7. provenance
    (payload(), {"actor": "risk-engine"}, "actor mismatch between payload and header"),
    (payload(), {"stage": "paper"}, "stage mismatch between payload and header"),
    (payload(provenance={"stage": "live"}), {}, "actor is required"),
    (payload(provenance={"actor": "gateway"}), {}, "stage is required"),
    (payload(provenance=None), {}, "actor is required"),
    (payload(), {"allowed_actors": ["risk-engine"]}, "actor 'gateway' not allowed"),
    (payload(), {"allowed_stages": ["paper"]}, "stage 'live' not allowed"),
    # 8. hash
    (payload(hash=123), {}, "hash must be a string when provided"),
    (payload(hash="sha256:" + "0" * 64), {}, "hash mismatch"),
]


@pytest.mark.parametrize(("data", "kwargs", "message"), QMTL_REJECTIONS)
def test_qmtl_contract_rejects_with_its_exact_message(data, kwargs, message):
    reject(data, message, **kwargs)


def test_header_equal_to_payload_provenance_is_accepted_and_allow_lists_pass():
    snap = validate_snapshot(
        payload(),
        actor="gateway",
        stage="live",
        allowed_actors=["gateway", "risk-engine"],
        allowed_stages=["live"],
        now=NOW,
    )
    assert snap["provenance"]["actor"] == "gateway"


def test_header_identity_is_injected_when_payload_has_none():
    snap = validate_snapshot(payload(provenance={"source": "risk"}), actor="risk-engine", stage="paper", now=NOW)
    assert snap["provenance"] == {"source": "risk", "actor": "risk-engine", "stage": "paper"}


def test_checks_run_in_qmtl_order():
    # Several violations at once: the earliest check in QMTL's order is the one reported.
    reject(payload(version=None, weights={}, ttl_sec=0), "version is required")
    reject(payload(weights={"strat_a": 0.3}, ttl_sec=0, hash=5), "weights must sum to ~1.0")
    reject(payload(ttl_sec=0, realized_returns={}), "ttl_sec must be positive")
    reject(payload(realized_returns={}, provenance=None), "realized_returns must be non-empty when provided")
    reject(payload(provenance=None, hash="sha256:bad"), "actor is required")


# ----------------------------------------------------------------------------- our additions (SPEC §8)


def test_world_id_from_the_landing_path_must_agree_with_the_payload():
    reject(payload(), "world_id mismatch", world_id="world-b")
    assert validate_snapshot(payload(world_id=None), world_id="world-a", now=NOW)["world_id"] == "world-a"


def test_identifiers_are_enforced_for_world_version_and_strategies():
    reject(payload(version="v 42"), "version 'v 42' is not a valid identifier (expected [A-Za-z0-9][A-Za-z0-9_.-]{0,127})")
    reject(payload(world_id="../etc"), "world_id '../etc' is not a valid identifier (expected [A-Za-z0-9][A-Za-z0-9_.-]{0,127})")
    with pytest.raises(SnapshotContractError, match="weights key 'strat/a' is not a valid identifier"):
        validate_snapshot(payload(weights={"strat/a": 0.5, "strat_b": 0.5}, covariance=None), now=NOW)


def test_booleans_and_numeric_strings_are_not_weights():
    reject(payload(weights={"strat_a": True, "strat_b": 0.0}), "weights must be numeric")
    reject(payload(weights={"strat_a": "1.0"}), "weights must be numeric")


def test_non_finite_numbers_are_rejected_anywhere():
    reject(payload(weights={"strat_a": float("nan"), "strat_b": 1.0}), "weights must be finite")
    reject(
        payload(stress={"crash": {"max_drawdown": float("inf")}}),
        "stress.crash.max_drawdown is not a finite number",
    )
    reject(payload(constraints={"limits": [1.0, float("nan")]}), "constraints.limits[1] is not a finite number")
    cov = dict(payload()["covariance"], **{"strat_a,strat_b": float("nan")})
    reject(payload(covariance=cov), "covariance[strat_a,strat_b] must be a finite number")


def test_as_of_in_the_future_is_rejected_beyond_the_clock_skew():
    validate_snapshot(payload(as_of="2025-01-15T12:00:30Z"), now=NOW)  # 30 s ahead: clock skew
    reject(
        payload(as_of="2025-01-15T12:05:00Z"),
        "as_of 2025-01-15T12:05:00Z is in the future (now 2025-01-15T12:00:00Z, allowed skew 60s)",
    )
    # now as a naive datetime is UTC
    reject(
        payload(as_of="2025-01-15T12:05:00Z"),
        "as_of 2025-01-15T12:05:00Z is in the future (now 2025-01-15T12:00:00Z, allowed skew 60s)",
        now=datetime(2025, 1, 15, 12, 0, 0),
    )


def test_producer_allow_list_accepts_listed_and_rejects_others():
    assert validate_snapshot(payload(), allowed_actors=["gateway"], now=NOW)["provenance"]["actor"] == "gateway"
    reject(payload(), "actor 'gateway' not allowed", allowed_actors=[])


def test_size_caps_on_strategies_and_covariance_entries():
    reject(payload(), "weights has 3 strategies, more than the limit of 2", max_strategies=2)
    reject(payload(), "covariance has 6 entries, more than the limit of 5", max_covariance_entries=5)


def test_asymmetric_covariance_pair_is_rejected():
    cov = dict(payload()["covariance"], **{"strat_b,strat_a": 0.00031})
    reject(
        payload(covariance=cov),
        "covariance is not symmetric: strat_a,strat_b=0.0003 but strat_b,strat_a=0.00031",
    )


def test_pair_given_both_ways_within_tolerance_and_colon_keys_are_accepted():
    cov = dict(payload()["covariance"])
    cov["strat_b:strat_a"] = 0.0003 * (1 + 1e-9)
    validate_snapshot(payload(covariance=cov), now=NOW)


def test_covariance_that_is_not_positive_semi_definite_is_rejected():
    # Correlations ρ_ab = 0.9, ρ_ac = 0.9, ρ_bc = -0.9 are impossible together: eigenvalue < 0.
    cov = {"a,a": 1.0, "b,b": 1.0, "c,c": 1.0, "a,b": 0.9, "a,c": 0.9, "b,c": -0.9}
    weights = {"a": 0.4, "b": 0.3, "c": 0.3}
    with pytest.raises(SnapshotContractError, match=r"^covariance is not positive semi-definite \(smallest eigenvalue -0\.8"):
        validate_snapshot(payload(weights=weights, covariance=cov), now=NOW)


def test_singular_but_positive_semi_definite_covariance_is_accepted():
    # Rank-1 matrix (perfectly correlated strategies): smallest eigenvalue is 0 up to rounding.
    vols = np.array([0.01, 0.02, 0.015])
    full = np.outer(vols, vols)
    names = ["a", "b", "c"]
    cov = {f"{names[i]},{names[j]}": float(full[i, j]) for i in range(3) for j in range(i, 3)}
    validate_snapshot(payload(weights={"a": 0.2, "b": 0.3, "c": 0.5}, covariance=cov), now=NOW)


def test_psd_check_includes_imputed_pairs_and_says_so():
    # ρ_ab = ρ_bc = 0.95 force ρ_ac ≥ 0.805; imputing 0.5 for the missing a,c pair is not PSD.
    cov = {"a,a": 1.0, "b,b": 1.0, "c,c": 1.0, "a,b": 0.95, "b,c": 0.95}
    with pytest.raises(SnapshotContractError, match=r"1 missing pair\(s\) imputed at correlation 0.5$"):
        validate_snapshot(payload(weights={"a": 0.4, "b": 0.3, "c": 0.3}, covariance=cov), now=NOW)
    # With the world's fallback correlation at 0.9 the completed matrix is PSD.
    validate_snapshot(
        payload(weights={"a": 0.4, "b": 0.3, "c": 0.3}, covariance=cov), now=NOW, fallback_correlation=0.9
    )


def test_weighted_strategy_without_variance_is_rejected():
    cov = {k: v for k, v in payload()["covariance"].items() if k != "strat_c,strat_c"}
    reject(payload(covariance=cov), "covariance has no variance for 'strat_c'")


def test_missing_cross_pair_is_accepted_and_imputed_later():
    cov = {k: v for k, v in payload()["covariance"].items() if k != "strat_b,strat_c"}
    snap = validate_snapshot(payload(covariance=cov), now=NOW)
    matrix, imputed = parse_covariance(snap, fallback_correlation=0.5)
    assert imputed == ["strat_b,strat_c"]
    assert matrix.loc["strat_b", "strat_c"] == pytest.approx(0.5 * 0.03 * 0.01)
    assert matrix.loc["strat_c", "strat_b"] == matrix.loc["strat_b", "strat_c"]


def test_covariance_names_outside_weights_are_candidates_and_need_a_variance():
    cov = dict(payload()["covariance"], **{"cand_x,strat_a": 0.0001})
    reject(payload(covariance=cov), "covariance has no variance for 'cand_x'")
    cov["cand_x,cand_x"] = 0.0004
    snap = validate_snapshot(payload(covariance=cov), now=NOW)
    matrix, imputed = parse_covariance(snap)
    assert list(matrix.index) == ["strat_a", "strat_b", "strat_c", "cand_x"]
    assert imputed == ["strat_b,cand_x", "strat_c,cand_x"]


def test_malformed_covariance_keys_and_negative_variance_are_rejected():
    reject(payload(covariance={"strat_a": 0.1}),
           "covariance key 'strat_a' must name two strategy ids as \"a,b\" (or \"a:b\")")
    reject(payload(covariance={"strat_a,strat_b,strat_c": 0.1}),
           "covariance key 'strat_a,strat_b,strat_c' must name two strategy ids as \"a,b\" (or \"a:b\")")
    reject(payload(covariance=[1, 2]), 'covariance must be a mapping of "a,b" keys to numbers')
    cov = dict(payload()["covariance"], **{"strat_a,strat_a": -0.0004})
    reject(payload(covariance=cov), "covariance[strat_a,strat_a] is a negative variance")
    reject(payload(covariance_ref=" "), "covariance_ref must be a non-empty string when provided")


def test_candidate_weight_constraint_must_be_a_fraction():
    validate_snapshot(payload(constraints={"candidate_weight": 0.1}), now=NOW)
    reject(payload(constraints={"candidate_weight": 0}), "constraints.candidate_weight must be a number in (0, 1]")
    reject(payload(constraints={"candidate_weight": "10%"}), "constraints.candidate_weight must be a number in (0, 1]")


# ----------------------------------------------------------------------------- hash and signature


def canonical(data):
    unsigned = {k: v for k, v in data.items() if k not in ("signature", "hash", "created_at")}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":")).encode("utf-8")


def test_hash_is_sha256_of_the_submitted_payload_before_injection():
    data = payload(provenance=None, ttl_sec=None, world_id=None)
    expected = "sha256:" + hashlib.sha256(canonical(data)).hexdigest()
    snap = validate_snapshot(data, world_id="world-a", actor="gw", stage="live", now=NOW)
    assert snap["hash"] == expected == snapshot_hash(data)
    # Injected fields (world_id, provenance, ttl_sec, created_at) do not move the hash.
    assert snapshot_hash(snap) != expected


def test_submitted_hash_that_matches_is_accepted_and_created_at_is_not_hashed():
    data = payload(created_at="2025-01-15T11:59:30Z")
    data["hash"] = "sha256:" + hashlib.sha256(canonical(data)).hexdigest()
    snap = validate_snapshot(data, now=NOW)
    assert snap["hash"] == data["hash"]
    assert snap["created_at"] == "2025-01-15T11:59:30Z"


def test_non_ascii_content_is_hashed_with_ascii_escapes():
    data = payload(provenance={"actor": "gateway", "stage": "live", "source": "Zürich desk"})
    assert b"Z\\u00fcrich" in canonical(data)
    assert validate_snapshot(data, now=NOW)["hash"] == "sha256:" + hashlib.sha256(canonical(data)).hexdigest()


KEY = "world-a-signing-key"


def signed(data, key=KEY):
    data = copy.deepcopy(data)
    data["signature"] = hmac.new(key.encode(), canonical(data), hashlib.sha256).hexdigest()
    return data


def test_valid_signature_is_accepted_with_str_or_bytes_key():
    data = signed(payload())
    assert data["signature"] == sign_snapshot(data, KEY)
    validate_snapshot(data, signing_key=KEY, now=NOW)
    validate_snapshot(data, signing_key=KEY.encode(), now=NOW)


def test_signature_covers_the_payload_as_submitted_not_the_injected_fields():
    data = signed(payload(provenance=None, world_id=None, ttl_sec=None))
    snap = validate_snapshot(data, world_id="world-a", actor="gateway", stage="live", signing_key=KEY, now=NOW)
    assert snap["signature"] == data["signature"]
    # created_at and hash may be added after signing without breaking the signature.
    data["created_at"] = "2025-01-15T11:59:30Z"
    data["hash"] = snapshot_hash(data)
    validate_snapshot(data, world_id="world-a", actor="gateway", stage="live", signing_key=KEY, now=NOW)


def test_wrong_signature_is_rejected():
    data = signed(payload())
    data["weights"] = {"strat_a": 0.45, "strat_b": 0.15, "strat_c": 0.40}  # tampered after signing
    reject(data, "signature mismatch", signing_key=KEY)
    reject(signed(payload(), key="another-key"), "signature mismatch", signing_key=KEY)
    upper = signed(payload())
    upper["signature"] = upper["signature"].upper()
    reject(upper, "signature mismatch", signing_key=KEY)
    reject(payload(signature="zz\u00e9"), "signature mismatch", signing_key=KEY)


def test_missing_signature_is_rejected_only_when_the_world_has_a_key():
    reject(payload(), "signature is required", signing_key=KEY)
    validate_snapshot(payload(), now=NOW)
    reject(payload(signature=5), "signature must be a string when provided")


# ----------------------------------------------------------------------------- ingest decision


def test_redrop_of_identical_content_is_a_noop_and_different_content_a_conflict():
    first = validate_snapshot(payload(), now=NOW)
    assert snapshot_ingest_decision(None, first["hash"]) == "new"
    # Same content dropped again later (a different created_at is not content).
    again = validate_snapshot(payload(created_at="2025-01-15T11:59:59Z"), now="2025-01-15T12:30:00Z")
    assert snapshot_ingest_decision(first["hash"], again["hash"]) == "duplicate"
    changed = validate_snapshot(payload(weights={"strat_a": 0.4, "strat_b": 0.2, "strat_c": 0.4}), now=NOW)
    assert changed["version"] == first["version"]
    assert snapshot_ingest_decision(first["hash"], changed["hash"]) == "conflict"


# ----------------------------------------------------------------------------- parsing helpers


def test_parse_covariance_reads_flat_square_and_long_forms_alike():
    flat = {"a,a": 0.04, "b,b": 0.09, "a:b": 0.012}
    matrix, imputed = parse_covariance(flat, ["a", "b"])
    assert imputed == []
    np.testing.assert_allclose(matrix.to_numpy(), [[0.04, 0.012], [0.012, 0.09]])
    square = pd.DataFrame([[0.04, np.nan], [0.012, 0.09]], index=["a", "b"], columns=["a", "b"])
    assert parse_covariance(square)[0].equals(matrix)
    long = pd.DataFrame({"strategy_a": ["a", "b", "a"], "strategy_b": ["a", "b", "b"], "covariance": [0.04, 0.09, 0.012]})
    assert parse_covariance(long, ["a", "b"])[0].equals(matrix)


def test_parse_covariance_imputes_missing_pairs_with_the_fallback_correlation():
    flat = {"a,a": 0.04, "b,b": 0.09, "c,c": 0.01, "a,b": 0.012}
    matrix, imputed = parse_covariance(flat, ["a", "b", "c"], fallback_correlation=0.3)
    assert imputed == ["a,c", "b,c"]
    assert matrix.loc["a", "c"] == pytest.approx(0.3 * 0.2 * 0.1)
    assert matrix.loc["c", "b"] == pytest.approx(0.3 * 0.3 * 0.1)
    with pytest.raises(SnapshotContractError, match="covariance has no variance for 'd'"):
        parse_covariance(flat, ["a", "d"])


def test_realized_returns_frame_right_aligns_ragged_series():
    frame = realized_returns_frame({"a": [0.01, 0.02, 0.03], "b": [0.05]})
    assert list(frame.index) == [-2, -1, 0]
    assert frame["b"].isna().tolist() == [True, True, False]
    assert frame.loc[0, "b"] == 0.05


# ----------------------------------------------------------------------------- fallback


def snapshot_with(version, vols, correlations, names=("a", "b", "c"), as_of="2025-01-15T11:00:00Z"):
    cov = {f"{n},{n}": v * v for n, v in zip(names, vols)}
    position = dict(zip(names, vols))
    for pair, rho in correlations.items():
        x, y = pair.split(",")
        cov[pair] = rho * position[x] * position[y]
    return validate_snapshot(
        payload(
            version=version,
            as_of=as_of,
            weights={"a": 0.5, "b": 0.3, "c": 0.2},
            covariance=cov,
            realized_returns=None,
        ),
        now=NOW,
    )


def test_fallback_keeps_weights_raises_correlations_and_takes_the_largest_vols():
    previous = snapshot_with("v7", (0.10, 0.20, 0.15), {"a,b": 0.8, "a,c": 0.2})  # b,c missing
    older = snapshot_with("v6", (0.12, 0.18, 0.15), {"a,b": 0.7}, as_of="2025-01-15T10:00:00Z")
    fallback = conservative_fallback_snapshot(previous, [previous, older], fallback_correlation=0.5)

    assert fallback["version"] == "v7-fallback"
    assert fallback["weights"] == previous["weights"]
    assert fallback["as_of"] == previous["as_of"]
    # σ' = max over snapshots: a 0.12 (from v6), b 0.20 and c 0.15 (v7)
    cov = fallback["covariance"]
    assert math.sqrt(cov["a,a"]) == pytest.approx(0.12)
    assert math.sqrt(cov["b,b"]) == pytest.approx(0.20)
    assert math.sqrt(cov["c,c"]) == pytest.approx(0.15)
    # ρ' = max(ρ, 0.5): a,b stays 0.8; a,c raised 0.2 → 0.5; b,c missing → 0.5
    assert cov["a,b"] == pytest.approx(0.8 * 0.12 * 0.20)
    assert cov["a,c"] == pytest.approx(0.5 * 0.12 * 0.15)
    assert cov["b,c"] == pytest.approx(0.5 * 0.20 * 0.15)
    flags = fallback["fallback"]
    assert flags["raised_pairs"] == ["a,c"]
    assert flags["imputed_pairs"] == ["b,c"]
    assert flags["raised_volatilities"] == {
        "a": {"previous": pytest.approx(0.10), "fallback": pytest.approx(0.12), "source_version": "v6"}
    }
    assert flags["previous_version"] == "v7" and flags["psd_repaired"] is False
    assert fallback["provenance"]["source"] == "conservative_fallback"
    # The fallback is itself a valid snapshot whose hash follows the contract.
    assert validate_snapshot(fallback, now=NOW)["hash"] == fallback["hash"]
    # Rebuilt from the same inputs it is the same content: a no-op re-ingest.
    again = conservative_fallback_snapshot(previous, [previous, older], fallback_correlation=0.5)
    assert snapshot_ingest_decision(fallback["hash"], again["hash"]) == "duplicate"


def test_fallback_repairs_positive_semi_definiteness_when_raising_breaks_it():
    # PSD correlations (smallest eigenvalue 0.014); raising ρ_ad 0.2 → 0.5 makes them indefinite.
    corr = [[1.0, 0.5, 0.7, 0.2], [0.5, 1.0, 0.8, 0.9], [0.7, 0.8, 1.0, 0.5], [0.2, 0.9, 0.5, 1.0]]
    names = ["a", "b", "c", "d"]
    cov = {f"{names[i]},{names[j]}": corr[i][j] * 0.01 for i in range(4) for j in range(i, 4)}
    previous = validate_snapshot(
        payload(weights=dict.fromkeys(names, 0.25), covariance=cov, realized_returns=None), now=NOW
    )
    fallback = conservative_fallback_snapshot(previous, [], fallback_correlation=0.5)
    assert fallback["fallback"]["psd_repaired"] is True
    matrix, _ = parse_covariance(fallback)
    assert np.linalg.eigvalsh(matrix.to_numpy())[0] > -1e-12
    np.testing.assert_allclose(np.diag(matrix.to_numpy()), 0.01)


def test_fallback_without_any_variance_for_a_strategy_fails():
    previous = {"version": "v1", "weights": {"a": 1.0}, "covariance": {}}
    with pytest.raises(ValueError, match="no volatility estimate for 'a'"):
        conservative_fallback_snapshot(previous, [])


def test_timestamps_accept_datetime_now():
    snap = validate_snapshot(payload(), now=datetime(2025, 1, 15, 12, tzinfo=timezone.utc))
    assert snap["created_at"] == "2025-01-15T12:00:00Z"


def test_parse_covariance_checks_psd_of_a_covariance_read_from_a_ref():
    long = pd.DataFrame(
        {
            "strategy_a": ["a", "b", "c", "a", "a", "b"],
            "strategy_b": ["a", "b", "c", "b", "c", "c"],
            "covariance": [1.0, 1.0, 1.0, 0.9, 0.9, -0.9],
        }
    )
    with pytest.raises(SnapshotContractError, match="not positive semi-definite"):
        parse_covariance(long)
    matrix, _ = parse_covariance(long, check_psd=False)
    assert matrix.shape == (3, 3)
