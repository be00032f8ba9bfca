"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One demo cache (photos, features, codebook, exported model) for the whole session."""
    return tmp_path_factory.mktemp("demo")


@pytest.fixture(scope="session")
def shipped_onnx(demo_cache: Path):
    """``flavor -> ONNX file`` of the shipped checkpoint, exported once per session into the demo
    cache, where ``locore demo --cache-dir`` finds the portable one again (needs torch)."""
    from locore.checkpoint_format import shipped_model_dir
    from locore.export import cached_export

    def export(flavor: str = "portable") -> Path:
        return cached_export(shipped_model_dir(), demo_cache / "models", flavor)

    return export


# ---- lines for the end of the pytest output -------------------------------------------------
_SUMMARY = pytest.StashKey[list[str]]()


@pytest.fixture
def terminal_summary(request: pytest.FixtureRequest):
    """``add(line)``: show ``line`` in a "locore" section at the end of the pytest output,
    whatever the capture settings (e.g. the demo test's LOCORE - RANSAC difference in CI)."""
    config = request.config

    def add(line: str) -> None:
        config.stash.setdefault(_SUMMARY, []).append(line)

    return add


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    lines = config.stash.get(_SUMMARY, [])
    if lines:
        terminalreporter.section("locore")
        for line in lines:
            terminalreporter.write_line(line)
