"""Stage 4 (composite to NV12) and the shared colour math, CPU backend.

References use an independent float64 BT.709 limited-range formula written out here.
The batch builder is reused by tests/cudasim/test_shade_composite_cuda.py.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest

from avatarfarm.kernels.backend import cpu_device
from avatarfarm.kernels.color import (
    SRGB_DECODE_LUT,
    linear_to_srgb_np,
    make_color_math,
    rgb_to_nv12_cpu,
    srgb_to_linear_np,
)
from avatarfarm.kernels.composite import composite_cpu

SENTINEL = 0x5A


def ref_yuv(rgb) -> np.ndarray:
    """Independent BT.709 limited range: u8 R'G'B' -> float Y, Cb, Cr."""
    r, g, b = (np.asarray(rgb, np.float64)[..., i] / 255.0 for i in range(3))
    y = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return np.stack(
        [16 + 219 * y, 128 + 224 * (b - y) / 1.8556, 128 + 224 * (r - y) / 1.5748], axis=-1
    )


def ref_nv12_solid(rgb) -> tuple[int, int, int]:
    y, u, v = np.rint(ref_yuv(np.asarray(rgb, np.float64)))
    return int(y), int(u), int(v)


def planes(frame, base, fw, fh):
    """(Y [fh,fw], U [fh/2,fw/2], V [fh/2,fw/2]) views of one NV12 frame."""
    y = frame[base : base + fw * fh].reshape(fh, fw)
    uv = frame[base + fw * fh : base + fw * fh * 3 // 2].reshape(fh // 2, fw // 2, 2)
    return y, uv[..., 0], uv[..., 1]


def solid(h, w, rgba) -> np.ndarray:
    img = np.zeros((h, w, 4), np.uint8)
    img[:] = rgba
    return img


def comp_batch(sessions) -> dict:
    """Pack sessions into composite_cpu's arguments.

    session: fw, fh, bg (u8 RGB image [fh,fw,3]), layer (premultiplied RGBA [lh,lw,4]),
    lx, ly, rect, overlays (list of dicts: img, x, y, opacity, z; sorted here by z).
    """
    n = len(sessions)
    s_fw = np.array([s["fw"] for s in sessions], np.int32)
    s_fh = np.array([s["fh"] for s in sessions], np.int32)
    fsz = s_fw.astype(np.int64) * s_fh * 3 // 2
    s_fbase = np.concatenate([[0], np.cumsum(fsz)[:-1]]).astype(np.int64)
    background = np.concatenate([rgb_to_nv12_cpu(s["bg"]) for s in sessions])
    layers = [s["layer"] for s in sessions]
    s_lw = np.array([a.shape[1] for a in layers], np.int32)
    s_lh = np.array([a.shape[0] for a in layers], np.int32)
    lsz = s_lw.astype(np.int64) * s_lh
    s_lbase = np.concatenate([[0], np.cumsum(lsz)[:-1]]).astype(np.int64)
    rgba = np.concatenate([a.reshape(-1, 4) for a in layers])
    ovx, ovy, ovw, ovh, ovb, ovo, ovz, pix, start, count = [], [], [], [], [], [], [], [], [], []
    pbase = 0
    for s in sessions:
        ovs = sorted(s.get("overlays", []), key=lambda o: o["z"])
        start.append(len(ovx))
        count.append(len(ovs))
        for o in ovs:
            h, w = o["img"].shape[:2]
            ovx.append(o["x"])
            ovy.append(o["y"])
            ovw.append(w)
            ovh.append(h)
            ovb.append(pbase)
            ovo.append(o.get("opacity", 1.0))
            ovz.append(o["z"])
            pix.append(o["img"].reshape(-1, 4))
            pbase += w * h
    if not ovx:  # numba needs typed arrays even when the table is empty
        ovx, ovy, ovw, ovh, ovb, ovo, ovz = [0], [0], [1], [1], [0], [0.0], [0]
        pix = [np.zeros((1, 4), np.uint8)]
    rects = np.array([s["rect"] for s in sessions], np.int32)
    return dict(
        n=n,
        max_rw=int((rects[:, 2] - rects[:, 0]).max()),
        max_rh=int((rects[:, 3] - rects[:, 1]).max()),
        rgba=rgba,
        s_lw=s_lw,
        s_lh=s_lh,
        s_lbase=s_lbase,
        s_lx=np.array([s["lx"] for s in sessions], np.int32),
        s_ly=np.array([s["ly"] for s in sessions], np.int32),
        s_fw=s_fw,
        s_fh=s_fh,
        s_fbase=s_fbase,
        s_bgbase=s_fbase.copy(),
        s_rect=rects,
        s_ov_start=np.array(start, np.int32),
        s_ov_count=np.array(count, np.int32),
        ov_x=np.array(ovx, np.int32),
        ov_y=np.array(ovy, np.int32),
        ov_w=np.array(ovw, np.int32),
        ov_h=np.array(ovh, np.int32),
        ov_base=np.array(ovb, np.int64),
        ov_opacity=np.array(ovo, np.float32),
        ov_z=np.array(ovz, np.int32),
        ov_pixels=np.concatenate(pix),
        background=background,
        frame=np.full(int(fsz.sum()), SENTINEL, np.uint8),
    )


COMPOSITE_ARGS = (
    "n max_rw max_rh rgba s_lw s_lh s_lbase s_lx s_ly s_fw s_fh s_fbase s_bgbase s_rect "
    "s_ov_start s_ov_count ov_x ov_y ov_w ov_h ov_base ov_opacity ov_z ov_pixels "
    "background frame"
).split()


def run_composite(batch) -> np.ndarray:
    composite_cpu(*[batch[k] for k in COMPOSITE_ARGS])
    return batch["frame"]


def frame_planes(batch, s=0):
    return planes(batch["frame"], int(batch["s_fbase"][s]), int(batch["s_fw"][s]),
                  int(batch["s_fh"][s]))  # fmt: skip


def bg_image(fh, fw, rgb=(0x20, 0x30, 0x40)) -> np.ndarray:
    img = np.zeros((fh, fw, 3), np.uint8)
    img[:] = rgb
    return img


# ------------------------------------------------------------------------ colour math


def test_srgb_round_trip_numpy_and_kernel_tables():
    codes = np.arange(256)
    lin = srgb_to_linear_np(codes / 255.0)
    np.testing.assert_allclose(linear_to_srgb_np(lin) * 255.0, codes, atol=1e-9)
    np.testing.assert_allclose(SRGB_DECODE_LUT, lin, rtol=1e-6, atol=1e-9)
    cm = make_color_math(cpu_device)
    dec, enc = cm.srgb_u8_to_linear, cm.linear_to_srgb_u8

    @numba.njit
    def round_trip(out):
        for c in range(256):
            out[c] = enc(dec(c))

    out = np.zeros(256, np.int64)
    round_trip(out)
    np.testing.assert_array_equal(out, codes)
    # mid-grey: linear 0.5 is sRGB 188 (0.735), not 128
    assert abs(linear_to_srgb_np(0.5) * 255 - 187.5) < 1.0


def test_encode_table_within_one_code_everywhere():
    cm = make_color_math(cpu_device)
    enc = cm.linear_to_srgb_u8

    @numba.njit
    def encode_all(x, out):
        for i in range(x.size):
            out[i] = enc(x[i])

    x = np.linspace(-0.1, 1.1, 20001)
    out = np.zeros(x.size, np.int64)
    encode_all(x, out)
    exact = linear_to_srgb_np(x) * 255.0
    assert np.abs(out - exact).max() <= 1.0


@pytest.mark.parametrize(
    "rgb, expected",
    [
        ((255, 255, 255), (235, 128, 128)),
        ((0, 0, 0), (16, 128, 128)),
        ((255, 0, 0), (63, 102, 240)),
        ((0x20, 0x30, 0x40), None),
    ],
)
def test_rgb_to_nv12_solid_colours_exact(rgb, expected):
    want = ref_nv12_solid(rgb)
    if expected is not None:
        assert want == expected
    img = bg_image(6, 8, rgb)
    nv12 = rgb_to_nv12_cpu(img)
    assert nv12.shape == (8 * 6 * 3 // 2,)
    y, u, v = planes(nv12, 0, 8, 6)
    assert np.all(y == want[0]) and np.all(u == want[1]) and np.all(v == want[2])


def test_rgb_to_nv12_chroma_is_block_average():
    img = bg_image(2, 4, (255, 0, 0))
    img[:, 1] = (0, 0, 255)  # block 0: two red, two blue sites
    y, u, v = planes(rgb_to_nv12_cpu(img), 0, 4, 2)
    red, blue = ref_yuv([255, 0, 0]), ref_yuv([0, 0, 255])
    assert y[0, 0] == round(red[0]) and y[0, 1] == round(blue[0])
    assert u[0, 0] == round((red[1] + blue[1]) / 2) and v[0, 0] == round((red[2] + blue[2]) / 2)
    assert u[0, 1] == round(red[1])


def test_rgb_to_nv12_rejects_odd_sizes():
    with pytest.raises(ValueError, match="even"):
        rgb_to_nv12_cpu(np.zeros((3, 4, 3), np.uint8))


# ------------------------------------------------------------------------ composite


def one_session(**kw) -> dict:
    s = dict(
        fw=32,
        fh=24,
        bg=bg_image(24, 32),
        layer=solid(8, 10, (255, 0, 0, 255)),
        lx=6,
        ly=4,
        rect=(0, 0, 32, 24),
        overlays=[],
    )
    s.update(kw)
    return s


def test_background_only_reproduces_background_exactly():
    rng = np.random.default_rng(1)
    bg = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    b = comp_batch([one_session(bg=bg, layer=solid(8, 10, (0, 0, 0, 0)))])
    run_composite(b)
    np.testing.assert_array_equal(b["frame"], b["background"])


@pytest.mark.parametrize("rgb", [(255, 255, 255), (0, 0, 0), (255, 0, 0), (0x20, 0x30, 0x40)])
def test_solid_layer_gives_exact_nv12_of_its_colour(rgb):
    b = comp_batch([one_session(layer=solid(24, 32, (*rgb, 255)), lx=0, ly=0,
                                bg=bg_image(24, 32, (10, 200, 30)))])  # fmt: skip
    run_composite(b)
    y, u, v = frame_planes(b)
    want = ref_nv12_solid(rgb)
    assert np.all(y == want[0]) and np.all(u == want[1]) and np.all(v == want[2])


def test_opaque_layer_of_varied_colours_is_their_nv12():
    """Blocks the opaque avatar covers alone take the fast path: per-site colours and the
    block-averaged chroma must still be those of the layer image (rgb_to_nv12_cpu)."""
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    layer = np.concatenate([rgb, np.full((24, 32, 1), 255, np.uint8)], axis=2)
    b = comp_batch([one_session(layer=layer, lx=0, ly=0)])
    run_composite(b)
    want = rgb_to_nv12_cpu(rgb).astype(int)
    diff = np.abs(b["frame"][: want.size].astype(int) - want)
    assert diff.max() <= 1  # the reference rounds its own float sums
    assert (diff == 0).mean() > 0.99


def test_layer_placement_odd_offset():
    bgc = (0x20, 0x30, 0x40)
    b = comp_batch([one_session(lx=5, ly=3)])  # 10x8 red layer at (5, 3)
    run_composite(b)
    y, u, v = frame_planes(b)
    red, blue = ref_nv12_solid((255, 0, 0)), ref_nv12_solid(bgc)
    inside = np.zeros((24, 32), bool)
    inside[3:11, 5:15] = True
    assert np.all(y[inside] == red[0]) and np.all(y[~inside] == blue[0])
    # chroma blocks fully inside the layer are exactly red, blocks fully outside the background
    assert np.all(u[2:5, 3:7] == red[1]) and np.all(v[2:5, 3:7] == red[2])
    assert np.all(u[6:, :] == blue[1]) and np.all(u[:, 8:] == blue[1])
    # a block with 2 of 4 sites covered averages the two colours
    half = (ref_yuv((255, 0, 0))[2] + ref_yuv(bgc)[2]) / 2
    assert v[1, 3] == round(half)


def test_semi_transparent_layer_equals_rgb_blend():
    bgc = np.array([0x20, 0x30, 0x40])
    colour, a = np.array([250, 180, 40]), 96
    premult = np.round(colour * a / 255).astype(np.uint8)
    b = comp_batch([one_session(layer=solid(24, 32, (*premult, a)), lx=0, ly=0)])
    run_composite(b)
    y, u, v = frame_planes(b)
    blended = premult + bgc * (1 - a / 255)  # over, in R'G'B'
    want = ref_yuv(blended)
    # the background itself is already rounded to u8 NV12: within one code of the ideal
    assert np.all(np.abs(y.astype(float) - want[0]) <= 1.0)
    assert np.all(np.abs(u.astype(float) - want[1]) <= 1.0)
    assert np.all(np.abs(v.astype(float) - want[2]) <= 1.0)
    # exactly: blending the rounded background values with the premultiplied colour
    a_f = a / 255
    yp = (0.2126 * premult[0] + 0.7152 * premult[1] + 0.0722 * premult[2]) / 255
    bg_y = np.rint(ref_yuv(bgc)[0])
    assert np.all(y == np.rint(bg_y * (1 - a_f) + 16 * a_f + 219 * yp))


def test_z_order_and_opacity():
    green = solid(8, 8, (0, 255, 0, 255))
    front = dict(img=green, x=6, y=4, z=5)
    # behind the avatar, half sticking out of it
    behind = dict(img=solid(8, 8, (0, 0, 255, 255)), x=12, y=4, z=-1)
    ghost = dict(img=solid(4, 4, (255, 255, 255, 255)), x=24, y=16, z=9, opacity=0.25)
    b = comp_batch([one_session(overlays=[ghost, front, behind])])
    run_composite(b)
    y = frame_planes(b)[0]
    assert np.all(y[4:12, 6:14] == ref_nv12_solid((0, 255, 0))[0])  # z > 0 covers the avatar
    assert y[5, 15] == ref_nv12_solid((255, 0, 0))[0]  # z < 0 is under the avatar (x < 16)
    assert np.all(y[4:12, 16:20] == ref_nv12_solid((0, 0, 255))[0])  # and shows beside it
    bg_y = ref_yuv((0x20, 0x30, 0x40))[0]
    want = bg_y * 0.75 + 0.25 * 235.0  # white at 25 % over the background
    assert np.all(y[16:20, 24:28] == round(want))


def test_z_zero_overlay_goes_in_front_of_avatar():
    b = comp_batch([one_session(overlays=[dict(img=solid(2, 2, (0, 0, 255, 255)), x=6, y=4,
                                               z=0)])])  # fmt: skip
    run_composite(b)
    assert frame_planes(b)[0][4, 6] == ref_nv12_solid((0, 0, 255))[0]


def test_only_rect_is_written():
    b = comp_batch([one_session(rect=(4, 2, 20, 12))])
    run_composite(b)
    y, u, v = frame_planes(b)
    mask = np.zeros((24, 32), bool)
    mask[2:12, 4:20] = True
    assert np.all(y[~mask] == SENTINEL) and not np.any(y[mask] == SENTINEL)
    cmask = np.zeros((12, 16), bool)
    cmask[1:6, 2:10] = True
    assert np.all(u[~cmask] == SENTINEL) and np.all(v[~cmask] == SENTINEL)
    assert not np.any(u[cmask] == SENTINEL)


def test_sessions_with_different_sizes_share_one_launch():
    a = one_session()
    c = one_session(fw=16, fh=16, bg=bg_image(16, 16, (255, 255, 255)),
                    layer=solid(4, 4, (0, 0, 0, 255)), lx=14, ly=14, rect=(8, 8, 16, 16),
                    overlays=[dict(img=solid(2, 2, (255, 0, 0, 255)), x=0, y=0, z=1)])  # fmt: skip
    together = comp_batch([a, c])
    run_composite(together)
    for i, s in enumerate((a, c)):
        alone = comp_batch([s])
        run_composite(alone)
        for p, q in zip(frame_planes(together, i), frame_planes(alone, 0), strict=True):
            np.testing.assert_array_equal(p, q)
    y = frame_planes(together, 1)[0]
    assert y[0, 0] == SENTINEL  # the overlay lies outside that session's rect
    assert y[15, 15] == 16 and y[8, 8] == 235


def test_label_overlay_pixels_present():
    from avatarfarm.render.layers import compliance_label

    fw, fh = 320, 180
    rgba, x, y0 = compliance_label("AI生成 · Virtual host", "top-right", fw, fh)
    assert rgba.dtype == np.uint8 and rgba.shape[2] == 4
    b = comp_batch([one_session(fw=fw, fh=fh, bg=bg_image(fh, fw), rect=(0, 0, fw, fh),
                                overlays=[dict(img=rgba, x=x, y=y0, z=1000)])])  # fmt: skip
    run_composite(b)
    yp = frame_planes(b)[0]
    h, w = rgba.shape[:2]
    region = yp[y0 : y0 + h, x : x + w].astype(int)
    bg_y = round(ref_yuv((0x20, 0x30, 0x40))[0])
    assert x + w <= fw and y0 >= 0 and x > fw // 2  # top-right corner, inside the frame
    assert (region != bg_y).mean() > 0.5  # the label's backing box darkens its area
    assert region.max() > 150  # light text on it
    assert np.all(yp[fh // 2 :, :] == bg_y)  # nothing else changed


def test_many_overlays_beyond_the_block_mask_all_drawn():
    # 70 one-pixel overlays (the per-block overlay mask holds 63 bits; the rest always run)
    ovs = [
        dict(img=solid(1, 1, (255, 255, 255, 255)), x=k % 32, y=12 + k // 32, z=k - 35)
        for k in range(70)
    ]
    b = comp_batch([one_session(layer=solid(8, 10, (0, 0, 0, 0)), overlays=ovs)])
    run_composite(b)
    y = frame_planes(b)[0]
    for k in range(70):
        assert y[12 + k // 32, k % 32] == 235, k
    assert y[15, 0] == round(ref_yuv((0x20, 0x30, 0x40))[0])


def test_odd_rect_is_widened_to_whole_blocks():
    b = comp_batch([one_session(rect=(3, 1, 19, 11))])
    run_composite(b)
    y, u, _ = frame_planes(b)
    mask = np.zeros((24, 32), bool)
    mask[0:12, 2:20] = True
    assert np.all(y[~mask] == SENTINEL) and not np.any(y[mask] == SENTINEL)
    assert not np.any(u[0:6, 1:10] == SENTINEL) and np.all(u[6:, :] == SENTINEL)
