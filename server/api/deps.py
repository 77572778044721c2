"""What every route needs: the server's state and the authenticated caller."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..auth import KeyRing, Principal
from ..capacity import CostModel
from ..config import Settings
from ..engine import Engine
from ..sessions import Session, SessionTable
from .avatar_store import AvatarStore
from .errors import ApiError
from .media_store import MediaStore
from .quota import StorageQuota


@dataclass
class ServerState:
    settings: Settings
    keys: KeyRing
    engine: Engine
    table: SessionTable
    cost: CostModel
    avatars: AvatarStore
    media: MediaStore
    quota: StorageQuota
    registry: Any  # prometheus CollectorRegistry
    draining: bool = False


# The dependencies are `async def` although they never await: FastAPI runs a plain `def`
# dependency on its thread pool, a thread hop per request that the engine's ticks pay for.
async def server(request: Request) -> ServerState:
    return request.app.state.server


_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")


async def caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The tenant (or admin) behind the request's bearer key; 401 without a valid one."""
    header = request.headers.get("authorization") if credentials else None
    principal = request.app.state.server.keys.authenticate(header)
    if principal is None:
        raise ApiError(
            401, "missing or invalid API key", "Authorization",
            headers={"WWW-Authenticate": "Bearer"},
        )  # fmt: skip
    return principal


async def admin(principal: Annotated[Principal, Depends(caller)]) -> Principal:
    if not principal.admin:
        raise ApiError(403, "this route needs the admin key", "Authorization")
    return principal


State = Annotated[ServerState, Depends(server)]
Caller = Annotated[Principal, Depends(caller)]
Admin = Annotated[Principal, Depends(admin)]


def scope(principal: Principal) -> str | None:
    """Which tenant's sessions the caller sees; None for the admin (all of them)."""
    return None if principal.admin else principal.tenant


def own_session(state: ServerState, principal: Principal, session_id: str) -> Session:
    return state.table.get(session_id, scope(principal))
