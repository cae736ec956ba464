"""The events outbox: CloudEvents rows appended to the ``events`` table, once per idempotency key,
as one hash chain per world that concurrent writers cannot fork.

Each world's events form a hash chain (``core.events``): every row carries ``prev_hash`` (the
world's previous ``row_hash``) and its own ``row_hash``. Chain order is file order, then row order
within a file. A batch is published as the world's next numbered file,
``events/world_id=<w>/chain-<n>.parquet`` (``n`` zero-padded, one more than the last), linked to
the last row of file ``n - 1``. Publishing refuses an existing name (hard link on a local lake,
``If-None-Match`` on S3), so when two runs append to the same world at once exactly one gets
number ``n``; the other re-reads the tail, drops events the winner already wrote, and takes
``n + 1``. The chain therefore stays linear without any lock, on both kinds of lake.

Files written before numbered files existed (timestamp-named) sort before them and are read as
the start of the chain.

:func:`verify_events_chain` walks every world's chain and reports the first broken link: the
``qmtl-validation verify-log --events`` command.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping

import pandas as pd

from qmtl_validation.core.events import chain, row_hash
from qmtl_validation.warehouse.lake import Lake, LakeFileExistsError
from qmtl_validation.warehouse.queries import lake_connection
from qmtl_validation.warehouse.tables import get_table

EVENTS_TABLE = "events"
CHAIN_FILE_PREFIX = "chain-"
_CHAIN_FILE = re.compile(r"chain-(\d{12})\.parquet")
MAX_APPEND_ATTEMPTS = 50


def chain_tail(rows: pd.DataFrame) -> str | None:
    """The ``row_hash`` of the last event of a world's chain (None for an empty chain).

    For rows without a file order (the timestamp-named files written before numbered chain
    files): the one row no other row names as its ``prev_hash``, else the newest row.
    """
    if rows.empty:
        return None
    referenced = set(rows["prev_hash"].dropna())
    tails = [h for h in rows["row_hash"] if h not in referenced]
    if len(tails) != 1:
        return rows.sort_values("time")["row_hash"].iloc[-1]
    return tails[0]


def _file_name(uri: str) -> str:
    return uri.rsplit("/", 1)[-1]


def chain_file_number(uri: str) -> int | None:
    """``n`` of a ``chain-<n>.parquet`` file, None for an older timestamp-named file."""
    match = _CHAIN_FILE.fullmatch(_file_name(uri))
    return int(match.group(1)) if match else None


def chain_file_stem(number: int) -> str:
    return f"{CHAIN_FILE_PREFIX}{number:012d}"


def chain_files(lake: Lake, world_id: str) -> list[str]:
    """The world's event files in chain order: older timestamp-named files, then ``chain-<n>``."""
    files = lake.list_files(EVENTS_TABLE, world_id)
    return sorted(files, key=lambda uri: (chain_file_number(uri) is not None, chain_file_number(uri) or 0, uri))


def _rows(lake: Lake, uri: str) -> list[dict[str, Any]]:
    return lake.read_file(uri).to_pylist()


def _tail_of(lake: Lake, files: list[str]) -> tuple[int, str | None]:
    """(number of the last chain file or 0, row_hash the next event links to)."""
    if not files:
        return 0, None
    last = files[-1]
    number = chain_file_number(last)
    if number is None:  # only older files: find their tail by the links
        frames = [pd.DataFrame(_rows(lake, uri)) for uri in files]
        return 0, chain_tail(pd.concat(frames, ignore_index=True))
    rows = _rows(lake, last)
    return number, (rows[-1]["row_hash"] if rows else None)


def _known_keys(lake: Lake, files: list[str], keys: set[str]) -> set[str]:
    """The subset of ``keys`` already in the world's files (one DuckDB scan of one column)."""
    if not files or not keys:
        return set()
    connection = lake_connection(lake)
    try:
        sources = ", ".join("'" + uri.replace("'", "''") + "'" for uri in files)
        connection.register("_candidate_keys", pd.DataFrame({"key": sorted(keys)}))
        found = connection.execute(
            f"SELECT DISTINCT idempotency_key FROM read_parquet([{sources}], union_by_name = true) "
            "WHERE idempotency_key IN (SELECT key FROM _candidate_keys)"
        ).fetchall()
    finally:
        connection.close()
    return {row[0] for row in found}


def _normalised(event: Mapping[str, Any]) -> dict[str, Any]:
    """The event with ``time`` as a UTC datetime at the lake's microsecond precision, so the
    hash computed now is the hash recomputed from the stored row."""
    out = dict(event)
    moment = pd.Timestamp(out["time"])
    moment = moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")
    out["time"] = moment.floor("us").to_pydatetime()
    return out


