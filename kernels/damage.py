"""Damage: the part of each session's avatar layer that can differ from its last frame.

A live host mostly moves the head and face while the body stays still, and a pixel whose
surroundings did not move renders to the same bytes as last frame. Per session, after
deform, every vertex is compared (clip position and world normal) with the copy kept from
the slot's previous frame (`hist` [H,8] f32 at row `s_hbase`: clip xyzw, normal xyz, one
spare); the union of the pixel bounding boxes of every triangle with a moved vertex, at its
old and its new position, is the region where visibility can change (D). Pixels are then
redone only in

    shade rect  S = D widened by SHADE_MARGIN (an edge pixel reads the visibility up to 2.5
                px away: silhouette probes, empty neighbours) and to whole 2x2 frame blocks
                (NV12 chroma), clipped to the layer; written to `s_dirty` (layer pixels)
    composite   the same rect in frame pixels, written to `s_rect`
    raster      S widened by raster.RASTER_MARGIN (what shade reads around S)

and the frame keeps its previous pixels elsewhere, so an incremental frame is
bit-identical to a full redraw. A session with `s_full[s]` set (no history yet, a new
scene, a video background) gets the whole layer and keeps the `s_rect` the host chose.
A moved triangle with a vertex at w <= 0 (behind the camera) marks the whole layer.
The history is then updated from this frame.

Launchers (identical arguments; the CUDA one adds `stream=0`)::

    damage_cpu(clip, wnrm, hist, moved, tris, s_tbase, s_tcount, s_obase, s_vcount, s_hbase,
               s_full, s_lx, s_ly, s_lw, s_lh, n, s_dirty, s_rect, box)

`moved` [V] u8 and `box` [N,4] i32 are scratch (box ends up holding the moved region's
bounds in layer pixels, before the margins).

The box of a triangle is the box of its vertices, so the bounds are gathered per vertex:
every vertex of a triangle with a moved vertex, at its old and its new position (one
projection each, not one per triangle corner). CPU: parallel over sessions. CUDA: four
launches (vertices, triangles, vertices, sessions), the bounds gathered with atomics.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
from numba import get_num_threads, prange

from .backend import (
    claim_counters,
    claim_item,
    cpu_device,
    cpu_kernel,
    cuda_device,
    cuda_grid_x,
    cuda_module,
    start_claims,
)

SHADE_MARGIN = 3
"""Pixels around the moved region whose shading can change (edge probes reach 2.5 px)."""
W_EPSILON = 1e-6
FULL = 1 << 30
"""A bound that, once clipped to the layer, covers all of it."""
MOVED = 1
"""`moved` bit: the vertex differs from last frame."""
TOUCHED = 2
"""`moved` bit: the vertex belongs to a triangle with a moved vertex (its box counts)."""
CUDA_BLOCK = 128

cuda: Any = None  # numba.cuda, bound on first CUDA use


def make_damage_math(jit):
    """Per-vertex and per-session damage math, compiled with `jit`."""

    @jit
    def vertex_moved(clip, wnrm, hist, o, h):
        """Whether vertex o of this frame differs from its history row h."""
        return (
            clip[o, 0] != hist[h, 0]
            or clip[o, 1] != hist[h, 1]
            or clip[o, 2] != hist[h, 2]
            or clip[o, 3] != hist[h, 3]
            or wnrm[o, 0] != hist[h, 4]
            or wnrm[o, 1] != hist[h, 5]
            or wnrm[o, 2] != hist[h, 6]
        )

    @jit
    def keep(clip, wnrm, hist, o, h):
        """Copy vertex o of this frame into history row h."""
        for c in range(4):
            hist[h, c] = clip[o, c]
        for c in range(3):
            hist[h, 4 + c] = wnrm[o, c]

    @jit
    def pixel_box(pos, v, lw, lh):
        """Pixel bounds (x0, y0, x1, y1) around vertex v of `pos` (clip space in columns
        0-3), one pixel beyond on each side; a box covering any layer at w <= 0."""
        w = pos[v, 3]
        if not w > W_EPSILON:
            return -FULL, -FULL, FULL, FULL
        px = (pos[v, 0] / w * 0.5 + 0.5) * lw
        py = (0.5 - pos[v, 1] / w * 0.5) * lh
        if not (abs(px) < FULL and abs(py) < FULL):  # also NaN
            return -FULL, -FULL, FULL, FULL
        return (
            int(math.floor(px)) - 1, int(math.floor(py)) - 1,
            int(math.ceil(px)) + 1, int(math.ceil(py)) + 1,
        )  # fmt: skip

    @jit
    def finish(bx0, by0, bx1, by1, lx, ly, lw, lh):
        """Shade rect in layer pixels and composite rect in frame pixels from the moved
        region's bounds; empty (0, 0, 0, 0) rects when nothing moved."""
        if bx0 >= bx1 or by0 >= by1:
            return 0, 0, 0, 0, 0, 0, 0, 0
        x0 = max(bx0 - SHADE_MARGIN, 0) + lx
        y0 = max(by0 - SHADE_MARGIN, 0) + ly
        x1 = min(bx1 + SHADE_MARGIN, lw) + lx
        y1 = min(by1 + SHADE_MARGIN, lh) + ly
        # whole 2x2 frame blocks, then back inside the layer
        x0 = max(x0 - x0 % 2, lx)
        y0 = max(y0 - y0 % 2, ly)
        x1 = min(x1 + x1 % 2, lx + lw)
        y1 = min(y1 + y1 % 2, ly + lh)
        if x0 >= x1 or y0 >= y1:
            return 0, 0, 0, 0, 0, 0, 0, 0
        return x0 - lx, y0 - ly, x1 - lx, y1 - ly, x0, y0, x1, y1

    return vertex_moved, keep, pixel_box, finish


