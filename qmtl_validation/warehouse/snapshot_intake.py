"""Taking risk snapshots in from the landing zone: find new ones, validate them, register or reject.

The snapshot counterpart of :mod:`qmtl_validation.warehouse.intake` (same registry and rejections
tables, same :class:`~qmtl_validation.warehouse.intake.IntakeResult`), shared by the risk snapshot
sensor (one call per tick), the demo and the CLI. The files are never moved or deleted.

A drop is ``snapshots/<date>/<world_id>/<version>.json`` plus the Parquet files it references by
name (``covariance_ref`` / ``realized_returns_ref``). It is validated with the full contract of
:func:`qmtl_validation.core.snapshot.validate_snapshot` under its world's policy — producer
allow-list (``risk_hub.allowed_producers``), signing key (read from the environment variable
``risk_hub.signing_key_env`` names; the policy never holds the key) and fallback correlation —
and its refs are read and checked the same way (names, finite values, variances, symmetry, PSD;
realized series shape and size caps). The ``version`` inside must equal the file name's.

- Identity: a drop's *content hash* is the snapshot ``hash`` (``sha256:`` of its canonical JSON,
  so re-formatting the JSON changes nothing) combined with the digest of every referenced file.
- A snapshot already registered with the same content token is an identical re-drop: a no-op.
- Same ``world/version`` with the same content hash (e.g. re-formatted JSON): a no-op.
- Same ``world/version`` with a different content hash: a conflict, recorded once as a
  ``rejections`` row (``conflict`` true); the first version stays authoritative.
- A bad drop gets one ``rejections`` row with the exact reason (``SnapshotContractError``'s
  message) and is not looked at again while its content is unchanged — except for problems that
  are not the drop's fault and may go away (:data:`RETRYABLE_REASON_CODES`: the world's signing
  key is not configured, its policy does not parse, a referenced file is not there yet), which
  are retried each call and recorded once per content.
- At most ``max_snapshots`` new drops are read per call; the rest wait for the next call.
- A transient read error (of the JSON, a ref or the world's policy; see
  :func:`~qmtl_validation.warehouse.landing.is_transient_io_error`) is never recorded as a
  rejection: it propagates, the call fails with nothing written, and the next call tries again.

Content token: the JSON's (etag, size) and those of the Parquet files beside it whose name starts
with ``<version>.`` (the convention ``<version>.covariance.parquet``). A ref named otherwise is
still read and hashed at registration, but a later change to that file alone is not noticed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd

from qmtl_validation.core.bundles import TABLE_MAX_BYTES, BundleError, parse_json_document
from qmtl_validation.core.snapshot import (
    DEFAULT_FALLBACK_CORRELATION,
    MAX_COVARIANCE_ENTRIES,
    MAX_POINTS_PER_SERIES,
    MAX_POINTS_TOTAL,
    SnapshotContractError,
    parse_covariance,
    parse_timestamp,
    realized_returns_frame,
    snapshot_ingest_decision,
    validate_snapshot,
)
from qmtl_validation.warehouse.documents import WorldPolicies
from qmtl_validation.warehouse.intake import (
    REGISTRY_TABLE,
    REJECTIONS_TABLE,
    IntakeResult,
    RegisteredDrop,
    registered_drops,
)
from qmtl_validation.warehouse.lake import Lake
from qmtl_validation.warehouse.landing import (
    LandingKeyError,
    LandingObjectTooLargeError,
    LandingZone,
    Rejection,
    SnapshotDrop,
    find_snapshots,
    split_key,
)
from qmtl_validation.warehouse.queries import latest_rows

SNAPSHOT_KIND = "snapshot"
SNAPSHOT_JSON_MAX_BYTES = 64 * 1024 * 1024
SNAPSHOT_REF_MAX_BYTES = TABLE_MAX_BYTES
RETRYABLE_REASON_CODES = frozenset({"signing_key_unavailable", "policy_unavailable", "missing_ref"})
REALIZED_REF_COLUMNS = ("date", "strategy_id", "ret")
COVARIANCE_REF_COLUMNS = ("strategy_a", "strategy_b", "covariance")


class SnapshotDropError(ValueError):
    """A drop that cannot be taken in; ``code`` is the rejection's ``reason_code``."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------------------------
