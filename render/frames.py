"""Host-side views of NV12 frames: back to RGB so what you see is what is encoded."""

from __future__ import annotations

import numpy as np

KR, KB = 0.2126, 0.0722
KG = 1.0 - KR - KB


def nv12_planes(nv12: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The Y plane [h, w] and the interleaved UV plane [h/2, w/2, 2] of one NV12 frame."""
    y = nv12[: width * height].reshape(height, width)
    uv = nv12[width * height : width * height * 3 // 2].reshape(height // 2, width // 2, 2)
    return y, uv


def nv12_to_rgb(nv12: np.ndarray, width: int, height: int) -> np.ndarray:
    """BT.709 limited range NV12 -> sRGB uint8 [h, w, 3] (chroma upsampled by replication)."""
    y, uv = nv12_planes(nv12, width, height)
    yf = (y.astype(np.float32) - 16.0) / 219.0
    cb = (uv[..., 0].astype(np.float32) - 128.0) / 224.0
    cr = (uv[..., 1].astype(np.float32) - 128.0) / 224.0
    cb = cb.repeat(2, axis=0).repeat(2, axis=1)
    cr = cr.repeat(2, axis=0).repeat(2, axis=1)
    r = yf + 2.0 * (1.0 - KR) * cr
    b = yf + 2.0 * (1.0 - KB) * cb
    g = (yf - KR * r - KB * b) / KG
    rgb = np.stack([r, g, b], axis=-1)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
