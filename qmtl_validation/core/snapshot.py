"""Risk snapshot contract: validation, hashing, signatures, covariance parsing, fallback (SPEC §8).

A risk snapshot is the JSON document a producer drops under
``snapshots/<date>/<world_id>/<version>.json`` (SPEC §3). ``validate_snapshot`` applies QMTL's
contract (``reference/qmtl_reference.md`` §5.2) with QMTL's messages, plus the checks QMTL lacks.

Order of checks (the first failure is reported, as one ``SnapshotContractError`` message).
QMTL's eight checks keep their relative order; each of ours sits beside the field it concerns,
and the cross-field ones come after QMTL's provenance step and before its final hash step:

1. ``world_id`` required (QMTL); equal to the caller's ``world_id`` when both are given; an
   identifier.
2. ``as_of`` required and parseable (QMTL); not later than ``now`` + ``max_clock_skew``.
3. ``version`` a non-empty string (QMTL; an int is rejected); an identifier.
4. ``weights`` non-empty mapping, numeric, summing to 1 ± 1e-3 (QMTL); finite; identifier keys;
   at most ``max_strategies`` entries.
5. ``ttl_sec`` an integer in [1, ``ttl_sec_max``] (QMTL); default ``ttl_sec_default``.
6. ``realized_returns_ref`` / ``realized_returns`` shapes and caps (QMTL).
7. provenance ``actor`` / ``stage``: header vs payload, required, allow-lists (QMTL). The
   ``actor`` is the producer: ``allowed_actors`` is the world's ``risk_hub.allowed_producers``.
8. ``covariance`` (ours): a flat ``{"a,b": v}`` map (``"a:b"`` accepted) of at most
   ``max_covariance_entries`` finite numbers over identifier names; non-negative variances; a pair
   given in both orders agrees (symmetry); every strategy named in the covariance and every
   strategy with a non-zero weight has its variance ``"s,s"`` (a missing variance cannot be
   imputed); the matrix, with missing cross pairs imputed at ``fallback_correlation``, is
   positive semi-definite. ``covariance_ref`` must be a non-empty string when given.
9. ``constraints.candidate_weight`` in (0, 1] when given; no NaN/inf anywhere else in the payload.
10. ``created_at`` parseable when given.
11. ``signature`` (ours): when ``signing_key`` is given, a lowercase-hex HMAC-SHA256 of the
    canonical bytes must be present and equal (constant-time comparison).
12. ``hash`` a string when given, equal to ``sha256:`` + hex of the canonical bytes (QMTL).

Decisions where QMTL is loose:
- Numbers must be JSON numbers: booleans and numeric strings are rejected (QMTL coerces ``"0.5"``).
  ``ttl_sec`` must be integral (``900.0`` is accepted, ``1.5`` is not); an explicit ``null`` gets
  the default, which is what QMTL's hub applies anyway.
- Covariance names outside ``weights`` are allowed: they describe candidates or unweighted
  strategies whose covariances the portfolio layer needs. They must still be identifiers, carry
  a variance, and take part in the symmetry and PSD checks. A mistyped weighted name is caught
  because that strategy then lacks its variance.
- A snapshot without inline ``covariance`` is valid (QMTL's samples have none); the covariance
  then comes from ``covariance_ref`` and ``parse_covariance`` applies the same checks on read
  (names, finite values, variances, symmetry, PSD).
- Tolerances: symmetry — the two values of a pair may differ by at most
  ``SYMMETRY_TOLERANCE`` (1e-6) in correlation units, i.e. ``|x − y| ≤ 1e-6·√(σ²_a σ²_b)``
  (``max(|x|, |y|)`` when a variance is zero); PSD — the smallest eigenvalue must be
  ``≥ −PSD_TOLERANCE·max(1, trace)`` with ``PSD_TOLERANCE`` = 1e-8, far above float rounding
  of a genuinely PSD matrix (≈ n·1e-16·‖Σ‖) and far below a real inconsistency at daily-variance
  scale. ``as_of`` may lead ``now`` by ``MAX_CLOCK_SKEW`` (60 s) of producer clock drift.

Canonical bytes (signature and hash): ``json.dumps(p, sort_keys=True, separators=(",", ":"))``
(default ``ensure_ascii``) encoded as UTF-8, where ``p`` is the payload exactly as submitted minus
its top-level ``signature``, ``hash`` and ``created_at`` fields, before anything is injected.
Unlike QMTL (which hashes after injecting world_id, ttl and provenance, with blake3), the hash
therefore does not depend on headers or defaults, and a producer can sign and hash offline.

The normalised snapshot is the submitted payload plus: ``world_id`` (when the caller gave it),
``as_of`` rewritten as UTC ``...Z``, float ``weights``/``covariance``/``realized_returns``,
trimmed ``realized_returns_ref``, ``ttl_sec``, ``provenance.actor``/``stage``, ``created_at``
(``now`` when absent) and ``hash``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Literal, NoReturn

import numpy as np
import pandas as pd

from qmtl_validation.core.identifiers import IDENTIFIER_PATTERN, check_identifier

DEFAULT_TTL_SEC = 900
MAX_TTL_SEC = 86_400
MAX_POINTS_PER_SERIES = 200_000
MAX_POINTS_TOTAL = 1_000_000
MAX_STRATEGIES = 2_000
MAX_COVARIANCE_ENTRIES = 1_000_000
MAX_CLOCK_SKEW = timedelta(seconds=60)
WEIGHT_SUM_TOLERANCE = 1e-3
SYMMETRY_TOLERANCE = 1e-6
PSD_TOLERANCE = 1e-8
DEFAULT_FALLBACK_CORRELATION = 0.5

# Fields that never enter the canonical bytes: they are either the integrity data themselves or
# set at ingest (created_at), so a retry of the same content hashes the same.
UNSIGNED_FIELDS = ("signature", "hash", "created_at")

IngestDecision = Literal["new", "duplicate", "conflict"]


class SnapshotContractError(ValueError):
    """A snapshot that breaks the contract; the message is the reason recorded for the rejection."""


# --------------------------------------------------------------------------- timestamps


def parse_timestamp(value: str | datetime) -> datetime:
    """ISO-8601 text or a datetime → timezone-aware UTC datetime (naive is read as UTC).

    Raises ``ValueError`` for unparseable text.
    """
    if isinstance(value, datetime):
        ts = value
    else:
        text = str(value).strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        ts = datetime.fromisoformat(text)
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return ts.astimezone(timezone.utc)


def format_timestamp(value: datetime) -> str:
    """UTC ISO-8601 with a ``Z`` suffix (microseconds only when non-zero)."""
    return parse_timestamp(value).isoformat().replace("+00:00", "Z")


# --------------------------------------------------------------------------- canonical bytes


def canonical_snapshot_bytes(payload: Mapping[str, Any]) -> bytes:
    """The bytes that are hashed and signed (see the module docstring)."""
    unsigned = {k: v for k, v in payload.items() if k not in UNSIGNED_FIELDS}
    try:
        text = json.dumps(unsigned, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise SnapshotContractError(f"snapshot is not JSON-serialisable: {exc}") from exc
    return text.encode("utf-8")


def snapshot_hash(payload: Mapping[str, Any]) -> str:
    """``sha256:`` + hex digest of the canonical bytes."""
    return "sha256:" + hashlib.sha256(canonical_snapshot_bytes(payload)).hexdigest()


def _key_bytes(signing_key: bytes | str) -> bytes:
    return signing_key.encode("utf-8") if isinstance(signing_key, str) else bytes(signing_key)


def sign_snapshot(payload: Mapping[str, Any], signing_key: bytes | str) -> str:
    """Lowercase hex HMAC-SHA256 of the canonical bytes: the value producers put in ``signature``."""
    digest = hmac.new(_key_bytes(signing_key), canonical_snapshot_bytes(payload), hashlib.sha256)
    return digest.hexdigest()


def snapshot_ingest_decision(existing_hash: str | None, new_hash: str) -> IngestDecision:
    """What to do with a snapshot whose ``(world_id, version)`` may already be stored.

    ``"new"`` when nothing is stored; ``"duplicate"`` when the stored hash equals the new one (a
    re-drop of identical content: a no-op); ``"conflict"`` otherwise (record it; the first
    version stays authoritative).
    """
    if existing_hash is None:
        return "new"
    return "duplicate" if str(existing_hash) == str(new_hash) else "conflict"


# --------------------------------------------------------------------------- helpers


def _fail(message: str) -> NoReturn:
    raise SnapshotContractError(message)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _identifier(value: Any, field: str) -> str:
    try:
        return check_identifier(value, field)
    except ValueError as exc:
        raise SnapshotContractError(str(exc)) from exc


def _float_series(raw: Any, context: str) -> list[float]:
    """A realized-returns series as finite floats, with QMTL's messages (first bad element wins)."""
    if not isinstance(raw, Sequence) or isinstance(raw, (str, bytes, bytearray)):
        _fail(f"{context} must be a sequence of finite floats")
    kinds = set(map(type, raw))
    if kinds <= {int, float} and raw:
        values = np.asarray(raw, dtype=np.float64)
        if np.isfinite(values).all():
            return values.tolist()
    # Slow path only to name the first offending element the way QMTL does.
    for value in raw:
        if isinstance(value, bool):
            _fail(f"{context} contains invalid boolean value")
        if not _is_number(value):
            _fail(f"{context} contains non-numeric value")
        if not math.isfinite(float(value)):
            _fail(f"{context} contains non-finite value")
    if not raw:
        _fail(f"{context} must be non-empty")
    return [float(v) for v in raw]


