"""Idle life for every session at once: blinks, breathing, head sway and eye saccades.

An undriven avatar that never moves reads as a frozen stream. `IdleBank.advance` adds a
little life on top of the driven pose for all slots in a few numpy calls per tick:

- blinks: intervals 1.4 s + an exponential with mean 2.4 s (about 16 a minute), 15% of
  them followed by a second blink 0.32 s later; each closes in 70 ms, holds 50 ms and opens
  in 120 ms, so even a 30 fps stream shows several closed frames;
- breathing: a 4.2 s head-pitch cycle of +-0.8 degrees;
- sway: sums of slow incommensurate sines on yaw, pitch and roll (a few degrees);
- saccades: the gaze jumps (45 ms) to a new small offset every 0.4-2.6 s.

Randomness is a counter-based hash of (slot seed, event number), so a slot's idle motion
depends only on its seed and its own clock, not on the tick rate or on other sessions.
The blend weight of a slot moves to 0 while its input is active and back to 1 when it
stops, over `fade` seconds; blinks are written to eyeBlinkLeft/Right (max with the input),
which also drive the VRM blink presets through the expression rig's ARKit fallback.
"""

from __future__ import annotations

import numpy as np

from ...render.vocabulary import INDEX

BLINK_SHAPE = (np.array([0.0, 0.07, 0.12, 0.24]), np.array([0.0, 1.0, 1.0, 0.0]))
DOUBLE_BLINK_P = 0.15
DOUBLE_BLINK_GAP = 0.32
SACCADE_TIME = 0.045
# (amplitude deg, frequency Hz) per head channel; phases come from the seed.
_SWAY = (
    ((1.8, 0.11), (0.9, 0.037)),  # yaw
    ((0.8, 1 / 4.2), (0.7, 0.071)),  # pitch: breathing + drift
    ((0.9, 0.053), (0.4, 0.17)),  # roll
)
_BLINK_COLUMNS = np.array([INDEX["eyeBlinkLeft"], INDEX["eyeBlinkRight"]])
_MASK64 = 0xFFFFFFFFFFFFFFFF
_M1, _M2, _M3 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def uniform(seed: np.ndarray, counter: np.ndarray, stream: int) -> np.ndarray:
    """Deterministic uniforms in [0, 1) from (seed, counter, stream): splitmix64 mixing."""
    z = seed ^ (counter * np.uint64(_M1)) ^ np.uint64((stream * _M2) & _MASK64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_M2)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_M3)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


