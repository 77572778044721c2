"""VMC protocol receiver (the "Marionette" side): OSC over UDP from VSeeFace, Waidayo, ...

Messages handled (as EVMC4U's ExternalReceiver does), in plain messages or OSC bundles:

==========================  =============================================================
/VMC/Ext/Blend/Val          (name: str, value: float) buffered; names are VRM 0.x presets
                            (A, Blink_L, Joy, ...), VRM 1.0 presets or ARKit names
/VMC/Ext/Blend/Apply        writes the buffered weights to the session's pose
/VMC/Ext/Bone/Pos           (name, px, py, pz, qx, qy, qz, qw), local; Neck, Head,
                            LeftEye and RightEye are used, other bones ignored
/VMC/Ext/Root/Pos           (name, px, py, pz, qx, qy, qz, qw [, scale, offset]) kept
/VMC/Ext/OK                 (available: int [, calibration state, mode]) kept
/VMC/Ext/T                  (time: float) sender time, kept
==========================  =============================================================

Anything else is counted (`unknown_address`), as are unknown blend names, wrong argument
types/counts (`bad_args`), NaN/inf (`nonfinite`) and unparsable datagrams (`malformed`).
Bone poses of one datagram are applied together once it has been dispatched.

Coordinates. Unity is left-handed (X right, Y up, Z forward) and a VRM avatar there faces
+Z, so Unity's +X is the avatar's *right*. Our frame (render.rig) is right-handed with the
avatar facing +Z and +X its *left*: the change of frame is the mirror x -> -x, under which a
rotation quaternion (x, y, z, w) becomes (x, -y, -z, w) (the axis is a pseudovector, the
angle is kept). The head rotation is neck (x) head, decomposed as R = Ry(yaw) Rx(pitch)
Rz(roll) in degrees. Example: Unity's Quaternion.Euler(0, -20, 0) turns the avatar's face
to its left (towards Unity -X); it becomes (0, +sin 10deg, 0, cos 10deg), i.e. yaw +20.

Why not python-osc's ThreadingOSCUDPServer: it starts a thread per datagram (a 10,000
packet/s flood would be 10,000 threads/s) and its dispatcher, with strict timing, sleeps
until a bundle's time tag (a far-future tag would stall the port). Parsing is python-osc's
(OscPacket); the receive loop is `UdpReceiver`. The six VMC addresses are looked up in a
dict first, since python-osc's Dispatcher compiles a pattern regex per message (a
VSeeFace frame carries ~60 messages); other addresses (OSC patterns such as
/VMC/Ext/Blend/*) still go through a Dispatcher without strict timing.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable

import numpy as np
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_packet import OscPacket

from ...render.vocabulary import VOCABULARY, index_of
from .pose import PoseState
from .udp import DriverPacketError, UdpReceiver

VMC_PORT = 39539
K = len(VOCABULARY)
_POSE_BONES = ("Neck", "Head", "LeftEye", "RightEye")
_NAME_CACHE = 1024


class _QuietPythonOsc(logging.Filter):
    """Drop python-osc's per-packet warnings (it logs on the root logger for every bundle
    element or argument type it cannot identify): a flood of such packets must not flood
    the logs. The packets themselves are still dropped or counted here."""

    _marker = f"{os.sep}pythonosc{os.sep}"

    def filter(self, record: logging.LogRecord) -> bool:
        return self._marker not in record.pathname


def _quiet_python_osc() -> None:
    root = logging.getLogger()
    if not any(isinstance(f, _QuietPythonOsc) for f in root.filters):
        root.addFilter(_QuietPythonOsc())


def unity_to_ours(q: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """A Unity (left-handed, +X = avatar's right) quaternion in our right-handed frame."""
    x, y, z, w = q
    return (x, -y, -z, w)


def quat_mul(a: tuple[float, ...], b: tuple[float, ...]) -> tuple[float, float, float, float]:
    """Hamilton product a (x) b, both (x, y, z, w): rotate by b, then by a."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return (
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
        aw * bw - ax * bx - ay * by - az * bz,
    )


def yaw_pitch_roll(q: tuple[float, float, float, float]) -> tuple[float, float, float]:
    """Degrees (yaw, pitch, roll) with R = Ry(yaw) Rx(pitch) Rz(roll), as render.rig builds."""
    x, y, z, w = q
    r02 = 2 * (x * z + w * y)
    r22 = 1 - 2 * (x * x + y * y)
    r12 = 2 * (y * z - w * x)
    r10 = 2 * (x * y + w * z)
    r11 = 1 - 2 * (x * x + z * z)
    pitch = math.asin(max(-1.0, min(1.0, -r12)))
    return (
        math.degrees(math.atan2(r02, r22)),
        math.degrees(pitch),
        math.degrees(math.atan2(r10, r11)),
    )


class VmcReceiver(UdpReceiver):
    """One session's VMC port: blend shapes and head/eye bones into its PoseState."""

    kind = "vmc"

    def __init__(
        self,
        pose: PoseState,
        host: str = "127.0.0.1",
        port: int = 0,
        allowed: Iterable[str] | None = None,
        on_input: Callable[[str, str], None] | None = None,
        cpu_share: float | None = None,
    ) -> None:
        super().__init__(host, port, allowed, on_input, cpu_share)
        self.pose = pose
        self._blend = np.zeros(K)
        self._blend_mask = np.zeros(K, bool)
        self._bones: dict[str, tuple[float, float, float, float]] = {}
        self._bones_dirty = False
        self.root: tuple[tuple[float, float, float], tuple[float, ...]] | None = None
        self.available: int | None = None
        self.remote_time: float | None = None
        self._source: tuple[str, int] = ("", 0)
        self._names: dict[str, int | None] = {}
        self._routes: dict[str, Callable[..., None]] = {
            "/VMC/Ext/Blend/Val": self._on_blend_val,
            "/VMC/Ext/Blend/Apply": self._on_blend_apply,
            "/VMC/Ext/Bone/Pos": self._on_bone,
            "/VMC/Ext/Root/Pos": self._on_root,
            "/VMC/Ext/OK": self._on_ok,
            "/VMC/Ext/T": self._on_time,
        }
        _quiet_python_osc()
        self._dispatcher = Dispatcher(strict_timing=False)
        for address, callback in self._routes.items():
            self._dispatcher.map(address, callback)

    def handle(self, data: bytes, source: tuple[str, int]) -> None:
        try:
            packet = OscPacket(data)
        except Exception as exc:  # noqa: BLE001 - python-osc raises more than ParseError
            raise DriverPacketError("malformed", f"not an OSC packet: {exc}") from exc
        self._source = source
        for timed in packet.messages:
            message = timed.message
            route = self._routes.get(message.address)
            if route is not None:  # exact address: skip the pattern regex (hot path)
                route(message.address, *message.params)
                continue
            handlers = list(self._dispatcher.handlers_for_address(message.address))
            if not handlers:
                self.counts["unknown_address"] += 1
            for handler in handlers:
                handler.invoke(source, message)
        if self._bones_dirty:
            self._apply_bones()

    def _on_blend_val(self, _address: str, *args: object) -> None:
        if len(args) != 2 or not isinstance(args[0], str) or not _is_number(args[1]):
            self.counts["bad_args"] += 1
            return
        name, value = args[0], float(args[1])
        i = self._index(name)
        if i is None:
            self.counts["unknown_name"] += 1
        elif not math.isfinite(value):
            self.counts["nonfinite"] += 1
        else:
            self._blend[i] = value
            self._blend_mask[i] = True

    def _index(self, name: str) -> int | None:
        """index_of(name, vrm0=True), memoised for the names a sender repeats every frame."""
        try:
            return self._names[name]
        except KeyError:
            i = index_of(name, vrm0=True)
            if len(self._names) < _NAME_CACHE:  # bounded: names come from the network
                self._names[name] = i
            return i

    def _on_blend_apply(self, _address: str, *_args: object) -> None:
        if self._blend_mask.any():
            self.pose.update(expressions=self._blend, mask=self._blend_mask, source="vmc")
            self.counts["applied"] += 1
            self.input_seen(self._source)

    def _on_bone(self, _address: str, *args: object) -> None:
        pose = _name_and_floats(args, 7)
        if pose is None:
            self.counts["bad_args"] += 1
            return
        name, floats = pose
        if name not in _POSE_BONES:
            return
        q = _unit_quaternion(floats[3:7])
        if q is None:
            self.counts["nonfinite"] += 1
            return
        self._bones[name] = unity_to_ours(q)
        self._bones_dirty = True

    def _on_root(self, _address: str, *args: object) -> None:
        pose = _name_and_floats(args, 7, allow_extra=True)
        q = None if pose is None else _unit_quaternion(pose[1][3:7])
        if pose is None or q is None or not all(map(math.isfinite, pose[1][:3])):
            self.counts["bad_args"] += 1
            return
        px, py, pz = pose[1][:3]
        self.root = ((-px, py, pz), unity_to_ours(q))

    def _on_ok(self, _address: str, *args: object) -> None:
        if not args or not isinstance(args[0], int) or isinstance(args[0], bool):
            self.counts["bad_args"] += 1
            return
        self.available = args[0]

    def _on_time(self, _address: str, *args: object) -> None:
        if len(args) != 1 or not _is_number(args[0]) or not math.isfinite(args[0]):
            self.counts["bad_args"] += 1
            return
        self.remote_time = float(args[0])

    def _apply_bones(self) -> None:
        """Write head = neck (x) head and the eyes' yaw/pitch from this datagram's bones."""
        self._bones_dirty = False
        identity = (0.0, 0.0, 0.0, 1.0)
        bones = self._bones
        head = None
        if "Head" in bones or "Neck" in bones:
            q = quat_mul(bones.get("Neck", identity), bones.get("Head", identity))
            head = np.array(yaw_pitch_roll(q))
        eyes = None
        if "LeftEye" in bones or "RightEye" in bones:
            left = yaw_pitch_roll(bones.get("LeftEye", identity))
            right = yaw_pitch_roll(bones.get("RightEye", identity))
            eyes = np.array([left[0], left[1], right[0], right[1]])
        self.pose.update(head=head, eyes=eyes, source="vmc")
        self.counts["bones"] += 1
        self.input_seen(self._source)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _name_and_floats(
    args: tuple, n: int, allow_extra: bool = False
) -> tuple[str, tuple[float, ...]] | None:
    """(name, n numbers) from OSC args, or None when the types or count are wrong."""
    if len(args) < n + 1 or (len(args) != n + 1 and not allow_extra):
        return None
    if not isinstance(args[0], str) or not all(_is_number(a) for a in args[1 : n + 1]):
        return None
    return args[0], tuple(float(a) for a in args[1 : n + 1])


def _unit_quaternion(q: tuple[float, ...]) -> tuple[float, float, float, float] | None:
    """q normalised, or None for NaN/inf or a zero quaternion."""
    norm = math.sqrt(sum(c * c for c in q))
    if not math.isfinite(norm) or norm < 1e-6:
        return None
    x, y, z, w = (c / norm for c in q)
    return (x, y, z, w)
