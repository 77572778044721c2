"""RTMP push against a real nginx-rtmp, pulled back and decoded with PyAV."""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time

import av
import pytest
from nginx_rtmp import NginxRtmp, free_port, nginx_or_skip, self_signed_cert, tls_skip_reason
from stream_support import Feeder, feed, pull, wait_for

from avatarfarm.server.stream import StreamPipeline, VideoSettings
from avatarfarm.server.stream.rtmp import RtmpPublisher, amf_decode_all, amf_encode

W, H, FPS = 320, 180, 30
FAST = VideoSettings(bitrate_kbps=500, preset="ultrafast")


@pytest.fixture
def nginx(tmp_path):
    server = nginx_or_skip(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def tls_nginx(tmp_path):
    reason = tls_skip_reason()
    if reason:
        pytest.skip(reason)
    server = NginxRtmp(tmp_path / "nginx", tls=self_signed_cert(tmp_path / "tls"))
    server.start()
    yield server
    server.stop()


def test_pushed_stream_plays_back_with_the_promised_shape(nginx):
    pipe = StreamPipeline("s1", W, H, FPS, VideoSettings(bitrate_kbps=500), [nginx.url("k1")])
    try:
        assert wait_for(lambda: pipe.stats()["outputs"][1]["state"] == "live", 5)
        thread, got = pull(nginx.url("k1"), seconds=4.2)
        feed(pipe, 7 * FPS)  # the player joins at the 2 s IDR
        thread.join(15)
    finally:
        pipe.close(5)
    assert got.error is None
    assert (got.width, got.height) == (W, H)
    assert got.profile == "High"
    deltas = {b - a for a, b in zip(got.video_pts_ms, got.video_pts_ms[1:], strict=False)}
    assert deltas <= {33, 34}, f"not constant frame rate: {sorted(deltas)}"
    gaps = [b - a for a, b in zip(got.keyframe_pts_ms, got.keyframe_pts_ms[1:], strict=False)]
    assert gaps and all(abs(g - 2000) <= 34 for g in gaps), f"keyframe gaps {gaps}"
    frame = got.frames[-1]
    assert (frame.color_primaries, frame.color_trc, frame.colorspace) == (1, 1, 1)  # BT.709
    assert frame.color_range == 1  # limited ("tv") range
    assert got.audio == ("aac", 48000, 2)


def test_destination_reconnects_after_ingest_restart_and_resumes_on_idr(nginx, tmp_path):
    outputs = [nginx.url("k2"), "record:witness.mp4"]  # the recording sees every IDR
    pipe = StreamPipeline("s2", W, H, FPS, FAST, outputs, recordings_root=tmp_path)
    state = lambda: pipe.stats()["outputs"][1]["state"]  # noqa: E731
    live = lambda: {o["state"] for o in pipe.stats()["outputs"].values()} == {"live"}  # noqa: E731
    assert wait_for(live, 5)  # both connected before frame 0: a single IDR starts the stream
    feeder = Feeder(pipe)
    feeder.start()
    try:
        assert wait_for(lambda: pipe.stats()["frames_encoded"] > FPS // 2, 5)
        nginx.stop()
        assert wait_for(lambda: state() == "retrying", 5)
        nginx.start()
        assert wait_for(lambda: state() == "live", 5), pipe.stats()["outputs"][1]
        thread, got = pull(nginx.url("k2"), seconds=1.0)
        thread.join(10)
    finally:
        feeder.stop()
        pipe.close(5)
    out = pipe.stats()["outputs"][1]
    assert out["connects"] == 2
    assert got.error is None
    assert got.frames and got.frames[0].key_frame, "playback must start on an IDR"
    assert len(got.frames) >= FPS // 2
    with av.open(str(tmp_path / "witness.mp4")) as rec:
        keys = [p.pts for p in rec.demux(video=0) if p.is_keyframe and p.pts is not None]
        tb = rec.streams.video[0].time_base
    key_frames = [round(k * tb * FPS) for k in keys]
    gaps = [b - a for a, b in zip(key_frames, key_frames[1:], strict=False)]
    assert any(g < 2 * FPS for g in gaps), f"no IDR forced on reconnect: {key_frames}"


def test_dead_destination_does_not_disturb_the_live_one(nginx, caplog):
    caplog.set_level(logging.DEBUG)
    dead = f"rtmp://127.0.0.1:{free_port()}/live/deadSECRETkey"
    alive = nginx.url("aliveSECRETkey")
    pipe = StreamPipeline("s3", W, H, FPS, FAST, [dead, alive])
    try:
        thread, got = pull(alive, seconds=1.0)
        feed(pipe, 4 * FPS)  # the player joins at the 2 s IDR
        thread.join(10)
        stats = pipe.stats()
    finally:
        pipe.close(5)
    dead_out, live_out = stats["outputs"][1], stats["outputs"][2]
    assert dead_out["state"] == "retrying" and dead_out["last_error"]
    assert live_out["state"] == "live" and live_out["dropped"] == 0
    assert live_out["packets_sent"] > 2 * FPS
    assert got.error is None and len(got.frames) >= FPS
    assert stats["frames_encoded"] + stats["frames_dropped"] == 4 * FPS
    # Stream keys never reach logs or stats; the masked form does.
    for text in (caplog.text, repr(stats), repr(pipe.stats())):
        assert "SECRETkey" not in text
    assert "rtmp://127.0.0.1" in dead_out["url"] and dead_out["url"].endswith("/live/****")


def test_a_silent_ingest_never_freezes_the_process():
    """An ingest that accepts TCP and then says nothing: only its own output waits."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"rtmp://127.0.0.1:{listener.getsockname()[1]}/live/silentSECRET"
        ticks = [0]
        stop = threading.Event()

        def count() -> None:  # stands in for the engine: it must keep running throughout
            while not stop.wait(0.001):
                ticks[0] += 1

        counter = threading.Thread(target=count)
        counter.start()
        pipe = StreamPipeline("s4", W, H, FPS, FAST, [url])
        try:
            feed(pipe, FPS)
            start, began = ticks[0], time.monotonic()
            assert wait_for(lambda: pipe.stats()["outputs"][1]["state"] == "retrying", 15)
            elapsed = time.monotonic() - began
            out = pipe.stats()["outputs"][1]
        finally:
            pipe.close(5)
            stop.set()
            counter.join()
    assert "did not answer" in out["last_error"] and "SECRET" not in out["last_error"]
    assert ticks[0] - start > 100 * elapsed  # ~1 kHz with the GIL free; 0 if it were held


def test_publisher_answers_the_ingests_pings():
    ours, theirs = socket.socketpair()
    with ours, theirs:
        publisher = RtmpPublisher("rtmp://h/live/k")
        publisher._sock = ours
        ping = struct.pack(">HI", 6, 123456)  # user control: ping request, server time
        theirs.sendall(bytes([0x02]) + (0).to_bytes(3, "big") + len(ping).to_bytes(3, "big")
                       + bytes([4]) + struct.pack("<I", 0) + ping)  # fmt: skip
        publisher.send_flv(b"")  # between two frames: reads what the server sent
        theirs.settimeout(2)
        reply = theirs.recv(64)
    assert reply[0] & 0x3F == 2 and reply[7] == 4  # control chunk stream, user control
    assert struct.unpack(">HI", reply[12:18]) == (7, 123456)  # ping response, same time


def test_amf0_round_trip_of_what_commands_carry():
    values = ["onStatus", 0.0, None, {"level": "status", "code": "NetStream.Publish.Start"}]
    assert amf_decode_all(b"".join(amf_encode(v) for v in values)) == values


def test_an_ingest_refusing_the_app_is_reported_without_the_key(nginx):
    url = f"rtmp://127.0.0.1:{nginx.port}/noSuchApp/refusedSECRET"
    pipe = StreamPipeline("s5", W, H, FPS, FAST, [url])
    try:
        assert wait_for(lambda: pipe.stats()["outputs"][1]["state"] == "retrying", 10)
        out = pipe.stats()["outputs"][1]
    finally:
        pipe.close(5)
    assert out["last_error"] and "SECRET" not in out["last_error"]


def test_rtmps_push_checks_the_certificate_and_plays_back(tls_nginx, monkeypatch):
    # the ingest's certificate is trusted the way an operator adds a private CA: SSL_CERT_FILE
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_nginx.tls[0]))
    pipe = StreamPipeline("s6", W, H, FPS, FAST, [tls_nginx.tls_url("k6")])
    try:
        assert wait_for(lambda: pipe.stats()["outputs"][1]["state"] == "live", 10)
        thread, got = pull(tls_nginx.url("k6"), seconds=3.0)  # plain RTMP behind the TLS front
        feed(pipe, 6 * FPS)  # the player joins at the 2 s IDR
        thread.join(15)
        out = pipe.stats()["outputs"][1]
    finally:
        pipe.close(5)
    assert got.error is None
    assert (got.width, got.height) == (W, H)
    assert len(got.frames) >= FPS  # at least a second of decoded video came through TLS
    assert out["state"] == "live" and out["last_error"] is None


def test_rtmps_to_an_untrusted_certificate_is_refused_without_the_key(
    tls_nginx, monkeypatch, tmp_path
):
    other_ca, _ = self_signed_cert(tmp_path / "other", "other")
    monkeypatch.setenv("SSL_CERT_FILE", str(other_ca))  # trusts someone else, not the ingest
    pipe = StreamPipeline("s7", W, H, FPS, FAST, [tls_nginx.tls_url("untrustedSECRET")])
    try:
        assert wait_for(lambda: pipe.stats()["outputs"][1]["state"] == "retrying", 10)
        out = pipe.stats()["outputs"][1]
    finally:
        pipe.close(5)
    assert "certificate verify failed" in out["last_error"].lower()
    assert "SECRET" not in out["last_error"] and "SECRET" not in out["url"]
