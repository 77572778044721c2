"""Camera matrices and the avatar layer: the part of the frame the avatar can cover.

Only that box is rasterized and shaded each tick; the rest of the frame is the static
background and overlays, composited once when the scene changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .asset import CameraSuggestion

NEAR = 0.05
FAR = 50.0
POSE_MARGIN = 0.12  # fraction of the avatar's size added around its box: head turns, sway


@dataclass(frozen=True)
class Placement:
    """Where the framed avatar sits: centre (x, y) as fractions of the frame, and a zoom."""

    x: float = 0.5
    y: float = 0.5
    scale: float = 1.0


@dataclass(frozen=True)
class LayerRect:
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def empty(self) -> bool:
        return self.width <= 0 or self.height <= 0


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    forward = target - eye
    forward = forward / max(np.linalg.norm(forward), 1e-9)
    side = np.cross(forward, np.array([0.0, 1.0, 0.0]))
    side = side / max(np.linalg.norm(side), 1e-9)
    up = np.cross(side, forward)
    view = np.eye(4)
    view[0, :3], view[1, :3], view[2, :3] = side, up, -forward
    view[:3, 3] = -view[:3, :3] @ eye
    return view


def perspective(fov_y_deg: float, aspect: float) -> np.ndarray:
    f = 1.0 / math.tan(math.radians(fov_y_deg) / 2.0)
    proj = np.zeros((4, 4))
    proj[0, 0] = f / aspect
    proj[1, 1] = f
    proj[2, 2] = (FAR + NEAR) / (NEAR - FAR)
    proj[2, 3] = 2.0 * FAR * NEAR / (NEAR - FAR)
    proj[3, 2] = -1.0
    return proj


def frame_view_projection(
    camera: CameraSuggestion, width: int, height: int, placement: Placement
) -> np.ndarray:
    """World -> frame clip space for a framing preset, fitted to the frame's aspect.

    Vertical frames (mobile live commerce) would crop the shoulders if only the framing's
    height were fitted, so the view also keeps a width of 0.75 x that height.
    """
    aspect = width / height
    extent = max(camera.height, 0.75 * camera.height / aspect)
    distance = float(np.linalg.norm(camera.eye - camera.target))
    fov = math.degrees(2.0 * math.atan((extent / 2.0) / max(distance, 1e-6)))
    vp = perspective(fov, aspect) @ look_at(camera.eye.astype(float), camera.target.astype(float))
    # ndc' = scale * ndc + offset; in clip space the offset multiplies w (the last column).
    shift = np.eye(4)
    shift[0, 0] = shift[1, 1] = placement.scale
    shift[0, 3] = 2.0 * placement.x - 1.0
    shift[1, 3] = 1.0 - 2.0 * placement.y
    return shift @ vp


def layer_rect(
    frame_vp: np.ndarray, lo: np.ndarray, hi: np.ndarray, width: int, height: int
) -> LayerRect:
    """The even-aligned pixel box of the frame that the avatar's (padded) bounds project to."""
    pad = (hi - lo) * POSE_MARGIN
    lo, hi = lo - pad, hi + pad
    corners = np.array([[x, y, z, 1.0] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])
                        for z in (lo[2], hi[2])])  # fmt: skip
    clip = corners @ frame_vp.T
    w = clip[:, 3]
    if np.any(w <= NEAR * 0.5):  # the camera is inside the padded box: use the whole frame
        return LayerRect(0, 0, width, height)
    px = (clip[:, 0] / w * 0.5 + 0.5) * width
    py = (1.0 - (clip[:, 1] / w * 0.5 + 0.5)) * height
    x0 = max(0, int(math.floor(px.min() / 2.0)) * 2)
    y0 = max(0, int(math.floor(py.min() / 2.0)) * 2)
    x1 = min(width, int(math.ceil(px.max() / 2.0)) * 2)
    y1 = min(height, int(math.ceil(py.max() / 2.0)) * 2)
    return LayerRect(x0, y0, max(x0, x1), max(y0, y1))


def layer_view_projection(frame_vp: np.ndarray, rect: LayerRect, width: int, height: int):
    """World -> layer clip space: the frame projection re-mapped so the layer fills NDC."""
    sx, sy = width / rect.width, height / rect.height
    remap = np.eye(4)
    remap[0, 0] = sx
    remap[0, 3] = sx - 2.0 * rect.x0 / rect.width - 1.0
    remap[1, 1] = sy
    remap[1, 3] = 1.0 - sy + 2.0 * rect.y0 / rect.height
    return remap @ frame_vp
