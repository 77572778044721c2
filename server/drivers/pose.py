"""Latest-wins driver targets and their smoothing, for every session at once.

Input threads (WebSocket, VMC, Live Link, audio) write a session's *target* pose with
`PoseState.update`; the engine calls `PoseBank.advance(dt, ...)` once per tick, which moves
the *smoothed* pose of every slot towards its target in a handful of numpy calls (no Python
loop over sessions) and copies it out. Because smoothing runs on the engine clock with the
real `dt`, it does not depend on any session's output fps or on the input rate.

Channels are filtered together as one row of `C = K + 7` values: the K expression weights
and head yaw/pitch/roll + eye [left yaw, left pitch, right yaw, right pitch] divided by the
rig's angle limits, so one set of filter parameters suits weights and degrees alike.

Filters, chosen per slot (`FilterConfig`):

- `one_euro`: Casiez et al.'s 1-euro filter; low jitter when still, little lag when fast.
- `spring`: a critically damped spring towards the target (exact step for any dt), given
  by its half-life; smooth and never overshoots from rest.
- `none`: the output is the target.

Values are clamped on write (weights to 0..1, angles to `render.rig.ANGLE_LIMITS`), and
NaN/inf components are ignored (the previous target stays) and counted per slot. Writers
and `advance` share one lock held only for row copies (microseconds), so the engine never
waits behind parsing or sockets.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ...render.rig import ANGLE_LIMITS
from ...render.vocabulary import INDEX, VOCABULARY

K = len(VOCABULARY)
C = K + 7
HEAD_LIMITS = ANGLE_LIMITS[:3]
EYE_LIMITS = ANGLE_LIMITS[3:]
FilterKind = Literal["one_euro", "spring", "none"]
_MODES: dict[str, int] = {"none": 0, "one_euro": 1, "spring": 2}


class PoseError(ValueError):
    """A pose write or filter setting that cannot be applied (names the field)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class FilterConfig:
    """Smoothing of one session. Cutoffs in Hz; `beta` per (normalised unit / s)."""

    kind: FilterKind = "one_euro"
    min_cutoff: float = 2.0
    beta: float = 3.0
    d_cutoff: float = 1.0
    halflife: float = 0.04  # seconds, spring only

    def validate(self) -> None:
        if self.kind not in _MODES:
            raise PoseError(f"filter must be one of {sorted(_MODES)}", "kind")
        for name in ("min_cutoff", "d_cutoff", "halflife", "beta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise PoseError(f"{name} must be a number", name)
            zero_ok = name == "beta"
            if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
                raise PoseError(f"{name} must be finite and {'>=' if zero_ok else '>'} 0", name)


class PoseBank:
    """Targets and filter state of `capacity` session slots, as [S, C] arrays."""

    def __init__(self, capacity: int, clock: Callable[[], float] = time.monotonic) -> None:
        if capacity < 1:
            raise PoseError("capacity must be >= 1", "capacity")
        self.capacity = capacity
        self._clock = clock
        self._lock = threading.Lock()
        self._free = list(range(capacity - 1, -1, -1))
        s = capacity
        self._scale = np.concatenate([np.ones(K, np.float32), ANGLE_LIMITS]).astype(np.float32)
        self._hi = self._scale.astype(np.float64)
        self._lo = np.concatenate([np.zeros(K), -ANGLE_LIMITS.astype(np.float64)])
        self._target = np.zeros((s, C), np.float32)  # raw units, written by inputs
        self._snap = np.zeros((s, C), np.float32)  # normalised copy taken per tick
        self._x = np.zeros((s, C), np.float32)  # smoothed, normalised
        self._v = np.zeros((s, C), np.float32)  # spring velocity / 1-euro derivative
        self._dx = np.zeros((s, C), np.float32)
        self._a = np.zeros((s, C), np.float32)
        self._spring = np.zeros((s, C), np.float32)
        self._mode = np.zeros((s, 1), np.int8)
        self._min_cutoff = np.ones((s, 1), np.float32)
        self._beta = np.zeros((s, 1), np.float32)
        self._d_cutoff = np.ones((s, 1), np.float32)
        self._omega = np.ones((s, 1), np.float32)
        self._col = np.zeros((3, s, 1), np.float32)
        self._is_euro = np.zeros((s, 1), bool)
        self._is_spring = np.zeros((s, 1), bool)
        self._is_none = np.ones((s, 1), bool)
        self.updated_at = np.full(s, -np.inf)  # clock() of each slot's last input
        self.nonfinite = np.zeros(s, np.int64)  # NaN/inf components ignored, per slot
        self.sources: list[str] = [""] * s
        self.stamps = np.zeros(s)  # the sender's own timestamp (ms) when it gave one

    def allocate(self, config: FilterConfig | None = None) -> PoseState:
        """A free slot, reset to the neutral pose, with its smoothing configured."""
        config = config or FilterConfig()
        config.validate()
        with self._lock:
            if not self._free:
                raise PoseError(f"all {self.capacity} pose slots are in use", "capacity")
            slot = self._free.pop()
            for a in (self._target, self._x, self._v):
                a[slot] = 0.0
            self.updated_at[slot] = -np.inf
            self.nonfinite[slot] = 0
            self.sources[slot] = ""
            self.stamps[slot] = 0.0
        self.configure(slot, config)
        return PoseState(self, slot)

    def release(self, slot: int) -> None:
        with self._lock:
            if slot not in self._free:
                self._free.append(slot)

    def configure(self, slot: int, config: FilterConfig) -> None:
        config.validate()
        with self._lock:
            self._mode[slot] = _MODES[config.kind]
            self._min_cutoff[slot] = config.min_cutoff
            self._beta[slot] = config.beta
            self._d_cutoff[slot] = config.d_cutoff
            self._omega[slot] = 2.0 * np.log(2.0) / config.halflife
            self._is_euro[:] = self._mode == 1
            self._is_spring[:] = self._mode == 2
            self._is_none[:] = self._mode == 0

    def update(
        self,
        slot: int,
        *,
        expressions: np.ndarray | None = None,
        mask: np.ndarray | None = None,
        head: np.ndarray | None = None,
        eyes: np.ndarray | None = None,
        source: str = "",
        stamp: float | None = None,
    ) -> int:
        """Write a slot's targets (any subset); returns the count of non-finite values ignored.

        `mask` (bool [K]) limits the expression write to the names a message carried.
        """
        row = np.zeros(C)
        given = np.zeros(C, bool)
        if expressions is not None:
            row[:K] = _vector(expressions, K, "expressions")
            given[:K] = True if mask is None else mask
        if head is not None:
            row[K : K + 3] = _vector(head, 3, "head")
            given[K : K + 3] = True
        if eyes is not None:
            row[K + 3 :] = _vector(eyes, 4, "eyes")
            given[K + 3 :] = True
        finite = np.isfinite(row)
        keep = given & finite
        bad = int(np.count_nonzero(given & ~finite))
        np.clip(row, self._lo, self._hi, out=row)
        now = self._clock()
        with self._lock:
            np.copyto(self._target[slot], row, where=keep, casting="same_kind")
            self.updated_at[slot] = now
            self.nonfinite[slot] += bad
            if source:
                self.sources[slot] = source
            if stamp is not None:
                self.stamps[slot] = stamp
        return bad

    def active(self, now: float, within: float) -> np.ndarray:
        """bool [S]: slots whose last input is at most `within` seconds old."""
        return (now - self.updated_at) <= within

    def advance(
        self, dt: float, out_expr: np.ndarray, out_head: np.ndarray, out_eyes: np.ndarray
    ) -> None:
        """Step every slot's filter by `dt` seconds and write the smoothed pose [S, ...]."""
        s = self.capacity
        if out_expr.shape[0] < s or out_head.shape[0] < s or out_eyes.shape[0] < s:
            raise PoseError(f"outputs need at least {s} rows (the bank's capacity)", "out")
        x, tgt = self._x, self._snap
        with self._lock:
            np.divide(self._target, self._scale, out=tgt)
        if dt > 0:
            self._spring_step(dt)
            np.copyto(x, self._spring, where=self._is_spring)
            self._euro_step(dt)  # reuses the spring buffer as scratch
            np.copyto(x, tgt, where=self._is_none)
        np.clip(x[:, :K], 0.0, 1.0, out=x[:, :K])
        np.clip(x[:, K:], -1.0, 1.0, out=x[:, K:])
        np.copyto(out_expr[:s], x[:, :K])
        np.multiply(x[:, K : K + 3], self._scale[K : K + 3], out=out_head[:s])
        np.multiply(x[:, K + 3 :], self._scale[K + 3 :], out=out_eyes[:s])

    def _euro_step(self, dt: float) -> None:
        """1-euro: derivative low-passed at d_cutoff, value at min_cutoff + beta |dx|."""
        x, tgt, dx, a = self._x, self._snap, self._dx, self._a
        alpha_d = self._col[0]
        _alpha(self._d_cutoff, dt, alpha_d, self._col[1])
        np.subtract(tgt, x, out=a)
        np.divide(a, dt, out=a)  # raw derivative
        np.subtract(a, self._v, out=a)
        np.multiply(a, alpha_d, out=a)
        np.add(self._v, a, out=dx)  # low-passed derivative
        np.copyto(self._v, dx, where=self._is_euro)
        np.abs(dx, out=a)
        np.multiply(a, self._beta, out=a)
        np.add(a, self._min_cutoff, out=a)  # cutoff per value
        _alpha(a, dt, a, self._spring)
        np.subtract(tgt, x, out=dx)
        np.multiply(dx, a, out=dx)
        np.add(x, dx, out=dx)
        np.copyto(x, dx, where=self._is_euro)

    def _spring_step(self, dt: float) -> None:
        """Critically damped spring: exact solution over dt, velocity kept in self._v."""
        x, tgt, v, out = self._x, self._snap, self._v, self._spring
        omega, decay, j1 = self._omega, self._col[2], self._dx
        np.multiply(omega, -dt, out=decay)
        np.exp(decay, out=decay)
        j0 = self._a
        np.subtract(x, tgt, out=j0)
        np.multiply(j0, omega, out=j1)
        np.add(j1, v, out=j1)  # j1 = v + j0 * omega
        np.multiply(j1, dt, out=out)
        np.add(out, j0, out=out)
        np.multiply(out, decay, out=out)
        np.add(out, tgt, out=out)  # x' = tgt + e (j0 + j1 dt)
        np.multiply(j1, omega, out=j1)
        np.multiply(j1, dt, out=j1)
        np.subtract(v, j1, out=j1)
        np.multiply(j1, decay, out=j1)  # v' = e (v - j1 omega dt)
        np.copyto(v, j1, where=self._is_spring)


def _alpha(cutoff: np.ndarray, dt: float, out: np.ndarray, tmp: np.ndarray) -> None:
    """Exponential smoothing factor 1 / (1 + tau / dt), tau = 1 / (2 pi cutoff)."""
    np.multiply(cutoff, 2.0 * np.pi * dt, out=out)
    np.add(out, 1.0, out=tmp)
    np.divide(out, tmp, out=out)


def _vector(values: object, n: int, field: str) -> np.ndarray:
    """`values` as float64 [n], or a PoseError naming the field."""
    try:
        out = np.asarray(values, np.float64).reshape(n)
    except (TypeError, ValueError) as exc:
        raise PoseError(f"{field} must be {n} numbers", field) from exc
    return out


class PoseState:
    """One session's handle on the bank: what drivers write to and audits read from."""

    def __init__(self, bank: PoseBank, slot: int) -> None:
        self.bank = bank
        self.slot = slot

    def update(
        self,
        *,
        expressions: np.ndarray | None = None,
        mask: np.ndarray | None = None,
        head: np.ndarray | None = None,
        eyes: np.ndarray | None = None,
        source: str = "",
        stamp: float | None = None,
    ) -> int:
        """Write targets; see `PoseBank.update`."""
        return self.bank.update(
            self.slot,
            expressions=expressions,
            mask=mask,
            head=head,
            eyes=eyes,
            source=source,
            stamp=stamp,
        )

    @property
    def expressions(self) -> np.ndarray:
        return self.bank._target[self.slot, :K].copy()

    @property
    def head(self) -> np.ndarray:
        return self.bank._target[self.slot, K : K + 3].copy()

    @property
    def eyes(self) -> np.ndarray:
        return self.bank._target[self.slot, K + 3 :].copy()

    def value(self, name: str) -> float:
        """The target weight of one vocabulary name."""
        return float(self.bank._target[self.slot, INDEX[name]])

    @property
    def updated_at(self) -> float:
        return float(self.bank.updated_at[self.slot])

    @property
    def source(self) -> str:
        return self.bank.sources[self.slot]

    @property
    def nonfinite(self) -> int:
        return int(self.bank.nonfinite[self.slot])
