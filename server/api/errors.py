"""Every error leaves as {"error": {"code", "message", "field"}}; never a stack trace.

Routes raise `ApiError` (or a lower layer's one exception type, mapped here); validation
errors name the offending field; anything unexpected becomes a generic 500 and is logged.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from avatarfarm.render.asset import AssetError
from avatarfarm.render.scene import SceneError

from ..engine import EngineBusy
from ..sessions import SessionError
from ..stream import StreamError
from ..stream.urls import mask_text
from .models import MediaError

log = logging.getLogger(__name__)

STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "quota_exceeded",
    503: "unavailable",
}
SESSION_STATUS = {"invalid": 422, "not_found": 404, "conflict": 409, "quota": 429}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        field: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field
        self.code = code or STATUS_CODES.get(status, "error")
        self.headers = headers


def error_response(
    status: int, code: str, message: str, field: str | None = None, headers=None
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "field": field}}
    return JSONResponse(body, status_code=status, headers=headers)


def _field(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.field, exc.headers)

    @app.exception_handler(SessionError)
    async def _session(_: Request, exc: SessionError) -> JSONResponse:
        status = SESSION_STATUS.get(exc.code, 422)
        code = "quota_exceeded" if exc.code == "quota" else exc.code
        return error_response(status, code, mask_text(exc.message), exc.field)

    @app.exception_handler(SceneError)
    async def _scene(_: Request, exc: SceneError) -> JSONResponse:
        field = f"scene.{exc.field}" if exc.field else "scene"
        return error_response(422, "invalid_scene", str(exc), field)

    @app.exception_handler(StreamError)
    async def _stream(_: Request, exc: StreamError) -> JSONResponse:
        return error_response(422, "invalid_stream", mask_text(str(exc)), exc.field)

    @app.exception_handler(AssetError)
    async def _asset(_: Request, exc: AssetError) -> JSONResponse:
        return error_response(422, "invalid_avatar", str(exc), "avatar")

    @app.exception_handler(MediaError)
    async def _media(_: Request, exc: MediaError) -> JSONResponse:
        return error_response(422, "invalid_scene", str(exc), exc.field)

    @app.exception_handler(EngineBusy)
    async def _busy(_: Request, exc: EngineBusy) -> JSONResponse:
        return error_response(503, "unavailable", str(exc), None, {"Retry-After": "5"})

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        message = str(first.get("msg", "invalid request"))
        return error_response(422, "invalid", message, _field(tuple(first.get("loc", ()))))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = STATUS_CODES.get(exc.status_code, "error")
        return error_response(exc.status_code, code, str(exc.detail), None, exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
        return error_response(500, "internal", "internal server error")
