"""Operator overrides of run decisions and the re-review queue (SPEC §7).

An override records a person's decision about a run (``approved`` to proceed despite the
computed status, ``rejected`` to stop despite it, ``none`` to withdraw an earlier one). It never
changes the computed ``summary.status`` or ``recommended_stage``: :func:`attach_override` only adds
the four override fields next to them, and promotion logic elsewhere decides what an approval
allows.

The log is append-only and tamper-evident: every row carries ``prev_hash`` (the previous row's
``row_hash``; :data:`GENESIS_HASH` for the first) and ``row_hash`` (``sha256:`` + hex digest of
the row's canonical JSON without ``row_hash``), so editing, deleting or reordering rows breaks a
link that :func:`verify_chain` finds. A chain cannot reveal rows cut from its end; keep the head
hash (the last ``row_hash``) somewhere else and pass it as ``expected_head`` to detect that.

Approved overrides are re-reviewed: due 30 days after ``override_timestamp`` for live-stage runs
and for runs in high-tier client-critical worlds, 90 days otherwise (:func:`review_window_days`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Literal, Mapping, Sequence

from qmtl_validation.core.identifiers import InvalidIdentifierError, check_identifier

__all__ = [
    "GENESIS_HASH",
    "OVERRIDE_STATUSES",
    "OverrideEntry",
    "OverrideError",
    "OverrideLog",
    "ReviewItem",
    "attach_override",
    "review_item",
    "review_queue",
    "review_window_days",
    "row_hash",
    "verify_chain",
]

OverrideStatus = Literal["none", "approved", "rejected"]
OVERRIDE_STATUSES: tuple[str, ...] = ("none", "approved", "rejected")
STAGES: tuple[str, ...] = ("backtest", "paper", "live")
RISK_TIERS: tuple[str, ...] = ("low", "medium", "high")

GENESIS_HASH = "sha256:" + "0" * 64
SHORT_REVIEW_DAYS = 30
LONG_REVIEW_DAYS = 90
# A timestamp this far ahead of the clock is refused: a future-dated approval would push its
# own re-review back.
FUTURE_TOLERANCE = dt.timedelta(minutes=5)
_REASON_MAX = 4000
_ACTOR_MAX = 256
_REQUIRED_FOR_APPROVAL = ("override_reason", "override_actor", "override_timestamp")

# Field order of a row as stored (the warehouse's `overrides` table columns).
ROW_FIELDS: tuple[str, ...] = (
    "world_id",
    "strategy_id",
    "run_id",
    "override_status",
    "override_reason",
    "override_actor",
    "override_timestamp",
    "stage",
    "risk_tier",
    "client_critical",
    "recorded_at",
    "prev_hash",
    "row_hash",
)


class OverrideError(ValueError):
    """An override that cannot be recorded; ``field`` names the offending field."""

    def __init__(self, message: str, *, field: str | None = None, missing: Sequence[str] = ()):
        super().__init__(message)
        self.field = field
        self.missing = tuple(missing)


# ---------------------------------------------------------------------------------------------
# Time and canonical form
# ---------------------------------------------------------------------------------------------


def _utc(value: Any, field: str) -> dt.datetime:
    """Aware UTC datetime from a datetime, pandas Timestamp or ISO-8601 string (naive = UTC)."""
    if hasattr(value, "to_pydatetime"):
        value = value.to_pydatetime()
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, str) and value.strip():
        try:
            moment = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise OverrideError(f"{field} {value!r} is not an ISO-8601 timestamp", field=field) from None
    else:
        raise OverrideError(f"{field} must be an ISO-8601 timestamp, got {value!r}", field=field)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc)


def _format_utc(moment: dt.datetime) -> str:
    moment = moment.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if moment.microsecond else "%Y-%m-%dT%H:%M:%SZ")


def _canonical_value(value: Any) -> Any:
    # Rows may come back from Parquet with numpy scalars and Timestamps; hash them as written.
    if value is None or isinstance(value, (str, bool)):
        return value
    if hasattr(value, "to_pydatetime") or isinstance(value, dt.datetime):
        return _format_utc(_utc(value, "timestamp"))
    if hasattr(value, "item") and not isinstance(value, (list, tuple, dict)):
        return _canonical_value(value.item())
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return value
    if isinstance(value, int):
        return value
    return str(value)


def _canonical_bytes(row: Mapping[str, Any]) -> bytes:
    body = {key: _canonical_value(row.get(key)) for key in ROW_FIELDS if key != "row_hash"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")


def row_hash(row: Mapping[str, Any]) -> str:
    """``sha256:`` + hex digest of the row's canonical JSON (every field except ``row_hash``)."""
    return "sha256:" + hashlib.sha256(_canonical_bytes(row)).hexdigest()