# A world's snapshot settings


@dataclass(frozen=True)
class WorldSnapshotSettings:
    """What the contract needs from a world's policy (defaults when the world has none).

    ``signing_key`` is the key read from ``signing_key_env`` (None when the world signs nothing).
    """

    world_id: str
    policy_version: str | None = None
    allowed_producers: tuple[str, ...] = ()
    signing_key_env: str | None = None
    signing_key: bytes | None = None
    fallback_correlation: float = DEFAULT_FALLBACK_CORRELATION
    max_snapshot_lag: dt.timedelta = dt.timedelta(minutes=5)
    fail_closed: bool = False
    periods_per_year: float = 252.0


def world_snapshot_settings(
    policies: WorldPolicies, world_id: str, environ: Mapping[str, str] | None = None
) -> WorldSnapshotSettings:
    """The snapshot settings of ``world_id`` from its current policy.

    A world without any policy file gets the defaults (any producer, no signature). Raises
    :class:`SnapshotDropError` (retryable codes) when the world has policy files but none parses
    (``policy_unavailable``: its allow-list and key are unknown, so nothing is accepted) or when
    the policy names a signing-key variable that is not set (``signing_key_unavailable``).
    """
    env = os.environ if environ is None else environ
    loaded = policies.get(world_id)
    if loaded is None:
        if policies.versions(world_id):
            raise SnapshotDropError(
                f"world {world_id}'s policy cannot be read, so its producer allow-list and signing "
                f"key are unknown: {policies.errors.get(world_id, 'unparseable policy')}",
                "policy_unavailable",
            )
        return WorldSnapshotSettings(world_id)
    hub = loaded.policy.risk_hub
    key = None
    if hub.signing_key_env:
        value = env.get(hub.signing_key_env)
        if not value:
            raise SnapshotDropError(
                f"world {world_id} requires signed snapshots but its signing key (environment "
                f"variable {hub.signing_key_env}) is not set",
                "signing_key_unavailable",
            )
        key = value.encode("utf-8")
    return WorldSnapshotSettings(
        world_id=world_id,
        policy_version=loaded.version,
        allowed_producers=tuple(hub.allowed_producers),
        signing_key_env=hub.signing_key_env,
        signing_key=key,
        fallback_correlation=float(hub.fallback_correlation),
        max_snapshot_lag=hub.max_snapshot_lag,
        fail_closed=loaded.policy.fail_closed,
        periods_per_year=float(loaded.policy.annualization.periods_per_year),
    )


# ---------------------------------------------------------------------------------------------
# Reading one drop


@dataclass
class LoadedSnapshot:
    """A validated snapshot drop and its resolved data.

    - ``snapshot``: the normalised snapshot (``validate_snapshot`` output, inline data included).
    - ``covariance``: the square covariance over ``strategy order`` (weighted strategies, then
      the other names it covers) with missing cross pairs imputed, and ``imputed_pairs`` their
      ``"a,b"`` labels; None when the snapshot carries no covariance.
    - ``realized``: wide realized returns (columns = strategies, oldest row first; indexed by date
      for the Parquet form, by period −(n−1)…0 inline); None when absent.
    - ``content_hash``: see the module docstring; ``refs``: field → landing key read.
    """

    key: str
    snapshot: dict[str, Any]
    covariance: pd.DataFrame | None
    imputed_pairs: list[str]
    realized: pd.DataFrame | None
    covariance_form: str
    realized_returns_form: str
    content_hash: str
    refs: dict[str, str] = field(default_factory=dict)
    signed: bool = False


