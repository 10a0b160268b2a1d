"""A progress bar on stderr for index builds: redrawn in place on a terminal, one final line otherwise."""

from __future__ import annotations

import time
from typing import TextIO

WIDTH = 30


class ProgressBar:
    def __init__(self, stream: TextIO, label: str = "embedding") -> None:
        self.stream, self.label = stream, label
        self.start = time.perf_counter()
        self.tty = stream.isatty()
        self._last = -1.0

    def __call__(self, done: int, total: int, tokens: int) -> None:
        now = time.perf_counter()
        final = done >= total
        if not final and (not self.tty or now - self._last < 0.1):
            return
        self._last = now
        elapsed = max(now - self.start, 1e-9)
        filled = WIDTH if total == 0 else int(WIDTH * done / total)
        line = (f"{self.label} [{'#' * filled}{'.' * (WIDTH - filled)}] {done}/{total} chunks, "
                f"{done / elapsed:.1f} chunks/s, {tokens / elapsed:.0f} tokens/s")
        self.stream.write(("\r" if self.tty else "") + line + ("\n" if final else ""))
        self.stream.flush()
