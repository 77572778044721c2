"""Per-tenant storage quota: the bytes one tenant may keep in avatars and media together.

Without it one tenant could fill the server's disk one upload at a time. Uploads still
arriving count too, so parallel uploads cannot pass the quota together. While it streams,
an upload is refused (413) once the stored bytes plus every upload in flight pass the
quota by more than one upload's size (its content may be one the tenant already keeps,
which costs nothing: uploads are content-addressed); before it is kept, the check is
exact.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

from .errors import ApiError
from .uploads import records, tenant_folder


class StorageQuota:
    def __init__(self, limit_bytes: int, roots: tuple[Path, ...], slack_bytes: int = 0) -> None:
        self.limit = limit_bytes
        self.roots = roots
        self.slack = slack_bytes  # the largest upload: how far streaming may pass the limit
        self._lock = threading.Lock()
        self._inflight: Counter[str] = Counter()

    def stored(self, tenant: str, excluding: str | None = None) -> int:
        """Bytes the tenant keeps now (an upload of content it already has is not new)."""
        return sum(
            int(record.get("size_bytes", 0))
            for root in self.roots
            for record in records(tenant_folder(root, tenant))
            if record.get("id") != excluding
        )

    def upload(self, tenant: str) -> QuotaUpload:
        return QuotaUpload(self, tenant)

    def _refuse(self, tenant: str, stored: int) -> ApiError:
        mib = 1024 * 1024
        return ApiError(
            413,
            f"storage quota of {self.limit / mib:.4g} MiB for this tenant would be exceeded "
            f"({stored / mib:.1f} MiB stored); delete avatars or media first",
            "body", code="quota_exceeded",
        )  # fmt: skip


class QuotaUpload:
    """One upload's bytes counted against its tenant's quota until it is kept or dropped
    (a context manager around receiving and committing it)."""

    def __init__(self, quota: StorageQuota, tenant: str) -> None:
        self.quota, self.tenant, self.size = quota, tenant, 0
        self._stored = quota.stored(tenant)

    def __enter__(self) -> QuotaUpload:
        return self

    def __exit__(self, *exc: object) -> None:
        with self.quota._lock:
            self.quota._inflight[self.tenant] -= self.size
            self.size = 0

    def add(self, n: int) -> None:
        """Count `n` more bytes received; 413 once stored plus in-flight bytes pass the quota
        by more than the slack."""
        q = self.quota
        with q._lock:
            q._inflight[self.tenant] += n
            self.size += n
            if self._stored + q._inflight[self.tenant] > q.limit + q.slack:
                raise q._refuse(self.tenant, self._stored)

    def check(self, content_id: str) -> None:
        """Exactly, before the upload is kept: what is stored now, the other uploads in
        flight and this one (unless the tenant already has this content)."""
        q = self.quota
        with q._lock:
            stored = q.stored(self.tenant, excluding=content_id)
            if stored + q._inflight[self.tenant] > q.limit:
                raise q._refuse(self.tenant, stored)
