"""Live Link Face (Epic's iPhone app) UDP receiver: ARKit weights and head/eye rotation.

Packet version 6, big-endian, parsed strictly (every length bounded, the total exact)::

    u8   version (6)
    i32  n, then n bytes   device id (UTF-8, n <= 256)
    i32  n, then n bytes   subject name (UTF-8, n <= 256)
    i32  frame number;  f32 sub-frame;  i32 frame-rate numerator;  i32 denominator
    u8   count (61)
    61 x f32               52 ARKit weights, then head yaw, pitch, roll,
                           left eye yaw, pitch, roll, right eye yaw, pitch, roll

Weight order on the wire is Epic's EARFaceBlendShape enum, which differs from
`render.vocabulary.ARKIT_NAMES` in two pairs (jawLeft before jawRight, mouthLeft before
mouthRight), so the weights are mapped by name (`LIVELINK_NAMES`), not by position.

Rotation units and signs. The app writes the head and eye rotations as extra curves next
to the weights. Public converters (e.g. Neill3d/PyLiveLinkFace's OSC redirect, which applies
math.degrees to them) treat them as radians, and we do the same: degrees = value * 180/pi.
Some app versions are reported to send values normalised to -1..1; read as radians those
become +-57 degrees, still inside the rig's clamp, so the choice degrades gracefully. Signs
follow ARKit's face frame, which is ours (right-handed, +Z out of the face, +X the face's
own left): yaw + turns to the subject's left, pitch + looks down, roll + tips the head to
the subject's right. `LiveLinkMapping` holds scale and signs, so a device that proves
otherwise is a configuration change; verify once with a real phone.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from ...render.vocabulary import ARKIT_NAMES, INDEX, VOCABULARY
from .pose import PoseState
from .udp import DriverPacketError, UdpReceiver

LIVELINK_PORT = 11111
VERSION = 6
COUNT = 61
MAX_NAME = 256
_TIMING = struct.Struct(">ifiiB")
K = len(VOCABULARY)

# Epic's EARFaceBlendShape order (what the app sends), in our spellings.
LIVELINK_NAMES: tuple[str, ...] = tuple(
    {"jawRight": "jawLeft", "jawLeft": "jawRight", "mouthRight": "mouthLeft",
     "mouthLeft": "mouthRight"}.get(n, n)
    for n in ARKIT_NAMES
)  # fmt: skip
_TO_VOCAB = np.array([INDEX[n] for n in LIVELINK_NAMES], np.intp)
_MASK = np.zeros(K, bool)
_MASK[_TO_VOCAB] = True


@dataclass(frozen=True)
class LiveLinkFrame:
    """One parsed packet."""

    device_id: str
    subject: str
    frame: int
    sub_frame: float
    rate: tuple[int, int]
    values: np.ndarray  # float32 [61], wire order


@dataclass(frozen=True)
class LiveLinkMapping:
    """Wire rotation values -> our degrees: value * scale * sign."""

    scale: float = 180.0 / math.pi
    head_signs: tuple[float, float, float] = (1.0, 1.0, 1.0)  # yaw, pitch, roll
    eye_signs: tuple[float, float] = (1.0, 1.0)  # yaw, pitch (both eyes)

    def head(self, values: np.ndarray) -> np.ndarray:
        return values[52:55].astype(np.float64) * self.scale * np.array(self.head_signs)

    def eyes(self, values: np.ndarray) -> np.ndarray:
        picked = values[[55, 56, 58, 59]].astype(np.float64)
        return picked * self.scale * np.array(self.eye_signs * 2)


def parse_packet(data: bytes) -> LiveLinkFrame:
    """A version-6 packet, or DriverPacketError with the reason (the metric label)."""
    if len(data) < 1 or data[0] != VERSION:
        got = data[0] if data else "nothing"
        raise DriverPacketError("bad_version", f"version must be {VERSION}, got {got}")
    offset = 1
    device_id, offset = _string(data, offset, "device id")
    subject, offset = _string(data, offset, "subject name")
    if len(data) < offset + _TIMING.size:
        raise DriverPacketError("bad_length", "packet ends inside the frame time")
    frame, sub_frame, num, den, count = _TIMING.unpack_from(data, offset)
    offset += _TIMING.size
    if count != COUNT:
        raise DriverPacketError("bad_count", f"value count must be {COUNT}, got {count}")
    if len(data) != offset + 4 * COUNT:
        raise DriverPacketError(
            "bad_length", f"expected {offset + 4 * COUNT} bytes, got {len(data)}"
        )
    values = np.frombuffer(data, ">f4", COUNT, offset).astype(np.float32)
    return LiveLinkFrame(device_id, subject, frame, sub_frame, (num, den), values)


def encode_packet(
    values: np.ndarray,
    device_id: str = "iPhone",
    subject: str = "iPhone",
    frame: int = 0,
    sub_frame: float = 0.0,
    rate: tuple[int, int] = (60, 1),
) -> bytes:
    """A version-6 packet with 61 wire-order values (for tests, benchmarks and tools)."""
    out = bytearray([VERSION])
    for text in (device_id, subject):
        raw = text.encode()
        out += struct.pack(">i", len(raw)) + raw
    out += _TIMING.pack(frame, sub_frame, rate[0], rate[1], COUNT)
    out += np.asarray(values, ">f4").reshape(COUNT).tobytes()
    return bytes(out)


class LiveLinkReceiver(UdpReceiver):
    """One session's Live Link Face port: every packet becomes the session's target pose."""

    kind = "livelink"

    def __init__(
        self,
        pose: PoseState,
        host: str = "127.0.0.1",
        port: int = 0,
        allowed: Iterable[str] | None = None,
        on_input: Callable[[str, str], None] | None = None,
        mapping: LiveLinkMapping | None = None,
        cpu_share: float | None = None,
    ) -> None:
        super().__init__(host, port, allowed, on_input, cpu_share)
        self.pose = pose
        self.mapping = mapping or LiveLinkMapping()
        self.subject: str | None = None
        self._row = np.zeros(K)

    def handle(self, data: bytes, source: tuple[str, int]) -> None:
        frame = parse_packet(data)
        self._row[_TO_VOCAB] = frame.values[:52]
        bad = self.pose.update(
            expressions=self._row,
            mask=_MASK,
            head=self.mapping.head(frame.values),
            eyes=self.mapping.eyes(frame.values),
            source="livelink",
        )
        if bad:
            self.counts["nonfinite"] += bad
        self.counts["applied"] += 1
        self.subject = frame.subject
        self.input_seen(source)


def _string(data: bytes, offset: int, what: str) -> tuple[str, int]:
    """A length-prefixed UTF-8 string at `offset` and the offset after it."""
    if len(data) < offset + 4:
        raise DriverPacketError("bad_length", f"packet ends before the {what} length")
    (n,) = struct.unpack_from(">i", data, offset)
    offset += 4
    if not 0 <= n <= MAX_NAME or len(data) < offset + n:
        raise DriverPacketError("bad_length", f"{what} length {n} is out of range")
    try:
        text = data[offset : offset + n].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DriverPacketError("bad_text", f"{what} is not UTF-8") from exc
    return text, offset + n
