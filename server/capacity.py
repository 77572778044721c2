"""Admission: how many more sessions of a profile fit without live ones dropping frames.

The engine thread has one second of time per second. A session of `fps` frames per second
costs `fps * frame_cost(profile)` of it, where a frame's cost is measured at start-up
(a probe session rendered for a few ticks) and then corrected by an EWMA of the ratio
between measured and predicted render time of every tick. Admission keeps the predicted
load under `budget` (< 1, headroom for late ticks, HTTP and encoders sharing the cores).
The cost is modelled as a fixed part (geometry, per-session host work) plus a part
proportional to pixels; batching makes real costs lower, so the model errs on the safe side.

Encoders (x264 threads), muxers and HTTP share the host's cores with the renderer; their
cost is not in the model, so admission also refuses while the process's measured CPU use
(all threads, sampled every second) is at or above the budget.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from avatarfarm.render.scene import Scene
from avatarfarm.render.vocabulary import VOCABULARY

REF_MPIX = 1280 * 720 / 1e6
FIXED_SHARE = 0.25  # of a 720p frame's cost that does not scale with pixels
EWMA_ALPHA = 0.05
RETRY_AFTER_S = 30


@dataclass(frozen=True)
class Profile:
    width: int = 1280
    height: int = 720
    fps: int = 30

    @property
    def mpix(self) -> float:
        return self.width * self.height / 1e6


@dataclass(frozen=True)
class Decision:
    ok: bool
    reason: str = ""
    retry_after_s: int = RETRY_AFTER_S


class CostModel:
    """Predicted engine seconds per frame, refined from measured ticks (thread-safe)."""

    def __init__(self, seconds_per_720p_frame: float, budget: float, max_sessions: int) -> None:
        if seconds_per_720p_frame <= 0 or not 0 < budget <= 1:
            raise ValueError("frame cost must be > 0 and budget within (0, 1]")
        self.base = seconds_per_720p_frame
        self.budget = budget
        self.max_sessions = max_sessions
        self.correction = 1.0
        self.cpu: float | None = None  # the process's share of all cores, when sampled
        self._lock = threading.Lock()

    def frame_cost(self, profile: Profile) -> float:
        shape = FIXED_SHARE + (1 - FIXED_SHARE) * profile.mpix / REF_MPIX
        return self.base * self.correction * shape

    def observe(self, render_seconds: float, mpix: float, frames: int) -> None:
        """One tick's measured render time against what the model predicted for it."""
        predicted = self.base * (FIXED_SHARE * frames + (1 - FIXED_SHARE) * mpix / REF_MPIX)
        if predicted <= 0 or render_seconds <= 0:
            return
        with self._lock:
            ratio = min(max(render_seconds / predicted, 0.05), 20.0)
            self.correction += EWMA_ALPHA * (ratio - self.correction)

    def observe_cpu(self, fraction: float) -> None:
        self.cpu = fraction if self.cpu is None else self.cpu + 0.3 * (fraction - self.cpu)

    def cpu_saturated(self) -> bool:
        return self.cpu is not None and self.cpu >= self.budget

    def load(self, profiles: Iterable[Profile]) -> float:
        """Fraction of the engine thread the given sessions are predicted to use."""
        return sum(p.fps * self.frame_cost(p) for p in profiles)

    def room(self, profile: Profile, live: list[Profile]) -> int:
        """How many more sessions of `profile` fit next to `live`."""
        if self.cpu_saturated():
            return 0
        left = self.budget - self.load(live)
        by_time = max(0, int(left / (profile.fps * self.frame_cost(profile))))
        return min(by_time, max(0, self.max_sessions - len(live)))

    def admit(self, profile: Profile, live: list[Profile]) -> Decision:
        if len(live) >= self.max_sessions:
            return Decision(False, f"server is at its limit of {self.max_sessions} sessions")
        if self.cpu_saturated():
            return Decision(False, f"host CPU is at {self.cpu:.0%} (budget {self.budget:.0%})")
        load = self.load(live) + profile.fps * self.frame_cost(profile)
        if load > self.budget:
            return Decision(
                False,
                f"not enough render capacity: this session would bring the predicted engine "
                f"load to {load:.0%} (budget {self.budget:.0%})",
            )
        return Decision(True)

    def describe(self) -> dict[str, Any]:
        return {
            "frame_cost_ms_720p": round(self.base * self.correction * 1000, 3),
            "measured_correction": round(self.correction, 3),
            "cpu": None if self.cpu is None else round(self.cpu, 3),
            "budget": self.budget,
            "max_sessions": self.max_sessions,
        }


class CpuSampler:
    """The process's CPU time since the last sample, as a fraction of all cores."""

    def __init__(self) -> None:
        self.cores = os.cpu_count() or 1
        self._cpu, self._wall = time.process_time(), time.monotonic()

    def sample(self) -> float:
        cpu, wall = time.process_time(), time.monotonic()
        fraction = (cpu - self._cpu) / max(1e-6, (wall - self._wall) * self.cores)
        self._cpu, self._wall = cpu, wall
        return fraction


def probe_frame_cost(renderer: Any, avatar: Any, ticks: int = 4) -> float:
    """Seconds per 1280x720 frame: render a probe session (first tick, compilation, unused)."""
    slot = renderer.open(avatar, 1280, 720, Scene())
    try:
        k = len(VOCABULARY)
        slots = np.array([slot])
        expr = np.zeros((1, k), np.float32)
        head, eyes = np.zeros((1, 3), np.float32), np.zeros((1, 4), np.float32)
        renderer.render(slots, expr, head, eyes)
        times = []
        for i in range(ticks):
            head[0, 0] = 5.0 * i  # a moving head, as a live session has
            start = time.perf_counter()
            renderer.render(slots, expr, head, eyes)
            times.append(time.perf_counter() - start)
        return float(np.median(times))
    finally:
        renderer.close(slot)
