"""Timing helpers shared by the benchmark scripts (run as scripts, so this folder is on sys.path)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def best_seconds(fn: Callable[[], Any], reps: int) -> float:
    """The fastest of `reps` timed calls after one warm-up call: the least disturbed by other load."""
    fn()
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best
