"""Drive WebSocket messages: JSON and the 248-byte binary form, applied latest-wins."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from avatarfarm.render.vocabulary import ARKIT_NAMES
from avatarfarm.server.drivers.pose import PoseBank, PoseState
from avatarfarm.server.drivers.websocket import (
    DriveError,
    DriveSession,
    encode_binary,
    parse_binary,
    parse_json,
)


@pytest.fixture
def pose() -> PoseState:
    return PoseBank(1).allocate()


def binary(t: float, arkit, head, eyes, flags: int = 7, version: int = 1) -> bytes:
    """Built from the documented layout, independently of the module's encoder."""
    return struct.pack("<BBHd", version, flags, 0, t) + struct.pack(
        "<59f", *(list(arkit) + list(head) + list(eyes))
    )


def test_json_message_drives_the_pose(pose: PoseState) -> None:
    inputs: list[tuple[str, str]] = []
    session = DriveSession(pose, "10.0.0.5:5000", lambda k, a: inputs.append((k, a)))
    message = {
        "t": 1000,
        "expressions": {"jawOpen": 0.6, "EyeBlinkLeft": 1, "happy": 2.0, "wat": 1, "aa": "x"},
        "head": {"yaw": 15, "pitch": -5, "roll": 2},
        "eyes": {"left": {"yaw": 8, "pitch": 3}, "right": {"yaw": 6, "pitch": 3}},
    }
    assert session.feed(json.dumps(message))
    assert pose.value("jawOpen") == pytest.approx(0.6)
    assert pose.value("eyeBlinkLeft") == 1.0
    assert pose.value("happy") == 1.0  # clamped
    np.testing.assert_allclose(pose.head, [15, -5, 2])
    np.testing.assert_allclose(pose.eyes, [8, 3, 6, 3])
    assert session.unknown_names == 2
    assert inputs == [("websocket", "10.0.0.5:5000")]
    # A later partial message leaves the other names alone.
    assert session.feed(json.dumps({"t": 1016, "expressions": {"jawOpen": 0.1}}))
    assert pose.value("jawOpen") == pytest.approx(0.1)
    assert pose.value("eyeBlinkLeft") == 1.0
    np.testing.assert_allclose(pose.head, [15, -5, 2])


def test_binary_message_drives_the_pose(pose: PoseState) -> None:
    session = DriveSession(pose)
    arkit = np.zeros(52, np.float32)
    arkit[ARKIT_NAMES.index("jawOpen")] = 0.9
    arkit[ARKIT_NAMES.index("eyeBlinkRight")] = 1.0
    data = binary(5.0, arkit, [-20, 10, 0], [1, 2, 3, 4])
    assert len(data) == 248
    assert encode_binary(5.0, arkit, np.array([-20, 10, 0]), np.array([1, 2, 3, 4])) == data
    assert session.feed(data)
    assert pose.value("jawOpen") == pytest.approx(0.9)
    assert pose.value("eyeBlinkRight") == 1.0
    np.testing.assert_allclose(pose.head, [-20, 10, 0])
    np.testing.assert_allclose(pose.eyes, [1, 2, 3, 4])
    # Flags select groups: head only leaves expressions and eyes untouched.
    assert session.feed(binary(6.0, np.zeros(52), [5, 0, 0], np.zeros(4), flags=2))
    assert pose.value("jawOpen") == pytest.approx(0.9)
    np.testing.assert_allclose(pose.head, [5, 0, 0])
    np.testing.assert_allclose(pose.eyes, [1, 2, 3, 4])


def test_latest_wins_and_stale_messages_are_dropped(pose: PoseState) -> None:
    session = DriveSession(pose)
    assert session.feed(json.dumps({"t": 200, "head": {"yaw": 10}}))
    assert not session.feed(json.dumps({"t": 100, "head": {"yaw": -10}}))
    assert session.stale == 1
    assert pose.head[0] == 10


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ("not json", "message"),
        ("[1, 2]", "message"),
        (json.dumps({"expressions": [1, 2]}), "expressions"),
        (json.dumps({"head": {"yaw": "left"}}), "head.yaw"),
        (json.dumps({"eyes": {"left": {"yaw": 1}}}), "eyes.right"),
        (json.dumps({"t": True}), "t"),
        ("x" * 70_000, "message"),
        ("[" * 60_000, "message"),  # nested past the parser's recursion limit
        ('{"t": 1' + "0" * 400 + "}", "t"),  # an integer no float holds
        ('{"head": {"yaw": 1' + "0" * 400 + "}}", "head.yaw"),
    ],
)
def test_bad_json_is_rejected_with_the_field(message: str, field: str) -> None:
    with pytest.raises(DriveError) as err:
        parse_json(message)
    assert err.value.field == field


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b"\x01" * 10, "message"),
        (binary(0, np.zeros(52), np.zeros(3), np.zeros(4), version=2), "version"),
        (binary(0, np.zeros(52), np.zeros(3), np.zeros(4), flags=8), "flags"),
        (binary(0, np.zeros(52), np.zeros(3), np.zeros(4)) + b"\x00", "message"),
    ],
)
def test_bad_binary_is_rejected_with_the_field(data: bytes, field: str) -> None:
    with pytest.raises(DriveError) as err:
        parse_binary(data)
    assert err.value.field == field


def test_session_counts_rejections_and_nonfinite(pose: PoseState) -> None:
    session = DriveSession(pose)
    assert not session.feed("{")
    assert not session.feed(b"\x00" * 3)
    nan = np.zeros(52, np.float32)
    nan[0] = np.nan
    assert session.feed(binary(1.0, nan, [np.inf, 0, 0], np.zeros(4)))
    assert session.stats() == {
        "accepted": 1,
        "rejected": 2,
        "stale": 0,
        "unknown_names": 0,
        "nonfinite": 2,
    }
    assert isinstance(session.last_error, DriveError)
    assert np.isfinite(pose.head).all()


def test_an_expression_no_float_holds_is_counted_unknown() -> None:
    msg = parse_json('{"expressions": {"jawOpen": 1' + "0" * 400 + ', "blink": 0.5}}')
    assert msg.unknown == 1 and msg.mask.sum() == 1
