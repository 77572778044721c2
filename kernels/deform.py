"""Stage 1, deform: morph targets, linear-blend skinning and projection for the whole batch.

Per (session s, vertex v of its avatar), with g = s_vbase[s] + v the pool row::

    p = base_pos[g] + sum_k w[s, morph_target[k]] * morph_dpos[k]     k in the CSR row of g
    n = base_nrm[g] + sum_k w[s, morph_target[k]] * morph_dnrm[k]     (zero weights skipped)
    p' = sum_i skin_weight[g,i] * (M_i[:, :3] @ p + M_i[:, 3])       M_i = s_palette[s, slot]
    n' = normalize(sum_i skin_weight[g,i] * M_i[:, :3] @ n)
    clip_out[s_obase[s] + v] = s_viewproj[s] @ [p', 1]
    wnrm_out[s_obase[s] + v] = n'

A vertex whose skin weights are all zero is left unskinned (rest pose) rather than collapsed
to the origin. The per-vertex math is written once (`make_deform_math`) and compiled for
both targets; the launchers only differ in how they cover (session, vertex).

Both launchers take the same arguments, in this order (see kernels/__init__.py)::

    base_pos, base_nrm, morph_offsets, morph_target, morph_dpos, morph_dnrm,
    skin_slot, skin_weight, s_vbase, s_vcount, s_obase, s_weights, s_palette, s_viewproj,
    n_sessions, clip_out, wnrm_out

(`deform_cuda` adds `stream=0`). Arrays are host numpy arrays for the CPU and device arrays
for CUDA. Only rows `0..n_sessions-1` of the session arrays are read.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numba
import numpy as np

from .backend import cpu_device, cpu_kernel, cuda_device, cuda_grid_x, cuda_module

cuda: Any = None  # numba.cuda, bound on first CUDA use

CPU_CHUNK = 2048
"""Vertices per CPU work item: small enough that one session keeps every core busy."""

CUDA_BLOCK = 128


def make_deform_math(jit):
    """The per-vertex math, compiled with `jit` (cpu_device or cuda_device())."""

    @jit
    def deform_vertex(
        s,
        v,
        base_pos,
        base_nrm,
        morph_offsets,
        morph_target,
        morph_dpos,
        morph_dnrm,
        skin_slot,
        skin_weight,
        s_vbase,
        s_obase,
        s_weights,
        s_palette,
        s_viewproj,
        clip_out,
        wnrm_out,
    ):
        g = s_vbase[s] + v
        px = base_pos[g, 0]
        py = base_pos[g, 1]
        pz = base_pos[g, 2]
        nx = base_nrm[g, 0]
        ny = base_nrm[g, 1]
        nz = base_nrm[g, 2]
        for k in range(morph_offsets[g], morph_offsets[g + 1]):
            w = s_weights[s, morph_target[k]]
            if w != 0:
                px += w * morph_dpos[k, 0]
                py += w * morph_dpos[k, 1]
                pz += w * morph_dpos[k, 2]
                nx += w * morph_dnrm[k, 0]
                ny += w * morph_dnrm[k, 1]
                nz += w * morph_dnrm[k, 2]

        zero = np.float32(0.0)
        qx = zero
        qy = zero
        qz = zero
        mx = zero
        my = zero
        mz = zero
        total = zero
        for i in range(4):
            sw = skin_weight[g, i]
            if sw != 0:
                j = skin_slot[g, i]
                total += sw
                qx += sw * (
                    s_palette[s, j, 0, 0] * px
                    + s_palette[s, j, 0, 1] * py
                    + s_palette[s, j, 0, 2] * pz
                    + s_palette[s, j, 0, 3]
                )
                qy += sw * (
                    s_palette[s, j, 1, 0] * px
                    + s_palette[s, j, 1, 1] * py
                    + s_palette[s, j, 1, 2] * pz
                    + s_palette[s, j, 1, 3]
                )
                qz += sw * (
                    s_palette[s, j, 2, 0] * px
                    + s_palette[s, j, 2, 1] * py
                    + s_palette[s, j, 2, 2] * pz
                    + s_palette[s, j, 2, 3]
                )
                mx += sw * (
                    s_palette[s, j, 0, 0] * nx
                    + s_palette[s, j, 0, 1] * ny
                    + s_palette[s, j, 0, 2] * nz
                )
                my += sw * (
                    s_palette[s, j, 1, 0] * nx
                    + s_palette[s, j, 1, 1] * ny
                    + s_palette[s, j, 1, 2] * nz
                )
                mz += sw * (
                    s_palette[s, j, 2, 0] * nx
                    + s_palette[s, j, 2, 1] * ny
                    + s_palette[s, j, 2, 2] * nz
                )
        if total == 0:  # unskinned vertex: keep the rest pose instead of collapsing it
            qx = px
            qy = py
            qz = pz
            mx = nx
            my = ny
            mz = nz

        length2 = mx * mx + my * my + mz * mz
        if length2 > 0:
            inv = np.float32(1.0) / np.float32(math.sqrt(length2))
            mx *= inv
            my *= inv
            mz *= inv

        o = s_obase[s] + v
        for r in range(4):
            clip_out[o, r] = (
                s_viewproj[s, r, 0] * qx
                + s_viewproj[s, r, 1] * qy
                + s_viewproj[s, r, 2] * qz
                + s_viewproj[s, r, 3]
            )
        wnrm_out[o, 0] = mx
        wnrm_out[o, 1] = my
        wnrm_out[o, 2] = mz

    return deform_vertex


_deform_vertex_cpu = make_deform_math(cpu_device)


@cpu_kernel()
def _deform_cpu_kernel(
    base_pos,
    base_nrm,
    morph_offsets,
    morph_target,
    morph_dpos,
    morph_dnrm,
    skin_slot,
    skin_weight,
    s_vbase,
    s_vcount,
    s_obase,
    s_weights,
    s_palette,
    s_viewproj,
    n_sessions,
    clip_out,
    wnrm_out,
):
    max_v = 0
    for s in range(n_sessions):
        max_v = max(max_v, s_vcount[s])
    n_chunks = (max_v + CPU_CHUNK - 1) // CPU_CHUNK
    # A plain prange, not claimed items (kernels/backend.py): in the claim loop, inlined or
    # called, this vertex loop compiled 7-9 % slower (one thread, 1.74-1.78 against 1.62 ms
    # per batch-4 call), and deform is ~7 % of a frame.
    for item in numba.prange(n_sessions * n_chunks):
        s = item // n_chunks
        v0 = (item % n_chunks) * CPU_CHUNK
        v1 = min(v0 + CPU_CHUNK, s_vcount[s])
        for v in range(v0, v1):
            _deform_vertex_cpu(
                s,
                v,
                base_pos,
                base_nrm,
                morph_offsets,
                morph_target,
                morph_dpos,
                morph_dnrm,
                skin_slot,
                skin_weight,
                s_vbase,
                s_obase,
                s_weights,
                s_palette,
                s_viewproj,
                clip_out,
                wnrm_out,
            )


def deform_cpu(
    base_pos: np.ndarray,
    base_nrm: np.ndarray,
    morph_offsets: np.ndarray,
    morph_target: np.ndarray,
    morph_dpos: np.ndarray,
    morph_dnrm: np.ndarray,
    skin_slot: np.ndarray,
    skin_weight: np.ndarray,
    s_vbase: np.ndarray,
    s_vcount: np.ndarray,
    s_obase: np.ndarray,
    s_weights: np.ndarray,
    s_palette: np.ndarray,
    s_viewproj: np.ndarray,
    n_sessions: int,
    clip_out: np.ndarray,
    wnrm_out: np.ndarray,
) -> None:
    """Deform and project every vertex of sessions 0..n_sessions-1 into clip_out/wnrm_out."""
    if n_sessions <= 0:
        return
    _deform_cpu_kernel(
        base_pos,
        base_nrm,
        morph_offsets,
        morph_target,
        morph_dpos,
        morph_dnrm,
        skin_slot,
        skin_weight,
        s_vbase,
        s_vcount,
        s_obase,
        s_weights,
        s_palette,
        s_viewproj,
        np.int64(n_sessions),
        clip_out,
        wnrm_out,
    )


@functools.cache
def _cuda_kernel() -> Any:
    global cuda  # a module global: the simulator swaps `cuda` only in kernel globals
    cuda = cuda_module()
    deform_vertex = make_deform_math(cuda_device())

    @cuda.jit
    def deform_kernel(
        base_pos,
        base_nrm,
        morph_offsets,
        morph_target,
        morph_dpos,
        morph_dnrm,
        skin_slot,
        skin_weight,
        s_vbase,
        s_vcount,
        s_obase,
        s_weights,
        s_palette,
        s_viewproj,
        clip_out,
        wnrm_out,
    ):
        s = cuda.blockIdx.y
        count = s_vcount[s]
        stride = cuda.gridDim.x * cuda.blockDim.x
        for v in range(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x, count, stride):
            deform_vertex(
                s,
                v,
                base_pos,
                base_nrm,
                morph_offsets,
                morph_target,
                morph_dpos,
                morph_dnrm,
                skin_slot,
                skin_weight,
                s_vbase,
                s_obase,
                s_weights,
                s_palette,
                s_viewproj,
                clip_out,
                wnrm_out,
            )

    return deform_kernel


def deform_cuda(
    base_pos: Any,
    base_nrm: Any,
    morph_offsets: Any,
    morph_target: Any,
    morph_dpos: Any,
    morph_dnrm: Any,
    skin_slot: Any,
    skin_weight: Any,
    s_vbase: Any,
    s_vcount: Any,
    s_obase: Any,
    s_weights: Any,
    s_palette: Any,
    s_viewproj: Any,
    n_sessions: int,
    clip_out: Any,
    wnrm_out: Any,
    stream: Any = 0,
) -> None:
    """CUDA twin of `deform_cpu`: one launch, grid (vertex blocks, sessions).

    The pool size bounds every session's vertex count, so no device-to-host read is needed
    to size the grid; threads stride over the vertices the grid does not cover.
    """
    if n_sessions <= 0:
        return
    grid = (cuda_grid_x(int(base_pos.shape[0]), n_sessions, CUDA_BLOCK), int(n_sessions))
    _cuda_kernel()[grid, CUDA_BLOCK, stream](
        base_pos,
        base_nrm,
        morph_offsets,
        morph_target,
        morph_dpos,
        morph_dnrm,
        skin_slot,
        skin_weight,
        s_vbase,
        s_vcount,
        s_obase,
        s_weights,
        s_palette,
        s_viewproj,
        clip_out,
        wnrm_out,
    )
