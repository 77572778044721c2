"""Uploaded scene media (backgrounds, product cards): per tenant, content-addressed.

A platform backend cannot put files on the server's disk, so it uploads them here and
refers to them as `media:<id>` in scenes, next to the operator's media folder
(`media:<name>`). Each upload is decoded once with the same loaders scenes use, so what is
accepted here also renders: an image (anything Pillow reads) or a short video (PyAV;
scenes loop at most 10 s of it).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from PIL import Image

from avatarfarm.render import layers

from .errors import ApiError
from .models import MediaLookup
from .quota import QuotaUpload
from .uploads import CONTENT_ID, records, spool, tenant_folder

SUFFIXES = {"image": ".image", "video": ".mp4"}  # scenes pick the video loader by suffix
PROBE_SIZE = (64, 36)


class MediaStore:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes

    async def receive(
        self, tenant: str, chunks: AsyncIterator[bytes], declared: int | None, upload: QuotaUpload
    ):
        return await spool(tenant_folder(self.root, tenant), chunks, declared, self.max_bytes,
                           "media", upload)  # fmt: skip

    def commit(
        self, tenant: str, tmp: Path, media_id: str, size: int, upload: QuotaUpload
    ) -> dict[str, Any]:
        """Decode the spooled file (blocking: run in a worker thread) and keep it."""
        try:
            upload.check(media_id)
            kind, width, height = _probe(tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        folder = tenant_folder(self.root, tenant)
        record = {"id": media_id, "kind": kind, "size_bytes": size, "width": width,
                  "height": height}  # fmt: skip
        (folder / f"{media_id}.json").write_text(json.dumps(record))
        os.replace(tmp, folder / f"{media_id}{SUFFIXES[kind]}")
        return record

    def get(self, tenant: str, media_id: str) -> dict[str, Any]:
        return json.loads(self._record(tenant, media_id).read_text())

    def list(self, tenant: str) -> list[dict[str, Any]]:
        return records(tenant_folder(self.root, tenant))

    def delete(self, tenant: str, media_id: str) -> None:
        self._record(tenant, media_id).unlink(missing_ok=True)
        path = self.file(tenant, media_id)
        if path is not None:
            path.unlink(missing_ok=True)

    def file(self, tenant: str, media_id: str) -> Path | None:
        if not CONTENT_ID.match(media_id):
            return None
        folder = tenant_folder(self.root, tenant)
        for suffix in SUFFIXES.values():
            path = folder / f"{media_id}{suffix}"
            if path.is_file():
                return path
        return None

    def lookup(self, tenant: str, media_dir: Path | None) -> MediaLookup:
        """The tenant's uploads by id, then the operator's media folder by name."""

        def find(name: str) -> Path | None:
            uploaded = self.file(tenant, name)
            if uploaded is not None or media_dir is None:
                return uploaded
            root = Path(media_dir).resolve()
            path = (root / name).resolve()
            return path if path.is_relative_to(root) and path.is_file() else None

        return find

    def _record(self, tenant: str, media_id: str) -> Path:
        path = tenant_folder(self.root, tenant) / f"{media_id}.json"
        if not CONTENT_ID.match(media_id) or not path.is_file():
            raise ApiError(404, f"no media {media_id}", "id")
        return path


def _probe(path: Path) -> tuple[str, int, int]:
    """('image' | 'video', width, height), decoding the file as a scene would; 422 if not."""
    try:
        with Image.open(path) as im:
            width, height = im.size
    except (OSError, Image.DecompressionBombError):
        pass  # not an image: maybe a video
    else:
        try:
            layers.check_image_size(width, height)  # before anything decodes it
        except layers.LayerError as exc:
            raise ApiError(422, str(exc), "body", code="invalid_media") from None
        try:
            layers.image_background(path, *PROBE_SIZE)
            return "image", width, height
        except layers.LayerError:
            pass  # a broken image: the video loader gets its turn and its 422
    import av

    try:
        with av.open(os.fspath(path)) as container:
            if not container.streams.video:
                raise layers.LayerError("no video stream")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
        layers.video_background(path, *PROBE_SIZE, fps=1.0)
        return "video", width, height
    except (av.FFmpegError, OSError, layers.LayerError):
        raise ApiError(
            422,
            "not an image, or a video of at most 10 s, that this server can decode",
            "body",
            code="invalid_media",
        ) from None
