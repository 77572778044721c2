"""Stage 2, raster: per-session 64-bit visibility buffers (depth | triangle id).

Conventions (on top of kernels/__init__.py):

- Depth is z_ndc * 0.5 + 0.5 interpolated linearly in screen space (z_ndc is affine in
  screen space), stored as its float32 bits in the high word; fragments with depth > 1
  (z > w, beyond the far plane) are dropped per pixel. The low word is the triangle id
  local to the avatar, plus one. Empty is 0xFFFFFFFFFFFFFFFF.
- Viewport: x_pix = (x_ndc * 0.5 + 0.5) * lw, y_pix = (0.5 - y_ndc * 0.5) * lh (y down);
  pixel (x, y) is sampled at its centre (x + 0.5, y + 0.5).
- Vertices are snapped to 1/256 pixel (8 sub-pixel bits); edge functions are exact int64,
  with the top-left fill rule, so triangles sharing an edge neither crack nor overlap.
- Front faces are counter-clockwise in NDC with y up (OpenGL); in layer pixels (y down)
  that is a negative signed area. Back faces are culled unless mat_double_sided.
- Near plane: triangles are clipped in homogeneous space against z >= -w into one or two
  triangles that keep the ORIGINAL triangle id, so clipping only changes coverage; shade
  interpolates with the original triangle's vertices. A new vertex on a clipped edge is
  always computed from the inside endpoint towards the outside one, so the two triangles
  sharing that edge get bit-identical points (no crack at the near plane).
- Guard band: a (clipped) triangle with a vertex further than GUARD_PIXELS from the layer
  is dropped (it could only arise from geometry grazing the near plane at a distance of
  millions of pixels; int64 edge functions stay exact within the band).
- Two layers: `vis_opaque` holds the nearest OPAQUE triangle; `vis_blend` the nearest
  MASK/BLEND triangle strictly in front of the opaque depth at that pixel. The opaque pass
  runs first, the blend pass is depth-tested against its result.

Launchers (identical arguments; CUDA ones add `stream=0`)::

    clear_vis_cpu(s_lw, s_lh, s_lbase, n_sessions, vis_opaque, vis_blend)
    raster_cpu(clip, tris, tri_mat, mat_alpha_mode, mat_double_sided,
               s_tbase, s_tcount, s_obase, s_lw, s_lh, s_lbase, n_sessions,
               vis_opaque, vis_blend, clear=True)

`raster_*` clears each session's layer region first (clear=True) and runs both passes (the
CPU one skips the blend pass when no material is MASK/BLEND). The
CPU kernel first snaps every session's vertices to fixed point once (a vertex is shared by
~6 triangles; scratch allocated per call), then runs parallel over (session, row band) work
items with no atomics: each item clears its rows, then rasterizes every triangle of its
session clipped to its band, first the opaque pass then the blend pass (both passes for one
pixel happen in the same item). The pixel loop is branch-free (an uncovered pixel stores the
empty word, a no-op under the minimum): narrow triangles walk their bounding box, wide ones
only each row's exact span (int64 divisions of the edge functions).
The CUDA kernels run one thread per (session, triangle), 2D grid, with 64-bit atomic min:
clear, opaque pass, blend pass, as three launches on the same stream.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numba
import numpy as np

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
from .damage import full_layers, full_layers_device

cuda: Any = None  # numba.cuda, bound on first CUDA use

EMPTY = np.uint64(0xFFFFFFFFFFFFFFFF)
SUBPIXEL_BITS = 8
GUARD_PIXELS = 1 << 21
"""Triangles reaching beyond this are dropped: with 8 sub-pixel bits, coordinate differences
stay below 2^30 and edge functions (two products) below 2^61, exact in int64."""
W_EPSILON = 1e-6
MIN_BAND_ROWS = 16
RASTER_MARGIN = 3
"""Pixels around a session's shade rect that raster also redoes (shade reads the visibility
up to 2.5 px around a pixel); kernels/damage.py sizes the rect."""
SNAP_INVALID = np.int32(-(1 << 31))
"""fxy's x for a vertex that cannot be rasterized (|x| < 2^29 for every other one)."""
SNAP_CHUNK = 4096
SPAN_MIN_PIXELS = 16
"""Rows of a bounding box at least this wide walk only their exact span (two divisions per
edge and row cost less than the pixels they skip); narrower rows are walked whole."""
CUDA_BLOCK = 128


