"""Helpers for the stream tests: synthetic NV12 video, paced feeding, and a PyAV puller."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np


def moving_nv12(width: int, height: int, n: int) -> np.ndarray:
    """A diagonal gradient that moves 4 px per frame, so every frame really differs."""
    y = (np.arange(width)[None, :] + np.arange(height)[:, None] + 4 * n) % 220 + 16
    uv = np.full((height // 2, width), 128, np.uint8)
    uv[:, 0::2] = (64 + 2 * n) % 256
    return np.concatenate([y.astype(np.uint8).reshape(-1), uv.reshape(-1)])


def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def feed(pipeline: Any, frames: int, start: int = 0, paced: bool = True) -> int:
    """Submit `frames` frames; paced at the session fps (live) or retried until accepted."""
    w, h, fps = pipeline.width, pipeline.height, pipeline.fps
    t0 = time.monotonic()
    for i in range(frames):
        n = start + i
        frame = moving_nv12(w, h, n)
        if paced:
            pipeline.submit(frame, n)
            time.sleep(max(0.0, t0 + (i + 1) / fps - time.monotonic()))
        else:
            while not pipeline.submit(frame, n):
                time.sleep(0.002)
    return start + frames


class Feeder(threading.Thread):
    """Feeds a pipeline in real time until stopped, like the engine's frame tick."""

    def __init__(self, pipeline: Any) -> None:
        super().__init__(daemon=True)
        self.pipeline = pipeline
        self.next_index = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.next_index = feed(self.pipeline, 3, self.next_index)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)


@dataclass
class Pulled:
    """What a player saw: stream parameters, video packet timing and decoded frame tags."""

    width: int = 0
    height: int = 0
    profile: str | None = None
    audio: tuple[str, int, int] | None = None
    video_pts_ms: list[int] = field(default_factory=list)
    keyframe_pts_ms: list[int] = field(default_factory=list)
    frames: list[av.VideoFrame] = field(default_factory=list)
    error: str | None = None


def pull(url: str, seconds: float, timeout: float = 15.0) -> tuple[threading.Thread, Pulled]:
    """Play `url` in a thread until `seconds` of video arrived (or timeout); decode it all."""
    out = Pulled()

    def run() -> None:
        deadline = time.monotonic() + timeout
        try:
            with av.open(url, timeout=(timeout, 5.0)) as c:
                v = c.streams.video[0]
                out.width, out.height = v.codec_context.width, v.codec_context.height
                out.profile = v.codec_context.profile
                if c.streams.audio:
                    a = c.streams.audio[0].codec_context
                    out.audio = (a.name, a.sample_rate, a.channels)
                for packet in c.demux(v):
                    if packet.pts is None:
                        continue
                    out.video_pts_ms.append(int(packet.pts * packet.time_base * 1000))
                    if packet.is_keyframe:
                        out.keyframe_pts_ms.append(out.video_pts_ms[-1])
                    out.frames += packet.decode()
                    span = out.video_pts_ms[-1] - out.video_pts_ms[0]
                    if span >= seconds * 1000 or time.monotonic() > deadline:
                        break
        except Exception as exc:  # reported through `error`, asserted by the test
            out.error = f"{type(exc).__name__}: {exc}"

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out
