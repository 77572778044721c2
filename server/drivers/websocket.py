"""Messages of the `/v1/sessions/{id}/drive` WebSocket, and the session that applies them.

JSON (text frames), every field optional::

    {"t": 1234.5,                                  # sender time, ms (orders messages)
     "expressions": {"jawOpen": 0.4, "A": 1, ...},  # any spelling canonical_name knows
     "head": {"yaw": 10, "pitch": -5, "roll": 0},  # degrees; a missing angle is 0
     "eyes": {"left": {"yaw": 5, "pitch": 0}, "right": {"yaw": 5, "pitch": 0}}}

Expression names not in the vocabulary (`canonical_name` without VRM 0.x single letters,
which are ambiguous here) or with non-numeric values are counted and skipped,
not errors; names a message does not mention keep their previous value. Angles use
`render.rig`'s conventions (yaw + turns the face to the avatar's left, pitch + looks down).

Binary (binary frames) for 60 Hz and more: exactly 248 bytes, little-endian::

    offset  type        field
    0       u8          version = 1
    1       u8          flags: bit 0 expressions, bit 1 head, bit 2 eyes present
                        (other bits must be 0); absent groups are not written
    2       u16         reserved = 0
    4       f64         t, sender time in ms
    12      52 x f32    the ARKit weights in `render.vocabulary.ARKIT_NAMES` order
    220     3 x f32     head yaw, pitch, roll (degrees)
    232     4 x f32     eyes: left yaw, left pitch, right yaw, right pitch (degrees)

Latest wins: `DriveSession.feed` parses and writes the target row at once (microseconds),
so nothing queues behind the engine; a message whose `t` is older than the last applied
one is dropped as stale (UDP-like reordering through proxies).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...render.vocabulary import ARKIT_NAMES, VOCABULARY, index_of
from .client_json import loads
from .pose import PoseError, PoseState

K = len(VOCABULARY)
BINARY = struct.Struct("<BBHd52f3f4f")
BINARY_VERSION = 1
FLAG_EXPRESSIONS, FLAG_HEAD, FLAG_EYES = 1, 2, 4
MAX_TEXT = 64 * 1024
MAX_NAMES = 512
_ARKIT_MASK = np.zeros(K, bool)
_ARKIT_MASK[: len(ARKIT_NAMES)] = True


class DriveError(ValueError):
    """A drive message that cannot be used; `field` names the offending part."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class DriveMessage:
    """One parsed message: the groups it carries (None when absent) and unknown names."""

    t: float | None = None
    expressions: np.ndarray | None = None
    mask: np.ndarray | None = None
    head: np.ndarray | None = None
    eyes: np.ndarray | None = None
    unknown: int = 0


def parse_json(text: str | bytes) -> DriveMessage:
    """A JSON drive message; raises DriveError for what cannot be understood at all."""
    if len(text) > MAX_TEXT:
        raise DriveError(f"message longer than {MAX_TEXT} bytes", "message")
    try:
        doc = loads(text)
    except ValueError as exc:
        raise DriveError(f"not JSON: {exc}", "message") from exc
    if not isinstance(doc, dict):
        raise DriveError("a drive message is a JSON object", "message")
    msg = DriveMessage(t=_number(doc, "t", "t") if "t" in doc else None)
    if "expressions" in doc:
        values = doc["expressions"]
        if not isinstance(values, dict):
            raise DriveError("expressions must be an object of name: weight", "expressions")
        if len(values) > MAX_NAMES:
            raise DriveError(f"more than {MAX_NAMES} expressions", "expressions")
        msg.expressions, msg.mask = np.zeros(K), np.zeros(K, bool)
        for name, value in values.items():
            i = index_of(name)
            weight = _weight(value)
            if i is None or weight is None:
                msg.unknown += 1
                continue
            msg.expressions[i], msg.mask[i] = weight, True
    if "head" in doc:
        head = _object(doc, "head")
        msg.head = np.array([_number(head, k, f"head.{k}") for k in ("yaw", "pitch", "roll")])
    if "eyes" in doc:
        eyes = _object(doc, "eyes")
        angles = []
        for side in ("left", "right"):
            eye = _object(eyes, side, f"eyes.{side}")
            angles += [_number(eye, k, f"eyes.{side}.{k}") for k in ("yaw", "pitch")]
        msg.eyes = np.array(angles)
    return msg