def _append_world(lake: Lake, world_id: str, batch: list[dict[str, Any]]) -> int:
    for attempt in range(MAX_APPEND_ATTEMPTS):
        files = chain_files(lake, world_id)
        known = _known_keys(lake, files, {e["idempotency_key"] for e in batch})
        fresh = [e for e in batch if e["idempotency_key"] not in known]
        if not fresh:
            return 0
        number, tail = _tail_of(lake, files)
        rows = chain(fresh, tail)
        try:
            lake.write(EVENTS_TABLE, pd.DataFrame(rows), world_id=world_id, file_stem=chain_file_stem(number + 1))
        except LakeFileExistsError:
            # Another writer took this number first: re-read its tail and try the next one.
            time.sleep(random.uniform(0.005, 0.05) * (1 + attempt))
            continue
        return len(rows)
    raise RuntimeError(
        f"events of world {world_id}: could not append after {MAX_APPEND_ATTEMPTS} attempts "
        "(every attempt lost the race for the next chain file)"
    )


def append_events(lake: Lake, events: Iterable[Mapping[str, Any]]) -> int:
    """Append the events not yet in the outbox (by ``idempotency_key``); returns how many were
    written. Safe to call from concurrent runs: each world's chain stays one line."""
    by_world: dict[str, dict[str, dict[str, Any]]] = {}
    for event in events:
        # Keyed by idempotency key (first occurrence wins): a backfill hands over one event per run.
        by_world.setdefault(event["world_id"], {}).setdefault(event["idempotency_key"], _normalised(event))
    return sum(_append_world(lake, world_id, list(batch.values())) for world_id, batch in by_world.items())


# ---------------------------------------------------------------------------------------------
# Verification


@dataclass(frozen=True)
class ChainCheck:
    """The verdict on one world's events chain.

    ``broken_at`` is the 0-based position (in chain order) of the first event whose link does not
    verify, with the file and row it sits in, its id and what is wrong; all None when intact.
    ``head`` is the last ``row_hash`` (record it elsewhere to detect events cut from the end).
    """

    world_id: str
    events: int
    files: int
    head: str | None
    broken_at: int | None = None
    file: str | None = None
    row_in_file: int | None = None
    event_id: str | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.broken_at is None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def _event_worlds(lake: Lake) -> list[str]:
    partition = get_table(EVENTS_TABLE).partitioned_by + "="
    worlds = set()
    for uri in lake.list_files(EVENTS_TABLE):
        folder = uri.rsplit("/", 2)[-2]
        if folder.startswith(partition):
            worlds.add(folder[len(partition):])
    return sorted(worlds)


def verify_world_chain(lake: Lake, world_id: str, *, expected_head: str | None = None) -> ChainCheck:
    """Walk ``world_id``'s events in chain order; report the first broken link.

    A row is broken when its ``prev_hash`` is not the previous row's ``row_hash`` (an event was
    removed, inserted or reordered, a chain file is missing, or the chain forked) or when its
    ``row_hash`` does not match its content (the event was edited). ``expected_head`` also
    catches events cut from the end.
    """
    files = chain_files(lake, world_id)
    previous: str | None = None
    position = 0
    expected_number = 1
    for uri in files:
        rows = _rows(lake, uri)
        number = chain_file_number(uri)
        if number is not None:
            # A gap in the numbering is a removed file: say so rather than "prev_hash differs".
            if number != expected_number:
                return ChainCheck(
                    world_id, position, len(files), previous, position, uri, 0,
                    rows[0]["id"] if rows else None,
                    f"chain file {chain_file_stem(expected_number)} is missing (found {_file_name(uri)})",
                )
            expected_number += 1
        for index, row in enumerate(rows):
            problem = None
            if row.get("prev_hash") != previous:
                problem = (
                    "prev_hash does not match the previous event's row_hash (an event was removed, "
                    "inserted or reordered, or the chain forked)"
                )
            elif row.get("row_hash") != row_hash(row, previous):
                problem = "row_hash does not match the event's content (the event was edited)"
            if problem:
                return ChainCheck(world_id, position, len(files), previous, position, uri, index, row.get("id"), problem)
            previous = row.get("row_hash")
            position += 1
    if expected_head is not None and previous != expected_head:
        return ChainCheck(
            world_id, position, len(files), previous, position, None, None, None,
            "the last event is not the expected head (events missing from the end?)",
        )
    return ChainCheck(world_id, position, len(files), previous)


def verify_events_chain(lake: Lake, world_id: str | None = None) -> list[ChainCheck]:
    """:func:`verify_world_chain` for one world, or for every world with events."""
    worlds = [world_id] if world_id is not None else _event_worlds(lake)
    return [verify_world_chain(lake, world) for world in worlds]
