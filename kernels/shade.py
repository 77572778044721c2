"""Stage 3: resolve the visibility buffers into the premultiplied sRGB avatar layer.

Per layer pixel of every session (one CUDA thread each; on the CPU a `prange` over
(session, row) items): read `vis_opaque`, rebuild the triangle's perspective-correct
barycentrics at the pixel centre from its clip-space vertices, interpolate uv (through the
material's uv transform) and the world normal, sample the base-colour texture bilinearly
(sRGB texels decoded to linear before filtering, wrap = repeat), light it, composite the
`vis_blend` fragment over it in linear light, then write premultiplied, sRGB-encoded RGBA8
to `rgba[s_lbase + y * lw + x]`.

Lighting (linear, key light direction `s_light[s, :3]`, normalised here; ambient `s_light[s, 3]`)
    LAMBERT  albedo * (ambient + (1 - ambient) * max(0, n.l))
    UNLIT    albedo
    MTOON    VRM MToon 1.0: t = linearstep(-1 + toony, 1 - toony, n.l + shift);
             colour = lerp(shadeTerm, baseTerm, t), light colour white. (The spec's
             pseudocode writes lerp(base, shade, t) but its reference implementations lerp
             from shade to base: lit surfaces take the base colour.) The asset carries no
             shadeMultiplyTexture, so the base-colour texture stands in for it (what VRM 0.x
             migrations set): shadeTerm = shade_color * texel.rgb. toony = 1 is a hard step.
    albedo = base_color.rgb * texel.rgb, alpha = base_color.a * texel.a.
    MTOON ignores the ambient term (its shade colour is the unlit tone; no GI term).
    Back faces (drawn only for double-sided materials) get their normal flipped.

Alpha
    OPAQUE fragments have alpha 1. MASK: alpha < cutoff discards the fragment, else alpha 1.
    BLEND: alpha as sampled. The blend fragment goes OVER the opaque colour in linear light.

Silhouette anti-aliasing (analytic coverage, only where the avatar meets empty space)
    A pixel is "empty" when both vis words are empty. Pixels outside the layer count as
    covered, so an avatar cut by the layer border keeps a hard, opaque edge there.
    Coverage of a pixel by one edge is the exact area of the unit pixel box on the inside
    of that edge's line (`box_coverage`: linear in the centre's distance d in the middle,
    quadratic at both ends; 0.5 + d for axis-aligned edges); by several edges, the product.
    Covered pixel with an empty 4-neighbour: for each edge of its triangle (the opaque one,
    else the blend one) within 1.5 px, probe the pixel 1 px beyond the edge; if that pixel
    is empty the edge is a silhouette edge and counts. Interior edges (the probe lands on
    another triangle) never reduce coverage, so shared edges of one surface stay exactly
    opaque, and pixels without an empty neighbour are never touched (alpha 255 inside).
    Empty pixel with covered 4-neighbours: coverage of the pixel by each neighbour's
    triangle (all three edges); the best neighbour wins and is shaded at the pixel with
    clamped barycentrics. Both sides of an edge evaluate the same area function, so the
    edge is continuous and halo-free (colour is the surface's own, never the background's).
    Triangles with a vertex at w <= 0 (crossing the camera plane) get no edge AA.
    Alpha-tested (MASK) cut-outs are not anti-aliased.

Decisions beyond the batch-layout contract (kernels/__init__.py)
    - `tex_offset` is an element offset into the flat `tex_pixels` u8 array (bytes, i.e.
      4 * pixels); texel (x, y) of texture k is at tex_offset[k] + (y * w + x) * 4, row 0
      is the top of the image (glTF uv (0, 0)).
    - uv' = mat_uv_transform[m] @ (u, v, 1).
    - `n` (sessions this tick) and `max_lw`, `max_lh` (largest layer this tick, the launch
      extent) are explicit arguments: per-session rows are persistent arrays that may be
      longer than the batch, and on CUDA they live on the device.
    - Intra-layer blending (blend fragment over opaque) is done in linear light; the
      layer-over-background blend (composite) works on encoded values.
    - Arithmetic is float64 (numba's default for Python literals) on both targets: fine on
      CPUs and H100/H200/A100; on consumer/L4 GPUs (1/64-rate fp64) a float32 pass is the
      first optimisation to make.

Public: `shade_cpu(...)` and `shade_cuda(..., stream=0)`, same argument list.
"""

