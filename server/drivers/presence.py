"""Operator-presence policy and driver history of one session.

Some platforms require a virtual host to be driven by a real person in real time. With
`operator_required`, a session whose face-capture/drive inputs have been silent for
`timeout` seconds is `standby` (the engine shows the standby scene) and becomes `active`
again with the next input. Without it the session is always `active`.

History records which input drove the session, from which address, and when it connected
and disconnected, for `GET /v1/sessions/{id}/drivers` (audit). A WebSocket has a real
connection (`connect`/`disconnect`); a UDP source "connects" with its first packet and
"disconnects" after `timeout` seconds of silence or when its port is closed. The history is
bounded (`history_limit`, oldest closed entries dropped first).

Drivers call `record` from their threads; the engine calls `poll` once per tick. Times come
from the injected `clock` (wall time by default) so tests can simulate them.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

State = Literal["active", "standby"]


@dataclass
class DriverRecord:
    """One input's connection, as the drivers endpoint returns it."""

    type: str
    address: str
    connected_at: float
    disconnected_at: float | None = None
    last_input_at: float | None = None


class PresenceMonitor:
    """Last-input bookkeeping, active/standby state and driver history of one session."""

    def __init__(
        self,
        operator_required: bool = False,
        timeout: float = 10.0,
        history_limit: int = 100,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be > 0 seconds")
        self.operator_required = operator_required
        self.timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._last_input = clock()  # standby counts from session start
        self._open: dict[tuple[str, str], DriverRecord] = {}
        self._history: deque[DriverRecord] = deque(maxlen=history_limit)
        self.state: State = "active"
        self.poll()

    def connect(self, kind: str, address: str) -> None:
        """A connection-oriented input (WebSocket) opened; not yet an input by itself."""
        with self._lock:
            self._opened(kind, address, self._clock())

    def record(self, kind: str, address: str) -> None:
        """A usable input arrived (called from driver threads)."""
        now = self._clock()
        with self._lock:
            self._last_input = now
            self._opened(kind, address, now).last_input_at = now

    def disconnect(self, kind: str, address: str | None = None) -> None:
        """Close the input's open record(s); address None closes every one of that kind."""
        now = self._clock()
        with self._lock:
            for key in [k for k in self._open if k[0] == kind and address in (None, k[1])]:
                self._open.pop(key).disconnected_at = now

    def poll(self) -> State:
        """The state now; also closes UDP sources silent for longer than the timeout."""
        now = self._clock()
        with self._lock:
            for key, rec in list(self._open.items()):
                seen = rec.last_input_at
                if seen is not None and key[0] != "websocket" and now - seen > self.timeout:
                    rec.disconnected_at = seen + self.timeout
                    del self._open[key]
            silent = now - self._last_input > self.timeout
            self.state = "standby" if self.operator_required and silent else "active"
            return self.state

    def history(self) -> list[dict]:
        """Driver records, oldest first, as plain dicts."""
        with self._lock:
            return [asdict(r) for r in self._history]

    def _opened(self, kind: str, address: str, now: float) -> DriverRecord:
        rec = self._open.get((kind, address))
        if rec is None:
            rec = DriverRecord(kind, address, connected_at=now)
            self._open[(kind, address)] = rec
            if len(self._history) == self._history.maxlen:
                self._drop_oldest_closed()
            self._history.append(rec)
        return rec

    def _drop_oldest_closed(self) -> None:
        """Make room, preferring to drop a closed record over an open one."""
        for rec in self._history:
            if rec.disconnected_at is not None:
                self._history.remove(rec)
                return
