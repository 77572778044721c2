"""/v1/media: a tenant's scene images and short videos, used in scenes as `media:<id>`."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from .deps import Caller, State
from .errors import ApiError
from .models import ERRORS, MediaOut
from .uploads import binary_body, declared_length

router = APIRouter(prefix="/v1/media", tags=["media"], responses=ERRORS)

UPLOAD_BODY = binary_body(
    "An image (PNG, JPEG, WebP, ...) or a short video (MP4, WebM, ...)", "image/*", "video/*"
)


@router.post("", status_code=201, response_model=MediaOut, openapi_extra=UPLOAD_BODY)
async def upload_media(request: Request, state: State, who: Caller) -> dict:
    """Content-addressed: the id is the file's sha256, so uploading twice is harmless."""
    size_hint = declared_length(request.headers.get("content-length"))
    store = state.media
    with state.quota.upload(who.tenant) as upload:
        tmp, media_id, size = await store.receive(who.tenant, request.stream(), size_hint, upload)
        return await run_in_threadpool(store.commit, who.tenant, tmp, media_id, size, upload)


@router.get("", response_model=list[MediaOut])
async def list_media(state: State, who: Caller) -> list[dict]:
    return state.media.list(who.tenant)


@router.get("/{media_id}", response_model=MediaOut)
async def get_media(media_id: str, state: State, who: Caller) -> dict:
    return state.media.get(who.tenant, media_id)


@router.delete("/{media_id}", status_code=204)
async def delete_media(media_id: str, state: State, who: Caller) -> Response:
    state.media.get(who.tenant, media_id)  # 404 first
    path = str(state.media.file(who.tenant, media_id))
    users = [s.id for s in state.table.list(who.tenant)
             if (s.active or s.state == "stopping") and path in _files(s.spec)]  # fmt: skip
    if users:
        raise ApiError(409, f"media in use by {len(users)} session(s)", "id", code="in_use")
    state.media.delete(who.tenant, media_id)
    return Response(status_code=204)


def _files(spec) -> set[str]:
    """The media files a session's scene and standby scene use (so PATCH can recompile)."""
    scene = spec.scene
    return {scene.background, spec.driver.standby.background} | {
        o.image for o in scene.overlays if o.image
    }
