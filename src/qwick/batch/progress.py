"""A progress line on stderr: rows done of the total, rows/s, ETA. Redrawn in place on a terminal; a plain line
every few seconds otherwise (a log file)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR = 24


class Progress:
    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.total, self.stream, self.enabled = total, stream or sys.stderr, enabled
        self.tty = self.stream.isatty()
        self.done = 0
        self.start = self._last = time.perf_counter()

    def update(self, rows: int = 1) -> None:
        self.done += rows
        now = time.perf_counter()
        if self.enabled and now - self._last >= (0.2 if self.tty else 10.0):
            self._last = now
            self._draw(now, end="\r" if self.tty else "\n")

    def finish(self) -> None:
        if self.enabled:
            self._draw(time.perf_counter(), end="\n")

    def rate(self) -> float:
        elapsed = time.perf_counter() - self.start
        return self.done / elapsed if elapsed > 0 else 0.0

    def _draw(self, now: float, end: str) -> None:
        rate = self.done / max(now - self.start, 1e-9)
        left = max(self.total - self.done, 0)
        eta = _clock(left / rate) if rate > 0 else "?"
        filled = BAR * min(self.done, self.total) // max(self.total, 1)
        self.stream.write(f"[{'#' * filled}{'.' * (BAR - filled)}] {self.done}/{self.total} rows "
                          f"{rate:.1f} rows/s ETA {eta}   {end}")
        self.stream.flush()


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
