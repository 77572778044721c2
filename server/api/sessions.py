"""/v1/sessions: create (admission, quota, idempotency), list, read, patch live, delete."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import logging
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, Response
from starlette.concurrency import run_in_threadpool

from ..auth import Principal
from ..capacity import Profile
from ..engine import EngineBusy
from ..sessions import Session, SessionState
from ..stream import StreamError, StreamPipeline, VideoSettings
from .deps import Caller, ServerState, State, own_session, scope
from .errors import ApiError
from .models import ERRORS, SessionCreate, SessionOut, SessionPatch

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/sessions", tags=["sessions"], responses=ERRORS)

ENGINE_TIMEOUT_S = 30.0
DELETE_WAIT_S = 10.0
IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", max_length=200, pattern=r"^[\x21-\x7e]+$")
]


@router.post("", status_code=201, response_model=SessionOut)
async def create_session(
    body: SessionCreate, state: State, who: Caller, response: Response,
    idempotency_key: IdempotencyKey = None,
) -> dict:  # fmt: skip
    """Start a session; with an Idempotency-Key a retry returns the session made first."""
    session, replayed = await start_session(state, who, body, idempotency_key)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return view(state, session)


@router.get("", response_model=list[SessionOut])
async def list_sessions(state: State, who: Caller) -> list[dict]:
    return [view(state, s) for s in state.table.list(scope(who))]


@router.get("/{session_id}", response_model=SessionOut)
async def get_session(session_id: str, state: State, who: Caller) -> dict:
    return view(state, own_session(state, who, session_id))


@router.patch("/{session_id}", response_model=SessionOut)
async def patch_session(session_id: str, body: SessionPatch, state: State, who: Caller) -> dict:
    """Scene and bitrate change live, without restarting the stream."""
    session = own_session(state, who, session_id)
    if not session.active:
        raise ApiError(409, f"session is {session.state}", "id", code="conflict")
    if body.bitrate_kbps is not None and session.pipeline is None:
        raise ApiError(409, "session has no encoder", "bitrate_kbps", code="conflict")
    spec = session.spec
    if body.scene is not None:  # first: a scene that is refused leaves the bitrate alone
        scene = body.scene.to_scene(state.media.lookup(session.tenant, state.settings.media_dir))
        _check_label(state, scene.label.enabled)
        scene.validate()
        # compiling a scene decodes images/videos: a worker thread, not the event loop
        await _engine(await run_in_threadpool(state.engine.set_scene, session, scene))
        spec = dataclasses.replace(spec, scene=scene)
    if body.bitrate_kbps is not None:
        session.pipeline.set_bitrate(body.bitrate_kbps)
        spec = dataclasses.replace(
            spec, video=dataclasses.replace(spec.video, bitrate_kbps=body.bitrate_kbps)
        )
    session.spec = spec
    return view(state, session)


@router.delete("/{session_id}", response_model=SessionOut)
async def delete_session(session_id: str, state: State, who: Caller, response: Response) -> dict:
    """Ends the session: the encoder is flushed and outputs finalized before 200 (else 202)."""
    session = own_session(state, who, session_id)
    if session.active:
        closing = state.engine.delete(session, DELETE_WAIT_S)
        try:
            await asyncio.wait_for(asyncio.wrap_future(closing), DELETE_WAIT_S + 1)
        except TimeoutError:
            response.status_code = 202
    elif session.state is SessionState.STOPPING:
        response.status_code = 202
    return view(state, session)


async def start_session(
    state: ServerState, who: Principal, body: SessionCreate, key: str | None
) -> tuple[Session, bool]:
    fingerprint = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
    earlier = state.table.idempotent(who.tenant, key, fingerprint)
    if earlier is not None:
        return earlier, True
    if state.draining or not state.engine.accepting:
        raise ApiError(503, "server is draining", headers={"Retry-After": "60"})
    if body.avatar != "default":
        try:
            state.avatars.get(who.tenant, body.avatar)
        except ApiError as exc:
            exc.field = "avatar"
            raise
    if body.outputs and body.video.encoder == "none":
        raise ApiError(422, "outputs need an encoder (encoder is none)", "outputs")
    spec = body.to_spec(state.media.lookup(who.tenant, state.settings.media_dir))
    _check_label(state, spec.scene.label.enabled)
    spec.scene.validate()
    _admit(state, body)
    session = Session(who.tenant, spec)
    stored = state.table.add(session, key, fingerprint)
    if stored is not session:
        return stored, True  # a concurrent request with the same key got there first
    pipeline = opened = None
    try:
        asset = await run_in_threadpool(state.avatars.asset, who.tenant, spec.avatar)
        if spec.video.encoder != "none":
            pipeline = await run_in_threadpool(_pipeline, state, session)
        opened = await run_in_threadpool(state.engine.create, session, asset, pipeline)
        await _engine(opened)
    except BaseException:
        if session.state is not SessionState.ENDED:  # one deleted while starting stays listed
            state.table.discard(session)
        if opened is not None:  # the engine may still open it (client gone): stop it then
            opened.add_done_callback(lambda f: _stop_if_opened(state, session, f))
        elif pipeline is not None:
            await run_in_threadpool(pipeline.close, 1.0)
        raise
    return session, False


def _stop_if_opened(state: ServerState, session: Session, opened: Any) -> None:
    if not opened.cancelled() and opened.exception() is None:
        try:
            state.engine.delete(session)
        except EngineBusy:
            log.warning("session %s orphaned: engine busy while stopping it", session.id)


def _admit(state: ServerState, body: SessionCreate) -> None:
    """503 with a reason when the new session would overload the engine."""
    video = body.video
    live = [_profile(s) for s in state.table.list(None) if s.active]
    decision = state.cost.admit(Profile(video.width, video.height, video.fps), live)
    if not decision.ok:
        raise ApiError(
            503, decision.reason, "video", code="capacity",
            headers={"Retry-After": str(decision.retry_after_s)},
        )  # fmt: skip


def _profile(session: Session) -> Profile:
    v = session.spec.video
    return Profile(v.width, v.height, v.fps)


def _check_label(state: ServerState, enabled: bool) -> None:
    if state.settings.enforce_label and not enabled:
        raise ApiError(422, "the AI-content label cannot be disabled here", "scene.label.enabled")


def _pipeline(state: ServerState, session: Session) -> StreamPipeline:
    """Blocking (opens the encoder): runs in a worker thread, never on the engine."""
    v = session.spec.video
    s = state.settings
    settings = VideoSettings(
        bitrate_kbps=v.bitrate_kbps, encoder=v.encoder, nvenc_codec=v.codec, preset=s.x264_preset
    )
    pipeline = StreamPipeline(
        session.id, v.width, v.height, v.fps, settings,
        hls_root=s.hls_root, recordings_root=s.recordings_root,
    )  # fmt: skip
    try:
        for i, url in enumerate(session.spec.outputs):
            add_output(session, url, f"outputs[{i}].url", pipeline)
    except BaseException:
        pipeline.close(1.0)
        raise
    return pipeline


def add_output(session: Session, url: str, field: str, pipeline: Any = None) -> Any:
    """Start a destination on the session's pipeline and record it (raw URL kept private)."""
    pipeline = pipeline or session.pipeline
    if url.startswith("record:"):  # recordings of different tenants never share a folder
        tenant_dir = hashlib.sha256(session.tenant.encode()).hexdigest()[:24]
        url = f"record:{tenant_dir}/{url.split(':', 1)[1]}"
    try:
        stream_id = pipeline.add_output(url)
    except StreamError as exc:
        exc.field = field
        raise
    record = session.new_output(url)
    record.stream_id = stream_id
    return record


