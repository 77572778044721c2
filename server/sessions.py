"""A session's lifecycle and the table of sessions the API and the engine share.

The engine thread is the only writer of a session's state; HTTP handlers read it. States:

    starting -> live <-> standby -> stopping -> ended
        any state but ended -> failed (with the error that caused it)

`standby`: the session's policy needs a live operator and none is driving it, so the
last frame is held (still CFR) until a pose arrives again.
"""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from avatarfarm.render.scene import Scene

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


@dataclass(frozen=True)
class DriverSpec:
    idle: bool = True  # built-in idle animation while no pose arrives
    operator_required: bool = False  # hold the frame (standby) while nobody drives it


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
                earlier = self._sessions.get(self._idempotency[(session.tenant, key)][1])
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
