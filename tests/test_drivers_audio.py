"""Pushed PCM: lip-sync from a synthetic vowel, and the resampled 48 kHz stream audio."""

from __future__ import annotations

import json

import numpy as np
import pytest

from avatarfarm.render.vocabulary import INDEX, VISEMES
from avatarfarm.server.drivers.audio import AudioDriver, AudioError, parse_header
from avatarfarm.server.drivers.pose import K

FRAME = 1600  # 48 kHz samples per video frame at 30 fps
# Peterson & Barney average formants (F1, F2, F3), the classic vowel synthesis targets.
VOWELS = {"aa": (730, 1090, 2440), "ih": (270, 2290, 3010), "oh": (570, 840, 2410)}


def vowel(formants, seconds: float, amplitude: float, rate: int = 16_000, f0: float = 130.0):
    """A glottal-pulse-like harmonic series shaped by three formant resonators (PCM16)."""
    t = np.arange(int(seconds * rate)) / rate
    x = np.zeros_like(t)
    vibrato = 1 + 0.01 * np.sin(2 * np.pi * 5 * t)
    for h in range(1, int(0.45 * rate / f0)):
        f = h * f0
        gain = 1.0 / h
        for centre, bw in zip(formants, (70, 90, 130), strict=True):
            gain *= centre**2 / np.sqrt((centre**2 - f**2) ** 2 + (f * bw) ** 2)
        x += gain * np.sin(2 * np.pi * f * np.cumsum(vibrato) / rate + h)
    x *= amplitude / np.abs(x).max()
    return (x * 32767).astype("<i2")


def push(driver: AudioDriver, pcm: np.ndarray, chunk: int = 320) -> None:
    """Send as a client would: 20 ms binary messages."""
    for i in range(0, len(pcm), chunk):
        driver.feed(pcm[i : i + chunk].tobytes())


def play(driver: AudioDriver, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Per video frame: lip-sync, then pull the same samples; returns rows and PCM."""
    rows = np.zeros((frames, K), np.float32)
    pcm = []
    for i in range(frames):
        driver.analyze(FRAME, rows[i])
        pcm.append(driver.read(FRAME))
    return rows, np.concatenate(pcm)


def started(rate: int = 16_000, channels: int = 1, seconds: float = 2.0) -> AudioDriver:
    driver = AudioDriver(max_seconds=seconds)
    driver.configure(json.dumps({"format": "pcm16", "rate": rate, "channels": channels}))
    return driver


def test_a_vowel_opens_the_mouth_with_loudness_and_silence_closes_it() -> None:
    driver = started(seconds=3.0)
    silence = np.zeros(8000, "<i2")  # 0.5 s = 15 frames
    push(driver, silence[:5333])  # frames 0-9
    push(driver, vowel(VOWELS["aa"], 0.5, 0.5))  # frames 10-24
    push(driver, silence)  # 25-39
    push(driver, vowel(VOWELS["aa"], 0.5, 0.02))  # 40-54
    push(driver, silence)  # 55-69
    rows, _ = play(driver, 70)
    jaw = rows[:, INDEX["jawOpen"]]
    visemes = rows[:, [INDEX[v] for v in VISEMES]]
    loud, silent, quiet, end = jaw[11:24], jaw[31:39], jaw[41:54], jaw[61:69]
    assert jaw[:10].max() < 0.02
    assert jaw[10] > 0.3  # the frame that carries the onset already shows it
    assert loud.min() > 0.4
    assert (visemes[11:24].argmax(axis=1) == VISEMES.index("aa")).all()
    assert silent.max() < 0.05 and end.max() < 0.05
    assert 0.02 < quiet.mean() < 0.5 * loud.mean()


@pytest.mark.parametrize("name", ["ih", "oh"])
def test_vowel_colour_picks_the_viseme(name: str) -> None:
    driver = started(48_000)
    push(driver, vowel(VOWELS[name], 0.4, 0.4, rate=48_000, f0=180.0), chunk=960)
    rows, _ = play(driver, 10)
    visemes = rows[3:10][:, [INDEX[v] for v in VISEMES]]
    assert (visemes.argmax(axis=1) == VISEMES.index(name)).all()
    assert rows[3:10, INDEX["jawOpen"]].max() < 0.8  # narrower than "aa"


def test_read_returns_the_audio_resampled_to_48k_stereo() -> None:
    driver = started(16_000)
    t = np.arange(16_000) / 16_000
    push(driver, (0.5 * 32767 * np.sin(2 * np.pi * 440 * t)).astype("<i2"))
    assert driver.buffered > 47_000
    _, pcm = play(driver, 30)  # 1 s of video
    assert pcm.shape == (48_000, 2) and pcm.dtype == np.int16
    np.testing.assert_array_equal(pcm[:, 0], pcm[:, 1])
    spectrum = np.abs(np.fft.rfft(pcm[4_800:43_200, 0].astype(np.float64)))
    assert np.fft.rfftfreq(38_400, 1 / 48_000)[spectrum.argmax()] == pytest.approx(440, abs=2)
    assert 0.45 * 32767 < np.abs(pcm[4_800:43_200, 0]).max() < 0.55 * 32767
    drained = driver.read(1024)
    assert drained.shape == (1024, 2) and not drained[driver.buffered :].any()
    assert driver.take(1024) is None  # nothing buffered: the stream plays its own silence


def test_48k_stereo_passes_through_exactly_and_overflow_drops_the_oldest() -> None:
    driver = started(48_000, 2)
    rng = np.random.default_rng(0)
    pcm = rng.integers(-20_000, 20_000, (3 * 48_000, 2)).astype("<i2")
    push(driver, pcm, chunk=4_800)
    assert driver.dropped_samples == 48_000  # 3 s into a 2 s buffer
    out = driver.read(2 * 48_000)
    np.testing.assert_array_equal(out, pcm[48_000:])
    assert driver.take(10) is None


@pytest.mark.parametrize(
    ("header", "field"),
    [
        ("not json", "format"),
        ("[" * 60_000, "format"),
        (json.dumps({"format": "opus", "rate": 48_000}), "format"),
        (json.dumps({"format": "pcm16", "rate": 22_050}), "rate"),
        (json.dumps({"format": "pcm16", "rate": 16_000, "channels": 6}), "channels"),
    ],
)
def test_bad_headers_name_the_field(header: str, field: str) -> None:
    with pytest.raises(AudioError) as err:
        parse_header(header)
    assert err.value.field == field


def test_pcm_before_header_or_with_partial_samples_is_refused() -> None:
    with pytest.raises(AudioError):
        AudioDriver().feed(b"\x00\x00")
    driver = started(16_000, 2)
    with pytest.raises(AudioError) as err:
        driver.feed(b"\x00" * 6)
    assert err.value.field == "pcm"
