"""Per-tenant storage quota on uploads: counted exactly, in flight too, per tenant."""

from __future__ import annotations

import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image
from server_process import TENANT_KEYS, ServerProcess

from avatarfarm.server.api.errors import ApiError
from avatarfarm.server.api.quota import StorageQuota
from avatarfarm.server.api.uploads import tenant_folder


def _keep(root, tenant: str, content_id: str, size: int) -> None:
    folder = tenant_folder(root, tenant)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{content_id}.json").write_text(json.dumps({"id": content_id, "size_bytes": size}))


def test_stored_bytes_of_both_stores_count_against_one_quota(tmp_path):
    avatars, media = tmp_path / "avatars", tmp_path / "media"
    quota = StorageQuota(1000, (avatars, media), slack_bytes=500)
    _keep(avatars, "t1", "a" * 64, 400)
    _keep(media, "t1", "b" * 64, 500)
    _keep(media, "t2", "c" * 64, 900)
    assert quota.stored("t1") == 900 and quota.stored("t2") == 900
    with quota.upload("t1") as upload, pytest.raises(ApiError) as refused:
        upload.add(400)  # streaming may pass the quota by the slack ...
        upload.check("d" * 64)  # ... but it is not kept
    assert refused.value.status == 413 and refused.value.code == "quota_exceeded"
    assert "storage quota" in refused.value.message
    with quota.upload("t1") as upload, pytest.raises(ApiError):
        upload.add(601)  # past the slack: refused while it streams
    with quota.upload("t1") as upload:
        upload.add(100)  # exactly full is allowed
        upload.check("d" * 64)
    with quota.upload("t1") as upload:  # content it already keeps is not counted twice
        upload.add(500)
        upload.check("b" * 64)


def test_uploads_in_flight_count_so_parallel_ones_cannot_pass_together(tmp_path):
    quota = StorageQuota(1000, (tmp_path,))
    first = quota.upload("t1").__enter__()
    first.add(600)
    with quota.upload("t1") as second, pytest.raises(ApiError):
        second.add(600)  # 600 in flight plus 600 more
    with quota.upload("t2") as other:  # another tenant is not affected
        other.add(900)
    first.__exit__(None, None, None)  # the first one was dropped: its bytes are free again
    with quota.upload("t1") as third:
        third.add(1000)
        third.check("e" * 64)


def test_parallel_uploads_cannot_keep_more_than_the_quota(tmp_path):
    quota = StorageQuota(10_000, (tmp_path,), slack_bytes=1000)
    accepted, refused, hold = [], [], threading.Event()

    def upload(i: int) -> None:
        with quota.upload("t1") as up:
            try:
                for _ in range(100):
                    up.add(10)
                up.check(f"{i:064x}")
            except ApiError:
                refused.append(i)
                return
            accepted.append(i)
            hold.wait(10)  # kept uploads stay counted until every other one has tried

    with ThreadPoolExecutor(32) as pool:
        for i in range(32):
            pool.submit(upload, i)
        deadline = time.monotonic() + 10
        while len(accepted) + len(refused) < 32 and time.monotonic() < deadline:
            time.sleep(0.01)
        hold.set()
    assert len(accepted) + len(refused) == 32
    assert len(accepted) <= 10  # 10 uploads of 1000 bytes fill 10_000
    assert quota._inflight["t1"] == 0


def _noise_png(seed: int, side: int = 700) -> bytes:
    """An incompressible image (~1.4 MB), so a few of them fill a small quota."""
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG", compress_level=1)
    return out.getvalue()


def test_server_refuses_uploads_past_a_tenants_quota(tmp_path):
    first, second = _noise_png(1), _noise_png(2)
    assert 1.3e6 < len(first) < 1.6e6
    env = {"AVATARFARM_TENANT_STORAGE_MB": "2.5", "AVATARFARM_CAPACITY_PROBE": "0"}
    with ServerProcess(tmp_path, env=env) as server:
        t1, t2 = (server.client(TENANT_KEYS[t]) for t in ("t1", "t2"))
        with t1, t2:
            kept = t1.post("/v1/media", content=first)
            assert kept.status_code == 201
            refused = t1.post("/v1/media", content=second)
            assert refused.status_code == 413, refused.text
            error = refused.json()["error"]
            assert error["code"] == "quota_exceeded" and "2.5 MiB" in error["message"]
            assert t2.post("/v1/media", content=second).status_code == 201  # per tenant
            assert t1.post("/v1/media", content=first).status_code == 201  # same content again
            assert t1.delete(f"/v1/media/{kept.json()['id']}").status_code == 204
            assert t1.post("/v1/media", content=second).status_code == 201  # room again
            assert [m["size_bytes"] for m in t1.get("/v1/media").json()] == [len(second)]
    assert not list((tmp_path / "data").rglob("*.part"))  # refused uploads leave nothing
