"""A session's lifecycle and the table of sessions the API and the engine share.

The engine thread is the only writer of a session's state; HTTP handlers read it. States:

    starting -> live <-> standby -> stopping -> ended
        any state but ended -> failed (with the error that caused it)

`standby`: the session's policy needs a live operator and none has driven it for
`driver.timeout_s`, so it shows its standby scene (still CFR) until input returns.

Each session also owns its live inputs (`SessionDrivers`): the pose slot the engine gives
it, the presence policy and driver history, pushed audio and its UDP driver ports.
"""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from avatarfarm.render.scene import Scene

from .drivers.audio import AudioDriver
from .drivers.pose import PoseBank, PoseState
from .drivers.presence import PresenceMonitor
from .drivers.udp import UdpReceiver
from .stream.urls import mask_url

KEEP_FINISHED = 200  # ended/failed sessions kept per tenant so clients can read the outcome


class SessionState(StrEnum):
    STARTING = "starting"
    LIVE = "live"
    STANDBY = "standby"
    STOPPING = "stopping"
    ENDED = "ended"
    FAILED = "failed"


TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    SessionState.STARTING: frozenset({SessionState.LIVE, SessionState.STOPPING}),
    SessionState.LIVE: frozenset({SessionState.STANDBY, SessionState.STOPPING}),
    SessionState.STANDBY: frozenset({SessionState.LIVE, SessionState.STOPPING}),
    SessionState.STOPPING: frozenset({SessionState.ENDED}),
    SessionState.ENDED: frozenset(),
    SessionState.FAILED: frozenset(),
}
ACTIVE = frozenset({SessionState.STARTING, SessionState.LIVE, SessionState.STANDBY})


class SessionError(Exception):
    """A session request that cannot be honoured; `code` picks the HTTP status."""

    def __init__(self, message: str, field: str | None = None, code: str = "invalid") -> None:
        super().__init__(message)
        self.message, self.field, self.code = message, field, code


@dataclass(frozen=True)
class VideoSpec:
    width: int = 1280
    height: int = 720
    fps: int = 30
    bitrate_kbps: int = 2500
    codec: str = "h264"
    encoder: str = "auto"


STANDBY_TEXT = "The host will be right back"


@dataclass(frozen=True)
class StandbySpec:
    """What a standby session shows instead of the avatar: a colour or image, and a line."""

    background: str = "#14181f"
    text: str = STANDBY_TEXT


@dataclass(frozen=True)
class DriverSpec:
    idle: bool = True  # blinks, breathing and sway while no input drives the avatar
    operator_required: bool = False  # standby scene while nobody drives it
    timeout_s: float = 10.0  # seconds without input before standby
    smoothing: str = "one_euro"  # one_euro | spring | none (server.drivers.pose)
    standby: StandbySpec = field(default_factory=StandbySpec)


@dataclass(frozen=True)
class SessionSpec:
    avatar: str = "default"
    video: VideoSpec = field(default_factory=VideoSpec)
    scene: Scene = field(default_factory=Scene)
    outputs: tuple[str, ...] = ()
    driver: DriverSpec = field(default_factory=DriverSpec)


@dataclass
class OutputRecord:
    """A destination; the raw URL holds a stream key and never leaves the server."""

    id: str
    url: str
    stream_id: int | None = None  # the StreamPipeline's destination id

    @property
    def masked(self) -> str:
        return mask_url(self.url)


