"""Software H.264 through PyAV's libx264: the encoder every host has (A100/H100/H200 lack NVENC).

One encoder per session, one thread by default. The codec context lives as a stream of a
`null` output container only so that muxers can copy its parameters (with the SPS/PPS
extradata that FLV and MP4 need in their headers) through `add_stream_from_template`.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from .packets import EncodedPacket
from .settings import VideoSettings

_GLOBAL_HEADER = 1 << 22  # AV_CODEC_FLAG_GLOBAL_HEADER: SPS/PPS in extradata for FLV/MP4
_BT709 = 1  # AVCOL_PRI_BT709 == AVCOL_TRC_BT709 == AVCOL_SPC_BT709
_RANGE_TV = 1  # AVCOL_RANGE_MPEG: limited range, what the compositor writes


class X264Encoder:
    """NV12 host frames in, H.264 access units out (Annex B, SPS/PPS on every IDR)."""

    name = "x264"

    def __init__(self, width: int, height: int, fps: int, settings: VideoSettings) -> None:
        self.width, self.height, self.fps = width, height, fps
        self.settings = settings
        self._bitrate_kbps = settings.bitrate_kbps
        self._pending_kbps: int | None = None
        self._holder, self._stream = self._open(self._bitrate_kbps)
        self.template: av.video.stream.VideoStream = self._stream

    def _open(self, kbps: int) -> tuple[av.container.OutputContainer, av.video.stream.VideoStream]:
        s, keyint = self.settings, self.settings.keyint_frames(self.fps)
        vbv = kbps * s.vbv_ms // 1000
        holder = av.open("null", "w", format="null")
        stream = holder.add_stream("libx264", rate=self.fps)
        ctx = stream.codec_context
        ctx.width, ctx.height, ctx.pix_fmt = self.width, self.height, "nv12"
        ctx.time_base = Fraction(1, self.fps)
        ctx.bit_rate = kbps * 1000
        ctx.thread_count = s.threads
        ctx.color_primaries = ctx.color_trc = ctx.colorspace = _BT709
        ctx.color_range = _RANGE_TV
        ctx.flags |= _GLOBAL_HEADER
        ctx.options = {
            "preset": s.preset,
            "tune": "zerolatency",
            "maxrate": f"{kbps}k",
            "bufsize": f"{vbv}k",
            "forced-idr": "1",
            # repeat-headers keeps SPS/PPS in-band on every IDR (mid-stream joiners, HLS)
            # even though the global header also puts them in extradata for FLV/MP4.
            "x264-params": (
                f"keyint={keyint}:min-keyint={keyint}:scenecut=0:bframes=0:"
                "repeat-headers=1:colorprim=bt709:transfer=bt709:colormatrix=bt709:range=tv"
            ),
        }
        holder.start_encoding()
        return holder, stream

    @property
    def bitrate_kbps(self) -> int:
        return self._pending_kbps or self._bitrate_kbps

    def set_bitrate(self, kbps: int) -> None:
        """Takes effect on the next frame, which becomes an IDR.

        PyAV cannot set rc_max_rate/rc_buffer_size on an open context, so libx264's live
        reconfigure would move the average but not the VBV; reopening keeps CBR honest at
        the price of one extra IDR.
        """
        self._pending_kbps = kbps

    def encode(self, nv12: np.ndarray, pts: int, force_idr: bool) -> list[EncodedPacket]:
        """Encode one frame; the caller may reuse `nv12` as soon as this returns."""
        out: list[EncodedPacket] = []
        if self._pending_kbps is not None:
            out += self.flush()
            self._bitrate_kbps, self._pending_kbps = self._pending_kbps, None
            self._holder, self._stream = self._open(self._bitrate_kbps)
            self.template = self._stream
            force_idr = True
        frame = av.VideoFrame.from_numpy_buffer(
            nv12.reshape(self.height * 3 // 2, self.width), format="nv12"
        )
        frame.pts = pts
        frame.time_base = Fraction(1, self.fps)
        if force_idr:
            frame.pict_type = av.video.frame.PictureType.I
        out += [EncodedPacket.from_av("video", p) for p in self._stream.codec_context.encode(frame)]
        return out

    def flush(self) -> list[EncodedPacket]:
        packets = self._stream.codec_context.encode(None)
        self._holder.close()
        return [EncodedPacket.from_av("video", p) for p in packets]
