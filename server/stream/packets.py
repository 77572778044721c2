"""Encoded packets as immutable values, so one encode can fan out to many muxer threads.

PyAV packets are mutable (muxing rebases their timestamps and sets the stream), so each
destination builds its own `av.Packet` from these bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av


@dataclass(frozen=True, slots=True)
class EncodedPacket:
    """One video or audio access unit; `pts` counts `time_base` units from stream start."""

    kind: str  # "video" | "audio"
    data: bytes
    pts: int
    dts: int
    time_base: Fraction
    keyframe: bool

    @property
    def seconds(self) -> Fraction:
        return self.pts * self.time_base

    @classmethod
    def from_av(cls, kind: str, packet: av.Packet) -> EncodedPacket:
        tb = packet.time_base
        pts = packet.pts if packet.pts is not None else 0
        dts = packet.dts if packet.dts is not None else pts
        return cls(
            kind,
            bytes(packet),
            pts,
            dts,
            Fraction(tb.numerator, tb.denominator),
            bool(packet.is_keyframe),
        )

    def to_av(self, stream: av.stream.Stream, offset: int = 0) -> av.Packet:
        """A fresh packet for `stream`, shifted back by `offset` time_base units."""
        packet = av.Packet(self.data)
        packet.pts = self.pts - offset
        packet.dts = self.dts - offset
        packet.time_base = self.time_base
        packet.is_keyframe = self.keyframe
        packet.stream = stream
        return packet
