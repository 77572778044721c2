"""PoseBank / PoseState: latest-wins targets, clamping, NaN counting, vectorised smoothing."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from avatarfarm.render.vocabulary import INDEX
from avatarfarm.server.drivers.pose import FilterConfig, K, PoseBank, PoseError


def _outs(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros((n, K), np.float32), np.zeros((n, 3), np.float32), np.zeros((n, 4), np.float32)


def test_update_clamps_and_counts_nonfinite() -> None:
    bank = PoseBank(2)
    state = bank.allocate()
    row = np.zeros(K)
    row[INDEX["jawOpen"]] = 3.0
    row[INDEX["aa"]] = np.nan
    row[INDEX["ih"]] = -np.inf
    bad = state.update(expressions=row, head=[200.0, np.inf, -90.0], eyes=[1e300, 0, 0, -99])
    assert bad == 3
    assert state.nonfinite == 3
    assert state.value("jawOpen") == 1.0
    np.testing.assert_allclose(state.head, [60.0, 0.0, -40.0])
    np.testing.assert_allclose(state.eyes, [30.0, 0.0, 0.0, -25.0])
    # NaN keeps the previous target rather than zeroing it.
    row[:] = 0.0
    row[INDEX["aa"]] = 0.5
    state.update(expressions=row)
    state.update(head=[np.nan, 5.0, 1.0])
    assert state.value("aa") == 0.5
    np.testing.assert_allclose(state.head, [60.0, 5.0, 1.0])


def test_mask_limits_the_write_and_source_is_kept() -> None:
    bank = PoseBank(1)
    state = bank.allocate()
    row = np.full(K, 0.7)
    state.update(expressions=row, source="vmc")
    mask = np.zeros(K, bool)
    mask[INDEX["blink"]] = True
    state.update(expressions=np.zeros(K), mask=mask, source="websocket")
    assert state.value("blink") == 0.0
    assert state.value("aa") == pytest.approx(0.7)
    assert state.source == "websocket"


@pytest.mark.parametrize("kind", ["one_euro", "spring", "none"])
def test_filters_converge_to_the_target_without_overshoot(kind: str) -> None:
    bank = PoseBank(3)
    state = bank.allocate(FilterConfig(kind))
    row = np.zeros(K)
    row[INDEX["jawOpen"]] = 1.0
    state.update(expressions=row, head=[20.0, -10.0, 5.0], eyes=[10, 5, 10, 5])
    expr, head, eyes = _outs(3)
    trace = []
    for _ in range(60):  # 2 s at 30 fps
        bank.advance(1 / 30, expr, head, eyes)
        trace.append(head[state.slot, 0])
    assert expr[state.slot, INDEX["jawOpen"]] == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_allclose(head[state.slot], [20.0, -10.0, 5.0], atol=0.05)
    np.testing.assert_allclose(eyes[state.slot], [10, 5, 10, 5], atol=0.05)
    assert max(trace) <= 20.0 + 1e-3
    if kind == "none":
        assert trace[0] == pytest.approx(20.0)
    else:
        assert 0.0 < trace[0] < 20.0  # smoothed: the first tick is on its way


def test_advance_is_per_slot_and_vectorised_over_many() -> None:
    bank = PoseBank(100)
    states = [bank.allocate(FilterConfig("none")) for _ in range(100)]
    for i, st in enumerate(states):
        st.update(head=[i * 0.5, 0, 0])
    expr, head, eyes = _outs(100)
    bank.advance(1 / 30, expr, head, eyes)
    np.testing.assert_allclose(head[:, 0], np.arange(100) * 0.5)
    with pytest.raises(PoseError):
        bank.allocate()
    with pytest.raises(PoseError):
        bank.advance(1 / 30, *_outs(10))


def test_release_and_reallocate_resets_the_slot() -> None:
    bank = PoseBank(1)
    state = bank.allocate()
    state.update(head=[10, 0, 0], source="vmc")
    bank.release(state.slot)
    again = bank.allocate()
    assert again.slot == state.slot
    np.testing.assert_array_equal(again.head, 0)
    assert again.source == "" and again.updated_at == -np.inf


def test_active_follows_the_last_input_time() -> None:
    now = [100.0]
    bank = PoseBank(2, clock=lambda: now[0])
    a, b = bank.allocate(), bank.allocate()
    a.update(head=[1, 0, 0])
    now[0] = 100.4
    b.update(head=[1, 0, 0])
    np.testing.assert_array_equal(bank.active(100.8, within=0.5), [False, True])


def test_bad_filter_settings_and_shapes_are_rejected() -> None:
    bank = PoseBank(1)
    with pytest.raises(PoseError) as err:
        bank.allocate(FilterConfig("one_euro", min_cutoff=0))
    assert err.value.field == "min_cutoff"
    for bad in ({"beta": -1.0}, {"halflife": float("nan")}, {"d_cutoff": "fast"}):
        with pytest.raises(PoseError) as err:
            bank.allocate(FilterConfig("spring", **bad))
        assert err.value.field == next(iter(bad))
    state = bank.allocate()
    with pytest.raises(PoseError) as err:
        state.update(head=[1, 2])
    assert err.value.field == "head"


def test_concurrent_writers_never_break_the_tick() -> None:
    bank = PoseBank(4)
    states = [bank.allocate(FilterConfig(k)) for k in ("one_euro", "spring", "none", "none")]
    stop = threading.Event()
    rng = np.random.default_rng(1)
    noise = rng.uniform(-2, 2, (64, K))

    def writer(st) -> None:
        i = 0
        while not stop.is_set():
            st.update(expressions=noise[i % 64], head=noise[i % 64, :3] * 50)
            i += 1

    threads = [threading.Thread(target=writer, args=(st,)) for st in states]
    for t in threads:
        t.start()
    expr, head, eyes = _outs(4)
    try:
        for _ in range(300):
            bank.advance(1 / 60, expr, head, eyes)
            assert np.isfinite(expr).all() and np.isfinite(head).all()
            assert expr.min() >= 0 and expr.max() <= 1 and np.abs(head).max() <= 60
    finally:
        stop.set()
        for t in threads:
            t.join()