_vertex_moved, _keep, _pixel_box, _finish = make_damage_math(cpu_device)


@cpu_kernel()
def _damage_cpu_kernel(
    clip, wnrm, hist, moved, tris, s_tbase, s_tcount, s_obase, s_vcount,
    s_hbase, s_full, s_lx, s_ly, s_lw, s_lh, n, s_dirty, s_rect, box, claims, workers,
):  # fmt: skip
    """Sessions, claimed by the threads (kernels/backend.py)."""
    start_claims(claims, workers, n)
    for w in prange(workers):
        done = 0
        while True:
            s, done = claim_item(claims, w, workers, n, done)
            if s < 0:
                break
            o = s_obase[s]
            h = s_hbase[s]
            count = s_vcount[s]
            lw = s_lw[s]
            lh = s_lh[s]
            if s_full[s]:
                s_dirty[s, 0] = 0
                s_dirty[s, 1] = 0
                s_dirty[s, 2] = lw
                s_dirty[s, 3] = lh
            else:
                for v in range(count):
                    moved[o + v] = MOVED if _vertex_moved(clip, wnrm, hist, o + v, h + v) else 0
                g0 = s_tbase[s]
                for g in range(g0, g0 + s_tcount[s]):
                    a = o + tris[g, 0]
                    b = o + tris[g, 1]
                    c = o + tris[g, 2]
                    if (moved[a] | moved[b] | moved[c]) & MOVED:
                        moved[a] |= TOUCHED
                        moved[b] |= TOUCHED
                        moved[c] |= TOUCHED
                bx0, by0, bx1, by1 = FULL, FULL, -FULL, -FULL
                for v in range(count):
                    if moved[o + v] & TOUCHED:  # this vertex now and last frame
                        x0, y0, x1, y1 = _pixel_box(clip, o + v, lw, lh)
                        u0, v0, u1, v1 = _pixel_box(hist, h + v, lw, lh)
                        bx0, by0 = min(bx0, x0, u0), min(by0, y0, v0)
                        bx1, by1 = max(bx1, x1, u1), max(by1, y1, v1)
                box[s, 0], box[s, 1], box[s, 2], box[s, 3] = bx0, by0, bx1, by1
                r = _finish(bx0, by0, bx1, by1, s_lx[s], s_ly[s], lw, lh)
                for k in range(4):
                    s_dirty[s, k] = r[k]
                    s_rect[s, k] = r[4 + k]
            for v in range(count):
                _keep(clip, wnrm, hist, o + v, h + v)


def damage_cpu(
    clip: np.ndarray, wnrm: np.ndarray, hist: np.ndarray, moved: np.ndarray,
    tris: np.ndarray, s_tbase: np.ndarray, s_tcount: np.ndarray,
    s_obase: np.ndarray, s_vcount: np.ndarray, s_hbase: np.ndarray, s_full: np.ndarray,
    s_lx: np.ndarray, s_ly: np.ndarray, s_lw: np.ndarray, s_lh: np.ndarray, n: int,
    s_dirty: np.ndarray, s_rect: np.ndarray, box: np.ndarray,
) -> None:  # fmt: skip
    """Fill s_dirty [N,4] (layer) and, for sessions without s_full, s_rect [N,4] (frame)
    for sessions 0..n-1, then store this frame's vertices as their history."""
    if n <= 0:
        return
    _damage_cpu_kernel(
        clip, wnrm, hist, moved, tris, s_tbase, s_tcount, s_obase, s_vcount,
        s_hbase, s_full, s_lx, s_ly, s_lw, s_lh, np.int64(n), s_dirty, s_rect, box,
        claim_counters(), get_num_threads(),
    )  # fmt: skip


