"""End to end against the real server process on a loopback port (CPU renderer).

Sessions are small (160x120) so the loaded CI machine keeps up; every test deletes what
it creates because the server is shared by the API test modules.
"""

from __future__ import annotations

import contextlib
import io
import socket
import struct
import time
import zlib

import httpx
import numpy as np
import pytest
from PIL import Image
from server_process import ADMIN_KEY, TENANT_KEYS, shared_server

from avatarfarm.render.avatars import load
from avatarfarm.render.glb_export import to_glb_bytes

SMALL = {"width": 160, "height": 120, "fps": 24, "encoder": "none"}


@pytest.fixture(scope="module")
def server():
    return shared_server()


@pytest.fixture
def t1(server):
    with server.client(TENANT_KEYS["t1"]) as client:
        yield client


@pytest.fixture
def t2(server):
    with server.client(TENANT_KEYS["t2"]) as client:
        yield client


def create(client: httpx.Client, **body) -> dict:
    body.setdefault("video", SMALL)
    body.setdefault("driver", {"idle": False})
    res = client.post("/v1/sessions", json=body)
    assert res.status_code == 201, res.text
    return res.json()


def wait_state(client: httpx.Client, sid: str, state: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/v1/sessions/{sid}").json()
        if body["state"] == state or time.monotonic() > deadline:
            assert body["state"] == state, body
            return body
        time.sleep(0.1)


def eventually(predicate, timeout: float = 30.0) -> bool:
    """True once `predicate()` holds (the engine applies changes on its next tick)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def snapshot(client: httpx.Client, sid: str) -> np.ndarray:
    res = client.get(f"/v1/sessions/{sid}/snapshot.jpg")
    assert res.status_code == 200, res.text
    assert res.headers["content-type"] == "image/jpeg"
    return np.asarray(Image.open(io.BytesIO(res.content)).convert("RGB"), np.float32)


def test_session_lifecycle_patch_background_and_delete(t1):
    s = create(t1, scene={"background": "#0000ff"})
    assert s["state"] in ("starting", "live") and s["outputs"] == []
    wait_state(t1, s["id"], "live")
    before = snapshot(t1, s["id"])
    assert before[..., 2].mean() > before[..., 0].mean()  # blue background
    res = t1.patch(f"/v1/sessions/{s['id']}", json={"scene": {"background": "#ff0000"}})
    assert res.status_code == 200, res.text
    assert eventually(lambda: snapshot(t1, s["id"])[..., 0].mean() > before[..., 0].mean() + 50)
    assert any(s["id"] == x["id"] for x in t1.get("/v1/sessions").json())
    res = t1.delete(f"/v1/sessions/{s['id']}")
    assert res.status_code == 200 and res.json()["state"] == "ended"
    body = t1.get(f"/v1/sessions/{s['id']}").json()
    assert body["state"] == "ended" and body["stats"]["frames_rendered"] > 0
    assert 0 < body["stats"]["fps_rendered"] <= body["stats"]["fps"] == SMALL["fps"]
    assert t1.get(f"/v1/sessions/{s['id']}/snapshot.jpg").status_code == 409


def test_pose_changes_frame_and_is_validated(t1):
    s = create(t1)
    sid = s["id"]
    try:
        wait_state(t1, sid, "live")
        before = snapshot(t1, sid)
        pose = {"expressions": {"jawOpen": 1.0}, "head": {"yaw": 35, "pitch": 10, "roll": 0}}
        assert t1.put(f"/v1/sessions/{sid}/pose", json=pose).status_code == 204
        assert eventually(lambda: np.abs(snapshot(t1, sid) - before).mean() > 0.5)
        bad = t1.put(f"/v1/sessions/{sid}/pose", json={"expressions": {"nope": 1}})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "expressions.nope"
        nan = t1.put(
            f"/v1/sessions/{sid}/pose",
            content=b'{"expressions": {"jawOpen": NaN}}',
            headers={"content-type": "application/json"},
        )
        assert nan.status_code == 422
    finally:
        t1.delete(f"/v1/sessions/{sid}")


def test_outputs_added_and_removed_live_with_masked_urls(server, t1):
    s = create(t1, video={**SMALL, "encoder": "x264", "bitrate_kbps": 300})
    sid = s["id"]
    try:
        url = "rtmp://127.0.0.1:9/live/sk_SECRET"
        res = t1.post(f"/v1/sessions/{sid}/outputs", json={"url": url})
        assert res.status_code == 201, res.text
        assert res.json()["url"] == "rtmp://127.0.0.1:9/live/****"
        res = t1.post(f"/v1/sessions/{sid}/outputs", json={"url": "hls:"})
        assert res.status_code == 201, res.text
        hls = res.json()
        deadline = time.monotonic() + 60
        playlist = None
        while time.monotonic() < deadline:
            got = t1.get(f"/v1/sessions/{sid}/hls/index.m3u8")
            if got.status_code == 200 and ".ts" in got.text:
                playlist = got.text
                break
            time.sleep(0.3)
        assert playlist is not None and playlist.startswith("#EXTM3U")
        segment = next(line for line in playlist.splitlines() if line.endswith(".ts"))
        seg = t1.get(f"/v1/sessions/{sid}/hls/{segment}")
        assert seg.status_code == 200 and seg.content[:1] == b"\x47"  # MPEG-TS sync byte
        assert t1.get(f"/v1/sessions/{sid}/hls/..%2f..%2fetc%2fpasswd").status_code == 404
        view = t1.get(f"/v1/sessions/{sid}").text
        assert "sk_SECRET" not in view and "****" in view
        assert "sk_SECRET" not in server.client().get("/metrics").text
        assert t1.delete(f"/v1/sessions/{sid}/outputs/{hls['id']}").status_code == 204
        outputs = t1.get(f"/v1/sessions/{sid}").json()["outputs"]
        assert [o["url"] for o in outputs] == ["rtmp://127.0.0.1:9/live/****"]
        assert t1.delete(f"/v1/sessions/{sid}/outputs/{hls['id']}").status_code == 404
        for _ in range(7):  # 8 outputs at most, also when added live
            t1.post(f"/v1/sessions/{sid}/outputs", json={"url": "hls:"})
        res = t1.post(f"/v1/sessions/{sid}/outputs", json={"url": "hls:"})
        assert res.status_code == 422 and "at most 8" in res.json()["error"]["message"]
        # a refused scene leaves the whole PATCH undone, bitrate included
        patch = {"bitrate_kbps": 900, "scene": {"background": "media:nope"}}
        res = t1.patch(f"/v1/sessions/{sid}", json=patch)
        assert res.status_code == 422, res.text
        time.sleep(1.0)  # frames encoded since: a bitrate set anyway would show by now
        after = t1.get(f"/v1/sessions/{sid}").json()
        assert after["video"]["bitrate_kbps"] == after["stats"]["bitrate_kbps"] == 300
    finally:
        t1.delete(f"/v1/sessions/{sid}")
    assert "sk_SECRET" not in server.output()


def test_rtmp_output_is_pulled_and_decoded(t1, tmp_path):
    from nginx_rtmp import nginx_or_skip
    from stream_support import pull

    nginx = nginx_or_skip(tmp_path)
    try:
        url = nginx.url("e2e")
        s = create(t1, video={**SMALL, "encoder": "x264", "bitrate_kbps": 300},
                   outputs=[{"url": url}])  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                outputs = t1.get(f"/v1/sessions/{s['id']}").json()["outputs"]
                if outputs[0]["state"] == "live":
                    break
                time.sleep(0.2)
            thread, pulled = pull(url, seconds=1.0, timeout=60)
            thread.join(70)
            assert pulled.error is None, pulled.error
            assert (pulled.width, pulled.height) == (160, 120)
            assert len(pulled.frames) >= 10
        finally:
            res = t1.delete(f"/v1/sessions/{s['id']}")
        assert res.json()["state"] == "ended"
        assert res.json()["outputs"][0]["state"] == "closed"
    finally:
        nginx.stop()


def test_idempotency_key_returns_the_same_session(t1):
    body = {"video": SMALL, "driver": {"idle": False}}
    headers = {"Idempotency-Key": "order-42"}
    first = t1.post("/v1/sessions", json=body, headers=headers)
    second = t1.post("/v1/sessions", json=body, headers=headers)
    try:
        assert first.status_code == 201 and second.status_code == 201
        assert first.json()["id"] == second.json()["id"]
        assert second.headers.get("Idempotent-Replayed") == "true"
        other = t1.post("/v1/sessions", json={**body, "video": {**SMALL, "fps": 25}},
                        headers=headers)  # fmt: skip
        assert other.status_code == 409
    finally:
        t1.delete(f"/v1/sessions/{first.json()['id']}")


def test_capacity_refuses_with_503_and_reports_room(t1):
    huge = {"width": 3840, "height": 2160, "fps": 60, "encoder": "none"}
    res = t1.post("/v1/sessions", json={"video": huge})
    assert res.status_code == 503
    assert res.json()["error"]["code"] == "capacity"
    assert int(res.headers["Retry-After"]) > 0
    room = t1.get("/v1/capacity", params={"width": 3840, "height": 2160, "fps": 60}).json()
    assert room["room"] == 0
    small = t1.get("/v1/capacity", params={"width": 160, "height": 120, "fps": 24}).json()
    assert small["room"] > 0 and small["model"]["budget"] == 0.8


def test_tenant_quota_gives_429(t2):
    made = []
    try:
        for _ in range(4):
            made.append(create(t2)["id"])
        res = t2.post("/v1/sessions", json={"video": SMALL})
        assert res.status_code == 429 and res.json()["error"]["code"] == "quota_exceeded"
    finally:
        for sid in made:
            t2.delete(f"/v1/sessions/{sid}")


def test_avatar_upload_use_and_delete(t1, t2):
    glb = to_glb_bytes(load("default"))
    res = t1.post("/v1/avatars", content=glb, headers={"content-type": "model/gltf-binary"})
    assert res.status_code == 201, res.text
    avatar = res.json()
    assert len(avatar["id"]) == 64 and avatar["size_bytes"] == len(glb)
    assert avatar["summary"]["vertices"] > 0
    assert t1.get(f"/v1/avatars/{avatar['id']}").json()["id"] == avatar["id"]
    assert [a["id"] for a in t1.get("/v1/avatars").json()] == [avatar["id"]]
    assert t2.get(f"/v1/avatars/{avatar['id']}").status_code == 404
    assert t2.get("/v1/avatars").json() == []
    s = create(t1, avatar=avatar["id"])
    try:
        wait_state(t1, s["id"], "live")
        res = t1.delete(f"/v1/avatars/{avatar['id']}")
        assert res.status_code == 409 and res.json()["error"]["code"] == "in_use"
        assert t2.post("/v1/sessions", json={"avatar": avatar["id"], "video": SMALL}
                       ).status_code == 404  # fmt: skip
    finally:
        t1.delete(f"/v1/sessions/{s['id']}")
    assert t1.delete(f"/v1/avatars/{avatar['id']}").status_code == 204
    assert t1.get(f"/v1/avatars/{avatar['id']}").status_code == 404


def test_avatar_upload_limits_and_validation(server, t1):
    bad = t1.post("/v1/avatars", content=b"not a gltf file at all")
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_avatar"
    limit = 8 * 1024 * 1024  # the shared server's max_upload_mb

    def chunks():
        for _ in range(limit // 65536 + 2):
            yield b"\0" * 65536

    res = t1.post("/v1/avatars", content=chunks())  # chunked: no Content-Length
    assert res.status_code == 413
    # A declared size over the limit is refused before any body byte is sent.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/avatars HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n"
            + f"Authorization: Bearer {TENANT_KEYS['t1']}\r\n\r\n".encode()
        )
        head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 413")


def png(color: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


def short_video(seconds: float = 1.0) -> bytes:
    """A real H.264 MP4 (what a tenant would upload as a looping background)."""
    import av

    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(int(seconds * 12)):
            rgb = np.full((48, 64, 3), (20 * i) % 256, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode(None))
    return out.getvalue()


def test_media_upload_use_isolation_and_delete(t1, t2):
    res = t1.post("/v1/media", content=png((250, 10, 10)), headers={"content-type": "image/png"})
    assert res.status_code == 201, res.text
    media = res.json()
    assert (media["kind"], media["width"], media["height"]) == ("image", 64, 48)
    assert t1.get(f"/v1/media/{media['id']}").json() == media
    assert media["id"] in [m["id"] for m in t1.get("/v1/media").json()]
    assert t2.get(f"/v1/media/{media['id']}").status_code == 404
    assert media["id"] not in [m["id"] for m in t2.get("/v1/media").json()]
    # another tenant cannot use it: the reference is unknown to them
    res = t2.post("/v1/sessions", json={"scene": {"background": f"media:{media['id']}"},
                                        "video": SMALL})  # fmt: skip
    assert res.status_code == 422 and res.json()["error"]["field"] == "scene.background"
    ref = f"media:{media['id']}"
    s = create(t1, scene={"background": ref, "framing": "head"},
               driver={"idle": False, "standby": {"background": ref}})  # fmt: skip
    assert s["driver"]["standby"]["background"] == ref  # as written, not the server's path
    try:
        wait_state(t1, s["id"], "live")
        frame = snapshot(t1, s["id"])
        corner = frame[:20, :20].reshape(-1, 3).mean(axis=0)
        assert corner[0] > 200 and corner[1] < 60  # the uploaded red image is the background
        res = t1.delete(f"/v1/media/{media['id']}")
        assert res.status_code == 409 and res.json()["error"]["code"] == "in_use"
    finally:
        t1.delete(f"/v1/sessions/{s['id']}")
    assert t1.delete(f"/v1/media/{media['id']}").status_code == 204
    assert t1.get(f"/v1/media/{media['id']}").status_code == 404


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height: a few hundred bytes that would decode huge."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_media_upload_size_limits(t1):
    photo = np.random.default_rng(1).integers(0, 256, (720, 900, 3), np.uint8)
    out = io.BytesIO()
    Image.fromarray(photo).save(out, format="PNG")
    assert out.tell() > 1024 * 1024  # over the JSON routes' body limit, under max_upload_mb
    res = t1.post("/v1/media", content=out.getvalue(), headers={"content-type": "image/png"})
    assert res.status_code == 201, res.text
    assert t1.delete(f"/v1/media/{res.json()['id']}").status_code == 204
    bomb = t1.post("/v1/media", content=_png_header_only(7000, 7000))
    assert bomb.status_code == 422, bomb.text  # refused from its header, never decoded
    assert "7000x7000" in bomb.json()["error"]["message"]


def test_media_upload_video_and_bad_files(t1):
    res = t1.post("/v1/media", content=short_video(), headers={"content-type": "video/mp4"})
    assert res.status_code == 201, res.text
    video = res.json()
    assert (video["kind"], video["width"], video["height"]) == ("video", 64, 48)
    s = create(t1, scene={"background": f"media:{video['id']}"})
    try:
        wait_state(t1, s["id"], "live")
    finally:
        t1.delete(f"/v1/sessions/{s['id']}")
    assert t1.delete(f"/v1/media/{video['id']}").status_code == 204
    bad = t1.post("/v1/media", content=b"neither an image nor a video")
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_media"
    assert "/" not in bad.json()["error"]["message"]  # no server paths in errors
    assert t1.post("/v1/media", content=b"").status_code == 422
    assert t1.get("/v1/media/..%2F..%2Favatars").status_code == 404


def test_json_bodies_are_bounded(server, t1):
    big = b'{"video": {"width": 160, "height": 120}, "pad": "' + b"x" * (2 << 20) + b'"}'
    res = t1.post("/v1/sessions", content=big, headers={"content-type": "application/json"})
    assert res.status_code == 413 and res.json()["error"]["code"] == "too_large"

    def chunks():
        yield b'{"expressions": {"jawOpen": 1}, "pad": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}'

    res = t1.put("/v1/sessions/s_0/pose", content=chunks(),
                 headers={"content-type": "application/json"})  # fmt: skip
    assert res.status_code == 413


def test_validation_errors_name_the_field(t1):
    cases = [
        ({"video": {**SMALL, "width": 161}}, "video"),
        ({"video": {**SMALL, "fps": 29}}, "video.fps"),
        ({"video": {**SMALL, "codec": "vp9"}}, "video.codec"),
        ({"video": {**SMALL, "bitrate_kbps": 10}}, "video.bitrate_kbps"),
        ({"video": SMALL, "outputs": [{"url": "file:///etc/passwd"}]}, "outputs.0.url"),
        ({"video": SMALL, "scene": {"background": "/etc/passwd"}}, "scene.background"),
        ({"video": SMALL, "scene": {"label": {"enabled": False}}}, "scene.label.enabled"),
        ({"video": SMALL, "bogus": 1}, "bogus"),
        ({"video": {**SMALL, "width": "160"}}, "video.width"),
    ]
    for body, field in cases:
        res = t1.post("/v1/sessions", json=body)
        assert res.status_code == 422, (body, res.text)
        assert res.json()["error"]["field"] == field, (body, res.json())
    json_type = {"content-type": "application/json"}
    res = t1.post("/v1/sessions", content=b"{not json", headers=json_type)
    assert res.status_code == 422 and set(res.json()["error"]) == {"code", "message", "field"}
    assert t1.get("/v1/nothing-here").json()["error"]["code"] == "not_found"


def test_health_readiness_and_metrics(server, t1):
    anon = server.client()
    assert anon.get("/healthz").json() == {"status": "ok"}
    assert anon.get("/readyz").status_code == 200
    s = create(t1)
    try:
        wait_state(t1, s["id"], "live")
        text = anon.get("/metrics").text
    finally:
        t1.delete(f"/v1/sessions/{s['id']}")
    assert 'avatarfarm_sessions{state="live"}' in text
    assert "avatarfarm_frames_rendered_total" in text
    assert "avatarfarm_tick_duration_seconds_bucket" in text
    assert "avatarfarm_live_encode_latency_seconds_bucket" in text
    assert "process_resident_memory_bytes" in text
    for key in (*TENANT_KEYS.values(), ADMIN_KEY):
        assert key not in text and key not in server.output()


def test_previews_are_limited_per_tenant_and_freed_when_watchers_leave(t1):
    s = create(t1)
    url = f"/v1/sessions/{s['id']}/preview.mjpg"
    try:
        wait_state(t1, s["id"], "live")
        with contextlib.ExitStack() as watching:
            parts = []  # each watcher's part iterator, kept: dropping it would hang up
            for _ in range(8):
                res = watching.enter_context(t1.stream("GET", url))
                assert res.status_code == 200
                parts.append(res.iter_bytes())
                assert next(parts[-1]).startswith(b"--")  # a JPEG part arrives
            res = t1.get(url)
            assert res.status_code == 429 and res.json()["error"]["code"] == "quota_exceeded"
        deadline = time.monotonic() + 10  # the watchers left: their places come back
        while True:
            with t1.stream("GET", url) as res:
                if res.status_code == 200:
                    break
            assert time.monotonic() < deadline, "preview places were not given back"
            time.sleep(0.2)
    finally:
        t1.delete(f"/v1/sessions/{s['id']}")
