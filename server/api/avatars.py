"""/v1/avatars: upload (streamed, size-limited), list, summary, delete (409 while in use)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from .deps import Caller, State
from .errors import ApiError
from .models import ERRORS, AvatarOut
from .uploads import binary_body, declared_length

router = APIRouter(prefix="/v1/avatars", tags=["avatars"], responses=ERRORS)

UPLOAD_BODY = binary_body(
    "The .glb or .vrm file itself (glTF JSON with embedded data also works)",
    "model/gltf-binary",
)


@router.post("", status_code=201, response_model=AvatarOut, openapi_extra=UPLOAD_BODY)
async def upload_avatar(request: Request, state: State, who: Caller) -> dict:
    """Content-addressed: the id is the file's sha256, so uploading twice is harmless."""
    size_hint = declared_length(request.headers.get("content-length"))
    store = state.avatars
    with state.quota.upload(who.tenant) as upload:
        tmp, avatar_id, size = await store.receive(who.tenant, request.stream(), size_hint, upload)
        return await run_in_threadpool(store.commit, who.tenant, tmp, avatar_id, size, upload)


@router.get("", response_model=list[AvatarOut])
async def list_avatars(state: State, who: Caller) -> list[dict]:
    return state.avatars.list(who.tenant)


@router.get("/{avatar_id}", response_model=AvatarOut)
async def get_avatar(avatar_id: str, state: State, who: Caller) -> dict:
    return state.avatars.get(who.tenant, avatar_id)


@router.delete("/{avatar_id}", status_code=204)
async def delete_avatar(avatar_id: str, state: State, who: Caller) -> Response:
    state.avatars.get(who.tenant, avatar_id)  # 404 first
    users = [
        s.id for s in state.table.list(who.tenant)
        if s.spec.avatar == avatar_id and (s.active or s.state == "stopping")
    ]  # fmt: skip
    if users:
        raise ApiError(409, f"avatar in use by {len(users)} session(s)", "id", code="in_use")
    state.avatars.delete(who.tenant, avatar_id)
    return Response(status_code=204)