from __future__ import annotations

import functools
import math
from types import SimpleNamespace

import numpy as np
from numba import prange

from .backend import cpu_device, cpu_kernel, cuda_device, cuda_module
from .color import make_color_math

EMPTY = np.uint64(0xFFFFFFFFFFFFFFFF)
LOW32 = np.uint64(0xFFFFFFFF)

ALPHA_OPAQUE = 0
ALPHA_MASK = 1
ALPHA_BLEND = 2
SHADING_LAMBERT = 0
SHADING_UNLIT = 1
SHADING_MTOON = 2


def make_shade_math(jit) -> SimpleNamespace:
    """Per-pixel shading math, compiled with `jit` (cpu_device or cuda_device())."""
    cm = make_color_math(jit)
    srgb_u8_to_linear = cm.srgb_u8_to_linear
    linear_to_srgb_u8 = cm.linear_to_srgb_u8
    linstep = cm.linstep
    empty_word = EMPTY
    low32 = LOW32

    @jit
    def tri_of(word):
        """Local triangle id of a visibility word, -1 when empty."""
        if word == empty_word:
            return -1
        return int(word & low32) - 1

    @jit
    def is_empty(vis_opaque, vis_blend, i):
        return vis_opaque[i] == empty_word and vis_blend[i] == empty_word

    @jit
    def edge_coeffs(clip, o, lj, lk):
        """Homogeneous edge (v_j x v_k) over clip (x, y, w): c(p) = A*ndc_x + B*ndc_y + C."""
        xj = clip[o + lj, 0]
        yj = clip[o + lj, 1]
        wj = clip[o + lj, 3]
        xk = clip[o + lk, 0]
        yk = clip[o + lk, 1]
        wk = clip[o + lk, 3]
        return yj * wk - wj * yk, wj * xk - xj * wk, xj * yk - yj * xk, wj > 0.0 and wk > 0.0

    @jit
    def tri_verts(tris, tbase, t):
        r = tbase + t
        return tris[r, 0], tris[r, 1], tris[r, 2]

    @jit
    def bary(clip, o, l0, l1, l2, nx, ny):
        """Perspective-correct barycentrics at NDC (nx, ny) and the facing (True = front).

        b_i is proportional to (v_j x v_k) . (nx, ny, 1) with v the clip (x, y, w): exact
        perspective-correct weights, valid for any w (Olano & Greer homogeneous raster).
        """
        a0, b0, c0, _ = edge_coeffs(clip, o, l1, l2)
        a1, b1, c1, _ = edge_coeffs(clip, o, l2, l0)
        a2, b2, c2, _ = edge_coeffs(clip, o, l0, l1)
        e0 = a0 * nx + b0 * ny + c0
        e1 = a1 * nx + b1 * ny + c1
        e2 = a2 * nx + b2 * ny + c2
        det = clip[o + l0, 0] * a0 + clip[o + l0, 1] * b0 + clip[o + l0, 3] * c0
        total = e0 + e1 + e2
        if total == 0.0:
            return 1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0, det >= 0.0
        inv = 1.0 / total
        return e0 * inv, e1 * inv, e2 * inv, det >= 0.0

    @jit
    def edge_distance(clip, o, lj, lk, sign, nx, ny, sx, sy):
        """Inside-positive distance (pixels) of the pixel centre to edge (j, k).

        Returns (d, outward_x, outward_y, ok) with the outward unit normal in pixel space
        (y down); ok is False when the edge has a vertex at w <= 0.
        """
        a, b, c, ok = edge_coeffs(clip, o, lj, lk)
        gx = a * sx * sign
        gy = -b * sy * sign
        ge = math.sqrt(gx * gx + gy * gy)
        if not ok or ge <= 0.0:
            return 0.0, 0.0, 0.0, False
        e = (a * nx + b * ny + c) * sign
        return e / ge, -gx / ge, -gy / ge, True

    @jit
    def box_coverage(d, ox, oy):
        """Exact area of the unit pixel box inside a half-plane.

        d: signed distance of the box centre to the edge (positive inside), (ox, oy) the
        edge's unit normal. Linear in d in the middle, quadratic near both ends.
        """
        a = abs(ox)
        b = abs(oy)
        if b > a:
            a, b = b, a
        h = 0.5 * (a + b)
        k = 0.5 * (a - b)
        if d >= h:
            return 1.0
        if d <= -h:
            return 0.0
        if d > k:
            r = h - d
            return 1.0 - r * r / (2.0 * a * b)
        if d < -k:
            r = h + d
            return r * r / (2.0 * a * b)
        return 0.5 + d / a

    @jit
    def tri_sign(clip, o, l0, l1, l2):
        a0, b0, c0, _ = edge_coeffs(clip, o, l1, l2)
        det = clip[o + l0, 0] * a0 + clip[o + l0, 1] * b0 + clip[o + l0, 3] * c0
        return 1.0 if det >= 0.0 else -1.0

    @jit
    def texel(tex_pixels, base, tw, x, y):
        i = base + (y * tw + x) * 4
        return (
            srgb_u8_to_linear(tex_pixels[i]),
            srgb_u8_to_linear(tex_pixels[i + 1]),
            srgb_u8_to_linear(tex_pixels[i + 2]),
            tex_pixels[i + 3] * (1.0 / 255.0),
        )

    @jit
    def wrap(i, n):
        """i mod n in [0, n); the integer division only runs for uv outside [0, 1)."""
        if i >= 0 and i < n:
            return i
        i = i % n
        if i < 0:
            i += n
        return i

    @jit
    def sample_bilinear(tex_pixels, base, tw, th, u, v):
        """Bilinear, wrap = repeat, texel centres at (i + 0.5) / size; linear rgb, alpha."""
        if not (u == u) or not (v == v) or abs(u) > 1e6 or abs(v) > 1e6:
            u = 0.0
            v = 0.0
        fx = u * tw - 0.5
        fy = v * th - 0.5
        x0f = math.floor(fx)
        y0f = math.floor(fy)
        ax = fx - x0f
        ay = fy - y0f
        x0 = wrap(int(x0f), tw)
        y0 = wrap(int(y0f), th)
        x1 = x0 + 1
        if x1 >= tw:
            x1 = 0
        y1 = y0 + 1
        if y1 >= th:
            y1 = 0
        r00, g00, b00, a00 = texel(tex_pixels, base, tw, x0, y0)
        r10, g10, b10, a10 = texel(tex_pixels, base, tw, x1, y0)
        r01, g01, b01, a01 = texel(tex_pixels, base, tw, x0, y1)
        r11, g11, b11, a11 = texel(tex_pixels, base, tw, x1, y1)
        w00 = (1.0 - ax) * (1.0 - ay)
        w10 = ax * (1.0 - ay)
        w01 = (1.0 - ax) * ay
        w11 = ax * ay
        return (
            r00 * w00 + r10 * w10 + r01 * w01 + r11 * w11,
            g00 * w00 + g10 * w10 + g01 * w01 + g11 * w11,
            b00 * w00 + b10 * w10 + b01 * w01 + b11 * w11,
            a00 * w00 + a10 * w10 + a01 * w01 + a11 * w11,
        )

    @jit
    def shade_fragment(
        t, nx, ny, clamp_bary,
        clip, wnrm, uv, tris, tri_mat,
        mats, texs, vbase, tbase, obase, lx, ly, lz, ambient,
    ):  # fmt: skip
        """Straight linear (r, g, b, alpha, kept) of triangle t at NDC (nx, ny)."""
        (mat_base_color, mat_texture, mat_uv_transform, mat_alpha_mode, mat_alpha_cutoff,
         mat_shading, mat_shade_color, mat_toony, mat_shift) = mats  # fmt: skip
        tex_pixels, tex_offset, tex_size = texs
        l0, l1, l2 = tri_verts(tris, tbase, t)
        b0, b1, b2, front = bary(clip, obase, l0, l1, l2, nx, ny)
        if clamp_bary:
            b0 = max(b0, 0.0)
            b1 = max(b1, 0.0)
            b2 = max(b2, 0.0)
            bs = b0 + b1 + b2
            if bs <= 0.0:
                b0 = 1.0
                bs = 1.0
            b0 /= bs
            b1 /= bs
            b2 /= bs
        m = tri_mat[tbase + t]
        r = mat_base_color[m, 0]
        g = mat_base_color[m, 1]
        b = mat_base_color[m, 2]
        a = mat_base_color[m, 3]
        tr = 1.0
        tg = 1.0
        tb = 1.0
        k = mat_texture[m]
        if k >= 0:
            v0 = vbase + l0
            v1 = vbase + l1
            v2 = vbase + l2
            u = uv[v0, 0] * b0 + uv[v1, 0] * b1 + uv[v2, 0] * b2
            v = uv[v0, 1] * b0 + uv[v1, 1] * b1 + uv[v2, 1] * b2
            tu = mat_uv_transform[m, 0, 0] * u + mat_uv_transform[m, 0, 1] * v
            tv = mat_uv_transform[m, 1, 0] * u + mat_uv_transform[m, 1, 1] * v
            tu += mat_uv_transform[m, 0, 2]
            tv += mat_uv_transform[m, 1, 2]
            tr, tg, tb, ta = sample_bilinear(
                tex_pixels, tex_offset[k], tex_size[k, 0], tex_size[k, 1], tu, tv
            )
            r *= tr
            g *= tg
            b *= tb
            a *= ta
        mode = mat_alpha_mode[m]
        if mode == ALPHA_MASK:
            if a < mat_alpha_cutoff[m]:
                return 0.0, 0.0, 0.0, 0.0, False
            a = 1.0
        elif mode != ALPHA_BLEND:
            a = 1.0
        shading = mat_shading[m]
        if shading == SHADING_UNLIT:
            return r, g, b, a, True
        o0 = obase + l0
        o1 = obase + l1
        o2 = obase + l2
        wx = wnrm[o0, 0] * b0 + wnrm[o1, 0] * b1 + wnrm[o2, 0] * b2
        wy = wnrm[o0, 1] * b0 + wnrm[o1, 1] * b1 + wnrm[o2, 1] * b2
        wz = wnrm[o0, 2] * b0 + wnrm[o1, 2] * b1 + wnrm[o2, 2] * b2
        nn = math.sqrt(wx * wx + wy * wy + wz * wz)
        ndotl = 0.0
        if nn > 0.0:
            ndotl = (wx * lx + wy * ly + wz * lz) / nn
            if not front:
                ndotl = -ndotl
        if shading == SHADING_MTOON:
            tt = linstep(-1.0 + mat_toony[m], 1.0 - mat_toony[m], ndotl + mat_shift[m])
            sr = mat_shade_color[m, 0] * tr
            sg = mat_shade_color[m, 1] * tg
            sb = mat_shade_color[m, 2] * tb
            return sr + (r - sr) * tt, sg + (g - sg) * tt, sb + (b - sb) * tt, a, True
        f = ambient + (1.0 - ambient) * max(ndotl, 0.0)
        return r * f, g * f, b * f, a, True

    @jit
    def shade_pixel(
        x, y, lw, lh, sx, sy, lbase,
        clip, wnrm, uv, tris, tri_mat,
        mats, texs, vbase, tbase, obase, lx, ly, lz, ambient,
        vis_opaque, vis_blend, rgba,
    ):  # fmt: skip
        """Resolve one layer pixel into rgba (premultiplied, sRGB-encoded).

        `mats` and `texs` group the material and texture arrays (kernel argument order)
        because numba cannot inline calls with more than 30 arguments. sx = 2 / lw and
        sy = 2 / lh (pixel -> NDC scale) are hoisted out of the per-pixel work.
        """
        i = lbase + y * lw + x
        to = tri_of(vis_opaque[i])
        tbl = tri_of(vis_blend[i])
        if to < 0 and tbl < 0:
            # empty: only a pixel next to the avatar can receive edge coverage
            if not (
                (x > 0 and not is_empty(vis_opaque, vis_blend, i - 1))
                or (x + 1 < lw and not is_empty(vis_opaque, vis_blend, i + 1))
                or (y > 0 and not is_empty(vis_opaque, vis_blend, i - lw))
                or (y + 1 < lh and not is_empty(vis_opaque, vis_blend, i + lw))
            ):
                rgba[i, 0] = 0
                rgba[i, 1] = 0
                rgba[i, 2] = 0
                rgba[i, 3] = 0
                return
            sil = True
        else:
            # silhouette: an empty 4-neighbour inside the layer
            sil = (
                (x > 0 and is_empty(vis_opaque, vis_blend, i - 1))
                or (x + 1 < lw and is_empty(vis_opaque, vis_blend, i + 1))
                or (y > 0 and is_empty(vis_opaque, vis_blend, i - lw))
                or (y + 1 < lh and is_empty(vis_opaque, vis_blend, i + lw))
            )
        nx = (x + 0.5) * sx - 1.0
        ny = 1.0 - (y + 0.5) * sy

        cr = 0.0
        cg = 0.0
        cb = 0.0
        ca = 0.0
        cov = 1.0
        if to >= 0 or tbl >= 0:
            if to >= 0:
                cr, cg, cb, ca, kept = shade_fragment(
                    to, nx, ny, False,
                    clip, wnrm, uv, tris, tri_mat,
                    mats, texs, vbase, tbase, obase, lx, ly, lz, ambient,
                )  # fmt: skip
                ca = 1.0 if kept else 0.0
            if tbl >= 0:
                br, bg, bb, ba, kept = shade_fragment(
                    tbl, nx, ny, False,
                    clip, wnrm, uv, tris, tri_mat,
                    mats, texs, vbase, tbase, obase, lx, ly, lz, ambient,
                )  # fmt: skip
                if kept:
                    if to >= 0:
                        keep = 1.0 - ba
                        cr = br * ba + cr * keep
                        cg = bg * ba + cg * keep
                        cb = bb * ba + cb * keep
                    else:
                        cr = br
                        cg = bg
                        cb = bb
                        ca = ba
            if sil:
                t = to if to >= 0 else tbl
                l0, l1, l2 = tri_verts(tris, tbase, t)
                sign = tri_sign(clip, obase, l0, l1, l2)
                for e in range(3):
                    lj = l1
                    lk = l2
                    if e == 1:
                        lj = l2
                        lk = l0
                    elif e == 2:
                        lj = l0
                        lk = l1
                    de, ox, oy, ok = edge_distance(clip, obase, lj, lk, sign, nx, ny, sx, sy)
                    if not ok or de > 1.5:
                        continue
                    px = x + 0.5 + ox * (de + 1.0)
                    py = y + 0.5 + oy * (de + 1.0)
                    if px < 0.0 or py < 0.0 or px >= lw or py >= lh:
                        continue  # the layer border is not a silhouette
                    q = lbase + int(py) * lw + int(px)
                    if is_empty(vis_opaque, vis_blend, q):
                        cov *= box_coverage(de, ox, oy)
        elif sil:
            # empty pixel next to the avatar: best coverage among the neighbours' triangles
            best = 0.0
            best_t = -1
            for nb in range(4):
                q = i
                if nb == 0:
                    if x == 0:
                        continue
                    q = i - 1
                elif nb == 1:
                    if x + 1 >= lw:
                        continue
                    q = i + 1
                elif nb == 2:
                    if y == 0:
                        continue
                    q = i - lw
                else:
                    if y + 1 >= lh:
                        continue
                    q = i + lw
                t = tri_of(vis_opaque[q])
                if t < 0:
                    t = tri_of(vis_blend[q])
                if t < 0:
                    continue
                l0, l1, l2 = tri_verts(tris, tbase, t)
                sign = tri_sign(clip, obase, l0, l1, l2)
                c = 1.0
                usable = True
                for e in range(3):
                    lj = l1
                    lk = l2
                    if e == 1:
                        lj = l2
                        lk = l0
                    elif e == 2:
                        lj = l0
                        lk = l1
                    de, ox, oy, ok = edge_distance(clip, obase, lj, lk, sign, nx, ny, sx, sy)
                    if not ok:
                        usable = False
                    c *= box_coverage(de, ox, oy)
                if not usable:
                    continue
                if c > best:
                    best = c
                    best_t = t
            if best_t >= 0:
                cr, cg, cb, ca, kept = shade_fragment(
                    best_t, nx, ny, True,
                    clip, wnrm, uv, tris, tri_mat,
                    mats, texs, vbase, tbase, obase, lx, ly, lz, ambient,
                )  # fmt: skip
                if not kept:
                    ca = 0.0
                cov = best
        alpha = ca * cov
        if alpha <= 0.0:
            rgba[i, 0] = 0
            rgba[i, 1] = 0
            rgba[i, 2] = 0
            rgba[i, 3] = 0
            return
        if alpha >= 1.0:
            rgba[i, 0] = linear_to_srgb_u8(cr)
            rgba[i, 1] = linear_to_srgb_u8(cg)
            rgba[i, 2] = linear_to_srgb_u8(cb)
            rgba[i, 3] = 255
            return
        rgba[i, 0] = int(linear_to_srgb_u8(cr) * alpha + 0.5)
        rgba[i, 1] = int(linear_to_srgb_u8(cg) * alpha + 0.5)
        rgba[i, 2] = int(linear_to_srgb_u8(cb) * alpha + 0.5)
        rgba[i, 3] = int(alpha * 255.0 + 0.5)

    return SimpleNamespace(
        tri_of=tri_of,
        bary=bary,
        sample_bilinear=sample_bilinear,
        shade_fragment=shade_fragment,
        shade_pixel=shade_pixel,
    )


