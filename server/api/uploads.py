"""Streamed uploads: spooled to disk while counting bytes, refused as soon as they pass a
limit (a declared Content-Length over it is refused before the body is read)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ApiError

if TYPE_CHECKING:
    from .quota import QuotaUpload

CONTENT_ID = re.compile(r"^[0-9a-f]{64}$")
"""An upload's id: the sha256 of its bytes, in hex."""


def records(folder: Path) -> list[dict[str, Any]]:
    """The JSON records kept next to a tenant's uploads, in id order."""
    if not folder.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def tenant_folder(root: Path, tenant: str) -> Path:
    """The tenant's folder under `root`; tenant names never appear in paths."""
    return root / hashlib.sha256(tenant.encode()).hexdigest()[:24]


async def spool(
    folder: Path,
    chunks: AsyncIterator[bytes],
    declared: int | None,
    max_bytes: int,
    what: str,
    upload: QuotaUpload,
) -> tuple[Path, str, int]:
    """(temporary file, sha256 hex, size) of an upload; 413 past `max_bytes` or the
    tenant's storage quota (`upload` counts the bytes), 422 if empty."""
    if declared is not None and declared > max_bytes:
        raise ApiError(413, f"{what} larger than {max_bytes} bytes", "body")
    folder.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise ApiError(413, f"{what} larger than {max_bytes} bytes", "body")
                upload.add(len(chunk))
                digest.update(chunk)
                out.write(chunk)
        if size == 0:
            raise ApiError(422, f"empty upload: send the {what} file as the body", "body")
        return Path(tmp), digest.hexdigest(), size
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def binary_body(description: str, *media_types: str) -> dict:
    """OpenAPI for a route whose body is a file's raw bytes (not JSON)."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    content = {t: binary for t in (*media_types, "application/octet-stream")}
    return {"requestBody": {"required": True, "description": description, "content": content}}


def declared_length(header: str | None) -> int | None:
    try:
        return int(header) if header is not None else None
    except ValueError:
        raise ApiError(400, "Content-Length must be a number", "Content-Length") from None
