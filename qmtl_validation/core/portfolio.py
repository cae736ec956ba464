"""Portfolio risk of a snapshot: Gaussian VaR/ES, Euler components, incremental risk (SPEC §8).

Model: zero-mean normal portfolio return with covariance Σ (per-period units of the snapshot; no
rescaling happens here). For weights w:

- σ_p = √(wᵀΣw)
- VaR_α = z_α·σ_p with z_α = Φ⁻¹(α) (2.3263 at 99%, not QMTL's rounded 2.33)
- ES_α = σ_p·φ(z_α)/(1−α) (2.6652·σ_p at 99%; the exact normal ratio ES/VaR ≈ 1.1457, not 1.2)
- component VaR_i = w_i·(Σw)_i/σ_p·z_α (Euler allocation: the components sum to VaR), likewise
  component ES with φ(z_α)/(1−α) in place of z_α.
- incremental VaR/ES of a candidate c at weight α_c (``candidate_weight``, else 1/(n+1) with n the
  number of weights): the candidate enters at α_c, existing weights are scaled by (1−α_c):
  σ²_with = (1−α_c)²·wᵀΣw + 2α_c(1−α_c)·wᵀΣ_{·c} + α_c²·Σ_cc, incremental = risk(with) − risk(base).
  All candidates are evaluated at once from the n×m block of cross-covariances. A candidate that
  is already held is "topped up" by the same formula (its column is part of Σ).

VaR and ES are positive loss fractions. Missing covariance pairs are imputed with
``fallback_correlation``·σ_i·σ_j (never 0, as QMTL does) and listed in ``imputed_pairs``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

from qmtl_validation.core.snapshot import (
    DEFAULT_FALLBACK_CORRELATION,
    SnapshotContractError,
    parse_covariance,
    realized_returns_frame,
)

CandidateSpec = float | Mapping[str, Any]


def _weights_series(weights: Mapping[str, float] | pd.Series) -> pd.Series:
    if isinstance(weights, pd.Series):
        series = weights.astype("float64")
    else:
        series = pd.Series(dict(weights), dtype="float64")
    series.index = series.index.map(str)
    if series.empty:
        raise ValueError("weights are required")
    if not np.isfinite(series.to_numpy()).all():
        raise ValueError("weights must be finite")
    return series


def _alpha_quantities(alpha: float) -> tuple[float, float]:
    if not 0.5 < alpha < 1:
        raise ValueError(f"alpha must be in (0.5, 1), got {alpha!r}")
    # The standard normal quantile and density as scipy.stats.norm computes them, without
    # importing scipy.stats (seconds of start-up for every process that loads the code location).
    z = float(special.ndtri(alpha))
    density = math.exp(-z * z / 2.0) / math.sqrt(2.0 * math.pi)
    return z, density / (1.0 - alpha)


def _split_candidates(
    candidates: Iterable[str] | Mapping[str, CandidateSpec] | None,
) -> tuple[list[str], dict[str, CandidateSpec]]:
    if candidates is None:
        return [], {}
    if isinstance(candidates, Mapping):
        return [], {str(k): v for k, v in candidates.items()}
    if isinstance(candidates, str):
        return [candidates], {}
    return [str(c) for c in candidates], {}


def _mapping_candidate_block(
    specs: Mapping[str, CandidateSpec],
    held: list[str],
    held_vols: np.ndarray,
    fallback_correlation: float,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Cross-covariance block (n×m), variances (m) and imputed labels for mapping candidates."""
    n, m = len(held), len(specs)
    block = np.full((n, m), np.nan)
    variances = np.full(m, np.nan)
    position = {name: i for i, name in enumerate(held)}
    for j, (cid, spec) in enumerate(specs.items()):
        if cid in position:
            raise ValueError(
                f"candidate '{cid}' is already held; pass candidates as ids so its column of the "
                "covariance is used"
            )
        if isinstance(spec, Mapping):
            variance = spec.get("variance")
            for other, value in dict(spec.get("covariances") or {}).items():
                i = position.get(str(other))
                if i is not None:
                    block[i, j] = float(value)
        else:
            variance = spec
        if variance is None or not math.isfinite(float(variance)) or float(variance) < 0:
            raise SnapshotContractError(f"candidate '{cid}' has no valid variance")
        variances[j] = float(variance)
    if not np.isfinite(block[~np.isnan(block)]).all():
        raise SnapshotContractError("candidate covariances must be finite numbers")
    missing = np.isnan(block)
    block = np.where(missing, fallback_correlation * np.outer(held_vols, np.sqrt(variances)), block)
    rows, cols = np.nonzero(missing)
    names = list(specs)
    labels = [f"{held[i]},{names[j]}" for i, j in zip(rows.tolist(), cols.tolist())]
    return block, variances, labels


