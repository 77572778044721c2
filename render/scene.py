"""What a session's frame shows besides the avatar: background, placement, overlays, label.

A `Scene` is plain data (what a platform backend sends); `compile_scene` turns it into
pixels for one frame size once, so nothing here runs per frame.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .camera import Placement

FRAMINGS = ("head", "bust", "full")
DEFAULT_LABEL = "AI生成 · Virtual host"
CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")
_COLOR = re.compile(r"^#?[0-9a-fA-F]{6}$")
VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".flv")


class SceneError(ValueError):
    """A scene that cannot be shown, with the field at fault."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Overlay:
    """An image or a text layer. Position and width are fractions of the frame."""

    image: str | None = None
    text: str | None = None
    x: float = 0.05
    y: float = 0.05
    width: float | None = None  # fraction of frame width; None = natural size
    opacity: float = 1.0
    z: int = 1  # > 0 in front of the avatar, < 0 behind it
    font: str | None = None
    font_size: float = 0.04  # text height as a fraction of the frame height
    color: str = "#ffffff"


@dataclass(frozen=True)
class Label:
    """The AI-generated content label every frame carries (platform compliance)."""

    text: str = DEFAULT_LABEL
    corner: str = "top-right"
    enabled: bool = True
    font: str | None = None


@dataclass(frozen=True)
class Scene:
    background: str = "#203040"  # colour, or an image or short video file
    background_fit: str = "fill"  # fill (cover and crop) | fit (letterbox)
    framing: str = "bust"
    placement: Placement = field(default_factory=Placement)
    overlays: tuple[Overlay, ...] = ()
    label: Label = field(default_factory=Label)

    def validate(self) -> None:
        if self.framing not in FRAMINGS:
            raise SceneError(f"framing must be one of {', '.join(FRAMINGS)}", "framing")
        if self.background_fit not in ("fill", "fit"):
            raise SceneError("background_fit must be fill or fit", "background_fit")
        if not is_color(self.background) and not Path(self.background).is_file():
            raise SceneError(
                "background must be a #rrggbb colour or an existing image/video file",
                "background",
            )
        p = self.placement
        if not (0.0 < p.scale <= 8.0) or not (-1.0 <= p.x <= 2.0) or not (-1.0 <= p.y <= 2.0):
            raise SceneError("placement x, y must be near 0..1 and scale in (0, 8]", "placement")
        if self.label.corner not in CORNERS:
            raise SceneError(f"label corner must be one of {', '.join(CORNERS)}", "label.corner")
        for i, o in enumerate(self.overlays):
            if (o.image is None) == (o.text is None):
                raise SceneError("an overlay has exactly one of image or text", f"overlays[{i}]")
            if not 0.0 <= o.opacity <= 1.0:
                raise SceneError("overlay opacity must be within 0..1", f"overlays[{i}].opacity")
            if o.image is not None and not Path(o.image).is_file():
                raise SceneError(f"overlay image not found: {o.image}", f"overlays[{i}].image")


def is_color(value: str) -> bool:
    return bool(_COLOR.match(value))


def parse_color(value: str) -> tuple[int, int, int]:
    value = value.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


@dataclass
class CompiledLayer:
    """A premultiplied sRGB RGBA image placed in the frame."""

    rgba: np.ndarray  # [h, w, 4] uint8
    x: int
    y: int
    opacity: float
    z: int


@dataclass
class CompiledScene:
    """A scene turned into pixels for one frame size: built when the scene changes."""

    width: int
    height: int
    backgrounds: list[np.ndarray]  # NV12 frames, one for a still, several for a video loop
    layers: list[CompiledLayer]  # overlays and the label, sorted by z


def compile_scene(
    scene: Scene,
    width: int,
    height: int,
    *,
    fps: float = 30.0,
    enforce_label: bool = False,
    label_text: str | None = None,
) -> CompiledScene:
    """Render the background, overlays and label once, with Pillow and PyAV."""
    from . import layers

    scene.validate()
    if is_color(scene.background):
        backgrounds = [layers.solid_background(scene.background, width, height)]
    elif Path(scene.background).suffix.lower() in VIDEO_SUFFIXES:
        backgrounds = layers.video_background(
            scene.background, width, height, fit=scene.background_fit, fps=fps
        )
    else:
        backgrounds = [
            layers.image_background(scene.background, width, height, fit=scene.background_fit)
        ]

    compiled: list[CompiledLayer] = []
    for o in scene.overlays:
        target_w = None if o.width is None else max(1, int(round(o.width * width)))
        if o.image is not None:
            rgba = layers.image_overlay(o.image, target_w)
        else:
            rgba = layers.text_overlay(
                o.text or "",
                font_path=o.font,
                size_px=max(8, int(round(o.font_size * height))),
                color=parse_color(o.color) if is_color(o.color) else (255, 255, 255),
            )
        compiled.append(
            CompiledLayer(rgba, int(round(o.x * width)), int(round(o.y * height)), o.opacity, o.z)
        )

    label = scene.label
    if label.enabled or enforce_label:
        text = label_text if (enforce_label and label_text) else label.text
        rgba, lx, ly = layers.compliance_label(
            text, corner=label.corner, frame_w=width, frame_h=height, font_path=label.font
        )
        compiled.append(CompiledLayer(rgba, lx, ly, 1.0, 1 << 30))
    compiled.sort(key=lambda layer: layer.z)
    return CompiledScene(width, height, backgrounds, compiled)
