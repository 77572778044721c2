"""VMC receiver fed by python-osc over loopback, the way VSeeFace sends."""

from __future__ import annotations

import logging
import math
import socket
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.udp_client import SimpleUDPClient

from avatarfarm.server.drivers.pose import PoseBank, PoseState
from avatarfarm.server.drivers.udp import BURST_S
from avatarfarm.server.drivers.vmc import (
    VmcReceiver,
    quat_mul,
    unity_to_ours,
    yaw_pitch_roll,
)


def wait_for(check: Callable[[], bool], timeout: float = 3.0) -> None:
    """Poll until check() holds; loopback delivery is fast, the bound only avoids hangs."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.002)


def unity_euler(x: float = 0.0, y: float = 0.0, z: float = 0.0) -> tuple[float, ...]:
    """Unity's Quaternion.Euler(x, y, z) (degrees; applied Z, then X, then Y), as x, y, z, w."""

    def axis(i: int, deg: float) -> tuple[float, ...]:
        q = [0.0, 0.0, 0.0, math.cos(math.radians(deg) / 2)]
        q[i] = math.sin(math.radians(deg) / 2)
        return tuple(q)

    return quat_mul(quat_mul(axis(1, y), axis(0, x)), axis(2, z))


@pytest.fixture
def pose() -> PoseState:
    return PoseBank(2).allocate()


@pytest.fixture
def receiver(pose: PoseState) -> Iterator[VmcReceiver]:
    inputs: list[tuple[str, str]] = []
    rx = VmcReceiver(pose, on_input=lambda kind, addr: inputs.append((kind, addr)))
    rx.inputs = inputs  # type: ignore[attr-defined]
    rx.start()
    yield rx
    rx.stop()


def client(rx: VmcReceiver) -> SimpleUDPClient:
    host, port = rx.address
    return SimpleUDPClient(host, port)


@pytest.mark.parametrize(
    ("euler", "expected"),
    [
        ((0, -20, 0), (20, 0, 0)),  # face turns to the avatar's left (Unity -X)
        ((0, 20, 0), (-20, 0, 0)),
        ((15, 0, 0), (0, 15, 0)),  # Unity +X rotation tips the face down
        ((0, 0, 10), (0, 0, -10)),  # Unity +Z rolls the head top to the avatar's left
        ((10, -30, 5), (30, 10, -5)),
    ],
)
def test_unity_rotation_to_our_angles(euler: tuple, expected: tuple) -> None:
    got = yaw_pitch_roll(unity_to_ours(unity_euler(*euler)))
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_vseeface_messages_drive_the_pose(receiver: VmcReceiver, pose: PoseState) -> None:
    c = client(receiver)
    c.send_message("/VMC/Ext/OK", [1, 3, 0])
    c.send_message("/VMC/Ext/T", [12.5])
    c.send_message("/VMC/Ext/Root/Pos", ["root", 0.1, 0.0, 0.2, 0.0, 0.0, 0.0, 1.0])
    for name, value in (("A", 1.0), ("Blink", 1.0), ("Joy", 0.5), ("eyeBlinkLeft", 0.25)):
        c.send_message("/VMC/Ext/Blend/Val", [name, value])
    # Buffered, not yet applied.
    time.sleep(0.05)
    assert pose.value("aa") == 0.0
    c.send_message("/VMC/Ext/Blend/Apply", [])
    qx, qy, qz, qw = unity_euler(0, -20, 0)
    c.send_message("/VMC/Ext/Bone/Pos", ["Head", 0.0, 1.5, 0.0, qx, qy, qz, qw])
    wait_for(lambda: receiver.counts["bones"] >= 1)
    assert pose.value("aa") == 1.0
    assert pose.value("blink") == 1.0
    assert pose.value("happy") == 0.5
    assert pose.value("eyeBlinkLeft") == 0.25
    assert pose.head[0] == pytest.approx(20.0, abs=1e-3)
    assert pose.source == "vmc"
    assert receiver.available == 1
    assert receiver.remote_time == 12.5
    assert receiver.root is not None and receiver.root[0] == pytest.approx((-0.1, 0.0, 0.2))
    assert receiver.inputs[0] == ("vmc", f"127.0.0.1:{receiver.inputs[0][1].split(':')[1]}")


def test_bundle_with_neck_head_and_eyes(receiver: VmcReceiver, pose: PoseState) -> None:
    bundle = OscBundleBuilder(IMMEDIATELY)
    bones = {
        "Neck": unity_euler(0, -8, 0),
        "Head": unity_euler(0, -12, 0),
        "LeftEye": unity_euler(5, -10, 0),
        "RightEye": unity_euler(5, -10, 0),
        "Hips": unity_euler(0, 90, 0),  # ignored
    }
    for name, q in bones.items():
        msg = OscMessageBuilder("/VMC/Ext/Bone/Pos")
        for arg in (name, 0.0, 0.0, 0.0, *q):
            msg.add_arg(arg)
        bundle.add_content(msg.build())
    val = OscMessageBuilder("/VMC/Ext/Blend/Val")
    val.add_arg("U")
    val.add_arg(0.75)
    bundle.add_content(val.build())
    bundle.add_content(OscMessageBuilder("/VMC/Ext/Blend/Apply").build())
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.sendto(bundle.build().dgram, receiver.address)
    sock.close()
    wait_for(lambda: receiver.counts["bones"] >= 1 and receiver.counts["applied"] >= 1)
    np.testing.assert_allclose(pose.head, [20.0, 0.0, 0.0], atol=1e-3)
    np.testing.assert_allclose(pose.eyes, [10.0, 5.0, 10.0, 5.0], atol=1e-3)
    assert pose.value("ou") == 0.75