# ---------------------------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OverrideEntry:
    """One row of the override log.

    ``override_timestamp`` is when the operator made the decision (aware UTC); ``recorded_at``
    when the row was appended. ``stage``, ``risk_tier`` and ``client_critical`` are captured at
    recording time because they fix the re-review window. ``prev_hash`` / ``row_hash`` chain the
    rows (see the module docstring).
    """

    world_id: str
    strategy_id: str
    run_id: str
    override_status: OverrideStatus
    override_reason: str | None
    override_actor: str | None
    override_timestamp: dt.datetime | None
    stage: str | None
    risk_tier: str | None
    client_critical: bool
    recorded_at: dt.datetime
    prev_hash: str
    row_hash: str

    @property
    def run_key(self) -> tuple[str, str, str]:
        return (self.world_id, self.strategy_id, self.run_id)

    @property
    def missing_fields(self) -> tuple[str, ...]:
        """For an approval, the required fields that are blank (rows imported from elsewhere
        may lack them; rows recorded through :class:`OverrideLog` never do)."""
        if self.override_status != "approved":
            return ()
        values = {
            "override_reason": self.override_reason,
            "override_actor": self.override_actor,
            "override_timestamp": self.override_timestamp,
        }
        return tuple(
            name for name in _REQUIRED_FOR_APPROVAL
            if values[name] is None or (isinstance(values[name], str) and not values[name].strip())
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain row for storage: timestamps as ``...Z`` strings, fields in :data:`ROW_FIELDS` order."""
        return {
            "world_id": self.world_id,
            "strategy_id": self.strategy_id,
            "run_id": self.run_id,
            "override_status": self.override_status,
            "override_reason": self.override_reason,
            "override_actor": self.override_actor,
            "override_timestamp": (
                _format_utc(self.override_timestamp) if self.override_timestamp else None
            ),
            "stage": self.stage,
            "risk_tier": self.risk_tier,
            "client_critical": self.client_critical,
            "recorded_at": _format_utc(self.recorded_at),
            "prev_hash": self.prev_hash,
            "row_hash": self.row_hash,
        }

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> "OverrideEntry":
        """Parse a stored row (the inverse of :meth:`to_dict`; pandas/numpy values accepted).

        Field types are checked; completeness of an approval is not (see ``missing_fields``),
        and neither is the hash (see :func:`verify_chain`).
        """
        unknown = sorted(set(row) - set(ROW_FIELDS))
        if unknown:
            raise OverrideError(f"unknown override field {unknown[0]!r}", field=unknown[0])
        values = {key: _canonical_value(row.get(key)) for key in ROW_FIELDS}
        status = values["override_status"]
        if status not in OVERRIDE_STATUSES:
            raise OverrideError(
                f"override_status {status!r} is not one of {', '.join(OVERRIDE_STATUSES)}",
                field="override_status",
            )
        for key in ("world_id", "strategy_id", "run_id"):
            _identifier(values[key], key)
        for key in ("prev_hash", "row_hash"):
            if not isinstance(values[key], str) or not values[key].startswith("sha256:"):
                raise OverrideError(f"{key} must be a 'sha256:' digest", field=key)
        if values["recorded_at"] is None:
            raise OverrideError("recorded_at is required", field="recorded_at")
        timestamp = values["override_timestamp"]
        return cls(
            world_id=values["world_id"],
            strategy_id=values["strategy_id"],
            run_id=values["run_id"],
            override_status=status,
            override_reason=_optional_text(values["override_reason"], "override_reason"),
            override_actor=_optional_text(values["override_actor"], "override_actor"),
            override_timestamp=_utc(timestamp, "override_timestamp") if timestamp else None,
            stage=_choice(values["stage"], STAGES, "stage"),
            risk_tier=_choice(values["risk_tier"], RISK_TIERS, "risk_tier"),
            client_critical=bool(values["client_critical"]),
            recorded_at=_utc(values["recorded_at"], "recorded_at"),
            prev_hash=values["prev_hash"],
            row_hash=values["row_hash"],
        )


def _identifier(value: Any, field: str) -> str:
    try:
        return check_identifier(value, field)
    except InvalidIdentifierError as exc:
        raise OverrideError(str(exc), field=field) from None


def _optional_text(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise OverrideError(f"{field} must be text, got {value!r}", field=field)
    return value


def _choice(value: Any, allowed: tuple[str, ...], field: str) -> str | None:
    if value is None:
        return None
    normalised = value.strip().lower() if isinstance(value, str) else None
    if normalised not in allowed:
        raise OverrideError(f"{field} {value!r} is not one of {', '.join(allowed)}", field=field)
    return normalised


def _clean_text(value: str | None, field: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise OverrideError(f"{field} must be text", field=field)
    text = value.strip()
    if len(text) > limit:
        raise OverrideError(f"{field} is longer than {limit} characters", field=field)
    return text or None


# ---------------------------------------------------------------------------------------------
# Chain verification
# ---------------------------------------------------------------------------------------------


def verify_chain(
    rows: Sequence[OverrideEntry | Mapping[str, Any]], *, expected_head: str | None = None
) -> int | None:
    """Index of the first row whose link is broken, or None when the chain is intact.

    Row ``i`` is broken when its ``prev_hash`` is not row ``i-1``'s ``row_hash`` (or
    :data:`GENESIS_HASH` for the first row), or its ``row_hash`` does not match its content.
    With ``expected_head``, a chain whose last ``row_hash`` differs (rows cut from the end, or
    an empty log that should not be) reports ``len(rows)``.
    """
    previous = GENESIS_HASH
    for index, row in enumerate(rows):
        data = row.to_dict() if isinstance(row, OverrideEntry) else row
        if not isinstance(data, Mapping):
            return index
        try:
            if data.get("prev_hash") != previous or row_hash(data) != data.get("row_hash"):
                return index
        except (OverrideError, TypeError, ValueError):
            return index
        previous = data["row_hash"]
    if expected_head is not None and previous != expected_head:
        return len(rows)
    return None


# ---------------------------------------------------------------------------------------------
# The log
# ---------------------------------------------------------------------------------------------


class OverrideLog:
    """An append-only, hash-chained list of :class:`OverrideEntry` rows (in memory).

    Storage is the caller's (a JSONL file for the CLI, the warehouse ``overrides`` table later):
    build the log from stored rows, :meth:`record`, then persist the returned entry's
    :meth:`~OverrideEntry.to_dict`. Loading refuses a broken chain.
    """

    def __init__(self, rows: Iterable[OverrideEntry | Mapping[str, Any]] = ()):
        raw = list(rows)
        broken = verify_chain(raw)
        if broken is not None:
            raise OverrideError(
                f"override log is broken at row {broken}: its hash chain does not verify",
                field="row_hash",
            )
        self._entries: list[OverrideEntry] = [
            row if isinstance(row, OverrideEntry) else OverrideEntry.from_dict(row) for row in raw
        ]
        self._current: dict[tuple[str, str, str], OverrideEntry] = {}
        for entry in self._entries:
            self._current[entry.run_key] = entry

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[OverrideEntry]:
        return iter(self._entries)

    @property
    def entries(self) -> tuple[OverrideEntry, ...]:
        return tuple(self._entries)

    @property
    def head_hash(self) -> str:
        """The last ``row_hash`` (:data:`GENESIS_HASH` for an empty log)."""
        return self._entries[-1].row_hash if self._entries else GENESIS_HASH

    def current(self, world_id: str, strategy_id: str, run_id: str) -> OverrideEntry | None:
        """The latest entry for a run, or None if it was never overridden."""
        return self._current.get((world_id, strategy_id, run_id))

    def current_status(self, world_id: str, strategy_id: str, run_id: str) -> str:
        entry = self.current(world_id, strategy_id, run_id)
        return entry.override_status if entry is not None else "none"

    def current_entries(self) -> list[OverrideEntry]:
        """The latest entry of every run, in order of recording."""
        latest = {id(entry) for entry in self._current.values()}
        return [entry for entry in self._entries if id(entry) in latest]

    def record(
        self,
        world_id: str,
        strategy_id: str,
        run_id: str,
        status: str,
        *,
        reason: str | None = None,
        actor: str | None = None,
        timestamp: dt.datetime | str | None = None,
        stage: str | None = None,
        risk_tier: str | None = None,
        client_critical: bool = False,
        now: dt.datetime | None = None,
    ) -> OverrideEntry | None:
        """Append an override and return it, or return None when it changes nothing.

        ``approved`` needs a non-blank ``reason``, ``actor`` and ``timestamp`` (an
        :class:`OverrideError` names every missing one); for ``rejected`` and ``none`` a missing
        timestamp means ``now``. Requesting the run's current status (``none`` for a run never
        overridden) is a no-op, as in QMTL. Timestamps are ISO-8601 or datetimes, naive = UTC,
        and may not be more than five minutes ahead of ``now`` (default: the current time).
        """
        clock = _utc(now, "now") if now is not None else dt.datetime.now(dt.timezone.utc)
        world_id = _identifier(world_id, "world_id")
        strategy_id = _identifier(strategy_id, "strategy_id")
        run_id = _identifier(run_id, "run_id")
        normalised = status.strip().lower() if isinstance(status, str) else None
        if normalised not in OVERRIDE_STATUSES:
            raise OverrideError(
                f"override_status {status!r} is not one of {', '.join(OVERRIDE_STATUSES)}",
                field="override_status",
            )
        reason = _clean_text(reason, "override_reason", _REASON_MAX)
        actor = _clean_text(actor, "override_actor", _ACTOR_MAX)
        if isinstance(timestamp, str) and not timestamp.strip():
            timestamp = None
        when = _utc(timestamp, "override_timestamp") if timestamp is not None else None

        if normalised == "approved":
            missing = [
                name
                for name, value in (
                    ("override_reason", reason),
                    ("override_actor", actor),
                    ("override_timestamp", when),
                )
                if value is None
            ]
            if missing:
                raise OverrideError(
                    f"an approved override needs {', '.join(missing)}",
                    field=missing[0],
                    missing=missing,
                )
        if when is None:
            when = clock
        if when - clock > FUTURE_TOLERANCE:
            raise OverrideError(
                f"override_timestamp {_format_utc(when)} is in the future (now {_format_utc(clock)})",
                field="override_timestamp",
            )

        if self.current_status(world_id, strategy_id, run_id) == normalised:
            return None

        draft = {
            "world_id": world_id,
            "strategy_id": strategy_id,
            "run_id": run_id,
            "override_status": normalised,
            "override_reason": reason,
            "override_actor": actor,
            "override_timestamp": _format_utc(when),
            "stage": _choice(stage, STAGES, "stage"),
            "risk_tier": _choice(risk_tier, RISK_TIERS, "risk_tier"),
            "client_critical": bool(client_critical),
            "recorded_at": _format_utc(clock),
            "prev_hash": self.head_hash,
        }
        draft["row_hash"] = row_hash(draft)
        entry = OverrideEntry.from_dict(draft)
        self._entries.append(entry)
        self._current[entry.run_key] = entry
        return entry

    def to_dicts(self) -> list[dict[str, Any]]:
        return [entry.to_dict() for entry in self._entries]


# ---------------------------------------------------------------------------------------------
# Summaries and the re-review queue
# ---------------------------------------------------------------------------------------------


def attach_override(
    summary: Mapping[str, Any], entry: OverrideEntry | None
) -> dict[str, Any]:
    """A copy of a run summary with the four override fields set from ``entry``.

    ``status``, ``recommended_stage`` and every other key are copied unchanged: an override is
    recorded next to the computed decision, never instead of it. With no entry the summary says
    ``override_status: none`` and the other three fields are None.
    """
    result = dict(summary)
    result["override_status"] = entry.override_status if entry else "none"
    result["override_reason"] = entry.override_reason if entry else None
    result["override_actor"] = entry.override_actor if entry else None
    result["override_timestamp"] = (
        _format_utc(entry.override_timestamp) if entry and entry.override_timestamp else None
    )
    return result


def review_window_days(stage: str | None, risk_tier: str | None, client_critical: bool) -> int:
    """30 for live-stage runs and high-tier client-critical worlds, else 90.

    An unknown stage gets the short window: re-reviewing too early is the safe mistake.
    """
    if stage is None or stage == "live" or (risk_tier == "high" and client_critical):
        return SHORT_REVIEW_DAYS
    return LONG_REVIEW_DAYS


@dataclass(frozen=True)
class ReviewItem:
    """An approved override waiting for its re-review.

    ``review_due_at`` is ``override_timestamp`` + the window (None when the timestamp is
    missing); ``review_overdue`` is true once ``now`` is past the due time, and also when there
    is no due time to meet. ``missing_fields`` lists blank required fields of the approval.
    """

    world_id: str
    strategy_id: str
    run_id: str
    stage: str | None
    risk_tier: str | None
    client_critical: bool
    override_reason: str | None
    override_actor: str | None
    override_timestamp: dt.datetime | None
    review_window_days: int
    review_due_at: dt.datetime | None
    review_overdue: bool
    missing_fields: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Documented and not overdue."""
        return not self.missing_fields and not self.review_overdue

    def to_dict(self) -> dict[str, Any]:
        return {
            "world_id": self.world_id,
            "strategy_id": self.strategy_id,
            "run_id": self.run_id,
            "stage": self.stage,
            "risk_tier": self.risk_tier,
            "client_critical": self.client_critical,
            "override_reason": self.override_reason,
            "override_actor": self.override_actor,
            "override_timestamp": (
                _format_utc(self.override_timestamp) if self.override_timestamp else None
            ),
            "review_window_days": self.review_window_days,
            "review_due_at": _format_utc(self.review_due_at) if self.review_due_at else None,
            "review_overdue": self.review_overdue,
            "missing_fields": list(self.missing_fields),
        }


