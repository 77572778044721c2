"""The `/v1/sessions/{id}/audio` WebSocket's PCM: buffered for the stream, analysed for lips.

Protocol: the first (text) message declares the format, e.g.
`{"format": "pcm16", "rate": 16000, "channels": 1}` (rate 16000, 44100 or 48000; 1 or 2
channels); every following binary message is little-endian PCM16, interleaved, whole
samples only. Input is converted at once to 48 kHz stereo s16 (mono is copied to both
sides at full level; other rates go through PyAV's resampler, kept per driver so its
filter state carries across messages) into a bounded ring buffer; when the buffer is full
the oldest audio is dropped and counted.

The ring has one read position, the playhead, advanced by `read` (whoever plays the audio:
the stream's audio track). Lip-sync looks at the same audio: `analyze(n, out_row)` peeks at
the n samples that the next `read(n)` will return, i.e. the audio that goes out with the
frame being rendered, plus enough earlier samples for one FFT window. Per tick, for a
session with audio::

    audio.analyze(samples_per_frame, expr_row)   # mouth for this frame, before render
    pcm = audio.read(samples_per_frame)           # the same samples, to the stream

so the mouth is never behind the audio it shows (by construction 0 frames; at most one
frame when the tick and the audio pull are not aligned).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import av
import numpy as np

from .client_json import loads
from .lipsync import FFT, LipSync

RATE = 48_000
CHANNELS = 2
INPUT_RATES = (16_000, 44_100, 48_000)
MAX_MESSAGE = 1 << 20  # bytes of PCM per message


class AudioError(ValueError):
    """Unusable audio input; `field` names what is wrong."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class AudioFormat:
    rate: int
    channels: int


def parse_header(message: str | bytes) -> AudioFormat:
    """The first message of the audio WebSocket."""
    try:
        doc = loads(message)
    except ValueError as exc:
        msg = f"the first message must be a JSON format header: {exc}"
        raise AudioError(msg, "format") from exc
    if not isinstance(doc, dict) or doc.get("format") != "pcm16":
        raise AudioError('format must be "pcm16"', "format")
    rate, channels = doc.get("rate"), doc.get("channels", 1)
    if rate not in INPUT_RATES or isinstance(rate, bool):
        raise AudioError(f"rate must be one of {INPUT_RATES}", "rate")
    if channels not in (1, 2) or isinstance(channels, bool):
        raise AudioError("channels must be 1 or 2", "channels")
    return AudioFormat(int(rate), int(channels))


class AudioDriver:
    """One session's pushed audio: 48 kHz stereo ring buffer, playhead and lip-sync."""

    def __init__(self, max_seconds: float = 2.0, lipsync: LipSync | None = None) -> None:
        self.capacity = int(max_seconds * RATE)
        self._ring = np.zeros((self.capacity, CHANNELS), np.int16)
        self._written = 0  # absolute sample positions
        self._played = 0
        self._lock = threading.Lock()
        self.format: AudioFormat | None = None
        self._resampler: av.AudioResampler | None = None
        self.lipsync = lipsync or LipSync()
        self.dropped_samples = 0
        self.received_samples = 0

    def configure(self, header: str | bytes) -> AudioFormat:
        """Apply the format header (also to switch format mid-stream)."""
        fmt = parse_header(header)
        with self._lock:
            self.format = fmt
            needs_resampling = fmt.rate != RATE
            self._resampler = (
                av.AudioResampler(format="s16", layout="stereo", rate=RATE)
                if needs_resampling
                else None
            )
        return fmt

    def feed(self, pcm: bytes) -> None:
        """Append one binary message of PCM16 in the declared format."""
        fmt = self.format
        if fmt is None:
            raise AudioError("send the format header before audio", "format")
        if len(pcm) > MAX_MESSAGE:
            raise AudioError(f"audio messages are limited to {MAX_MESSAGE} bytes", "pcm")
        if len(pcm) % (2 * fmt.channels):
            raise AudioError("PCM16 data must hold whole samples for every channel", "pcm")
        samples = np.frombuffer(pcm, "<i2").reshape(-1, fmt.channels)
        if samples.size == 0:
            return
        self.received_samples += len(samples)
        if fmt.channels == 1:  # both sides at full level (swresample's upmix is -3 dB)
            samples = np.repeat(samples, 2, axis=1)
        if self._resampler is None:
            self._append(samples)
            return
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples, np.int16).reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate = fmt.rate
        for out in self._resampler.resample(frame):
            self._append(out.to_ndarray().reshape(-1, CHANNELS))

    @property
    def buffered(self) -> int:
        """Samples written and not yet played."""
        return self._written - self._played

    def read(self, n: int) -> np.ndarray:
        """The next n samples, int16 [n, 2]; silence where no audio has arrived.

        On underrun the playhead stops at the newest sample instead of running ahead, so
        audio arriving late is played (and lip-synced) rather than skipped.
        """
        out = np.zeros((n, CHANNELS), np.int16)
        with self._lock:
            start = self._played
            self._copy(start, out)
            self._played = min(start + n, self._written)
        return out

    def take(self, n: int) -> np.ndarray | None:
        """`read` for pullers that treat None as "nothing buffered" (stream PcmBuffer's API)."""
        return None if self.buffered == 0 else self.read(n)

    def analyze(self, n: int, out_row: np.ndarray) -> float:
        """Lip-sync for the n samples the next read(n) returns; writes visemes/jawOpen.

        Returns the loudness level (0..1). Takes at least one FFT window, reaching back
        before the playhead when a frame is shorter than that.
        """
        span = max(n, FFT)
        window = np.zeros((span, CHANNELS), np.int16)
        with self._lock:
            self._copy(self._played + n - span, window)
        mono = window.astype(np.float32).mean(axis=1) / 32768.0
        self.lipsync.analyze(mono, n / RATE)
        self.lipsync.write(out_row)
        return self.lipsync.level

    def _append(self, stereo: np.ndarray) -> None:
        with self._lock:
            if len(stereo) > self.capacity:
                skipped = len(stereo) - self.capacity
                self._written += skipped
                stereo = stereo[skipped:]
            start = self._written % self.capacity
            first = min(len(stereo), self.capacity - start)
            self._ring[start : start + first] = stereo[:first]
            self._ring[: len(stereo) - first] = stereo[first:]
            self._written += len(stereo)
            overflow = self._written - self._played - self.capacity
            if overflow > 0:
                self._played += overflow
                self.dropped_samples += overflow

    def _copy(self, start: int, out: np.ndarray) -> None:
        """Samples [start, start + len(out)) into out; positions not held stay as they are."""
        lo = max(start, self._written - self.capacity, 0)
        hi = min(start + len(out), self._written)
        pos = lo
        while pos < hi:
            ring = pos % self.capacity
            k = min(hi - pos, self.capacity - ring)
            out[pos - start : pos - start + k] = self._ring[ring : ring + k]
            pos += k
