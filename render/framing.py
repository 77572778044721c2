"""Suggested cameras for the `head`, `bust` and `full` framings of an avatar."""

from __future__ import annotations

import math

import numpy as np

from .asset import CameraSuggestion

FOV_Y_DEG = 25.0
FRAMINGS = ("head", "bust", "full")


def _camera(center: np.ndarray, height: float, front_z: float) -> CameraSuggestion:
    """A camera on +Z looking at `center` so that `height` metres fill the view vertically."""
    distance = (height / 2.0) / math.tan(math.radians(FOV_Y_DEG) / 2.0)
    eye = np.array([center[0], center[1], max(front_z, center[2]) + distance], np.float32)
    return CameraSuggestion(
        eye=eye, target=center.astype(np.float32), fov_y_deg=FOV_Y_DEG, height=float(height)
    )


def suggest_cameras(
    positions: np.ndarray, humanoid: dict[str, int], joint_rest_world: np.ndarray
) -> dict[str, CameraSuggestion]:
    """Frame the head, the bust (head and shoulders) and the whole avatar.

    Uses the humanoid head bone when there is one (it sits at the base of the skull in VRM
    rigs); otherwise the top 15 % / 35 % of the bounding box stand in for head and bust.
    """
    if len(positions) == 0:
        zero = np.zeros(3, np.float32)
        return {f: _camera(zero, 1.0, 0.0) for f in FRAMINGS}
    lo = positions.min(axis=0)
    hi = positions.max(axis=0)
    total = max(float(hi[1] - lo[1]), 1e-3)
    mid = (lo + hi) / 2.0
    front = float(hi[2])
    cams = {"full": _camera(np.array([mid[0], mid[1], mid[2]]), total * 1.1, front)}

    head_index = humanoid.get("head")
    if head_index is not None:
        head = joint_rest_world[head_index][:3, 3].astype(np.float64)
        skull = max(float(hi[1]) - head[1], 0.05)  # head bone to the top of the hair
        spans = {"head": (head[1] - 0.55 * skull, hi[1] + 0.12 * skull),
                 "bust": (head[1] - 1.6 * skull, hi[1] + 0.15 * skull)}  # fmt: skip
        cx, cz = head[0], head[2]
    else:
        spans = {"head": (hi[1] - 0.15 * total, hi[1] + 0.02 * total),
                 "bust": (hi[1] - 0.35 * total, hi[1] + 0.03 * total)}  # fmt: skip
        cx, cz = mid[0], mid[2]
    for framing, (y0, y1) in spans.items():
        y0 = max(y0, float(lo[1]) - 0.05 * total)
        cams[framing] = _camera(np.array([cx, (y0 + y1) / 2.0, cz]), y1 - y0, front)
    return cams