def _realized_returns(
    realized: Any, *, max_points_per_series: int, max_points_total: int
) -> dict[str, list[float]] | list[float]:
    if isinstance(realized, Mapping):
        normalized: dict[str, list[float]] = {}
        total = 0
        for raw_key, raw_series in realized.items():
            key = str(raw_key or "").strip()
            if not key:
                _fail("realized_returns keys must be non-empty strings")
            series = _float_series(raw_series, f"realized_returns[{key}]")
            if len(series) > max_points_per_series:
                _fail(f"realized_returns series too long for '{key}'")
            total += len(series)
            if total > max_points_total:
                _fail("realized_returns total points exceed limit")
            normalized[key] = series
        if not normalized:
            _fail("realized_returns must be non-empty when provided")
        return normalized
    if isinstance(realized, Sequence) and not isinstance(realized, (str, bytes, bytearray)):
        series = _float_series(realized, "realized_returns")
        if len(series) > max_points_total:
            _fail("realized_returns series too long")
        return series
    _fail("realized_returns must be a mapping[str, sequence[float]] or a sequence[float]")


def _first_non_finite(node: Any, path: str) -> str | None:
    """Dotted path of the first NaN/inf number under ``node`` (JSON allows neither)."""
    if isinstance(node, float) and not math.isfinite(node):
        return path
    if isinstance(node, Mapping):
        for key, value in node.items():
            found = _first_non_finite(value, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            found = _first_non_finite(value, f"{path}[{i}]")
            if found is not None:
                return found
    return None


# --------------------------------------------------------------------------- covariance


class _CovarianceEntries:
    """A parsed flat covariance map: names, index arrays and values (first occurrence per pair)."""

    def __init__(self, names: list[str], rows: np.ndarray, cols: np.ndarray, values: np.ndarray):
        self.names = names
        self.rows = rows
        self.cols = cols
        self.values = values

    def variances(self) -> np.ndarray:
        out = np.full(len(self.names), np.nan)
        diag = self.rows == self.cols
        out[self.rows[diag]] = self.values[diag]
        return out


def _split_pair(key: Any) -> tuple[str, str] | None:
    if not isinstance(key, str):
        return None
    sep = "," if "," in key else ":"
    left, found, right = key.partition(sep)
    if not found:
        return None
    left, right = left.strip(), right.strip()
    for name in (left, right):
        if not IDENTIFIER_PATTERN.fullmatch(name) or name == "..":
            return None
    return left, right


_ParsedPairs = tuple[list[str], np.ndarray, np.ndarray, np.ndarray]


def _parse_covariance_fast(cov: Mapping[Any, Any]) -> _ParsedPairs | None:
    """Vectorised parse of a well-formed map; None sends anything irregular to the slow path,
    which names the offending entry. A full 600-strategy map (180k keys) parses in tens of ms."""
    keys = list(cov.keys())
    values = list(cov.values())
    if not keys or set(map(type, keys)) != {str} or not set(map(type, values)) <= {int, float}:
        return None
    key_array = np.array(keys)
    if not (np.char.count(key_array, ",") + np.char.count(key_array, ":") == 1).all():
        return None
    v = np.array(values, dtype=np.float64)
    if not np.isfinite(v).all():
        return None
    # Every key holds exactly one separator, so splitting the joined text pairs up exactly.
    parts = ",".join(keys).replace(":", ",").split(",")
    interleaved = np.empty(len(parts), dtype=object)
    interleaved[:] = parts
    codes, uniques = pd.factorize(interleaved)
    names = [str(u) for u in uniques]
    if not all(IDENTIFIER_PATTERN.fullmatch(n) and n != ".." for n in names):
        return None
    codes = codes.astype(np.int64)
    return names, codes[0::2], codes[1::2], v


def _parse_covariance_slow(cov: Mapping[Any, Any]) -> _ParsedPairs:
    index: dict[str, int] = {}
    rows: list[int] = []
    cols: list[int] = []
    values: list[float] = []
    for key, value in cov.items():
        pair = _split_pair(key)
        if pair is None:
            _fail(f'covariance key {key!r} must name two strategy ids as "a,b" (or "a:b")')
        if not _is_number(value) or not math.isfinite(float(value)):
            _fail(f"covariance[{key}] must be a finite number")
        rows.append(index.setdefault(pair[0], len(index)))
        cols.append(index.setdefault(pair[1], len(index)))
        values.append(float(value))
    return (
        list(index),
        np.asarray(rows, dtype=np.int64),
        np.asarray(cols, dtype=np.int64),
        np.asarray(values, dtype=np.float64),
    )


def _parse_covariance_map(
    cov: Any, *, max_entries: int | None = None, max_names: int | None = None
) -> _CovarianceEntries:
    """Parse and check a flat ``{"a,b": v}`` map: shape, names, finite values, variances ≥ 0,
    and symmetry of pairs given in both orders (SYMMETRY_TOLERANCE, correlation units)."""
    if not isinstance(cov, Mapping):
        _fail('covariance must be a mapping of "a,b" keys to numbers')
    if max_entries is not None and len(cov) > max_entries:
        _fail(f"covariance has {len(cov)} entries, more than the limit of {max_entries}")
    parsed = _parse_covariance_fast(cov) or _parse_covariance_slow(cov)
    names, r, c, v = parsed
    if max_names is not None and len(names) > max_names:
        _fail(f"covariance covers {len(names)} strategies, more than the limit of {max_names}")

    diag = r == c
    negative = diag & (v < 0)
    if negative.any():
        name = names[r[np.argmax(negative)]]
        _fail(f"covariance[{name},{name}] is a negative variance")

    # Each unordered pair once: the first occurrence is kept, later ones must agree with it.
    lo, hi = np.minimum(r, c), np.maximum(r, c)
    pair_code = lo * max(len(names), 1) + hi
    _, first, inverse = np.unique(pair_code, return_index=True, return_inverse=True)
    duplicate = np.ones(len(v), dtype=bool)
    duplicate[first] = False
    if duplicate.any():
        variances = np.full(len(names), np.nan)
        variances[r[diag]] = v[diag]
        kept = v[first[inverse]]
        scale = np.sqrt(np.abs(variances[lo] * variances[hi]))
        scale = np.where(
            np.isfinite(scale) & (scale > 0), scale, np.maximum(np.abs(v), np.abs(kept))
        )
        bad = duplicate & (np.abs(v - kept) > SYMMETRY_TOLERANCE * scale)
        if bad.any():
            i = int(np.argmax(bad))
            j = int(first[inverse[i]])
            _fail(
                f"covariance is not symmetric: {names[r[j]]},{names[c[j]]}={float(v[j])!r} but "
                f"{names[r[i]]},{names[c[i]]}={float(v[i])!r}"
            )
    keep = ~duplicate
    return _CovarianceEntries(names, r[keep], c[keep], v[keep])


def _assemble(
    entries: _CovarianceEntries, order: Sequence[str], fallback_correlation: float
) -> tuple[np.ndarray, np.ndarray]:
    """Square matrix over ``order`` and the boolean mask of imputed cells (both triangles).

    Missing variance → SnapshotContractError; a missing cross pair → ρ_f·σ_i·σ_j.
    """
    position = {name: i for i, name in enumerate(order)}
    k = len(order)
    matrix = np.full((k, k), np.nan)
    lookup = np.array([position.get(name, -1) for name in entries.names], dtype=np.int64)
    if len(entries.values):
        ri, ci = lookup[entries.rows], lookup[entries.cols]
        inside = (ri >= 0) & (ci >= 0)
        ri, ci, vals = ri[inside], ci[inside], entries.values[inside]
        matrix[ri, ci] = vals
        matrix[ci, ri] = vals
    return _impute(matrix, list(order), fallback_correlation)


def _impute(
    matrix: np.ndarray, order: Sequence[str], fallback_correlation: float
) -> tuple[np.ndarray, np.ndarray]:
    variances = np.diag(matrix)
    missing_variance = ~np.isfinite(variances)
    if missing_variance.any():
        _fail(f"covariance has no variance for '{order[int(np.argmax(missing_variance))]}'")
    vols = np.sqrt(variances)
    imputed = ~np.isfinite(matrix)
    if imputed.any():
        matrix = np.where(imputed, fallback_correlation * np.outer(vols, vols), matrix)
    return matrix, imputed


def _pair_labels(order: Sequence[str], mask: np.ndarray) -> list[str]:
    """``"a,b"`` for each flagged cell of the upper triangle, in matrix order."""
    i, j = np.nonzero(np.triu(mask, k=1))
    return [f"{order[a]},{order[b]}" for a, b in zip(i.tolist(), j.tolist())]


def _check_psd(matrix: np.ndarray, n_imputed: int, fallback_correlation: float) -> None:
    if matrix.size == 0:
        return
    smallest = float(np.linalg.eigvalsh(matrix)[0])
    bound = -PSD_TOLERANCE * max(1.0, float(np.trace(matrix)))
    if smallest < bound:
        detail = (
            f"; {n_imputed} missing pair(s) imputed at correlation {fallback_correlation:g}"
            if n_imputed
            else ""
        )
        _fail(
            f"covariance is not positive semi-definite (smallest eigenvalue {smallest:.6g} "
            f"< {bound:.3g}){detail}"
        )


def _fallback_correlation_value(fallback_correlation: float) -> float:
    value = float(fallback_correlation)
    if not -1.0 <= value <= 1.0 or not math.isfinite(value):
        raise ValueError(f"fallback_correlation must be in [-1, 1], got {fallback_correlation!r}")
    return value


def _long_frame_to_map(frame: pd.DataFrame) -> dict[str, float]:
    a, b, v = (frame[c].to_numpy() for c in ("strategy_a", "strategy_b", "covariance"))
    return {f"{x},{y}": val for x, y, val in zip(a.tolist(), b.tolist(), v.tolist())}


def parse_covariance(
    snapshot_or_map: Mapping[str, Any] | pd.DataFrame,
    strategies: Iterable[str] | None = None,
    *,
    fallback_correlation: float = DEFAULT_FALLBACK_CORRELATION,
    check_psd: bool = True,
) -> tuple[pd.DataFrame, list[str]]:
    """Square covariance DataFrame over ``strategies`` and the list of imputed pairs.

    ``snapshot_or_map``: a snapshot dict (its ``covariance`` is used; default order = strategies
    with a non-zero weight, then the other covariance names), a flat ``{"a,b": v}`` map
    (``"a:b"`` accepted), a square DataFrame (index = columns = strategy ids; NaN = missing), or a
    long DataFrame with columns ``strategy_a``, ``strategy_b``, ``covariance`` (the parquet
    layout of a ``covariance_ref``). Units are whatever the producer used (variance of the
    return per period); nothing is rescaled.

    Every requested strategy needs its variance (else ``SnapshotContractError``). A missing cross
    pair is imputed as ``fallback_correlation·σ_i·σ_j`` and listed as ``"a,b"`` (matrix order) in
    the returned list — never taken as 0. The matrix is symmetric by construction; a pair given
    both ways must agree, and with ``check_psd`` the completed matrix must be positive
    semi-definite — the checks of ``validate_snapshot``, for covariances read from a ref.
    """
    rho = _fallback_correlation_value(fallback_correlation)
    requested = None if strategies is None else [str(s) for s in strategies]
    if isinstance(snapshot_or_map, pd.DataFrame):
        frame = snapshot_or_map
        if {"strategy_a", "strategy_b", "covariance"} <= set(frame.columns):
            return parse_covariance(
                _long_frame_to_map(frame), requested, fallback_correlation=rho, check_psd=check_psd
            )
        if requested is not None:
            order = requested
        else:
            index_names = [str(s) for s in frame.index]
            seen = set(index_names)
            order = index_names + [str(c) for c in frame.columns if str(c) not in seen]
        matrix = frame.rename(index=str, columns=str).reindex(index=order, columns=order)
        values = matrix.to_numpy(dtype=np.float64, copy=True)
        if np.isinf(values).any():
            _fail("covariance contains a non-finite value")
        # A one-sided entry of a square frame counts as given for both triangles.
        given_both = np.isfinite(values) & np.isfinite(values.T)
        values = np.where(np.isnan(values), values.T, values)
        diag = np.diag(values)
        if (diag < 0).any():
            name = order[int(np.argmax(diag < 0))]
            _fail(f"covariance[{name},{name}] is a negative variance")
        with np.errstate(invalid="ignore"):
            scale = np.sqrt(np.abs(np.outer(diag, diag)))
            scale = np.where(
                np.isfinite(scale) & (scale > 0),
                scale,
                np.maximum(np.abs(values), np.abs(values.T)),
            )
            asymmetric = given_both & (np.abs(values - values.T) > SYMMETRY_TOLERANCE * scale)
        if asymmetric.any():
            i, j = np.argwhere(asymmetric)[0]
            _fail(
                f"covariance is not symmetric: {order[i]},{order[j]}={float(values[i, j])!r} but "
                f"{order[j]},{order[i]}={float(values[j, i])!r}"
            )
        full, imputed = _impute(values, order, rho)
        if check_psd:
            _check_psd(full, int(np.triu(imputed, k=1).sum()), rho)
        return pd.DataFrame(full, index=order, columns=order), _pair_labels(order, imputed)

    source: Any = snapshot_or_map
    default_order: list[str] = []
    if isinstance(snapshot_or_map, Mapping) and isinstance(snapshot_or_map.get("weights"), Mapping):
        source = snapshot_or_map.get("covariance")
        if not isinstance(source, Mapping):
            _fail("snapshot has no inline covariance (resolve covariance_ref first)")
        weights = snapshot_or_map["weights"]
        default_order = [str(s) for s, w in weights.items() if _is_number(w) and w != 0]
    entries = _parse_covariance_map(source)
    if requested is None:
        seen = set(default_order)
        requested = default_order + [n for n in entries.names if n not in seen]
    matrix, imputed = _assemble(entries, requested, rho)
    if check_psd:
        _check_psd(matrix, int(np.triu(imputed, k=1).sum()), rho)
    frame = pd.DataFrame(matrix, index=requested, columns=requested)
    return frame, _pair_labels(requested, imputed)


def covariance_to_map(matrix: pd.DataFrame) -> dict[str, float]:
    """Flat ``{"a,b": v}`` map of the upper triangle (diagonal included) in matrix order."""
    names = [str(s) for s in matrix.index]
    values = matrix.to_numpy(dtype=np.float64)
    i, j = np.triu_indices(len(names))
    return {f"{names[a]},{names[b]}": float(values[a, b]) for a, b in zip(i.tolist(), j.tolist())}


def realized_returns_frame(
    realized: Mapping[str, Sequence[float]] | Sequence[float],
) -> pd.DataFrame:
    """Realized series (oldest → newest, all ending at the snapshot's ``as_of``) as a frame.

    Columns are strategies; series of different lengths are right-aligned, so shorter ones are
    padded with leading NaN (the ragged layout the live-monitoring and metric panels accept).
    The index counts periods back from ``as_of``: ``-(n-1) … 0``. A bare list becomes the
    column ``"portfolio"``.
    """
    if not isinstance(realized, Mapping):
        realized = {"portfolio": list(realized)}
    length = max((len(s) for s in realized.values()), default=0)
    data = np.full((length, len(realized)), np.nan)
    for j, series in enumerate(realized.values()):
        if len(series):
            data[length - len(series) :, j] = np.asarray(series, dtype=np.float64)
    return pd.DataFrame(
        data, index=pd.RangeIndex(-(length - 1), 1, name="period") if length else None,
        columns=[str(k) for k in realized],
    )


# --------------------------------------------------------------------------- validation


def validate_snapshot(
    payload: Mapping[str, Any],
    *,
    world_id: str | None = None,
    actor: str | None = None,
    stage: str | None = None,
    now: datetime | str | None = None,
    allowed_actors: Sequence[str] | None = None,
    signing_key: bytes | str | None = None,
    allowed_stages: Sequence[str] | None = None,
    fallback_correlation: float = DEFAULT_FALLBACK_CORRELATION,
    ttl_sec_default: int = DEFAULT_TTL_SEC,
    ttl_sec_max: int = MAX_TTL_SEC,
    max_strategies: int = MAX_STRATEGIES,
    max_covariance_entries: int = MAX_COVARIANCE_ENTRIES,
    max_points_per_series: int = MAX_POINTS_PER_SERIES,
    max_points_total: int = MAX_POINTS_TOTAL,
    max_clock_skew: timedelta = MAX_CLOCK_SKEW,
) -> dict[str, Any]:
    """Check a snapshot against the contract and return it normalised, with its ``hash``.

    ``world_id``: the world the drop belongs to (its landing path); the payload may omit
    ``world_id`` but must not contradict it. ``actor``/``stage``: the producer identity the
    transport vouches for (QMTL's headers). ``now``: datetime or ISO-8601 text (naive = UTC),
    default the current time — used for the future-``as_of`` check and ``created_at``.
    ``signing_key``: the world's key (bytes, or str as UTF-8); when given a valid ``signature``
    is required. ``fallback_correlation``: the world's setting, used to complete missing pairs
    for the PSD check. Raises ``SnapshotContractError`` (a ``ValueError``) with the reason; the
    order of checks and every decision are in the module docstring.
    """
    if not isinstance(payload, Mapping):
        _fail("snapshot must be a JSON object")
    rho = _fallback_correlation_value(fallback_correlation)
    if now is None:
        now_ts = datetime.now(timezone.utc)
    else:
        try:
            now_ts = parse_timestamp(now)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"invalid now timestamp: {now}") from exc
    canonical = canonical_snapshot_bytes(payload)
    data: dict[str, Any] = dict(payload)

    # 1. world_id
    submitted_world = data.get("world_id")
    if world_id:
        if submitted_world not in (None, "") and str(submitted_world) != str(world_id):
            _fail("world_id mismatch")
        data["world_id"] = world_id
    if not data.get("world_id"):
        _fail("world_id is required")
    _identifier(data["world_id"], "world_id")

    # 2. as_of
    as_of = data.get("as_of")
    if not isinstance(as_of, str) or not as_of:
        _fail("as_of is required")
    try:
        as_of_ts = parse_timestamp(as_of)
    except ValueError:
        _fail(f"invalid as_of timestamp: {as_of}")
    if as_of_ts > now_ts + max_clock_skew:
        _fail(
            f"as_of {format_timestamp(as_of_ts)} is in the future "
            f"(now {format_timestamp(now_ts)}, allowed skew {int(max_clock_skew.total_seconds())}s)"
        )
    data["as_of"] = format_timestamp(as_of_ts)

    # 3. version
    version = data.get("version")
    if not isinstance(version, str) or not version:
        _fail("version is required")
    _identifier(version, "version")

    # 4. weights
    weights = data.get("weights")
    if not isinstance(weights, Mapping) or not weights:
        _fail("weights are required")
    if not all(_is_number(w) for w in weights.values()):
        _fail("weights must be numeric")
    weight_values = np.array([float(w) for w in weights.values()], dtype=np.float64)
    if not np.isfinite(weight_values).all():
        _fail("weights must be finite")
    total = float(weight_values.sum())
    if total <= 0 or abs(total - 1.0) > WEIGHT_SUM_TOLERANCE:
        _fail("weights must sum to ~1.0")
    if len(weights) > max_strategies:
        _fail(f"weights has {len(weights)} strategies, more than the limit of {max_strategies}")
    for key in weights:
        _identifier(key, "weights key")
    data["weights"] = dict(zip(weights.keys(), weight_values.tolist()))

    # 5. ttl_sec
    ttl = data.get("ttl_sec", ttl_sec_default)
    if ttl is None:
        ttl = ttl_sec_default
    if not _is_number(ttl) or not math.isfinite(float(ttl)) or float(ttl) != int(ttl):
        _fail("ttl_sec must be an integer")
    ttl = int(ttl)
    if ttl <= 0:
        _fail("ttl_sec must be positive")
    if ttl > ttl_sec_max:
        _fail(f"ttl_sec must be <= {int(ttl_sec_max)}")
    data["ttl_sec"] = ttl

    # 6. realized returns
    realized_ref = data.get("realized_returns_ref")
    if realized_ref is not None:
        if not (isinstance(realized_ref, str) and realized_ref.strip()):
            _fail("realized_returns_ref must be a non-empty string when provided")
        data["realized_returns_ref"] = realized_ref.strip()
    if data.get("realized_returns") is not None:
        data["realized_returns"] = _realized_returns(
            data["realized_returns"],
            max_points_per_series=max_points_per_series,
            max_points_total=max_points_total,
        )

    # 7. provenance
    provenance = data.get("provenance")
    if provenance is not None and not isinstance(provenance, Mapping):
        _fail("provenance must be a mapping when provided")
    prov: dict[str, Any] = dict(provenance or {})
    for field, header in (("actor", actor), ("stage", stage)):
        if header is not None:
            existing = prov.get(field)
            if existing is not None and str(existing) != str(header):
                _fail(f"{field} mismatch between payload and header")
            prov[field] = str(header)
    for field, allowed in (("actor", allowed_actors), ("stage", allowed_stages)):
        value = str(prov.get(field) or "")
        if not value:
            _fail(f"{field} is required")
        if allowed is not None and value not in allowed:
            _fail(f"{field} '{value}' not allowed")
    data["provenance"] = prov

    # 8. covariance
    covariance_ref = data.get("covariance_ref")
    if covariance_ref is not None and not (
        isinstance(covariance_ref, str) and covariance_ref.strip()
    ):
        _fail("covariance_ref must be a non-empty string when provided")
    if data.get("covariance") is not None:
        entries = _parse_covariance_map(
            data["covariance"], max_entries=max_covariance_entries, max_names=max_strategies
        )
        weighted = [k for k, w in data["weights"].items() if w != 0]
        known = set(entries.names)
        order = list(entries.names) + [k for k in weighted if k not in known]
        if len(order) > max_strategies:
            _fail(
                f"covariance covers {len(order)} strategies, more than the limit of {max_strategies}"
            )
        matrix, imputed = _assemble(entries, order, rho)
        _check_psd(matrix, int(np.triu(imputed, k=1).sum()), rho)
        submitted = data["covariance"]
        data["covariance"] = dict(zip(submitted.keys(), map(float, submitted.values())))

    # 9. constraints and non-finite numbers anywhere else
    constraints = data.get("constraints")
    if constraints is not None and not isinstance(constraints, Mapping):
        _fail("constraints must be a mapping when provided")
    candidate_weight = (constraints or {}).get("candidate_weight")
    if candidate_weight is not None and not (
        _is_number(candidate_weight) and 0 < float(candidate_weight) <= 1
    ):
        _fail("constraints.candidate_weight must be a number in (0, 1]")
    # weights, realized_returns and covariance were checked above; walk only the rest.
    checked = ("weights", "realized_returns", "covariance")
    bad_path = _first_non_finite({k: v for k, v in payload.items() if k not in checked}, "")
    if bad_path is not None:
        _fail(f"{bad_path} is not a finite number")

    # 10. created_at
    created_at = data.get("created_at")
    if created_at is None:
        data["created_at"] = format_timestamp(now_ts)
    else:
        try:
            data["created_at"] = format_timestamp(parse_timestamp(created_at))
        except (TypeError, ValueError):
            _fail(f"invalid created_at timestamp: {created_at}")

    # 11. signature
    signature = data.get("signature")
    if signature is not None and not isinstance(signature, str):
        _fail("signature must be a string when provided")
    if signing_key is not None:
        if not signature:
            _fail("signature is required")
        expected = hmac.new(_key_bytes(signing_key), canonical, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature.encode("utf-8"), expected.encode("ascii")):
            _fail("signature mismatch")

    # 12. hash
    submitted_hash = data.get("hash")
    if submitted_hash is not None and not isinstance(submitted_hash, str):
        _fail("hash must be a string when provided")
    computed = "sha256:" + hashlib.sha256(canonical).hexdigest()
    if submitted_hash and submitted_hash != computed:
        _fail("hash mismatch")
    data["hash"] = computed
    return data


