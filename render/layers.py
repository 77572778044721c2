"""Host-side preparation of backgrounds and overlays (runs when a scene changes, not per frame).

Outputs are exactly what the composite stage consumes (see kernels/composite.py):
    backgrounds: flat u8 NV12 (BT.709 limited range), Y plane then interleaved CbCr;
    overlays:    premultiplied, sRGB-encoded RGBA u8 [h, w, 4].

Colours are given as "#rrggbb", "#rrggbbaa", "#rgb" or (r, g, b[, a]) tuples of 0..255.
Text is rendered once with Pillow. `font_path=None` picks a CJK font when the system has
one (so "AI生成" renders), else Pillow's scalable default font; characters a font lacks
render as its fallback glyph, never as an error. For CI we want Debian's
`fonts-wqy-zenhei` (or `fonts-noto-cjk`) installed.

Videos are decoded once with PyAV and looped by the caller; memory is bounded by
`max_seconds` and `max_bytes` (decoded NV12 size), over which a `LayerError` is raised
unless `truncate=True`.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from avatarfarm.kernels.color import rgb_to_nv12_cpu

Color = str | Sequence[int]
ImageSource = str | os.PathLike | np.ndarray | Image.Image

DEFAULT_MAX_VIDEO_BYTES = 512 * 1024 * 1024
# A 24-megapixel photo still loads; a small file that decodes to gigabytes does not.
MAX_IMAGE_PIXELS = 6144 * 4096
LABEL_TEXT = "AI生成 · Virtual host"
CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")

CJK_FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
)
CJK_FONT_GLOBS = (
    "/usr/share/fonts/**/NotoSansCJK*.tt[cf]",
    "/usr/share/fonts/**/NotoSansSC*.[ot]tf",
    "/usr/share/fonts/**/wqy*.tt[cf]",
)


class LayerError(ValueError):
    """The one exception type of layer preparation: an input that cannot be used, and why."""


def parse_color(color: Color, alpha: bool = False) -> tuple[int, ...]:
    """'#203040' / '#fff' / '#rrggbbaa' / (r, g, b[, a]) -> (r, g, b) or (r, g, b, a)."""
    if isinstance(color, str):
        h = color.strip().lstrip("#")
        if len(h) in (3, 4):
            h = "".join(c * 2 for c in h)
        if len(h) not in (6, 8) or any(c not in "0123456789abcdefABCDEF" for c in h):
            raise LayerError(f"bad colour {color!r}: expected #rrggbb or #rrggbbaa")
        vals = [int(h[i : i + 2], 16) for i in range(0, len(h), 2)]
    else:
        vals = [int(c) for c in color]
        if len(vals) not in (3, 4) or any(not 0 <= c <= 255 for c in vals):
            raise LayerError(f"bad colour {color!r}: expected 3 or 4 values in 0..255")
    if len(vals) == 3:
        vals.append(255)
    return tuple(vals) if alpha else tuple(vals[:3])


def _check_size(w: int, h: int) -> None:
    if w <= 0 or h <= 0 or w % 2 or h % 2:
        raise LayerError(f"frame size must be positive and even, got {w}x{h}")


def solid_background(color: Color, w: int, h: int) -> np.ndarray:
    """A solid-colour NV12 frame (flat u8, w*h*3/2 bytes)."""
    _check_size(w, h)
    img = np.empty((h, w, 3), np.uint8)
    img[:] = parse_color(color)
    return rgb_to_nv12_cpu(img)


def _load_image(src: ImageSource) -> Image.Image:
    if isinstance(src, Image.Image):
        return src
    if isinstance(src, np.ndarray):
        arr = src
        if (
            arr.dtype != np.uint8
            or arr.ndim not in (2, 3)
            or (arr.ndim == 3 and arr.shape[2] not in (3, 4))
        ):
            raise LayerError(f"image array must be u8 [h,w], [h,w,3] or [h,w,4], got "
                             f"{arr.dtype} {arr.shape}")  # fmt: skip
        return Image.fromarray(arr)
    try:
        with Image.open(src) as im:
            check_image_size(*im.size)  # before decoding: the header says how big it is
            im.load()
            return im.copy()
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise LayerError(f"cannot read image {os.fspath(src)!r}: {e}") from e


def check_image_size(width: int, height: int) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise LayerError(f"image is {width}x{height}: more than {MAX_IMAGE_PIXELS} pixels")


def _fit_rgb(img: Image.Image, w: int, h: int, fit: str, pad: tuple[int, int, int]) -> np.ndarray:
    """Scale to w x h: 'fill' covers and centre-crops, 'fit' letterboxes on `pad`."""
    rgba = img.convert("RGBA")
    sw, sh = rgba.size
    if sw == 0 or sh == 0:
        raise LayerError("image is empty")
    if fit == "fill":
        scale = max(w / sw, h / sh)
    elif fit == "fit":
        scale = min(w / sw, h / sh)
    else:
        raise LayerError(f"fit must be 'fill' or 'fit', got {fit!r}")
    nw, nh = max(1, round(sw * scale)), max(1, round(sh * scale))
    scaled = rgba.resize((nw, nh), Image.Resampling.LANCZOS)
    canvas = Image.new("RGBA", (w, h), (*pad, 255))
    if fit == "fit":
        canvas.alpha_composite(scaled, ((w - nw) // 2, (h - nh) // 2))
    else:
        left, top = (nw - w) // 2, (nh - h) // 2
        canvas.alpha_composite(scaled.crop((left, top, left + w, top + h)))
    return np.asarray(canvas.convert("RGB"))


def image_background(
    src: ImageSource, w: int, h: int, fit: str = "fill", letterbox: Color = "#000000"
) -> np.ndarray:
    """An image as an NV12 background: 'fill' = cover and crop, 'fit' = letterbox."""
    _check_size(w, h)
    return rgb_to_nv12_cpu(_fit_rgb(_load_image(src), w, h, fit, parse_color(letterbox)))


def video_background(
    path: str | os.PathLike,
    w: int,
    h: int,
    max_seconds: float = 10.0,
    max_bytes: int = DEFAULT_MAX_VIDEO_BYTES,
    fit: str = "fill",
    fps: float | None = None,
    truncate: bool = False,
    letterbox: Color = "#000000",
) -> list[np.ndarray]:
    """Decode a video once into NV12 frames for looping.

    `fps` resamples to the output rate (one list entry per output frame) when given;
    otherwise every decoded frame is kept. Longer than `max_seconds`, or more decoded bytes
    than `max_bytes`: LayerError, or the first part only when `truncate` is True.
    """
    import av

    _check_size(w, h)
    frame_bytes = w * h * 3 // 2
    if frame_bytes > max_bytes:
        raise LayerError(f"one {w}x{h} frame exceeds max_bytes={max_bytes}")
    pad = parse_color(letterbox)
    frames: list[np.ndarray]
    try:
        container = av.open(os.fspath(path))
    except (av.FFmpegError, OSError) as e:
        raise LayerError(f"cannot open video {os.fspath(path)!r}: {e}") from e
    with container:
        if not container.streams.video:
            raise LayerError(f"{os.fspath(path)!r} has no video stream")
        stream = container.streams.video[0]
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        if duration is not None and duration > max_seconds + 1e-3 and not truncate:
            raise LayerError(
                f"video is {duration:.1f} s long, over max_seconds={max_seconds}; "
                "trim it or pass truncate=True"
            )
        rate = float(stream.average_rate) if stream.average_rate else 0.0
        frame_dur = 1.0 / rate if rate > 0 else 1.0 / 30.0
        frames = []
        step = 1.0 / fps if fps else 0.0
        next_t = 0.0  # time of the next output frame (fps mode)
        held: np.ndarray | None = None  # the source frame shown until the next one starts

        def keep(nv12: np.ndarray) -> bool:
            """Append one frame; False when the byte budget stops decoding (truncate)."""
            if (len(frames) + 1) * frame_bytes > max_bytes:
                if truncate:
                    return False
                raise LayerError(
                    f"decoded video exceeds max_bytes={max_bytes} "
                    f"(more than {len(frames)} frames of {w}x{h}); shorten it or lower the size"
                )
            frames.append(nv12)
            return True

        def hold_until(t_end: float) -> bool:
            """fps mode: output frames up to t_end show the held source frame."""
            nonlocal next_t
            while held is not None and next_t < t_end - 1e-6:
                if not keep(held):
                    return False
                next_t += step
            return True

        t0: float | None = None
        end_t = 0.0
        try:
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else len(frames) * frame_dur
                t0 = t if t0 is None else t0
                t -= t0
                if t >= max_seconds - 1e-6:
                    if truncate:
                        break
                    raise LayerError(f"video runs past max_seconds={max_seconds}")
                nv12 = rgb_to_nv12_cpu(_fit_rgb(frame.to_image(), w, h, fit, pad))
                end_t = min(t + frame_dur, max_seconds)
                if fps is None:
                    if not keep(nv12):
                        break
                    continue
                if not hold_until(t):
                    held = None
                    break
                held = nv12
            hold_until(end_t)
        except av.FFmpegError as e:
            raise LayerError(f"cannot decode video {os.fspath(path)!r}: {e}") from e
    if not frames:
        raise LayerError(f"video {os.fspath(path)!r} has no decodable frames")
    return frames


def premultiply(rgba: np.ndarray) -> np.ndarray:
    """Straight RGBA u8 -> premultiplied RGBA u8 (in encoded values, rounded)."""
    a = rgba[..., 3:4].astype(np.uint32)
    out = rgba.copy()
    out[..., :3] = ((rgba[..., :3].astype(np.uint32) * a + 127) // 255).astype(np.uint8)
    return out


def image_overlay(src: ImageSource, w: int | None = None, h: int | None = None) -> np.ndarray:
    """An image (with its alpha) scaled to w x h (keeps aspect when one is None)."""
    img = _load_image(src).convert("RGBA")
    sw, sh = img.size
    if w is None and h is None:
        w, h = sw, sh
    elif w is None:
        w = max(1, round(sw * h / sh))
    elif h is None:
        h = max(1, round(sh * w / sw))
    if w <= 0 or h <= 0:
        raise LayerError(f"overlay size must be positive, got {w}x{h}")
    if (w, h) != (sw, sh):
        # resize in premultiplied form so transparent pixels do not bleed dark fringes
        pm = Image.fromarray(premultiply(np.asarray(img)), "RGBa")
        return np.array(pm.resize((w, h), Image.Resampling.LANCZOS))
    return premultiply(np.asarray(img))


def find_cjk_font() -> str | None:
    """Path of an installed font with CJK glyphs, or None."""
    for p in CJK_FONT_CANDIDATES:
        if os.path.exists(p):
            return p
    for pattern in CJK_FONT_GLOBS:
        hits = sorted(glob.glob(pattern, recursive=True))
        if hits:
            return hits[0]
    return None


def load_font(font_path: str | os.PathLike | None, size_px: int) -> ImageFont.FreeTypeFont:
    """The given font, else a CJK system font, else Pillow's scalable default."""
    path = os.fspath(font_path) if font_path is not None else find_cjk_font()
    if path is not None:
        try:
            return ImageFont.truetype(path, size_px)
        except OSError as e:
            if font_path is not None:
                raise LayerError(f"cannot load font {path!r}: {e}") from e
    return ImageFont.load_default(size=size_px)


