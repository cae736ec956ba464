"""A tiny document model that every report is built into, then rendered as Markdown or HTML.

Report builders decide *what* is said (sections, rows, order); the renderers only decide how it
looks, so the Markdown preview and the HTML file can never disagree on content. All text in a
block is raw input text: renderers escape it for their format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union


@dataclass(frozen=True)
class Link:
    """A table cell that links to another report file (a relative path)."""

    text: str
    href: str


Cell = Union[str, Link]


@dataclass(frozen=True)
class Paragraph:
    text: str
    # "fail" | "warn" | "pass" | "note": HTML colours the paragraph, Markdown ignores it.
    tone: str | None = None


@dataclass(frozen=True)
class Fields:
    """``Label: value`` bullets; a tuple value becomes a nested list."""

    items: tuple[tuple[str, str | tuple[str, ...]], ...]


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    # One entry per row: a status-like class ("fail", "warn", "pass", "overdue") or None.
    row_classes: tuple[str | None, ...] = ()
    empty_text: str = "None."


@dataclass(frozen=True)
class Image:
    """A chart. HTML embeds ``png`` as a data URI (or links ``href``); Markdown links ``href``."""

    title: str
    png: bytes | None = None
    href: str | None = None


@dataclass(frozen=True)
class Subheading:
    text: str


Block = Union[Paragraph, Fields, Bullets, Table, Image, Subheading]


@dataclass(frozen=True)
class Section:
    title: str
    blocks: tuple[Block, ...] = ()
    anchor: str | None = None


@dataclass(frozen=True)
class Document:
    title: str
    sections: tuple[Section, ...] = field(default_factory=tuple)
    status: str | None = None  # drives the HTML banner colour
    subtitle: str | None = None
