"""Native op builds: one folder per library version, a lock left by a killed build does not hang the next, and
one switch turns every native op off."""

from __future__ import annotations

import os
import time

import pytest

from qwick.kernels.build import STALE_LOCK_S, _load_built, build_directory, native_kernels_enabled


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


@pytest.mark.parametrize(("name", "off"), [("QWICK_KERNELS", {"cpu_ops", "woq"}), ("QWICK_CPU_OPS", {"cpu_ops"}),
                                           ("QWICK_CPU_KERNELS", {"woq"})])
def test_qwick_kernels_turns_every_family_off_the_older_names_their_own(monkeypatch, name, off):
    for switch in ("QWICK_KERNELS", "QWICK_CPU_OPS", "QWICK_CPU_KERNELS"):
        monkeypatch.delenv(switch, raising=False)
    assert native_kernels_enabled("cpu_ops") and native_kernels_enabled("woq")
    monkeypatch.setenv(name, "torch")
    assert {family for family in ("cpu_ops", "woq") if not native_kernels_enabled(family)} == off


def test_a_finished_build_loads_from_another_checkout_without_a_rebuild(tmp_path, monkeypatch):
    """Two checkouts of one version share the build: the second finds the library by the folder's hash of the
    sources' content (torch's own step would rebuild it, its command naming another path)."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "cache"))
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    folder = build_directory("lib", _sources(one), ["-O3"])
    assert folder == build_directory("lib", _sources(two), ["-O3"])
    loaded = []
    fake_torch = type("T", (), {"ops": type("O", (), {"load_library": staticmethod(loaded.append)})})
    assert not _load_built(fake_torch, folder / "lib.so")  # not built yet
    (folder / "lib.so").write_bytes(b"")
    (folder / "lock").touch()
    assert not _load_built(fake_torch, folder / "lib.so")  # a build is under way
    (folder / "lock").unlink()
    assert _load_built(fake_torch, folder / "lib.so") and loaded == [str(folder / "lib.so")]