def review_item(entry: OverrideEntry, *, now: dt.datetime | str) -> ReviewItem:
    """The re-review state of one approved override at ``now`` (naive = UTC)."""
    clock = _utc(now, "now")
    window = review_window_days(entry.stage, entry.risk_tier, entry.client_critical)
    due = entry.override_timestamp + dt.timedelta(days=window) if entry.override_timestamp else None
    return ReviewItem(
        world_id=entry.world_id,
        strategy_id=entry.strategy_id,
        run_id=entry.run_id,
        stage=entry.stage,
        risk_tier=entry.risk_tier,
        client_critical=entry.client_critical,
        override_reason=entry.override_reason,
        override_actor=entry.override_actor,
        override_timestamp=entry.override_timestamp,
        review_window_days=window,
        review_due_at=due,
        review_overdue=due is None or clock > due,
        missing_fields=entry.missing_fields,
    )


def review_queue(
    overrides: OverrideLog | Iterable[OverrideEntry | Mapping[str, Any]],
    *,
    now: dt.datetime | str,
    world_id: str | None = None,
) -> list[ReviewItem]:
    """Re-review items for every run whose *current* override is an approval, due date first.

    An approval later withdrawn (``none``) or turned into ``rejected`` leaves the queue.
    ``overrides`` is a log or its rows (rows are not chain-checked here; load an
    :class:`OverrideLog` for that). ``world_id`` restricts the queue to one world.
    """
    entries = overrides.entries if isinstance(overrides, OverrideLog) else [
        row if isinstance(row, OverrideEntry) else OverrideEntry.from_dict(row) for row in overrides
    ]
    current: dict[tuple[str, str, str], OverrideEntry] = {}
    for entry in entries:
        current[entry.run_key] = entry
    items = [
        review_item(entry, now=now)
        for entry in current.values()
        if entry.override_status == "approved" and (world_id is None or entry.world_id == world_id)
    ]
    far_future = dt.datetime.max.replace(tzinfo=dt.timezone.utc)
    # Undated approvals first: they cannot be scheduled and are overdue by definition.
    items.sort(key=lambda item: (item.review_due_at is not None, item.review_due_at or far_future,
                                 item.world_id, item.strategy_id, item.run_id))
    return items

