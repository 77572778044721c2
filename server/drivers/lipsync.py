"""Audio -> mouth: viseme weights (aa, ih, ou, ee, oh) and jawOpen for one video frame.

Per frame window (48 kHz mono):

1. Loudness: RMS in dBFS mapped linearly from the noise gate (`gate_db`, silence below)
   to `full_db` (fully open), smoothed with a fast attack and a slower release so the mouth
   snaps open on a syllable and does not flutter between them.
2. Vowel colour: the power spectrum (Hann windows of 1024 samples, hop 512, averaged: one
   vectorised rfft) summed into 8 log-spaced bands over 200-3200 Hz, where the first two
   formants live. The band profile (log, minus its best line over log-frequency, so
   independent of loudness and spectral tilt) is compared with each vowel's template,
   built from Peterson & Barney's average formants as resonance peaks; a softmax of the
   distances gives each viseme's share.
3. Output: viseme = smoothed(level x share); jawOpen = smoothed(level x sum of share x
   openness), openness being how far each vowel drops the jaw (aa most, ih/ou least).
"""

from __future__ import annotations

import numpy as np

from ...render.vocabulary import INDEX, VISEMES

RATE = 48_000
FFT = 1024
HOP = 512
BAND_EDGES = np.array([200, 300, 450, 650, 900, 1250, 1750, 2400, 3200], np.float64)
# (F1, F2, F3) in Hz per viseme, in VISEMES order (aa, ih, ou, ee, oh).
FORMANTS = np.array(
    [[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480], [570, 840, 2410]],
    np.float64,
)
OPENNESS = np.array([1.0, 0.35, 0.3, 0.6, 0.7])
_COLUMNS = np.array([INDEX[v] for v in VISEMES] + [INDEX["jawOpen"]])
_FREQS = np.fft.rfftfreq(FFT, 1.0 / RATE)
_BAND_OF_BIN = np.digitize(_FREQS, BAND_EDGES) - 1  # -1 or 8 = outside the bands
_IN_BAND = (_BAND_OF_BIN >= 0) & (_BAND_OF_BIN < len(BAND_EDGES) - 1)


_OCTAVES = np.log2(np.sqrt(BAND_EDGES[:-1] * BAND_EDGES[1:]))
_TREND = np.stack([np.ones_like(_OCTAVES), _OCTAVES - _OCTAVES.mean()], axis=1)
_DETREND = np.eye(len(_OCTAVES)) - _TREND @ np.linalg.pinv(_TREND)


def _band_profile(power: np.ndarray) -> np.ndarray:
    """Log band powers [..., 8] from power spectra, with level and tilt removed.

    Subtracting the best line over log-frequency removes loudness and the voice's own
    spectral slope (which varies by speaker and microphone), leaving the formant shape.
    """
    bands = np.zeros(power.shape[:-1] + (len(BAND_EDGES) - 1,))
    for b in range(bands.shape[-1]):
        bands[..., b] = power[..., _BAND_OF_BIN == b].mean(axis=-1)
    return np.log(bands + 1e-12) @ _DETREND.T


def _templates() -> np.ndarray:
    """Band profiles [5, 8] of the vowel envelopes: cascaded 2nd-order formant resonators."""
    f = _FREQS[None, :]
    bandwidth = (80.0, 100.0, 150.0)
    gain = np.ones((len(FORMANTS), f.size))
    for k in range(3):
        centre = FORMANTS[:, k : k + 1]
        gain *= centre**4 / ((centre**2 - f**2) ** 2 + (f * bandwidth[k]) ** 2)
    return _band_profile(gain)


TEMPLATES = _templates()


class LipSync:
    """Per-session analyser state (smoothing); `analyze` runs once per video frame."""

    def __init__(
        self,
        gate_db: float = -50.0,
        full_db: float = -18.0,
        attack: float = 0.015,
        release: float = 0.08,
        sharpness: float = 1.0,
    ) -> None:
        self.gate_db, self.full_db = gate_db, full_db
        self.attack, self.release = attack, release
        self.sharpness = sharpness  # softmax temperature in squared log-power distance
        self.values = np.zeros(len(_COLUMNS))  # aa, ih, ou, ee, oh, jawOpen
        self.level = 0.0

    def analyze(self, mono: np.ndarray, dt: float) -> np.ndarray:
        """Update from a frame's samples (float, -1..1) covering `dt` seconds; returns values."""
        rms = float(np.sqrt(np.mean(np.square(mono, dtype=np.float64)))) if mono.size else 0.0
        db = 20.0 * np.log10(rms + 1e-9)
        self.level = float(np.clip((db - self.gate_db) / (self.full_db - self.gate_db), 0, 1))
        target = np.zeros_like(self.values)
        if self.level > 0 and mono.size >= FFT:
            frames = np.lib.stride_tricks.sliding_window_view(mono, FFT)[::HOP]
            power = np.abs(np.fft.rfft(frames * np.hanning(FFT), axis=-1)) ** 2
            profile = _band_profile(power.mean(axis=0))
            distance = np.square(profile - TEMPLATES).mean(axis=-1)
            score = np.exp(-(distance - distance.min()) / self.sharpness)
            share = score / score.sum()
            target[:5] = self.level * share
            target[5] = self.level * float(share @ OPENNESS)
        rising = target > self.values
        tau = np.where(rising, self.attack, self.release)
        self.values += (target - self.values) * (1.0 - np.exp(-dt / tau))
        return self.values

    def write(self, out_row: np.ndarray) -> None:
        """Put the current values into a vocabulary row (max with what is there)."""
        out_row[_COLUMNS] = np.maximum(out_row[_COLUMNS], self.values)
