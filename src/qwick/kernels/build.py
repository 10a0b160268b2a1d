"""Building qwick's C++ CPU ops once per process (torch.utils.cpp_extension, cached in ~/.cache/torch_extensions),
and the one switch that turns them all off (`QWICK_KERNELS=torch`)."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
# A build takes ~20-60 s; a lock file older than this was left by a build that was killed (Ctrl-C, OOM), and
# torch's cpp_extension would wait for it forever.
STALE_LOCK_S = 600.0


# The one switch for every native op; the older names each turned one family off, and still do (users set them):
# QWICK_CPU_OPS the attention / norm / bf16 ops (cpu_ops.py), QWICK_CPU_KERNELS the int8 / int4 ones (woq.py).
SWITCH = "QWICK_KERNELS"
FAMILY_SWITCHES = {"cpu_ops": "QWICK_CPU_OPS", "woq": "QWICK_CPU_KERNELS"}


def native_kernels_enabled(family: str) -> bool:
    """False where the user turned the `family` ops ("cpu_ops" or "woq") off with QWICK_KERNELS=torch, or its
    family's older switch; read at every check, so tests and benchmarks can flip it per call."""
    return all(os.environ.get(name, "auto") != "torch" for name in (SWITCH, FAMILY_SWITCHES[family]))


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
    flags = ["-O3", "-fopenmp", *cflags, f"-DQWICK_HEADERS={digest}"]
    try:
        import torch
        from torch.utils.cpp_extension import load

        folder = build_directory(name, sources, flags)
        if _load_built(torch, folder / f"{name}.so"):
            return True
        # -fopenmp: at::parallel_for is inlined here and needs it to run threads (torch's libgomp is reused)
        load(name=name, sources=[str(s) for s in sources], extra_cflags=flags, extra_ldflags=["-fopenmp"],
             is_python_module=False, build_directory=str(folder))
    except Exception as exc:  # no compiler, no ninja, a failed build: callers fall back to torch's ops
        log.warning("qwick CPU ops %s unavailable, using torch's (%s)", name, exc)
        return False
    return True


def _load_built(torch: Any, library: Path) -> bool:
    """Load a finished build of this exact version (the folder name hashes sources, headers, flags and torch's
    version) without running torch's ninja step: that step rebuilds whenever the sources' path differs (another
    checkout of the same version), and costs start-up time even when nothing changed."""
    if not library.exists() or (library.parent / "lock").exists():  # absent, or a build is under way
        return False
    try:
        torch.ops.load_library(str(library))
    except OSError as exc:  # a damaged file: build again
        log.warning("rebuilding %s: it did not load (%s)", library, exc)
        return False
    return True


def _torch_version() -> str:
    import torch

    return str(torch.__version__)


def build_directory(name: str, sources: list[Path], flags: list[str]) -> Path:
    """A folder per library version (sources, headers and flags hashed), so two checkouts or versions of qwick on
    one machine do not rebuild over each other; a stale lock left by a killed build is removed."""
    key = hashlib.sha256()
    for path in [*sources, *sorted(sources[0].parent.glob("*.h"))]:
        key.update(path.read_bytes())
    key.update(" ".join(flags).encode())
    key.update(_torch_version().encode())  # a build links against one torch: another needs its own
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions")
    folder = root / "qwick" / f"{name}-{key.hexdigest()[:16]}"
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / "lock"
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return folder
    if age > STALE_LOCK_S:
        log.warning("removing the stale build lock %s (%.0f s old: a killed build left it)", lock, age)
        lock.unlink(missing_ok=True)
    return folder
