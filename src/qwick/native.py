"""Building qwick's C++ CPU ops once per process (torch.utils.cpp_extension, cached in ~/.cache/torch_extensions)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def cpu_has_flags(flags: tuple[str, ...]) -> bool:
    """Whether /proc/cpuinfo lists every one of `flags` (False where it cannot be read)."""
    try:
        found = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return all(flag in found for flag in flags)


def build_cpu_ops(name: str, sources: list[Path], cflags: list[str]) -> bool:
    """Compile and load `sources` as one library (they register torch ops); False, with a warning, on failure.
    The headers beside the sources are hashed into the flags: torch's cache key covers sources and flags only, so
    a changed header would otherwise leave a stale build in use."""
    headers = sorted(sources[0].parent.glob("*.h"))  # a library's sources share a folder
    digest = hashlib.sha256(b"".join(h.read_bytes() for h in headers)).hexdigest()[:16]
    try:
        from torch.utils.cpp_extension import load

        # -fopenmp: at::parallel_for is inlined here and needs it to run threads (torch's libgomp is reused)
        load(name=name, sources=[str(s) for s in sources],
             extra_cflags=["-O3", "-fopenmp", *cflags, f"-DQWICK_HEADERS={digest}"],
             extra_ldflags=["-fopenmp"], is_python_module=False)
    except Exception as exc:  # no compiler, no ninja, a failed build: callers fall back to torch's ops
        log.warning("qwick CPU ops %s unavailable, using torch's (%s)", name, exc)
        return False
    return True
