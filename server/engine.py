"""The engine: one loop thread per device that renders every due session in one batch.

Modelled on vLLM's engine core: HTTP handlers never touch the renderer; they put commands
on a bounded queue (`call`) and get a Future back, or stage a pose (`set_pose`, latest
wins). Each tick the loop runs queued commands, finds the sessions whose next frame time
has come (CFR: frame n of a session is due at t0 + n/fps), renders them in one
`Renderer.render` call and hands each frame to its StreamPipeline without waiting.

Host work per session per tick is vectorized over persistent per-row arrays (rows are
reused, arrays grow by doubling); Python loops run only over sessions with an encoder,
or over the rare sessions that change state this tick.

Sessions of the same frame rate share ticks: a session's frame 0 is due at the next point
of its rate's engine-wide grid (k / fps on the engine clock), not at the moment it opened,
so 30 fps sessions opened at any times render in the same ticks (and 60 fps ones in every
other of them). On a GPU that keeps launches per second independent of the session count
and batches as large as it allows; ticks start on time instead of queueing behind other
sessions' phases (bench/results_server.md: the same CPU use, engine lag 0 ms).

A late tick does not shift the timeline. A frame up to `max_lateness` seconds past its due
time is still rendered (the loop then runs back to back until it has caught up): a live
stream's timestamps are CFR by frame index and its viewers sit seconds behind, so a
short stall on a busy host costs a little latency instead of a visible repeat (GStreamer's
`max-lateness` of a sink, the same idea). Frames later than that are counted as dropped
and the session's previous frame is submitted again under their indices (a few at most;
the pipeline's queue drops the rest) before the new one, so the output stays CFR.

Live input (server/drivers/): every session has a PoseBank slot (and the IdleBank slot of
the same number) that drivers write from their own threads. A tick that renders anything
steps every slot's smoothing and idle life in a few numpy calls, then, per session with
pushed audio, analyses the audio that goes out with this frame (lip-sync, unless a face
capture is driving) and pushes it to the stream in place of silence. With
`operator_required`, the session's PresenceMonitor decides `standby`: the engine swaps in
the standby scene (avatar hidden, a line of text, the AI label kept), renders it once and
holds it; input coming back restores the session's own scene. Both scenes stay loaded in
the renderer, so a switch moves no pixels.

Scenes are compiled (images and videos decoded) on the caller's thread, then copied into
the renderer's buffers by the loop in pieces of FILL_CHUNK bytes in the time between
ticks, and so is a new session's avatar: a session opening with, or changing to, a long
video background (hundreds of MB) or a heavily textured model does not stall the others.
Its Future resolves once the scene is shown.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from avatarfarm.render.asset import AvatarAsset
from avatarfarm.render.camera import Placement
from avatarfarm.render.layers import load_font
from avatarfarm.render.resident import LoadedScene
from avatarfarm.render.scene import CompiledScene, Overlay, Scene
from avatarfarm.render.vocabulary import VOCABULARY

from .drivers.audio import RATE as AUDIO_RATE
from .drivers.idle import IdleBank
from .drivers.pose import FilterConfig, PoseBank, PoseError
from .sessions import DriverCounters, PoseWriter, Session, SessionError, SessionState
from .stream.urls import mask_text

log = logging.getLogger(__name__)

K = len(VOCABULARY)
MAX_REPEATS = 2  # repeated frames submitted per late tick; more would only fill the queue
MAX_LATENESS_S = 0.1  # a frame later than this past its due time is dropped
DUE_SLACK_S = 0.0005  # due this soon is due now (30 and 60 fps grid points differ by rounding)
POSE_SLOTS = 256  # concurrent sessions with a pose slot (PoseBank capacity)
INPUT_ACTIVE_S = 0.5  # an input this recent fades idle life out and lip-sync off
FACE_SOURCES = frozenset({"websocket", "vmc", "livelink"})  # capture that owns the mouth
HIDDEN = Placement(-1.0, -1.0, 0.01)  # the standby scene puts the avatar out of frame
MAX_COMMANDS_PER_TICK = 64
TICK_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075,
    *(round(0.01 + 0.0025 * i, 4) for i in range(21)),  # 2.5 ms steps over a busy tick's 10-60 ms
    0.075, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
SUPERVISE_S = 1.0
BEHIND_S = 0.005  # a tick that starts this late had no idle gap before it
FILL_CHUNK = 4 << 20  # bytes of scene pixels copied at a time between ticks (~1 ms)


class _Scenes(NamedTuple):
    """A session's scene, compiled off the engine thread: live, and standby if required."""

    scene: Scene
    live: CompiledScene
    standby_scene: Scene | None
    standby: CompiledScene | None


class _Resident(NamedTuple):
    """A session's scenes loaded in the renderer: live, and standby if it needs one."""

    live: LoadedScene
    standby: LoadedScene | None