def make_raster_math(jit, store, jit_sub=None):
    """The per-triangle raster math, compiled with `jit`; `store(buf, i, word)` keeps the
    minimum of buf[i] and word (a plain compare on the CPU, an atomic min on CUDA).

    `jit_sub` compiles the pixel loop (`raster_fixed`, on snapped vertices) for the 6 call
    sites of near-plane-clipped triangles: on the CPU an ordinary call (see `_cpu_function`).
    Unclipped triangles, nearly all of them, use a copy compiled with `jit` (inlined: the
    call passed ~40 words and cost as much as a small triangle's pixels).
    Returns (band_planes, raster_tri, raster_tri_snapped, snap_vertices):
    both raster functions take the same arguments and differ only in unclipped triangles:
    CUDA uses raster_tri (each thread projects its triangle's vertices; fxy, fz unused);
    the CPU kernel snaps each vertex once (snap_vertices) and uses raster_tri_snapped."""

    @jit
    def snap_vertex(x, y, z, w, lw, lh):
        """A clip-space vertex in the layer's fixed point: (X, Y) in 1/256 pixel, the depth
        z_ndc * 0.5 + 0.5, and whether it can be rasterized (w > W_EPSILON and inside the
        guard band; a triangle with a vertex that cannot is dropped)."""
        half = np.float32(0.5)
        if not w > np.float32(W_EPSILON):
            return np.int64(0), np.int64(0), np.float32(0.0), False
        fw = np.float32(lw)
        fh = np.float32(lh)
        guard = np.float32(GUARD_PIXELS)
        i = np.float32(1.0) / w
        fx = (x * i * half + half) * fw
        fy = (half - y * i * half) * fh
        if not (abs(fx) < guard and abs(fy) < guard):
            return np.int64(0), np.int64(0), np.float32(0.0), False
        zd = z * i * half + half
        # Snap to 1/256 pixel: every triangle sharing a vertex gets the same integers.
        sub = np.float32(1 << SUBPIXEL_BITS)
        X = np.int64(math.floor(fx * sub + half))
        Y = np.int64(math.floor(fy * sub + half))
        return X, Y, zd, True

    @jit
    def span_lo(r, sx):
        """The first x >= 0 (relative) where r + x * sx >= 0 can hold, for one edge."""
        if sx > 0 and r < 0:
            return (sx - 1 - r) // sx
        return np.int64(0)

    @jit
    def span_hi(r, sx):
        """The last x where r + x * sx >= 0 can hold (-1: none; large: no bound)."""
        if sx < 0:
            return r // -sx if r >= 0 else np.int64(-1)
        if sx == 0 and r < 0:
            return np.int64(-1)
        return np.int64(1 << 40)

    def raster_fixed_py(
        X0, Y0, zd0, X1, Y1, zd1, X2, Y2, zd2,
        tid, double_sided, blend, y_lo, y_hi, x_lo, x_hi, lw, lbase, vis_opaque, vis_blend,
    ):  # fmt: skip
        """Rasterize one snapped triangle (snap_vertex) into rows [y_lo, y_hi), columns
        [x_lo, x_hi)."""
        one = np.float32(1.0)
        area = (X1 - X0) * (Y2 - Y0) - (Y1 - Y0) * (X2 - X0)
        if area == 0:
            return
        if area > 0:
            # Positive area with y down is clockwise in NDC (y up): a back face.
            if not double_sided:
                return
        else:  # front face: reorder to positive area so that inside means E >= 0
            X1, X2 = X2, X1
            Y1, Y2 = Y2, Y1
            zd1, zd2 = zd2, zd1
            area = -area

        c = np.int64(1 << (SUBPIXEL_BITS - 1))  # pixel centre offset
        r = np.int64((1 << SUBPIXEL_BITS) - 1)
        xs = max((min(X0, X1, X2) - c + r) >> SUBPIXEL_BITS, x_lo)
        xe = min((max(X0, X1, X2) - c) >> SUBPIXEL_BITS, x_hi - 1)
        ys = max((min(Y0, Y1, Y2) - c + r) >> SUBPIXEL_BITS, y_lo)
        ye = min((max(Y0, Y1, Y2) - c) >> SUBPIXEL_BITS, y_hi - 1)
        if xs > xe or ys > ye:
            return

        # Edge k is opposite vertex k: E_ab(p) = (bx-ax)(py-ay) - (by-ay)(px-ax) >= 0 inside.
        # Top-left rule for this orientation: a top edge has dy == 0 and dx > 0, a left
        # edge has dy < 0; other edges exclude their pixel centres (bias -1).
        dx0 = X2 - X1
        dy0 = Y2 - Y1
        dx1 = X0 - X2
        dy1 = Y0 - Y2
        dx2 = X1 - X0
        dy2 = Y1 - Y0
        b0 = np.int64(0) if (dy0 < 0 or (dy0 == 0 and dx0 > 0)) else np.int64(-1)
        b1 = np.int64(0) if (dy1 < 0 or (dy1 == 0 and dx1 > 0)) else np.int64(-1)
        b2 = np.int64(0) if (dy2 < 0 or (dy2 == 0 and dx2 > 0)) else np.int64(-1)
        px = (xs << SUBPIXEL_BITS) + c
        py = (ys << SUBPIXEL_BITS) + c
        r0 = dx0 * (py - Y1) - dy0 * (px - X1) + b0
        r1 = dx1 * (py - Y2) - dy1 * (px - X2) + b1
        r2 = dx2 * (py - Y0) - dy2 * (px - X0) + b2
        sx0 = -(dy0 << SUBPIXEL_BITS)
        sx1 = -(dy1 << SUBPIXEL_BITS)
        sx2 = -(dy2 << SUBPIXEL_BITS)
        sy0 = dx0 << SUBPIXEL_BITS
        sy1 = dx1 << SUBPIXEL_BITS
        sy2 = dx2 << SUBPIXEL_BITS
        farea = np.float32(area)
        dz1 = (zd1 - zd0) / farea
        dz2 = (zd2 - zd0) / farea
        zero = np.float32(0.0)
        shift = np.uint64(32)
        empty = np.uint64(0xFFFFFFFFFFFFFFFF)
        n_x = xe - xs  # the bounding box's last column, relative to xs
        for y in range(ys, ye + 1):
            lo = np.int64(0)
            hi = n_x
            if n_x >= SPAN_MIN_PIXELS:
                # A wide triangle: walk only the row's exact span, from the edge functions
                # e_k(x) = r_k + x * sx_k >= 0 (an edge with sx > 0 bounds it on the left, one
                # with sx < 0 on the right; exact int64 floor divisions).
                lo = max(lo, span_lo(r0, sx0), span_lo(r1, sx1), span_lo(r2, sx2))
                hi = min(hi, span_hi(r0, sx0), span_hi(r1, sx1), span_hi(r2, sx2))
            e0 = r0 + lo * sx0
            e1 = r1 + lo * sx1
            e2 = r2 + lo * sx2
            row = lbase + y * lw + xs
            # Branch-free over the span: a pixel outside the triangle or beyond the far plane
            # (or NaN) stores the empty word, which never wins the minimum.
            for x in range(lo, hi + 1):
                depth = zd0 + np.float32(e1) * dz1 + np.float32(e2) * dz2
                ok = ((e0 | e1 | e2) >= 0) & (depth <= one)
                if depth < zero:
                    depth = zero
                bits = np.uint64(np.float32(depth).view(np.uint32))
                i = np.uint64(row + x)  # unsigned: no negative-index wraparound per pixel
                word = (bits << shift) | tid
                if blend:
                    ok = ok & (bits < (vis_opaque[i] >> shift))
                    if not ok:
                        word = empty
                    store(vis_blend, i, word)
                else:
                    if not ok:
                        word = empty
                    store(vis_opaque, i, word)
                e0 += sx0
                e1 += sx1
                e2 += sx2
            r0 += sy0
            r1 += sy1
            r2 += sy2

    raster_fixed = (jit_sub or jit)(raster_fixed_py)
    raster_fixed_hot = jit(raster_fixed_py)

    @jit
    def raster_sub(
        x0, y0, z0, w0, x1, y1, z1, w1, x2, y2, z2, w2,
        tid, double_sided, blend, y_lo, y_hi, x_lo, x_hi, lw, lh, lbase, vis_opaque, vis_blend,
    ):  # fmt: skip
        """Rasterize one (possibly clipped) clip-space triangle into rows [y_lo, y_hi),
        columns [x_lo, x_hi)."""
        X0, Y0, zd0, ok0 = snap_vertex(x0, y0, z0, w0, lw, lh)
        X1, Y1, zd1, ok1 = snap_vertex(x1, y1, z1, w1, lw, lh)
        X2, Y2, zd2, ok2 = snap_vertex(x2, y2, z2, w2, lw, lh)
        if ok0 and ok1 and ok2:
            raster_fixed(
                X0, Y0, zd0, X1, Y1, zd1, X2, Y2, zd2,
                tid, double_sided, blend, y_lo, y_hi, x_lo, x_hi, lw, lbase, vis_opaque,
                vis_blend,
            )  # fmt: skip

    @jit
    def near_point(xa, ya, za, wa, da, xb, yb, zb, wb, db):
        """The point of segment a(inside)->b(outside) on the near plane z = -w."""
        t = da / (da - db)
        return xa + t * (xb - xa), ya + t * (yb - ya), za + t * (zb - za), wa + t * (wb - wa)

    @jit
    def clip_one(
        xa, ya, za, wa, da, xb, yb, zb, wb, db, xc, yc, zc, wc, dc,
        tid, double_sided, blend, y_lo, y_hi, x_lo, x_hi, lw, lh, lbase, vis_opaque, vis_blend,
    ):  # fmt: skip
        """a inside, b and c behind the near plane: the triangle (a, ab, ac)."""
        xab, yab, zab, wab = near_point(xa, ya, za, wa, da, xb, yb, zb, wb, db)
        xac, yac, zac, wac = near_point(xa, ya, za, wa, da, xc, yc, zc, wc, dc)
        raster_sub(
            xa, ya, za, wa, xab, yab, zab, wab, xac, yac, zac, wac,
            tid, double_sided, blend, y_lo, y_hi, x_lo, x_hi, lw, lh, lbase, vis_opaque, vis_blend,
        )  # fmt: skip

    @jit
    def clip_two(
        xa, ya, za, wa, da, xb, yb, zb, wb, db, xc, yc, zc, wc, dc,
        tid, double_sided, blend, y_lo, y_hi, x_lo, x_hi, lw, lh, lbase, vis_opaque, vis_blend,
    ):  # fmt: skip
        """a and b inside, c behind the near plane: the quad (a, b, bc, ca) as 2 triangles."""
        xbc, ybc, zbc, wbc = near_point(xb, yb, zb, wb, db, xc, yc, zc, wc, dc)
        xca, yca, zca, wca = near_point(xa, ya, za, wa, da, xc, yc, zc, wc, dc)
        raster_sub(
            xa, ya, za, wa, xb, yb, zb, wb, xbc, ybc, zbc, wbc,
            tid, double_sided, blend, y_lo, y_hi, x_lo, x_hi, lw, lh, lbase, vis_opaque, vis_blend,
        )  # fmt: skip
        raster_sub(
            xa, ya, za, wa, xbc, ybc, zbc, wbc, xca, yca, zca, wca,
            tid, double_sided, blend, y_lo, y_hi, x_lo, x_hi, lw, lh, lbase, vis_opaque, vis_blend,
        )  # fmt: skip

    @jit
    def band_planes(y_lo, y_hi, x_lo, x_hi, lw, lh):
        """Slopes for rejecting a triangle against rows [y_lo, y_hi) and columns
        [x_lo, x_hi) without a divide: a vertex (w > 0) lies more than a pixel above the
        band when y > a_lo * w, below it when y < a_hi * w, left of it when x < a_xl * w and
        right of it when x > a_xr * w."""
        one = np.float32(1.0)
        two = np.float32(2.0)
        a_lo = one - two * np.float32(y_lo - 1) / np.float32(lh)
        a_hi = one - two * np.float32(y_hi + 1) / np.float32(lh)
        a_xl = two * np.float32(x_lo - 1) / np.float32(lw) - one
        a_xr = two * np.float32(x_hi + 1) / np.float32(lw) - one
        return a_lo, a_hi, a_xl, a_xr

    @jit
    def unclipped_projected(
        a, b, c, x0, y0, z0, w0, x1, y1, z1, w1, x2, y2, z2, w2, fxy, fz,
        tid, double_sided, blend, y_lo, y_hi, x_lo, x_hi, lw, lh, lbase, vis_opaque, vis_blend,
    ):  # fmt: skip
        """An unclipped triangle, projected and snapped here (fxy, fz unused)."""
        raster_sub(
            x0, y0, z0, w0, x1, y1, z1, w1, x2, y2, z2, w2,
            tid, double_sided, blend, y_lo, y_hi, x_lo, x_hi, lw, lh, lbase, vis_opaque, vis_blend,
        )  # fmt: skip

    @jit
    def unclipped_dropped(
        a, b, c, x0, y0, z0, w0, x1, y1, z1, w1, x2, y2, z2, w2, fxy, fz,
        tid, double_sided, blend, y_lo, y_hi, x_lo, x_hi, lw, lh, lbase, vis_opaque, vis_blend,
    ):  # fmt: skip
        """raster_tri_snapped's fallback for a triangle in front of the near plane with a
        vertex that did not snap (w <= W_EPSILON or beyond the guard band): dropped, as
        raster_sub drops it."""
        return

    @jit
    def tri_rows(s, t, tris, tri_mat, s_tbase, s_obase):
        """Triangle t of session s: its material and the rows of its three vertices in the
        clip buffer."""
        g = s_tbase[s] + t
        o = s_obase[s]
        return tri_mat[g], o + tris[g, 0], o + tris[g, 1], o + tris[g, 2]

    def make_tri(unclipped):
        """Triangle t of session s, in pass `blend` (0 opaque, 1 mask/blend), rows
        [y_lo, y_hi) and columns [x_lo, x_hi) of its layer (band_planes gives a_lo, a_hi,
        a_xl, a_xr).
        Triangles crossing the near plane are clipped here; `unclipped` draws the rest."""

        @jit
        def raster_tri(
            s, t, blend, y_lo, y_hi, x_lo, x_hi, a_lo, a_hi, a_xl, a_xr, clip, tris, tri_mat,
            mat_alpha_mode, mat_double_sided, s_tbase, s_obase, s_lw, s_lh, s_lbase,
            vis_opaque, vis_blend, fxy, fz,
        ):  # fmt: skip
            m, a, b, c = tri_rows(s, t, tris, tri_mat, s_tbase, s_obase)
            if (mat_alpha_mode[m] != 0) != (blend != 0):
                return
            x0 = clip[a, 0]
            y0 = clip[a, 1]
            z0 = clip[a, 2]
            w0 = clip[a, 3]
            x1 = clip[b, 0]
            y1 = clip[b, 1]
            z1 = clip[b, 2]
            w1 = clip[b, 3]
            x2 = clip[c, 0]
            y2 = clip[c, 1]
            z2 = clip[c, 2]
            w2 = clip[c, 3]
            d0 = z0 + w0
            d1 = z1 + w1
            d2 = z2 + w2
            in0 = d0 >= 0
            in1 = d1 >= 0
            in2 = d2 >= 0
            if not (in0 or in1 or in2):
                return
            if in0 and in1 and in2 and w0 > 0 and w1 > 0 and w2 > 0:
                # Cheap reject: the triangle lies more than a pixel off the band or the layer.
                if y0 > a_lo * w0 and y1 > a_lo * w1 and y2 > a_lo * w2:
                    return
                if y0 < a_hi * w0 and y1 < a_hi * w1 and y2 < a_hi * w2:
                    return
                if x0 > a_xr * w0 and x1 > a_xr * w1 and x2 > a_xr * w2:
                    return
                if x0 < a_xl * w0 and x1 < a_xl * w1 and x2 < a_xl * w2:
                    return
            double_sided = mat_double_sided[m] != 0
            tid = np.uint64(t + 1)
            lw = s_lw[s]
            lh = s_lh[s]
            lbase = s_lbase[s]
            n_in = np.int32(in0) + np.int32(in1) + np.int32(in2)
            if n_in == 3:
                unclipped(
                    a, b, c, x0, y0, z0, w0, x1, y1, z1, w1, x2, y2, z2, w2, fxy, fz,
                    tid, double_sided, blend, y_lo, y_hi, x_lo, x_hi, lw, lh, lbase, vis_opaque,
                    vis_blend,
                )  # fmt: skip
            elif n_in == 1:  # rotate (keeping the winding) so that the inside vertex comes first
                if in0:
                    clip_one(
                        x0, y0, z0, w0, d0, x1, y1, z1, w1, d1, x2, y2, z2, w2, d2,
                        tid, double_sided, blend, y_lo, y_hi, x_lo, x_hi, lw, lh, lbase, vis_opaque,
                        vis_blend,
                    )  # fmt: skip
                elif in1:
                    clip_one(
                        x1, y1, z1, w1, d1, x2, y2, z2, w2, d2, x0, y0, z0, w0, d0,
                        tid, double_sided, blend, y_lo, y_hi, x_lo, x_hi, lw, lh, lbase, vis_opaque,
                        vis_blend,
                    )  # fmt: skip
                else:
                    clip_one(
                        x2, y2, z2, w2, d2, x0, y0, z0, w0, d0, x1, y1, z1, w1, d1,
                        tid, double_sided, blend, y_lo, y_hi, x_lo, x_hi, lw, lh, lbase, vis_opaque,
                        vis_blend,
                    )  # fmt: skip
            elif n_in == 2:  # rotate so that the outside vertex comes last
                if not in2:
                    clip_two(
                        x0, y0, z0, w0, d0, x1, y1, z1, w1, d1, x2, y2, z2, w2, d2,
                        tid, double_sided, blend, y_lo, y_hi, x_lo, x_hi, lw, lh, lbase, vis_opaque,
                        vis_blend,
                    )  # fmt: skip
                elif not in0:
                    clip_two(
                        x1, y1, z1, w1, d1, x2, y2, z2, w2, d2, x0, y0, z0, w0, d0,
                        tid, double_sided, blend, y_lo, y_hi, x_lo, x_hi, lw, lh, lbase, vis_opaque,
                        vis_blend,
                    )  # fmt: skip
                else:
                    clip_two(
                        x2, y2, z2, w2, d2, x0, y0, z0, w0, d0, x1, y1, z1, w1, d1,
                        tid, double_sided, blend, y_lo, y_hi, x_lo, x_hi, lw, lh, lbase, vis_opaque,
                        vis_blend,
                    )  # fmt: skip

        return raster_tri

    @jit
    def snap_vertices(v_lo, v_hi, lw, lh, clip, fxy, fz):
        """snap_vertex for vertices [v_lo, v_hi) of the clip buffer into fxy, fz; a vertex
        behind the near plane is marked SNAP_INVALID too (its triangles need clipping)."""
        for v in range(v_lo, v_hi):
            X, Y, zd, ok = snap_vertex(clip[v, 0], clip[v, 1], clip[v, 2], clip[v, 3], lw, lh)
            if ok and clip[v, 2] + clip[v, 3] >= 0:
                fxy[v, 0] = np.int32(X)
                fxy[v, 1] = np.int32(Y)
                fz[v] = zd
            else:
                fxy[v, 0] = SNAP_INVALID

    raster_tri_clipped = make_tri(unclipped_dropped)

    @jit
    def raster_tri_snapped(
        s, t, blend, y_lo, y_hi, x_lo, x_hi, a_lo, a_hi, a_xl, a_xr, clip, tris, tri_mat,
        mat_alpha_mode, mat_double_sided, s_tbase, s_obase, s_lw, s_lh, s_lbase,
        vis_opaque, vis_blend, fxy, fz,
    ):  # fmt: skip
        """raster_tri on snapped vertices: a triangle whose three vertices snapped (in
        front of the near plane, w > 0, inside the guard band; nearly all) goes straight
        to the pixel loop in integers, the others through raster_tri's clipping."""
        m, a, b, c = tri_rows(s, t, tris, tri_mat, s_tbase, s_obase)
        if (mat_alpha_mode[m] != 0) != (blend != 0):
            return
        X0 = np.int64(fxy[a, 0])
        X1 = np.int64(fxy[b, 0])
        X2 = np.int64(fxy[c, 0])
        if X0 == SNAP_INVALID or X1 == SNAP_INVALID or X2 == SNAP_INVALID:
            raster_tri_clipped(
                s, t, blend, y_lo, y_hi, x_lo, x_hi, a_lo, a_hi, a_xl, a_xr, clip, tris,
                tri_mat, mat_alpha_mode, mat_double_sided, s_tbase, s_obase, s_lw, s_lh,
                s_lbase, vis_opaque, vis_blend, fxy, fz,
            )  # fmt: skip
            return
        Y0 = np.int64(fxy[a, 1])
        Y1 = np.int64(fxy[b, 1])
        Y2 = np.int64(fxy[c, 1])
        # Back faces and degenerate triangles (about half of a closed mesh) rejected here.
        double_sided = mat_double_sided[m] != 0
        area = (X1 - X0) * (Y2 - Y0) - (Y1 - Y0) * (X2 - X0)
        if area == 0 or (area > 0 and not double_sided):
            return
        raster_fixed_hot(
            X0, Y0, fz[a], X1, Y1, fz[b], X2, Y2, fz[c],
            np.uint64(t + 1), double_sided, blend, y_lo, y_hi, x_lo, x_hi, s_lw[s],
            s_lbase[s], vis_opaque, vis_blend,
        )  # fmt: skip

    return band_planes, make_tri(unclipped_projected), raster_tri_snapped, snap_vertices


