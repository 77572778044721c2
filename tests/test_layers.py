"""Host-side layer preparation: backgrounds (solid, image, video) and overlays (image, text)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from avatarfarm.render.layers import (
    LayerError,
    compliance_label,
    find_cjk_font,
    image_background,
    image_overlay,
    parse_color,
    premultiply,
    solid_background,
    text_overlay,
    video_background,
)


def nv12_planes(buf, w, h):
    y = buf[: w * h].reshape(h, w)
    uv = buf[w * h :].reshape(h // 2, w // 2, 2)
    return y, uv[..., 0], uv[..., 1]


def ref_nv12(rgb):
    r, g, b = (c / 255.0 for c in rgb)
    y = 0.2126 * r + 0.7152 * g + 0.0722 * b
    vals = (16 + 219 * y, 128 + 224 * (b - y) / 1.8556, 128 + 224 * (r - y) / 1.5748)
    return tuple(int(np.rint(v)) for v in vals)


@pytest.mark.parametrize(
    "color, rgb",
    [("#203040", (0x20, 0x30, 0x40)), ("#fff", (255, 255, 255)), ((0, 0, 0), (0, 0, 0)),
     ("#FF0000", (255, 0, 0))],
)  # fmt: skip
def test_solid_background_exact(color, rgb):
    buf = solid_background(color, 16, 8)
    assert buf.dtype == np.uint8 and buf.shape == (16 * 8 * 3 // 2,)
    y, u, v = nv12_planes(buf, 16, 8)
    want = ref_nv12(rgb)
    assert np.all(y == want[0]) and np.all(u == want[1]) and np.all(v == want[2])


def test_white_and_black_are_studio_range():
    assert ref_nv12((255, 255, 255)) == (235, 128, 128)
    y, u, v = nv12_planes(solid_background("#000000", 4, 4), 4, 4)
    assert y.max() == 16 and u.max() == 128 and v.max() == 128


@pytest.mark.parametrize("bad", ["#12345", "red", (1, 2), (0, 0, 300)])
def test_bad_colours_are_named(bad):
    with pytest.raises(LayerError, match="bad colour"):
        parse_color(bad)


def test_odd_frame_size_rejected():
    with pytest.raises(LayerError, match="even"):
        solid_background("#000", 15, 8)


def two_halves(w=40, h=20) -> np.ndarray:
    """Left half red, right half blue."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (255, 0, 0)
    img[:, w // 2 :] = (0, 0, 255)
    return img


def test_image_background_fill_covers_and_crops():
    # 40x20 source into 20x20: cover scales by 1 and crops the middle 20 columns
    y, _, _ = nv12_planes(image_background(two_halves(), 20, 20, fit="fill"), 20, 20)
    red, blue = ref_nv12((255, 0, 0))[0], ref_nv12((0, 0, 255))[0]
    assert np.all(y[:, :8] == red) and np.all(y[:, 12:] == blue)


def test_image_background_fit_letterboxes():
    buf = image_background(two_halves(), 20, 20, fit="fit", letterbox="#00ff00")
    y, _, _ = nv12_planes(buf, 20, 20)
    green = ref_nv12((0, 255, 0))[0]
    assert np.all(y[:4] == green) and np.all(y[-4:] == green)  # bars top and bottom
    assert y[10, 2] == ref_nv12((255, 0, 0))[0]


def test_image_background_from_file_and_errors(tmp_path):
    p = tmp_path / "bg.png"
    Image.fromarray(two_halves()).save(p)
    assert image_background(p, 8, 4).shape == (48,)
    with pytest.raises(LayerError, match="cannot read image"):
        image_background(tmp_path / "missing.png", 8, 4)
    with pytest.raises(LayerError, match="fit"):
        image_background(p, 8, 4, fit="stretch")


def write_video(path, frames=12, fps=6, w=32, h=24):
    import av

    with av.open(str(path), "w") as out:
        st = out.add_stream("mpeg4", rate=fps)
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            img = np.zeros((h, w, 3), np.uint8)
            img[:] = (i * 20 % 256, 100, 200)
            for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)


