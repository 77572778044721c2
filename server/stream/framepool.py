"""Reusable frame buffers and the bounded hand-off from the engine to the encoder thread.

`submit()` runs on the engine thread every tick, so it only copies into a free buffer and
appends; it never waits. With no free buffer the frame is dropped and the caller told so.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

import numpy as np


class FrameQueue:
    """`depth` pooled NV12 buffers cycling between the engine and the encoder thread."""

    def __init__(self, frame_bytes: int, depth: int, device: bool = False) -> None:
        self._free: list[Any] = [_alloc(frame_bytes, device) for _ in range(depth)]
        self._ready: deque[tuple[Any, int]] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, frame: Any, frame_index: int) -> bool:
        """Copy `frame` into a free buffer and queue it; False (nothing copied) when full."""
        with self._cond:
            if self._closed or not self._free:
                return False
            buf = self._free.pop()
        _copy(buf, frame)
        with self._cond:
            self._ready.append((buf, frame_index))
            self._cond.notify()
        return True

    def get(self, timeout: float) -> tuple[Any, int] | None:
        """The oldest queued frame, or None after `timeout` / when closed and empty."""
        with self._cond:
            if not self._ready and not self._closed:
                self._cond.wait(timeout)
            return self._ready.popleft() if self._ready else None

    def release(self, buf: Any) -> None:
        with self._cond:
            self._free.append(buf)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


def _alloc(frame_bytes: int, device: bool) -> Any:
    if device:
        from numba import cuda  # only on NVENC hosts, where frames stay on the GPU

        return cuda.device_array(frame_bytes, np.uint8)
    return np.empty(frame_bytes, np.uint8)


def _copy(dst: Any, src: Any) -> None:
    if isinstance(dst, np.ndarray):
        np.copyto(dst, src.reshape(-1))
    else:
        dst.copy_to_device(src.reshape(-1))  # device-to-device: no host round trip
