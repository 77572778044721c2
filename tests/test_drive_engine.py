"""The engine with live drivers: pose slots, idle life, lip-sync and the presence policy.

Real CPU renderer, engine stepped by hand on a fake clock (`tick(now)` with the clock set
to `now`, so inputs are stamped on the same timeline), small frames. The presence policy
runs on wall time, so its tests sleep past a short timeout. The IdleBank's own
properties (60 s hold >= 10 blinks, never frozen, deterministic) are tested in
test_drivers_idle.py; here: the engine wires them into what is rendered.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from test_drivers_audio import VOWELS, vowel

from avatarfarm.render.avatars import load
from avatarfarm.render.renderer import Renderer
from avatarfarm.render.scene import Scene
from avatarfarm.render.vocabulary import INDEX, VOCABULARY
from avatarfarm.server.drivers.audio import AudioDriver
from avatarfarm.server.engine import Engine, EngineBusy, standby_scene
from avatarfarm.server.sessions import (
    DriverSpec,
    Session,
    SessionError,
    SessionSpec,
    SessionState,
    StandbySpec,
    VideoSpec,
)

W, H = 192, 192
K = len(VOCABULARY)


@pytest.fixture(scope="module")
def avatar():
    return load("default")


class Clock:
    """The engine's clock, set by `tick`."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def engine():
    eng = Engine(Renderer("cpu"), pose_slots=8, clock=Clock())
    yield eng
    eng.stop(2.0)


def tick(engine: Engine, t: float) -> None:
    engine.clock.t = t  # type: ignore[attr-defined]
    engine.tick(t)


def _session(fps: int = 30, **driver) -> Session:
    driver.setdefault("idle", False)
    video = VideoSpec(width=W, height=H, fps=fps, encoder="none")
    scene = Scene(framing="head")
    return Session("t1", SessionSpec(video=video, scene=scene, driver=DriverSpec(**driver)))


def _open(engine: Engine, session: Session, avatar) -> Session:
    engine._running.set()
    future = engine.create(session, avatar, None)
    engine.run_pending()
    return future.result(0)


def _snapshot(engine: Engine, session: Session) -> np.ndarray:
    future = engine.snapshot(session)
    engine.run_pending()
    return future.result(0)[0][: W * H].reshape(H, W).astype(np.float32)


def _run(engine: Engine, session: Session, t: float, seconds: float, fps: int = 30) -> float:
    """Tick every frame period from `t` for `seconds`; returns the next time."""
    for i in range(round(seconds * fps)):
        tick(engine, t + i / fps)
    return t + round(seconds * fps) / fps


def test_each_session_gets_a_pose_slot_released_with_it(engine, avatar):
    a = _open(engine, _session(), avatar)
    b = _open(engine, _session(), avatar)
    assert a.drivers.pose.slot != b.drivers.pose.slot
    writer = a.drivers.pose
    engine.delete(a)
    engine.run_pending()
    assert not writer.open
    assert writer.update(head=np.array([30.0, 0, 0])) == 0  # a late driver write is ignored
    c = _open(engine, _session(), avatar)
    assert c.drivers.pose.slot == writer.slot  # reused, and clean
    assert np.all(c.drivers.pose.head == 0)
    with pytest.raises(SessionError):
        engine.set_pose(a, None, np.array([5.0, 0, 0]), None)


def test_pose_slots_exhausted_is_busy(avatar):
    engine = Engine(Renderer("cpu"), pose_slots=1)
    try:
        _open(engine, _session(), avatar)
        with pytest.raises(EngineBusy):
            _open(engine, _session(), avatar)
    finally:
        engine.stop(2.0)


def test_api_pose_is_smoothed_towards_the_target(engine, avatar):
    s = _open(engine, _session(), avatar)
    t = engine._rows.t0[s.row]
    t = _run(engine, s, t, 0.1)
    neutral = _snapshot(engine, s)
    expr = np.zeros(K, np.float32)
    expr[INDEX["jawOpen"]] = 1.0
    engine.set_pose(s, expr, np.array([30.0, 0, 0], np.float32), None)
    tick(engine, t)
    first = float(engine._expr[s.drivers.pose.slot, INDEX["jawOpen"]])
    _run(engine, s, t + 1 / 30, 1.0)
    settled = float(engine._expr[s.drivers.pose.slot, INDEX["jawOpen"]])
    assert 0.0 < first < settled and settled > 0.99
    assert np.abs(_snapshot(engine, s) - neutral).mean() > 1.0
    assert s.drivers.presence.history()[0]["type"] == "api"


def test_idle_life_moves_an_undriven_avatar_and_fades_under_input(engine, avatar):
    s = _open(engine, _session(idle=True), avatar)
    slot = s.drivers.pose.slot
    t = engine._rows.t0[s.row]
    heads, blinks, frames = [], [], []
    for i in range(90):  # 3 s
        tick(engine, t + i / 30)
        heads.append(engine._head[slot].copy())
        blinks.append(engine._expr[slot, INDEX["eyeBlinkLeft"]])
        if i % 30 == 0:
            frames.append(_snapshot(engine, s))
    assert np.ptp(np.array(heads), axis=0).max() > 0.3  # sway/breathing, not frozen
    assert max(blinks) > 0.5  # a blink within 3 s (first one is at 0.5-2.5 s)
    assert np.abs(frames[0] - frames[-1]).mean() > 0.1
    t += 3.0
    for i in range(30):  # a driver holds the head still: idle fades out in 0.5 s
        engine.clock.t = t + i / 30
        s.drivers.pose.update(head=np.array([0.0, 0, 0]), source="websocket")
        tick(engine, t + i / 30)
    assert engine.idle.weight[slot] == 0.0
    assert np.allclose(engine._head[slot], 0.0, atol=1e-3)