@dataclass
class _Load:
    """Scenes (and a new session's avatar) being copied into the renderer between ticks,
    and what to run on the engine thread once they are (open the session, or swap its
    scene in); `abandon` instead if the engine stops first."""

    resident: _Resident
    avatar: int | None  # its pool index, held until `ready` or `abandon` has run
    ready: Callable[[], Any]
    abandon: Callable[[], None]
    future: Future

    def fill(self, renderer: Any, max_bytes: int) -> bool:
        """Copy the next piece (avatar first, then scenes); True once everything is in."""
        if self.avatar is not None and not renderer.fill_avatar(self.avatar, max_bytes):
            return False
        return all(renderer.fill(s, max_bytes) for s in self.resident if s)


class EngineBusy(Exception):
    """The engine cannot take this request now (queue full, draining or stopped)."""


class Engine:
    """Owns one Renderer; `start()` runs the loop thread, `stop()`/`drain()` end it."""

    def __init__(
        self,
        renderer: Any,
        *,
        queue_size: int = 256,
        clock: Callable[[], float] = time.monotonic,
        on_tick: Callable[[float, float, int], None] | None = None,
        name: str = "engine",
        pose_slots: int = POSE_SLOTS,
        max_lateness: float = MAX_LATENESS_S,
    ) -> None:
        self.renderer = renderer
        self.max_lateness = max_lateness
        self.name = name
        self.clock = clock
        self.on_tick = on_tick  # (render seconds, megapixels rendered, frames) -> cost model
        self.accepting = True
        self.last_tick = 0.0  # clock() of the last completed loop pass, for /readyz
        self.ticks = 0
        self.tick_errors = 0
        self.tick_buckets = np.zeros(len(TICK_BUCKETS) + 1, np.int64)
        self.tick_seconds = 0.0
        self.lag_seconds = 0.0  # how far behind its due time the last tick's oldest frame was
        self.render_seconds = 0.0  # time inside Renderer.render; the rest is bookkeeping
        self.totals = {"frames_rendered": 0, "frames_dropped": 0}  # of sessions that ended
        self._commands: queue.Queue[tuple[Callable[[], Any], Future]] = queue.Queue(queue_size)
        self.bank = PoseBank(pose_slots, clock=lambda: self.clock())
        self.idle = IdleBank(pose_slots)
        self.driver_counters = DriverCounters()
        self._expr = np.zeros((pose_slots, K), np.float32)  # smoothed pose + idle, per slot
        self._head = np.zeros((pose_slots, 3), np.float32)
        self._eyes = np.zeros((pose_slots, 4), np.float32)
        self._active = np.zeros(pose_slots, bool)
        self._pose_t: float | None = None
        self._scenes: dict[int, _Resident] = {}  # row -> its loaded live and standby scenes
        self._loads: deque[_Load] = deque()  # scenes being copied in, oldest first
        self._operator_rows: set[int] = set()  # rows with operator_required
        self._hold: set[int] = set()  # standby rows: render the standby frame once, then hold
        self._closer = ThreadPoolExecutor(4, thread_name_prefix=f"{name}-close")
        self._thread: threading.Thread | None = None
        self._running = threading.Event()
        self._next_supervise = 0.0
        self._rows = _Rows()
        self._sessions: list[Session | None] = []
        self._starting: set[int] = set()
        self._ticking = False
        self._tick_lock = threading.Lock()  # guards _ticking and _after_tick
        self._after_tick: list[Callable[[], None]] = []
        self._failed_rows: set[int] = set()  # failed during the running tick: freed after it

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._running.set()
        self.last_tick = self.clock()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """End the loop; sessions still active are closed without waiting for drain."""
        self.accepting = False
        if self._thread is not None:
            self._running.clear()
            self._thread.join(timeout)
            self._thread = None
        for row, session in enumerate(self._sessions):
            if session is not None:
                if session.active:
                    session.transition(SessionState.STOPPING)
                self._release(row, timeout)
        self._fail_pending_commands()
        self._abandon_loads()
        self._closer.shutdown(wait=True)

    def drain(self, timeout: float) -> bool:
        """Stop accepting, end every session cleanly (outputs finalized); True if in time."""
        self.accepting = False
        deadline = time.monotonic() + timeout
        try:
            ended = self.call(self._stop_all, max(0.1, timeout)).result(timeout)
        except Exception:
            return False
        for future in ended:
            try:
                future.result(max(0.0, deadline - time.monotonic()))
            except Exception:
                return False
        return True

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def ticking(self, within: float = 2.0) -> bool:
        return self.alive and self.clock() - self.last_tick < within

    # -- API-facing (any thread) -------------------------------------------------------------
    def after_tick(self, callback: Callable[[], None]) -> bool:
        """Have `callback` run (on the engine thread: it must be quick) when the tick in
        progress ends; False, and it is not kept, when no tick is in progress or the
        engine is behind (the next tick follows at once: there is no gap to wait for)."""
        with self._tick_lock:
            waits = self._ticking and self.lag_seconds <= BEHIND_S
            if waits:
                self._after_tick.append(callback)
            return waits

    def call(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Run `fn(*args)` on the engine thread; raises EngineBusy when the queue is full."""
        future: Future = Future()
        if not self._running.is_set():
            raise EngineBusy("engine is not running")
        try:
            self._commands.put_nowait((lambda: fn(*args), future))
        except queue.Full:
            raise EngineBusy("engine command queue is full") from None
        return future

    def create(self, session: Session, avatar: AvatarAsset, pipeline: Any) -> Future:
        """Open a session. Its scenes are compiled here, on the caller's thread (image and
        video decoding must never run on the engine thread); may raise SessionError."""
        if not self.accepting:
            raise EngineBusy("server is draining")
        scenes = self._compile(session, session.spec.scene)
        return _chained(self.call(self._open, session, avatar, pipeline, scenes))

    def set_scene(self, session: Session, scene: Scene) -> Future:
        """Replace a session's scene; compiled on the caller's thread, swapped in by the
        engine once loaded; the Future resolves then."""
        scenes = self._compile(session, scene)
        return _chained(self.call(self._set_scene, session, scenes))

    def _compile(self, session: Session, scene: Scene) -> _Scenes:
        """The live scene and, for sessions that need an operator, the standby scene."""
        video, driver = session.spec.video, session.spec.driver
        standby_spec = standby = None
        try:
            live = self.renderer.compile(scene, video.width, video.height, video.fps)
            if driver.operator_required:
                standby_spec = standby_scene(
                    scene, driver.standby.background, driver.standby.text, video.width,
                    video.height,
                )  # fmt: skip
                standby = self.renderer.compile(standby_spec, video.width, video.height, video.fps)
        except Exception as exc:
            field = getattr(exc, "field", None)
            raise SessionError(
                f"cannot render this scene: {exc}", field and f"scene.{field}"
            ) from None
        return _Scenes(scene, live, standby_spec, standby)

    def delete(self, session: Session, timeout: float = 5.0) -> Future:
        """Stop a session; the Future resolves (to the session) once outputs are finalized."""
        return _chained(self.call(self._stop, session, timeout))

    def snapshot(self, session: Session) -> Future:
        """A copy of the session's last NV12 frame (None before its first frame)."""
        return self.call(self._snapshot, session)

    def set_pose(
        self,
        session: Session,
        expressions: np.ndarray | None,
        head: np.ndarray | None,
        eyes: np.ndarray | None,
        address: str = "",
    ) -> None:
        """Write an API pose into the session's pose slot (latest wins, smoothed, any thread)."""
        pose = session.drivers.pose
        if pose is None or not pose.open:
            raise SessionError(f"session is {session.state}", "session_id", code="conflict")
        pose.update(expressions=expressions, head=head, eyes=eyes, source="api")
        self.driver_counters.add("api", "packets")
        session.drivers.presence.record("api", address)

    def attach_audio(self, session: Session) -> Future:
        """Start taking the session's pushed audio (session.drivers.audio) every frame."""
        return self.call(self._attach_audio, session)

    def frame_counters(self, session: Session) -> dict[str, int]:
        row = session.row
        if row is None:
            return dict(session.final_counters)
        r = self._rows
        return {"frames_rendered": int(r.rendered[row]), "frames_dropped": int(r.dropped[row])}

    def all_counters(self) -> dict[str, int]:
        r, n = self._rows, self._rows.used
        return {
            "frames_rendered": self.totals["frames_rendered"] + int(r.rendered[:n].sum()),
            "frames_dropped": self.totals["frames_dropped"] + int(r.dropped[:n].sum()),
        }

    def active_sessions(self) -> list[Session]:
        return [s for s in list(self._sessions) if s is not None]

    # -- the loop ----------------------------------------------------------------------------
    def _loop(self) -> None:
        while self._running.is_set():
            self._run_commands()
            now = self.clock()
            try:
                self.tick(now)
            except Exception:  # a bug must not stop every stream; it is logged and counted
                self.tick_errors += 1
                log.exception("engine tick failed")
                self._wait_command(0.01)  # no hot loop if it keeps failing
            self.last_tick = now
            if now >= self._next_supervise:
                self._next_supervise = now + SUPERVISE_S
                self._supervise()
            if self._loads:  # scene copies use the time until the next tick
                self._fill_scenes(self.clock() + self._rows.next_due_in(self.clock()))
            wait = self._rows.next_due_in(self.clock())
            if wait > DUE_SLACK_S:
                self._wait_command(min(wait, 0.1))

    def _wait_command(self, timeout: float) -> None:
        try:
            fn, future = self._commands.get(timeout=timeout)
        except queue.Empty:
            return
        self._execute(fn, future)

    def _run_commands(self) -> None:
        for _ in range(MAX_COMMANDS_PER_TICK):
            try:
                fn, future = self._commands.get_nowait()
            except queue.Empty:
                return
            self._execute(fn, future)

    def run_pending(self) -> None:
        """Run queued commands and finish loading scenes now, on the caller's thread (tests
        and benches without start)."""
        self._run_commands()
        self._fill_scenes(None)

    def _fill_scenes(self, until: float | None) -> None:
        """Copy queued scenes in FILL_CHUNK pieces until `until` (at least one piece, so
        a busy engine still makes progress); run what waits for each once it is loaded."""
        while self._loads:
            load = self._loads[0]
            while not load.fill(self.renderer, FILL_CHUNK):
                if until is not None and self.clock() >= until:
                    return
            self._loads.popleft()
            self._execute(load.ready, load.future)
            if until is not None and self.clock() >= until:
                return

    def _load(
        self, session: Session, scenes: _Scenes, ready: Callable[[_Resident], Any],
        abandon: Callable[[], None] = lambda: None, avatar: AvatarAsset | None = None,
    ) -> Future:  # fmt: skip
        """Reserve the renderer's space for `scenes` (and `avatar`, for a new session) and
        queue their copy; `ready(resident)` runs on the engine thread once they are in."""
        video = session.spec.video
        size = (video.width, video.height, video.fps)
        live = self.renderer.load(scenes.scene, *size, scenes.live, fill=False)
        resident = _Resident(live, None)
        try:
            if scenes.standby is not None:
                standby = self.renderer.load(
                    scenes.standby_scene, *size, scenes.standby, fill=False
                )
                resident = _Resident(live, standby)
            index = None if avatar is None else self.renderer.load_avatar(avatar, fill=False)
        except Exception:
            self._unload(resident)
            raise

        def release() -> None:
            if index is not None:
                self.renderer.release_avatar(index)

        def done() -> Any:
            try:
                return ready(resident)
            finally:
                release()

        def abandoned() -> None:
            release()
            abandon()

        future: Future = Future()
        self._loads.append(_Load(resident, index, done, abandoned, future))
        return future

    def _unload(self, resident: _Resident) -> None:
        for loaded in resident:
            self.renderer.unload(loaded)

    def _abandon_loads(self) -> None:
        while self._loads:
            load = self._loads.popleft()
            self._unload(load.resident)
            load.abandon()
            if load.future.set_running_or_notify_cancel():
                load.future.set_exception(EngineBusy("engine stopped"))

    @staticmethod
    def _execute(fn: Callable[[], Any], future: Future) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn())
        except BaseException as exc:  # the caller gets it; the loop goes on
            future.set_exception(exc)

    def tick(self, now: float) -> None:
        """Render and submit every session due at `now`.

        A session that fails mid-tick keeps its row until the tick ends: the tick's arrays
        still index it, and its counters must be final before the row is freed.
        """
        with self._tick_lock:
            self._ticking = True
        try:
            self._tick(now)
        finally:
            with self._tick_lock:
                self._ticking = False
                waiting, self._after_tick = self._after_tick, []
            for callback in waiting:
                callback()
            while self._failed_rows:
                self._release(self._failed_rows.pop(), 2.0)

    def _tick(self, now: float) -> None:
        r = self._rows
        n = r.used
        if n == 0:
            return
        start = time.perf_counter()
        if self._operator_rows:
            self._presence()
        due = np.flatnonzero(r.next_due[:n] <= now + DUE_SLACK_S)
        if due.size == 0:
            return
        fps = r.fps[due]
        self.lag_seconds = max(0.0, float(now - r.next_due[due].min()))
        # the frame each due session renders now: its next one, unless that is more than
        # max_lateness late; then the oldest one that is not, the ones before it dropped
        newest = np.floor((now + DUE_SLACK_S - r.t0[due]) * fps)
        oldest = np.ceil((now - self.max_lateness - r.t0[due]) * fps - 1e-6)
        latest = np.maximum(np.minimum(oldest, newest).astype(np.int64), r.next_index[due])
        missed = latest - r.next_index[due]
        r.dropped[due] += missed
        has_pipe = r.piped[due]
        piped, piped_latest = due[has_pipe], latest[has_pipe]
        if piped.size:  # previous frames under the missed indices, before render overwrites them
            self._repeat(piped, piped_latest, missed[has_pipe])
        live = due[r.render[due]]
        pose = self._pose(live, now) if live.size else None
        if r.audio[due].any():
            self._audio(due, missed + 1, live, pose)
        rendered, render_time = 0, 0.0
        if pose is not None:
            rendered, render_time = self._render(live, *pose)
            if self._hold:
                self._hold_standby(live)
        if piped.size:
            self._submit(piped, piped_latest)
        r.next_index[due] = latest + 1
        r.next_due[due] = r.t0[due] + (latest + 1) / fps
        if self._starting:
            self._mark_live()
        elapsed = time.perf_counter() - start
        self.ticks += 1
        self.tick_seconds += elapsed
        self.render_seconds += render_time
        self.tick_buckets[np.searchsorted(TICK_BUCKETS, elapsed)] += 1
        if self.on_tick is not None and rendered:
            self.on_tick(render_time, float(r.pixels[live].sum()) / 1e6, rendered)

    def _pose(self, rows: np.ndarray, now: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Step smoothing and idle life of every slot to `now`; the pose rows of `rows`."""
        dt = 0.0 if self._pose_t is None else max(0.0, now - self._pose_t)
        self._pose_t = now
        self.bank.advance(dt, self._expr, self._head, self._eyes)
        np.copyto(self._active, self.bank.active(now, INPUT_ACTIVE_S))
        self.idle.advance(now, self._active, self._expr, self._head, self._eyes)
        return self._rows.gather(rows, self._expr, self._head, self._eyes)

    def _audio(self, due: np.ndarray, frames: np.ndarray, live: np.ndarray, pose) -> None:
        """Per due session with audio: lip-sync its rendered row, push its PCM to the stream.

        The samples analysed are exactly those pushed with this frame (plus the frames a
        late tick repeats), so the mouth is never behind the audio it shows.
        """
        r = self._rows
        with_audio = r.audio[due]
        position = {int(row): i for i, row in enumerate(live.tolist())}
        for row, count in zip(due[with_audio].tolist(), frames[with_audio].tolist(), strict=True):
            session = self._sessions[row]
            audio = session.drivers.audio if session is not None else None
            if audio is None:
                continue
            n = int(AUDIO_RATE // r.fps[row]) * count
            i = position.get(row)
            slot = int(r.pose_slot[row])
            face = self._active[slot] and self.bank.sources[slot] in FACE_SOURCES
            if i is not None and not face:
                audio.analyze(n, pose[0][i])
            pcm = audio.read(n)
            if session.pipeline is not None:
                try:
                    session.pipeline.push_audio(pcm.tobytes(), AUDIO_RATE, 2)
                except Exception as exc:
                    self._fail_row(row, f"audio: {mask_text(str(exc))}", "audio")

    def _render(self, rows: np.ndarray, expr, head, eyes) -> tuple[int, float]:
        """Render `rows`; returns frames made and the seconds spent inside the Renderer."""
        r = self._rows
        start = time.perf_counter()
        try:
            self.renderer.render(r.slot[rows], expr, head, eyes)
        except Exception:
            log.exception("batched render failed; isolating the failing session")
            return self._render_each(rows, expr, head, eyes), time.perf_counter() - start
        r.rendered[rows] += 1
        return rows.size, time.perf_counter() - start

    def _render_each(self, rows: np.ndarray, expr, head, eyes) -> int:
        """After a failed batch: render each alone, fail only the sessions that raise."""
        ok = 0
        for i, row in enumerate(rows.tolist()):
            try:
                self.renderer.render(
                    self._rows.slot[row : row + 1], expr[i : i + 1], head[i : i + 1],
                    eyes[i : i + 1],
                )  # fmt: skip
            except Exception as exc:
                self._fail_row(row, f"render failed: {type(exc).__name__}: {exc}", "avatar")
                continue
            self._rows.rendered[row] += 1
            ok += 1
        return ok

    def _repeat(self, rows: np.ndarray, latest: np.ndarray, missed: np.ndarray) -> None:
        for row, last, count in zip(rows.tolist(), latest.tolist(), missed.tolist(), strict=True):
            if count == 0 or self._rows.rendered[row] == 0:
                continue
            session = self._sessions[row]
            frame = self.renderer.frame(self._rows.slot[row])
            try:
                for index in range(last - min(count, MAX_REPEATS), last):
                    session.pipeline.submit(frame, index)  # already counted as dropped above
            except Exception as exc:
                self._fail_row(row, f"encoder: {mask_text(str(exc))}", "video")

    def _submit(self, rows: np.ndarray, latest: np.ndarray) -> None:
        r = self._rows
        for row, index in zip(rows.tolist(), latest.tolist(), strict=True):
            if r.rendered[row] == 0:
                continue
            session = self._sessions[row]
            try:
                if not session.pipeline.submit(self.renderer.frame(int(r.slot[row])), index):
                    r.dropped[row] += 1
            except Exception as exc:
                self._fail_row(row, f"encoder: {mask_text(str(exc))}", "video")

    def _presence(self) -> None:
        """Operator-presence policy of the sessions that need an operator: standby or live."""
        for row in list(self._operator_rows):
            session = self._sessions[row]
            if session is None:
                continue
            standby = session.drivers.presence.poll() == "standby"
            scenes = self._scenes[row]
            if standby and session.state is SessionState.LIVE and scenes.standby is not None:
                session.transition(SessionState.STANDBY)
                self.renderer.show(session.slot, scenes.standby)
                self._hold.add(row)
            elif not standby and session.state is SessionState.STANDBY:
                session.transition(SessionState.LIVE)
                self._hold.discard(row)
                self._rows.render[row] = True
                self.renderer.show(session.slot, scenes.live)

    def _hold_standby(self, rendered: np.ndarray) -> None:
        """Standby frames are still images: once one is rendered, it is held (CFR repeat)."""
        done = set(rendered.tolist())
        for row in [row for row in self._hold if row in done]:
            self._rows.render[row] = False
            self._hold.discard(row)

    def _mark_live(self) -> None:
        for row in list(self._starting):
            session = self._sessions[row]
            if session is None or not session.active:
                self._starting.discard(row)
            elif self._rows.rendered[row] > 0:
                self._starting.discard(row)
                session.transition(SessionState.LIVE)

    def _supervise(self) -> None:
        """Once a second: driver history upkeep and encoder/output health."""
        for row, session in enumerate(self._sessions):
            if session is None:
                continue
            try:
                if row not in self._operator_rows:
                    session.drivers.presence.poll()  # closes UDP sources gone silent
                if session.pipeline is not None:
                    self._check_stream(row, session)
            except Exception:  # a bug in one session's upkeep must not stop every stream
                self.tick_errors += 1
                log.exception("supervising session %s failed", session.id)

    def _check_stream(self, row: int, session: Session) -> None:
        stats = session.pipeline.stats()
        errors = stats.get("encode_errors", 0)
        if errors - self._rows.encode_errors[row] >= session.spec.video.fps:
            self._fail_row(row, "encoder keeps failing", "video")
            return
        self._rows.encode_errors[row] = errors
        outputs = stats.get("outputs", {})
        if outputs and all(o.get("state") == "failed" for o in outputs.values()):
            last = next(iter(outputs.values())).get("last_error") or "output failed"
            self._fail_row(row, f"all outputs failed: {last}", "outputs")

    # -- commands (engine thread) ----------------------------------------------------------
    def _open(
        self, session: Session, avatar: AvatarAsset, pipeline: Any, scenes: _Scenes
    ) -> Future:
        """Load the session's scenes; it opens (`_opened`) once they are in."""
        self._refuse_if_gone(session, pipeline)
        try:
            return self._load(
                session, scenes, lambda resident: self._opened(session, avatar, pipeline, resident),
                lambda: self._close_unopened(pipeline), avatar,
            )  # fmt: skip
        except Exception as exc:
            self._close_unopened(pipeline)
            raise self._cannot_render(session, exc) from None

    def _opened(
        self, session: Session, avatar: AvatarAsset, pipeline: Any, resident: _Resident
    ) -> Session:
        video, driver = session.spec.video, session.spec.driver
        try:
            self._refuse_if_gone(session, pipeline)
            pose = self.bank.allocate(FilterConfig(driver.smoothing))  # type: ignore[arg-type]
        except PoseError as exc:
            self._unload(resident)
            self._close_unopened(pipeline)
            raise EngineBusy(str(exc)) from None
        except Exception:
            self._unload(resident)
            raise
        try:
            slot = self.renderer.open(
                avatar, video.width, video.height, fps=video.fps, loaded=resident.live
            )
        except Exception as exc:
            self.bank.release(pose.slot)
            self._unload(resident)
            self._close_unopened(pipeline)
            raise self._cannot_render(session, exc) from None
        now = self.clock()
        row = self._rows.take(now, video.fps, int(slot), video.width * video.height)
        self._rows.pose_slot[row] = pose.slot
        self._rows.render[row] = True
        seed = int.from_bytes(session.id.encode()[-8:], "little")
        self.idle.reset(pose.slot, seed, now, enabled=driver.idle)
        while len(self._sessions) < self._rows.capacity:
            self._sessions.append(None)
        self._rows.piped[row] = pipeline is not None
        self._sessions[row] = session
        self._scenes[row] = resident
        if driver.operator_required:
            self._operator_rows.add(row)
        session.drivers.counters = self.driver_counters
        session.drivers.pose = PoseWriter(self.bank, pose.slot)
        session.row, session.slot, session.pipeline = row, int(slot), pipeline
        self._starting.add(row)
        return session

    def _refuse_if_gone(self, session: Session, pipeline: Any) -> None:
        """Deleted, or a drain began, while it was being set up: it must not open."""
        if session.state is not SessionState.STARTING or not self.accepting:
            self._close_unopened(pipeline)
            if not self.accepting:
                raise EngineBusy("server is draining")
            raise SessionError(f"session is {session.state}", "id", code="conflict")

    def _close_unopened(self, pipeline: Any) -> None:
        if pipeline is not None:
            self._closer.submit(pipeline.close, 1.0)

    @staticmethod
    def _cannot_render(session: Session, exc: Exception) -> SessionError:
        field = getattr(exc, "field", None)
        session.fail(f"cannot render this session: {exc}", field and f"scene.{field}")
        return SessionError(str(exc), field and f"scene.{field}")

    def _attach_audio(self, session: Session) -> None:
        if session.row is None or session.drivers.audio is None:
            raise SessionError(f"session is {session.state}", "session_id", code="conflict")
        self._rows.audio[session.row] = True

    def _set_scene(self, session: Session, scenes: _Scenes) -> Future:
        self._check_open(session)
        return self._load(session, scenes, lambda resident: self._scene_loaded(session, resident))

    def _scene_loaded(self, session: Session, resident: _Resident) -> None:
        try:
            self._check_open(session)  # it may have ended while its new scene was copied
        except SessionError:
            self._unload(resident)
            raise
        row = session.row
        in_standby = session.state is SessionState.STANDBY and resident.standby is not None
        self.renderer.show(session.slot, resident.standby if in_standby else resident.live)
        self._unload(self._scenes[row])
        self._scenes[row] = resident
        if in_standby:  # render the new standby frame once, then hold it again
            self._rows.render[row] = True
            self._hold.add(row)

    @staticmethod
    def _check_open(session: Session) -> None:
        if session.slot is None or session.row is None or not session.active:
            raise SessionError(f"session is {session.state}", code="conflict")

    def _snapshot(self, session: Session) -> tuple[np.ndarray, int, int] | None:
        row = session.row
        if row is None or session.slot is None or self._rows.rendered[row] == 0:
            return None
        video = session.spec.video
        return self.renderer.frame(session.slot).copy(), video.width, video.height

    def _stop(self, session: Session, timeout: float) -> Future:
        if session.row is None:
            if session.state is SessionState.STARTING:  # not opened yet: _open will refuse it
                session.transition(SessionState.STOPPING)
                session.transition(SessionState.ENDED)
            done: Future = Future()
            done.set_result(session)
            return done
        session.transition(SessionState.STOPPING)
        return self._release(session.row, timeout)

    def _stop_all(self, timeout: float) -> list[Future]:
        return [self._stop(s, timeout) for s in self._sessions if s is not None]

    def _fail_row(self, row: int, message: str, field: str | None) -> None:
        session = self._sessions[row]
        if session is None or row in self._failed_rows:
            return
        log.warning("session %s failed: %s", session.id, message)
        session.fail(message, field)
        if self._ticking:
            self._failed_rows.add(row)
        else:
            self._release(row, 2.0)

    def _release(self, row: int, timeout: float) -> Future:
        """Free the session's row and render slot; finalize its pipeline off this thread."""
        session = self._sessions[row]
        assert session is not None
        r = self._rows
        session.final_counters = {
            "frames_rendered": int(r.rendered[row]),
            "frames_dropped": int(r.dropped[row]),
        }
        self.totals["frames_rendered"] += int(r.rendered[row])
        self.totals["frames_dropped"] += int(r.dropped[row])
        try:
            self.renderer.close(session.slot)
            self._unload(self._scenes.pop(row))
        except Exception:
            log.exception("session %s: closing its render slot failed", session.id)
        pose = session.drivers.pose
        if pose is not None:
            pose.close()  # no driver thread can write to the slot after this
            self.bank.release(pose.slot)
            self.idle.reset(pose.slot, 0, self.clock(), enabled=False)
        r.free(row)
        self._sessions[row] = None
        self._starting.discard(row)
        for rows in (self._operator_rows, self._hold):
            rows.discard(row)
        self._scenes.pop(row, None)  # if close failed
        session.row = session.slot = None
        return self._closer.submit(_finish, session, time.monotonic() + timeout)

    def _fail_pending_commands(self) -> None:
        while True:
            try:
                _, future = self._commands.get_nowait()
            except queue.Empty:
                return
            if future.set_running_or_notify_cancel():
                future.set_exception(EngineBusy("engine stopped"))


def _finish(session: Session, deadline: float) -> Session:
    """Closer thread: stop driver ports, flush the encoder and finalize outputs.

    The deadline is fixed when the session is stopped: in a drain, sessions waiting for a
    closer thread get what is left of the drain's time, not a fresh timeout each.
    """
    try:
        session.drivers.close()
    except Exception:
        log.exception("session %s: stopping its drivers failed", session.id)
    if session.pipeline is not None:
        try:
            session.pipeline.close(max(0.1, deadline - time.monotonic()))
        except Exception as exc:
            session.fail(f"closing outputs failed: {mask_text(str(exc))}", "outputs")
    if session.state is SessionState.STOPPING:
        session.transition(SessionState.ENDED)
    return session


def standby_scene(live: Scene, background: str, text: str, width: int, height: int) -> Scene:
    """`live` with the avatar out of frame, `background`, and `text` centred (label kept)."""
    size = 0.07
    font = load_font(None, max(8, round(size * height)))
    left, top, right, bottom = font.getbbox(text)
    pad = 0.8 * size * height  # text_overlay pads 0.4 x the font size on each side
    text_w = (right - left + pad) / width
    if text_w > 0.9:  # shrink to fit 90 % of the width
        size, text_w = size * 0.9 / text_w, 0.9
    text_h = (bottom - top) / height + 0.8 * size
    overlay = Overlay(text=text, x=(1 - text_w) / 2, y=(1 - text_h) / 2, font_size=size, z=1)
    return Scene(
        background=background, framing=live.framing, placement=HIDDEN,
        overlays=(overlay,), label=live.label,
    )  # fmt: skip


def _chained(queued: Future) -> Future:
    """A Future for the result of the Future that the engine command `queued` returns."""
    done: Future = Future()
    queued.add_done_callback(lambda f: _chain(f, done))
    return done


def _chain(outer: Future, done: Future) -> None:
    """Resolve `done` with the result of the Future that `outer` resolved to."""
    if outer.exception() is not None:
        done.set_exception(outer.exception())
        return

    def finished(inner: Future) -> None:
        error = inner.exception()
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(inner.result())

    outer.result().add_done_callback(finished)


def _fit(array: np.ndarray, size: int) -> np.ndarray:
    if array.shape[0] >= size:
        return array
    bigger = np.zeros((size, *array.shape[1:]), array.dtype)
    bigger[: array.shape[0]] = array
    return bigger


class _Rows:
    """Per-session rows of clock, pose and counters; free rows have next_due = inf."""

    FIELDS = {
        "t0": np.float64, "fps": np.float64, "next_index": np.int64, "next_due": np.float64,
        "slot": np.int64, "pixels": np.int64, "rendered": np.int64, "dropped": np.int64,
        "encode_errors": np.int64, "render": bool, "piped": bool, "audio": bool,
        "pose_slot": np.int64,
    }  # fmt: skip

    def __init__(self) -> None:
        self.capacity = 0
        self.used = 0  # high-water mark: rows >= used were never taken
        self._free: list[int] = []
        for name, dtype in self.FIELDS.items():
            setattr(self, name, np.zeros(0, dtype))
        self._g_expr = np.zeros((0, K), np.float32)
        self._g_head = np.zeros((0, 3), np.float32)
        self._g_eyes = np.zeros((0, 4), np.float32)

    def take(self, now: float, fps: int, slot: int, pixels: int) -> int:
        if self._free:
            row = self._free.pop()
        else:
            row = self.used
            self.used += 1
            if row >= self.capacity:
                self._grow(max(16, 2 * self.capacity))
        t0 = math.ceil(now * fps - 1e-6) / fps  # the next point of this rate's grid
        self.t0[row], self.fps[row], self.next_index[row], self.next_due[row] = t0, fps, 0, t0
        self.slot[row], self.pixels[row] = slot, pixels
        self.rendered[row] = self.dropped[row] = self.encode_errors[row] = 0
        return row

    def free(self, row: int) -> None:
        """The row's counters are zeroed: the engine's totals already hold them."""
        self.next_due[row] = np.inf
        self.rendered[row] = self.dropped[row] = self.encode_errors[row] = 0
        self.render[row] = self.audio[row] = self.piped[row] = False
        self._free.append(row)

    def next_due_in(self, now: float) -> float:
        if self.used == 0:
            return 0.1
        return float(self.next_due[: self.used].min()) - now

    def gather(
        self, rows: np.ndarray, expr_src: np.ndarray, head_src: np.ndarray, eyes_src: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The pose-slot rows of `rows` copied into reused buffers (no allocation per tick)."""
        m = rows.size
        if m > self._g_expr.shape[0]:
            size = max(m, 2 * self._g_expr.shape[0])
            self._g_expr = np.zeros((size, K), np.float32)
            self._g_head = np.zeros((size, 3), np.float32)
            self._g_eyes = np.zeros((size, 4), np.float32)
        expr, head, eyes = self._g_expr[:m], self._g_head[:m], self._g_eyes[:m]
        slots = self.pose_slot[rows]
        np.take(expr_src, slots, axis=0, out=expr)
        np.take(head_src, slots, axis=0, out=head)
        np.take(eyes_src, slots, axis=0, out=eyes)
        return expr, head, eyes

    def _grow(self, size: int) -> None:
        for name in self.FIELDS:
            setattr(self, name, _fit(getattr(self, name), size))
        self.next_due[self.capacity :] = np.inf
        self.capacity = size