def read_snapshot_json(zone: LandingZone, key: str) -> dict[str, Any]:
    """The snapshot JSON at ``key`` as submitted (guarded parse: size cap, finite numbers,
    no duplicate keys). Raises :class:`SnapshotDropError`."""
    try:
        data = zone.read_bytes(key, SNAPSHOT_JSON_MAX_BYTES)
    except LandingObjectTooLargeError as error:
        raise SnapshotDropError(str(error), "oversize") from None
    except FileNotFoundError as error:
        raise SnapshotDropError(str(error), "missing") from None
    try:
        return parse_json_document(data, source_name=key.rsplit("/", 1)[-1], max_bytes=SNAPSHOT_JSON_MAX_BYTES)
    except BundleError as error:
        raise SnapshotDropError(str(error), "invalid_json") from None


def ref_key(zone: LandingZone, json_key: str, ref: str, field_name: str) -> str:
    """The landing key a ``*_ref`` names: a file name beside the JSON, a key relative to the
    zone root (contains ``/``), or a URI inside the zone (``s3://bucket/prefix/...``)."""
    text = ref.strip()
    root = zone.uri("").rstrip("/") + "/"
    if text.startswith(root):
        text = text[len(root):]
    elif "://" in text or text.startswith(("/", "\\")):
        raise SnapshotContractError(
            f"{field_name} {ref!r} must name a file in the landing zone (a name beside the "
            "snapshot JSON or a key relative to the landing root)"
        )
    key = text if "/" in text else f"{json_key.rsplit('/', 1)[0]}/{text}"
    try:
        split_key(key)
    except LandingKeyError as error:
        raise SnapshotContractError(f"{field_name} {ref!r}: {error.reason}") from None
    return key


def _read_ref(zone: LandingZone, key: str, field_name: str) -> bytes:
    try:
        return zone.read_bytes(key, SNAPSHOT_REF_MAX_BYTES)
    except LandingObjectTooLargeError as error:
        raise SnapshotDropError(f"{field_name}: {error}", "oversize") from None
    except FileNotFoundError:
        raise SnapshotDropError(f"{field_name}: no file at {zone.uri(key)}", "missing_ref") from None


def _parquet(data: bytes, field_name: str, columns: tuple[str, ...]) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(io.BytesIO(data))
    except Exception as error:  # noqa: BLE001 - any unreadable file is the producer's problem
        raise SnapshotContractError(f"{field_name} is not a readable Parquet file: {error}") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SnapshotContractError(
            f"{field_name} lacks column(s) {', '.join(missing)} (expected {', '.join(columns)})"
        )
    return frame[list(columns)]


def strategy_order(weights: Mapping[str, Any], covariance_names: list[str]) -> list[str]:
    """Weighted (non-zero) strategies in weight order, then the other names the covariance covers."""
    weighted = [str(s) for s, w in weights.items() if float(w) != 0]
    seen = set(weighted)
    return weighted + [n for n in covariance_names if n not in seen]


def _covariance_names(source: Any) -> list[str]:
    if isinstance(source, pd.DataFrame):
        names = pd.unique(np.concatenate([source["strategy_a"].to_numpy(), source["strategy_b"].to_numpy()]))
        return [str(n) for n in names]
    names: dict[str, None] = {}
    for key in source:
        text = str(key).replace(":", ",", 1)
        left, _, right = text.partition(",")
        names.setdefault(left.strip())
        names.setdefault(right.strip())
    return list(names)