@functools.cache
def _cuda_kernels():
    """Compile the CUDA kernels on first use (`cuda` is a module global for the simulator)."""
    global cuda
    cuda = cuda_module()
    vertex_moved, keep, pixel_box, finish = make_damage_math(cuda_device())

    @cuda.jit
    def flag_kernel(clip, wnrm, hist, moved, s_obase, s_vcount, s_hbase, box):
        s = cuda.blockIdx.y
        o = s_obase[s]
        h = s_hbase[s]
        start = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        if start == 0:
            box[s, 0] = FULL
            box[s, 1] = FULL
            box[s, 2] = -FULL
            box[s, 3] = -FULL
        for v in range(start, s_vcount[s], cuda.gridDim.x * cuda.blockDim.x):
            moved[o + v] = MOVED if vertex_moved(clip, wnrm, hist, o + v, h + v) else 0

    @cuda.jit
    def spread_kernel(moved, tris, s_tbase, s_tcount, s_obase, s_full):
        s = cuda.blockIdx.y
        if s_full[s]:
            return
        o = s_obase[s]
        start = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        for t in range(start, s_tcount[s], cuda.gridDim.x * cuda.blockDim.x):
            g = s_tbase[s] + t
            a = o + tris[g, 0]
            b = o + tris[g, 1]
            c = o + tris[g, 2]
            if (moved[a] | moved[b] | moved[c]) & MOVED:
                # racing writers all store MOVED-bit-as-read | TOUCHED: the same byte
                moved[a] = moved[a] | TOUCHED
                moved[b] = moved[b] | TOUCHED
                moved[c] = moved[c] | TOUCHED

    @cuda.jit
    def bounds_kernel(clip, wnrm, hist, moved, s_obase, s_vcount, s_hbase, s_full, s_lw,
                      s_lh, box):  # fmt: skip
        s = cuda.blockIdx.y
        o = s_obase[s]
        h = s_hbase[s]
        lw = s_lw[s]
        lh = s_lh[s]
        start = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        for v in range(start, s_vcount[s], cuda.gridDim.x * cuda.blockDim.x):
            if not s_full[s] and moved[o + v] & TOUCHED:
                x0, y0, x1, y1 = pixel_box(clip, o + v, lw, lh)
                u0, v0, u1, v1 = pixel_box(hist, h + v, lw, lh)
                cuda.atomic.min(box, (s, 0), min(x0, u0))
                cuda.atomic.min(box, (s, 1), min(y0, v0))
                cuda.atomic.max(box, (s, 2), max(x1, u1))
                cuda.atomic.max(box, (s, 3), max(y1, v1))
            keep(clip, wnrm, hist, o + v, h + v)

    @cuda.jit
    def finish_kernel(n, s_full, s_lx, s_ly, s_lw, s_lh, box, s_dirty, s_rect):
        s = cuda.grid(1)
        if s >= n:
            return
        if s_full[s]:
            s_dirty[s, 0] = 0
            s_dirty[s, 1] = 0
            s_dirty[s, 2] = s_lw[s]
            s_dirty[s, 3] = s_lh[s]
            return
        r = finish(box[s, 0], box[s, 1], box[s, 2], box[s, 3], s_lx[s], s_ly[s], s_lw[s],
                   s_lh[s])  # fmt: skip
        for k in range(4):
            s_dirty[s, k] = r[k]
            s_rect[s, k] = r[4 + k]

    return flag_kernel, spread_kernel, bounds_kernel, finish_kernel


def damage_cuda(
    clip, wnrm, hist, moved, tris, s_tbase, s_tcount, s_obase, s_vcount,
    s_hbase, s_full, s_lx, s_ly, s_lw, s_lh, n, s_dirty, s_rect, box, stream=0,
) -> None:  # fmt: skip
    """CUDA twin of `damage_cpu` (device arrays): four launches (vertices, triangles,
    vertices, sessions), grid (items, sessions)."""
    if n <= 0:
        return
    flag_kernel, spread_kernel, bounds_kernel, finish_kernel = _cuda_kernels()
    grid_v = (cuda_grid_x(int(clip.shape[0]), int(n), CUDA_BLOCK), int(n))
    grid_t = (cuda_grid_x(int(tris.shape[0]), int(n), CUDA_BLOCK), int(n))
    flag_kernel[grid_v, CUDA_BLOCK, stream](
        clip, wnrm, hist, moved, s_obase, s_vcount, s_hbase, box
    )
    spread_kernel[grid_t, CUDA_BLOCK, stream](moved, tris, s_tbase, s_tcount, s_obase, s_full)
    bounds_kernel[grid_v, CUDA_BLOCK, stream](
        clip, wnrm, hist, moved, s_obase, s_vcount, s_hbase, s_full, s_lw, s_lh, box
    )
    finish_kernel[(int(n) + CUDA_BLOCK - 1) // CUDA_BLOCK, CUDA_BLOCK, stream](
        n, s_full, s_lx, s_ly, s_lw, s_lh, box, s_dirty, s_rect
    )


def full_layers(s_lw, s_lh, n_sessions: int) -> np.ndarray:
    """An `s_dirty` covering each whole layer (host): for callers without damage tracking."""
    rect = np.zeros((max(n_sessions, 1), 4), np.int32)
    rect[:n_sessions, 2] = np.asarray(s_lw)[:n_sessions]
    rect[:n_sessions, 3] = np.asarray(s_lh)[:n_sessions]
    return rect


def full_layers_device(s_lw, s_lh, n_sessions: int):
    """`full_layers` on the device, from host or device session rows."""
    host = lambda a: a if isinstance(a, np.ndarray) else a.copy_to_host()  # noqa: E731
    return cuda_module().to_device(full_layers(host(s_lw), host(s_lh), n_sessions))
