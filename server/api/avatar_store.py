"""Uploaded avatars: per tenant, content-addressed (sha256), validated by the asset loader.

Files are always loaded from bytes, never from their stored path, so a .gltf cannot
reach other files (another tenant's avatars) through relative URIs. Loaded assets are
kept in a small cache because sessions of one avatar share its renderer pool entry.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from avatarfarm.render.asset import AssetError, AvatarAsset
from avatarfarm.render.avatars import load
from avatarfarm.render.gltf import AssetLimits, load_avatar

from .errors import ApiError
from .quota import QuotaUpload
from .uploads import CONTENT_ID, records, spool, tenant_folder

CACHE_SIZE = 16


class AvatarStore:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.limits = AssetLimits(max_file_bytes=max_bytes)
        self._cache: OrderedDict[tuple[str, str], AvatarAsset] = OrderedDict()
        self._lock = threading.Lock()

    def _dir(self, tenant: str) -> Path:
        return tenant_folder(self.root, tenant)

    async def receive(
        self, tenant: str, chunks: AsyncIterator[bytes], declared: int | None, upload: QuotaUpload
    ):
        """Spool an upload to disk, counting bytes; 413 as soon as it passes a limit."""
        return await spool(self._dir(tenant), chunks, declared, self.max_bytes, "avatar", upload)

    def commit(
        self, tenant: str, tmp: Path, avatar_id: str, size: int, upload: QuotaUpload
    ) -> dict[str, Any]:
        """Validate the spooled file (blocking: run in a worker thread) and keep it."""
        try:
            upload.check(avatar_id)
            asset = load_avatar(tmp.read_bytes(), limits=self.limits)
        except (AssetError, ApiError):
            tmp.unlink(missing_ok=True)
            raise
        folder = self._dir(tenant)
        record = {"id": avatar_id, "size_bytes": size, "summary": asset.summary()}
        (folder / f"{avatar_id}.json").write_text(json.dumps(record))
        os.replace(tmp, folder / f"{avatar_id}.bin")
        with self._lock:
            self._cache[(tenant, avatar_id)] = asset
            self._trim()
        return record

    def get(self, tenant: str, avatar_id: str) -> dict[str, Any]:
        path = self._path(tenant, avatar_id, ".json")
        return json.loads(path.read_text())

    def list(self, tenant: str) -> list[dict[str, Any]]:
        return records(self._dir(tenant))

    def delete(self, tenant: str, avatar_id: str) -> None:
        self._path(tenant, avatar_id, ".json").unlink(missing_ok=True)
        self._path(tenant, avatar_id, ".bin", check=False).unlink(missing_ok=True)
        with self._lock:
            self._cache.pop((tenant, avatar_id), None)

    def asset(self, tenant: str, avatar_id: str) -> AvatarAsset:
        """The loaded avatar (blocking on a cache miss: call from a worker thread)."""
        key = ("", "default") if avatar_id == "default" else (tenant, avatar_id)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        if avatar_id == "default":
            asset = load("default")
        else:
            data = self._path(tenant, avatar_id, ".bin").read_bytes()
            asset = load_avatar(data, limits=self.limits)
        with self._lock:
            self._cache[key] = asset
            self._trim()
        return asset

    def _path(self, tenant: str, avatar_id: str, suffix: str, check: bool = True) -> Path:
        path = self._dir(tenant) / f"{avatar_id}{suffix}"
        if not CONTENT_ID.match(avatar_id) or (check and not path.is_file()):
            raise ApiError(404, f"no avatar {avatar_id}", "id")
        return path

    def _trim(self) -> None:
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
