"""The AAC track: locked to the video clock, silence by default, pushed PCM when present."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from avatarfarm.server.stream import StreamError
from avatarfarm.server.stream.audio import AAC_FRAME, RATE, AudioClock, AudioTrack, PcmBuffer


@pytest.mark.parametrize("fps", [30, 25, 60, Fraction(30000, 1001)])
def test_audio_stays_locked_to_video_for_an_hour(fps):
    clock = AudioClock(fps)
    frames = int(3600 * fps)
    audio_pts: list[int] = []
    worst = Fraction(0)
    for n in range(frames):
        audio_pts += clock.due(n)
        video_end = Fraction(n + 1) / fps
        audio_end = Fraction(clock.next_pts, RATE)
        worst = max(worst, abs(video_end - audio_end))
    # Contiguous AAC frames, and never more than one AAC frame behind the video.
    assert audio_pts == list(range(0, len(audio_pts) * AAC_FRAME, AAC_FRAME))
    assert worst < Fraction(AAC_FRAME, RATE)
    drift = Fraction(frames) / fps - Fraction(clock.next_pts, RATE)
    assert 0 <= drift < Fraction(AAC_FRAME, RATE)  # after an hour: under 21.4 ms, not growing


def _decode_rms(packets, track) -> np.ndarray:
    decoder = av.CodecContext.create("aac", "r")
    decoder.extradata = track.template.codec_context.extradata
    pcm = [f.to_ndarray().mean(axis=0) for p in packets for f in decoder.decode(av.Packet(p.data))]
    samples = np.concatenate(pcm)
    blocks = samples[: len(samples) // 4800 * 4800].reshape(-1, 4800)  # 0.1 s blocks
    return np.sqrt((blocks.astype(np.float64) ** 2).mean(axis=1))


def test_pushed_pcm_replaces_silence_then_silence_returns():
    track = AudioTrack(30)
    t = np.arange(8000) / 16000
    tone = (0.25 * 32767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)  # 0.5 s, 16 kHz
    track.pcm.push(tone.tobytes(), 16000, 1)
    packets = [p for n in range(45) for p in track.packets_until(n)] + track.flush()
    assert all(p.time_base == Fraction(1, RATE) for p in packets)
    rms = _decode_rms(packets, track)
    assert (rms[1:4] > 0.1).all(), rms  # float samples: the tone is there
    assert (rms[-5:] < 0.01).all(), rms  # then silence again


def test_pcm_buffer_is_bounded_and_drops_the_oldest():
    buf = PcmBuffer(max_seconds=2.0)
    for value in (1000, 2000, 3000, 4000, 5000):  # five seconds, one value per second
        buf.push(np.full(2 * RATE, value, np.int16).tobytes(), RATE, 2)
    assert buf.dropped_samples >= 3 * RATE - AAC_FRAME
    kept = buf.take(2 * RATE)
    assert kept is not None and set(np.unique(kept)) <= {4000, 5000, 0}


@pytest.mark.parametrize(
    ("pcm", "rate", "channels"),
    [(b"\0" * 4, 22050, 1), (b"\0" * 4, 48000, 3), (b"\0" * 3, 48000, 2)],
)
def test_bad_pcm_is_rejected_with_a_clear_error(pcm, rate, channels):
    with pytest.raises(StreamError):
        PcmBuffer().push(pcm, rate, channels)
