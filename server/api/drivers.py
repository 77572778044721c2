"""UDP driver ports of a session: VMC (OSC) and Live Link Face receivers, and the history.

    POST   /v1/sessions/{id}/drivers              {"type": "vmc"|"livelink", "port"?, "allowed"?}
    GET    /v1/sessions/{id}/drivers              active ports and the driver history (audit)
    DELETE /v1/sessions/{id}/drivers/{driver_id}  close a port

A port binds on the server's `host` setting (127.0.0.1 by default). Without `port`, the
app's conventional port is tried first (39539 VMC, 11111 Live Link Face) and an ephemeral
one is used when it is taken. `allowed` restricts the sender addresses. Each port's thread
may use `CPU_SHARES` of a core; what arrives beyond that is dropped by the kernel and
counted as flood-dropped, so a flood never reaches the engine.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterable
from typing import Any, Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field, field_validator
from starlette.concurrency import run_in_threadpool

from ..drivers.livelink import LIVELINK_PORT, LiveLinkReceiver
from ..drivers.udp import UdpReceiver
from ..drivers.vmc import VMC_PORT, VmcReceiver
from ..sessions import MAX_PORTS, DriverPort, Session
from .deps import Caller, ServerState, State, own_session
from .errors import ApiError
from .models import ERRORS, Strict

router = APIRouter(prefix="/v1/sessions/{session_id}/drivers", tags=["drivers"], responses=ERRORS)

# The share of one core a port's thread may use. The heaviest real sender, VSeeFace with
# perfect sync at 60 fps (~110 messages a bundle), takes ~4 % on the 2-core VM the numbers
# come from; Live Link Face at 60 Hz takes 0.1 %.
CPU_SHARES = {"vmc": 0.15, "livelink": 0.05}

KINDS: dict[str, tuple[type[UdpReceiver], int]] = {
    "vmc": (VmcReceiver, VMC_PORT),
    "livelink": (LiveLinkReceiver, LIVELINK_PORT),
}


class DriverCreate(Strict):
    type: Literal["vmc", "livelink"]
    port: int | None = Field(None, ge=1024, le=65535)
    allowed: list[str] | None = Field(None, min_length=1, max_length=64)

    @field_validator("allowed")
    @classmethod
    def _addresses(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        try:
            return [str(ipaddress.ip_address(a)) for a in value]
        except ValueError as exc:
            raise ValueError(f"allowed must be IP addresses: {exc}") from None


class DriverOut(BaseModel):
    id: str
    type: str
    host: str
    port: int
    allowed: list[str] | None = None
    stats: dict[str, int] = Field(default_factory=dict)


class DriversOut(BaseModel):
    active: list[DriverOut]
    history: list[dict[str, Any]]


_bind_lock = threading.Lock()  # one bind at a time: "conventional port free?" then bind


@router.post("", status_code=201, response_model=DriverOut)
async def open_driver(session_id: str, body: DriverCreate, state: State, who: Caller) -> dict:
    """Open a UDP port that feeds the session's pose (host and port in the answer)."""
    session = own_session(state, who, session_id)
    if not session.active or session.drivers.pose is None:
        raise ApiError(409, f"session is {session.state}", "session_id", code="conflict")
    if len(session.drivers.ports) >= MAX_PORTS:
        raise _too_many()
    port = await run_in_threadpool(_start, state, session, body)
    return _view(port)


def _too_many() -> ApiError:
    return ApiError(429, f"at most {MAX_PORTS} driver ports per session", "type",
                    code="quota_exceeded")  # fmt: skip


def _start(state: ServerState, session: Session, body: DriverCreate) -> DriverPort:
    """Bind and start a receiver (worker thread); conventional port first when none asked."""
    cls, conventional = KINDS[body.type]
    drivers = session.drivers
    assert drivers.pose is not None
    sources: set[str] = set()

    def on_input(kind: str, address: str) -> None:
        drivers.record(sources, kind, address)

    ports: Iterable[int] = (body.port,) if body.port is not None else (conventional, 0)
    receiver = None
    with _bind_lock:  # held until the port is added: concurrent requests see each other's
        if len(drivers.ports) >= MAX_PORTS:
            raise _too_many()
        for number in ports:
            candidate = cls(drivers.pose, state.settings.host, number, body.allowed, on_input,
                            cpu_share=CPU_SHARES[body.type])  # fmt: skip
            try:
                candidate.start()
            except OSError as exc:
                if body.port is not None or number == 0:
                    raise ApiError(409, f"cannot bind UDP port {number}: {exc.strerror}",
                                   "port", code="conflict") from None  # fmt: skip
                continue
            receiver = candidate
            break
        assert receiver is not None
        port = drivers.add_port(receiver, sources)
    if port is None:  # the session ended meanwhile
        receiver.stop()
        raise ApiError(409, f"session is {session.state}", "session_id", code="conflict")
    return port


@router.get("", response_model=DriversOut)
async def list_drivers(session_id: str, state: State, who: Caller) -> dict:
    """Open ports with their packet counts, and every input's connection history."""
    session = own_session(state, who, session_id)
    ports = list(session.drivers.ports.values())
    return {"active": [_view(p) for p in ports], "history": session.drivers.presence.history()}


@router.delete("/{driver_id}", status_code=204)
async def close_driver(session_id: str, driver_id: str, state: State, who: Caller) -> Response:
    session = own_session(state, who, session_id)
    port = session.drivers.remove_port(driver_id)
    if port is None:
        raise ApiError(404, f"no driver {driver_id}", "driver_id")
    await run_in_threadpool(session.drivers.stop_port, port)
    return Response(status_code=204)


def _view(port: DriverPort) -> dict[str, Any]:
    rx = port.receiver
    return {
        "id": port.id,
        "type": rx.kind,
        "host": port.host,
        "port": port.port,
        "allowed": sorted(rx.allowed) if rx.allowed is not None else None,
        "stats": rx.stats(),
    }
