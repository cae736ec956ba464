"""CloudEvents-shaped outbox rows and the per-world hash chain that makes the outbox tamper-evident.

Event types (SPEC §8): ``risk_snapshot_updated``, ``evaluation_run_created``,
``evaluation_run_updated``, ``validation_profile_changed``. An event's ``id`` is derived from its
idempotency key, so replaying the same change yields the same id and a consumer (or the outbox
writer) drops the duplicate. ``row_hash`` = sha256 of the canonical JSON of the row's fields and
``prev_hash`` (the world's previous ``row_hash``); changing any stored row breaks every later link.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from typing import Any, Iterable, Mapping, Sequence

EVENT_TYPES = (
    "risk_snapshot_updated",
    "evaluation_run_created",
    "evaluation_run_updated",
    "validation_profile_changed",
)
SOURCE = "qmtl_validation"
_ID_NAMESPACE = uuid.UUID("6f1c2a64-3b7e-5d0e-9a51-2f4c8e7b9d10")
_HASHED_FIELDS = ("id", "type", "source", "time", "subject", "data_json", "idempotency_key", "world_id")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def cloud_event(
    event_type: str,
    *,
    world_id: str,
    subject: str,
    data: Mapping[str, Any],
    idempotency_key: str,
    time: dt.datetime,
    source: str = SOURCE,
) -> dict[str, Any]:
    """One outbox row (without its chain fields); ``id`` is a UUIDv5 of the idempotency key."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}; expected one of {', '.join(EVENT_TYPES)}")
    return {
        "id": str(uuid.uuid5(_ID_NAMESPACE, idempotency_key)),
        "type": event_type,
        "source": source,
        "time": time.astimezone(dt.timezone.utc),
        "subject": subject,
        "specversion": "1.0",
        "datacontenttype": "application/json",
        "data_json": _canonical(data),
        "idempotency_key": idempotency_key,
        "world_id": world_id,
    }


def row_hash(row: Mapping[str, Any], prev_hash: str | None) -> str:
    fields = {name: row.get(name) for name in _HASHED_FIELDS}
    if isinstance(fields["time"], dt.datetime):
        fields["time"] = fields["time"].astimezone(dt.timezone.utc).isoformat()
    return "sha256:" + hashlib.sha256(_canonical({"row": fields, "prev": prev_hash}).encode()).hexdigest()


def chain(rows: Iterable[Mapping[str, Any]], prev_hash: str | None) -> list[dict[str, Any]]:
    """Link ``rows`` (one world's, in order) after ``prev_hash``."""
    linked = []
    for row in rows:
        out = dict(row)
        out["prev_hash"] = prev_hash
        out["row_hash"] = prev_hash = row_hash(out, prev_hash)
        linked.append(out)
    return linked


def first_broken_link(rows: Sequence[Mapping[str, Any]]) -> int | None:
    """Index of the first row whose hash or link does not verify (rows in chain order), or None."""
    prev = None
    for index, row in enumerate(rows):
        if row.get("prev_hash") != prev or row.get("row_hash") != row_hash(row, prev):
            return index
        prev = row.get("row_hash")
    return None


def run_event(record: Mapping[str, Any], time: dt.datetime) -> dict[str, Any]:
    """``evaluation_run_created`` for a run's first revision, ``evaluation_run_updated`` after."""
    revision = int(record["revision"])
    world, strategy, run = record["world_id"], record["strategy_id"], record["run_id"]
    event_type = "evaluation_run_created" if revision == 1 else "evaluation_run_updated"
    data = {
        "world_id": world,
        "strategy_id": strategy,
        "run_id": run,
        "stage": record["stage"],
        "revision": revision,
        "change_reason": record.get("revision_reason"),
        "status": record["summary"]["status"],
        "recommended_stage": record["summary"]["recommended_stage"],
        "policy_version": record["validation"].get("policy_version"),
        "ruleset_hash": record["validation"].get("ruleset_hash"),
    }
    return cloud_event(
        event_type,
        world_id=world,
        subject=f"{world}/{strategy}/{run}",
        data=data,
        idempotency_key=f"{event_type}:{world}:{strategy}:{run}:{revision}",
        time=time,
    )
