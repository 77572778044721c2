"""StreamPipeline: one live session's path from rendered NV12 frames to its destinations.

engine thread --submit()--> FrameQueue --encoder thread--> encoder + AAC --> Destination
threads (RTMP, HLS, recording). The engine only ever copies a frame and returns.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from .audio import AudioTrack
from .encoder import host_frame, select_encoder
from .errors import StreamError
from .framepool import FrameQueue
from .outputs import Destination
from .settings import VideoSettings
from .targets import parse_target

MAX_OUTPUTS = 8  # destinations per session: each is a thread and, for RTMP, a connection
LATENCY_RING = 256
LATENCY_BUCKETS = np.array([0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0])
"""Upper bounds (seconds) of the encode-latency histogram; the last bucket is +Inf."""

log = logging.getLogger(__name__)


class StreamPipeline:
    """Encode once, fan out to many destinations; nothing here blocks the caller."""

    def __init__(
        self,
        session_id: str,
        width: int,
        height: int,
        fps: int,
        video: VideoSettings | None = None,
        outputs: list[str] | tuple[str, ...] = (),
        *,
        queue_frames: int = 3,
        hls_root: Path | None = None,
        recordings_root: Path | None = None,
    ) -> None:
        if not 1 <= fps <= 120:
            raise StreamError("fps must be between 1 and 120", "fps")
        self.session_id = session_id
        self.width, self.height, self.fps = width, height, fps
        self.video = video or VideoSettings()
        self._hls_root, self._recordings_root = hls_root, recordings_root
        self._encoder = select_encoder(self.video.encoder, width, height, fps, self.video)
        self._audio = AudioTrack(fps) if self._encoder is not None else None
        self._frames = FrameQueue(width * height * 3 // 2, queue_frames, self.device_frames)
        self._outputs: dict[int, Destination] = {}
        self._closing = False
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._force_idr = threading.Event()
        self._pending_kbps: int | None = None
        self._first_index: int | None = None
        self._last_pts = -1
        self._counters = {
            "frames_in": 0,
            "frames_encoded": 0,
            "frames_dropped": 0,
            "frames_late": 0,
            "encode_errors": 0,
            "bytes_out": 0,
        }
        # Hand-off -> encoded packets, per frame: when each queued frame was submitted (a ring
        # indexed by frame index; the queue holds far fewer frames than the ring) and a
        # fixed-bucket histogram of the delays.
        self._submitted_at = np.zeros(LATENCY_RING, np.float64)
        self._latency_counts = np.zeros(len(LATENCY_BUCKETS) + 1, np.int64)
        self._latency_sum = 0.0
        self._thread = threading.Thread(target=self._run, name=f"enc-{session_id}", daemon=True)
        self._thread.start()
        try:
            for spec in outputs:
                self.add_output(spec)
        except StreamError:
            self.close(1.0)
            raise

    # -- engine-facing ---------------------------------------------------------------
    @property
    def device_frames(self) -> bool:
        """True when submit() wants device NV12 (NVENC); host numpy NV12 otherwise."""
        return self._encoder is not None and self._encoder.name == "nvenc"

    def submit(self, nv12: Any, frame_index: int) -> bool:
        """Hand over one frame (copied; reuse your buffer). False = dropped: queue full."""
        if isinstance(nv12, np.ndarray):
            nv12 = host_frame(nv12, self.width, self.height)
        self._counters["frames_in"] += 1
        self._submitted_at[frame_index % LATENCY_RING] = time.perf_counter()
        if self._encoder is None or not self._frames.put(nv12, frame_index):
            self._counters["frames_dropped"] += 1
            return False
        return True

    def push_audio(self, pcm: bytes, rate: int, channels: int) -> None:
        """PCM16 speech (16/44.1/48 kHz, mono/stereo) replaces silence while it lasts."""
        if self._audio is not None:
            self._audio.pcm.push(pcm, rate, channels)

    def force_idr(self) -> None:
        self._force_idr.set()

    def set_bitrate(self, kbps: int) -> None:
        if not 100 <= kbps <= 50_000:
            raise StreamError("bitrate_kbps must be between 100 and 50000", "bitrate_kbps")
        self._pending_kbps = kbps

    def add_output(self, spec: str) -> int:
        """Start a destination (`rtmp(s)://…`, `hls:`, `record:<name>`); returns its id."""
        if self._encoder is None:
            raise StreamError("this session has no encoder (encoder='none')", "encoder")
        target = parse_target(
            spec, self.session_id, self.video.keyint_s, self._hls_root, self._recordings_root
        )
        with self._lock:
            if self._closing:  # close() has taken its list of outputs: this one would leak
                raise StreamError("the session's stream is closing", "url")
            if len(self._outputs) >= MAX_OUTPUTS:
                raise StreamError(f"a session has at most {MAX_OUTPUTS} outputs", "url")
            dest_id = next(self._ids)
            self._outputs[dest_id] = Destination(dest_id, target, self._templates, self.force_idr)
        return dest_id

    def remove_output(self, dest_id: int, timeout: float = 5.0) -> None:
        with self._lock:
            dest = self._outputs.pop(dest_id, None)
        if dest is None:
            raise StreamError(f"no output with id {dest_id}", "output_id")
        dest.close(timeout)

    def output_path(self, dest_id: int) -> str:
        """Where a file destination writes (HLS playlist or recording), for previews."""
        with self._lock:
            dest = self._outputs.get(dest_id)
        if dest is None or dest.target.kind == "rtmp":
            raise StreamError(f"no file output with id {dest_id}", "output_id")
        return dest.target.address

    def stats(self) -> dict[str, Any]:
        with self._lock:
            outputs = {i: d.stats() for i, d in self._outputs.items()}
        enc = self._encoder
        return {
            "session_id": self.session_id,
            "encoder": enc.name if enc else "none",
            "bitrate_kbps": enc.bitrate_kbps if enc else 0,
            "audio_dropped_samples": self._audio.pcm.dropped_samples if self._audio else 0,
            **self._counters,
            "encode_latency": {
                "buckets": self._latency_counts.tolist(),
                "sum_seconds": self._latency_sum,
            },
            "outputs": outputs,
        }

    def close(self, timeout: float = 5.0) -> None:
        """Encode what is queued, flush encoders, finalize every file and stream."""
        deadline = time.monotonic() + timeout
        self._frames.close()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._closing = True
            outputs = list(self._outputs.values())
        for dest in outputs:  # all finalize at once; then each is waited for in turn
            dest.stop()
        for dest in outputs:
            dest.close(max(0.1, deadline - time.monotonic()))

    # -- encoder thread ----------------------------------------------------------------
    def _templates(self) -> tuple[Any, Any] | None:
        enc, audio = self._encoder, self._audio
        if enc is None or audio is None or enc.template is None:
            return None
        return enc.template, audio.template

    def _run(self) -> None:
        while True:
            item = self._frames.get(timeout=0.2)
            if item is None:
                if self._frames.closed:
                    break
                continue
            buf, frame_index = item
            try:
                self._encode(buf, frame_index)
            except Exception:
                self._counters["encode_errors"] += 1
                log.exception("session %s: encode failed", self.session_id)
            finally:
                self._frames.release(buf)
        self._finish()

    def _encode(self, buf: Any, frame_index: int) -> None:
        if self._first_index is None:
            self._first_index = frame_index
        pts = frame_index - self._first_index
        if pts <= self._last_pts:  # CFR: timestamps only move forward
            self._counters["frames_late"] += 1
            return
        self._last_pts = pts
        assert self._encoder is not None and self._audio is not None
        if self._pending_kbps is not None:
            kbps, self._pending_kbps = self._pending_kbps, None
            self._encoder.set_bitrate(kbps)
        force = self._force_idr.is_set()
        if force:  # a request arriving now is served by this very IDR
            self._force_idr.clear()
        packets = self._encoder.encode(buf, pts, force)
        latency = time.perf_counter() - self._submitted_at[frame_index % LATENCY_RING]
        self._latency_counts[np.searchsorted(LATENCY_BUCKETS, latency)] += 1
        self._latency_sum += latency
        self._counters["frames_encoded"] += 1
        self._fan_out(packets + self._audio.packets_until(pts))

    def _fan_out(self, packets: list[Any]) -> None:
        with self._lock:
            outputs = list(self._outputs.values())
        self._counters["bytes_out"] += sum(len(p.data) for p in packets)
        for dest in outputs:
            dest.offer(packets)

    def _finish(self) -> None:
        if self._encoder is None or self._audio is None:
            return
        try:
            self._fan_out(self._encoder.flush() + self._audio.flush())
        except Exception:
            log.exception("session %s: encoder flush failed", self.session_id)
