"""/v1/sessions/{id}/outputs: destinations added and removed while the session streams."""

from __future__ import annotations

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from .deps import Caller, State, own_session
from .errors import ApiError
from .models import ERRORS, OutputIn, OutputOut
from .sessions import add_output

router = APIRouter(prefix="/v1/sessions/{session_id}/outputs", tags=["outputs"], responses=ERRORS)
REMOVE_TIMEOUT_S = 5.0


@router.post("", status_code=201, response_model=OutputOut)
async def create_output(session_id: str, body: OutputIn, state: State, who: Caller) -> dict:
    session = own_session(state, who, session_id)
    if not session.active:
        raise ApiError(409, f"session is {session.state}", "session_id", code="conflict")
    if session.pipeline is None:
        raise ApiError(409, "session has no encoder (encoder is none)", "url", code="conflict")
    record = await run_in_threadpool(add_output, session, body.url, "url")
    return {"id": record.id, "url": record.masked, "state": "connecting"}


@router.delete("/{output_id}", status_code=204)
async def delete_output(session_id: str, output_id: str, state: State, who: Caller) -> Response:
    """Returns once the destination is finalized (FLV/MP4 trailer written, socket closed)."""
    session = own_session(state, who, session_id)
    record = session.outputs.get(output_id)
    if record is None:
        raise ApiError(404, f"no output {output_id}", "output_id")
    if session.pipeline is not None and session.active:
        await run_in_threadpool(session.pipeline.remove_output, record.stream_id, REMOVE_TIMEOUT_S)
    session.outputs.pop(output_id, None)
    return Response(status_code=204)
