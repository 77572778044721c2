"""Idle life: blinks, sway and saccades over simulated frames; deterministic; fades."""

from __future__ import annotations

import numpy as np

from avatarfarm.render.vocabulary import INDEX
from avatarfarm.server.drivers.idle import IdleBank
from avatarfarm.server.drivers.pose import K

FPS = 30


def run(bank: IdleBank, seconds: float, active=None, start: float = 0.0, fps: int = FPS):
    """Simulate ticks; returns blink [T, S], head [T, S, 3], eyes [T, S, 4] and weights."""
    s = bank.capacity
    expr = np.zeros((s, K), np.float32)
    head = np.zeros((s, 3), np.float32)
    eyes = np.zeros((s, 4), np.float32)
    blinks, heads, gazes, weights = [], [], [], []
    for i in range(int(seconds * fps)):
        t = start + i / fps
        expr[:] = head[:] = eyes[:] = 0.0
        act = np.zeros(s, bool) if active is None else active(t)
        bank.advance(t, act, expr, head, eyes)
        blinks.append(expr[:, INDEX["eyeBlinkLeft"]].copy())
        heads.append(head.copy())
        gazes.append(eyes.copy())
        weights.append(bank.weight.copy())
    return np.array(blinks), np.array(heads), np.array(gazes), np.array(weights)


def count_blinks(blink: np.ndarray) -> np.ndarray:
    closed = (blink > 0.5).astype(int)
    return (np.diff(closed, axis=0) == 1).sum(axis=0)


def test_a_minute_of_idle_life_blinks_and_never_freezes() -> None:
    bank = IdleBank(4)
    for slot in range(4):
        bank.reset(slot, seed=100 + slot, t=0.0)
    blink, head, eyes, _ = run(bank, 60.0)
    assert (count_blinks(blink) >= 10).all()
    assert (count_blinks(blink) <= 40).all()
    windows = head.reshape(30, 2 * FPS, 4, 3)  # every 2 s window, every slot and axis
    assert (windows.var(axis=1) > 0).all()
    assert np.abs(head).max() < 6.0  # subtle
    moves = np.abs(np.diff(eyes[:, 0, 0])) > 0.5
    assert moves.sum() >= 10  # saccades
    assert np.abs(eyes).max() <= 6.0


def test_same_seed_same_life_other_seed_other_life() -> None:
    a, b = IdleBank(2), IdleBank(3)
    a.reset(0, seed=7, t=0.0)
    a.reset(1, seed=8, t=0.0)
    b.reset(2, seed=7, t=5.0)  # another slot, started later, ticking at 60 fps
    blink_a, head_a, eyes_a, _ = run(a, 20.0)
    blink_b, head_b, eyes_b, _ = run(b, 20.0, start=5.0, fps=60)
    np.testing.assert_allclose(head_a[:, 0], head_b[::2, 2], atol=1e-4)
    np.testing.assert_allclose(eyes_a[:, 0], eyes_b[::2, 2], atol=1e-4)
    np.testing.assert_allclose(blink_a[:, 0], blink_b[::2, 2], atol=1e-4)
    assert not np.allclose(head_a[:, 0], head_a[:, 1])
    assert not np.array_equal(blink_a[:, 0], blink_a[:, 1])


def test_idle_fades_out_while_driven_and_back_after() -> None:
    bank = IdleBank(2, fade=0.5)
    bank.reset(0, seed=1, t=0.0)
    bank.reset(1, seed=2, t=0.0, enabled=False)
    _, head, _, weight = run(bank, 4.0, active=lambda t: np.array([1.0 <= t < 2.5, False]))
    frame = lambda t: int(round(t * FPS))  # noqa: E731
    assert weight[frame(0.9), 0] == 1.0
    assert 0.0 < weight[frame(1.25), 0] < 1.0  # fading, not switching
    assert weight[frame(1.6), 0] == 0.0
    assert np.abs(head[frame(1.6) : frame(2.5), 0]).max() == 0.0
    assert weight[frame(3.1), 0] == 1.0
    assert np.abs(head[:, 1]).max() == 0.0  # disabled slot adds nothing
