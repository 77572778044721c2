"""A small deterministic animation for demo clips: blinks, a little head motion, talking."""

from __future__ import annotations

import numpy as np

from .vocabulary import INDEX, VOCABULARY

BLINK_TIMES = (0.7, 3.1, 3.4, 5.6, 8.2, 10.9)  # seconds; 3.1/3.4 is a double blink
BLINK_LENGTH = 0.18


def demo_motion(t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pose at times `t` [F] seconds: expressions [F, K], head (yaw, pitch, roll) [F, 3]
    degrees and eyes (left yaw, pitch, right yaw, pitch) [F, 4] degrees."""
    t = np.asarray(t, np.float64)
    expressions = np.zeros((len(t), len(VOCABULARY)), np.float32)
    period = 12.0
    local = np.mod(t, period)
    blink = np.zeros_like(t)
    for start in BLINK_TIMES:
        phase = (local - start) / BLINK_LENGTH
        blink = np.maximum(blink, np.where((phase >= 0) & (phase <= 1), np.sin(np.pi * phase), 0))
    expressions[:, INDEX["eyeBlinkLeft"]] = blink
    expressions[:, INDEX["eyeBlinkRight"]] = blink
    talking = 0.5 + 0.5 * np.sin(2 * np.pi * t / 6.0) > 0.35
    syllables = np.abs(np.sin(2 * np.pi * 2.7 * t)) * (0.55 + 0.25 * np.sin(2 * np.pi * 0.9 * t))
    expressions[:, INDEX["jawOpen"]] = np.where(talking, syllables, 0.0)
    expressions[:, INDEX["mouthSmileLeft"]] = 0.35 + 0.15 * np.sin(2 * np.pi * t / 7.0)
    expressions[:, INDEX["mouthSmileRight"]] = expressions[:, INDEX["mouthSmileLeft"]]
    expressions[:, INDEX["browInnerUp"]] = 0.2 * np.clip(np.sin(2 * np.pi * t / 5.0), 0, 1)
    head = np.stack(
        [
            10.0 * np.sin(2 * np.pi * t / 8.0),
            4.0 * np.sin(2 * np.pi * t / 5.3),
            3.0 * np.sin(2 * np.pi * t / 9.7),
        ],
        axis=1,
    ).astype(np.float32)
    gaze = (np.floor(t / 1.7) % 3 - 1) * 6.0
    eyes = np.stack([gaze, gaze * 0.2, gaze, gaze * 0.2], axis=1).astype(np.float32)
    return expressions, head, eyes