def test_garbage_and_flood_never_stop_the_receiver(receiver: VmcReceiver, pose: PoseState) -> None:
    host, port = receiver.address
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c = client(receiver)
    rng = np.random.default_rng(7)
    far_future = OscBundleBuilder(time.time() + 86_400)  # strict timing would sleep a day
    far_future.add_content(OscMessageBuilder("/VMC/Ext/Blend/Apply").build())
    bad = [
        b"",
        b"\x00\x01garbage",
        b"/VMC/Ext/Blend/Val\x00\x00,sf\x00",  # truncated arguments
        b"#bundle\x00" + b"\xff" * 12,
        far_future.build().dgram,
    ]
    for i in range(10_000):
        kind = i % 8
        if kind < 5:
            sock.sendto(bad[kind], (host, port))
        elif kind == 5:
            sock.sendto(rng.bytes(int(rng.integers(1, 300))), (host, port))
        elif kind == 6:
            c.send_message("/VMC/Ext/Blend/Val", [1, "A"])  # wrong types
        else:
            c.send_message("/VMC/Ext/Bone/Pos", ["Head", 0, 0, 0, math.nan, 0.0, 0.0, 1.0])

    # Let the receiver drain what the socket buffer kept (the rest was lost in the kernel).
    def drained() -> bool:
        now = receiver.counts["packets"]
        time.sleep(0.05)
        return receiver.counts["packets"] == now

    wait_for(drained, timeout=10.0)
    c.send_message("/unknown/address", [1.0])
    c.send_message("/VMC/Ext/Blend/Val", ["A", math.inf])
    c.send_message("/VMC/Ext/Blend/Val", ["NotAShape", 1.0])
    c.send_message("/VMC/Ext/Blend/Val", ["O", 0.5])
    c.send_message("/VMC/Ext/Blend/Apply", [])
    wait_for(lambda: pose.value("oh") == 0.5)
    sock.close()
    counts = receiver.counts
    assert counts["malformed"] > 0
    assert counts["bad_args"] > 0
    assert counts["nonfinite"] > 0
    assert counts["unknown_address"] >= 1
    assert counts["unknown_name"] >= 1
    assert counts.get("error", 0) == 0  # everything bad was recognised as such
    assert pose.value("aa") == 0.0
    assert np.isfinite(pose.head).all()
    assert not logging.getLogger().filter(  # python-osc's per-packet warnings are dropped
        logging.LogRecord("root", logging.WARNING, "/x/pythonosc/osc_bundle.py", 1, "", (), None)
    )


def test_osc_address_patterns_still_dispatch(receiver: VmcReceiver) -> None:
    client(receiver).send_message("/VMC/Ext/O?", [1])
    wait_for(lambda: receiver.available == 1)


def test_allowed_sources_drop_others(pose: PoseState) -> None:
    rx = VmcReceiver(pose, allowed={"192.0.2.1"})
    rx.start()
    try:
        c = client(rx)
        c.send_message("/VMC/Ext/Blend/Val", ["A", 1.0])
        c.send_message("/VMC/Ext/Blend/Apply", [])
        wait_for(lambda: rx.counts["dropped_source"] >= 2)
        assert pose.value("aa") == 0.0
    finally:
        rx.stop()


def test_requested_port_and_clean_restart(pose: PoseState) -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    for _ in range(2):  # stop releases the port so the same one binds again
        rx = VmcReceiver(pose, port=port)
        assert rx.start() == ("127.0.0.1", port)
        rx.stop()
    busy = VmcReceiver(pose, port=port)
    busy.start()
    try:
        with pytest.raises(OSError):
            VmcReceiver(pose, port=port).start()
    finally:
        busy.stop()


def test_a_flood_over_the_cpu_share_is_dropped_in_the_kernel_and_counted(
    pose: PoseState,
) -> None:
    share = 0.05
    rx = VmcReceiver(pose, cpu_share=share)
    rx.start()
    try:
        bundle = OscBundleBuilder(IMMEDIATELY)
        for name in ("A", "I", "U", "E", "O") * 6:  # ~30 messages: a costly datagram
            val = OscMessageBuilder("/VMC/Ext/Blend/Val")
            val.add_arg(name)
            val.add_arg(0.25)
            bundle.add_content(val.build())
        bundle.add_content(OscMessageBuilder("/VMC/Ext/Blend/Apply").build())
        data = bundle.build().dgram
        clock = time.pthread_getcpuclockid(rx._thread.ident)  # the receive thread's CPU
        cpu0, t0 = time.clock_gettime(clock), time.monotonic()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sent = 0
        while time.monotonic() - t0 < 1.0:
            sock.sendto(data, rx.address)
            sent += 1
        used, elapsed = time.clock_gettime(clock) - cpu0, time.monotonic() - t0
        # one datagram may overdraw the balance before the thread pauses
        assert used <= share * (elapsed + BURST_S) + 0.01, (used, elapsed, rx.counts)

        def settled() -> bool:  # the kernel reports drops with the next datagram it queues
            before = rx.counts["packets"]
            time.sleep(0.3)
            return rx.counts["packets"] == before

        wait_for(settled, timeout=30.0)
        sock.sendto(data, rx.address)
        sent += 1
        wait_for(lambda: rx.counts["packets"] + rx.counts["flood"] == sent, timeout=5.0)
        assert rx.counts["flood"] > 0
        assert rx.counts["applied"] == rx.counts["packets"]  # what was read was all used
        assert pose.value("aa") == 0.25
        sock.close()
    finally:
        rx.stop()