async def _engine(future: Any) -> Any:
    try:
        return await asyncio.wait_for(asyncio.wrap_future(future), ENGINE_TIMEOUT_S)
    except TimeoutError:
        raise ApiError(503, "engine did not answer in time", headers={"Retry-After": "5"}) from None


@functools.lru_cache(maxsize=1024)
def _spec_dict(spec: Any) -> dict[str, Any]:
    """A frozen spec as a dict, made once per distinct spec (shared: read it, never change
    it): `asdict` deep-copies every time, and session listings are what dashboards poll."""
    return dataclasses.asdict(spec)


def _public_driver(state: ServerState, driver: Any) -> dict[str, Any]:
    """The driver spec as the client wrote it: a standby image as `media:<name>`, never the
    server's path to it."""
    shown = _spec_dict(driver)
    path = driver.standby.background
    if path.startswith("#"):
        return shown
    media_dir = state.settings.media_dir
    root = Path(media_dir).resolve() if media_dir is not None else None
    name = Path(path).relative_to(root) if root and Path(path).is_relative_to(root) else None
    ref = f"media:{name if name is not None else Path(path).stem}"  # uploads: <id>.<kind>
    return {**shown, "standby": {**shown["standby"], "background": ref}}


def view(state: ServerState, session: Session) -> dict[str, Any]:
    """The public face of a session: masked URLs, counters, the last error."""
    stream = session.pipeline.stats() if session.pipeline is not None else None
    stream_outputs = stream["outputs"] if stream else {}
    outputs = []
    for record in list(session.outputs.values()):
        o = stream_outputs.get(record.stream_id) or {}
        outputs.append({
            "id": record.id,
            "url": record.masked,
            "state": o.get("state", "closed"),
            "last_error": o.get("last_error"),
            "stats": {k: o[k] for k in ("packets_sent", "bytes_sent", "dropped", "connects")
                      if k in o},
        })  # fmt: skip
    v = session.spec.video
    counters = state.engine.frame_counters(session)
    made = counters["frames_rendered"] + counters["frames_dropped"]
    stats: dict[str, Any] = {
        **counters,
        "fps": v.fps,
        # fresh frames per second: the configured rate less the frames repeated for drops
        "fps_rendered": round(v.fps * counters["frames_rendered"] / made, 2) if made else 0.0,
        "encoder": stream["encoder"] if stream else "none",
        "bitrate_kbps": stream["bitrate_kbps"] if stream else 0,
    }
    if stream:
        stats["frames_encoded"] = stream["frames_encoded"]
        stats["encoder_queue_drops"] = stream["frames_dropped"]
    return {
        "id": session.id,
        "state": session.state.value,
        "avatar": session.spec.avatar,
        "video": _spec_dict(v),
        "driver": _public_driver(state, session.spec.driver),
        "outputs": outputs,
        "stats": stats,
        "error": session.error,
        "created_at": session.created_at,
    }
