"""The engine loop with the real CPU renderer and real stream pipelines.

Most tests step the engine by hand (`run_pending` + `tick(now)` with chosen times) so CFR
and drop accounting are checked exactly, without depending on this machine's speed.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from avatarfarm.render.avatars import load
from avatarfarm.render.renderer import Renderer
from avatarfarm.render.scene import Scene
from avatarfarm.render.vocabulary import INDEX, VOCABULARY
from avatarfarm.server.engine import Engine, EngineBusy
from avatarfarm.server.sessions import (
    DriverSpec,
    Session,
    SessionError,
    SessionSpec,
    SessionState,
    VideoSpec,
)
from avatarfarm.server.stream import StreamPipeline, VideoSettings

W, H = 160, 120


@pytest.fixture(scope="module")
def avatar():
    return load("default")


@pytest.fixture
def engine():
    eng = Engine(Renderer("cpu"))
    yield eng
    eng.stop(2.0)


def _session(fps: int = 10, idle: bool = False, encoder: str = "none", **driver) -> Session:
    video = VideoSpec(width=W, height=H, fps=fps, encoder=encoder, bitrate_kbps=300)
    return Session("t1", SessionSpec(video=video, driver=DriverSpec(idle=idle, **driver)))


def _pipeline(session: Session, outputs=(), **kw) -> StreamPipeline:
    v = session.spec.video
    settings = VideoSettings(bitrate_kbps=v.bitrate_kbps, encoder="x264", preset="ultrafast")
    return StreamPipeline(session.id, v.width, v.height, v.fps, settings, list(outputs), **kw)


def _open(engine: Engine, session: Session, avatar, pipeline=None) -> Session:
    engine._running.set()  # accept commands; run them on this thread with run_pending
    future = engine.create(session, avatar, pipeline)
    engine.run_pending()
    return future.result(0)


def _snapshot(engine: Engine, session: Session) -> np.ndarray:
    future = engine.snapshot(session)
    engine.run_pending()
    return future.result(0)[0]


def test_cfr_frames_and_late_tick_counts_drops_and_repeats(engine, avatar):
    engine.max_lateness = 0.0  # every frame past its due time is dropped
    s = _session(fps=10, encoder="x264")
    pipe = _pipeline(s, queue_frames=8)  # room for all 4 submits, however slow the encoder
    try:
        _open(engine, s, avatar, pipe)
        t0 = engine._rows.t0[s.row]
        engine.tick(t0)  # frame 0
        assert s.state is SessionState.LIVE
        engine.tick(t0 + 0.05)  # not due yet
        assert engine.frame_counters(s) == {"frames_rendered": 1, "frames_dropped": 0}
        engine.tick(t0 + 0.35)  # frames 1 and 2 missed: counted, repeated; frame 3 rendered
        assert engine.frame_counters(s) == {"frames_rendered": 2, "frames_dropped": 2}
        assert pipe.stats()["frames_in"] == 4  # 0, repeat 1, repeat 2, 3
        assert engine._rows.next_index[s.row] == 4
        assert engine._rows.next_due[s.row] == pytest.approx(t0 + 0.4)
    finally:
        pipe.close(2.0)


def test_frames_within_max_lateness_are_rendered_late_and_the_rest_dropped(engine, avatar):
    """A stall shorter than max_lateness costs latency, not frames: the missed frames are
    rendered one per tick, back to back, in order; beyond it only the excess is dropped."""
    engine.max_lateness = 0.15
    s = _session(fps=10, encoder="x264")
    pipe = _pipeline(s, queue_frames=16)
    try:
        _open(engine, s, avatar, pipe)
        t0 = engine._rows.t0[s.row]
        engine.tick(t0)  # frame 0
        engine.tick(t0 + 0.25)  # frames 1 and 2 are due, 1 is 0.15 s late: still rendered
        assert engine.frame_counters(s) == {"frames_rendered": 2, "frames_dropped": 0}
        assert engine.lag_seconds == pytest.approx(0.15)
        assert engine._rows.next_due[s.row] == pytest.approx(t0 + 0.2)  # due: no waiting
        engine.tick(t0 + 0.26)  # frame 2, caught up with
        engine.tick(t0 + 0.27)  # frame 3 is not due yet
        assert engine.frame_counters(s) == {"frames_rendered": 3, "frames_dropped": 0}
        engine.tick(t0 + 0.9)  # frames 3..9 due: 3..7 are more than 0.15 s late
        assert engine.frame_counters(s) == {"frames_rendered": 4, "frames_dropped": 5}
        assert engine._rows.next_index[s.row] == 9
        assert pipe.stats()["frames_in"] == 6  # 0, 1, 2, repeats of 3 and 4 (MAX_REPEATS), 8
    finally:
        pipe.close(2.0)


def test_sessions_opened_apart_share_ticks_on_their_rates_grid(avatar):
    """Frame 0 waits for the rate's grid point, so every tick batches all sessions due."""
    now = [100.005]
    engine = Engine(Renderer("cpu"), clock=lambda: now[0])
    try:
        first = _open(engine, _session(fps=30), avatar)
        now[0] = 100.017  # opened 12 ms apart: their own phases would differ
        second = _open(engine, _session(fps=30), avatar)
        now[0] = 100.021
        fast = _open(engine, _session(fps=60), avatar)
        r = engine._rows
        rows = [first.row, second.row, fast.row]
        np.testing.assert_allclose(r.t0[rows], 3001 / 30)  # the next 30 and 60 fps grid point
        batches: list[int] = []
        engine.on_tick = lambda seconds, megapixels, rendered: batches.append(rendered)
        for ms in range(1000):  # a tick every millisecond for one second of clock
            engine.tick(3001 / 30 + ms / 1000)
        assert batches == [3, 1] * 30  # all three together, then 60 fps alone
        assert engine.frame_counters(first)["frames_dropped"] == 0
    finally:
        engine.stop(2.0)


