"""Stage 3 (shade) on the CPU backend, against float64 numpy references.

Visibility buffers are built by `rasterize_reference` (a tiny numpy rasterizer written to
the batch-layout contract), so these tests do not depend on kernels/raster.py.
The helpers here are reused by tests/cudasim/test_shade_composite_cuda.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from avatarfarm.kernels.color import linear_to_srgb_np, srgb_to_linear_np
from avatarfarm.kernels.shade import EMPTY, shade_cpu

OPAQUE, MASK, BLEND = 0, 1, 2
LAMBERT, UNLIT, MTOON = 0, 1, 2


def material(
    color=(0.8, 0.4, 0.2, 1.0),
    texture=-1,
    alpha_mode=OPAQUE,
    cutoff=0.5,
    shading=LAMBERT,
    shade_color=(0.1, 0.1, 0.3),
    toony=0.9,
    shift=0.0,
    uv_transform=((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
) -> dict:
    return dict(
        color=color,
        texture=texture,
        alpha_mode=alpha_mode,
        cutoff=cutoff,
        shading=shading,
        shade_color=shade_color,
        toony=toony,
        shift=shift,
        uv_transform=uv_transform,
    )


def rasterize_reference(clip, tris, tri_mat, alpha_modes, lw, lh):
    """(vis_opaque, vis_blend) for one session: pixel-centre sampling, no culling.

    Depth = ndc z * 0.5 + 0.5 interpolated linearly in screen space; vis_blend keeps the
    nearest MASK/BLEND fragment in front of the opaque surface (the contract's rule).
    """
    xs, ys = np.meshgrid(np.arange(lw) + 0.5, np.arange(lh) + 0.5)
    vis_o = np.full(lw * lh, EMPTY, np.uint64)
    vis_b = np.full(lw * lh, EMPTY, np.uint64)
    blend_words = []
    for t, (a, b, c) in enumerate(tris):
        v = clip[[a, b, c]].astype(np.float64)
        sx = (v[:, 0] / v[:, 3] * 0.5 + 0.5) * lw
        sy = (1.0 - (v[:, 1] / v[:, 3] * 0.5 + 0.5)) * lh
        sz = v[:, 2] / v[:, 3] * 0.5 + 0.5

        e0, e1, e2 = (
            (sx[j] - sx[i]) * (ys - sy[i]) - (sy[j] - sy[i]) * (xs - sx[i])
            for i, j in ((1, 2), (2, 0), (0, 1))
        )
        area = e0 + e1 + e2
        inside = ((e0 >= 0) & (e1 >= 0) & (e2 >= 0)) | ((e0 <= 0) & (e1 <= 0) & (e2 <= 0))
        inside &= np.abs(area) > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            depth = (e0 * sz[0] + e1 * sz[1] + e2 * sz[2]) / area
        bits = np.clip(depth, 0, 1).astype(np.float32).view(np.uint32).astype(np.uint64)
        word = (bits << np.uint64(32)) | np.uint64(t + 1)
        word = np.where(inside, word, EMPTY).reshape(-1)
        if alpha_modes[tri_mat[t]] == OPAQUE:
            vis_o = np.minimum(vis_o, word)
        else:
            blend_words.append(word)
    for word in blend_words:
        in_front = word < vis_o
        vis_b = np.where(in_front, np.minimum(vis_b, word), vis_b)
    return vis_o, vis_b


def make_batch(sessions, materials, textures=()):
    """Pack sessions (dicts: clip, wnrm, uv, tris, tri_mat, lw, lh, light) into the layout.

    Returns a dict keyed by shade_cpu's argument names; the avatar pools are per session
    (each session its own range), layers packed back to back.
    """
    n = len(sessions)
    clip = np.concatenate([s["clip"] for s in sessions]).astype(np.float32)
    wnrm = np.concatenate([s["wnrm"] for s in sessions]).astype(np.float32)
    uv = np.concatenate([s["uv"] for s in sessions]).astype(np.float32)
    tris = np.concatenate([s["tris"] for s in sessions]).astype(np.int32)
    tri_mat = np.concatenate([s["tri_mat"] for s in sessions]).astype(np.int32)
    vcount = np.array([len(s["clip"]) for s in sessions])
    tcount = np.array([len(s["tris"]) for s in sessions])
    s_vbase = np.concatenate([[0], np.cumsum(vcount)[:-1]]).astype(np.int32)
    s_tbase = np.concatenate([[0], np.cumsum(tcount)[:-1]]).astype(np.int32)
    s_lw = np.array([s["lw"] for s in sessions], np.int32)
    s_lh = np.array([s["lh"] for s in sessions], np.int32)
    sizes = s_lw.astype(np.int64) * s_lh
    s_lbase = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    alpha_modes = [m["alpha_mode"] for m in materials]
    vis_o, vis_b = [], []
    for s in sessions:
        o, b = rasterize_reference(
            s["clip"], s["tris"], s["tri_mat"], alpha_modes, s["lw"], s["lh"]
        )
        vis_o.append(o)
        vis_b.append(b)
    tex_pixels = np.zeros(4, np.uint8)
    tex_offset = np.zeros(max(1, len(textures)), np.int64)
    tex_size = np.ones((max(1, len(textures)), 2), np.int32)
    if textures:
        tex_pixels = np.concatenate([t.reshape(-1) for t in textures]).astype(np.uint8)
        sizes_b = [t.size for t in textures]
        tex_offset = np.concatenate([[0], np.cumsum(sizes_b)[:-1]]).astype(np.int64)
        tex_size = np.array([[t.shape[1], t.shape[0]] for t in textures], np.int32)
    return dict(
        n=n,
        max_lw=int(s_lw.max()),
        max_lh=int(s_lh.max()),
        clip=clip,
        wnrm=wnrm,
        uv=uv,
        tris=tris,
        tri_mat=tri_mat,
        mat_base_color=np.array([m["color"] for m in materials], np.float32),
        mat_texture=np.array([m["texture"] for m in materials], np.int32),
        mat_uv_transform=np.array([m["uv_transform"] for m in materials], np.float32),
        mat_alpha_mode=np.array(alpha_modes, np.int8),
        mat_alpha_cutoff=np.array([m["cutoff"] for m in materials], np.float32),
        mat_shading=np.array([m["shading"] for m in materials], np.int8),
        mat_shade_color=np.array([m["shade_color"] for m in materials], np.float32),
        mat_toony=np.array([m["toony"] for m in materials], np.float32),
        mat_shift=np.array([m["shift"] for m in materials], np.float32),
        tex_pixels=tex_pixels,
        tex_offset=tex_offset,
        tex_size=tex_size,
        s_vbase=s_vbase,
        s_tbase=s_tbase,
        s_obase=s_vbase.copy(),
        s_light=np.array([s["light"] for s in sessions], np.float32),
        s_lw=s_lw,
        s_lh=s_lh,
        s_lbase=s_lbase,
        vis_opaque=np.concatenate(vis_o),
        vis_blend=np.concatenate(vis_b),
        rgba=np.full((int(sizes.sum()), 4), 77, np.uint8),
    )


SHADE_ARGS = (
    "n max_lw max_lh clip wnrm uv tris tri_mat mat_base_color mat_texture mat_uv_transform "
    "mat_alpha_mode mat_alpha_cutoff mat_shading mat_shade_color mat_toony mat_shift "
    "tex_pixels tex_offset tex_size s_vbase s_tbase s_obase s_light s_lw s_lh s_lbase "
    "vis_opaque vis_blend rgba"
).split()


def run_shade(batch) -> np.ndarray:
    shade_cpu(*[batch[k] for k in SHADE_ARGS])
    return batch["rgba"]


def layer(batch, s=0) -> np.ndarray:
    """Session s's rgba as [lh, lw, 4]."""
    lw, lh, base = int(batch["s_lw"][s]), int(batch["s_lh"][s]), int(batch["s_lbase"][s])
    return batch["rgba"][base : base + lw * lh].reshape(lh, lw, 4)


def flat_mesh(ndc_xy, tris, z=0.0, w=1.0, normal=(0.0, 0.0, 1.0), uvs=None, mat=0, **kw):
    """A session whose vertices lie at given NDC (x, y) on a camera-facing plane."""
    xy = np.asarray(ndc_xy, np.float64)
    nv = len(xy)
    clip = np.zeros((nv, 4), np.float32)
    clip[:, 0] = xy[:, 0] * w
    clip[:, 1] = xy[:, 1] * w
    clip[:, 2] = z * w
    clip[:, 3] = w
    tris = np.asarray(tris, np.int32)
    session = dict(
        clip=clip,
        wnrm=np.tile(np.asarray(normal, np.float32), (nv, 1)),
        uv=np.zeros((nv, 2), np.float32) if uvs is None else np.asarray(uvs, np.float32),
        tris=tris,
        tri_mat=np.full(len(tris), mat, np.int32),
        lw=16,
        lh=16,
        light=(0.0, 0.6, 0.8, 0.2),
    )
    session.update(kw)
    return session


FULL_QUAD = [(-1, 1), (1, 1), (1, -1), (-1, -1)]  # top-left, clockwise in screen space
FULL_QUAD_UV = [(0, 0), (1, 0), (1, 1), (0, 1)]
QUAD_TRIS = [(0, 3, 2), (0, 2, 1)]  # counter-clockwise in NDC (front facing)


def srgb_code(linear) -> np.ndarray:
    return np.round(linear_to_srgb_np(np.asarray(linear)) * 255.0)


# ---------------------------------------------------------------------------- lighting


def test_lambert_flat_triangle_matches_formula():
    light = (0.0, 0.6, 0.8, 0.2)
    m = material(color=(0.8, 0.4, 0.2, 1.0), shading=LAMBERT)
    s = flat_mesh(FULL_QUAD, QUAD_TRIS, light=light)
    b = make_batch([s], [m])
    run_shade(b)
    out = layer(b)
    ndotl = 0.8  # normal +z, light (0, .6, .8)
    expected = srgb_code(np.array([0.8, 0.4, 0.2]) * (0.2 + 0.8 * ndotl))
    assert np.all(out[..., 3] == 255)
    assert np.abs(out[..., :3].astype(int) - expected).max() <= 1


def test_lambert_light_is_normalised_and_clamped_behind():
    m = material(color=(0.5, 0.5, 0.5, 1.0))
    lit = flat_mesh(FULL_QUAD, QUAD_TRIS, light=(0.0, 0.0, 5.0, 0.25))
    dark = flat_mesh(FULL_QUAD, QUAD_TRIS, light=(0.0, 0.0, -1.0, 0.25))
    b = make_batch([lit, dark], [m])
    run_shade(b)
    assert np.abs(layer(b, 0)[..., :3].astype(int) - srgb_code(0.5)).max() <= 1
    assert np.abs(layer(b, 1)[..., :3].astype(int) - srgb_code(0.5 * 0.25)).max() <= 1


def test_unlit_returns_base_colour():
    m = material(color=(0.2, 0.7, 0.05, 1.0), shading=UNLIT)
    s = flat_mesh(FULL_QUAD, QUAD_TRIS, normal=(0, 0, -1), light=(0, 0, 1, 0.0))
    b = make_batch([s], [m])
    run_shade(b)
    out = layer(b)
    assert np.abs(out[..., :3].astype(int) - srgb_code([0.2, 0.7, 0.05])).max() <= 1
    assert np.all(out[..., 3] == 255)


def test_mtoon_two_tones_with_sharp_boundary():
    base = (0.9, 0.7, 0.6)
    shade = (0.3, 0.1, 0.2)
    m = material(color=(*base, 1.0), shading=MTOON, shade_color=shade, toony=0.98, shift=0.0)
    # normals swing from facing -x (left) to +x (right); light from +x
    normals = [(-1, 0, 0.2), (1, 0, 0.2), (1, 0, 0.2), (-1, 0, 0.2)]
    s = flat_mesh(FULL_QUAD, QUAD_TRIS, light=(1.0, 0.0, 0.0, 0.3), lw=32, lh=8)
    s["wnrm"] = np.asarray(normals, np.float32)
    b = make_batch([s], [m])
    run_shade(b)
    row = layer(b)[4, :, :3].astype(int)
    lit = srgb_code(base)
    dark = srgb_code(shade)
    is_lit = np.abs(row - lit).max(axis=1) <= 1
    is_dark = np.abs(row - dark).max(axis=1) <= 1
    assert is_dark[:10].all() and is_lit[-10:].all()
    # at most 2 pixels of transition between the two tones
    assert (~(is_lit | is_dark)).sum() <= 2
    assert 12 <= np.argmax(is_lit) <= 20  # the terminator sits where n.l = 0 (mid-row)


def test_mtoon_soft_when_not_toony():
    m = material(color=(0.9, 0.9, 0.9, 1.0), shading=MTOON, shade_color=(0.1, 0.1, 0.1), toony=0.0)
    normals = [(-1, 0, 1), (1, 0, 1), (1, 0, 1), (-1, 0, 1)]
    s = flat_mesh(FULL_QUAD, QUAD_TRIS, light=(1.0, 0.0, 0.0, 0.3), lw=32, lh=4)
    s["wnrm"] = np.asarray(normals, np.float32)
    b = make_batch([s], [m])
    run_shade(b)
    row = layer(b)[2, :, 0].astype(int)
    assert len(np.unique(row)) > 10  # a gradient, not two tones
    assert np.all(np.diff(row) >= 0)


@pytest.mark.parametrize("toony, shift", [(0.5, 0.2), (0.9, -0.3), (0.0, 0.0), (1.0, 0.25)])
def test_mtoon_band_matches_formula_at_every_angle(toony, shift):
    """The toon step compared with the spec's linstep over n.l + shift, for n.l from -1 to 1
    and normals of several lengths (the kernel compares squares instead of normalising)."""
    base, shade = (0.9, 0.8, 0.7), (0.1, 0.2, 0.3)
    m = material(color=(*base, 1.0), shading=MTOON, shade_color=shade, toony=toony, shift=shift)
    angles = np.linspace(0.0, np.pi, 61)
    lengths = (0.37, 1.0, 3.0)
    sessions = [
        flat_mesh(FULL_QUAD, QUAD_TRIS, normal=(k * np.cos(a), 0.0, k * np.sin(a)),
                  light=(1.0, 0.0, 0.0, 0.3), lw=4, lh=4)
        for a in angles for k in lengths
    ]  # fmt: skip
    b = make_batch(sessions, [m])
    run_shade(b)
    ndotl = np.repeat(np.cos(angles).astype(np.float32).astype(np.float64), len(lengths))
    lo, hi = -1.0 + toony, 1.0 - toony
    t = ndotl + shift
    if hi - lo <= 1e-6:
        tt = (t >= lo).astype(np.float64)
    else:
        tt = np.clip((t - lo) / (hi - lo), 0.0, 1.0)
    want = srgb_code(np.asarray(shade) + (np.asarray(base) - shade) * tt[:, None])
    got = np.array([layer(b, i)[2, 2, :3] for i in range(len(sessions))]).astype(int)
    near_step = np.abs(t - lo) < 1e-5 if hi - lo <= 1e-6 else np.zeros(len(t), bool)
    assert np.abs(got - want)[~near_step].max() <= 1
    assert (tt > 0).any() and (tt < 1).any()  # both tones appear


# ----------------------------------------------------------------------------- texture


def checker_2x2() -> np.ndarray:
    tex = np.zeros((2, 2, 4), np.uint8)
    tex[0, 0] = (255, 0, 0, 255)
    tex[0, 1] = (0, 255, 0, 255)
    tex[1, 0] = (0, 0, 255, 255)
    tex[1, 1] = (200, 200, 200, 255)
    return tex


def test_bilinear_at_texel_centres_returns_texels():
    tex = checker_2x2()
    m = material(color=(1, 1, 1, 1), texture=0, shading=UNLIT)
    s = flat_mesh(FULL_QUAD, QUAD_TRIS, uvs=FULL_QUAD_UV, lw=2, lh=2)
    b = make_batch([s], [m], [tex])
    run_shade(b)
    assert np.abs(layer(b).astype(int) - tex.astype(int)).max() <= 1


def test_bilinear_filters_in_linear_light_and_wraps():
    tex = checker_2x2()
    m = material(color=(1, 1, 1, 1), texture=0, shading=UNLIT)
    s = flat_mesh(FULL_QUAD, QUAD_TRIS, uvs=FULL_QUAD_UV, lw=4, lh=4)
    b = make_batch([s], [m], [tex])
    run_shade(b)
    out = layer(b).astype(int)
    lin = srgb_to_linear_np(tex[..., :3] / 255.0)

    def expect(u, v):
        fx, fy = u * 2 - 0.5, v * 2 - 0.5
        x0, y0 = int(np.floor(fx)), int(np.floor(fy))
        ax, ay = fx - x0, fy - y0
        acc = 0
        for dy, wy in ((0, 1 - ay), (1, ay)):
            for dx, wx in ((0, 1 - ax), (1, ax)):
                acc = acc + wx * wy * lin[(y0 + dy) % 2, (x0 + dx) % 2]
        return srgb_code(acc)

    for y in range(4):
        for x in range(4):
            want = expect((x + 0.5) / 4, (y + 0.5) / 4)
            assert np.abs(out[y, x, :3] - want).max() <= 1, (x, y)
    # an sRGB-space average of red and green would be (128, 128, 0): linear filtering differs
    assert out[0, 1, 0] > 150


def test_uv_transform_is_applied():
    tex = checker_2x2()
    # u' = u + 0.5 (one texel to the right, wrapping)
    m = material(texture=0, shading=UNLIT, color=(1, 1, 1, 1),
                 uv_transform=((1, 0, 0.5), (0, 1, 0)))  # fmt: skip
    s = flat_mesh(FULL_QUAD, QUAD_TRIS, uvs=FULL_QUAD_UV, lw=2, lh=2)
    b = make_batch([s], [m], [tex])
    run_shade(b)
    assert np.abs(layer(b).astype(int) - tex[:, ::-1].astype(int)).max() <= 1


def test_mask_discards_below_cutoff():
    tex = np.zeros((1, 2, 4), np.uint8)
    tex[0, 0] = (255, 255, 255, 40)  # left half: alpha below cutoff
    tex[0, 1] = (255, 255, 255, 220)
    behind = material(color=(0.0, 0.0, 1.0, 1.0), shading=UNLIT)
    cut = material(color=(1, 1, 1, 1), texture=0, alpha_mode=MASK, cutoff=0.5, shading=UNLIT)
    # nearest-like sampling: uv ranges that keep each half on one texel
    uvs = [(0.25, 0.5), (0.75, 0.5), (0.75, 0.5), (0.25, 0.5)]
    front = flat_mesh(FULL_QUAD, QUAD_TRIS, z=-0.5, uvs=uvs, mat=1, lw=8, lh=4)
    back = flat_mesh(FULL_QUAD, QUAD_TRIS, z=0.5, mat=0, lw=8, lh=4)
    both = dict(front)
    both["clip"] = np.concatenate([front["clip"], back["clip"]])
    both["wnrm"] = np.concatenate([front["wnrm"], back["wnrm"]])
    both["uv"] = np.concatenate([front["uv"], back["uv"]])
    both["tris"] = np.concatenate([front["tris"], back["tris"] + 4])
    both["tri_mat"] = np.concatenate([front["tri_mat"], back["tri_mat"]])
    alone = dict(front)
    b = make_batch([both, alone], [behind, cut], [tex])
    assert np.all(b["vis_blend"] != EMPTY)  # the mask quad is the blend fragment everywhere
    run_shade(b)
    out = layer(b, 0).astype(int)
    # left: discarded -> blue opaque behind; right: kept -> white, opaque
    assert np.all(out[:, 0, :] == (0, 0, 255, 255))
    assert np.all(out[:, -1, :] == (255, 255, 255, 255))
    alone_out = layer(b, 1).astype(int)
    assert np.all(alone_out[:, 0, :] == 0)
    assert np.all(alone_out[:, -1, :] == (255, 255, 255, 255))


def test_blend_fragment_composited_over_opaque_in_linear_premultiplied():
    back = material(color=(0.0, 0.0, 1.0, 1.0), shading=UNLIT)
    glass = material(color=(1.0, 0.0, 0.0, 0.25), alpha_mode=BLEND, shading=UNLIT)
    front = flat_mesh(FULL_QUAD, QUAD_TRIS, z=-0.5, mat=1, lw=4, lh=4)
    behind = flat_mesh(FULL_QUAD, QUAD_TRIS, z=0.5, mat=0, lw=4, lh=4)
    both = dict(front)
    for k in ("clip", "wnrm", "uv", "tri_mat"):
        both[k] = np.concatenate([front[k], behind[k]])
    both["tris"] = np.concatenate([front["tris"], behind["tris"] + 4])
    b = make_batch([both, front], [back, glass])
    run_shade(b)
    over = layer(b, 0).astype(int)
    assert np.all(over[..., 3] == 255)
    assert np.abs(over[..., :3] - srgb_code([0.25, 0.0, 0.75])).max() <= 1
    alone = layer(b, 1).astype(int)
    assert np.all(alone[..., 3] == 64)
    assert np.all(np.abs(alone[..., 0] - 64) <= 1) and np.all(alone[..., 1:3] == 0)


# ---------------------------------------------------------------- perspective-correct


def tilted_quad_session(lw=32, lh=32):
    """A 1 x 1 world quad leaning back (top far away), seen by a pinhole camera at the origin.

    clip = (x, y, z', -z) for a camera looking down -z with a 90-degree field of view.
    """
    world = np.array([[-0.5, 0.5, -3.0], [0.5, 0.5, -3.0], [0.5, -0.5, -1.5], [-0.5, -0.5, -1.5]])
    clip = np.zeros((4, 4), np.float32)
    clip[:, 0] = world[:, 0] * 2.0
    clip[:, 1] = world[:, 1] * 2.0
    near, far = 0.1, 10.0
    clip[:, 2] = -(far + near) / (far - near) * world[:, 2] - 2 * far * near / (far - near)
    clip[:, 3] = -world[:, 2]
    s = dict(
        clip=clip,
        wnrm=np.tile(np.float32([0, 0, 1]), (4, 1)),
        uv=np.asarray(FULL_QUAD_UV, np.float32),
        tris=np.asarray(QUAD_TRIS, np.int32),
        tri_mat=np.zeros(2, np.int32),
        lw=lw,
        lh=lh,
        light=(0, 0, 1, 1.0),
    )
    return s, world


def ramp_texture(vertical: bool) -> np.ndarray:
    """256 texels whose red (u ramp) or green (v ramp) code equals the texel index."""
    tex = np.zeros((256, 1, 4) if vertical else (1, 256, 4), np.uint8)
    tex[..., 1 if vertical else 0] = np.arange(256).reshape(tex.shape[:2])
    tex[..., 3] = 255
    return tex


def test_perspective_correct_uv():
    lw = lh = 32
    m = material(color=(1, 1, 1, 1), texture=0, shading=UNLIT)
    s, world = tilted_quad_session(lw, lh)
    p0, p1, p3 = world[0], world[1], world[3]
    eu, ev = p1 - p0, p3 - p0
    nrm = np.cross(eu, ev)
    for vertical in (False, True):
        b = make_batch([s], [m], [ramp_texture(vertical)])
        run_shade(b)
        out = layer(b).astype(int)
        checked = 0
        for y in range(lh):
            for x in range(lw):
                if out[y, x, 3] != 255:
                    continue
                # reference: the pixel centre's ray meets the quad's plane at q
                d = np.array([((x + 0.5) / lw * 2 - 1) / 2, (1 - (y + 0.5) / lh * 2) / 2, -1.0])
                q = np.dot(nrm, p0) / np.dot(nrm, d) * d - p0
                e = ev if vertical else eu
                code = np.dot(q, e) / np.dot(e, e) * 256 - 0.5
                if 1 < code < 254:
                    got = out[y, x, 1 if vertical else 0]
                    assert abs(got - code) <= 1.5, (vertical, x, y, got, code)
                    checked += 1
        assert checked > 150
    # the projected centre (ndc y = 0, between rows 15 and 16) reads v = 0.5; screen-space
    # (affine) interpolation between the projected top (ndc y 1/3) and bottom (-2/3) would
    # read v = 1/3 there
    mid = out[lh // 2 - 1 : lh // 2 + 1, lw // 2, 1].mean()
    assert abs(mid - 127.5) <= 2.0
    assert abs(mid - (256 / 3 - 0.5)) > 30


# --------------------------------------------------------------------- silhouette AA


def coverage_reference(ndc_tri, lw, lh, ss=16) -> np.ndarray:
    """Fraction of each pixel inside the triangle, by ss x ss supersampling."""
    v = np.asarray(ndc_tri, np.float64)
    sx = (v[:, 0] * 0.5 + 0.5) * lw
    sy = (1 - (v[:, 1] * 0.5 + 0.5)) * lh
    off = (np.arange(ss) + 0.5) / ss
    xs = (np.arange(lw)[:, None] + off[None, :]).reshape(-1)
    ys = (np.arange(lh)[:, None] + off[None, :]).reshape(-1)
    X, Y = np.meshgrid(xs, ys)

    def edge(i, j):
        return (sx[j] - sx[i]) * (Y - sy[i]) - (sy[j] - sy[i]) * (X - sx[i])

    e0, e1, e2 = edge(1, 2), edge(2, 0), edge(0, 1)
    inside = ((e0 >= 0) & (e1 >= 0) & (e2 >= 0)) | ((e0 <= 0) & (e1 <= 0) & (e2 <= 0))
    return inside.reshape(lh, ss, lw, ss).mean(axis=(1, 3))


SLANT_TRI = [(-0.8, -0.9), (0.9, -0.7), (-0.3, 0.85)]


def test_silhouette_edge_is_antialiased_and_halo_free():
    lw = lh = 32
    m = material(color=(1.0, 1.0, 1.0, 1.0), shading=UNLIT)
    s = flat_mesh(SLANT_TRI, [(0, 1, 2)], lw=lw, lh=lh)
    b = make_batch([s], [m])
    run_shade(b)
    out = layer(b).astype(int)
    alpha = out[..., 3]
    cov = coverage_reference(SLANT_TRI, lw, lh)
    frac = (alpha > 0) & (alpha < 255)
    assert frac.sum() >= 40  # a ramp along all three edges, not a hard step
    deep_inside = cov == 1.0
    # pixels fully inside and not touching the edge are exactly opaque
    interior = deep_inside.copy()
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        interior &= np.roll(deep_inside, (dy, dx), axis=(0, 1))
    assert interior.sum() > 50 and np.all(alpha[interior] == 255)
    assert np.all(alpha[cov == 0.0] <= 2)  # no halo outside the true footprint
    far = np.ones_like(cov, bool)
    near_any = cov > 0
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            far &= ~np.roll(near_any, (dy, dx), axis=(0, 1))
    assert np.all(alpha[far] == 0)
    # analytic coverage tracks the true area coverage
    assert np.abs(alpha / 255.0 - cov).max() <= 0.15
    assert np.abs(alpha / 255.0 - cov).mean() <= 0.005
    # halo-free: premultiplied colour never exceeds alpha, colour is the surface's colour
    assert np.all(out[..., :3] <= alpha[..., None])
    assert np.all(np.abs(out[..., 0] - alpha) <= 1)


def test_interior_edge_of_two_triangles_stays_opaque():
    lw = lh = 32
    m = material(color=(0.5, 0.5, 0.5, 1.0), shading=UNLIT)
    quad = [(-0.7, 0.6), (0.75, 0.8), (0.6, -0.7), (-0.8, -0.65)]  # slanted sides
    s = flat_mesh(quad, QUAD_TRIS, lw=lw, lh=lh)
    b = make_batch([s], [m])
    run_shade(b)
    alpha = layer(b)[..., 3].astype(int)
    cov = np.clip(
        coverage_reference([quad[0], quad[3], quad[2]], lw, lh)
        + coverage_reference([quad[0], quad[2], quad[1]], lw, lh),
        0,
        1,
    )
    frac = (alpha > 0) & (alpha < 255)
    assert frac.sum() > 30
    # every pixel whose 3x3 neighbourhood is fully covered is exactly opaque: this holds the
    # whole shared diagonal except where it meets the outline
    full = cov >= 1.0
    inner = full.copy()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            inner &= np.roll(full, (dy, dx), axis=(0, 1))
    diag = np.zeros_like(inner)
    p0 = np.array([(quad[0][0] * 0.5 + 0.5) * lw, (1 - (quad[0][1] * 0.5 + 0.5)) * lh])
    p2 = np.array([(quad[2][0] * 0.5 + 0.5) * lw, (1 - (quad[2][1] * 0.5 + 0.5)) * lh])
    for t in np.linspace(0, 1, 200):
        px, py = p0 + t * (p2 - p0)
        diag[int(py), int(px)] = True
    assert (diag & inner).sum() > 15
    assert np.all(alpha[inner] == 255)
    assert np.abs(alpha / 255.0 - cov).max() <= 0.15


def test_layer_border_is_not_a_silhouette():
    # a quad running off the bottom of the layer keeps an opaque bottom row
    m = material(color=(1, 1, 1, 1), shading=UNLIT)
    s = flat_mesh([(-0.5, 0.5), (0.5, 0.5), (0.5, -1.5), (-0.5, -1.5)], QUAD_TRIS, lw=16, lh=16)
    b = make_batch([s], [m])
    run_shade(b)
    alpha = layer(b)[..., 3]
    assert np.all(alpha[-1, 5:11] == 255)


def test_batch_sessions_are_independent():
    m = [material(shading=LAMBERT), material(color=(0.1, 0.9, 0.3, 1), shading=UNLIT)]
    a = flat_mesh(SLANT_TRI, [(0, 1, 2)], lw=20, lh=12, mat=0)
    c = flat_mesh(FULL_QUAD, QUAD_TRIS, lw=8, lh=24, mat=1, light=(1, 0, 0, 0.5))
    together = make_batch([a, c], m)
    run_shade(together)
    for i, s in enumerate((a, c)):
        alone = make_batch([s], m)
        run_shade(alone)
        np.testing.assert_array_equal(layer(together, i), layer(alone, 0))


def test_empty_layer_is_transparent():
    m = material()
    s = flat_mesh([(2, 2), (3, 2), (2, 3)], [(0, 1, 2)], lw=8, lh=8)  # off screen
    b = make_batch([s], [m])
    run_shade(b)
    assert np.all(layer(b) == 0)


@pytest.mark.parametrize("n", [0])
def test_zero_sessions_is_a_no_op(n):
    m = material()
    b = make_batch([flat_mesh(FULL_QUAD, QUAD_TRIS)], [m])
    b["n"] = n
    run_shade(b)
    assert np.all(b["rgba"] == 77)


def test_triangle_crossing_the_camera_plane_shades_without_edge_aa():
    # one vertex behind the camera (w < 0): the rasterizer clips such triangles; shading
    # must still produce finite, opaque colour from homogeneous barycentrics
    m = material(color=(0.6, 0.3, 0.9, 1.0), shading=LAMBERT)
    clip = np.array([[-1.0, -1.0, 0.0, 1.0], [1.0, -1.0, 0.0, 1.0], [0.0, 1.5, 0.0, -0.5]])
    s = flat_mesh([(0, 0)] * 3, [(0, 1, 2)], lw=8, lh=8)
    s["clip"] = clip.astype(np.float32)
    b = make_batch([s], [m])
    word = (np.float32(0.5).view(np.uint32).astype(np.uint64) << np.uint64(32)) | np.uint64(1)
    b["vis_opaque"][:] = EMPTY
    b["vis_opaque"].reshape(8, 8)[4:, :] = word  # bottom half covered, as a clipper would
    run_shade(b)
    out = layer(b).astype(int)
    assert np.all(out[4:, :, 3] == 255)
    want = srgb_code(np.array([0.6, 0.3, 0.9]) * (0.2 + 0.8 * 0.8))
    assert np.abs(out[4:, :, :3] - want).max() <= 1
    assert np.all(out[:3, :, 3] == 0)
