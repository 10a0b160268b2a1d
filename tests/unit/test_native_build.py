"""Native op builds: one folder per library version, and a lock left by a killed build does not hang the next."""

from __future__ import annotations

import os
import time

from qwick.kernels.build import STALE_LOCK_S, build_directory


def _sources(tmp_path, text="int x;"):
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "op.cpp").write_text(text)
    (src / "simd.h").write_text("#pragma once")
    return [src / "op.cpp"]


def test_each_version_gets_its_own_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "cache"))
    sources = _sources(tmp_path)
    first = build_directory("lib", sources, ["-O3"])
    assert first == build_directory("lib", sources, ["-O3"]) and first.is_dir()
    assert build_directory("lib", sources, ["-O2"]) != first  # other flags
    (tmp_path / "src" / "simd.h").write_text("#pragma once\n// changed")
    assert build_directory("lib", sources, ["-O3"]) != first  # a changed header
    assert build_directory("lib", _sources(tmp_path, "int y;"), ["-O3"]) != first  # a changed source


def test_a_stale_lock_is_removed_and_a_fresh_one_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "cache"))
    sources = _sources(tmp_path)
    lock = build_directory("lib", sources, []) / "lock"
    lock.touch()
    build_directory("lib", sources, [])
    assert lock.exists()  # a build may be running right now
    old = time.time() - STALE_LOCK_S - 5
    os.utime(lock, (old, old))
    build_directory("lib", sources, [])
    assert not lock.exists()
