"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One demo cache (photos, features, codebook, exported model) for the whole session."""
    return tmp_path_factory.mktemp("demo")
