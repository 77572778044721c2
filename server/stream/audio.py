"""The AAC track every stream carries: silence by default, pushed PCM while there is some.

Audio is clocked by the video frame count, not by wall time or by how much PCM arrived:
after video frame n, exactly the AAC frames that end at or before (n+1)/fps exist. Audio
and video therefore cannot drift apart, whatever the render rate or PCM delivery does.
"""

from __future__ import annotations

import threading
from collections import deque
from fractions import Fraction

import av
import numpy as np

from .errors import StreamError
from .packets import EncodedPacket

RATE = 48_000
CHANNELS = 2
AAC_FRAME = 1024  # samples per AAC-LC frame
INPUT_RATES = (16_000, 44_100, 48_000)
_GLOBAL_HEADER = 1 << 22


class AudioClock:
    """Which AAC frames are due after each video frame; pure integer arithmetic, no drift."""

    def __init__(self, fps: int | Fraction) -> None:
        self._samples_per_frame = Fraction(RATE) / Fraction(fps)
        self.next_pts = 0  # in samples: pts of the next AAC frame to emit

    def due(self, video_pts: int) -> list[int]:
        """pts (in 1/48000) of the AAC frames that end by the end of video frame `video_pts`."""
        end = int((video_pts + 1) * self._samples_per_frame)
        out = []
        while self.next_pts + AAC_FRAME <= end:
            out.append(self.next_pts)
            self.next_pts += AAC_FRAME
        return out


class PcmBuffer:
    """Pushed PCM, resampled to 48 kHz stereo s16, bounded: the oldest audio goes first."""

    def __init__(self, max_seconds: float = 2.0) -> None:
        self._max = int(max_seconds * RATE)
        self._chunks: deque[np.ndarray] = deque()
        self._size = 0
        self._lock = threading.Lock()
        self._resamplers: dict[tuple[int, int], av.AudioResampler] = {}
        self.dropped_samples = 0

    def push(self, pcm: bytes, rate: int, channels: int) -> None:
        if rate not in INPUT_RATES:
            raise StreamError(f"audio rate must be one of {INPUT_RATES}", "rate")
        if channels not in (1, 2):
            raise StreamError("audio channels must be 1 or 2", "channels")
        if len(pcm) % (2 * channels):
            raise StreamError("PCM16 data must hold whole samples for every channel", "pcm")
        samples = len(pcm) // (2 * channels)
        if samples == 0:
            return
        frame = av.AudioFrame.from_ndarray(
            np.frombuffer(pcm, np.int16).reshape(1, -1),
            format="s16",
            layout="mono" if channels == 1 else "stereo",
        )
        frame.sample_rate = rate
        with self._lock:
            resampler = self._resamplers.setdefault(
                (rate, channels), av.AudioResampler(format="s16", layout="stereo", rate=RATE)
            )
            for out in resampler.resample(frame):
                self._append(out.to_ndarray().reshape(-1, CHANNELS))

    def _append(self, stereo: np.ndarray) -> None:
        self._chunks.append(stereo)
        self._size += len(stereo)
        while self._size > self._max:
            excess = self._size - self._max
            head = self._chunks[0]
            if len(head) <= excess:
                self._chunks.popleft()
                self._size -= len(head)
                self.dropped_samples += len(head)
            else:
                self._chunks[0] = head[excess:]
                self._size -= excess
                self.dropped_samples += excess

    def take(self, n: int) -> np.ndarray | None:
        """Up to n stereo samples (zero-padded to n), or None when nothing is buffered."""
        with self._lock:
            if self._size == 0:
                return None
            out = np.zeros((n, CHANNELS), np.int16)
            filled = 0
            while filled < n and self._chunks:
                head = self._chunks[0]
                k = min(n - filled, len(head))
                out[filled : filled + k] = head[:k]
                if k == len(head):
                    self._chunks.popleft()
                else:
                    self._chunks[0] = head[k:]
                self._size -= k
                filled += k
            return out


class AudioTrack:
    """AAC-LC 48 kHz stereo encoder driven by the video clock."""

    def __init__(self, fps: int | Fraction, bitrate_kbps: int = 128) -> None:
        self.clock = AudioClock(fps)
        self.pcm = PcmBuffer()
        self._holder = av.open("null", "w", format="null")
        self.template = self._holder.add_stream("aac", rate=RATE)
        ctx = self.template.codec_context
        ctx.layout, ctx.format, ctx.bit_rate = "stereo", "fltp", bitrate_kbps * 1000
        ctx.flags |= _GLOBAL_HEADER  # AudioSpecificConfig in extradata for FLV/MP4
        self._holder.start_encoding()
        self._silence = np.zeros((AAC_FRAME, CHANNELS), np.int16)

    def packets_until(self, video_pts: int) -> list[EncodedPacket]:
        """Encode the audio due by the end of video frame `video_pts`."""
        out: list[EncodedPacket] = []
        ctx = self.template.codec_context
        for pts in self.clock.due(video_pts):
            samples = self.pcm.take(AAC_FRAME)
            pcm = self._silence if samples is None else samples
            frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="stereo")
            frame.sample_rate = RATE
            frame.pts = pts
            frame.time_base = Fraction(1, RATE)
            out += [EncodedPacket.from_av("audio", p) for p in ctx.encode(frame)]
        return out

    def flush(self) -> list[EncodedPacket]:
        ctx = self.template.codec_context
        packets = [EncodedPacket.from_av("audio", p) for p in ctx.encode(None)]
        self._holder.close()
        return packets
