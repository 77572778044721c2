"""Shared fixtures. CUDA-simulator tests live in tests/cudasim and run in their own process
(NUMBA_ENABLE_CUDASIM must be set before numba is imported); see test_cuda_simulator.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_ASSETS = REPO.parent / "shared" / "assets"

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    collect_ignore = ["cudasim"]


@pytest.fixture
def shared_assets() -> Path:
    """The sample glTF/VRM files beside the repo; tests using them skip in a bare clone."""
    if not SHARED_ASSETS.is_dir():
        pytest.skip(f"sample assets not found at {SHARED_ASSETS} (../shared is absent)")
    return SHARED_ASSETS
