"""Stage 4: composite background + avatar layer + overlays into each session's NV12 frame.

Per session, only inside `s_rect[s]` = (x0, y0, x1, y1) (widened to even bounds, clipped
to the frame): every other byte of the persistent frame buffer is left untouched. Work item
= one 2x2 luma block (one CUDA thread; on the CPU, (session, block row) items that the
threads claim, kernels/backend.py).
Overlays are culled once per block (a 63-bit mask; overlays past the 63rd of a session are
always visited), so a small label costs nothing outside its own box.

Per luma site the colour starts from the background (already NV12 at `s_bgbase` in the
background pool, same layout as the frame) and layers are blended in z order:
    overlays with z < 0, then the avatar layer (z = 0; ties: the avatar goes first, so an
    overlay with z = 0 is in front of it), then overlays with z >= 0.
A premultiplied sRGB-encoded layer pixel (R', G', B', A) with opacity o is blended in YUV,
which is exact because BT.709 limited-range YUV is affine in R'G'B' (see kernels/color.py):
    a = o A;  Y = Y (1 - a) + 16 a + 219 Y'(o R', o G', o B')   (Cb, Cr alike, 128 a).
So a solid colour at alpha 1 gives exactly that colour's NV12. Sums stay in float64 and are
rounded once at the end. Chroma: each site is blended against its block's background
chroma, then the four sites' results are averaged (same rule as `rgb_to_nv12_cpu`).

Overlay table (NOT in the kernels/__init__.py contract yet; defined here)
    per session:  s_ov_start [N] i32, s_ov_count [N] i32   CSR rows into the table, each
                  session's rows sorted by ov_z ascending
    per overlay:  ov_x, ov_y [K] i32   top-left in the frame (may be negative / overhang)
                  ov_w, ov_h [K] i32   size in pixels
                  ov_base [K] i64      first pixel (row of ov_pixels) of the overlay image
                  ov_opacity [K] f32   0..1, multiplies the whole overlay
                  ov_z [K] i32         z order; < 0 behind the avatar, >= 0 in front
    ov_pixels [P,4] u8  pool of premultiplied, sRGB-encoded RGBA images, row-major
    The AI-content label is an ordinary overlay with the largest z (render/layers.py).
    K may be 0: pass 1-row dummy arrays (numba needs typed arrays).

Decisions beyond the contract: an odd rect is widened to whole 2x2 blocks (NV12 chroma is
per block). `n`, and `max_rw`, `max_rh` (the largest rect width and height this tick, the
launch extent) are explicit arguments, as in the shade stage.

Public: `composite_cpu(...)`, `composite_cuda(..., stream=0)` (same argument list; on CUDA
`frame` is device memory handed to the encoder as is) and `rgb_to_nv12_cpu` (host).
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

import numpy as np
from numba import get_num_threads, prange

from .backend import (
    claim_counters,
    claim_item,
    cpu_device,
    cpu_kernel,
    cuda_device,
    cuda_module,
    start_claims,
)
from .color import CB_SCALE, CR_SCALE, KB, KG, KR, make_color_math, rgb_to_nv12_cpu

__all__ = ["composite_cpu", "composite_cuda", "rgb_to_nv12_cpu", "make_composite_math"]


def make_composite_math(jit) -> SimpleNamespace:
    """Per-block compositing math, compiled with `jit` (cpu_device or cuda_device())."""
    blend_yuv = make_color_math(jit).blend_yuv
    kr, kg, kb = KR, KG, KB
    cb_scale, cr_scale = CB_SCALE, CR_SCALE

    @jit
    def blend_pixel(pixels, p, opacity, y, u, v):
        """Blend premultiplied RGBA8 pixels[p] scaled by opacity over (y, u, v)."""
        a8 = pixels[p, 3]
        if a8 == 0 or opacity <= 0.0:
            return y, u, v
        k = opacity / 255.0
        a = a8 / 255.0
        if opacity < 1.0:
            a = a * opacity
        return blend_yuv(y, u, v, pixels[p, 0] * k, pixels[p, 1] * k, pixels[p, 2] * k, a)

    @jit
    def blend_avatar(fx, fy, rgba, lw, lh, lbase, lx, ly, y, u, v):
        x = fx - lx
        yy = fy - ly
        if x < 0 or yy < 0 or x >= lw or yy >= lh:
            return y, u, v
        return blend_pixel(rgba, lbase + yy * lw + x, 1.0, y, u, v)

    @jit
    def blend_overlay(j, fx, fy, ovs, y, u, v):
        ov_x, ov_y, ov_w, ov_h, ov_base, ov_opacity, ov_z, ov_pixels = ovs
        x = fx - ov_x[j]
        yy = fy - ov_y[j]
        w = ov_w[j]
        if x < 0 or yy < 0 or x >= w or yy >= ov_h[j]:
            return y, u, v
        return blend_pixel(ov_pixels, ov_base[j] + yy * w + x, ov_opacity[j], y, u, v)

    @jit
    def block_overlays(fx, fy, ov_start, ov_count, ovs):
        """Which overlays touch the 2x2 block at (fx, fy), tested once per block.

        Returns (mask, n_behind): bit k set when overlay ov_start + k intersects the block
        (overlays from the 63rd on are always visited), and how many overlays have z < 0
        (rows are sorted by z, so they come first).
        """
        ov_x, ov_y, ov_w, ov_h, ov_base, ov_opacity, ov_z, ov_pixels = ovs
        mask = 0
        n_behind = 0
        for k in range(ov_count):
            j = ov_start + k
            if ov_z[j] < 0:
                n_behind += 1
            if k >= 63:
                continue
            x = ov_x[j]
            y = ov_y[j]
            if fx + 2 > x and fx < x + ov_w[j] and fy + 2 > y and fy < y + ov_h[j]:
                mask |= 1 << k
        return mask, n_behind

    @jit
    def site(fx, fy, y, u, v, rgba, lw, lh, lbase, lx, ly, ov_start, ov_count, mask, n_behind,
             ovs):  # fmt: skip
        """Composite every layer over one luma site; returns float (Y, Cb, Cr)."""
        for k in range(n_behind):
            if k >= 63 or (mask >> k) & 1:
                y, u, v = blend_overlay(ov_start + k, fx, fy, ovs, y, u, v)
        y, u, v = blend_avatar(fx, fy, rgba, lw, lh, lbase, lx, ly, y, u, v)
        for k in range(n_behind, ov_count):
            if k >= 63 or (mask >> k) & 1:
                y, u, v = blend_overlay(ov_start + k, fx, fy, ovs, y, u, v)
        return y, u, v

    @jit
    def to_u8(x):
        i = int(x + 0.5)
        if i < 0:
            return 0
        if i > 255:
            return 255
        return i

    @jit
    def avatar_alpha(fx, fy, rgba, lw, lh, lbase, lx, ly):
        """(lowest, highest) avatar-layer alpha over the 4 sites of the block (0 outside
        the layer)."""
        lo = 255
        hi = 0
        for dy in range(2):
            yy = fy + dy - ly
            for dx in range(2):
                x = fx + dx - lx
                a = 0
                if yy >= 0 and yy < lh and x >= 0 and x < lw:
                    a = rgba[lbase + yy * lw + x, 3]
                lo = min(lo, a)
                hi = max(hi, a)
        return lo, hi

    @jit
    def opaque_block(fx, fy, fbase, c, fw, rgba, lw, lbase, lx, ly, frame):
        """A block the opaque avatar covers alone: its colours' YUV, no background read.

        The same sums `blend_yuv` gives at alpha 1 (the background term is an exact 0)."""
        usum = 0.0
        vsum = 0.0
        for dy in range(2):
            q = lbase + (fy + dy - ly) * lw + fx - lx
            for dx in range(2):
                r = rgba[q + dx, 0] * (1.0 / 255.0)
                g = rgba[q + dx, 1] * (1.0 / 255.0)
                b = rgba[q + dx, 2] * (1.0 / 255.0)
                yp = kr * r + kg * g + kb * b
                frame[fbase + (fy + dy) * fw + fx + dx] = to_u8(16.0 + 219.0 * yp)
                usum += 128.0 + cb_scale * (b - yp)
                vsum += 128.0 + cr_scale * (r - yp)
        frame[fbase + c] = to_u8(usum * 0.25)
        frame[fbase + c + 1] = to_u8(vsum * 0.25)

    @jit
    def composite_block(
        fx, fy, fw, fh, fbase, bgbase,
        rgba, lw, lh, lbase, lx, ly, ov_start, ov_count, ovs, background, frame,
    ):  # fmt: skip
        """One 2x2 block with top-left luma site (fx, fy): 4 Y bytes and one CbCr pair.

        Without overlays on it, a block the avatar leaves clear is the background's bytes
        (what blending nothing and rounding gives) and one it covers opaquely is the
        avatar's colours: both skip the general per-layer path."""
        c = fw * fh + (fy // 2) * fw + fx
        mask, n_behind = block_overlays(fx, fy, ov_start, ov_count, ovs)
        lo = 0
        hi = 255
        if mask == 0 and ov_count <= 63:
            lo, hi = avatar_alpha(fx, fy, rgba, lw, lh, lbase, lx, ly)
        if lo == 255:
            opaque_block(fx, fy, fbase, c, fw, rgba, lw, lbase, lx, ly, frame)
            return
        if hi == 0:
            for dy in range(2):
                p = (fy + dy) * fw + fx
                frame[fbase + p] = background[bgbase + p]
                frame[fbase + p + 1] = background[bgbase + p + 1]
            frame[fbase + c] = background[bgbase + c]
            frame[fbase + c + 1] = background[bgbase + c + 1]
            return
        ubg = float(background[bgbase + c])
        vbg = float(background[bgbase + c + 1])
        usum = 0.0
        vsum = 0.0
        for dy in range(2):
            for dx in range(2):
                p = (fy + dy) * fw + fx + dx
                y, u, v = site(
                    fx + dx, fy + dy, float(background[bgbase + p]), ubg, vbg,
                    rgba, lw, lh, lbase, lx, ly, ov_start, ov_count, mask, n_behind, ovs,
                )  # fmt: skip
                frame[fbase + p] = to_u8(y)
                usum += u
                vsum += v
        frame[fbase + c] = to_u8(usum * 0.25)
        frame[fbase + c + 1] = to_u8(vsum * 0.25)

    @jit
    def rect_of(s_rect, s, fw, fh):
        """Session s's rect widened to even bounds (whole 2x2 blocks) and clipped to the frame."""
        x0 = max(s_rect[s, 0], 0)
        y0 = max(s_rect[s, 1], 0)
        x0 -= x0 % 2
        y0 -= y0 % 2
        x1 = min(s_rect[s, 2] + s_rect[s, 2] % 2, fw)
        y1 = min(s_rect[s, 3] + s_rect[s, 3] % 2, fh)
        return x0, y0, x1, y1

    return SimpleNamespace(site=site, composite_block=composite_block, rect_of=rect_of)


_cpu = make_composite_math(cpu_device)
_composite_block_cpu = _cpu.composite_block
_rect_of_cpu = _cpu.rect_of


@cpu_device
def _layer_span(rgba, lw, lh, lbase, yy, c0, c1):
    """[first, last + 1) of the pixels with alpha > 0 among columns [c0, c1) of layer row
    yy (first >= last: none)."""
    if yy < 0 or yy >= lh:
        return 0, 0
    row = lbase + yy * lw
    first = max(c0, 0)
    last = min(c1, lw)
    while first < last and rgba[row + first, 3] == 0:
        first += 1
    while last > first and rgba[row + last - 1, 3] == 0:
        last -= 1
    return first, last


@cpu_device
def _even_span(p, q, x0, x1):
    """The blocks (even starts) of [x0, x1) that touch pixels [p, q)."""
    p = max(p, x0)
    return p - p % 2, min(q, x1)


@cpu_device
def _composite_blocks(b0, b1, fy, fw, fh, fbase, bgbase, layer, ov_start, ov_count, ovs,
                      background, frame):  # fmt: skip
    """Blocks fx = b0, b0 + 2, .. < b1 of block row fy; layer = (rgba, lw, lh, lbase, lx, ly)."""
    rgba, lw, lh, lbase, lx, ly = layer
    for fx in range(b0, b1, 2):
        _composite_block_cpu(
            fx, fy, fw, fh, fbase, bgbase,
            rgba, lw, lh, lbase, lx, ly, ov_start, ov_count, ovs, background, frame,
        )  # fmt: skip


# No exception paths in the hot loop; no NRT: the kernel allocates nothing, and with NRT
# numba inc/decrefs every array an inlined helper binds (atomics: 13% of the time).
@cpu_kernel(error_model="numpy", _nrt=False)
def _composite_cpu_kernel(
    n, max_rw, max_rh,
    rgba, s_lw, s_lh, s_lbase, s_lx, s_ly,
    s_fw, s_fh, s_fbase, s_bgbase, s_rect,
    s_ov_start, s_ov_count,
    ov_x, ov_y, ov_w, ov_h, ov_base, ov_opacity, ov_z, ov_pixels,
    background, frame, claims, workers,
):  # fmt: skip
    """Block rows, claimed by the threads (kernels/backend.py `claim_item`)."""
    ovs = (ov_x, ov_y, ov_w, ov_h, ov_base, ov_opacity, ov_z, ov_pixels)
    rows = max_rh // 2 + 1  # + 1: an odd rect start widens the rect by one block row
    start_claims(claims, workers, n * rows)
    for w in prange(workers):
        done = 0
        while True:
            item, done = claim_item(claims, w, workers, n * rows, done)
            if item < 0:
                break
            _composite_row(item, rows, rgba, s_lw, s_lh, s_lbase, s_lx, s_ly, s_fw, s_fh,
                           s_fbase, s_bgbase, s_rect, s_ov_start, s_ov_count, ovs, background,
                           frame)  # fmt: skip


@cpu_device
def _composite_row(
    item, rows, rgba, s_lw, s_lh, s_lbase, s_lx, s_ly, s_fw, s_fh, s_fbase, s_bgbase, s_rect,
    s_ov_start, s_ov_count, ovs, background, frame,
):  # fmt: skip
    """Block row `item % rows` of session `item // rows`. The row starts as a copy of the
    background (what compositing nothing gives); only blocks under the avatar's visible
    span or an overlay go through `composite_block`."""
    ov_x, ov_y, ov_w, ov_h = ovs[0], ovs[1], ovs[2], ovs[3]
    s = item // rows
    fw = s_fw[s]
    fh = s_fh[s]
    x0, y0, x1, y1 = _rect_of_cpu(s_rect, s, fw, fh)
    fy = y0 + 2 * (item - s * rows)
    if fy + 2 > y1 or x0 >= x1:
        return
    fbase = s_fbase[s]
    bgbase = s_bgbase[s]
    for p in (fy * fw + x0, (fy + 1) * fw + x0, fw * fh + (fy // 2) * fw + x0):
        frame[fbase + p : fbase + p + x1 - x0] = background[bgbase + p : bgbase + p + x1 - x0]
    lw = s_lw[s]
    lh = s_lh[s]
    lbase = s_lbase[s]
    lx = s_lx[s]
    ly = s_ly[s]
    # only the rect's columns matter: the span is clipped to them below
    f0, l0 = _layer_span(rgba, lw, lh, lbase, fy - ly, x0 - lx, x1 - lx)
    f1, l1 = _layer_span(rgba, lw, lh, lbase, fy + 1 - ly, x0 - lx, x1 - lx)
    if f0 >= l0:
        f0, l0 = f1, l1
    elif f1 < l1:
        f0, l0 = min(f0, f1), max(l0, l1)
    a0, a1 = _even_span(lx + f0, lx + l0, x0, x1)
    ov_start = s_ov_start[s]
    ov_count = s_ov_count[s]
    layer = (rgba, lw, lh, lbase, lx, ly)
    _composite_blocks(a0, a1, fy, fw, fh, fbase, bgbase, layer, ov_start, ov_count, ovs,
                      background, frame)  # fmt: skip
    for k in range(ov_count):
        j = ov_start + k
        if fy + 2 > ov_y[j] and fy < ov_y[j] + ov_h[j]:
            o0, o1 = _even_span(ov_x[j], ov_x[j] + ov_w[j], x0, x1)
            # the part outside the avatar's span (done above; its last block ends at a1
            # rounded up to even: a block starting at an odd x would misplace chroma)
            _composite_blocks(o0, min(o1, a0), fy, fw, fh, fbase, bgbase, layer, ov_start,
                              ov_count, ovs, background, frame)  # fmt: skip
            _composite_blocks(max(o0, a1 + a1 % 2), o1, fy, fw, fh, fbase, bgbase, layer,
                              ov_start, ov_count, ovs, background, frame)  # fmt: skip


def composite_cpu(
    n: int, max_rw: int, max_rh: int,
    rgba: np.ndarray, s_lw: np.ndarray, s_lh: np.ndarray, s_lbase: np.ndarray,
    s_lx: np.ndarray, s_ly: np.ndarray,
    s_fw: np.ndarray, s_fh: np.ndarray, s_fbase: np.ndarray, s_bgbase: np.ndarray,
    s_rect: np.ndarray, s_ov_start: np.ndarray, s_ov_count: np.ndarray,
    ov_x: np.ndarray, ov_y: np.ndarray, ov_w: np.ndarray, ov_h: np.ndarray,
    ov_base: np.ndarray, ov_opacity: np.ndarray, ov_z: np.ndarray, ov_pixels: np.ndarray,
    background: np.ndarray, frame: np.ndarray,
) -> None:  # fmt: skip
    """Composite sessions 0..n-1 into `frame` (flat u8 NV12 pool), CPU, in place.

    `max_rw`/`max_rh` bound every rect's width/height this tick (the launch extent).
    """
    if n <= 0:
        return
    _composite_cpu_kernel(
        n, max_rw, max_rh,
        rgba, s_lw, s_lh, s_lbase, s_lx, s_ly,
        s_fw, s_fh, s_fbase, s_bgbase, s_rect,
        s_ov_start, s_ov_count,
        ov_x, ov_y, ov_w, ov_h, ov_base, ov_opacity, ov_z, ov_pixels,
        background, frame, claim_counters(), get_num_threads(),
    )  # fmt: skip


CUDA_BLOCK = (16, 16, 1)
cuda = None  # numba.cuda once a CUDA kernel is first built


@functools.cache
def _composite_cuda_kernel():
    """Compile the CUDA kernel on first use (numba.cuda is imported lazily).

    `cuda` is bound as a module global, not a closure variable: numba's simulator swaps
    in its fake `cuda` module by rewriting the kernel's globals.
    """
    global cuda
    cuda = cuda_module()
    cm = make_composite_math(cuda_device())
    composite_block = cm.composite_block
    rect_of = cm.rect_of

    @cuda.jit
    def kernel(
        n, max_rw, max_rh,
        rgba, s_lw, s_lh, s_lbase, s_lx, s_ly,
        s_fw, s_fh, s_fbase, s_bgbase, s_rect,
        s_ov_start, s_ov_count,
        ov_x, ov_y, ov_w, ov_h, ov_base, ov_opacity, ov_z, ov_pixels,
        background, frame,
    ):  # fmt: skip
        bx, by = cuda.grid(2)
        s = cuda.blockIdx.z
        if s >= n:
            return
        fw = s_fw[s]
        fh = s_fh[s]
        x0, y0, x1, y1 = rect_of(s_rect, s, fw, fh)
        fx = x0 + 2 * bx
        fy = y0 + 2 * by
        if fx + 2 > x1 or fy + 2 > y1:
            return
        ovs = (ov_x, ov_y, ov_w, ov_h, ov_base, ov_opacity, ov_z, ov_pixels)
        composite_block(
            fx, fy, fw, fh, s_fbase[s], s_bgbase[s],
            rgba, s_lw[s], s_lh[s], s_lbase[s], s_lx[s], s_ly[s],
            s_ov_start[s], s_ov_count[s], ovs, background, frame,
        )  # fmt: skip

    return kernel


def composite_cuda(
    n: int, max_rw: int, max_rh: int,
    rgba, s_lw, s_lh, s_lbase, s_lx, s_ly,
    s_fw, s_fh, s_fbase, s_bgbase, s_rect,
    s_ov_start, s_ov_count,
    ov_x, ov_y, ov_w, ov_h, ov_base, ov_opacity, ov_z, ov_pixels,
    background, frame,
    stream=0,
) -> None:  # fmt: skip
    """Composite on CUDA: one thread per 2x2 block, grid (block x, block y, session)."""
    if n <= 0:
        return
    bx, by, _ = CUDA_BLOCK
    grid = ((max_rw // 2 + 1 + bx - 1) // bx, (max_rh // 2 + 1 + by - 1) // by, n)
    _composite_cuda_kernel()[grid, CUDA_BLOCK, stream](
        n, max_rw, max_rh,
        rgba, s_lw, s_lh, s_lbase, s_lx, s_ly,
        s_fw, s_fh, s_fbase, s_bgbase, s_rect,
        s_ov_start, s_ov_count,
        ov_x, ov_y, ov_w, ov_h, ov_base, ov_opacity, ov_z, ov_pixels,
        background, frame,
    )  # fmt: skip