_cpu = make_shade_math(cpu_device)
_shade_pixel_cpu = _cpu.shade_pixel


@cpu_kernel(error_model="numpy")  # no exception paths in the hot loop
def _shade_cpu_kernel(
    n, max_lw, max_lh,
    clip, wnrm, uv, tris, tri_mat,
    mat_base_color, mat_texture, mat_uv_transform, mat_alpha_mode, mat_alpha_cutoff,
    mat_shading, mat_shade_color, mat_toony, mat_shift,
    tex_pixels, tex_offset, tex_size,
    s_vbase, s_tbase, s_obase, s_light, s_lw, s_lh, s_lbase,
    vis_opaque, vis_blend, rgba,
):  # fmt: skip
    mats = (mat_base_color, mat_texture, mat_uv_transform, mat_alpha_mode, mat_alpha_cutoff,
            mat_shading, mat_shade_color, mat_toony, mat_shift)  # fmt: skip
    texs = (tex_pixels, tex_offset, tex_size)
    for item in prange(n * max_lh):
        s = item // max_lh
        y = item - s * max_lh
        lh = s_lh[s]
        if y >= lh:
            continue
        lw = s_lw[s]
        lx = s_light[s, 0]
        ly = s_light[s, 1]
        lz = s_light[s, 2]
        ln = math.sqrt(lx * lx + ly * ly + lz * lz)
        if ln > 0.0:
            lx /= ln
            ly /= ln
            lz /= ln
        sx = 2.0 / lw
        sy = 2.0 / lh
        for x in range(lw):
            _shade_pixel_cpu(
                x, y, lw, lh, sx, sy, s_lbase[s],
                clip, wnrm, uv, tris, tri_mat, mats, texs,
                s_vbase[s], s_tbase[s], s_obase[s], lx, ly, lz, s_light[s, 3],
                vis_opaque, vis_blend, rgba,
            )  # fmt: skip