def portfolio_risk(
    weights: Mapping[str, float] | pd.Series,
    covariance: pd.DataFrame | Mapping[str, Any],
    *,
    alpha: float = 0.99,
    candidates: Iterable[str] | Mapping[str, CandidateSpec] | None = None,
    candidate_weight: float | None = None,
    fallback_correlation: float = DEFAULT_FALLBACK_CORRELATION,
) -> dict[str, Any]:
    """Gaussian portfolio risk of ``weights`` and the incremental risk of ``candidates``.

    ``weights``: {strategy_id: weight} as in the snapshot (used as given, not renormalised;
    zero weights need no covariance and get component 0). ``covariance``: a square DataFrame
    (NaN = missing pair), the flat ``{"a,b": v}`` map (``"a:b"`` accepted), or anything
    ``parse_covariance`` reads. Every non-zero-weighted strategy needs its variance. The matrix
    is not re-checked for positive semi-definiteness here (the snapshot contract does that); a
    negative combined variance from a bad matrix is clipped at 0.

    ``candidates`` — either
    - ids (an iterable of str) whose variance and covariances are in ``covariance``; or
    - a mapping ``{id: variance}`` or ``{id: {"variance": v, "covariances": {held_id: c}}}``.
    Missing candidate cross-terms are imputed like any other pair and flagged.

    Returns ``volatility`` (σ_p), ``var``, ``es``, ``alpha``, ``z``, ``component_var`` and
    ``component_es`` ({strategy: value}, summing to ``var``/``es``; all 0 when σ_p = 0, where the
    allocation is undefined and the total is 0), ``candidate_weight`` (α_c, None without
    candidates), ``incremental_var``, ``incremental_es``, ``var_with_candidate``,
    ``es_with_candidate`` ({candidate: value}) and ``imputed_pairs`` (``"a,b"`` labels of every
    imputed pair among held strategies and between a held strategy and a candidate).
    """
    z, es_multiplier = _alpha_quantities(alpha)
    w_all = _weights_series(weights)
    held_series = w_all[w_all != 0]
    held = list(held_series.index)
    n = len(held)
    id_candidates, spec_candidates = _split_candidates(candidates)
    extra = [c for c in dict.fromkeys(id_candidates) if c not in set(held)]
    names = held + extra

    # PSD is the contract's job (validate_snapshot / parse_covariance on read); a candidate's
    # imputed cross terms must not make the whole world's risk fail, so no re-check here.
    matrix_frame, imputed = parse_covariance(
        covariance, names, fallback_correlation=fallback_correlation, check_psd=False
    )
    sigma = matrix_frame.to_numpy()
    extra_set = set(extra)
    imputed_pairs = [p for p in imputed if not set(p.split(",")) <= extra_set]

    w = held_series.to_numpy()
    sigma_held = sigma[:n, :n]
    sigma_w = sigma_held @ w
    base_variance = max(float(w @ sigma_w), 0.0)
    volatility = math.sqrt(base_variance)
    if volatility > 0:
        unit = w * sigma_w / volatility
    else:
        unit = np.zeros(n)
    # Zero-weight strategies are listed with 0 so the map covers every weight of the snapshot.
    component_var = dict.fromkeys(w_all.index, 0.0) | dict(zip(held, (unit * z).tolist()))
    component_es = dict.fromkeys(w_all.index, 0.0) | dict(
        zip(held, (unit * es_multiplier).tolist())
    )

    result: dict[str, Any] = {
        "volatility": volatility,
        "var": z * volatility,
        "es": es_multiplier * volatility,
        "alpha": float(alpha),
        "z": z,
        "component_var": component_var,
        "component_es": component_es,
        "candidate_weight": None,
        "incremental_var": {},
        "incremental_es": {},
        "var_with_candidate": {},
        "es_with_candidate": {},
        "imputed_pairs": imputed_pairs,
    }
    if not id_candidates and not spec_candidates:
        return result

    a = float(candidate_weight) if candidate_weight is not None else 1.0 / (len(w_all) + 1)
    if not 0 < a <= 1:
        raise ValueError(f"candidate_weight must be in (0, 1], got {candidate_weight!r}")
    ids = list(dict.fromkeys(id_candidates))
    column = {name: i for i, name in enumerate(names)}
    idx = np.array([column[c] for c in ids], dtype=np.int64)
    cross = sigma[:n, idx]
    variances = sigma[idx, idx]
    if spec_candidates:
        held_vols = np.sqrt(np.diag(sigma_held))
        block, spec_vars, labels = _mapping_candidate_block(
            spec_candidates, held, held_vols, fallback_correlation
        )
        cross = np.hstack([cross, block])
        variances = np.concatenate([variances, spec_vars])
        ids += list(spec_candidates)
        imputed_pairs += labels

    with_variance = (1 - a) ** 2 * base_variance + 2 * a * (1 - a) * (w @ cross) + a**2 * variances
    with_vol = np.sqrt(np.clip(with_variance, 0.0, None))
    result.update(
        candidate_weight=a,
        incremental_var=dict(zip(ids, (z * (with_vol - volatility)).tolist())),
        incremental_es=dict(zip(ids, (es_multiplier * (with_vol - volatility)).tolist())),
        var_with_candidate=dict(zip(ids, (z * with_vol).tolist())),
        es_with_candidate=dict(zip(ids, (es_multiplier * with_vol).tolist())),
        imputed_pairs=imputed_pairs,
    )
    return result


