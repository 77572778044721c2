"""Auth and tenant isolation on every route, against the real server process.

ROUTES must list every operation in /openapi.json (checked), so a new route cannot ship
without being covered here.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image
from server_process import TENANT_KEYS, shared_server

SMALL = {"width": 160, "height": 120, "fps": 24, "encoder": "none"}
AVATAR = "a" * 64

# (method, path template, tenant-scoped: another tenant gets 404)
ROUTES = [
    ("GET", "/v1/avatars", False),
    ("POST", "/v1/avatars", False),
    ("GET", "/v1/avatars/{avatar_id}", True),
    ("DELETE", "/v1/avatars/{avatar_id}", True),
    ("GET", "/v1/media", False),
    ("POST", "/v1/media", False),
    ("GET", "/v1/media/{media_id}", True),
    ("DELETE", "/v1/media/{media_id}", True),
    ("GET", "/v1/sessions", False),
    ("POST", "/v1/sessions", False),
    ("GET", "/v1/sessions/{session_id}", True),
    ("PATCH", "/v1/sessions/{session_id}", True),
    ("DELETE", "/v1/sessions/{session_id}", True),
    ("POST", "/v1/sessions/{session_id}/outputs", True),
    ("DELETE", "/v1/sessions/{session_id}/outputs/{output_id}", True),
    ("PUT", "/v1/sessions/{session_id}/pose", True),
    ("POST", "/v1/sessions/{session_id}/drivers", True),
    ("GET", "/v1/sessions/{session_id}/drivers", True),
    ("DELETE", "/v1/sessions/{session_id}/drivers/{driver_id}", True),
    ("GET", "/v1/sessions/{session_id}/snapshot.jpg", True),
    ("GET", "/v1/sessions/{session_id}/preview.mjpg", True),
    ("GET", "/v1/sessions/{session_id}/hls/{name}", True),
    ("GET", "/v1/capacity", False),
    ("POST", "/v1/admin/drain", False),
]
OPEN_ROUTES = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")}
BODIES = {
    ("PATCH", "/v1/sessions/{session_id}"): {"bitrate_kbps": 1000},
    ("POST", "/v1/sessions/{session_id}/outputs"): {"url": "hls:"},
    ("PUT", "/v1/sessions/{session_id}/pose"): {"head": {"yaw": 5}},
    ("POST", "/v1/sessions/{session_id}/drivers"): {"type": "vmc"},
    ("POST", "/v1/sessions"): {"video": SMALL},
}


@pytest.fixture(scope="module")
def server():
    return shared_server()


@pytest.fixture(scope="module")
def owned(server):
    """A session, an avatar and a media file of tenant t1, for t2 to try to reach."""
    with server.client(TENANT_KEYS["t1"]) as t1:
        s = t1.post("/v1/sessions", json={"video": {**SMALL, "encoder": "x264",
                                                    "bitrate_kbps": 300}}).json()  # fmt: skip
        out = t1.post(f"/v1/sessions/{s['id']}/outputs", json={"url": "hls:"}).json()
        image = io.BytesIO()
        Image.new("RGB", (8, 8), (1, 2, 3)).save(image, format="PNG")
        media = t1.post("/v1/media", content=image.getvalue()).json()
        yield {"session_id": s["id"], "output_id": out["id"], "avatar_id": AVATAR,
               "name": "index.m3u8", "driver_id": "d1", "media_id": media["id"]}  # fmt: skip
        t1.delete(f"/v1/sessions/{s['id']}")
        t1.delete(f"/v1/media/{media['id']}")


def _path(template: str, values: dict[str, str]) -> str:
    return template.format(**values)


def test_route_table_covers_the_api(server):
    spec = server.client().get("/openapi.json").json()
    listed = {
        (method.upper(), path)
        for path, ops in spec["paths"].items()
        for method in ops
        if method in ("get", "post", "put", "patch", "delete")
    }
    assert listed == {(m, p) for m, p, _ in ROUTES} | OPEN_ROUTES


@pytest.mark.parametrize("method,template,_", ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
@pytest.mark.parametrize(
    "key", [None, "wrong-key-000", "Basic dDE6a2V5"], ids=["none", "bad", "basic"]
)
def test_every_v1_route_needs_a_valid_key(server, owned, method, template, _, key):
    headers = {}
    if key is not None:
        headers["Authorization"] = key if key.startswith("Basic") else f"Bearer {key}"
    res = server.client().request(
        method, _path(template, owned), headers=headers, json=BODIES.get((method, template))
    )
    assert res.status_code == 401, res.text
    assert res.json()["error"]["code"] == "unauthorized"
    assert res.headers.get("www-authenticate") == "Bearer"


SCOPED = [(m, p) for m, p, scoped in ROUTES if scoped]


@pytest.mark.parametrize("method,template", SCOPED, ids=[f"{m} {p}" for m, p in SCOPED])
def test_other_tenants_get_404(server, owned, method, template):
    with server.client(TENANT_KEYS["t2"]) as t2:
        res = t2.request(method, _path(template, owned), json=BODIES.get((method, template)))
    assert res.status_code == 404, res.text
    assert res.json()["error"]["code"] == "not_found"
    with server.client(TENANT_KEYS["t1"]) as t1:  # still there for its owner
        assert t1.get(f"/v1/sessions/{owned['session_id']}").json()["state"] != "ended"


def test_tenant_lists_only_its_own_sessions(server, owned):
    with server.client(TENANT_KEYS["t2"]) as t2:
        assert owned["session_id"] not in {s["id"] for s in t2.get("/v1/sessions").json()}
    with server.client(TENANT_KEYS["t1"]) as t1:
        assert owned["session_id"] in {s["id"] for s in t1.get("/v1/sessions").json()}


def test_admin_route_refuses_tenant_keys(server):
    with server.client(TENANT_KEYS["t1"]) as t1:
        res = t1.post("/v1/admin/drain")
    assert res.status_code == 403
    assert server.client().get("/readyz").status_code == 200  # not drained