def test_video_background_decodes_once(tmp_path):
    p = tmp_path / "bg.mp4"
    write_video(p, frames=12, fps=6)
    frames = video_background(p, 16, 12)
    assert len(frames) == 12
    assert all(f.shape == (16 * 12 * 3 // 2,) and f.dtype == np.uint8 for f in frames)
    assert not np.array_equal(frames[0], frames[-1])  # content changes over time
    # resampled to 12 fps: every source frame twice
    assert len(video_background(p, 16, 12, fps=12)) == 24


def test_video_background_bounded(tmp_path):
    p = tmp_path / "long.mp4"
    write_video(p, frames=12, fps=6)  # 2 s
    with pytest.raises(LayerError, match="max_seconds"):
        video_background(p, 16, 12, max_seconds=1.0)
    assert len(video_background(p, 16, 12, max_seconds=1.0, truncate=True)) == 6
    one = 16 * 12 * 3 // 2
    with pytest.raises(LayerError, match="max_bytes"):
        video_background(p, 16, 12, max_bytes=5 * one)
    assert len(video_background(p, 16, 12, max_bytes=5 * one, truncate=True)) == 5
    with pytest.raises(LayerError, match="cannot open video"):
        video_background(tmp_path / "nope.mp4", 16, 12)


def test_image_overlay_is_premultiplied():
    img = np.zeros((4, 4, 4), np.uint8)
    img[:] = (200, 100, 50, 128)
    out = image_overlay(img)
    assert out.shape == (4, 4, 4)
    assert tuple(out[0, 0]) == (100, 50, 25, 128)
    assert np.all(out[..., :3] <= out[..., 3:])
    scaled = image_overlay(img, 8)
    assert scaled.shape == (8, 8, 4)
    assert np.all(scaled[..., :3] <= scaled[..., 3:].astype(int) + 1)


def test_premultiply_keeps_opaque_and_zeroes_transparent():
    px = np.array([[[10, 20, 30, 255], [10, 20, 30, 0]]], np.uint8)
    out = premultiply(px)
    assert tuple(out[0, 0]) == (10, 20, 30, 255) and tuple(out[0, 1]) == (0, 0, 0, 0)


def test_text_overlay_default_font():
    rgba = text_overlay("LIVE 19:00", size_px=20, color="#ffffff", background=(0, 0, 0, 128))
    h, w = rgba.shape[:2]
    assert rgba.dtype == np.uint8 and 20 <= h <= 60 and w > h
    assert np.all(rgba[..., :3] <= rgba[..., 3:])  # premultiplied
    assert rgba[0, 0, 3] == 128 and rgba[..., 3].max() == 255  # box corner and solid glyphs
    bigger = text_overlay("LIVE 19:00", size_px=40)
    assert bigger.shape[0] > 1.5 * h  # the default font scales


def test_text_with_glyphs_the_font_lacks_does_not_crash(monkeypatch):
    import avatarfarm.render.layers as layers

    monkeypatch.setattr(layers, "find_cjk_font", lambda: None)  # Pillow's default font
    rgba = text_overlay("AI生成 😀", size_px=16)
    assert rgba.shape[0] > 0 and rgba.shape[1] > 0 and rgba[..., 3].max() == 255


def test_bad_font_path_is_named(tmp_path):
    with pytest.raises(LayerError, match="cannot load font"):
        text_overlay("x", font_path=tmp_path / "nofont.ttf")


def test_cjk_text_renders_with_a_cjk_font():
    path = find_cjk_font()
    if path is None:
        pytest.skip("no CJK font installed (apt-get install fonts-wqy-zenhei)")
    a = text_overlay("生", font_path=path, size_px=32, background=(0, 0, 0, 0), padding=0)
    b = text_overlay("成", font_path=path, size_px=32, background=(0, 0, 0, 0), padding=0)
    assert a[..., 3].max() == 255 and b[..., 3].max() == 255
    h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    # two different glyphs, not the same fallback box
    assert np.abs(a[:h, :w, 3].astype(int) - b[:h, :w, 3].astype(int)).mean() > 10


@pytest.mark.parametrize("fw, fh", [(1280, 720), (720, 1280)])
@pytest.mark.parametrize("corner", ["top-left", "top-right", "bottom-left", "bottom-right"])
def test_compliance_label_corners_and_size(corner, fw, fh):
    rgba, x, y = compliance_label(corner=corner, frame_w=fw, frame_h=fh)
    h, w = rgba.shape[:2]
    assert 0 <= x and x + w <= fw and 0 <= y and y + h <= fh and x % 2 == 0 and y % 2 == 0
    assert 0.02 * min(fw, fh) <= h <= 0.1 * fh  # prominent but not dominant
    assert w <= 0.45 * fw
    assert (x > fw / 2) == ("right" in corner)
    assert (y > fh / 2) == ("bottom" in corner)


def test_compliance_label_scales_with_frame_and_rejects_bad_corner():
    small = compliance_label(frame_w=1280, frame_h=720)[0]
    large = compliance_label(frame_w=1920, frame_h=1080)[0]
    assert large.shape[0] > small.shape[0]
    with pytest.raises(LayerError, match="corner"):
        compliance_label(corner="middle")
