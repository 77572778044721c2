"""WebSockets that drive a session live: `/v1/sessions/{id}/drive` and `/v1/sessions/{id}/audio`.

Authentication is the API's bearer key, given in one of three ways (browsers cannot set
headers on a WebSocket):

1. the `Authorization: Bearer <key>` header of the upgrade request;
2. a `?key=<key>` query parameter (masked in the server's logs: see `_MaskKeys`);
3. a first text message `{"auth": "<key>"}` within 5 s of connecting.

Refusals close the socket with an application close code after one text message in the
API's error shape, `{"error": {"code", "message", "field"}}`: 4401 unauthorized, 4404 no
such session (also another tenant's), 4409 session not running (or replaced), 4422 bad
input, 4408 no auth message in time.

drive: JSON or 248-byte binary messages (server/drivers/websocket.py), applied at once
(latest wins; nothing queues). Bad messages are counted (/metrics) and skipped.

audio: the first message (after the auth message, if any) is the format header
`{"format": "pcm16", "rate": 16000|44100|48000, "channels": 1|2}`; then binary PCM16.
A text message switches format. The audio replaces the stream's silent track, in step with
the video, and drives lip-sync while no face capture does. One audio connection per
session: a new one replaces the old, which is closed with 4409.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from ..drivers.audio import AudioDriver, AudioError
from ..drivers.client_json import loads
from ..drivers.websocket import DriveSession
from ..engine import EngineBusy
from ..sessions import Session, SessionError
from .deps import ServerState, scope

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/sessions/{session_id}", tags=["drive"])

AUTH_TIMEOUT_S = 5.0
WATCH_S = 1.0  # how often an idle socket checks that its session is still running


class _MaskKeys(logging.Filter):
    """uvicorn logs WebSocket paths with their query string: mask all of it (`?key=` may
    also arrive percent-encoded, `?%6Bey=`, which a match on `key=` would miss)."""

    _pattern = re.compile(r"(\?)[^\s\"]+")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(
                self._pattern.sub(r"\1****", a) if isinstance(a, str) else a for a in args
            )
        if isinstance(record.msg, str):
            record.msg = self._pattern.sub(r"\1****", record.msg)
        return True


def _mask_keys_in_logs() -> None:
    for name in ("uvicorn.error", "uvicorn.access", "uvicorn"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _MaskKeys) for f in logger.filters):
            logger.addFilter(_MaskKeys())


_mask_keys_in_logs()


class Refused(Exception):
    """Close the socket with `close_code` after an error message in the API's shape."""

    def __init__(self, close_code: int, code: str, message: str, field: str | None) -> None:
        super().__init__(message)
        self.close_code, self.code, self.message, self.field = close_code, code, message, field


async def _refuse(ws: WebSocket, exc: Refused) -> None:
    if ws.application_state is not WebSocketState.CONNECTED:
        return
    body = {"error": {"code": exc.code, "message": exc.message, "field": exc.field}}
    try:
        await ws.send_text(json.dumps(body))
        await ws.close(exc.close_code, exc.message[:120])
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client is gone already


def _peer(ws: WebSocket) -> str:
    return f"{ws.client.host}:{ws.client.port}" if ws.client else ""


async def _connect(ws: WebSocket, session_id: str) -> tuple[ServerState, Session]:
    """Accept, authenticate (header, ?key= or first message) and find the caller's session."""
    state: ServerState = ws.app.state.server
    await ws.accept()
    header = ws.headers.get("authorization")
    if header is None and ws.query_params.get("key"):
        header = f"Bearer {ws.query_params['key']}"
    if header is None:
        try:
            first = await asyncio.wait_for(ws.receive(), AUTH_TIMEOUT_S)
        except TimeoutError:
            raise Refused(4408, "unauthorized", "no auth message in time", "auth") from None
        key = _auth_message(first)
        header = f"Bearer {key}" if key else None
    principal = state.keys.authenticate(header)
    if principal is None:
        raise Refused(4401, "unauthorized", "missing or invalid API key", "Authorization")
    try:
        session = state.table.get(session_id, scope(principal))
    except SessionError as exc:
        raise Refused(4404, "not_found", exc.message, "session_id") from None
    pose = session.drivers.pose
    if not session.active or pose is None or not pose.open:
        raise Refused(4409, "conflict", f"session is {session.state}", "session_id")
    return state, session


