"""`serve --demo` with no keys configured, then drain: the first-run path of a new user."""

from __future__ import annotations

import re
import time

import av
from server_process import ServerProcess


def test_demo_generated_key_loopback_and_drain(tmp_path):
    server = ServerProcess(
        tmp_path,
        env={"AVATARFARM_API_KEYS": "", "AVATARFARM_ADMIN_KEY": ""},
        args=("--demo", "--host", "0.0.0.0"),
    )
    with server:
        out = server.output()
        match = re.search(r"API key \(shown once\): (\S+)", out)
        assert match, out
        key = match.group(1)
        assert f"console at http://127.0.0.1:{server.port}/" in out
        assert "listening on 127.0.0.1 only" in out
        with server.client(key) as client:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                sessions = client.get("/v1/sessions").json()
                if sessions and sessions[0]["state"] == "live":
                    break
                time.sleep(0.2)
            assert sessions[0]["state"] == "live" and sessions[0]["driver"]["idle"]
            sid = sessions[0]["id"]
            assert client.get(f"/v1/sessions/{sid}/snapshot.jpg").status_code == 200
            cap = client.get("/v1/capacity").json()
            assert cap["live_sessions"] == 1 and cap["model"]["frame_cost_ms_720p"] > 0
            recorded = client.post("/v1/sessions", json={
                "video": {"width": 160, "height": 120, "fps": 24, "encoder": "x264"},
                "outputs": [{"url": "record:drain.mp4"}],
            })  # fmt: skip
            assert recorded.status_code == 201, recorded.text
            # a second of video (however slow this machine), then drain must finalize all of it
            rec_url = f"/v1/sessions/{recorded.json()['id']}"
            deadline = time.monotonic() + 60
            encoded = 0
            while encoded < 24:
                assert time.monotonic() < deadline, client.get(rec_url).json()
                time.sleep(0.2)
                encoded = client.get(rec_url).json()["stats"].get("frames_encoded", 0)

            res = client.post("/v1/admin/drain")
            assert res.status_code == 202 and res.json()["draining"]
            assert client.get("/readyz").status_code == 503
            refused = client.post("/v1/sessions", json={"video": {"encoder": "none"}})
            assert refused.status_code == 503
            deadline = time.monotonic() + 30
            while client.get(f"/v1/sessions/{sid}").json()["state"] != "ended":
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert server.stop() in (0, -15)  # uvicorn re-raises SIGTERM after a clean shutdown
    assert "Application shutdown complete" in server.output()
    (path,) = (tmp_path / "rec").rglob("drain.mp4")
    with av.open(str(path)) as container:  # finalized: it opens and decodes to the end
        frames = sum(1 for _ in container.decode(video=0))
    assert frames >= encoded
    assert server.output().count(key) == 1  # printed once, never logged
