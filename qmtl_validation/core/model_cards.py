"""Model cards: the human-written description of a strategy (reference §6.2).

A card is a YAML document at ``model_cards/<strategy_id>.yaml`` (or ``.yml``) in the landing zone.
Schema (the fields the validation report reads — the report never looks for other names):

- ``strategy_id`` (str, required, an identifier per SPEC §3)
- ``model_card_version`` (str; ``version`` is accepted as an alias; a number is kept as written)
- ``objective`` (str)
- ``data_overview`` (str, or a list of str)
- ``key_assumptions`` (list of str; a single string counts as a one-item list)
- ``key_limitations`` (list of str; likewise)
- optional ``owner`` (str), ``scope`` (str), ``universe`` (str or list of str),
  ``features`` (list of str)

Cards are documents people write by hand, so keys outside the schema are not an error: they are
kept in ``ModelCard.extra``, listed in ``ModelCard.unknown_keys`` and explained in
``ModelCard.warnings`` (with the schema key that was probably meant, e.g. ``assumptions`` →
``key_assumptions``). Wrong *types* and a missing ``strategy_id`` are errors
(:class:`ModelCardError`, a ``ValueError``) naming the field and what was expected.
"""

from __future__ import annotations

import datetime
import difflib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from qmtl_validation.core.identifiers import InvalidIdentifierError, check_identifier

SCHEMA_FIELDS: tuple[str, ...] = (
    "strategy_id",
    "model_card_version",
    "objective",
    "data_overview",
    "key_assumptions",
    "key_limitations",
    "owner",
    "scope",
    "universe",
    "features",
)
_ALIASES: dict[str, str] = {"version": "model_card_version"}

# Names other tools (and QMTL's report) use for schema fields; a card using them gets a hint
# rather than silently losing the field from the report's model summary.
_LIKELY_MEANT: dict[str, str] = {
    "assumptions": "key_assumptions",
    "limitations": "key_limitations",
    "risks": "key_limitations",
    "data_sources": "data_overview",
    "data": "data_overview",
    "signals": "features",
    "mission": "scope",
    "description": "objective",
    "summary": "objective",
    "asset_universe": "universe",
}

CARD_SUFFIXES: tuple[str, ...] = (".yaml", ".yml")


class ModelCardError(ValueError):
    """A model card that cannot be read: bad YAML, a field of the wrong type, no strategy_id."""


