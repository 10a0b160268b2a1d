"""Timing helpers shared by the benchmark scripts (run as scripts, so this folder is on sys.path)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def best_seconds(fn: Callable[[], Any], reps: int, sync: Callable[[], Any] | None = None) -> float:
    """The fastest of `reps` timed calls after one warm-up call: the least disturbed by other load.
    `sync` (e.g. torch.cuda.synchronize) runs before each clock read, so queued GPU work is counted."""
    wait = sync or (lambda: None)
    fn()
    wait()
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        wait()
        best = min(best, time.perf_counter() - start)
    return best
