"""Choosing a session's encoder: NVENC where the GPU has one, x264 otherwise.

DESIGN.md: A100, H100 and H200 have no NVENC, so "auto" must find out by opening a
session, log that once per process, and fall back per session without failing it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

import numpy as np

from .errors import StreamError
from .packets import EncodedPacket
from .settings import ENCODER_CHOICES, VideoSettings
from .x264 import X264Encoder

log = logging.getLogger(__name__)

_fallback_logged = threading.Event()


class VideoEncoder(Protocol):
    """What the pipeline needs from an encoder; `template` feeds muxer headers."""

    name: str
    template: Any

    @property
    def bitrate_kbps(self) -> int: ...
    def set_bitrate(self, kbps: int) -> None: ...
    def encode(self, frame: Any, pts: int, force_idr: bool) -> list[EncodedPacket]: ...
    def flush(self) -> list[EncodedPacket]: ...


def _open_nvenc(width: int, height: int, fps: int, settings: VideoSettings) -> VideoEncoder:
    from .nvenc import NvencEncoder

    return NvencEncoder(width, height, fps, settings)


def select_encoder(
    choice: str, width: int, height: int, fps: int, settings: VideoSettings
) -> VideoEncoder | None:
    """An open encoder for `choice` ("auto" | "nvenc" | "x264" | "none"); None for "none".

    "nvenc" insists (raises StreamError when it cannot open); "auto" tries NVENC and
    falls back to x264, logging the first fallback in the process at WARNING.
    """
    if choice not in ENCODER_CHOICES:
        raise StreamError(f"encoder must be one of {ENCODER_CHOICES}", "encoder")
    if width % 2 or height % 2 or width < 16 or height < 16:
        raise StreamError("width and height must be even and at least 16", "width")
    if choice == "none":
        return None
    if choice in ("auto", "nvenc"):
        try:
            return _open_nvenc(width, height, fps, settings)
        except Exception as exc:  # ImportError, or PyNvVideoCodec's errors (no NVENC, cap)
            if choice == "nvenc":
                raise StreamError(f"NVENC unavailable: {exc}", "encoder") from exc
            if not _fallback_logged.is_set():
                _fallback_logged.set()
                log.warning("no NVENC on this GPU, falling back to x264 (%s)", exc)
            else:
                log.debug("NVENC unavailable, x264 for this session: %s", exc)
    return X264Encoder(width, height, fps, settings)


def host_frame(nv12: np.ndarray, width: int, height: int) -> np.ndarray:
    """Check a host NV12 frame's size before it enters the pipeline."""
    expected = width * height * 3 // 2
    if nv12.dtype != np.uint8 or nv12.size != expected:
        raise StreamError(
            f"frame must be {expected} uint8 bytes of NV12 ({width}x{height}),"
            f" got {nv12.size} {nv12.dtype}",
            "frame",
        )
    return nv12.reshape(-1)