def test_sessions_with_different_fps_are_due_at_their_own_rate(engine, avatar):
    slow = _open(engine, _session(fps=24), avatar)
    fast = _open(engine, _session(fps=60), avatar)
    t0 = max(engine._rows.t0[slow.row], engine._rows.t0[fast.row])
    for i in range(61):
        engine.tick(t0 + i / 60)
    assert engine.frame_counters(fast)["frames_rendered"] == 61
    assert engine.frame_counters(slow)["frames_rendered"] in (24, 25)
    assert engine.frame_counters(slow)["frames_dropped"] == 0


def test_pose_changes_the_frame_latest_wins(engine, avatar):
    s = _open(engine, _session(), avatar)
    t0 = engine._rows.t0[s.row]
    engine.tick(t0)
    before = _snapshot(engine, s)
    expr = np.zeros(len(VOCABULARY), np.float32)
    expr[INDEX["jawOpen"]] = 1.0
    engine.set_pose(s, np.zeros(len(VOCABULARY), np.float32), None, None)
    engine.set_pose(s, expr, np.array([30.0, 0, 0], np.float32), None)  # replaces the first
    engine.tick(t0 + 0.1)
    after = _snapshot(engine, s)
    assert not np.array_equal(before, after)
    assert engine._expr[s.drivers.pose.slot, INDEX["jawOpen"]] > 0.5  # smoothed towards 1


def test_scene_patch_applies_live_and_bad_scene_is_rejected(engine, avatar):
    s = _open(engine, _session(), avatar)
    t0 = engine._rows.t0[s.row]
    engine.tick(t0)
    before = _snapshot(engine, s)
    done = engine.set_scene(s, Scene(background="#ff0000"))
    engine.run_pending()
    done.result(0)
    engine.tick(t0 + 0.1)
    assert not np.array_equal(before, _snapshot(engine, s))
    with pytest.raises(SessionError) as err:  # compiled before it reaches the engine
        engine.set_scene(s, Scene(background="/no/such/file.png"))
    assert err.value.field == "scene.background"
    assert s.state is SessionState.LIVE


def _long_video_scene(engine: Engine, frames: int = 40):
    """A scene whose background loops `frames` distinct frames (a short video)."""
    import dataclasses

    scene = Scene(background="#00ff00")
    compiled = engine.renderer.compile(scene, W, H)
    still = compiled.backgrounds[0]
    loop = [np.full_like(still, 16 + i) for i in range(frames)]
    return scene, dataclasses.replace(compiled, backgrounds=loop)


