"""CUDA kernel tests: run under NUMBA_ENABLE_CUDASIM=1 in their own process, or natively."""
