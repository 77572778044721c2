"""Operations: liveness, readiness, Prometheus metrics, capacity, drain."""

from __future__ import annotations

import threading
from typing import Annotated

from fastapi import APIRouter, Query, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..capacity import Profile
from .deps import Admin, Caller, ServerState, State
from .errors import ApiError
from .models import ERRORS, CapacityOut

router = APIRouter(responses=ERRORS)


@router.get("/healthz", tags=["ops"])
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", tags=["ops"])
async def readyz(state: State) -> dict:
    """Ready while the engine loop ticks and the server is not draining."""
    if state.draining:
        raise ApiError(503, "draining", code="draining")
    if not state.engine.ticking():
        raise ApiError(503, "engine is not ticking", code="not_ready")
    return {"status": "ready"}


@router.get("/metrics", tags=["ops"], response_class=Response)
async def metrics(state: State) -> Response:
    return Response(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/capacity", tags=["ops"], response_model=CapacityOut)
async def capacity(
    state: State,
    who: Caller,
    width: Annotated[int, Query(ge=16, le=4096, multiple_of=2)] = 1280,
    height: Annotated[int, Query(ge=16, le=4096, multiple_of=2)] = 720,
    fps: Annotated[int, Query(ge=24, le=60)] = 30,
) -> dict:
    """Live sessions and how many more of the given profile fit (from measured costs)."""
    live = [
        Profile(s.spec.video.width, s.spec.video.height, s.spec.video.fps)
        for s in state.table.list(None) if s.active
    ]  # fmt: skip
    profile = Profile(width, height, fps)
    return {
        "live_sessions": len(live),
        "profile": {"width": width, "height": height, "fps": fps},
        "room": 0 if state.draining else state.cost.room(profile, live),
        "load": round(state.cost.load(live), 4),
        "model": state.cost.describe(),
        "draining": state.draining,
    }


@router.post("/v1/admin/drain", tags=["ops"], status_code=202)
async def drain(state: State, who: Admin) -> dict:
    """Stop accepting sessions and end the running ones cleanly, in the background."""
    start_drain(state)
    return {"draining": True, "active_sessions": state.table.active_count()}


def start_drain(state: ServerState) -> None:
    if state.draining:
        return
    state.draining = True
    state.engine.accepting = False
    timeout = state.settings.drain_timeout_s
    threading.Thread(target=state.engine.drain, args=(timeout,), name="drain", daemon=True).start()