def resolve_covariance(
    zone: LandingZone,
    json_key: str,
    payload: Mapping[str, Any],
    *,
    fallback_correlation: float,
    check_psd: bool,
) -> tuple[pd.DataFrame | None, list[str], str, dict[str, bytes]]:
    """The snapshot's covariance as a square frame (missing cross pairs imputed), the imputed
    labels, its form (``inline``/``ref``/``none``) and the ref bytes read ({key: bytes}).

    The ref form is checked on read like the inline form (``parse_covariance``); ``check_psd``
    also runs the positive-semi-definiteness check (the inline form had it in the contract).
    """
    weights = payload.get("weights") or {}
    if payload.get("covariance") is not None:
        source: Any = payload["covariance"]
        form, read = "inline", {}
    elif payload.get("covariance_ref"):
        key = ref_key(zone, json_key, str(payload["covariance_ref"]), "covariance_ref")
        data = _read_ref(zone, key, "covariance_ref")
        source = _parquet(data, "covariance_ref", COVARIANCE_REF_COLUMNS)
        if len(source) > MAX_COVARIANCE_ENTRIES:
            raise SnapshotContractError(
                f"covariance_ref has {len(source)} entries, more than the limit of {MAX_COVARIANCE_ENTRIES}"
            )
        if source["covariance"].isna().any() or source[["strategy_a", "strategy_b"]].isna().any().any():
            raise SnapshotContractError("covariance_ref holds null values")
        form, read = "ref", {key: data}
    else:
        return None, [], "none", {}
    order = strategy_order(weights, _covariance_names(source))
    matrix, imputed = parse_covariance(
        source, order, fallback_correlation=fallback_correlation, check_psd=check_psd
    )
    return matrix, imputed, form, read


def resolve_realized_returns(
    zone: LandingZone, json_key: str, payload: Mapping[str, Any]
) -> tuple[pd.DataFrame | None, str, dict[str, bytes]]:
    """The snapshot's realized returns as a wide frame, its form and the ref bytes read.

    Parquet refs are long form ``date, strategy_id, ret`` (unique per strategy and date, finite
    returns, QMTL's size caps); the wide frame is indexed by date, a strategy without a value on
    a date holds NaN there.
    """
    if payload.get("realized_returns") is not None:
        return realized_returns_frame(payload["realized_returns"]), "inline", {}
    ref = payload.get("realized_returns_ref")
    if not ref:
        return None, "none", {}
    key = ref_key(zone, json_key, str(ref), "realized_returns_ref")
    data = _read_ref(zone, key, "realized_returns_ref")
    frame = _parquet(data, "realized_returns_ref", REALIZED_REF_COLUMNS)
    if frame.empty:
        raise SnapshotContractError("realized_returns_ref must be non-empty when provided")
    if frame["strategy_id"].isna().any() or frame["date"].isna().any():
        raise SnapshotContractError("realized_returns_ref holds null strategy ids or dates")
    returns = pd.to_numeric(frame["ret"], errors="coerce").to_numpy(dtype=np.float64)
    if not np.isfinite(returns).all():
        raise SnapshotContractError("realized_returns_ref contains non-finite value")
    if len(frame) > MAX_POINTS_TOTAL:
        raise SnapshotContractError("realized_returns total points exceed limit")
    counts = frame["strategy_id"].value_counts()
    if (counts > MAX_POINTS_PER_SERIES).any():
        raise SnapshotContractError(f"realized_returns series too long for '{counts.idxmax()}'")
    dates = pd.to_datetime(frame["date"])
    if pd.MultiIndex.from_arrays([frame["strategy_id"], dates]).duplicated().any():
        raise SnapshotContractError("realized_returns_ref has more than one return per strategy and date")
    wide = (
        pd.DataFrame({"date": dates, "strategy_id": frame["strategy_id"].astype(str), "ret": returns})
        .pivot(index="date", columns="strategy_id", values="ret")
        .sort_index()
    )
    wide.columns = [str(c) for c in wide.columns]
    wide.columns.name = None
    return wide, "ref", {key: data}


def content_hash(snapshot_hash: str, refs: Mapping[str, bytes]) -> str:
    """The snapshot hash alone when nothing is referenced, else ``sha256:`` over it and each
    referenced file's name and digest (sorted by key)."""
    if not refs:
        return snapshot_hash
    digest = hashlib.sha256(snapshot_hash.encode("utf-8"))
    for key in sorted(refs):
        digest.update(b"\n" + key.rsplit("/", 1)[-1].encode("utf-8") + b"\0")
        digest.update(hashlib.sha256(refs[key]).hexdigest().encode("ascii"))
    return "sha256:" + digest.hexdigest()