def text_overlay(
    text: str,
    font_path: str | os.PathLike | None = None,
    size_px: int = 32,
    color: Color = "#ffffff",
    background: Color = (0, 0, 0, 128),
    padding: int | None = None,
) -> np.ndarray:
    """Text on a (semi-transparent) box as premultiplied RGBA u8 [h, w, 4]."""
    if size_px <= 0:
        raise LayerError(f"size_px must be positive, got {size_px}")
    if not text:
        raise LayerError("text is empty")
    font = load_font(font_path, size_px)
    pad = round(size_px * 0.4) if padding is None else int(padding)
    left, top, right, bottom = font.getbbox(text)
    tw, th = max(1, right - left), max(1, bottom - top)
    w, h = tw + 2 * pad, th + 2 * pad
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).text((pad - left, pad - top), text, font=font, fill=255)
    fg = np.array(parse_color(color, alpha=True), np.float64) / 255.0
    bg = np.array(parse_color(background, alpha=True), np.float64) / 255.0
    ta = np.asarray(mask, np.float64)[..., None] / 255.0 * fg[3]
    out_a = ta + bg[3] * (1.0 - ta)
    out_c = fg[:3] * ta + bg[:3] * bg[3] * (1.0 - ta)  # premultiplied "over"
    out = np.concatenate([out_c, out_a], axis=-1)
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


