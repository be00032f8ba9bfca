"""A CPU library built before its C++ sources changed is rebuilt, or refused with the command to
rebuild it; never used silently. Runs on a temporary plugins/ tree and build folder (the real
build folder is not touched) with CMake stubbed out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from locore.native import build
from locore.native.build import NativeLibraryError, ensure_current, stale_sources


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """(plugins source folder, built library), the library built at t = 2000, sources at 1000."""
    src = tmp_path / "plugins"
    (src / "selective_scan").mkdir(parents=True)
    (src / "common").mkdir()
    files = [
        src / "CMakeLists.txt",
        src / "selective_scan" / "selectiveScanCore.h",
        src / "selective_scan" / "selectiveScanCpu.cpp",
        src / "common" / "pluginLogger.h",
        src / "selective_scan" / "README.md",  # not a build input
    ]
    for f in files:
        f.write_text("// source\n")
        os.utime(f, (1000, 1000))
    lib = tmp_path / "build" / build.library_filename()
    lib.parent.mkdir()
    lib.write_bytes(b"\x7fELF")
    os.utime(lib, (2000, 2000))
    return src, lib


def _touch(path: Path, when: float) -> None:
    os.utime(path, (when, when))


def test_current_library_is_used_as_is(tree, monkeypatch) -> None:
    src, lib = tree
    monkeypatch.setattr(build, "_rebuild_cpu_library", lambda d: pytest.fail("rebuilt"))
    assert stale_sources(lib, src) == []
    _touch(src / "selective_scan" / "README.md", 3000)  # docs do not make it stale
    assert ensure_current(lib, src) == lib


@pytest.mark.parametrize(
    "changed", ["selective_scan/selectiveScanCore.h", "selective_scan/selectiveScanCpu.cpp",
                "CMakeLists.txt", "common/pluginLogger.h"],
)  # fmt: skip
def test_changed_source_triggers_a_rebuild(tree, monkeypatch, changed: str) -> None:
    src, lib = tree
    _touch(src / changed, 3000)
    assert stale_sources(lib, src) == [src / changed]
    rebuilt: list[Path] = []

    def fake_rebuild(build_dir: Path) -> None:
        rebuilt.append(build_dir)
        _touch(lib, 4000)  # what the build does to the library

    monkeypatch.setattr(build, "_find_cmake", lambda: "/usr/bin/cmake")
    monkeypatch.setattr(build, "_rebuild_cpu_library", fake_rebuild)
    assert ensure_current(lib, src) == lib
    assert rebuilt == [lib.parent]
    assert stale_sources(lib, src) == []


def test_rebuild_that_changes_nothing_marks_the_library_current(tree, monkeypatch) -> None:
    src, lib = tree
    _touch(src / "selective_scan" / "selectiveScanCore.h", 3000)
    calls: list[Path] = []
    monkeypatch.setattr(build, "_find_cmake", lambda: "/usr/bin/cmake")
    monkeypatch.setattr(build, "_rebuild_cpu_library", calls.append)  # CMake: nothing to do
    ensure_current(lib, src)
    ensure_current(lib, src)
    assert len(calls) == 1, "a second load must not rebuild again"


def test_stale_library_without_cmake_is_refused_with_the_command(tree, monkeypatch) -> None:
    src, lib = tree
    _touch(src / "selective_scan" / "selectiveScanCore.h", 3000)
    monkeypatch.setattr(build, "_find_cmake", lambda: None)
    monkeypatch.setattr(build, "_rebuild_cpu_library", lambda d: pytest.fail("rebuilt"))
    with pytest.raises(NativeLibraryError) as info:
        ensure_current(lib, src)
    message = str(info.value)
    assert str(lib) in message and "selectiveScanCore.h" in message
    assert "locore build-plugins" in message and "CMake is not on PATH" in message


def test_stale_library_in_read_only_folder_is_refused(tree, monkeypatch) -> None:
    src, lib = tree
    _touch(src / "CMakeLists.txt", 3000)
    monkeypatch.setattr(build, "_find_cmake", lambda: "/usr/bin/cmake")
    monkeypatch.setattr(build.os, "access", lambda p, mode: False)
    with pytest.raises(NativeLibraryError, match=r"is not writable.*locore build-plugins"):
        ensure_current(lib, src)


def test_real_library_is_current_after_loading(monkeypatch) -> None:
    """The library the scan tests use was (re)built from the sources in this checkout."""
    from test_scan_cpu import _have_toolchain

    from locore import native

    if os.environ.get(build.LIBRARY_ENV):
        pytest.skip(f"{build.LIBRARY_ENV} names the library to use as it is")
    if native.find_cpu_library() is None and not _have_toolchain():
        pytest.skip("the SelectiveScan CPU library is not built and no cmake/C++ compiler exists")
    monkeypatch.setattr(native.binding, "_lib", None)  # load afresh, not the cached one
    native.load_cpu_library()
    path = native.find_cpu_library()
    assert path is not None and stale_sources(path) == []
