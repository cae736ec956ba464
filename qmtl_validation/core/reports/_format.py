"""Formatting shared by every report: value rendering, flattening, ordering.

Everything here is deterministic: the same input gives the same text on every machine.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

MISSING = "n/a"

STATUS_RANK: dict[str, int] = {"fail": 0, "warn": 1, "pass": 2}
SEVERITY_RANK: dict[str, int] = {"blocking": 0, "soft": 1, "info": 2}

# Lists longer than this are summarised in a cell instead of printed value by value.
_MAX_LIST_ITEMS = 8
_MAX_CELL_CHARS = 400


def plain(value: Any) -> Any:
    """numpy / pandas scalars as the matching Python scalar; everything else unchanged."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def format_number(value: float | int) -> str:
    """A number as a person reads it: thousands separators for large values, 6 significant
    digits otherwise, scientific notation only for tiny non-zero values."""
    value = plain(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:,}"
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e5:
        return f"{value:,.0f}"
    if magnitude < 1e-4:
        return f"{value:.3e}"
    return f"{value:.6g}"


def format_signed(value: float | int) -> str:
    text = format_number(value)
    return text if text.startswith("-") or text in ("0", "NaN") else "+" + text


def format_timestamp(value: Any) -> str:
    """ISO-8601 for datetimes/dates (as given: no timezone conversion); strings unchanged."""
    if value is None or value == "":
        return MISSING
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if isinstance(value, np.datetime64):
        return str(value)
    return str(value)


def format_value(value: Any) -> str:
    """Any leaf value (metric, detail, field) as one line of text. None is ``n/a``."""
    value = plain(value)
    if value is None:
        return MISSING
    if isinstance(value, (bool, int, float)):
        return format_number(value)
    if isinstance(value, (_dt.datetime, _dt.date, np.datetime64)):
        return format_timestamp(value)
    if isinstance(value, str):
        return clip(one_line(value))
    if isinstance(value, (list, tuple, set, frozenset, np.ndarray)):
        items = list(value) if not isinstance(value, (set, frozenset)) else sorted(value, key=str)
        if len(items) > _MAX_LIST_ITEMS:
            return f"[{len(items)} values]"
        return "[" + ", ".join(format_value(item) for item in items) + "]"
    if isinstance(value, Mapping):
        return clip(json.dumps(value, sort_keys=True, default=str, separators=(", ", ": ")))
    return clip(one_line(str(value)))


def one_line(text: str) -> str:
    """Collapse line breaks and runs of whitespace: report cells and bullets are one line."""
    return " ".join(str(text).split())


def clip(text: str, limit: int = _MAX_CELL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted path, leaf)`` pairs in insertion order; empty mappings produce nothing."""
    for key, value in mapping.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            yield from flatten(value, path)
        else:
            yield path, value


def rule_sort_key(name: str, result: Mapping[str, Any]) -> tuple[int, int, str]:
    """fail → warn → pass → anything else; then blocking → soft → info → other; then name."""
    status = str(result.get("status") or "").lower()
    severity = str(result.get("severity") or "").lower()
    return (STATUS_RANK.get(status, 3), SEVERITY_RANK.get(severity, 3), name)


def as_mapping(value: Any) -> dict[str, Any]:
    """A rule result (dict or object with ``to_dict``) or any mapping as a plain dict."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return dict(to_dict())
    raise TypeError(f"expected a mapping, got {type(value).__name__}")


def details_text(details: Mapping[str, Any]) -> str:
    """Rule evidence as ``path=value; ...`` (sorted paths so the text is stable)."""
    pairs = sorted(flatten(details), key=lambda item: item[0])
    return "; ".join(f"{path}={format_value(value)}" for path, value in pairs)


def table_columns(rows: Iterable[Mapping[str, Any]], preferred: Iterable[str]) -> list[str]:
    """Columns of a table built from dict rows: the preferred ones that occur, in that order,
    then the rest sorted."""
    seen: set[str] = set()
    for row in rows:
        seen.update(str(k) for k in row)
    preferred = [c for c in preferred if c in seen]
    return preferred + sorted(seen - set(preferred))