@dataclass(frozen=True)
class ModelCard:
    """One strategy's model card. List fields are tuples so the card is immutable and hashable."""

    strategy_id: str
    model_card_version: str | None = None
    objective: str | None = None
    data_overview: str | tuple[str, ...] | None = None
    key_assumptions: tuple[str, ...] = ()
    key_limitations: tuple[str, ...] = ()
    owner: str | None = None
    scope: str | None = None
    universe: str | tuple[str, ...] | None = None
    features: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)
    warnings: tuple[str, ...] = field(default=(), compare=False)
    source: str | None = field(default=None, compare=False)

    @property
    def version(self) -> str | None:
        """Alias of ``model_card_version``."""
        return self.model_card_version

    @property
    def unknown_keys(self) -> tuple[str, ...]:
        """Keys of the document outside the schema, sorted."""
        return tuple(sorted(self.extra))

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (lists, not tuples); unknown keys are kept under ``extra``."""

        def plain(value: Any) -> Any:
            return list(value) if isinstance(value, tuple) else value

        return {
            "strategy_id": self.strategy_id,
            "model_card_version": self.model_card_version,
            "objective": self.objective,
            "data_overview": plain(self.data_overview),
            "key_assumptions": list(self.key_assumptions),
            "key_limitations": list(self.key_limitations),
            "owner": self.owner,
            "scope": self.scope,
            "universe": plain(self.universe),
            "features": list(self.features),
            "extra": dict(self.extra),
        }


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, (int, float)):
        return "a number"
    return type(value).__name__


def _text(value: Any, key: str, *, allow_number: bool = False) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if allow_number and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if allow_number and isinstance(value, datetime.date):
        # YAML turns an unquoted 2024-05-01 into a date; as a version it means the text.
        return value.isoformat()
    expected = "a string or a number" if allow_number else "a string"
    raise ModelCardError(f"model card field {key!r}: expected {expected}, got {_type_name(value)}")


def _text_list(value: Any, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value.strip(),) if value.strip() else ()
    if not isinstance(value, (list, tuple)):
        raise ModelCardError(
            f"model card field {key!r}: expected a list of strings, got {_type_name(value)}"
        )
    items = []
    for index, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise ModelCardError(
                f"model card field {key}[{index}]: expected a string, got {_type_name(item)}"
            )
        text = str(item).strip()
        if text:
            items.append(text)
    return tuple(items)


def _text_or_list(value: Any, key: str) -> str | tuple[str, ...] | None:
    if value is None or isinstance(value, str):
        return _text(value, key)
    if isinstance(value, (list, tuple)):
        return _text_list(value, key) or None
    raise ModelCardError(
        f"model card field {key!r}: expected a string or a list of strings, "
        f"got {_type_name(value)}"
    )


def _unknown_key_warning(key: str) -> str:
    meant = _LIKELY_MEANT.get(key.lower())
    if meant is None:
        close = difflib.get_close_matches(key, SCHEMA_FIELDS + tuple(_ALIASES), n=1, cutoff=0.75)
        meant = _ALIASES.get(close[0], close[0]) if close else None
    hint = f" (did you mean {meant!r}?)" if meant else ""
    return f"key {key!r} is not in the model card schema; kept as an extra field{hint}"


def model_card_from_mapping(data: Mapping[str, Any], *, source: str | None = None) -> ModelCard:
    """Build a :class:`ModelCard` from an already parsed document (e.g. inline in a run file)."""
    where = f" ({source})" if source else ""
    if not isinstance(data, Mapping):
        raise ModelCardError(f"model card{where}: expected a mapping, got {_type_name(data)}")
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key)
        canonical = _ALIASES.get(key, key)
        if canonical not in SCHEMA_FIELDS:
            extra[key] = value
            continue
        if canonical in values:
            if _text(values[canonical], key, allow_number=True) != _text(
                value, key, allow_number=True
            ):
                raise ModelCardError(
                    f"model card{where}: 'version' and 'model_card_version' disagree "
                    f"({values[canonical]!r} vs {value!r})"
                )
            continue
        values[canonical] = value

    try:
        raw_id = values.get("strategy_id")
        if raw_id is None:
            raise ModelCardError(f"model card{where}: 'strategy_id' is required")
        strategy_id = check_identifier(raw_id, "model card strategy_id")
        return ModelCard(
            strategy_id=strategy_id,
            model_card_version=_text(
                values.get("model_card_version"), "model_card_version", allow_number=True
            ),
            objective=_text(values.get("objective"), "objective"),
            data_overview=_text_or_list(values.get("data_overview"), "data_overview"),
            key_assumptions=_text_list(values.get("key_assumptions"), "key_assumptions"),
            key_limitations=_text_list(values.get("key_limitations"), "key_limitations"),
            owner=_text(values.get("owner"), "owner"),
            scope=_text(values.get("scope"), "scope"),
            universe=_text_or_list(values.get("universe"), "universe"),
            features=_text_list(values.get("features"), "features"),
            extra=extra,
            warnings=tuple(_unknown_key_warning(k) for k in sorted(extra)),
            source=source,
        )
    except InvalidIdentifierError as exc:
        raise ModelCardError(f"{exc}{where}") from None
    except ModelCardError as exc:
        if source and source not in str(exc):
            raise ModelCardError(f"{exc} ({source})") from None
        raise


def _looks_like_path(value: str) -> bool:
    if "\n" in value:
        return False
    if value.endswith(CARD_SUFFIXES + (".json",)) and ": " not in value:
        return True
    try:
        return Path(value).is_file()
    except OSError:  # e.g. a one-line document longer than the OS allows for a name
        return False


def load_model_card(path_or_text: str | os.PathLike[str] | Mapping[str, Any]) -> ModelCard:
    """Read a model card from a file path, YAML/JSON text, or a parsed mapping.

    A ``str`` is a path when it is one line naming an existing file, or ending in
    ``.yaml``/``.yml``/``.json`` without a ``key: value`` in it; otherwise it is the document. Raises :class:`ModelCardError` for
    unreadable files, invalid YAML, a document that is not a mapping, a missing or invalid
    ``strategy_id`` and fields of the wrong type.
    """
    if isinstance(path_or_text, Mapping):
        return model_card_from_mapping(path_or_text)
    source: str | None = None
    if isinstance(path_or_text, os.PathLike) or (
        isinstance(path_or_text, str) and _looks_like_path(path_or_text)
    ):
        path = Path(path_or_text)
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ModelCardError(f"model card file not found: {path}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelCardError(f"model card {path}: cannot read ({exc})") from None
    elif isinstance(path_or_text, str):
        text = path_or_text
    else:
        raise ModelCardError(
            "load_model_card: expected a path, YAML text or a mapping, "
            f"got {_type_name(path_or_text)}"
        )
    return load_model_card_text(text, source=source)


class ModelCardRegistry:
    """Model cards of a landing zone: ``<root>/model_cards/<strategy_id>.yaml`` (or ``.yml``).

    ``root`` is the landing-zone root (the folder holding ``model_cards/``). ``read_text`` lets a
    caller serve the files from elsewhere (an object store): it receives the path relative to
    ``root`` (``model_cards/<id>.yaml``) and returns the text, or None when there is no such file.
    Parsed cards are cached per file content, so an edited card is re-read.

    A card whose ``strategy_id`` differs from its file name is an error, as is having both a
    ``.yaml`` and a ``.yml`` card for one strategy (which one is authoritative would be a guess).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        read_text: Callable[[str], str | None] | None = None,
    ):
        self.root = Path(root)
        self._read_text = read_text or self._read_local
        self._cache: dict[tuple[str, str], ModelCard] = {}
        self._lock = threading.Lock()

    def _read_local(self, relative: str) -> str | None:
        try:
            return (self.root / relative).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelCardError(
                f"model card {self.root / relative}: cannot read ({exc})"
            ) from None

    def get(self, strategy_id: str) -> ModelCard | None:
        """The strategy's card; None when it has none; :class:`ModelCardError` if invalid."""
        try:
            check_identifier(strategy_id, "strategy_id")
        except InvalidIdentifierError as exc:
            raise ModelCardError(str(exc)) from None
        found = []
        for suffix in CARD_SUFFIXES:
            relative = f"model_cards/{strategy_id}{suffix}"
            text = self._read_text(relative)
            if text is not None:
                found.append((relative, text))
        if not found:
            return None
        if len(found) > 1:
            raise ModelCardError(
                f"strategy {strategy_id!r} has both {found[0][0]} and {found[1][0]}; keep one"
            )
        relative, text = found[0]
        key = (relative, text)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            return cached
        card = load_model_card_text(text, source=str(self.root / relative))
        if card.strategy_id != strategy_id:
            raise ModelCardError(
                f"model card {self.root / relative} declares strategy_id "
                f"{card.strategy_id!r}, expected {strategy_id!r}"
            )
        with self._lock:
            self._cache[key] = card
        return card

    def strategy_ids(self) -> list[str]:
        """Strategies with a card file in the local ``model_cards/`` folder, sorted."""
        folder = self.root / "model_cards"
        if not folder.is_dir():
            return []
        return sorted(
            {p.stem for p in folder.iterdir() if p.is_file() and p.suffix in CARD_SUFFIXES}
        )

    def load_all(self) -> tuple[dict[str, ModelCard], dict[str, str]]:
        """Every local card: ``(cards by strategy_id, error message by strategy_id)``."""
        cards: dict[str, ModelCard] = {}
        errors: dict[str, str] = {}
        for strategy_id in self.strategy_ids():
            try:
                card = self.get(strategy_id)
            except ModelCardError as exc:
                errors[strategy_id] = str(exc)
                continue
            if card is not None:
                cards[strategy_id] = card
        return cards, errors


# libyaml's parser when PyYAML has it: the same safe constructors and resolvers as
# ``yaml.safe_load``, several times faster (a backfill reads thousands of cards).
_C_SAFE_LOADER = getattr(yaml, "CSafeLoader", None)


def _safe_load(text: str) -> Any:
    if _C_SAFE_LOADER is not None:
        try:
            return yaml.load(text, Loader=_C_SAFE_LOADER)
        except yaml.YAMLError:
            pass  # re-read below: the pure-Python parser's message is the one reported
    return yaml.safe_load(text)


def load_model_card_text(text: str, *, source: str | None = None) -> ModelCard:
    """Parse card YAML text; ``source`` names where it came from in error messages."""
    try:
        data = _safe_load(text)
    except yaml.YAMLError as exc:
        where = f"{source}: " if source else ""
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ModelCardError(f"model card {where}invalid YAML{at}: {problem}") from None
    if data is None:
        raise ModelCardError(f"model card {source + ': ' if source else ''}the document is empty")
    return model_card_from_mapping(data, source=source)
