"""Schemathesis against the real server's /openapi.json: no input may produce a 5xx.

Bounded (few examples per operation) to keep CI short. Drain is left out (it would end
the shared server) and so is the endless MJPEG stream.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from server_process import TENANT_KEYS, shared_server

schemathesis = pytest.importorskip("schemathesis")


@pytest.fixture(scope="module")
def api_schema():
    server = shared_server()
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    return schema.exclude(path_regex=r"/v1/admin/drain|preview\.mjpg")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_server_errors(case):
    response = case.call(headers={"Authorization": f"Bearer {TENANT_KEYS['t1']}"}, timeout=60)
    assert response.status_code < 500, (case.method, case.path, response.text[:300])
    if response.status_code >= 400 and response.headers.get("content-type") == "application/json":
        body = response.json()
        assert set(body["error"]) == {"code", "message", "field"}
    if case.method == "POST" and case.path == "/v1/sessions" and response.status_code == 201:
        with shared_server().client(TENANT_KEYS["t1"]) as client:  # keep the server light
            client.delete(f"/v1/sessions/{response.json()['id']}")