def parse_binary(data: bytes) -> DriveMessage:
    """The 248-byte binary drive message (layout in the module doc)."""
    if len(data) != BINARY.size:
        raise DriveError(f"binary message must be {BINARY.size} bytes, got {len(data)}", "message")
    values = BINARY.unpack(data)
    version, flags, reserved, t = values[:4]
    if version != BINARY_VERSION:
        raise DriveError(f"binary version must be {BINARY_VERSION}, got {version}", "version")
    if flags & ~(FLAG_EXPRESSIONS | FLAG_HEAD | FLAG_EYES) or reserved:
        raise DriveError("unknown flag bits or non-zero reserved field", "flags")
    floats = np.array(values[4:], np.float64)
    msg = DriveMessage(t=t)
    if flags & FLAG_EXPRESSIONS:
        msg.expressions = np.zeros(K)
        msg.expressions[: len(ARKIT_NAMES)] = floats[:52]
        msg.mask = _ARKIT_MASK
    if flags & FLAG_HEAD:
        msg.head = floats[52:55]
    if flags & FLAG_EYES:
        msg.eyes = floats[55:59]
    return msg


def encode_binary(
    t: float,
    arkit: np.ndarray | None = None,
    head: np.ndarray | None = None,
    eyes: np.ndarray | None = None,
) -> bytes:
    """The binary form of a message (for clients, tests and benchmarks)."""
    flags = (
        (FLAG_EXPRESSIONS if arkit is not None else 0)
        | (FLAG_HEAD if head is not None else 0)
        | (FLAG_EYES if eyes is not None else 0)
    )
    floats = np.zeros(59, np.float32)
    for part, start, n in ((arkit, 0, 52), (head, 52, 3), (eyes, 55, 4)):
        if part is not None:
            floats[start : start + n] = part
    return BINARY.pack(BINARY_VERSION, flags, 0, t, *floats.tolist())


class DriveSession:
    """Applies one WebSocket's messages to a session's pose, latest wins, and counts."""

    def __init__(
        self,
        pose: PoseState,
        address: str = "",
        on_input: Callable[[str, str], None] | None = None,
    ) -> None:
        self.pose = pose
        self.address = address
        self._on_input = on_input
        self._last_t = -math.inf
        self.accepted = 0
        self.rejected = 0
        self.stale = 0
        self.unknown_names = 0
        self.nonfinite = 0
        self.last_error: DriveError | None = None

    def feed(self, message: str | bytes) -> bool:
        """Parse and apply one frame (bytes = binary form); False when it was not applied."""
        try:
            if isinstance(message, str):
                msg = parse_json(message)
            else:
                msg = parse_binary(message)
        except DriveError as exc:
            self.rejected += 1
            self.last_error = exc
            return False
        self.unknown_names += msg.unknown
        if msg.t is not None:
            if not math.isfinite(msg.t) or msg.t < self._last_t:
                self.stale += 1
                return False
            self._last_t = msg.t
        try:
            self.nonfinite += self.pose.update(
                expressions=msg.expressions,
                mask=msg.mask,
                head=msg.head,
                eyes=msg.eyes,
                source="websocket",
                stamp=msg.t,
            )
        except PoseError as exc:
            self.rejected += 1
            self.last_error = DriveError(str(exc), exc.field)
            return False
        self.accepted += 1
        if self._on_input is not None:
            self._on_input("websocket", self.address)
        return True

    def stats(self) -> dict[str, int]:
        return {
            "accepted": self.accepted,
            "rejected": self.rejected,
            "stale": self.stale,
            "unknown_names": self.unknown_names,
            "nonfinite": self.nonfinite,
        }


def _object(doc: dict, key: str, field: str | None = None) -> dict:
    value = doc.get(key)
    if not isinstance(value, dict):
        raise DriveError(f"{field or key} must be an object", field or key)
    return value


def _weight(value: Any) -> float | None:
    """An expression weight as a float; None for a non-number or one no float can hold."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def _number(doc: dict, key: str, field: str) -> float:
    """doc[key] as a float (0 when absent); bools and strings are errors."""
    value = doc.get(key, 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DriveError(f"{field} must be a number", field)
    try:
        return float(value)
    except OverflowError:  # an integer of hundreds of digits
        raise DriveError(f"{field} is out of range", field) from None