def load_snapshot(
    zone: LandingZone,
    key: str,
    settings: WorldSnapshotSettings,
    *,
    now: dt.datetime | str | None,
    expected_version: str | None = None,
) -> LoadedSnapshot:
    """Read, validate and resolve the snapshot JSON at ``key`` for ``settings.world_id``.

    ``now`` is the moment the contract is judged at (the future-``as_of`` check): the intake's
    clock, and the registration time when an asset re-validates a registered drop, so the
    verdict does not drift. Raises :class:`SnapshotContractError` with the contract's message,
    or :class:`SnapshotDropError` (unreadable JSON, oversize, missing ref).
    """
    payload = read_snapshot_json(zone, key)
    snapshot = validate_snapshot(
        payload,
        world_id=settings.world_id,
        now=now,
        allowed_actors=settings.allowed_producers or None,
        signing_key=settings.signing_key,
        fallback_correlation=settings.fallback_correlation,
    )
    if expected_version is not None and snapshot["version"] != expected_version:
        raise SnapshotContractError(
            f"version {snapshot['version']!r} does not match the file name {expected_version}.json"
        )
    covariance, imputed, covariance_form, cov_refs = resolve_covariance(
        zone,
        key,
        snapshot,
        fallback_correlation=settings.fallback_correlation,
        # The inline form was checked for PSD by validate_snapshot already.
        check_psd=payload.get("covariance") is None,
    )
    realized, realized_form, realized_refs = resolve_realized_returns(zone, key, snapshot)
    refs = {**cov_refs, **realized_refs}
    return LoadedSnapshot(
        key=key,
        snapshot=snapshot,
        covariance=covariance,
        imputed_pairs=imputed,
        realized=realized,
        covariance_form=covariance_form,
        realized_returns_form=realized_form,
        content_hash=content_hash(snapshot["hash"], refs),
        refs={
            **{"covariance_ref": key for key in cov_refs},
            **{"realized_returns_ref": key for key in realized_refs},
        },
        signed=settings.signing_key is not None,
    )


# ---------------------------------------------------------------------------------------------
# Intake


def snapshot_token(drop: SnapshotDrop) -> str:
    """Hash of the JSON's and its ``<version>.*`` attachments' (name, etag, size)."""
    digest = hashlib.sha256()
    objects = {drop.object.name: drop.object}
    objects.update({n: o for n, o in drop.attachments.items() if n.startswith(f"{drop.version}.")})
    for name in sorted(objects):
        obj = objects[name]
        digest.update(f"{name}\0{obj.etag}\0{obj.size}\n".encode())
    return digest.hexdigest()[:32]


def rejection_codes(lake: Lake) -> dict[tuple[str, str], set[str]]:
    """(key, etag) → reason codes of every rejection recorded for that content."""
    frame = latest_rows(lake, REJECTIONS_TABLE, latest=False)
    out: dict[tuple[str, str], set[str]] = {}
    for key, etag, code in zip(frame["key"], frame["etag"].fillna(""), frame["reason_code"].fillna(""), strict=True):
        out.setdefault((key, etag), set()).add(code)
    return out


def _rejection_row(
    drop: SnapshotDrop, reason: str, code: str, now: dt.datetime, sensor: str, token: str, conflict: bool = False
) -> dict[str, Any]:
    rejection = Rejection(
        drop.key, reason, code, SNAPSHOT_KIND, {"world_id": drop.world_id, "version": drop.version}, drop.object
    )
    row = rejection.as_row(now, sensor=sensor)
    row["etag"] = token
    row["conflict"] = conflict
    return row