def shade_cpu(
    n: int, max_lw: int, max_lh: int,
    clip: np.ndarray, wnrm: np.ndarray, uv: np.ndarray, tris: np.ndarray, tri_mat: np.ndarray,
    mat_base_color: np.ndarray, mat_texture: np.ndarray, mat_uv_transform: np.ndarray,
    mat_alpha_mode: np.ndarray, mat_alpha_cutoff: np.ndarray, mat_shading: np.ndarray,
    mat_shade_color: np.ndarray, mat_toony: np.ndarray, mat_shift: np.ndarray,
    tex_pixels: np.ndarray, tex_offset: np.ndarray, tex_size: np.ndarray,
    s_vbase: np.ndarray, s_tbase: np.ndarray, s_obase: np.ndarray, s_light: np.ndarray,
    s_lw: np.ndarray, s_lh: np.ndarray, s_lbase: np.ndarray,
    vis_opaque: np.ndarray, vis_blend: np.ndarray, rgba: np.ndarray,
) -> None:  # fmt: skip
    """Shade sessions 0..n-1 into `rgba` [*,4] u8 (CPU, parallel over session rows).

    `max_lw`/`max_lh` bound every s_lw/s_lh of the batch (the launch extent). `tex_pixels`
    must hold at least one element even when no material is textured.
    """
    if n <= 0:
        return
    _shade_cpu_kernel(
        n, max_lw, max_lh,
        clip, wnrm, uv, tris, tri_mat,
        mat_base_color, mat_texture, mat_uv_transform, mat_alpha_mode, mat_alpha_cutoff,
        mat_shading, mat_shade_color, mat_toony, mat_shift,
        tex_pixels, tex_offset, tex_size,
        s_vbase, s_tbase, s_obase, s_light, s_lw, s_lh, s_lbase,
        vis_opaque, vis_blend, rgba,
    )  # fmt: skip