class Session:
    """One stream: spec, state, and the engine-side handles (row, render slot, pipeline)."""

    def __init__(self, tenant: str, spec: SessionSpec) -> None:
        self.id = "s_" + secrets.token_hex(8)
        self.tenant = tenant
        self.spec = spec
        self.state = SessionState.STARTING
        self.error: dict[str, Any] | None = None
        self.created_at = time.time()
        self.ended_at: float | None = None
        self.outputs: dict[str, OutputRecord] = {}
        self._output_ids = itertools.count(1)
        self.row: int | None = None  # engine pose/clock row while active
        self.slot: int | None = None  # renderer slot while active
        self.pipeline: Any = None  # StreamPipeline, or None for encoder "none"
        self.final_counters: dict[str, int] = {"frames_rendered": 0, "frames_dropped": 0}
        self.drivers = SessionDrivers(spec.driver)

    def new_output(self, url: str) -> OutputRecord:
        record = OutputRecord(f"o{next(self._output_ids)}", url)
        self.outputs[record.id] = record
        return record

    def transition(self, new: SessionState) -> None:
        if new is not SessionState.FAILED and new not in TRANSITIONS[self.state]:
            raise SessionError(f"session is {self.state}, cannot become {new}", code="conflict")
        if self.state is SessionState.FAILED:
            return
        self.state = new
        if new in (SessionState.ENDED, SessionState.FAILED):
            self.ended_at = time.time()

    def fail(self, message: str, field: str | None = None, code: str = "session_failed") -> None:
        self.error = {"code": code, "message": message, "field": field}
        if self.state is not SessionState.ENDED:
            self.transition(SessionState.FAILED)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE


class PoseWriter(PoseState):
    """A session's pose slot that ignores writes once closed, so a driver thread still
    running after the session ended can never touch a slot given to another session."""

    def __init__(self, bank: PoseBank, slot: int) -> None:
        super().__init__(bank, slot)
        self._lock = threading.Lock()
        self.open = True

    def update(self, **kwargs: Any) -> int:
        with self._lock:
            return super().update(**kwargs) if self.open else 0

    def close(self) -> None:
        with self._lock:
            self.open = False


class DriverCounters:
    """Driver packet counts per (type, what) for /metrics: retired drivers plus live ones."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: Counter[tuple[str, str]] = Counter()
        self._live: set[UdpReceiver] = set()

    def add(self, kind: str, what: str, n: int = 1) -> None:
        with self._lock:
            self._totals[(kind, what)] += n

    def register(self, receiver: UdpReceiver) -> None:
        with self._lock:
            self._live.add(receiver)

    def retire(self, receiver: UdpReceiver) -> None:
        """Fold a stopped receiver's counts into the totals."""
        with self._lock:
            if receiver in self._live:
                self._live.discard(receiver)
                for what, n in receiver.stats().items():
                    self._totals[(receiver.kind, what)] += n

    def snapshot(self) -> dict[tuple[str, str], int]:
        with self._lock:
            out = Counter(self._totals)
            for receiver in self._live:
                for what, n in receiver.stats().items():
                    out[(receiver.kind, what)] += n
        return dict(out)


@dataclass
class DriverPort:
    """A UDP driver opened through the API."""

    id: str
    receiver: UdpReceiver
    sources: set[str] = field(default_factory=set)  # addresses seen, to close them in history
    host: str = ""
    port: int = 0


MAX_PORTS = 4  # UDP driver ports per session
MAX_SOURCES = 64  # sender addresses remembered per port (history closing on DELETE)


class SessionDrivers:
    """A session's live inputs. The engine attaches the pose slot when the session opens."""

    def __init__(self, spec: DriverSpec) -> None:
        self.presence = PresenceMonitor(spec.operator_required, spec.timeout_s)
        self.pose: PoseWriter | None = None
        self.counters = DriverCounters()  # replaced by the engine's shared one on open
        self.audio: AudioDriver | None = None
        self.audio_owner: object | None = None  # the audio WebSocket currently feeding it
        self.ports: dict[str, DriverPort] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.closed = False

    def record(self, sources: set[str], kind: str, address: str) -> None:
        """on_input of a UDP driver: presence and history, remembering the sender."""
        if len(sources) < MAX_SOURCES:
            sources.add(address)
        self.presence.record(kind, address)

    def add_port(self, receiver: UdpReceiver, sources: set[str]) -> DriverPort | None:
        """Register a started receiver; None (caller stops it) when the session has ended."""
        with self._lock:
            if self.closed:
                return None
            port = DriverPort(f"d{next(self._ids)}", receiver, sources, *receiver.address)
            self.ports[port.id] = port
        self.counters.register(receiver)
        return port

    def remove_port(self, port_id: str) -> DriverPort | None:
        with self._lock:
            return self.ports.pop(port_id, None)

    def stop_port(self, port: DriverPort) -> None:
        """Blocking (joins the receive thread): call off the event loop and the engine."""
        port.receiver.stop()
        self.counters.retire(port.receiver)
        for address in port.sources:
            self.presence.disconnect(port.receiver.kind, address)

    def close(self) -> None:
        """The session ended: stop every port (blocking; the engine's closer thread)."""
        with self._lock:
            self.closed = True
            ports, self.ports = list(self.ports.values()), {}
        for port in ports:
            self.stop_port(port)
        self.presence.disconnect("websocket")
        self.presence.disconnect("audio")


