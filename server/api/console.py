"""GET /: the operator console, plain files shipped in the package (no build step).

The page itself needs no key; every data call it makes sends the key the operator types.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from .errors import ApiError

router = APIRouter(include_in_schema=False)
FOLDER = Path(__file__).parent / "console"
FILES = {"console.js": "text/javascript", "console.css": "text/css"}


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(FOLDER / "index.html", media_type="text/html",
                        headers={"Cache-Control": "no-cache"})  # fmt: skip


@router.get("/console/{name}")
async def asset(name: str) -> FileResponse:
    if name not in FILES:
        raise ApiError(404, "not found", "name")
    no_cache = {"Cache-Control": "no-cache"}
    return FileResponse(FOLDER / name, media_type=FILES[name], headers=no_cache)
