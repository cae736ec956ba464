"""Batch selection: top_k, correlation and hysteresis over the runs of one evaluation batch.

QMTL selects in three steps — candidates pass the thresholds, ``top_k`` keeps the k best by a
metric, then ``correlation`` greedily drops a run too correlated with one already kept, with
``hysteresis`` deciding whether a run may enter or must leave. Here the same settings become rule
results (SPEC §7), each reported once: ``performance`` reports the rank against ``top_k``,
``risk_constraint`` reports correlation and hysteresis.

:func:`evaluate_batch` runs it end to end:

1. every run is evaluated alone (rank 1, no correlation data); a run is a *candidate* when that
   summary is not ``fail`` (thresholds and hysteresis are per-run checks);
2. candidates are ranked by the ``top_k`` metric, descending (missing last; ties keep input
   order; without ``top_k`` the input order is the rank). A non-candidate gets the rank it would
   take among the candidates (1 + the number of candidates at least as good);
3. candidates within ``top_k`` are walked in rank order; one is kept unless |rho| with a run
   already kept exceeds ``correlation.max``;
4. every candidate is evaluated again with its rank and its correlations with the runs kept
   ahead of it, so its rule results say why it was (not) selected. A non-candidate keeps the
   result of its solo evaluation: it already fails on its own merits, and batch effects (rank,
   correlation) are reported for candidates only.

Correlation pairs are looked up order-independently (``(a, b)`` = ``(b, a)``). Without any
correlation data (``correlations=None``) the correlation check is reported as not evaluated. With
correlation data, a pair it does not contain is imputed with the world's
``risk_hub.fallback_correlation`` (default 0.5, the same conservative value the portfolio layer
uses for missing covariance pairs) and flagged ``imputed`` in ``details.blocked_by`` — never
silently taken as uncorrelated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from qmtl_validation.core.health import get_path
from qmtl_validation.core.policy import Policy, resolve_metric_path
from qmtl_validation.core.rules.core_rules import number


def pair_key(a: str, b: str) -> tuple[str, str]:
    """The order-independent key of a strategy pair."""
    return (a, b) if a <= b else (b, a)


def normalise_correlations(correlations: Mapping[Any, Any] | None) -> dict[tuple[str, str], float] | None:
    """Correlation data as ``{(a, b): rho}`` with ``a <= b``.

    Accepts ``{(a, b): rho}``, ``{"a,b": rho}`` or nested ``{a: {b: rho}}``. Self pairs are
    dropped; a pair given twice with different values, a non-numeric rho or |rho| > 1 raises
    ValueError.
    """
    if correlations is None:
        return None
    out: dict[tuple[str, str], float] = {}

    def put(a: Any, b: Any, rho: Any) -> None:
        a, b = str(a).strip(), str(b).strip()
        value = number(rho)
        if value is None or abs(value) > 1 + 1e-12:
            raise ValueError(f"correlation of ({a}, {b}) must be a number in [-1, 1], got {rho!r}")
        if a == b:
            return
        key = pair_key(a, b)
        if key in out and abs(out[key] - value) > 1e-12:
            raise ValueError(f"correlation of ({a}, {b}) given twice with different values")
        out[key] = value

    for key, value in correlations.items():
        if isinstance(value, Mapping):
            for other, rho in value.items():
                put(key, other, rho)
        elif isinstance(key, (tuple, list)) and len(key) == 2:
            put(key[0], key[1], value)
        elif isinstance(key, str) and key.count(",") == 1:
            a, b = key.split(",")
            put(a, b, value)
        else:
            raise ValueError(f"correlation key {key!r} is not a pair (a, b), 'a,b' or a nested mapping")
    return out


def rank_runs(values: Sequence[float | None], candidate: Sequence[bool]) -> np.ndarray:
    """1-based ranks by ``values`` descending (None last, ties in input order) among candidates;
    a non-candidate gets 1 + the number of candidates whose value is at least its own."""
    vals = np.array([-np.inf if v is None else float(v) for v in values], dtype=float)
    cand = np.asarray(candidate, dtype=bool)
    ranks = np.empty(len(vals), dtype=int)
    cand_idx = np.flatnonzero(cand)
    order = cand_idx[np.argsort(-vals[cand_idx], kind="stable")]
    ranks[order] = np.arange(1, len(order) + 1)
    others = np.flatnonzero(~cand)
    if len(others):
        ascending = np.sort(vals[cand_idx])
        at_least = len(ascending) - np.searchsorted(ascending, vals[others], side="left")
        ranks[others] = 1 + at_least
    return ranks


@dataclass(frozen=True)
class SelectionOutcome:
    """Where one run of a batch stands after selection.

    ``peers`` are the correlations (possibly imputed, listed in ``imputed``) with the runs kept
    ahead of it — None without correlation data or without a correlation limit. ``reason`` is
    None for a selected run, else ``not_candidate``, ``outside_top_k`` or ``correlation``.
    """

    strategy_id: str
    rank: int
    candidate: bool
    selected: bool
    peers: Mapping[str, float] | None
    imputed: frozenset[str] = frozenset()
    blocked_by: tuple[str, ...] = ()
    reason: str | None = None


def select(
    strategy_ids: Sequence[str],
    values: Sequence[float | None],
    candidate: Sequence[bool],
    *,
    top_k: int | None,
    correlation_max: float | None,
    correlations: Mapping[tuple[str, str], float] | None,
    fallback_correlation: float = 0.5,
) -> list[SelectionOutcome]:
    """Rank, cut at ``top_k`` and greedily de-correlate (see the module docstring).

    ``values`` are the top_k metric per run (None = missing); without ``top_k`` pass the input
    position as the value order (``values`` decreasing). ``correlations`` is the output of
    :func:`normalise_correlations`.
    """
    if len(set(strategy_ids)) != len(strategy_ids):
        raise ValueError("a batch holds one run per strategy; strategy ids repeat")
    ranks = rank_runs(values, candidate)
    check_correlation = correlation_max is not None and correlations is not None
    kept: list[tuple[int, str]] = []  # (rank, strategy id) in rank order
    outcomes: dict[int, SelectionOutcome] = {}
    for i in sorted(range(len(strategy_ids)), key=lambda j: (ranks[j], not candidate[j], j)):
        sid = strategy_ids[i]
        rank = int(ranks[i])
        peers: dict[str, float] | None = None
        imputed: set[str] = set()
        blocked: list[str] = []
        if check_correlation:
            peers = {}
            for kept_rank, other in kept:
                if kept_rank >= rank:
                    continue
                rho = correlations.get(pair_key(sid, other))  # type: ignore[union-attr]
                if rho is None:
                    rho = fallback_correlation
                    imputed.add(other)
                peers[other] = rho
                if abs(rho) > correlation_max:  # type: ignore[operator]
                    blocked.append(other)
        if not candidate[i]:
            reason: str | None = "not_candidate"
        elif top_k is not None and rank > top_k:
            reason = "outside_top_k"
        elif blocked:
            reason = "correlation"
        else:
            reason = None
            kept.append((rank, sid))
        outcomes[i] = SelectionOutcome(
            strategy_id=sid,
            rank=rank,
            candidate=bool(candidate[i]),
            selected=reason is None,
            peers=peers,
            imputed=frozenset(imputed),
            blocked_by=tuple(blocked),
            reason=reason,
        )
    return [outcomes[i] for i in range(len(strategy_ids))]


@dataclass(frozen=True)
class BatchEvaluation:
    """Results of :func:`evaluate_batch`, in input order."""

    results: tuple[Any, ...]
    selection: tuple[SelectionOutcome, ...]
    selected: tuple[str, ...] = field(default=())


def evaluate_batch(
    runs: Sequence[Mapping[str, Any]],
    policy: Policy | None,
    *,
    correlations: Mapping[Any, Any] | None = None,
    previously_active: Sequence[str] | set[str] | None = None,
) -> BatchEvaluation:
    """Evaluate a batch of runs together so ``top_k`` / ``correlation`` / ``hysteresis`` apply.

    Each run is ``{"metrics": ..., "stage": "backtest", "context": {...}}`` plus a
    ``strategy_id`` (or ``context["strategy_id"]``; default ``run<i>``), one run per strategy.
    ``correlations``: pairwise correlations between the batch's strategies (see
    :func:`normalise_correlations`); ``previously_active``: strategies currently selected (a
    run's own ``context["previously_active"]`` wins). Returns the final
    :class:`~qmtl_validation.core.evaluation.EvaluationResult` of each run, its selection outcome
    and the selected strategy ids in rank order.
    """
    from qmtl_validation.core.evaluation import evaluate_run

    active = set(previously_active or ())
    prepared = []
    for i, run in enumerate(runs):
        context = dict(run.get("context") or {})
        sid = str(run.get("strategy_id") or context.get("strategy_id") or f"run{i}")
        context["strategy_id"] = sid
        context.setdefault("previously_active", sid in active)
        for key in ("rank", "correlations", "imputed_correlations"):
            context.pop(key, None)
        metrics = run.get("metrics")
        if metrics is not None and not isinstance(metrics, Mapping) and callable(getattr(metrics, "to_dict", None)):
            metrics = metrics.to_dict()
        prepared.append((sid, metrics, run.get("stage") or "backtest", context))

    first = [evaluate_run(m, policy, stage, **ctx) for _, m, stage, ctx in prepared]
    candidate = [r.status != "fail" for r in first]
    ids = [sid for sid, *_ in prepared]
    selection = policy.selection if policy is not None else None
    top_k = selection.top_k if selection is not None else None
    if top_k is not None:
        path = resolve_metric_path(top_k.metric)
        values: list[float | None] = [number(get_path(m or {}, path)) for _, m, _, _ in prepared]
    else:
        values = [float(-i) for i in range(len(prepared))]
    outcomes = select(
        ids,
        values,
        candidate,
        top_k=None if top_k is None else top_k.k,
        correlation_max=None if selection is None or selection.correlation is None else selection.correlation.max,
        correlations=normalise_correlations(correlations),
        fallback_correlation=policy.risk_hub.fallback_correlation if policy is not None else 0.5,
    )
    final = []
    for (sid, metrics, stage, ctx), outcome, alone in zip(prepared, outcomes, first):
        if not outcome.candidate:
            final.append(alone)
            continue
        final.append(
            evaluate_run(
                metrics,
                policy,
                stage,
                **ctx,
                rank=outcome.rank,
                correlations=outcome.peers,
                imputed_correlations=outcome.imputed,
            )
        )
    selected = [
        o for o, r in zip(outcomes, final) if o.selected and r.status != "fail"
    ]
    return BatchEvaluation(
        results=tuple(final),
        selection=tuple(outcomes),
        selected=tuple(o.strategy_id for o in sorted(selected, key=lambda o: o.rank)),
    )