def test_lipsync_opens_the_mouth_from_pushed_audio_unless_a_face_drives_it(engine, avatar):
    s = _open(engine, _session(), avatar)
    slot = s.drivers.pose.slot
    audio = AudioDriver()
    audio.configure(json.dumps({"format": "pcm16", "rate": 16000, "channels": 1}))
    s.drivers.audio = audio
    engine.attach_audio(s)
    engine.run_pending()
    t = _run(engine, s, engine._rows.t0[s.row], 0.2)
    closed = _snapshot(engine, s)
    audio.feed(vowel(VOWELS["aa"], 0.6, 0.5).tobytes())
    jaw = []
    for i in range(15):
        tick(engine, t + i / 30)
        jaw.append(float(engine._rows._g_expr[0, INDEX["jawOpen"]]))
    t += 0.5
    assert max(jaw) > 0.3
    assert np.abs(_snapshot(engine, s) - closed).mean() > 0.5
    t = _run(engine, s, t, 0.6)  # the vowel ends: silence closes the mouth
    assert audio.buffered == 0  # read in step with the frames
    assert float(engine._rows._g_expr[0, INDEX["jawOpen"]]) < 0.05
    audio.feed(vowel(VOWELS["aa"], 0.5, 0.5).tobytes())
    for i in range(10):  # a face capture is driving: its mouth wins, no lip-sync
        engine.clock.t = t + i / 30
        s.drivers.pose.update(expressions=np.zeros(K), source="vmc")
        tick(engine, t + i / 30)
    assert engine._active[slot]
    assert float(engine._rows._g_expr[0, INDEX["jawOpen"]]) < 0.05


def test_operator_required_standby_scene_then_resume(engine, avatar):
    spec = StandbySpec(background="#ff0000", text="Back soon")
    s = _open(engine, _session(operator_required=True, timeout_s=0.3, standby=spec), avatar)
    t = engine._rows.t0[s.row]
    t = _run(engine, s, t, 0.1)
    live = _snapshot(engine, s)
    assert s.state is SessionState.LIVE
    time.sleep(0.4)  # the presence clock is wall time
    t = _run(engine, s, t, 0.1)
    assert s.state is SessionState.STANDBY
    standby = _snapshot(engine, s)
    assert np.abs(standby - live).mean() > 10  # red background, no avatar
    rendered = engine.frame_counters(s)["frames_rendered"]
    backgrounds = engine.renderer._scenes.backgrounds
    top, pixels = backgrounds.top, backgrounds.data.copy()
    t = _run(engine, s, t, 0.2)
    assert engine.frame_counters(s)["frames_rendered"] == rendered  # a still frame, held
    engine.set_pose(s, None, np.array([10.0, 0, 0], np.float32), None, "10.0.0.5")
    t = _run(engine, s, t, 0.1)
    assert s.state is SessionState.LIVE
    assert engine.frame_counters(s)["frames_rendered"] > rendered
    assert np.abs(_snapshot(engine, s) - live).mean() < np.abs(standby - live).mean() / 4
    assert backgrounds.top == top and np.array_equal(backgrounds.data, pixels)  # none moved
    history = s.drivers.presence.history()
    assert history[-1]["type"] == "api" and history[-1]["address"] == "10.0.0.5"


def test_scene_patched_in_standby_is_shown_on_resume(engine, avatar):
    s = _open(engine, _session(operator_required=True, timeout_s=0.2), avatar)
    t = _run(engine, s, engine._rows.t0[s.row], 0.1)
    time.sleep(0.3)
    t = _run(engine, s, t, 0.1)
    assert s.state is SessionState.STANDBY
    done = engine.set_scene(s, Scene(background="#00ff00", framing="head"))
    engine.run_pending()
    done.result(0)
    t = _run(engine, s, t, 0.1)
    assert s.state is SessionState.STANDBY
    engine.set_pose(s, None, np.zeros(3, np.float32), None)
    _run(engine, s, t, 0.1)
    y = _snapshot(engine, s)
    assert y[2, 2] > 120  # green background (luma of #00ff00 is ~173)


def test_standby_scene_centres_its_text_and_keeps_the_label():
    live = Scene(framing="bust")
    scene = standby_scene(live, "#000000", "The host will be right back", 1280, 720)
    (overlay,) = scene.overlays
    assert scene.label == live.label and scene.placement.x < 0
    assert 0.05 < overlay.x < 0.5 and 0.3 < overlay.y < 0.5
    narrow = standby_scene(live, "#000000", "The host will be right back", 192, 192)
    assert narrow.overlays[0].x >= 0.04
