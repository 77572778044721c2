"""Backend choice and the "math written once" pattern.

Per-vertex and per-pixel math lives in factories that take a decorator::

    def make_math(jit):
        @jit
        def edge(ax, ay, bx, by, px, py):
            return (bx - ax) * (py - ay) - (by - ay) * (px - ax)
        return edge

    cpu_edge = make_math(cpu_device)      # numba njit, inlined into the CPU kernels
    gpu_edge = make_math(cuda_device())   # numba.cuda device function

so the CPU launcher (njit parallel) and the CUDA launcher (cuda.jit) call the same code.
numba.cuda is imported lazily: a CPU-only install needs no CUDA packages.
"""

from __future__ import annotations

import functools
import os
import threading
from typing import Literal

import numba
import numpy as np
from numba.core import cgutils, types
from numba.extending import intrinsic

Backend = Literal["cpu", "cuda"]

cpu_device = numba.njit(inline="always", cache=True, nogil=True, fastmath=False)
"""Decorator for shared math compiled into CPU kernels."""

cpu_rare = numba.njit(cache=True, nogil=True, error_model="numpy", _nrt=False)
"""Decorator for shared math that a CPU kernel's hot loop calls only rarely (silhouette
pixels, say): a real call keeps its code out of the loop, where inlined it costs the
common path registers (measured: 0.4 of 2.6 ms per avatar-frame in shade)."""

cpu_kernel = functools.partial(numba.njit, parallel=True, nogil=True, cache=True)
"""Decorator factory for CPU launchers: `@cpu_kernel()`."""


@intrinsic
def _fetch_add_one(typingctx, counters, slot):
    """`counters[slot] += 1` atomically, returning the old value."""
    if not (isinstance(counters, types.Array) and counters.dtype == types.int64):
        return None
    sig = types.int64(counters, slot)

    def codegen(context, builder, sig, args):
        aryty = sig.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]])
        one = context.get_constant(types.int64, 1)
        return builder.atomic_rmw("add", ptr, one, "monotonic")

    return sig, codegen


@cpu_device
def start_claims(claims, workers, n_items):
    """Give worker w the items [w * n / workers, (w + 1) * n / workers) to claim first."""
    for w in range(workers):
        claims[w] = w * n_items // workers


@cpu_device
def claim_item(claims, worker, workers, n_items, done):
    """-> (item, done): worker's next item, or -1 when none is left anywhere.

    numba's `prange` gives each thread one fixed slice, so a thread the OS descheduled (an
    encoder, an HTTP request, another process) holds up the whole stage while the others
    wait at its barrier. The damage, raster, shade and composite launchers run
    `prange(workers)` instead: each worker takes its own slice in order (neighbouring
    items share caches) and then helps the others, one atomic claim per item::

        start_claims(claims, workers, n_items)
        for w in prange(workers):
            done = 0
            while True:
                item, done = claim_item(claims, w, workers, n_items, done)
                if item < 0:
                    break
                ...

    `done` is how many slices the worker has finished (start it at 0)."""
    while done < workers:
        v = (worker + done) % workers
        item = _fetch_add_one(claims, v)
        if item < (v + 1) * n_items // workers:
            return item, done
        done += 1
    return -1, done


_claims = threading.local()


def claim_counters() -> np.ndarray:
    """This thread's claim counters (one per worker; made once per launching thread, so
    two renderers on two threads never share them)."""
    counters = getattr(_claims, "counters", None)
    if counters is None or counters.shape[0] < numba.get_num_threads():
        counters = _claims.counters = np.zeros(max(64, numba.get_num_threads()), np.int64)
    return counters


CUDA_TARGET_BLOCKS = 2048
"""Blocks a (work, session) grid aims for; threads stride over the rest of the work."""


def cuda_grid_x(bound: int, n_sessions: int, block: int) -> int:
    """Blocks along x for a (work, session) grid: enough to cover `bound` items of one
    session, but no more than the batch needs to fill the GPU (threads stride beyond)."""
    need = max(1, -(-bound // block))
    return max(1, min(need, CUDA_TARGET_BLOCKS // max(1, n_sessions)))


def simulator_enabled() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"


@functools.cache
def cuda_module():
    """numba.cuda, imported on first use (raises ImportError without numba-cuda)."""
    from numba import cuda

    return cuda


def cuda_device():
    """Decorator for shared math compiled into CUDA kernels."""
    return cuda_module().jit(device=True, inline=True)


@functools.cache
def cuda_available() -> bool:
    """True when CUDA kernels can run: a real GPU, or numba's simulator when enabled."""
    try:
        cuda = cuda_module()
    except Exception:  # no numba-cuda, or a broken driver install
        return False
    try:
        return bool(cuda.is_available())
    except Exception:
        return False


def resolve_backend(device: str) -> Backend:
    """Map the user's `auto | cpu | cuda` to the backend that will run."""
    if device == "cpu":
        return "cpu"
    if device == "cuda":
        if not cuda_available():
            raise RuntimeError("--device cuda was requested but numba sees no CUDA GPU")
        return "cuda"
    if device == "auto":
        return "cuda" if cuda_available() and not simulator_enabled() else "cpu"
    raise ValueError(f"unknown device {device!r}: expected auto, cpu or cuda")
