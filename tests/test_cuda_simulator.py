"""Run the CUDA kernel tests under numba's CUDA simulator, in their own process.

The simulator replaces numba.cuda when NUMBA_ENABLE_CUDASIM=1 is set before numba is
imported, so these tests cannot share this process. On a machine with a GPU, run
`pytest tests/cudasim` directly (without the variable) to run the same tests natively.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CUDASIM_DIR = Path(__file__).parent / "cudasim"


@pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", reason="already simulating")
def test_cuda_kernels_match_cpu_under_simulator():
    if not any(CUDASIM_DIR.glob("test_*.py")):
        pytest.skip("no CUDA kernel tests yet")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(CUDASIM_DIR)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
    assert result.returncode == 0, f"CUDA simulator tests failed:\n{tail}"
