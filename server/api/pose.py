"""PUT /v1/sessions/{id}/pose: low-rate control of expressions, head and eyes.

The pose is written into the session's pose slot (source "api"; latest wins, smoothed
like every input, and it counts as operator presence). High-rate live driving (WebSocket,
VMC, Live Link, audio) is server/drivers/ and api/drive.py, writing the same slot.
"""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Request, Response

from avatarfarm.render.expressions import inputs_from_dict

from .deps import Caller, State, own_session
from .errors import ApiError
from .models import ERRORS, PoseIn

router = APIRouter(prefix="/v1/sessions/{session_id}", tags=["pose"], responses=ERRORS)


@router.put("/pose", status_code=204)
async def put_pose(
    session_id: str, body: PoseIn, state: State, who: Caller, request: Request
) -> Response:
    session = own_session(state, who, session_id)
    if not session.active:
        raise ApiError(409, f"session is {session.state}", "session_id", code="conflict")
    expressions = None
    if body.expressions is not None:
        expressions, unknown = inputs_from_dict(body.expressions)
        if unknown:
            raise ApiError(422, f"unknown expression {unknown[0]!r}", f"expressions.{unknown[0]}")
        np.clip(expressions, 0.0, 1.0, out=expressions)
    head = eyes = None
    if body.head is not None:
        head = np.array([body.head.yaw, body.head.pitch, body.head.roll], np.float32)
    if body.eyes is not None:
        e = body.eyes
        eyes = np.array([e.left_yaw, e.left_pitch, e.right_yaw, e.right_pitch], np.float32)
    address = request.client.host if request.client else ""
    state.engine.set_pose(session, expressions, head, eyes, address)
    return Response(status_code=204)
