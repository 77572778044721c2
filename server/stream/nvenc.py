"""Hardware encode through PyNvVideoCodec (NVENC), fed NV12 straight from device memory.

Untested here: the project's H200 (like A100/H100) has no NVENC engine and this machine has
no GPU. The NVENC in-encoder delay (frames between `Encode(frame)` and its bitstream) is
unmeasured here: no NVENC hardware; pts are therefore matched to outputs through a FIFO
rather than assumed equal to the input index. Option names follow PyNvVideoCodec's
CreateEncoder (`preset`, `tuning_info`, `rc`, `gop`, `idrperiod`, `bf`, `repeatspspps`,
`colorspace`) and its Reconfigure/pic-flag API as shown in NVIDIA's Encode samples.
"""

from __future__ import annotations

import io
from collections import deque
from fractions import Fraction
from typing import Any

import av

from .packets import EncodedPacket
from .settings import VideoSettings

_PYAV_CODEC = {"h264": "h264", "hevc": "hevc", "av1": "av1"}


class _CudaPlane:
    """A `__cuda_array_interface__` view of one NV12 plane, the shape NVENC's binding expects."""

    def __init__(self, shape: tuple[int, ...], strides: tuple[int, ...], ptr: int) -> None:
        self.__cuda_array_interface__ = {
            "shape": shape,
            "strides": strides,
            "data": (ptr, False),
            "typestr": "|u1",
            "version": 3,
        }


class _DeviceNV12:
    """Wraps a contiguous device NV12 buffer (any CAI object) as Y + interleaved UV planes."""

    def __init__(self, buffer: Any, width: int, height: int) -> None:
        ptr = int(buffer.__cuda_array_interface__["data"][0])
        self._planes = [
            _CudaPlane((height, width, 1), (width, 1, 1), ptr),
            _CudaPlane((height // 2, width // 2, 2), (width, 2, 1), ptr + width * height),
        ]

    def cuda(self) -> list[_CudaPlane]:
        return self._planes


def is_keyframe(codec: str, data: bytes) -> bool:
    """IDR (H.264), IRAP (HEVC) or a sequence header OBU (AV1) in an access unit."""
    if codec == "av1":
        return len(data) > 0 and (data[0] >> 3) & 0x0F == 1
    i = data.find(b"\x00\x00\x01")
    while i >= 0 and i + 3 < len(data):
        header = data[i + 3]
        if codec == "h264" and header & 0x1F == 5:
            return True
        if codec == "hevc" and 16 <= (header >> 1) & 0x3F <= 21:
            return True
        i = data.find(b"\x00\x00\x01", i + 3)
    return False


def split_access_units(codec: str, blob: bytes) -> list[bytes]:
    """One bytes object per frame from a concatenated elementary stream (FFmpeg's parser)."""
    parser = av.CodecContext.create(_PYAV_CODEC[codec], "r")
    units = [bytes(p) for p in parser.parse(blob)] + [bytes(p) for p in parser.parse(None)]
    return [u for u in units if u]


def probe_template(codec: str, first_unit: bytes) -> av.container.InputContainer:
    """Muxers need codec parameters with extradata: FFmpeg probes them from the first IDR.

    The returned container must stay alive while its stream serves as a template.
    """
    return av.open(io.BytesIO(first_unit), format=_PYAV_CODEC[codec])


class NvencEncoder:
    """One NVENC session: CBR, low-latency tuning, no B-frames, SPS/PPS on every IDR."""

    name = "nvenc"

    def __init__(self, width: int, height: int, fps: int, settings: VideoSettings) -> None:
        import PyNvVideoCodec as nvc  # optional dependency: the `cuda` extra

        self._nvc = nvc
        self.width, self.height, self.fps = width, height, fps
        self.codec = settings.nvenc_codec
        keyint = settings.keyint_frames(fps)
        bps = settings.bitrate_kbps * 1000
        # CreateEncoder takes string options; plain integers avoid its 1024-based k/M parsing.
        options = {
            "codec": self.codec,
            "preset": settings.nvenc_preset,
            "tuning_info": "low_latency",
            "rc": "cbr",
            "fps": str(fps),
            "bitrate": str(bps),
            "maxbitrate": str(bps),
            "vbvbufsize": str(bps * settings.vbv_ms // 1000),
            "gop": str(keyint),
            "idrperiod": str(keyint),
            "bf": "0",
            "repeatspspps": "1",
            "colorspace": "bt709",
            "gpu_id": str(settings.gpu_id),
        }
        # Raises when the GPU has no NVENC (A100/H100/H200) or the session cap is reached.
        self._enc = nvc.CreateEncoder(width, height, "NV12", False, **options)
        self._pts: deque[int] = deque()
        self._bitrate_kbps = settings.bitrate_kbps
        self._vbv_ms = settings.vbv_ms
        self.template: av.video.stream.VideoStream | None = None
        self._template_holder: av.container.InputContainer | None = None

    @property
    def bitrate_kbps(self) -> int:
        return self._bitrate_kbps

    def set_bitrate(self, kbps: int) -> None:
        """NVENC changes rate control live (Reconfigure), no new session or IDR needed."""
        params = self._enc.GetEncodeReconfigureParams()
        params.averageBitrate = params.maxBitRate = kbps * 1000
        params.vbvBufferSize = params.vbvInitialDelay = kbps * self._vbv_ms
        self._enc.Reconfigure(params)
        self._bitrate_kbps = kbps

    def encode(self, frame: Any, pts: int, force_idr: bool) -> list[EncodedPacket]:
        """`frame`: a device NV12 buffer ((h*3/2, w) uint8 with __cuda_array_interface__)."""
        self._pts.append(pts)
        source = _DeviceNV12(frame, self.width, self.height)
        if force_idr:
            flags = int(self._nvc.NV_ENC_PIC_FLAGS.FORCEIDR) | int(
                self._nvc.NV_ENC_PIC_FLAGS.OUTPUT_SPSPPS
            )
            data = bytes(self._enc.Encode(source, flags))
        else:
            data = bytes(self._enc.Encode(source))
        return [self._packet(data)] if data else []

    def flush(self) -> list[EncodedPacket]:
        """EndEncode returns every delayed frame in one blob: split it into access units."""
        units = split_access_units(self.codec, bytes(self._enc.EndEncode()))
        return [self._packet(u) for u in units if self._pts]

    def _packet(self, data: bytes) -> EncodedPacket:
        pts = self._pts.popleft()
        if self.template is None:
            self._template_holder = probe_template(self.codec, data)
            self.template = self._template_holder.streams.video[0]
        key = is_keyframe(self.codec, data)
        return EncodedPacket("video", data, pts, pts, Fraction(1, self.fps), key)