CUDA_BLOCK = (16, 16, 1)
cuda = None  # numba.cuda once a CUDA kernel is first built


@functools.cache
def _shade_cuda_kernel():
    """Compile the CUDA kernel on first use (numba.cuda is imported lazily).

    `cuda` is bound as a module global, not a closure variable: numba's simulator swaps
    in its fake `cuda` module by rewriting the kernel's globals.
    """
    global cuda
    cuda = cuda_module()
    shade_pixel = make_shade_math(cuda_device()).shade_pixel

    @cuda.jit
    def kernel(
        n, max_lw, max_lh,
        clip, wnrm, uv, tris, tri_mat,
        mat_base_color, mat_texture, mat_uv_transform, mat_alpha_mode, mat_alpha_cutoff,
        mat_shading, mat_shade_color, mat_toony, mat_shift,
        tex_pixels, tex_offset, tex_size,
        s_vbase, s_tbase, s_obase, s_light, s_lw, s_lh, s_lbase,
        vis_opaque, vis_blend, rgba,
    ):  # fmt: skip
        mats = (mat_base_color, mat_texture, mat_uv_transform, mat_alpha_mode,
                mat_alpha_cutoff, mat_shading, mat_shade_color, mat_toony, mat_shift)  # fmt: skip
        texs = (tex_pixels, tex_offset, tex_size)
        x, y = cuda.grid(2)
        s = cuda.blockIdx.z
        if s >= n:
            return
        lw = s_lw[s]
        lh = s_lh[s]
        if x >= lw or y >= lh:
            return
        lx = s_light[s, 0]
        ly = s_light[s, 1]
        lz = s_light[s, 2]
        ln = math.sqrt(lx * lx + ly * ly + lz * lz)
        if ln > 0.0:
            lx /= ln
            ly /= ln
            lz /= ln
        shade_pixel(
            x, y, lw, lh, 2.0 / lw, 2.0 / lh, s_lbase[s],
            clip, wnrm, uv, tris, tri_mat, mats, texs,
            s_vbase[s], s_tbase[s], s_obase[s], lx, ly, lz, s_light[s, 3],
            vis_opaque, vis_blend, rgba,
        )  # fmt: skip

    return kernel