def _auth_message(message: dict[str, Any]) -> str | None:
    """The key of a first message `{"auth": "<key>"}`, else None."""
    try:
        doc = loads(message.get("text") or "")
    except ValueError:
        return None
    key = doc.get("auth") if isinstance(doc, dict) else None
    return key if isinstance(key, str) else None


async def _receive(ws: WebSocket, session: Session) -> str | bytes | None:
    """The next message; None when the client left or the session stopped running."""
    while True:
        try:
            message = await asyncio.wait_for(ws.receive(), WATCH_S)
        except TimeoutError:
            if not session.active:
                state = session.state
                raise Refused(4409, "conflict", f"session is {state}", "session_id") from None
            continue
        if message["type"] == "websocket.disconnect":
            return None
        if not session.active:
            raise Refused(4409, "conflict", f"session is {session.state}", "session_id")
        text = message.get("text")
        return text if text is not None else message.get("bytes") or b""


@router.websocket("/drive")
async def drive(ws: WebSocket, session_id: str) -> None:
    """Live pose messages (JSON or binary); see the module docstring for auth and codes."""
    try:
        state, session = await _connect(ws, session_id)
    except Refused as exc:
        await _refuse(ws, exc)
        return
    drivers, address = session.drivers, _peer(ws)
    counters = state.engine.driver_counters
    assert drivers.pose is not None
    feed = DriveSession(drivers.pose, address, on_input=drivers.presence.record)
    drivers.presence.connect("websocket", address)
    try:
        while (message := await _receive(ws, session)) is not None:
            before = feed.stats()
            counters.add("websocket", "packets")
            if not feed.feed(message):
                reason = "stale" if feed.stale > before["stale"] else "invalid"
                counters.add("websocket", reason)
            for what in ("unknown_names", "nonfinite"):
                if feed.stats()[what] > before[what]:
                    counters.add("websocket", what, feed.stats()[what] - before[what])
    except Refused as exc:
        await _refuse(ws, exc)
    except WebSocketDisconnect:
        pass
    finally:
        drivers.presence.disconnect("websocket", address)


@router.websocket("/audio")
async def audio(ws: WebSocket, session_id: str) -> None:
    """Pushed PCM16 audio for the stream and lip-sync; see the module docstring."""
    try:
        state, session = await _connect(ws, session_id)
    except Refused as exc:
        await _refuse(ws, exc)
        return
    drivers, address = session.drivers, _peer(ws)
    counters = state.engine.driver_counters
    owner = object()
    drivers.presence.connect("audio", address)
    try:
        header = await _receive(ws, session)
        if header is None:
            return
        driver = drivers.audio or AudioDriver()
        _configure(driver, header)
        if drivers.audio is None:
            drivers.audio = driver
            await asyncio.wait_for(asyncio.wrap_future(state.engine.attach_audio(session)), 10)
        drivers.audio_owner = owner
        while (message := await _receive(ws, session)) is not None:
            if drivers.audio_owner is not owner:
                raise Refused(4409, "conflict", "replaced by a newer audio connection", None)
            counters.add("audio", "packets")
            if isinstance(message, str):
                _configure(driver, message)
                continue
            try:
                driver.feed(message)
            except AudioError as exc:
                counters.add("audio", "invalid")
                raise Refused(4422, "invalid", str(exc), exc.field) from None
    except Refused as exc:
        await _refuse(ws, exc)
    except WebSocketDisconnect:
        pass
    except (TimeoutError, SessionError, EngineBusy):
        await _refuse(ws, Refused(4409, "conflict", f"session is {session.state}", None))
    finally:
        drivers.presence.disconnect("audio", address)


def _configure(driver: AudioDriver, header: str | bytes) -> None:
    try:
        driver.configure(header)
    except AudioError as exc:
        raise Refused(4422, "invalid", str(exc), exc.field) from None