class SessionTable:
    """Sessions by id and tenant, idempotency keys, and the per-tenant quota."""

    def __init__(self, tenant_quota: int) -> None:
        self.tenant_quota = tenant_quota
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._idempotency: dict[tuple[str, str], tuple[Any, str]] = {}
        self._lock = threading.Lock()

    def get(self, session_id: str, tenant: str | None) -> Session:
        """The session, if `tenant` owns it (None = admin, sees all); else not_found."""
        session = self._sessions.get(session_id)
        if session is None or (tenant is not None and session.tenant != tenant):
            raise SessionError(f"no session {session_id}", "id", code="not_found")
        return session

    def list(self, tenant: str | None) -> list[Session]:
        with self._lock:
            items = list(self._sessions.values())
        return [s for s in items if tenant is None or s.tenant == tenant]

    def active_count(self, tenant: str | None = None) -> int:
        return sum(1 for s in self.list(tenant) if s.active or s.state is SessionState.STOPPING)

    def idempotent(self, tenant: str, key: str | None, fingerprint: Any) -> Session | None:
        """The session an earlier request with this key made; conflict if the body differs."""
        if key is None:
            return None
        with self._lock:
            found = self._idempotency.get((tenant, key))
        if found is None:
            return None
        if found[0] != fingerprint:
            raise SessionError(
                "Idempotency-Key reused with a different request", "Idempotency-Key", "conflict"
            )
        return self._sessions.get(found[1])

    def add(self, session: Session, key: str | None, fingerprint: Any) -> Session:
        """Register a new session, enforcing the tenant quota; returns the stored one.

        With an Idempotency-Key, a concurrent twin that got here first wins.
        """
        with self._lock:
            if key is not None and (session.tenant, key) in self._idempotency:
                first_print, first_id = self._idempotency[(session.tenant, key)]
                earlier = self._sessions.get(first_id)
                if earlier is not None and first_print != fingerprint:
                    raise SessionError(
                        "Idempotency-Key reused with a different request", "Idempotency-Key",
                        "conflict",
                    )  # fmt: skip
                if earlier is not None:
                    return earlier
            active = sum(1 for s in self._sessions.values() if s.tenant == session.tenant
                         and (s.active or s.state is SessionState.STOPPING))  # fmt: skip
            if active >= self.tenant_quota:
                raise SessionError(
                    f"tenant quota of {self.tenant_quota} sessions reached", code="quota"
                )
            self._sessions[session.id] = session
            if key is not None:
                self._idempotency[(session.tenant, key)] = (fingerprint, session.id)
            self._prune(session.tenant)
        return session

    def discard(self, session: Session) -> None:
        """Forget a session that never started (admission refused it after add)."""
        with self._lock:
            self._sessions.pop(session.id, None)
            for k, (_, sid) in list(self._idempotency.items()):
                if sid == session.id:
                    del self._idempotency[k]

    def _prune(self, tenant: str) -> None:
        finished = [s for s in self._sessions.values() if s.tenant == tenant and
                    s.state in (SessionState.ENDED, SessionState.FAILED)]  # fmt: skip
        for s in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self._sessions[s.id]
            for k, (_, sid) in list(self._idempotency.items()):
                if sid == s.id:
                    del self._idempotency[k]