def compliance_label(
    text: str = LABEL_TEXT,
    corner: str = "top-right",
    frame_w: int = 1280,
    frame_h: int = 720,
    font_path: str | os.PathLike | None = None,
    scale: float = 0.03,
    max_width: float = 0.45,
) -> tuple[np.ndarray, int, int]:
    """The AI-generated-content label and its top-left (x, y) in the frame.

    Text height ~3 % of the frame height (at least 14 px): readable on a phone, small
    enough not to cover the host; on narrow (vertical) frames shrunk so the label stays
    within `max_width` of the frame width. Placed in `corner` with a margin (2 % of the
    short side); position even-aligned.
    """
    if corner not in CORNERS:
        raise LayerError(f"corner must be one of {', '.join(CORNERS)}, got {corner!r}")
    size = max(14, round(frame_h * scale))
    rgba = text_overlay(text, font_path, size, "#ffffff", (0, 0, 0, 140))
    if rgba.shape[1] > max_width * frame_w and size > 14:
        # vertical frames: keep the label within max_width of the frame width
        size = max(14, int(size * max_width * frame_w / rgba.shape[1]))
        rgba = text_overlay(text, font_path, size, "#ffffff", (0, 0, 0, 140))
    h, w = rgba.shape[:2]
    if w > frame_w or h > frame_h:
        raise LayerError(f"label {w}x{h} does not fit a {frame_w}x{frame_h} frame")
    margin = max(2, round(min(frame_w, frame_h) * 0.02))
    x = margin if corner.endswith("left") else frame_w - w - margin
    y = margin if corner.startswith("top") else frame_h - h - margin
    x, y = max(0, x - x % 2), max(0, y - y % 2)
    return rgba, x, y


__all__ = [
    "LayerError",
    "compliance_label",
    "find_cjk_font",
    "image_background",
    "image_overlay",
    "parse_color",
    "premultiply",
    "solid_background",
    "text_overlay",
    "video_background",
]
