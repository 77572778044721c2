"""Live driving end to end: the real server process, real packets, real peers.

VMC from python-osc as VSeeFace sends it, Live Link Face bytes built by the version-6
layout, WebSocket clients (the `websockets` library), pushed audio pulled back from nginx
through PyAV. Frames are 192x192 in head framing so mouth, eyes and head are visible;
snapshots are compared by region (mouth rows 130-165, eyes rows 80-105 of the default
avatar in head framing). Idle is off unless a test is about it, so idle motion cannot be
mistaken for a driven change; the IdleBank's 60 s >= 10 blinks property is tested in
test_drivers_idle.py.
"""

from __future__ import annotations

import io
import json
import math
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import av
import httpx
import numpy as np
import pytest
from PIL import Image
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder
from server_process import TENANT_KEYS, shared_server
from test_drivers_audio import VOWELS, vowel
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from avatarfarm.server.drivers.livelink import LIVELINK_NAMES, encode_packet
from avatarfarm.server.drivers.websocket import encode_binary

SMALL = {"width": 192, "height": 192, "fps": 30, "encoder": "none"}
HEAD = {"framing": "head", "background": "#203040"}
MOUTH = (slice(130, 165), slice(70, 120))
EYES = (slice(80, 105), slice(55, 135))


@pytest.fixture(scope="module")
def server():
    return shared_server()


@pytest.fixture
def t1(server):
    with server.client(TENANT_KEYS["t1"]) as client:
        yield client


def create(client: httpx.Client, **body) -> str:
    body.setdefault("video", SMALL)
    body.setdefault("scene", HEAD)
    driver = {"idle": False, "smoothing": "none", **body.pop("driver", {})}
    res = client.post("/v1/sessions", json={**body, "driver": driver})
    assert res.status_code == 201, res.text
    sid = res.json()["id"]
    assert eventually(lambda: client.get(f"/v1/sessions/{sid}").json()["state"] == "live", 120)
    return sid