class IdleBank:
    """Idle motion state of `capacity` slots; slot numbers match the PoseBank's."""

    def __init__(self, capacity: int, fade: float = 0.5) -> None:
        s = capacity
        self.capacity = capacity
        self.fade = fade
        self._t: float | None = None
        self.enabled = np.zeros(s, bool)
        self.weight = np.zeros(s)
        self._seed = np.zeros(s, np.uint64)
        self._origin = np.zeros(s)
        self._phase = np.zeros((s, 6))
        self._next_blink = np.full(s, np.inf)
        self._blink_start = np.full(s, -np.inf)
        self._blink_n = np.zeros(s, np.uint64)
        self._in_double = np.zeros(s, bool)
        self._next_saccade = np.full(s, np.inf)
        self._saccade_start = np.full(s, -np.inf)
        self._saccade_n = np.zeros(s, np.uint64)
        self._gaze_from = np.zeros((s, 2))
        self._gaze_to = np.zeros((s, 2))
        self._head = np.zeros((s, 3))
        self._gaze = np.zeros((s, 2))
        self._blink = np.zeros(s)

    def reset(self, slot: int, seed: int, t: float, enabled: bool = True) -> None:
        """Start a slot's idle life at engine time `t` (weight 1: no input yet)."""
        self._seed[slot] = np.uint64(seed & _MASK64)
        self._origin[slot] = t
        self.enabled[slot] = enabled
        self.weight[slot] = 1.0 if enabled else 0.0
        one, zero = self._seed[slot : slot + 1], np.zeros(1, np.uint64)
        self._phase[slot] = [2 * np.pi * uniform(one, zero, k)[0] for k in range(6)]
        self._blink_n[slot] = 0
        self._blink_start[slot] = -np.inf
        self._in_double[slot] = False
        self._next_blink[slot] = 0.5 + 2.0 * uniform(one, zero, 6)[0]
        self._saccade_n[slot] = 0
        self._saccade_start[slot] = -np.inf
        self._next_saccade[slot] = 0.3
        self._gaze_from[slot] = 0.0
        self._gaze_to[slot] = 0.0

    def advance(
        self,
        t: float,
        active: np.ndarray,
        out_expr: np.ndarray,
        out_head: np.ndarray,
        out_eyes: np.ndarray,
    ) -> None:
        """Add every slot's idle motion at engine time `t`, weighted by its fade, in place.

        `active` (bool [S]) marks slots whose driver input is live (PoseBank.active).
        """
        s = self.capacity
        dt = 0.0 if self._t is None else max(0.0, t - self._t)
        self._t = t
        target = np.where(active[:s] | ~self.enabled, 0.0, 1.0)
        step = dt / self.fade
        self.weight += np.clip(target - self.weight, -step, step)
        local = t - self._origin
        self._blinks(local)
        self._saccades(local)
        self._sway(local)
        w = self.weight
        out_head[:s] += w[:, None] * self._head
        out_eyes[:s, 0::2] += w[:, None] * self._gaze[:, :1]
        out_eyes[:s, 1::2] += w[:, None] * self._gaze[:, 1:]
        blink = (w * self._blink)[:, None]
        out_expr[:s, _BLINK_COLUMNS] = np.maximum(out_expr[:s, _BLINK_COLUMNS], blink)

    def _blinks(self, local: np.ndarray) -> None:
        due = np.flatnonzero(local >= self._next_blink)
        if due.size:
            n = self._blink_n[due] + np.uint64(1)
            seed = self._seed[due]
            start = self._next_blink[due]
            double = (uniform(seed, n, 11) < DOUBLE_BLINK_P) & ~self._in_double[due]
            interval = np.minimum(1.4 - 2.4 * np.log1p(-uniform(seed, n, 12)), 9.0)
            self._blink_start[due] = start
            self._next_blink[due] = start + np.where(double, DOUBLE_BLINK_GAP, interval)
            self._in_double[due] = double
            self._blink_n[due] = n
        xp, fp = BLINK_SHAPE
        self._blink[:] = np.interp(local - self._blink_start, xp, fp, left=0.0, right=0.0)

    def _saccades(self, local: np.ndarray) -> None:
        due = np.flatnonzero(local >= self._next_saccade)
        if due.size:
            n = self._saccade_n[due] + np.uint64(1)
            seed = self._seed[due]
            centre = uniform(seed, n, 21) < 0.35  # now and then look back at the camera
            yaw = np.where(centre, 0.0, (uniform(seed, n, 22) - 0.5) * 12.0)
            pitch = np.where(centre, 0.0, (uniform(seed, n, 23) - 0.5) * 7.0)
            start = self._next_saccade[due]  # the scheduled time, not the tick's
            self._gaze_from[due] = self._gaze_to[due]  # the previous saccade has ended
            self._gaze_to[due] = np.stack([yaw, pitch], axis=1)
            self._saccade_start[due] = start
            self._next_saccade[due] = start + 0.4 + 2.2 * uniform(seed, n, 24)
            self._saccade_n[due] = n
        progress = np.clip((local - self._saccade_start) / SACCADE_TIME, 0.0, 1.0)
        ease = progress * progress * (3.0 - 2.0 * progress)
        self._gaze[:] = self._gaze_from + (self._gaze_to - self._gaze_from) * ease[:, None]

    def _sway(self, local: np.ndarray) -> None:
        for axis, terms in enumerate(_SWAY):
            value = self._head[:, axis]
            value[:] = 0.0
            for k, (amplitude, freq) in enumerate(terms):
                phase = self._phase[:, 2 * axis + k]
                value += amplitude * np.sin(2 * np.pi * freq * local + phase)