def snapshot_portfolio_risk(
    snapshot: Mapping[str, Any],
    *,
    covariance: pd.DataFrame | Mapping[str, Any] | None = None,
    candidates: Iterable[str] | Mapping[str, CandidateSpec] | None = None,
    alpha: float = 0.99,
    fallback_correlation: float = DEFAULT_FALLBACK_CORRELATION,
) -> dict[str, Any]:
    """``portfolio_risk`` of a validated snapshot: its weights, its inline covariance (or the
    resolved ``covariance`` passed in) and ``constraints.candidate_weight`` when set."""
    constraints = snapshot.get("constraints") or {}
    return portfolio_risk(
        snapshot["weights"],
        covariance if covariance is not None else snapshot,
        alpha=alpha,
        candidates=candidates,
        candidate_weight=constraints.get("candidate_weight"),
        fallback_correlation=fallback_correlation,
    )


def risk_contributions(
    weights: Mapping[str, float] | pd.Series,
    covariance: pd.DataFrame | Mapping[str, Any],
    *,
    alpha: float = 0.99,
    fallback_correlation: float = DEFAULT_FALLBACK_CORRELATION,
) -> pd.DataFrame:
    """One row per weighted strategy, largest contribution first, for tables and bar charts.

    Columns: ``strategy_id``, ``weight``, ``volatility`` (σ_i), ``marginal_var``
    (∂VaR/∂w_i = z·(Σw)_i/σ_p), ``component_var``, ``component_es`` and ``share_of_var``
    (component / VaR; sums to 1, negative for hedges; NaN when VaR is 0).
    """
    z, _ = _alpha_quantities(alpha)
    risk = portfolio_risk(
        weights, covariance, alpha=alpha, fallback_correlation=fallback_correlation
    )
    w_all = _weights_series(weights)
    held = [s for s in w_all.index if w_all[s] != 0]
    matrix, _ = parse_covariance(
        covariance, held, fallback_correlation=fallback_correlation, check_psd=False
    )
    sigma = matrix.to_numpy()
    w = w_all[held].to_numpy()
    vol_p = risk["volatility"]
    marginal = z * (sigma @ w) / vol_p if vol_p > 0 else np.zeros(len(held))
    component = np.array([risk["component_var"][s] for s in held])
    frame = pd.DataFrame(
        {
            "strategy_id": held,
            "weight": w,
            "volatility": np.sqrt(np.diag(sigma)),
            "marginal_var": marginal,
            "component_var": component,
            "component_es": np.array([risk["component_es"][s] for s in held]),
            "share_of_var": (
                component / risk["var"] if risk["var"] > 0 else np.full(len(held), np.nan)
            ),
        }
    )
    return frame.sort_values("component_var", ascending=False, kind="stable").reset_index(drop=True)


def historical_var_es(
    weights: Mapping[str, float] | pd.Series,
    realized_returns: pd.DataFrame | Mapping[str, Any],
    alpha: float = 0.99,
) -> dict[str, Any]:
    """Historical VaR/ES of the weighted realized portfolio return.

    p_t = Σ_i w_i r_{i,t} over the periods where every weighted strategy present in
    ``realized_returns`` has a value (leading NaN of ragged series are dropped, never read as 0).
    q = linear (1−α) quantile of p; VaR = max(−q, 0); ES = max(−mean(p ≤ q), 0) — positive loss
    fractions, the definition of ``returns.var_p01``/``es_p01`` (SPEC §5) at α = 0.99.
    ``realized_returns``: a DataFrame (columns = strategies) or the snapshot's inline mapping.

    Returns ``var``, ``es`` (None when fewer than 2 periods, with ``note``), ``n_periods``,
    ``missing_strategies`` (weighted strategies without a series: left out, so read
    ``covered_weight`` = Σ|w| of those present / Σ|w| before trusting the figure).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    frame = (
        realized_returns
        if isinstance(realized_returns, pd.DataFrame)
        else realized_returns_frame(realized_returns)
    )
    frame = frame.rename(columns=str)
    w_all = _weights_series(weights)
    held = w_all[w_all != 0]
    present = [s for s in held.index if s in frame.columns]
    missing = [s for s in held.index if s not in frame.columns]
    total_abs = float(np.abs(held.to_numpy()).sum())
    covered = float(np.abs(held[present].to_numpy()).sum()) / total_abs if total_abs > 0 else 0.0
    values = frame[present].to_numpy(dtype=np.float64)
    complete = np.isfinite(values).all(axis=1) if present else np.zeros(len(frame), dtype=bool)
    portfolio = values[complete] @ held[present].to_numpy()
    out: dict[str, Any] = {
        "var": None,
        "es": None,
        "alpha": float(alpha),
        "n_periods": int(portfolio.size),
        "missing_strategies": missing,
        "covered_weight": covered,
        "note": None,
    }
    if portfolio.size < 2:
        out["note"] = "fewer than 2 periods with every weighted strategy present"
        return out
    q = float(np.quantile(portfolio, 1 - alpha, method="linear"))
    out["var"] = max(-q, 0.0)
    out["es"] = max(-float(portfolio[portfolio <= q].mean()), 0.0)
    return out