def take_in_snapshots(
    zone: LandingZone,
    lake: Lake,
    *,
    today: dt.date,
    lookback_days: int,
    max_snapshots: int = 200,
    now: dt.datetime | None = None,
    sensor: str = "risk_snapshot_sensor",
    policies: WorldPolicies | None = None,
    environ: Mapping[str, str] | None = None,
) -> IntakeResult:
    """Scan the look-back's snapshot prefixes once, register what is new and valid, record the rest.

    Returns an :class:`IntakeResult` (``registered`` drops of kind ``snapshot`` with partition keys
    ``world/version``, ``unchanged``, ``rejections`` rows, ``deferred``); write it with
    :func:`qmtl_validation.warehouse.intake.record_intake`. ``policies`` (default: read from the
    zone) and ``environ`` (default: the process environment) give each world's settings.
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    scan = find_snapshots(zone, today, lookback_days)
    registry = registered_drops(lake, SNAPSHOT_KIND)
    seen = rejection_codes(lake)
    policies = policies or WorldPolicies(zone)
    result = IntakeResult(prefixes=list(scan.prefixes))

    for rejection in scan.rejections:
        etag = rejection.object.etag if rejection.object is not None else ""
        if (rejection.key, etag or "") not in seen:
            row = rejection.as_row(now, sensor=sensor)
            row["conflict"] = False
            result.rejections.append(row)

    settings_cache: dict[str, WorldSnapshotSettings | SnapshotDropError] = {}
    budget = max_snapshots
    for drop in scan.snapshots:
        key, token = drop.partition_key, snapshot_token(drop)
        known = registry.get(key)
        if known is not None and known["token"] == token:
            result.unchanged.append(key)
            continue
        codes = seen.get((drop.key, token), set())
        if codes and not codes <= RETRYABLE_REASON_CODES:
            continue
        if budget <= 0:
            result.deferred += 1
            continue
        budget -= 1
        try:
            if drop.world_id not in settings_cache:
                try:
                    settings_cache[drop.world_id] = world_snapshot_settings(policies, drop.world_id, environ)
                except SnapshotDropError as error:
                    settings_cache[drop.world_id] = error
            settings = settings_cache[drop.world_id]
            if isinstance(settings, SnapshotDropError):
                raise settings
            loaded = load_snapshot(zone, drop.key, settings, now=now, expected_version=drop.version)
        except (SnapshotContractError, SnapshotDropError) as error:
            code = error.code if isinstance(error, SnapshotDropError) else "contract_violation"
            if code not in codes:
                result.rejections.append(_rejection_row(drop, str(error), code, now, sensor, token))
            continue
        if known is not None:
            decision = snapshot_ingest_decision(known["content_hash"], loaded.content_hash)
            if decision == "duplicate":
                result.unchanged.append(key)
                continue
            reason = (
                f"snapshot {key} was already taken in from {known['landing_prefix']} with different "
                f"content ({known['content_hash']} vs {loaded.content_hash}); the first version "
                "stays authoritative"
            )
            result.rejections.append(_rejection_row(drop, reason, "conflict", now, sensor, token, conflict=True))
            continue
        registry[key] = {"token": token, "content_hash": loaded.content_hash, "landing_prefix": drop.key}
        result.registered.append(
            RegisteredDrop(SNAPSHOT_KIND, key, drop.world_id, drop.key, token, loaded.content_hash)
        )
    return result


def registered_snapshots(lake: Lake, partition_keys: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """partition key → the authoritative (first) registry row of each registered snapshot."""
    frame = latest_rows(
        lake, REGISTRY_TABLE, partition_keys=partition_keys, key_expression="partition_key", latest=False
    )
    frame = frame[frame["kind"] == SNAPSHOT_KIND].sort_values("registered_at", kind="stable")
    frame = frame.drop_duplicates("partition_key", keep="first")
    return {row["partition_key"]: row for row in frame.to_dict("records")}


def registered_at(row: Mapping[str, Any]) -> dt.datetime:
    """The registration time of a registry row as an aware UTC datetime."""
    return parse_timestamp(pd.Timestamp(row["registered_at"]).to_pydatetime())