@cpu_device
def _store_cpu(buf, i, word):
    buf[i] = min(word, buf[i])


_cpu_function = numba.njit(cache=True, nogil=True, fastmath=False, error_model="numpy", _nrt=False)
"""The CPU pixel loop for clipped triangles (`raster_fixed`) is an ordinary call:
cpu_device's IR-level inline="always" would copy it into its 6 call sites and made the
first compile take minutes. No NRT: it allocates nothing, and NRT would inc/decref both
visibility arrays on every call. The per-triangle code around it, and the pixel loop of
unclipped triangles, are inlined into the kernel's loop."""

_band_planes_cpu, _, _raster_tri_cpu, _snap_vertices_cpu = make_raster_math(
    cpu_device, _store_cpu, _cpu_function
)


def make_region(jit):
    """`region(s_dirty, s, lw, lh)`: the (x_lo, x_hi, y_lo, y_hi) of session s's layer that
    raster redoes: its shade rect (`s_dirty`, kernels/damage.py) and the RASTER_MARGIN
    around it that shade reads; empty when the shade rect is."""

    @jit
    def region(s_dirty, s, lw, lh):
        x0 = s_dirty[s, 0]
        y0 = s_dirty[s, 1]
        x1 = s_dirty[s, 2]
        y1 = s_dirty[s, 3]
        if x0 >= x1 or y0 >= y1:
            return 0, 0, 0, 0
        return (
            max(x0 - RASTER_MARGIN, 0), min(x1 + RASTER_MARGIN, lw),
            max(y0 - RASTER_MARGIN, 0), min(y1 + RASTER_MARGIN, lh),
        )  # fmt: skip

    return region


