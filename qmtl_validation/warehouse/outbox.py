"""The events outbox: CloudEvents rows appended to the ``events`` table, once per idempotency key.

Each world's events form a hash chain (``core.events``): a new batch links to the world's current
tail, the one row no other row names as its ``prev_hash``.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import pandas as pd

from qmtl_validation.core.events import chain
from qmtl_validation.warehouse.lake import Lake
from qmtl_validation.warehouse.queries import latest_rows

EVENTS_TABLE = "events"


def chain_tail(rows: pd.DataFrame) -> str | None:
    """The ``row_hash`` of the last event of a world's chain (None for an empty chain)."""
    if rows.empty:
        return None
    referenced = set(rows["prev_hash"].dropna())
    tails = [h for h in rows["row_hash"] if h not in referenced]
    if len(tails) != 1:
        # A fork (two writers raced) or a broken chain: continue from the newest row so appends
        # never stop; `qmtl-validation verify-log` reports the break.
        return rows.sort_values("time")["row_hash"].iloc[-1]
    return tails[0]


def append_events(lake: Lake, events: Iterable[Mapping[str, Any]]) -> int:
    """Append events not yet in the outbox; returns how many were written."""
    by_world: dict[str, list[Mapping[str, Any]]] = {}
    for event in events:
        by_world.setdefault(event["world_id"], []).append(event)
    written = 0
    for world_id, batch in by_world.items():
        existing = latest_rows(lake, EVENTS_TABLE, world_id=world_id, latest=False)
        known = set(existing["idempotency_key"].dropna())
        fresh, seen = [], set()
        for event in batch:
            key = event["idempotency_key"]
            if key in known or key in seen:
                continue
            seen.add(key)
            fresh.append(event)
        if not fresh:
            continue
        rows = chain(fresh, chain_tail(existing))
        stem = f"{pd.Timestamp.now(tz='UTC'):%Y%m%dT%H%M%S%fZ}-{rows[0]['id'][:8]}"
        lake.write(EVENTS_TABLE, pd.DataFrame(rows), world_id=world_id, file_stem=stem)
        written += len(rows)
    return written
