"""`avatarfarm render`: one frame to PNG/JPEG, or a short clip to MP4, without the server.

The frame goes through the same path as a live stream (batched render -> NV12), and the
picture is converted back from NV12, so what you see is what would be encoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from avatarfarm.render.avatars import load
from avatarfarm.render.expressions import inputs_from_dict
from avatarfarm.render.frames import nv12_to_rgb
from avatarfarm.render.motion import demo_motion
from avatarfarm.render.renderer import Renderer
from avatarfarm.render.scene import Scene

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class StillPose:
    expressions: dict[str, float]
    head: tuple[float, float, float] = (0.0, 0.0, 0.0)
    eyes: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 1280x720") from None
    return width, height


def parse_expressions(items: list[str]) -> dict[str, float]:
    result = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            result[name] = float(value)
        except ValueError:
            raise ValueError(f"--expression {item!r}: expected NAME=VALUE") from None
    return result


def render_still(avatar: str, size: tuple[int, int], scene: Scene, pose: StillPose,
                 out: Path, device: str = "auto") -> None:  # fmt: skip
    """Render one frame and save it as an image."""
    expressions, unknown = inputs_from_dict(pose.expressions)
    if unknown:
        raise ValueError(f"unknown expression names: {', '.join(unknown)}")
    renderer = Renderer(device)
    slot = renderer.open(load(avatar), size[0], size[1], scene)
    renderer.render(
        np.array([slot]),
        expressions[None, :],
        np.array([pose.head], np.float32),
        np.array([pose.eyes], np.float32),
    )
    from PIL import Image

    Image.fromarray(nv12_to_rgb(renderer.frame(slot), *size)).save(out)


def render_clip(avatar: str, size: tuple[int, int], scene: Scene, seconds: float, fps: int,
                out: Path, device: str = "auto") -> int:  # fmt: skip
    """Render `seconds` of the built-in demo motion and encode it with x264; returns frames."""
    import av

    renderer = Renderer(device)
    width, height = size
    slot = renderer.open(load(avatar), width, height, scene, fps)
    frames = max(1, int(round(seconds * fps)))
    expressions, head, eyes = demo_motion(np.arange(frames) / fps)
    with av.open(str(out), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.options = {"preset": "veryfast", "crf": "20", "bf": "0"}
        stream.codec_context.color_primaries = 1  # BT.709
        stream.codec_context.color_trc = 1
        stream.codec_context.colorspace = 1
        stream.codec_context.color_range = 1  # limited ("tv")
        for i in range(frames):
            renderer.render(
                np.array([slot]), expressions[i : i + 1], head[i : i + 1], eyes[i : i + 1]
            )
            nv12 = renderer.frame(slot).reshape(height * 3 // 2, width)
            frame = av.VideoFrame.from_ndarray(nv12, format="nv12")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return frames
