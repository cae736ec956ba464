"""Taking drops in from the landing zone: find new bundles, validate them, register or reject.

Shared by the sensors (one call per tick) and by the demo/CLI. Each accepted drop gets a row in
the ``landing_registry`` table (partition key → where it landed and its content), each bad drop a
``rejections`` row with the exact reason; the files themselves are never moved or deleted.

- A bundle already registered with the same content token is an identical re-drop: nothing happens.
- A bundle whose run id is registered with different content is a conflict: one rejection row
  (``conflict`` true), and the first version stays authoritative.
- A drop already rejected with the same content is not looked at again, so a bad file left in
  place never produces a second row and never slows a tick down.
- At most ``max_bundles`` new bundles are read per call; the rest wait for the next call.
- A transient read error (timeout, dropped connection, S3 throttling or 5xx:
  :func:`~qmtl_validation.warehouse.landing.is_transient_io_error`) is not the drop's fault: it
  propagates, the call fails with nothing recorded, and the next call reads the drop again.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Mapping

import pandas as pd

from qmtl_validation.core.bundles import MANIFEST_MAX_BYTES, TABLE_MAX_BYTES, BundleError, load_bundle_from_files
from qmtl_validation.warehouse.landing import (
    LandingObjectTooLargeError,
    LandingZone,
    Rejection,
    find_run_bundles,
    is_transient_io_error,
)
from qmtl_validation.warehouse.lake import Lake
from qmtl_validation.warehouse.queries import latest_rows

REGISTRY_TABLE = "landing_registry"
REJECTIONS_TABLE = "rejections"
RUN_BUNDLE_KIND = "run_bundle"


@dataclass(frozen=True)
class RegisteredDrop:
    kind: str  # run_bundle | snapshot
    partition_key: str
    world_id: str
    landing_prefix: str
    token: str
    content_hash: str


@dataclass
class IntakeResult:
    registered: list[RegisteredDrop] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    rejections: list[dict[str, Any]] = field(default_factory=list)
    pending: int = 0
    deferred: int = 0
    prefixes: list[str] = field(default_factory=list)

    @property
    def partition_keys(self) -> list[str]:
        return [drop.partition_key for drop in self.registered]

    @property
    def conflicts(self) -> list[dict[str, Any]]:
        return [row for row in self.rejections if row.get("conflict")]

    def summary(self) -> str:
        return (
            f"{len(self.registered)} new, {len(self.unchanged)} unchanged, "
            f"{len(self.conflicts)} conflicts, {len(self.rejections) - len(self.conflicts)} rejected, "
            f"{self.pending} incomplete, {self.deferred} deferred"
        )


def read_bundle_files(zone: LandingZone, prefix: str) -> dict[str, bytes]:
    """Every object under a bundle prefix, each read under its size cap."""
    files = {}
    for obj in zone.list_objects(prefix):
        cap = MANIFEST_MAX_BYTES if obj.name == "run.json" else TABLE_MAX_BYTES
        files[obj.key] = zone.read_bytes(obj.key, cap)
    return files


def registered_drops(lake: Lake, kind: str) -> dict[str, dict[str, Any]]:
    """partition key → registry row of the first registration (the authoritative one)."""
    frame = latest_rows(lake, REGISTRY_TABLE, latest=False)
    frame = frame[frame["kind"] == kind].sort_values("registered_at")
    return {row["partition_key"]: row for row in frame.drop_duplicates("partition_key").to_dict("records")}


def registry_drop(kind: str, partition_key: str, row: Mapping[str, Any]) -> RegisteredDrop:
    """The drop a registry row records (for re-requesting a run the instance lost)."""
    return RegisteredDrop(
        kind, partition_key, row["world_id"], row["landing_prefix"], row["token"], row["content_hash"]
    )


def rejected_tokens(lake: Lake) -> set[tuple[str, str]]:
    """(key, etag) of every drop already rejected."""
    frame = latest_rows(lake, REJECTIONS_TABLE, latest=False)
    return set(zip(frame["key"], frame["etag"].fillna(""), strict=True))


def _rejection_row(
    rejection: Rejection, detected_at: dt.datetime, sensor: str, etag: str | None = None, conflict: bool = False
) -> dict[str, Any]:
    row = rejection.as_row(detected_at, sensor=sensor)
    if etag is not None:
        row["etag"] = etag
    row["conflict"] = conflict
    return row


def take_in_run_bundles(
    zone: LandingZone,
    lake: Lake,
    *,
    today: dt.date,
    lookback_days: int,
    max_bundles: int = 200,
    now: dt.datetime | None = None,
    sensor: str = "run_bundle_sensor",
) -> IntakeResult:
    """Scan the look-back's run prefixes once, register what is new and valid, record the rest."""
    now = now or dt.datetime.now(dt.timezone.utc)
    scan = find_run_bundles(zone, today, lookback_days)
    registry = registered_drops(lake, RUN_BUNDLE_KIND)
    seen_bad = rejected_tokens(lake)
    result = IntakeResult(pending=len(scan.pending), prefixes=list(scan.prefixes))

    for rejection in scan.rejections:
        etag = rejection.object.etag if rejection.object is not None else ""
        if (rejection.key, etag or "") not in seen_bad:
            result.rejections.append(_rejection_row(rejection, now, sensor))

    budget = max_bundles
    for bundle in scan.bundles:
        key, token = bundle.partition_key, bundle.content_token
        known = registry.get(key)
        if known is not None and known["token"] == token:
            result.unchanged.append(key)
            continue
        if (bundle.prefix, token) in seen_bad:
            continue
        if budget <= 0:
            result.deferred += 1
            continue
        budget -= 1
        fields = {"world_id": bundle.world_id, "strategy_id": bundle.strategy_id, "run_id": bundle.run_id}
        try:
            loaded = load_bundle_from_files(read_bundle_files(zone, bundle.prefix), expected_key=key)
        except (BundleError, LandingObjectTooLargeError, ValueError, OSError) as error:
            if is_transient_io_error(error):
                raise  # not the bundle's fault: fail the tick, the next one reads it again
            code = "oversize" if isinstance(error, LandingObjectTooLargeError) else "contract_violation"
            rejection = Rejection(bundle.prefix, str(error), code, "run_bundle", fields, None)
            result.rejections.append(_rejection_row(rejection, now, sensor, etag=token))
            continue
        if known is not None:
            if known["content_hash"] == loaded.content_hash:
                result.unchanged.append(key)
                continue
            rejection = Rejection(
                bundle.prefix,
                f"run {key} was already taken in from {known['landing_prefix']} with different content "
                "(the first version stays authoritative)",
                "conflict",
                "run_bundle",
                fields,
                None,
            )
            result.rejections.append(_rejection_row(rejection, now, sensor, etag=token, conflict=True))
            continue
        registry[key] = {"token": token, "content_hash": loaded.content_hash, "landing_prefix": bundle.prefix}
        result.registered.append(
            RegisteredDrop(RUN_BUNDLE_KIND, key, bundle.world_id, bundle.prefix, token, loaded.content_hash)
        )
    return result


def record_intake(lake: Lake, result: IntakeResult, *, now: dt.datetime, file_label: str) -> None:
    """Write the registry rows and rejection rows of one intake (one file each, per world)."""
    stem = f"{now:%Y%m%dT%H%M%S%fZ}-{file_label}"
    if result.registered:
        rows = pd.DataFrame(
            [
                {
                    "kind": drop.kind,
                    "partition_key": drop.partition_key,
                    "world_id": drop.world_id,
                    "landing_prefix": drop.landing_prefix,
                    "token": drop.token,
                    "content_hash": drop.content_hash,
                    "registered_at": now,
                }
                for drop in result.registered
            ]
        )
        lake.write_partitioned(REGISTRY_TABLE, rows, file_stem=stem)
    if result.rejections:
        lake.write_partitioned(REJECTIONS_TABLE, pd.DataFrame(result.rejections), file_stem=stem)
