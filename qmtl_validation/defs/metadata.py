"""Materialisation metadata helpers shared by the areas."""

from __future__ import annotations

import base64


def markdown_image(png: bytes, alt: str) -> str:
    """A PNG as Markdown the Dagster UI renders inline (a base64 data URI)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