def test_a_long_background_is_copied_between_ticks_not_in_one_go(engine, avatar, monkeypatch):
    """Changing to a video background must not stall the engine for the whole copy: the
    loop copies FILL_CHUNK bytes at a time and the scene is shown once all are in."""
    import avatarfarm.server.engine as engine_module

    monkeypatch.setattr(engine_module, "FILL_CHUNK", W * H * 3 // 2)  # one frame per piece
    s = _open(engine, _session(), avatar)
    t0 = engine._rows.t0[s.row]
    engine.tick(t0)
    before = _snapshot(engine, s)
    scene, compiled = _long_video_scene(engine)
    monkeypatch.setattr(engine.renderer, "compile", lambda *a, **k: compiled)
    done = engine.set_scene(s, scene)
    engine._run_commands()
    pieces = 0
    while not done.done():
        engine._fill_scenes(until=0.0)  # no time left before the next tick: one piece
        pieces += 1
        if pieces < 40:
            engine.tick(t0 + 0.1 * pieces)  # the session keeps rendering its old scene
            frame = engine.renderer.frame(s.slot)  # not _snapshot: it would finish the load
            assert not done.done() and np.array_equal(frame, before)
    assert pieces >= 40  # one frame per pass (the overlay label is the last piece)
    done.result(0)
    engine.tick(t0 + 10)
    assert not np.array_equal(_snapshot(engine, s), before)


def test_a_new_avatar_is_copied_between_ticks_not_in_one_go(engine, avatar, monkeypatch):
    """A session with an avatar not pooled yet opens once its rows are in, copied a piece
    per pass between ticks, while the other sessions keep rendering."""
    import dataclasses

    import avatarfarm.server.engine as engine_module

    chunk = 64 << 10
    monkeypatch.setattr(engine_module, "FILL_CHUNK", chunk)
    other = _open(engine, _session(), avatar)
    t0 = engine._rows.t0[other.row]
    newcomer = dataclasses.replace(avatar)  # same model, another asset: pooled anew
    opening = engine.create(_session(), newcomer, None)
    engine._run_commands()
    pool = engine.renderer.pool
    pieces = 0
    while not opening.done():
        engine._fill_scenes(until=0.0)  # no time left before the next tick: one piece
        pieces += 1
        engine.tick(t0 + 0.1 * pieces)
        assert engine.frame_counters(other)["frames_rendered"] == pieces
    assert pieces >= avatar.morph_dpos.nbytes // chunk
    s = opening.result(0)
    index = engine.renderer._slots[s.slot].avatar
    assert pool.avatars[index].asset is newcomer and pool.avatars[index].users == 1
    engine.tick(t0 + 100)  # both due: the same model renders the same frame
    np.testing.assert_array_equal(_snapshot(engine, s), _snapshot(engine, other))
    held = engine.create(_session(), dataclasses.replace(avatar), None)
    engine._run_commands()
    engine.stop(1.0)  # stopped mid-copy: nothing holds any avatar any more
    with pytest.raises(EngineBusy):
        held.result(0)
    assert [a.users for a in pool.avatars if a] == [0, 0, 0]


def test_a_session_ended_while_its_scene_loads_frees_the_space(engine, avatar, monkeypatch):
    s = _open(engine, _session(), avatar)
    backgrounds = engine.renderer._scenes.backgrounds
    top = backgrounds.top
    scene, compiled = _long_video_scene(engine)
    monkeypatch.setattr(engine.renderer, "compile", lambda *a, **k: compiled)
    done = engine.set_scene(s, scene)
    engine._run_commands()
    assert backgrounds.top > top  # reserved
    stop = engine.delete(s)
    engine.run_pending()
    stop.result(5)
    with pytest.raises(SessionError, match="ended"):
        done.result(0)
    assert backgrounds.top == 0  # its old and its half-loaded scene are both gone
    opening = engine.create(_session(), avatar, None)
    engine._run_commands()
    engine.stop(1.0)  # an engine stopping with a scene still loading refuses that session
    with pytest.raises(EngineBusy):
        opening.result(0)
    assert backgrounds.top == 0


def test_delete_ends_session_and_reuses_row(engine, avatar):
    a = _open(engine, _session(), avatar)
    row = a.row
    engine.tick(engine._rows.t0[row])
    future = engine.delete(a)
    engine.run_pending()
    future.result(5)
    assert a.state is SessionState.ENDED and a.row is None
    assert a.final_counters["frames_rendered"] == 1
    b = _open(engine, _session(), avatar)
    assert b.row == row
    assert engine.all_counters()["frames_rendered"] == 1


def test_a_session_deleted_or_drained_while_starting_never_opens(engine, avatar):
    engine._running.set()
    deleted = _session(encoder="x264")
    stop = engine.delete(deleted)  # DELETE lands while create is still compiling its scene
    opening = engine.create(deleted, avatar, _pipeline(deleted))
    engine.run_pending()
    assert stop.result(5) is deleted and deleted.state is SessionState.ENDED
    with pytest.raises(SessionError):
        opening.result(0)
    late = _session()
    opening = engine.create(late, avatar, None)
    engine.accepting = False  # a drain began before the engine got to open it
    engine.run_pending()
    with pytest.raises(EngineBusy):
        opening.result(0)
    assert engine.active_sessions() == [] and deleted.row is None and late.row is None


def test_failing_output_fails_only_its_session(engine, avatar, tmp_path: Path):
    (tmp_path / "taken.mp4").mkdir()  # a folder where the recording file should go
    bad, good = _session(encoder="x264"), _session(encoder="x264")
    for s, outputs in ((bad, ["record:taken.mp4"]), (good, [])):
        _open(engine, s, avatar, _pipeline(s, outputs, recordings_root=tmp_path))
    t0 = max(engine._rows.t0[bad.row], engine._rows.t0[good.row])
    deadline = time.monotonic() + 20
    i = 0
    while bad.state is not SessionState.FAILED and time.monotonic() < deadline:
        engine.tick(t0 + i / 10)
        engine._supervise()
        i += 1
        time.sleep(0.05)
    assert bad.state is SessionState.FAILED
    assert bad.error["field"] == "outputs"
    assert good.state is SessionState.LIVE
    engine.tick(t0 + i / 10)
    assert engine.frame_counters(good)["frames_rendered"] == i + 1


def test_session_failing_mid_tick_keeps_counters_and_frees_its_row_after(engine, avatar):
    engine.max_lateness = 0.0  # the late tick below repeats frames: the path that fails
    bad, good = _session(encoder="x264"), _session(encoder="x264")
    for s in (bad, good):
        _open(engine, s, avatar, _pipeline(s, queue_frames=8))
    row = bad.row
    t0 = max(engine._rows.t0[bad.row], engine._rows.t0[good.row])
    engine.tick(t0)

    def broken(*args, **kwargs):
        raise RuntimeError("encoder gone")

    bad.pipeline.submit = broken
    engine.tick(t0 + 0.35)  # frames 1 and 2 missed: repeating them raises
    assert bad.state is SessionState.FAILED and bad.error["field"] == "video"
    assert good.state is SessionState.LIVE
    assert engine._rows.next_due[row] == np.inf  # not ticked again after the tick ended
    counted = engine.all_counters()
    good_now = engine.frame_counters(good)
    assert (
        counted["frames_rendered"]
        == bad.final_counters["frames_rendered"] + good_now["frames_rendered"]
    )  # the ended session's frames are counted once
    engine.tick(t0 + 0.4)
    again = _open(engine, _session(), avatar)  # reuses the freed row
    assert again.row == row
    assert engine.all_counters()["frames_rendered"] >= counted["frames_rendered"]


def test_a_bug_in_one_sessions_upkeep_does_not_stop_the_engine(engine, avatar):
    s = _session(encoder="x264")
    _open(engine, s, avatar, _pipeline(s))

    def broken():
        raise ValueError("stats broke")

    s.pipeline.stats = broken
    engine._supervise()  # must not raise: it runs on the engine thread, outside the tick
    assert engine.tick_errors == 1 and s.state is SessionState.STARTING


def test_running_engine_renders_and_drains(avatar):
    engine = Engine(Renderer("cpu"), queue_size=4)
    engine.start()
    try:
        s = engine.create(_session(fps=25, idle=True), avatar, None).result(30)
        deadline = time.monotonic() + 30
        while engine.frame_counters(s)["frames_rendered"] < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert s.state is SessionState.LIVE
        assert engine.ticking()
        assert engine.drain(10.0)
        assert s.state is SessionState.ENDED
        with pytest.raises(EngineBusy):
            engine.create(_session(), avatar, None)
    finally:
        engine.stop(2.0)


def test_full_command_queue_is_refused_not_waited_for(avatar):
    engine = Engine(Renderer("cpu"), queue_size=2)
    engine.start()
    release = threading.Event()
    try:
        engine.call(release.wait, 10)
        time.sleep(0.2)  # the loop now blocks in that command
        engine.call(lambda: None)
        engine.call(lambda: None)
        with pytest.raises(EngineBusy):
            engine.call(lambda: None)
    finally:
        release.set()
        engine.stop(2.0)