# --------------------------------------------------------------------------- fallback


def fallback_version(previous_version: str) -> str:
    """Version of the conservative fallback built from ``previous_version``.

    ``<previous>-fallback``: one per previous version, hence one per breach episode (an episode
    ends only when a fresher snapshot arrives, which becomes the next "previous"). Rebuilding
    it from the same inputs gives the same content, i.e. a no-op re-ingest. Kept within the
    128-character identifier limit by shortening the prefix and adding 8 hex of its digest.
    """
    candidate = f"{previous_version}-fallback"
    if len(candidate) <= 128:
        return candidate
    digest = hashlib.sha256(previous_version.encode("utf-8")).hexdigest()[:8]
    return f"{previous_version[:110]}-{digest}-fallback"


def _nearest_correlation(corr: np.ndarray) -> np.ndarray:
    """Clip negative eigenvalues and restore the unit diagonal (one projection step)."""
    values, vectors = np.linalg.eigh(corr)
    clipped = (vectors * np.clip(values, 0.0, None)) @ vectors.T
    d = np.sqrt(np.clip(np.diag(clipped), 1e-300, None))
    out = clipped / np.outer(d, d)
    np.fill_diagonal(out, 1.0)
    return out


def conservative_fallback_snapshot(
    previous: Mapping[str, Any],
    recent: Sequence[Mapping[str, Any]] = (),
    fallback_correlation: float = DEFAULT_FALLBACK_CORRELATION,
) -> dict[str, Any]:
    """The snapshot to use while a world's feed is stale (SPEC §8 freshness).

    - ``weights``, ``as_of``, ``world_id``, ``ttl_sec``, ``constraints`` and ``realized_returns``
      (when inline) of ``previous`` (the last accepted snapshot, normalised). ``as_of`` stays the
      previous one on purpose: the data is that old, and the freshness breach stays visible.
    - Volatilities: for each weighted strategy, the largest σ = √variance found in ``previous``
      and the ``recent`` snapshots (inline ``covariance``; resolve refs first).
    - Correlations: those implied by ``previous``'s covariance, each raised to at least
      ``fallback_correlation``; pairs it lacks take ``fallback_correlation``. This is the
      conservative direction for pairs of same-sign weights (raising a correlation between a long
      and a short lowers the variance). If raising breaks positive semi-definiteness the
      correlation matrix is projected back (eigenvalues clipped at 0, unit diagonal restored) and
      ``psd_repaired`` is set.
    - ``covariance`` = ρ'_ij·σ'_i·σ'_j, written as the upper triangle in weight order.
    - ``version`` = ``fallback_version(previous["version"])``; ``provenance`` = previous's with
      ``source: conservative_fallback``; ``hash`` per the contract (no ``signature``: it is ours).
    - ``fallback``: what was raised — ``previous_version``, ``source_versions``,
      ``fallback_correlation``, ``raised_pairs`` (``"a,b"`` whose correlation went up),
      ``imputed_pairs`` (absent in ``previous``), ``raised_volatilities``
      (``{strategy: {"previous", "fallback", "source_version"}}`` where a recent estimate was
      larger) and ``psd_repaired``.

    Raises ``ValueError`` when a weighted strategy has no variance in any of the snapshots.
    """
    rho = _fallback_correlation_value(fallback_correlation)
    weights = {str(k): float(v) for k, v in dict(previous["weights"]).items()}
    order = [s for s, w in weights.items() if w != 0]
    k = len(order)
    snapshots = [previous, *recent]

    # σ per strategy per snapshot (NaN where a snapshot has no estimate), one row per snapshot.
    vols = np.full((len(snapshots), k), np.nan)
    previous_matrix = np.full((k, k), np.nan)
    position = {name: i for i, name in enumerate(order)}
    for row, snap in enumerate(snapshots):
        cov = snap.get("covariance")
        if not isinstance(cov, Mapping) or not cov:
            continue
        entries = _parse_covariance_map(cov)
        lookup = np.array([position.get(n, -1) for n in entries.names], dtype=np.int64)
        variances = entries.variances()
        has = (lookup >= 0) & np.isfinite(variances)
        vols[row, lookup[has]] = np.sqrt(variances[has])
        if row == 0:
            ri, ci = lookup[entries.rows], lookup[entries.cols]
            inside = (ri >= 0) & (ci >= 0)
            previous_matrix[ri[inside], ci[inside]] = entries.values[inside]
            previous_matrix[ci[inside], ri[inside]] = entries.values[inside]
    if k and np.isnan(vols).all(axis=0).any():
        missing = order[int(np.argmax(np.isnan(vols).all(axis=0)))]
        raise ValueError(
            f"no volatility estimate for '{missing}' in the previous or recent snapshots"
        )
    fallback_vols = np.nanmax(vols, axis=0) if k else np.zeros(0)
    # Row of the largest estimate per strategy; ties go to the earliest row (previous).
    source_row = np.argmax(np.where(np.isnan(vols), -np.inf, vols), axis=0)

    prev_vols = vols[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = previous_matrix / np.outer(prev_vols, prev_vols)
    corr = np.clip(corr, -1.0, 1.0)
    imputed = ~np.isfinite(corr)
    np.fill_diagonal(imputed, False)
    raised = np.isfinite(corr) & (corr < rho)
    np.fill_diagonal(raised, False)
    new_corr = np.where(np.isfinite(corr), np.maximum(corr, rho), rho)
    np.fill_diagonal(new_corr, 1.0)
    psd_repaired = False
    if k and np.linalg.eigvalsh(new_corr)[0] < -PSD_TOLERANCE:
        new_corr = _nearest_correlation(new_corr)
        psd_repaired = True
    covariance = new_corr * np.outer(fallback_vols, fallback_vols)

    raised_vols: dict[str, dict[str, Any]] = {}
    for i in np.nonzero(source_row != 0)[0].tolist():  # strictly larger than previous's σ
        raised_vols[order[i]] = {
            "previous": None if np.isnan(prev_vols[i]) else float(prev_vols[i]),
            "fallback": float(fallback_vols[i]),
            "source_version": snapshots[int(source_row[i])].get("version"),
        }

    out: dict[str, Any] = {
        "world_id": previous.get("world_id"),
        "as_of": previous.get("as_of"),
        "version": fallback_version(str(previous["version"])),
        "weights": weights,
        "covariance": covariance_to_map(pd.DataFrame(covariance, index=order, columns=order)),
        "ttl_sec": previous.get("ttl_sec", DEFAULT_TTL_SEC),
        "provenance": {
            **dict(previous.get("provenance") or {}),
            "source": "conservative_fallback",
        },
        "fallback": {
            "reason": "stale_snapshot",
            "previous_version": previous.get("version"),
            "source_versions": [s.get("version") for s in snapshots],
            "fallback_correlation": rho,
            "raised_pairs": _pair_labels(order, raised),
            "imputed_pairs": _pair_labels(order, imputed),
            "raised_volatilities": raised_vols,
            "psd_repaired": psd_repaired,
        },
    }
    carried = ("constraints", "realized_returns", "realized_returns_ref", "stress", "stress_ref")
    for optional in carried:
        if previous.get(optional) is not None:
            out[optional] = previous[optional]
    out["hash"] = snapshot_hash(out)
    return out