def eventually(predicate, timeout: float = 20.0, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


def snapshot(client: httpx.Client, sid: str) -> np.ndarray:
    res = client.get(f"/v1/sessions/{sid}/snapshot.jpg")
    assert res.status_code == 200, res.text
    return np.asarray(Image.open(io.BytesIO(res.content)).convert("L"), np.float32)


def changed(client: httpx.Client, sid: str, before: np.ndarray, region=None, by=3.0) -> bool:
    """True once the snapshot differs from `before` (in `region`) by `by` grey levels."""
    region = region or (slice(None), slice(None))

    def differs() -> bool:
        return float(np.abs(snapshot(client, sid) - before)[region].mean()) > by

    return eventually(differs)


def driver(client: httpx.Client, sid: str, **body) -> dict:
    res = client.post(f"/v1/sessions/{sid}/drivers", json=body)
    assert res.status_code == 201, res.text
    return res.json()


def metric(server, name: str, **labels) -> float:
    text = server.client().get("/metrics").text
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(p in line for p in want.split(",")):
            total += float(line.rsplit(" ", 1)[1])
    return total


def osc(address: str, *args) -> bytes:
    builder = OscMessageBuilder(address)
    for arg in args:
        builder.add_arg(arg)
    return builder.build()


def vmc_frame(blends: dict[str, float], head_yaw: float = 0.0) -> bytes:
    """One VSeeFace-style bundle: Root, Head bone (Unity quaternion), blends, Apply, OK, T."""
    half = math.radians(-head_yaw) / 2  # Unity yaw -y turns the face to the avatar's left
    bundle = OscBundleBuilder(IMMEDIATELY)
    bundle.add_content(osc("/VMC/Ext/OK", 1))
    bundle.add_content(osc("/VMC/Ext/T", time.monotonic()))
    bundle.add_content(osc("/VMC/Ext/Root/Pos", "root", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    bundle.add_content(
        osc("/VMC/Ext/Bone/Pos", "Head", 0.0, 0.05, 0.0, 0.0, math.sin(half), 0.0, math.cos(half))
    )
    for name, value in blends.items():
        bundle.add_content(osc("/VMC/Ext/Blend/Val", name, float(value)))
    bundle.add_content(osc("/VMC/Ext/Blend/Apply"))
    return bundle.build().dgram


class Sender:
    """Sends a datagram to a port at 30 Hz in a thread (as capture apps do) until stopped."""

    def __init__(self, port: int) -> None:
        self.port, self.data = port, b""
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sender:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def _run(self) -> None:
        while not self._stop.wait(1 / 30):
            if self.data:
                self.sock.sendto(self.data, ("127.0.0.1", self.port))


def test_vmc_from_python_osc_drives_mouth_eyes_and_head(server, t1):
    sid = create(t1)
    try:
        port = driver(t1, sid, type="vmc")
        assert port["type"] == "vmc" and port["host"] == "127.0.0.1" and port["port"] > 0
        neutral = snapshot(t1, sid)
        with Sender(port["port"]) as sender:
            sender.data = vmc_frame({"A": 1.0, "Blink": 0.0})  # VRM 0.x preset names
            assert changed(t1, sid, neutral, MOUTH)
            sender.data = vmc_frame({"A": 0.0, "Blink": 1.0})
            assert changed(t1, sid, neutral, EYES)
            sender.data = vmc_frame({"A": 0.0, "Blink": 0.0}, head_yaw=25.0)
            assert changed(t1, sid, neutral, by=4.0)
        drivers = t1.get(f"/v1/sessions/{sid}/drivers").json()
        assert drivers["active"][0]["stats"]["applied"] > 0
        (record,) = [h for h in drivers["history"] if h["type"] == "vmc"]
        assert record["address"].startswith("127.0.0.1:") and record["last_input_at"]
        assert metric(server, "avatarfarm_driver_packets_total", type="vmc") > 0
        assert t1.delete(f"/v1/sessions/{sid}/drivers/{port['id']}").status_code == 204
        assert t1.get(f"/v1/sessions/{sid}/drivers").json()["active"] == []
        history = t1.get(f"/v1/sessions/{sid}/drivers").json()["history"]
        assert history[0]["disconnected_at"] is not None
        assert t1.delete(f"/v1/sessions/{sid}/drivers/{port['id']}").status_code == 404
    finally:
        t1.delete(f"/v1/sessions/{sid}")


def test_livelink_bytes_open_the_jaw_and_allowed_sources_filter(server, t1):
    sid = create(t1)
    try:
        blocked = driver(t1, sid, type="livelink", allowed=["10.9.8.7"])
        port = driver(t1, sid, type="livelink")
        assert port["port"] != blocked["port"]
        values = np.zeros(61, np.float32)
        values[LIVELINK_NAMES.index("jawOpen")] = 1.0
        neutral = snapshot(t1, sid)
        with Sender(blocked["port"]) as sender:  # from 127.0.0.1: not allowed, dropped
            sender.data = encode_packet(values)
            time.sleep(0.5)
        drivers = {d["id"]: d for d in t1.get(f"/v1/sessions/{sid}/drivers").json()["active"]}
        assert drivers[blocked["id"]]["stats"].get("dropped_source", 0) > 0
        assert drivers[blocked["id"]]["stats"].get("applied", 0) == 0
        assert float(np.abs(snapshot(t1, sid) - neutral)[MOUTH].mean()) < 2.0
        with Sender(port["port"]) as sender:
            sender.data = encode_packet(values)
            assert changed(t1, sid, neutral, MOUTH)
        reason = {"type": "livelink", "reason": "dropped_source"}
        assert metric(server, "avatarfarm_driver_rejected_total", **reason) > 0
    finally:
        t1.delete(f"/v1/sessions/{sid}")


def ws_url(server, sid: str, route: str, key: str | None = None) -> str:
    base = server.url.replace("http://", "ws://") + f"/v1/sessions/{sid}/{route}"
    return base + (f"?key={key}" if key else "")


def refused(url: str, first: str | None = None) -> tuple[int, dict]:
    """Close code and error body of a refused WebSocket (after sending `first`)."""
    with connect(url) as ws:
        if first:
            ws.send(first)
        body = json.loads(ws.recv(10))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(10)
    return closed.value.rcvd.code, body


def test_websocket_drive_json_and_binary_and_its_auth(server, t1):
    sid = create(t1)
    key = TENANT_KEYS["t1"]
    try:
        neutral = snapshot(t1, sid)
        headers = {"Authorization": f"Bearer {key}"}
        with connect(ws_url(server, sid, "drive"), additional_headers=headers) as ws:
            ws.send(json.dumps({"t": 1, "expressions": {"jawOpen": 1.0}}))
            assert changed(t1, sid, neutral, MOUTH)
            ws.send("not json")  # counted and skipped, the socket stays open
            ws.send(json.dumps({"t": 2, "expressions": {"jawOpen": 0.0}}))
            ws.send(encode_binary(3.0, head=np.array([25.0, 0.0, 0.0])))
            assert changed(t1, sid, neutral, by=4.0)
        with connect(ws_url(server, sid, "drive", key)) as ws:  # browsers: ?key=
            eyes = {"left": {"yaw": 20}, "right": {"yaw": 20}}
            ws.send(json.dumps({"t": 1, "head": {"yaw": 0}, "eyes": eyes}))
        with connect(ws_url(server, sid, "drive")) as ws:  # or a first auth message
            ws.send(json.dumps({"auth": key}))
            ws.send(json.dumps({"t": 5, "head": {"yaw": 0, "pitch": 0, "roll": 0}}))
            ws.send(json.dumps({"t": 4, "head": {"yaw": 30}}))  # older: stale, dropped
        assert t1.get(f"/v1/sessions/{sid}").json()["state"] == "live"
        code, body = refused(ws_url(server, sid, "drive", "wrong-key-000"))
        assert code == 4401 and body["error"]["code"] == "unauthorized"
        code, body = refused(ws_url(server, sid, "drive", TENANT_KEYS["t2"]))
        assert code == 4404 and body["error"]["code"] == "not_found"
        code, _ = refused(ws_url(server, "s_nothing", "drive", key))
        assert code == 4404
        encoded = ws_url(server, sid, "drive") + "?%6Bey=encoded-key-777"
        code, _ = refused(encoded)  # percent-encoded `key`: read as the key, and masked in logs
        assert code == 4401
        history = t1.get(f"/v1/sessions/{sid}/drivers").json()["history"]
        sockets = [h for h in history if h["type"] == "websocket"]
        assert len(sockets) == 3 and all(h["disconnected_at"] for h in sockets)
        assert metric(server, "avatarfarm_driver_rejected_total", type="websocket",
                      reason="invalid") >= 1  # fmt: skip
        assert metric(server, "avatarfarm_driver_rejected_total", type="websocket",
                      reason="stale") >= 1  # fmt: skip
    finally:
        t1.delete(f"/v1/sessions/{sid}")
    logs = server.output()
    assert key not in logs and "wrong-key-000" not in logs and "encoded-key-777" not in logs


def pull_audio(url: str, seconds: float, timeout: float = 60.0):
    """Play `url` in a thread; collects (stream seconds, RMS) of each decoded audio frame."""
    out: dict = {"rms": [], "error": None}

    def run() -> None:
        deadline = time.monotonic() + timeout
        try:
            with av.open(url, timeout=(timeout, 5.0)) as c:
                audio = c.streams.audio[0]
                start = None
                for packet in c.demux(audio):
                    for frame in packet.decode():
                        t = float(frame.pts * frame.time_base)
                        start = t if start is None else start
                        pcm = frame.to_ndarray().astype(np.float64)
                        out["rms"].append((t, float(np.sqrt(np.mean(pcm**2)))))
                        if t - start >= seconds or time.monotonic() > deadline:
                            return
        except Exception as exc:  # reported through the result, asserted by the test
            out["error"] = f"{type(exc).__name__}: {exc}"

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_audio_moves_the_mouth_and_reaches_the_rtmp_stream(server, t1, tmp_path):
    from nginx_rtmp import nginx_or_skip

    nginx = nginx_or_skip(tmp_path)
    url = nginx.url("drive")
    video = {**SMALL, "encoder": "x264", "bitrate_kbps": 300}
    sid = create(t1, video=video, outputs=[{"url": url}])
    try:
        assert eventually(lambda: t1.get(f"/v1/sessions/{sid}").json()["outputs"][0]["state"]
                          == "live", 60)  # fmt: skip
        thread, pulled = pull_audio(url, seconds=4.0)
        silent = snapshot(t1, sid)
        headers = {"Authorization": f"Bearer {TENANT_KEYS['t1']}"}
        pcm = vowel(VOWELS["aa"], 2.5, 0.5)
        opened = []
        with connect(ws_url(server, sid, "audio"), additional_headers=headers) as ws:
            ws.send(json.dumps({"format": "pcm16", "rate": 16000, "channels": 1}))
            time.sleep(1.0)  # a second of silence first
            t0 = time.monotonic()
            for i, start in enumerate(range(0, len(pcm), 320)):  # 20 ms messages, real time
                ws.send(pcm[start : start + 320].tobytes())
                if i % 25 == 12:
                    opened.append(float(np.abs(snapshot(t1, sid) - silent)[MOUTH].mean()))
                time.sleep(max(0.0, t0 + (i + 1) * 0.02 - time.monotonic()))
            time.sleep(0.6)
            closed = float(np.abs(snapshot(t1, sid) - silent)[MOUTH].mean())
        thread.join(70)
        assert max(opened) > 3.0, opened  # the vowel opens the mouth
        assert closed < max(opened) / 2  # silence closes it again
        assert pulled["error"] is None, pulled["error"]
        rms = np.array([r for _, r in pulled["rms"]])
        assert len(rms) > 100
        assert rms.max() > 0.05  # the vowel is in the stream
        assert (rms < 1e-3).sum() > 10  # silence around it
    finally:
        t1.delete(f"/v1/sessions/{sid}")
        nginx.stop()


def test_audio_socket_refuses_a_bad_header(server, t1):
    sid = create(t1)
    try:
        key = TENANT_KEYS["t1"]
        code, body = refused(ws_url(server, sid, "audio", key), first=json.dumps({"rate": 8000}))
        assert code == 4422 and body["error"]["field"] == "format"
    finally:
        t1.delete(f"/v1/sessions/{sid}")


def test_idle_life_keeps_an_undriven_avatar_moving(t1):
    sid = create(t1, driver={"idle": True, "smoothing": "one_euro"})
    try:
        first = snapshot(t1, sid)
        frames = [first]
        for _ in range(6):
            time.sleep(0.5)
            frames.append(snapshot(t1, sid))
        diffs = [float(np.abs(f - first).mean()) for f in frames[1:]]
        assert max(diffs) > 0.5, diffs  # sway, breathing, blinks: never a frozen frame
    finally:
        t1.delete(f"/v1/sessions/{sid}")


def test_operator_required_goes_standby_and_resumes_on_input(server, t1):
    standby = {"background": "#c00000", "text": "The host will be right back"}
    sid = create(t1, driver={"operator_required": True, "timeout_s": 1.0, "standby": standby})
    try:
        live = snapshot(t1, sid)
        start = time.monotonic()
        assert eventually(lambda: t1.get(f"/v1/sessions/{sid}").json()["state"] == "standby", 6)
        assert time.monotonic() - start < 1.0 + 5.0
        assert changed(t1, sid, live, by=20.0)  # the red standby scene, avatar gone
        headers = {"Authorization": f"Bearer {TENANT_KEYS['t1']}"}
        with connect(ws_url(server, sid, "drive"), additional_headers=headers) as ws:
            ws.send(json.dumps({"head": {"yaw": 0}}))
            assert eventually(lambda: t1.get(f"/v1/sessions/{sid}").json()["state"] == "live")
            assert eventually(lambda: float(np.abs(snapshot(t1, sid) - live).mean()) < 5.0)
        assert eventually(lambda: t1.get(f"/v1/sessions/{sid}").json()["state"] == "standby", 6)
        history = t1.get(f"/v1/sessions/{sid}/drivers").json()["history"]
        assert [h["type"] for h in history] == ["websocket"]
        assert history[0]["connected_at"] <= history[0]["last_input_at"]
        assert history[0]["disconnected_at"] is not None
    finally:
        t1.delete(f"/v1/sessions/{sid}")


def test_garbage_and_floods_are_counted_and_never_stall_the_engine(server, t1):
    sid = create(t1)
    try:
        vmc, livelink = driver(t1, sid, type="vmc"), driver(t1, sid, type="livelink")
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        garbage = [b"", b"\x00", b"#bundle\x00" + b"\xff" * 12, b"/VMC/Ext/Blend/Val\x00\x00,sf",
                   osc("/VMC/Ext/Blend/Val", "A", float("nan")).dgram,
                   osc("/VMC/Ext/Bone/Pos", "Head").dgram,
                   osc("/VMC/Ext/Blend/Val", "NoSuchShape", 1.0).dgram, b"\x06" + b"\x7f" * 40,
                   encode_packet(np.full(61, np.nan, np.float32))]  # fmt: skip
        for data in garbage:
            sock.sendto(data, ("127.0.0.1", vmc["port"]))
            sock.sendto(data, ("127.0.0.1", livelink["port"]))

        def frames() -> int:
            return t1.get(f"/v1/sessions/{sid}").json()["stats"]["frames_rendered"]

        start = frames()
        time.sleep(1.0)
        before = frames()
        frame = vmc_frame({"A": 0.5})
        t0 = time.monotonic()
        sent = 0
        while time.monotonic() - t0 < 1.0:  # ~10,000 datagrams in a second
            for _ in range(100):
                sock.sendto(frame, ("127.0.0.1", vmc["port"]))
            sent += 100
            time.sleep(max(0.0, t0 + sent / 10_000 - time.monotonic()))
        assert server.client().get("/readyz").status_code == 200
        after = frames()
        # frames kept coming as fast as in the second before: the port's thread kept to
        # its share of a core, the kernel dropped the rest
        assert after - before >= (before - start) // 2, (start, before, after)
        assert metric(server, "avatarfarm_driver_rejected_total", type="vmc",
                      reason="malformed") > 0  # fmt: skip
        assert metric(server, "avatarfarm_driver_rejected_total", type="livelink") > 0

        def accounted() -> bool:  # every datagram was read or counted as dropped
            sock.sendto(frame, ("127.0.0.1", vmc["port"]))  # carries the kernel's count
            nonlocal sent
            sent += 1
            time.sleep(0.2)
            ports = t1.get(f"/v1/sessions/{sid}/drivers").json()["active"]
            stats = next(p["stats"] for p in ports if p["id"] == vmc["id"])
            return stats["packets"] + stats.get("flood", 0) == sent + len(garbage)

        assert eventually(accounted, 30.0, 0.0)
        assert metric(server, "avatarfarm_driver_flood_dropped_total", type="vmc") > 1000
        sock.close()
    finally:
        t1.delete(f"/v1/sessions/{sid}")


def test_concurrent_driver_requests_cannot_pass_the_port_limit(t1):
    sid = create(t1)
    try:
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(
                lambda _: t1.post(f"/v1/sessions/{sid}/drivers", json={"type": "vmc"}).status_code,
                range(8),
            ))  # fmt: skip
        assert sorted(codes) == [201] * 4 + [429] * 4, codes
        assert len(t1.get(f"/v1/sessions/{sid}/drivers").json()["active"]) == 4
    finally:
        t1.delete(f"/v1/sessions/{sid}")


def test_driver_routes_are_tenant_scoped_and_validated(server, t1):
    sid = create(t1)
    try:
        with server.client(TENANT_KEYS["t2"]) as t2:
            assert t2.post(f"/v1/sessions/{sid}/drivers", json={"type": "vmc"}).status_code == 404
            assert t2.get(f"/v1/sessions/{sid}/drivers").status_code == 404
            assert t2.delete(f"/v1/sessions/{sid}/drivers/d1").status_code == 404
        assert server.client().get(f"/v1/sessions/{sid}/drivers").status_code == 401
        for body, field in [({"type": "osc"}, "type"), ({"type": "vmc", "port": 80}, "port"),
                            ({"type": "vmc", "allowed": ["nope"]}, "allowed"),
                            ({"type": "vmc", "extra": 1}, "extra")]:  # fmt: skip
            res = t1.post(f"/v1/sessions/{sid}/drivers", json=body)
            assert res.status_code == 422 and res.json()["error"]["field"] == field, res.text
        taken = driver(t1, sid, type="vmc")
        res = t1.post(f"/v1/sessions/{sid}/drivers", json={"type": "vmc", "port": taken["port"]})
        assert res.status_code == 409 and res.json()["error"]["field"] == "port"
        for _ in range(3):
            driver(t1, sid, type="livelink")
        res = t1.post(f"/v1/sessions/{sid}/drivers", json={"type": "vmc"})
        assert res.status_code == 429
    finally:
        t1.delete(f"/v1/sessions/{sid}")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # the port closed with it
        s.bind(("127.0.0.1", taken["port"]))
