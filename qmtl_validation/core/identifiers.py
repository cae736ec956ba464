"""Identifiers used in landing-zone keys and partition keys (SPEC §3)."""

from __future__ import annotations

import re

IDENTIFIER_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class InvalidIdentifierError(ValueError):
    """An identifier that could escape its folder or break a partition key."""


def check_identifier(value: object, field: str) -> str:
    """Return ``value`` if it is a valid identifier, else raise naming ``field``.

    ``..`` is rejected on top of the pattern because it is a path component on every filesystem.
    """
    if not isinstance(value, str) or not IDENTIFIER_PATTERN.fullmatch(value) or value == "..":
        raise InvalidIdentifierError(
            f"{field} {value!r} is not a valid identifier "
            f"(expected {IDENTIFIER_PATTERN.pattern})"
        )
    return value


def run_partition_key(world_id: str, strategy_id: str, run_id: str) -> str:
    """``world/strategy/run``: the `evaluation_runs` partition key (never contains a comma)."""
    return "/".join(
        (
            check_identifier(world_id, "world_id"),
            check_identifier(strategy_id, "strategy_id"),
            check_identifier(run_id, "run_id"),
        )
    )


def split_run_partition_key(key: str) -> tuple[str, str, str]:
    parts = key.split("/")
    if len(parts) != 3:
        raise InvalidIdentifierError(f"run partition key {key!r} is not world/strategy/run")
    world_id, strategy_id, run_id = parts
    run_partition_key(world_id, strategy_id, run_id)
    return world_id, strategy_id, run_id


def snapshot_partition_key(world_id: str, version: str) -> str:
    """``world/version``: the `risk_snapshots` partition key."""
    return "/".join((check_identifier(world_id, "world_id"), check_identifier(version, "version")))


def split_snapshot_partition_key(key: str) -> tuple[str, str]:
    parts = key.split("/")
    if len(parts) != 2:
        raise InvalidIdentifierError(f"snapshot partition key {key!r} is not world/version")
    snapshot_partition_key(*parts)
    return parts[0], parts[1]
