"""A small progress bar on stderr for long CLI work (no dependency).

    with Progress(len(runs), "evaluating runs") as progress:
        for run in runs:
            ...
            progress.advance()

or wrap an iterable: ``for run in progress_iter(runs, "evaluating runs"): ...``.

On a terminal the bar redraws in place (``\\r``) at most every ``interval`` seconds and ends with
the total count and elapsed time; when stderr is not a terminal (CI logs, pipes) it prints a
single summary line at the end, and only for work that took ``quiet_below`` seconds or more, so
logs stay readable. ``enabled=False`` silences it
(``--quiet``). Output goes to stderr so stdout stays clean for ``--json``.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Iterable, Iterator, TypeVar

T = TypeVar("T")

BAR_WIDTH = 28


class Progress:
    """Counts ``done`` out of ``total`` units of work and draws it on ``stream``."""

    def __init__(
        self,
        total: int | None,
        label: str,
        *,
        stream: IO[str] | None = None,
        enabled: bool = True,
        interval: float = 0.1,
        unit: str = "",
        quiet_below: float = 2.0,
    ):
        self.total = total
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.interval = interval
        self.unit = f" {unit}" if unit else ""
        self.quiet_below = quiet_below
        self.done = 0
        self._started = time.monotonic()
        self._last_draw = 0.0
        self._interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self._closed = False

    def __enter__(self) -> "Progress":
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(failed=exc_type is not None)

    def start(self) -> None:
        self._started = time.monotonic()
        self._draw(force=True)

    def advance(self, step: int = 1) -> None:
        self.done += step
        self._draw()

    def line(self) -> str:
        """The current progress line (without control characters)."""
        elapsed = time.monotonic() - self._started
        if self.total:
            share = min(self.done / self.total, 1.0)
            filled = int(round(share * BAR_WIDTH))
            bar = "#" * filled + "-" * (BAR_WIDTH - filled)
            return f"{self.label} [{bar}] {self.done}/{self.total}{self.unit} {share:4.0%} {elapsed:5.1f}s"
        return f"{self.label} {self.done}{self.unit} {elapsed:5.1f}s"

    def close(self, *, failed: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.enabled:
            return
        elapsed = time.monotonic() - self._started
        if self._interactive:
            self._write("\r" + self.line() + ("  (stopped)" if failed else "") + "\n")
        elif failed or elapsed >= self.quiet_below:
            verb = "stopped after" if failed else "done:"
            self._write(f"{self.label}: {verb} {self.done}{self.unit} in {elapsed:.1f}s\n")

    def _draw(self, force: bool = False) -> None:
        if not (self.enabled and self._interactive):
            return
        now = time.monotonic()
        if not force and now - self._last_draw < self.interval and self.done != self.total:
            return
        self._last_draw = now
        self._write("\r" + self.line())

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stderr must not stop the work
            self.enabled = False


def progress_iter(
    items: Iterable[T],
    label: str,
    *,
    total: int | None = None,
    stream: IO[str] | None = None,
    enabled: bool = True,
    unit: str = "",
) -> Iterator[T]:
    """Yield ``items`` while advancing a :class:`Progress` (total: ``len(items)`` when known)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(total, label, stream=stream, enabled=enabled, unit=unit) as progress:
        for item in items:
            yield item
            progress.advance()
