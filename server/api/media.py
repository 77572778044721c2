"""Seeing a session: snapshot JPEG, MJPEG preview, and its HLS preview folder.

Frames are copied out of the engine through its command queue (never read while the
engine renders), and JPEGs are encoded in worker threads only while someone watches.
"""

from __future__ import annotations

import asyncio
import io
import re
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, StreamingResponse
from PIL import Image
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from avatarfarm.render.frames import nv12_to_rgb

from ..sessions import Session
from ..stream import StreamError
from .deps import Caller, ServerState, State, own_session
from .errors import ApiError
from .models import ERRORS

router = APIRouter(prefix="/v1/sessions/{session_id}", tags=["media"], responses=ERRORS)

FIRST_FRAME_WAIT_S = 10.0
MAX_PREVIEWS = 16
MAX_PREVIEWS_PER_TENANT = 8  # one tenant cannot take every preview
BOUNDARY = "frame"
_HLS_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}\.(m3u8|ts|m4s|mp4)$")
JPEG = {200: {"content": {"image/jpeg": {}}, "description": "the session's latest frame"}}


async def _frame(state: ServerState, session: Session, wait: float) -> tuple | None:
    """The latest NV12 frame, waiting up to `wait` s for a starting session's first one."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        if not session.active:
            raise ApiError(409, f"session is {session.state}", "session_id", code="conflict")
        found = await asyncio.wrap_future(state.engine.snapshot(session))
        if found is not None or loop.time() >= deadline:
            return found
        await asyncio.sleep(0.05)


def _jpeg(frame: tuple, quality: int) -> bytes:
    nv12, width, height = frame
    out = io.BytesIO()
    Image.fromarray(nv12_to_rgb(nv12, width, height)).save(out, "JPEG", quality=quality)
    return out.getvalue()


@router.get("/snapshot.jpg", response_class=Response, responses=JPEG)
async def snapshot(session_id: str, state: State, who: Caller) -> Response:
    session = own_session(state, who, session_id)
    frame = await _frame(state, session, FIRST_FRAME_WAIT_S)
    if frame is None:
        raise ApiError(409, "no frame rendered yet", "session_id", code="no_frame")
    data = await run_in_threadpool(_jpeg, frame, state.settings.jpeg_quality)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@router.get(
    "/preview.mjpg",
    response_class=StreamingResponse,
    responses={200: {"content": {f"multipart/x-mixed-replace; boundary={BOUNDARY}": {}}}},
)
async def preview(session_id: str, request: Request, state: State, who: Caller):
    """MJPEG at the configured preview rate, for as long as the client stays connected."""
    session = own_session(state, who, session_id)
    watchers: Counter[str] = request.app.state.previews  # tenant -> open previews
    if watchers.total() >= MAX_PREVIEWS:
        raise ApiError(503, "too many previews open", headers={"Retry-After": "10"})
    if watchers[session.tenant] >= MAX_PREVIEWS_PER_TENANT:
        raise ApiError(429, f"at most {MAX_PREVIEWS_PER_TENANT} previews open per tenant",
                       code="quota_exceeded", headers={"Retry-After": "10"})  # fmt: skip
    watchers[session.tenant] += 1  # no await since the check: no other request got between
    period = 1.0 / state.settings.preview_fps

    released = False

    def release() -> None:  # once, from whichever sees the end first
        nonlocal released
        if not released:
            released = True
            watchers[session.tenant] -= 1

    async def parts() -> AsyncIterator[bytes]:
        try:
            while session.active and not state.draining:
                if await request.is_disconnected():
                    return
                frame = await _frame(state, session, FIRST_FRAME_WAIT_S)
                if frame is not None:
                    data = await run_in_threadpool(_jpeg, frame, state.settings.jpeg_quality)
                    yield (
                        (
                            f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                            f"Content-Length: {len(data)}\r\n\r\n"
                        ).encode()
                        + data
                        + b"\r\n"
                    )
                await asyncio.sleep(period)
        except ApiError:
            return
        finally:  # also when a send to a client that is gone raises (no background then)
            release()

    return StreamingResponse(
        parts(),
        media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
        headers={"Cache-Control": "no-store"},
        background=BackgroundTask(release),  # a response that never streamed
    )


@router.get("/hls/{name}", response_class=FileResponse)
async def hls(session_id: str, name: str, state: State, who: Caller) -> FileResponse:
    """Files of the session's `hls:` output (add one with POST .../outputs {"url": "hls:"})."""
    session = own_session(state, who, session_id)
    if not _HLS_NAME.match(name):
        raise ApiError(404, "no such HLS file", "name")
    folder = _hls_folder(session)
    path = (folder / name).resolve()
    if not path.is_relative_to(folder) or not path.is_file():
        raise ApiError(404, "no such HLS file (yet)", "name")
    media = "application/vnd.apple.mpegurl" if name.endswith(".m3u8") else "video/mp2t"
    return FileResponse(path, media_type=media, headers={"Cache-Control": "no-cache"})


def _hls_folder(session: Session) -> Path:
    if session.pipeline is not None and session.active:
        for record in list(session.outputs.values()):
            if record.url.startswith("hls:"):
                try:
                    return Path(session.pipeline.output_path(record.stream_id)).parent.resolve()
                except StreamError:
                    continue
    raise ApiError(404, "session has no HLS output; add one with url 'hls:'", "session_id")
