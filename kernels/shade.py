"""Stage 3: resolve the visibility buffers into the premultiplied sRGB avatar layer.

Per layer pixel of every session (one CUDA thread each; on the CPU, (session, band of rows)
items that the threads claim, kernels/backend.py): read `vis_opaque`, rebuild the triangle's
perspective-correct barycentrics at the pixel centre from its clip-space vertices,
interpolate uv (through the material's uv transform) and the world normal, sample the
base-colour texture bilinearly (sRGB texels decoded to linear before filtering, wrap =
repeat), light it, composite the `vis_blend` fragment over it in linear light, then write
premultiplied, sRGB-encoded RGBA8 to `rgba[s_lbase + y * lw + x]`.

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

import numba
import numpy as np
from numba import get_num_threads, prange

from .backend import (
    claim_counters,
    claim_item,
    cpu_device,
    cpu_kernel,
    cpu_rare,
    cuda_device,
    cuda_module,
    start_claims,
)
from .color import make_color_math
from .damage import full_layers, full_layers_device

EMPTY = np.uint64(0xFFFFFFFFFFFFFFFF)
LOW32 = np.uint64(0xFFFFFFFF)

ALPHA_OPAQUE = 0
ALPHA_MASK = 1
ALPHA_BLEND = 2
SHADING_LAMBERT = 0
SHADING_UNLIT = 1
SHADING_MTOON = 2


def make_shade_math(jit) -> SimpleNamespace:
    """Per-pixel shading math, compiled with `jit` (cpu_device or cuda_device()).

    Per-triangle constants (edge planes, material, vertex attributes) are gathered once by
    `tri_setup`; the CPU launcher reuses them across a row's run of pixels of one triangle,
    the CUDA kernel calls it per pixel. Argument groups (numba inlines at most 30
    arguments): geo = (clip, wnrm, uv, tris, tri_mat), mats = the material arrays in
    kernel order, texs = (tex_pixels, tex_offset, tex_size), ses = (vbase, tbase, obase,
    lbase), light = (lx, ly, lz, ambient) with the direction normalised.
    """
    cm = make_color_math(jit)
    srgb_u8_to_linear = cm.srgb_u8_to_linear
    linear_to_srgb_u8 = cm.linear_to_srgb_u8
    linstep = cm.linstep
    linstep_range = cm.linstep_range
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
        """Both words empty (all ones): their AND is all ones exactly then."""
        return (vis_opaque[i] & vis_blend[i]) == empty_word

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
    def tri_setup(t, geo, mats, texs, ses):
        """Everything about local triangle t that does not depend on the pixel.

        Returns (edges, front, mat, tex, nrm): edges[e] = (A, B, C, ok) of the edge opposite
        vertex e (ok: both its vertices at w > 0), front = the facing, mat = (r, g, b, a,
        alpha mode, cutoff, shading, shade r, g, b, the MToon band in n.l: lower edge, 1 /
        width (linstep_range), upper edge),
        tex = (texture, offset, w, h, the three uvs, the uv transform's 6 terms), nrm = the
        three world normals. Floats are widened to float64 exactly, so the per-pixel math
        matches evaluating it from the arrays directly.
        """
        clip, wnrm, uv, tris, tri_mat = geo
        (mat_base_color, mat_texture, mat_uv_transform, mat_alpha_mode, mat_alpha_cutoff,
         mat_shading, mat_shade_color, mat_toony, mat_shift) = mats  # fmt: skip
        tex_pixels, tex_offset, tex_size = texs
        vbase, tbase, obase, lbase = ses
        g = tbase + t
        l0 = tris[g, 0]
        l1 = tris[g, 1]
        l2 = tris[g, 2]
        a0, b0, c0, ok0 = edge_coeffs(clip, obase, l1, l2)
        a1, b1, c1, ok1 = edge_coeffs(clip, obase, l2, l0)
        a2, b2, c2, ok2 = edge_coeffs(clip, obase, l0, l1)
        det = clip[obase + l0, 0] * a0 + clip[obase + l0, 1] * b0 + clip[obase + l0, 3] * c0
        edges = (
            (float(a0), float(b0), float(c0), ok0),
            (float(a1), float(b1), float(c1), ok1),
            (float(a2), float(b2), float(c2), ok2),
        )
        m = tri_mat[g]
        # MToon's band over n.l + shift, moved to n.l: [band_lo, band_hi], 1 / its width
        t_lo, t_inv = linstep_range(-1.0 + mat_toony[m], 1.0 - mat_toony[m])
        shift = float(mat_shift[m])
        band_lo = t_lo - shift
        band_hi = (1.0 - mat_toony[m]) - shift
        mat = (
            float(mat_base_color[m, 0]), float(mat_base_color[m, 1]),
            float(mat_base_color[m, 2]), float(mat_base_color[m, 3]),
            mat_alpha_mode[m], float(mat_alpha_cutoff[m]), mat_shading[m],
            float(mat_shade_color[m, 0]), float(mat_shade_color[m, 1]),
            float(mat_shade_color[m, 2]), band_lo, t_inv, band_hi,
        )  # fmt: skip
        k = mat_texture[m]
        tex = (k, np.int64(0), np.int64(1), np.int64(1), (0.0,) * 6, (0.0,) * 6)
        if k >= 0:
            v0 = vbase + l0
            v1 = vbase + l1
            v2 = vbase + l2
            tex = (
                k, np.int64(tex_offset[k]), np.int64(tex_size[k, 0]), np.int64(tex_size[k, 1]),
                (float(uv[v0, 0]), float(uv[v0, 1]), float(uv[v1, 0]), float(uv[v1, 1]),
                 float(uv[v2, 0]), float(uv[v2, 1])),
                (float(mat_uv_transform[m, 0, 0]), float(mat_uv_transform[m, 0, 1]),
                 float(mat_uv_transform[m, 0, 2]), float(mat_uv_transform[m, 1, 0]),
                 float(mat_uv_transform[m, 1, 1]), float(mat_uv_transform[m, 1, 2])),
            )  # fmt: skip
        o0 = obase + l0
        o1 = obase + l1
        o2 = obase + l2
        nrm = (
            float(wnrm[o0, 0]), float(wnrm[o0, 1]), float(wnrm[o0, 2]),
            float(wnrm[o1, 0]), float(wnrm[o1, 1]), float(wnrm[o1, 2]),
            float(wnrm[o2, 0]), float(wnrm[o2, 1]), float(wnrm[o2, 2]),
        )  # fmt: skip
        return edges, det >= 0.0, mat, tex, nrm

    @jit
    def weights(edges, nx, ny):
        """Perspective-correct barycentric weights at NDC (nx, ny) before normalisation:
        (w0, w1, w2, their sum); b_i = w_i / sum. A zero sum gives 1/3 each.

        w_i is (v_j x v_k) . (nx, ny, 1) with v the clip (x, y, w): exact perspective-correct
        weights, valid for any w (Olano & Greer homogeneous raster).
        """
        a0, b0, c0, _ = edges[0]
        a1, b1, c1, _ = edges[1]
        a2, b2, c2, _ = edges[2]
        e0 = a0 * nx + b0 * ny + c0
        e1 = a1 * nx + b1 * ny + c1
        e2 = a2 * nx + b2 * ny + c2
        total = e0 + e1 + e2
        if total == 0.0:  # (one return: an early one here cost the CPU loop 1 ms/af)
            e0 = 1.0 / 3.0
            e1 = 1.0 / 3.0
            e2 = 1.0 / 3.0
            total = 1.0
        return e0, e1, e2, total

    @jit
    def edge_distance(edge, sign, nx, ny, sx, sy):
        """Inside-positive distance (pixels) of the pixel centre to an edge.

        Returns (d, outward_x, outward_y, ok) with the outward unit normal in pixel space
        (y down); ok is False when the edge has a vertex at w <= 0.
        """
        a, b, c, ok = edge
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
    def at_least(dot, nn2, c):
        """dot / sqrt(nn2) >= c for nn2 > 0, by comparing squares (no sqrt, no divide)."""
        if c >= 0.0:
            return dot >= 0.0 and dot * dot >= c * c * nn2
        return dot >= 0.0 or dot * dot <= c * c * nn2

    @jit
    def toon_band(dot, nn2, lo, inv, hi):
        """MToon's linstep of n.l = dot / sqrt(nn2) (0 when nn2 is not > 0) over [lo, hi],
        a step at lo when inv is 0. Outside the band the answer is 0 or 1 from comparing
        squares, so the sqrt and the divide run only for the pixels inside it (the light's
        terminator)."""
        if not nn2 > 0.0:
            return linstep(lo, inv, 0.0)
        if not at_least(dot, nn2, lo):
            return 0.0
        if inv == 0.0 or at_least(dot, nn2, hi):
            return 1.0
        return linstep(lo, inv, dot / math.sqrt(nn2))

    @jit
    def shade_fragment(st, nx, ny, clamp_bary, tex_pixels, light):
        """Straight linear (r, g, b, alpha, kept) of the triangle set up in `st` at NDC
        (nx, ny)."""
        edges, front, mat, tex, nrm = st
        r, g, b, a, mode, cutoff, shading, shr, shg, shb, band_lo, band_inv, band_hi = mat
        k, tbase, tw, th, uvs, uvt = tex
        lx, ly, lz, ambient = light
        b0, b1, b2, total = weights(edges, nx, ny)
        if clamp_bary or k >= 0:  # normalised weights (the normal needs none)
            inv = 1.0 / total
            b0 *= inv
            b1 *= inv
            b2 *= inv
            total = 1.0
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
        tr = 1.0
        tg = 1.0
        tb = 1.0
        if k >= 0:
            u = uvs[0] * b0 + uvs[2] * b1 + uvs[4] * b2
            v = uvs[1] * b0 + uvs[3] * b1 + uvs[5] * b2
            tu = uvt[0] * u + uvt[1] * v
            tv = uvt[3] * u + uvt[4] * v
            tu += uvt[2]
            tv += uvt[5]
            tr, tg, tb, ta = sample_bilinear(tex_pixels, tbase, tw, th, tu, tv)
            r *= tr
            g *= tg
            b *= tb
            a *= ta
        if mode == ALPHA_MASK:
            if a < cutoff:
                return 0.0, 0.0, 0.0, 0.0, False
            a = 1.0
        elif mode != ALPHA_BLEND:
            a = 1.0
        if shading == SHADING_UNLIT:
            return r, g, b, a, True
        wx = nrm[0] * b0 + nrm[3] * b1 + nrm[6] * b2
        wy = nrm[1] * b0 + nrm[4] * b1 + nrm[7] * b2
        wz = nrm[2] * b0 + nrm[5] * b1 + nrm[8] * b2
        nn2 = wx * wx + wy * wy + wz * wz
        dot = wx * lx + wy * ly + wz * lz  # n.l = dot / sqrt(nn2), 0 when nn2 is not > 0
        if front == (total < 0.0):  # a back face, or weights with a negative sum
            dot = -dot
        if shading == SHADING_MTOON:
            tt = toon_band(dot, nn2, band_lo, band_inv, band_hi)
            sr = shr * tr
            sg = shg * tg
            sb = shb * tb
            return sr + (r - sr) * tt, sg + (g - sg) * tt, sb + (b - sb) * tt, a, True
        ndotl = 0.0
        if nn2 > 0.0:
            ndotl = dot / math.sqrt(nn2)
        f = ambient + (1.0 - ambient) * max(ndotl, 0.0)
        return r * f, g * f, b * f, a, True

    @jit
    def silhouette_coverage(st, x, y, lw, lh, nx, ny, sx, sy, lbase, vis_opaque, vis_blend):
        """Coverage of a covered pixel by the silhouette edges of its triangle: each edge
        within 1.5 px whose probe 1 px beyond lands on an empty pixel of the layer."""
        edges = st[0]
        sign = 1.0 if st[1] else -1.0
        cov = 1.0
        for e in range(3):
            de, ox, oy, ok = edge_distance(edges[e], sign, nx, ny, sx, sy)
            if not ok or de > 1.5:
                continue
            px = x + 0.5 + ox * (de + 1.0)
            py = y + 0.5 + oy * (de + 1.0)
            if px < 0.0 or py < 0.0 or px >= lw or py >= lh:
                continue  # the layer border is not a silhouette
            q = lbase + int(py) * lw + int(px)
            if is_empty(vis_opaque, vis_blend, q):
                cov *= box_coverage(de, ox, oy)
        return cov

    @jit
    def has_empty_neighbour(x, y, i, lw, lh, vis_opaque, vis_blend):
        """Whether a 4-neighbour inside the layer is empty, for a non-empty pixel i.

        Branch-free: a neighbour outside the layer is replaced by i itself, and "some word
        pair ANDs to all ones" is "their maximum is all ones"."""
        q0 = i - 1 if x > 0 else i
        q1 = i + 1 if x + 1 < lw else i
        q2 = i - lw if y > 0 else i
        q3 = i + lw if y + 1 < lh else i
        w01 = max(vis_opaque[q0] & vis_blend[q0], vis_opaque[q1] & vis_blend[q1])
        w23 = max(vis_opaque[q2] & vis_blend[q2], vis_opaque[q3] & vis_blend[q3])
        return max(w01, w23) == empty_word

    @jit
    def store(rgba, i, cr, cg, cb, alpha):
        """Write straight linear colour with coverage `alpha` as premultiplied sRGB8."""
        if alpha <= 0.0:
            rgba[i, 0] = 0
            rgba[i, 1] = 0
            rgba[i, 2] = 0
            rgba[i, 3] = 0
        elif alpha >= 1.0:
            rgba[i, 0] = linear_to_srgb_u8(cr)
            rgba[i, 1] = linear_to_srgb_u8(cg)
            rgba[i, 2] = linear_to_srgb_u8(cb)
            rgba[i, 3] = 255
        else:
            rgba[i, 0] = int(linear_to_srgb_u8(cr) * alpha + 0.5)
            rgba[i, 1] = int(linear_to_srgb_u8(cg) * alpha + 0.5)
            rgba[i, 2] = int(linear_to_srgb_u8(cb) * alpha + 0.5)
            rgba[i, 3] = int(alpha * 255.0 + 0.5)

    @jit
    def covered_colour(i, nx, ny, so, geo, mats, texs, ses, light, vis_opaque, vis_blend):
        """Straight linear (r, g, b, alpha) at layer pixel i, NDC (nx, ny), whose opaque
        triangle is set up in `so`: its fragment with the blend fragment over it. The
        silhouette coverage is the caller's (it knows the neighbours cheapest)."""
        cr, cg, cb, _, kept = shade_fragment(so, nx, ny, False, texs[0], light)
        ca = 1.0 if kept else 0.0
        word = vis_blend[i]
        # equal words: vis_blend is vis_opaque (no blend layer; kernels/__init__.py)
        tbl = tri_of(word) if word != vis_opaque[i] else -1
        if tbl >= 0:
            sb = tri_setup(tbl, geo, mats, texs, ses)
            br, bg, bb, ba, kept = shade_fragment(sb, nx, ny, False, texs[0], light)
            if kept:
                keep = 1.0 - ba
                cr = br * ba + cr * keep
                cg = bg * ba + cg * keep
                cb = bb * ba + cb * keep
        return cr, cg, cb, ca

    @jit
    def shade_uncovered(
        x, y, lw, lh, sx, sy, geo, mats, texs, ses, light, vis_opaque, vis_blend, rgba,
    ):  # fmt: skip
        """A pixel without an opaque triangle: the blend fragment alone, or, for an empty
        pixel next to the avatar, the best coverage among its neighbours' triangles."""
        lbase = ses[3]
        i = lbase + y * lw + x
        nx = (x + 0.5) * sx - 1.0
        ny = 1.0 - (y + 0.5) * sy
        tbl = tri_of(vis_blend[i])
        if tbl >= 0:
            sb = tri_setup(tbl, geo, mats, texs, ses)
            cr, cg, cb, ca, kept = shade_fragment(sb, nx, ny, False, texs[0], light)
            if not kept:
                ca = 0.0
            cov = 1.0
            if has_empty_neighbour(x, y, i, lw, lh, vis_opaque, vis_blend):
                cov = silhouette_coverage(
                    sb, x, y, lw, lh, nx, ny, sx, sy, lbase, vis_opaque, vis_blend
                )
            store(rgba, i, cr, cg, cb, ca * cov)
            return
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
            st = tri_setup(t, geo, mats, texs, ses)
            sign = 1.0 if st[1] else -1.0
            c = 1.0
            usable = True
            for e in range(3):
                de, ox, oy, ok = edge_distance(st[0][e], sign, nx, ny, sx, sy)
                if not ok:
                    usable = False
                c *= box_coverage(de, ox, oy)
            if usable and c > best:
                best = c
                best_t = t
        if best_t < 0:
            store(rgba, i, 0.0, 0.0, 0.0, 0.0)
            return
        st = tri_setup(best_t, geo, mats, texs, ses)
        cr, cg, cb, ca, kept = shade_fragment(st, nx, ny, True, texs[0], light)
        store(rgba, i, cr, cg, cb, ca * best if kept else 0.0)

    @jit
    def shade_pixel(x, y, lw, lh, sx, sy, geo, mats, texs, ses, light, vis_opaque, vis_blend,
                    rgba):  # fmt: skip
        """Resolve one layer pixel into rgba (premultiplied, sRGB-encoded)."""
        lbase = ses[3]
        i = lbase + y * lw + x
        to = tri_of(vis_opaque[i])
        if to >= 0:
            so = tri_setup(to, geo, mats, texs, ses)
            nx = (x + 0.5) * sx - 1.0
            ny = 1.0 - (y + 0.5) * sy
            cr, cg, cb, ca = covered_colour(
                i, nx, ny, so, geo, mats, texs, ses, light, vis_opaque, vis_blend
            )
            if has_empty_neighbour(x, y, i, lw, lh, vis_opaque, vis_blend):
                ca *= silhouette_coverage(
                    so, x, y, lw, lh, nx, ny, sx, sy, lbase, vis_opaque, vis_blend
                )
            store(rgba, i, cr, cg, cb, ca)
        else:
            shade_uncovered(
                x, y, lw, lh, sx, sy, geo, mats, texs, ses, light, vis_opaque, vis_blend, rgba
            )

    @jit
    def row_extent(vis_opaque, vis_blend, row, x_lo, x_hi):
        """[first, last + 1) of the non-empty pixels among columns [x_lo, x_hi) of the
        layer row starting at `row`; (x_hi, x_lo) when there are none."""
        first = x_lo
        while first < x_hi and is_empty(vis_opaque, vis_blend, row + first):
            first += 1
        last = x_hi
        while last > first and is_empty(vis_opaque, vis_blend, row + last - 1):
            last -= 1
        if first >= last:
            return x_hi, x_lo
        return first, last

    @jit
    def session_light(s_light, s):
        """The session's light with its direction normalised."""
        lx = s_light[s, 0]
        ly = s_light[s, 1]
        lz = s_light[s, 2]
        ln = math.sqrt(lx * lx + ly * ly + lz * lz)
        if ln > 0.0:
            lx /= ln
            ly /= ln
            lz /= ln
        return lx, ly, lz, s_light[s, 3]

    return SimpleNamespace(
        tri_of=tri_of,
        tri_setup=tri_setup,
        weights=weights,
        sample_bilinear=sample_bilinear,
        shade_fragment=shade_fragment,
        covered_colour=covered_colour,
        silhouette_coverage=silhouette_coverage,
        has_empty_neighbour=has_empty_neighbour,
        is_empty=is_empty,
        store=store,
        shade_uncovered=shade_uncovered,
        shade_pixel=shade_pixel,
        row_extent=row_extent,
        session_light=session_light,
    )


_cpu = make_shade_math(cpu_device)
_tri_of = _cpu.tri_of
_tri_setup = _cpu.tri_setup
_covered_colour = _cpu.covered_colour
_has_empty_neighbour = _cpu.has_empty_neighbour
_is_empty = _cpu.is_empty
_store = _cpu.store
_row_extent = _cpu.row_extent
_session_light = _cpu.session_light
# the rare paths (edge pixels: ~1 % of a layer's pixels) are real calls, see cpu_rare
_silhouette_coverage = cpu_rare(_cpu.silhouette_coverage.py_func)
_shade_uncovered = cpu_rare(_cpu.shade_uncovered.py_func)


CPU_BAND_ROWS = 8
"""Rows per CPU work item: each row's extent is found once per band, not three times."""


@cpu_device
def _clear_rgba(rgba, i0, i1):
    for i in range(i0, i1):
        rgba[i, 0] = 0
        rgba[i, 1] = 0
        rgba[i, 2] = 0
        rgba[i, 3] = 0


@cpu_device
def _run_end(vis_opaque, row, x, x1):
    """End of the run [x, end) of pixels whose opaque word names pixel x's triangle (or,
    for an empty pixel x, that are empty too: the empty word's low half is all ones, which
    no triangle id reaches)."""
    tri = vis_opaque[row + x] & LOW32
    end = x + 1
    while end < x1 and (vis_opaque[row + end] & LOW32) == tri:
        end += 1
    return end


@cpu_device
def _rows_around(row, y, lw, lh):
    """Start of the layer rows above and below row y (row y itself at the layer's border:
    outside the layer counts as covered)."""
    return (row - lw if y > 0 else row), (row + lw if y + 1 < lh else row)


@cpu_device
def _shade_covered_run(
    x, end, y, lw, lh, sx, sy, so, geo, mats, texs, ses, light, vis_opaque, vis_blend, rgba,
):  # fmt: skip
    """Pixels [x, end) of row y, all of the opaque triangle set up in `so`. Inner pixels
    have that triangle left and right, so only up and down can be empty space."""
    lbase = ses[3]
    row = lbase + y * lw
    up, down = _rows_around(row, y, lw, lh)
    ny = 1.0 - (y + 0.5) * sy
    for px in range(x, end):
        i = row + px
        nx = (px + 0.5) * sx - 1.0
        cr, cg, cb, ca = _covered_colour(
            i, nx, ny, so, geo, mats, texs, ses, light, vis_opaque, vis_blend
        )
        if px == x or px == end - 1:
            near = _has_empty_neighbour(px, y, i, lw, lh, vis_opaque, vis_blend)
        else:
            near = _is_empty(vis_opaque, vis_blend, up + px) or _is_empty(
                vis_opaque, vis_blend, down + px
            )
        if near:
            ca *= _silhouette_coverage(
                so, px, y, lw, lh, nx, ny, sx, sy, lbase, vis_opaque, vis_blend
            )
        _store(rgba, i, cr, cg, cb, ca)


@cpu_device
def _shade_uncovered_run(
    x, end, y, lw, lh, sx, sy, geo, mats, texs, ses, light, vis_opaque, vis_blend, rgba,
):  # fmt: skip
    """Pixels [x, end) of row y without an opaque triangle. Only those with a blend
    fragment or a non-empty 4-neighbour need `shade_uncovered`; inner pixels of the run
    have empty opaque words left and right, so only their blend words and the pixels up and
    down are looked at."""
    row = ses[3] + y * lw
    up, down = _rows_around(row, y, lw, lh)
    for px in range(x, end):
        i = row + px
        if (
            px == x
            or px == end - 1
            or vis_blend[i] != EMPTY
            or not _is_empty(vis_opaque, vis_blend, up + px)
            or not _is_empty(vis_opaque, vis_blend, down + px)
        ):
            _shade_uncovered(
                px, y, lw, lh, sx, sy, geo, mats, texs, ses, light, vis_opaque, vis_blend,
                rgba,
            )  # fmt: skip
        else:
            rgba[i, 0] = 0
            rgba[i, 1] = 0
            rgba[i, 2] = 0
            rgba[i, 3] = 0


@cpu_device
def _shade_row(
    y, x0, x1, r0, r1, lw, lh, geo, mats, texs, ses, light, vis_opaque, vis_blend, rgba,
):  # fmt: skip
    """Columns [r0, r1) of layer row y: pixels [x0, x1) resolved run by run, the rest
    transparent. A run of pixels of one opaque triangle shares its `tri_setup`."""
    row = ses[3] + y * lw
    if x0 >= x1:
        _clear_rgba(rgba, row + r0, row + r1)
        return
    _clear_rgba(rgba, row + r0, row + x0)
    _clear_rgba(rgba, row + x1, row + r1)
    sx = 2.0 / lw
    sy = 2.0 / lh
    x = x0
    while x < x1:
        end = _run_end(vis_opaque, row, x, x1)
        to = _tri_of(vis_opaque[row + x])
        if to < 0:
            _shade_uncovered_run(
                x, end, y, lw, lh, sx, sy, geo, mats, texs, ses, light, vis_opaque, vis_blend,
                rgba,
            )  # fmt: skip
        else:
            so = _tri_setup(to, geo, mats, texs, ses)
            _shade_covered_run(
                x, end, y, lw, lh, sx, sy, so, geo, mats, texs, ses, light, vis_opaque,
                vis_blend, rgba,
            )  # fmt: skip
        x = end


# No exception paths in the hot loop; no NRT: the kernel allocates nothing, and with NRT
# numba inc/decrefs every array an inlined helper binds (atomics: 15% of the time).
# fastmath "contract" only: a * b + c may become one fused multiply-add (what CUDA does
# by default), 7 % fewer cycles here; no reassociation or approximate divides.
@cpu_kernel(error_model="numpy", _nrt=False, fastmath={"contract"})
def _shade_cpu_kernel(
    n, max_lw, max_lh,
    clip, wnrm, uv, tris, tri_mat,
    mat_base_color, mat_texture, mat_uv_transform, mat_alpha_mode, mat_alpha_cutoff,
    mat_shading, mat_shade_color, mat_toony, mat_shift,
    tex_pixels, tex_offset, tex_size,
    s_vbase, s_tbase, s_obase, s_light, s_lw, s_lh, s_lbase,
    vis_opaque, vis_blend, rgba, s_dirty, claims, workers,
):  # fmt: skip
    """Bands of rows, claimed by the threads one at a time, each session only inside its
    `s_dirty` rect. Pixels more than one pixel away from the content of rows y - 1..y + 1
    are transparent without a look."""
    geo = (clip, wnrm, uv, tris, tri_mat)
    mats = (mat_base_color, mat_texture, mat_uv_transform, mat_alpha_mode, mat_alpha_cutoff,
            mat_shading, mat_shade_color, mat_toony, mat_shift)  # fmt: skip
    texs = (tex_pixels, tex_offset, tex_size)
    bands = (max_lh + CPU_BAND_ROWS - 1) // CPU_BAND_ROWS
    start_claims(claims, workers, n * bands)
    for w in prange(workers):
        done = 0
        while True:
            item, done = claim_item(claims, w, workers, n * bands, done)
            if item < 0:
                break
            _shade_band(item, bands, geo, mats, texs, s_vbase, s_tbase, s_obase, s_light,
                        s_lw, s_lh, s_lbase, vis_opaque, vis_blend, rgba, s_dirty)  # fmt: skip


# A real call, not inlined: inlined into the claim loop the band code compiled 7 % slower
# (one thread, 5.92 against 5.53 ms per avatar-frame).
@numba.njit(cache=True, nogil=True, error_model="numpy", _nrt=False, fastmath={"contract"})
def _shade_band(
    item, bands, geo, mats, texs, s_vbase, s_tbase, s_obase, s_light, s_lw, s_lh, s_lbase,
    vis_opaque, vis_blend, rgba, s_dirty,
):  # fmt: skip
    """One work item: band `item % bands` of session `item // bands`."""
    s = item // bands
    lh = s_lh[s]
    r0 = s_dirty[s, 0]
    r1 = s_dirty[s, 2]
    y0 = max((item - s * bands) * CPU_BAND_ROWS, s_dirty[s, 1])
    y1 = min((item - s * bands) * CPU_BAND_ROWS + CPU_BAND_ROWS, s_dirty[s, 3], lh)
    if y0 >= y1 or r0 >= r1:
        return
    lw = s_lw[s]
    lbase = s_lbase[s]
    ses = (s_vbase[s], s_tbase[s], s_obase[s], lbase)
    light = _session_light(s_light, s)
    # extents of the content in columns [e0, e1) (one beyond the rect each side) of
    # rows a: y - 1, b: y, c: y + 1; (lw, 0) is empty
    e0 = max(r0 - 1, 0)
    e1 = min(r1 + 1, lw)
    a0, a1 = lw, 0
    if y0 > 0:
        a0, a1 = _row_extent(vis_opaque, vis_blend, lbase + (y0 - 1) * lw, e0, e1)
    b0, b1 = _row_extent(vis_opaque, vis_blend, lbase + y0 * lw, e0, e1)
    for y in range(y0, y1):
        c0, c1 = lw, 0
        if y + 1 < lh:
            c0, c1 = _row_extent(vis_opaque, vis_blend, lbase + (y + 1) * lw, e0, e1)
        x0 = max(min(a0, b0, c0) - 1, r0)
        x1 = min(max(a1, b1, c1) + 1, r1)
        _shade_row(y, x0, x1, r0, r1, lw, lh, geo, mats, texs, ses, light, vis_opaque,
                   vis_blend, rgba)  # fmt: skip
        a0, a1, b0, b1 = b0, b1, c0, c1


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
    s_dirty: np.ndarray | None = None,
) -> None:  # fmt: skip
    """Shade sessions 0..n-1 into `rgba` [*,4] u8 (CPU, parallel over session rows).

    `max_lw`/`max_lh` bound every s_lw/s_lh of the batch (the launch extent). `tex_pixels`
    must hold at least one element even when no material is textured. With `s_dirty`
    [N,4] (kernels/damage.py) only those rects of the layers are written; without it the
    whole layers.
    """
    if n <= 0:
        return
    if s_dirty is None:
        s_dirty = full_layers(s_lw, s_lh, n)
    _shade_cpu_kernel(
        n, max_lw, max_lh,
        clip, wnrm, uv, tris, tri_mat,
        mat_base_color, mat_texture, mat_uv_transform, mat_alpha_mode, mat_alpha_cutoff,
        mat_shading, mat_shade_color, mat_toony, mat_shift,
        tex_pixels, tex_offset, tex_size,
        s_vbase, s_tbase, s_obase, s_light, s_lw, s_lh, s_lbase,
        vis_opaque, vis_blend, rgba, s_dirty, claim_counters(), get_num_threads(),
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
    sm = make_shade_math(cuda_device())
    shade_pixel = sm.shade_pixel
    session_light = sm.session_light

    @cuda.jit
    def kernel(
        n, max_lw, max_lh,
        clip, wnrm, uv, tris, tri_mat,
        mat_base_color, mat_texture, mat_uv_transform, mat_alpha_mode, mat_alpha_cutoff,
        mat_shading, mat_shade_color, mat_toony, mat_shift,
        tex_pixels, tex_offset, tex_size,
        s_vbase, s_tbase, s_obase, s_light, s_lw, s_lh, s_lbase,
        vis_opaque, vis_blend, rgba, s_dirty,
    ):  # fmt: skip
        x, y = cuda.grid(2)
        s = cuda.blockIdx.z
        if s >= n:
            return
        lw = s_lw[s]
        lh = s_lh[s]
        if x >= lw or y >= lh:
            return
        if x < s_dirty[s, 0] or y < s_dirty[s, 1] or x >= s_dirty[s, 2] or y >= s_dirty[s, 3]:
            return
        geo = (clip, wnrm, uv, tris, tri_mat)
        mats = (mat_base_color, mat_texture, mat_uv_transform, mat_alpha_mode,
                mat_alpha_cutoff, mat_shading, mat_shade_color, mat_toony, mat_shift)  # fmt: skip
        texs = (tex_pixels, tex_offset, tex_size)
        ses = (s_vbase[s], s_tbase[s], s_obase[s], s_lbase[s])
        shade_pixel(
            x, y, lw, lh, 2.0 / lw, 2.0 / lh, geo, mats, texs, ses, session_light(s_light, s),
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
    s_dirty=None,
    stream=0,
) -> None:  # fmt: skip
    """Shade on CUDA: one thread per layer pixel, grid (x, y, session); arrays on device.
    Only pixels inside `s_dirty` (as on the CPU) are written."""
    if n <= 0:
        return
    if s_dirty is None:
        s_dirty = full_layers_device(s_lw, s_lh, n)
    bx, by, _ = CUDA_BLOCK
    grid = ((max_lw + bx - 1) // bx, (max_lh + by - 1) // by, n)
    _shade_cuda_kernel()[grid, CUDA_BLOCK, stream](
        n, max_lw, max_lh,
        clip, wnrm, uv, tris, tri_mat,
        mat_base_color, mat_texture, mat_uv_transform, mat_alpha_mode, mat_alpha_cutoff,
        mat_shading, mat_shade_color, mat_toony, mat_shift,
        tex_pixels, tex_offset, tex_size,
        s_vbase, s_tbase, s_obase, s_light, s_lw, s_lh, s_lbase,
        vis_opaque, vis_blend, rgba, s_dirty,
    )  # fmt: skip
