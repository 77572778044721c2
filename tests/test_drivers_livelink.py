"""Live Link Face receiver fed with packets built byte by byte from the version-6 layout."""

from __future__ import annotations

import math
import socket
import struct
import time
from collections.abc import Iterator

import numpy as np
import pytest

from avatarfarm.render.vocabulary import ARKIT_NAMES, INDEX
from avatarfarm.server.drivers.livelink import (
    LiveLinkReceiver,
    encode_packet,
    parse_packet,
)
from avatarfarm.server.drivers.pose import PoseBank, PoseState
from avatarfarm.server.drivers.udp import DriverPacketError

# Wire positions (Epic's EARFaceBlendShape): jawLeft comes before jawRight.
EYE_BLINK_LEFT, JAW_LEFT, JAW_RIGHT, JAW_OPEN = 0, 15, 16, 17
MOUTH_LEFT, MOUTH_RIGHT = 21, 22
HEAD_YAW, HEAD_PITCH, HEAD_ROLL = 52, 53, 54
LEFT_EYE_YAW, LEFT_EYE_PITCH, RIGHT_EYE_YAW, RIGHT_EYE_PITCH = 55, 56, 58, 59


def packet(values, device=b"iPhone13,2", subject=b"Host", count=61, version=6) -> bytes:
    """Bytes laid out exactly as the module doc (and the issue) describe."""
    out = struct.pack(">B", version)
    out += struct.pack(">i", len(device)) + device
    out += struct.pack(">i", len(subject)) + subject
    out += struct.pack(">ifii", 4711, 0.25, 60, 1)
    out += struct.pack(">B", count)
    out += struct.pack(f">{len(values)}f", *values)
    return out


def wait_for(check, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.002)


@pytest.fixture
def pose() -> PoseState:
    return PoseBank(1).allocate()


@pytest.fixture
def receiver(pose: PoseState) -> Iterator[LiveLinkReceiver]:
    rx = LiveLinkReceiver(pose)
    rx.start()
    yield rx
    rx.stop()


def test_parse_reads_every_field() -> None:
    values = np.arange(61, dtype=np.float32) / 100
    frame = parse_packet(packet(values))
    assert frame.device_id == "iPhone13,2" and frame.subject == "Host"
    assert (frame.frame, frame.sub_frame, frame.rate) == (4711, 0.25, (60, 1))
    np.testing.assert_array_equal(frame.values, values)
    assert encode_packet(values, "iPhone13,2", "Host", 4711, 0.25) == packet(values)


def test_packets_drive_blink_jaw_and_head(receiver: LiveLinkReceiver, pose: PoseState) -> None:
    values = np.zeros(61, np.float32)
    values[EYE_BLINK_LEFT] = 1.0
    values[JAW_OPEN] = 0.8
    values[JAW_LEFT] = 0.3
    values[MOUTH_RIGHT] = 0.6
    values[HEAD_YAW] = math.radians(20)
    values[HEAD_PITCH] = math.radians(-10)
    values[HEAD_ROLL] = math.radians(5)
    values[LEFT_EYE_YAW] = values[RIGHT_EYE_YAW] = math.radians(12)
    values[LEFT_EYE_PITCH] = values[RIGHT_EYE_PITCH] = math.radians(4)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.sendto(packet(values), receiver.address)
    sock.close()
    wait_for(lambda: receiver.counts["applied"] >= 1)
    assert pose.value("eyeBlinkLeft") == 1.0
    assert pose.value("eyeBlinkRight") == 0.0
    assert pose.value("jawOpen") == pytest.approx(0.8)
    assert pose.value("jawLeft") == pytest.approx(0.3)
    assert pose.value("jawRight") == 0.0
    assert pose.value("mouthRight") == pytest.approx(0.6)
    np.testing.assert_allclose(pose.head, [20.0, -10.0, 5.0], atol=1e-4)
    np.testing.assert_allclose(pose.eyes, [12.0, 4.0, 12.0, 4.0], atol=1e-4)
    assert pose.source == "livelink" and receiver.subject == "Host"


def test_every_arkit_name_lands_in_its_own_column(pose: PoseState) -> None:
    rx = LiveLinkReceiver(pose)
    values = np.zeros(61, np.float32)
    values[:52] = (np.arange(52) + 1) / 64
    rx.handle(packet(values), ("127.0.0.1", 1))
    got = pose.expressions[[INDEX[n] for n in ARKIT_NAMES]]
    assert sorted(np.round(got * 64).astype(int)) == list(range(1, 53))
    swapped = {"jawLeft": 15, "jawRight": 16, "mouthLeft": 21, "mouthRight": 22}
    for name, wire in swapped.items():
        assert pose.value(name) == pytest.approx((wire + 1) / 64)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "bad_version"),
        (packet(np.zeros(61), version=5), "bad_version"),
        (packet(np.zeros(60), count=60), "bad_count"),
        (packet(np.zeros(60)), "bad_length"),  # count says 61, 60 values follow
        (packet(np.zeros(62)), "bad_length"),
        (packet(np.zeros(61))[:7], "bad_length"),
        (b"\x06" + struct.pack(">i", -1), "bad_length"),
        (b"\x06" + struct.pack(">i", 10_000) + b"x" * 20, "bad_length"),
        (packet(np.zeros(61), device=b"\xff\xfe"), "bad_text"),
    ],
)
def test_malformed_packets_are_rejected_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(DriverPacketError) as err:
        parse_packet(data)
    assert err.value.reason == reason


def test_bad_packets_are_counted_and_the_port_keeps_working(
    receiver: LiveLinkReceiver, pose: PoseState
) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rng = np.random.default_rng(3)
    nan = np.zeros(61, np.float32)
    nan[JAW_OPEN] = np.nan
    nan[HEAD_YAW] = np.inf
    bad = [packet(np.zeros(60), count=60), packet(np.zeros(62)), b"\x06", packet(nan)]
    for i in range(2_000):
        data = bad[i % 4] if i % 5 else rng.bytes(int(rng.integers(1, 400)))
        sock.sendto(data, receiver.address)

    def drained() -> bool:
        before = receiver.counts["packets"]
        time.sleep(0.05)
        return receiver.counts["packets"] == before

    wait_for(drained, timeout=10.0)
    good = np.zeros(61, np.float32)
    good[JAW_OPEN] = 0.5
    sock.sendto(packet(good), receiver.address)
    sock.close()
    wait_for(lambda: pose.value("jawOpen") == 0.5)
    counts = receiver.counts
    assert counts["bad_count"] > 0 and counts["bad_length"] > 0 and counts["bad_version"] > 0
    assert counts["nonfinite"] > 0
    assert counts.get("error", 0) == 0
    assert np.isfinite(pose.head).all()