_region_cpu = make_region(cpu_device)


@numba.njit(cache=True, nogil=True)
def _band_layout(s_lh, n_sessions, n_workers):
    """(band rows, bands per session): one work item per worker over the batch, so a single
    session still keeps every core busy, and 1 band per session for big batches. Every band
    re-scans all of its session's triangles (~0.3 ms per band for the 53k-triangle default
    avatar), which costs more than the uneven load of fewer, larger bands."""
    max_h = 0
    for s in range(n_sessions):
        max_h = max(max_h, s_lh[s])
    per_session = max(1, (n_workers + n_sessions - 1) // n_sessions)
    band = max(MIN_BAND_ROWS, (max_h + per_session - 1) // per_session)
    return band, max(1, (max_h + band - 1) // band)


@cpu_kernel()
def _clear_cpu_kernel(s_lw, s_lh, s_lbase, n_sessions, band, n_bands, vis_opaque, vis_blend):
    for item in numba.prange(n_sessions * n_bands):
        s = item // n_bands
        y_lo = (item % n_bands) * band
        y_hi = min(y_lo + band, s_lh[s])
        for i in range(s_lbase[s] + y_lo * s_lw[s], s_lbase[s] + y_hi * s_lw[s]):
            vis_opaque[i] = EMPTY
            vis_blend[i] = EMPTY


@cpu_kernel()
def _raster_cpu_kernel(
    clip, tris, tri_mat, mat_alpha_mode, mat_double_sided,
    s_tbase, s_tcount, s_obase, s_lw, s_lh, s_lbase, n_sessions,
    band, n_bands, clear, vis_opaque, vis_blend, s_dirty, claims, workers,
):  # fmt: skip
    passes = 1  # the blend pass only when some material is MASK/BLEND
    for m in range(mat_alpha_mode.shape[0]):
        if mat_alpha_mode[m] != 0:
            passes = 2
    # Snap every session's vertices once (a vertex is shared by ~6 triangles): the session's
    # vertex count is one more than the largest index its triangles use.
    n_verts = np.zeros(n_sessions, np.int64)
    for s in numba.prange(n_sessions):
        top = np.int64(-1)
        g0 = s_tbase[s]
        for g in range(g0, g0 + s_tcount[s]):
            top = max(top, np.int64(tris[g, 0]), np.int64(tris[g, 1]), np.int64(tris[g, 2]))
        n_verts[s] = top + 1
    chunks = np.int64(0)
    for s in range(n_sessions):
        chunks = max(chunks, (n_verts[s] + SNAP_CHUNK - 1) // SNAP_CHUNK)
    fxy = np.empty((clip.shape[0], 2), np.int32)
    fz = np.empty(clip.shape[0], np.float32)
    for item in numba.prange(n_sessions * chunks):
        s = item // chunks
        v_lo = (item % chunks) * SNAP_CHUNK
        v_hi = min(v_lo + SNAP_CHUNK, n_verts[s])
        if v_lo < v_hi and s_lw[s] > 0 and s_lh[s] > 0:
            o = s_obase[s]
            _snap_vertices_cpu(o + v_lo, o + v_hi, s_lw[s], s_lh[s], clip, fxy, fz)
    start_claims(claims, workers, n_sessions * n_bands)
    for w in numba.prange(workers):
        done = 0
        while True:
            item, done = claim_item(claims, w, workers, n_sessions * n_bands, done)
            if item < 0:
                break
            _raster_band(
                item, band, n_bands, passes, clear, clip, tris, tri_mat, mat_alpha_mode,
                mat_double_sided, s_tbase, s_tcount, s_obase, s_lw, s_lh, s_lbase,
                vis_opaque, vis_blend, s_dirty, fxy, fz,
            )  # fmt: skip


# A real call, not inlined into the claim loop (kernels/shade.py `_shade_band`), and without
# NRT: with it numba inc/decrefs the arrays at every triangle (measured: raster took twice
# as long).
@numba.njit(cache=True, nogil=True, error_model="numpy", _nrt=False)
def _raster_band(
    item, band, n_bands, passes, clear, clip, tris, tri_mat, mat_alpha_mode, mat_double_sided,
    s_tbase, s_tcount, s_obase, s_lw, s_lh, s_lbase, vis_opaque, vis_blend, s_dirty, fxy, fz,
):  # fmt: skip
    """Band `item % n_bands` of session `item // n_bands`: clear it (within the session's
    region), then draw every triangle of the session into it, opaque pass first."""
    s = item // n_bands
    lw = s_lw[s]
    lh = s_lh[s]
    x_lo, x_hi, r_lo, r_hi = _region_cpu(s_dirty, s, lw, lh)
    y_lo = max((item % n_bands) * band, r_lo)
    y_hi = min((item % n_bands) * band + band, r_hi)
    if y_lo >= y_hi or x_lo >= x_hi:
        return
    if clear:
        for y in range(y_lo, y_hi):
            row = s_lbase[s] + y * lw
            for i in range(row + x_lo, row + x_hi):
                vis_opaque[i] = EMPTY
                vis_blend[i] = EMPTY
    a_lo, a_hi, a_xl, a_xr = _band_planes_cpu(y_lo, y_hi, x_lo, x_hi, lw, lh)
    for blend in range(passes):  # the opaque pass completes in the band before the blend one
        for t in range(s_tcount[s]):
            _raster_tri_cpu(
                s, t, blend, y_lo, y_hi, x_lo, x_hi, a_lo, a_hi, a_xl, a_xr, clip, tris,
                tri_mat, mat_alpha_mode, mat_double_sided, s_tbase, s_obase, s_lw, s_lh,
                s_lbase, vis_opaque, vis_blend, fxy, fz,
            )  # fmt: skip


def clear_vis_cpu(
    s_lw: np.ndarray,
    s_lh: np.ndarray,
    s_lbase: np.ndarray,
    n_sessions: int,
    vis_opaque: np.ndarray,
    vis_blend: np.ndarray,
) -> None:
    """Set each session's layer region of both visibility buffers to empty (all ones)."""
    if n_sessions <= 0:
        return
    n = np.int64(n_sessions)
    band, n_bands = _band_layout(s_lh, n, np.int64(numba.get_num_threads()))
    _clear_cpu_kernel(s_lw, s_lh, s_lbase, n, band, n_bands, vis_opaque, vis_blend)


def raster_cpu(
    clip: np.ndarray,
    tris: np.ndarray,
    tri_mat: np.ndarray,
    mat_alpha_mode: np.ndarray,
    mat_double_sided: np.ndarray,
    s_tbase: np.ndarray,
    s_tcount: np.ndarray,
    s_obase: np.ndarray,
    s_lw: np.ndarray,
    s_lh: np.ndarray,
    s_lbase: np.ndarray,
    n_sessions: int,
    vis_opaque: np.ndarray,
    vis_blend: np.ndarray,
    clear: bool = True,
    s_dirty: np.ndarray | None = None,
) -> None:
    """Both visibility passes for sessions 0..n_sessions-1 (clearing their layers first).

    With `s_dirty` [N,4] (shade rects, kernels/damage.py) only each rect and the
    RASTER_MARGIN around it is cleared and drawn; without it, every whole layer."""
    if n_sessions <= 0:
        return
    n = np.int64(n_sessions)
    if s_dirty is None:
        s_dirty = full_layers(s_lw, s_lh, n_sessions)
    workers = np.int64(numba.get_num_threads())
    band, n_bands = _band_layout(s_lh, n, workers)
    _raster_cpu_kernel(
        clip, tris, tri_mat, mat_alpha_mode, mat_double_sided,
        s_tbase, s_tcount, s_obase, s_lw, s_lh, s_lbase, n,
        band, n_bands, bool(clear), vis_opaque, vis_blend, s_dirty, claim_counters(), workers,
    )  # fmt: skip


@functools.cache
def _cuda_kernels() -> tuple[Any, Any]:
    global cuda  # a module global: the simulator swaps `cuda` only in kernel globals
    cuda = cuda_module()

    @cuda.jit(device=True, inline=True)
    def store(buf, i, word):
        if word < buf[i]:  # racy read, but values only decrease: skips most atomics
            cuda.atomic.min(buf, i, word)

    band_planes, raster_tri, _, _ = make_raster_math(cuda_device(), store)
    region = make_region(cuda_device())

    @cuda.jit
    def raster_kernel(
        clip, tris, tri_mat, mat_alpha_mode, mat_double_sided,
        s_tbase, s_tcount, s_obase, s_lw, s_lh, s_lbase, blend, vis_opaque, vis_blend, s_dirty,
    ):  # fmt: skip
        s = cuda.blockIdx.y
        count = s_tcount[s]
        lw = s_lw[s]
        lh = s_lh[s]
        x_lo, x_hi, y_lo, y_hi = region(s_dirty, s, lw, lh)
        if x_lo >= x_hi or y_lo >= y_hi:
            return
        a_lo, a_hi, a_xl, a_xr = band_planes(y_lo, y_hi, x_lo, x_hi, lw, lh)
        stride = cuda.gridDim.x * cuda.blockDim.x
        for t in range(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x, count, stride):
            raster_tri(
                s, t, blend, y_lo, y_hi, x_lo, x_hi, a_lo, a_hi, a_xl, a_xr, clip, tris,
                tri_mat, mat_alpha_mode, mat_double_sided, s_tbase, s_obase, s_lw, s_lh,
                s_lbase, vis_opaque, vis_blend,
                clip, clip,  # no snapped-vertex buffers: each thread projects its own
            )  # fmt: skip

    @cuda.jit
    def clear_kernel(s_lw, s_lh, s_lbase, vis_opaque, vis_blend):
        s = cuda.blockIdx.y
        base = s_lbase[s]
        count = s_lw[s] * s_lh[s]
        stride = cuda.gridDim.x * cuda.blockDim.x
        empty = np.uint64(0xFFFFFFFFFFFFFFFF)
        for i in range(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x, count, stride):
            vis_opaque[base + i] = empty
            vis_blend[base + i] = empty

    return raster_kernel, clear_kernel


def clear_vis_cuda(
    s_lw: Any,
    s_lh: Any,
    s_lbase: Any,
    n_sessions: int,
    vis_opaque: Any,
    vis_blend: Any,
    stream: Any = 0,
) -> None:
    """CUDA twin of `clear_vis_cpu`: one launch, grid (pixel blocks, sessions)."""
    if n_sessions <= 0:
        return
    grid = (cuda_grid_x(int(vis_opaque.shape[0]), n_sessions, CUDA_BLOCK), int(n_sessions))
    _cuda_kernels()[1][grid, CUDA_BLOCK, stream](s_lw, s_lh, s_lbase, vis_opaque, vis_blend)


def raster_cuda(
    clip: Any,
    tris: Any,
    tri_mat: Any,
    mat_alpha_mode: Any,
    mat_double_sided: Any,
    s_tbase: Any,
    s_tcount: Any,
    s_obase: Any,
    s_lw: Any,
    s_lh: Any,
    s_lbase: Any,
    n_sessions: int,
    vis_opaque: Any,
    vis_blend: Any,
    clear: bool = True,
    s_dirty: Any = None,
    stream: Any = 0,
) -> None:
    """CUDA twin of `raster_cpu`: clear, opaque pass, blend pass (three launches, one
    stream). One thread per (session, triangle); the pool's triangle count bounds every
    session's, so the grid is sized without reading session rows back from the device.
    The clear covers whole layers; drawing is limited to `s_dirty`'s regions."""
    if n_sessions <= 0:
        return
    if s_dirty is None:
        s_dirty = full_layers_device(s_lw, s_lh, n_sessions)
    if clear:
        clear_vis_cuda(s_lw, s_lh, s_lbase, n_sessions, vis_opaque, vis_blend, stream)
    kernel = _cuda_kernels()[0]
    grid = (cuda_grid_x(int(tris.shape[0]), n_sessions, CUDA_BLOCK), int(n_sessions))
    for blend in (0, 1):
        kernel[grid, CUDA_BLOCK, stream](
            clip, tris, tri_mat, mat_alpha_mode, mat_double_sided,
            s_tbase, s_tcount, s_obase, s_lw, s_lh, s_lbase, blend, vis_opaque, vis_blend,
            s_dirty,
        )  # fmt: skip
