"""Request bodies are bounded: JSON routes take at most `MAX_JSON_BYTES`.

Avatar and media uploads have their own, larger limit, checked while streaming. Here
a declared Content-Length over the limit is refused before reading, and a chunked body is
counted as it arrives, so no request can make the server buffer an unbounded body.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException

from .errors import error_response

MAX_JSON_BYTES = 1024 * 1024
# streamed to disk and limited by their stores (max_upload_mb)
UNLIMITED = {("POST", "/v1/avatars"), ("POST", "/v1/media")}


class BodyLimit:
    """ASGI middleware: 413 for bodies over `limit` bytes."""

    def __init__(self, app: Any, limit: int = MAX_JSON_BYTES) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) in UNLIMITED:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            response = error_response(413, "too_large", self._message(), "body")
            await response(scope, receive, send)
            return
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:  # FastAPI turns other errors while reading into a 400
                raise HTTPException(413, self._message())
            return message

        await self.app(scope, counted, send)

    def _message(self) -> str:
        return f"request body larger than {self.limit} bytes"