def shade_cuda(
    n: int, max_lw: int, max_lh: int,
    clip, wnrm, uv, tris, tri_mat,
    mat_base_color, mat_texture, mat_uv_transform, mat_alpha_mode, mat_alpha_cutoff,
    mat_shading, mat_shade_color, mat_toony, mat_shift,
    tex_pixels, tex_offset, tex_size,
    s_vbase, s_tbase, s_obase, s_light, s_lw, s_lh, s_lbase,
    vis_opaque, vis_blend, rgba,
    stream=0,
) -> None:  # fmt: skip
    """Shade on CUDA: one thread per layer pixel, grid (x, y, session); arrays on device."""
    if n <= 0:
        return
    bx, by, _ = CUDA_BLOCK
    grid = ((max_lw + bx - 1) // bx, (max_lh + by - 1) // by, n)
    _shade_cuda_kernel()[grid, CUDA_BLOCK, stream](
        n, max_lw, max_lh,
        clip, wnrm, uv, tris, tri_mat,
        mat_base_color, mat_texture, mat_uv_transform, mat_alpha_mode, mat_alpha_cutoff,
        mat_shading, mat_shade_color, mat_toony, mat_shift,
        tex_pixels, tex_offset, tex_size,
        s_vbase, s_tbase, s_obase, s_light, s_lw, s_lh, s_lbase,
        vis_opaque, vis_blend, rgba,
    )  # fmt: skip
