"""Video encode settings shared by both encoders, validated once at the edge."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import StreamError

X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium")
NVENC_PRESETS = ("P1", "P2", "P3", "P4")
ENCODER_CHOICES = ("auto", "nvenc", "x264", "none")
NVENC_CODECS = ("h264", "hevc", "av1")


@dataclass(frozen=True)
class VideoSettings:
    """What a session's stream looks like; defaults suit a 720p live-commerce stream.

    `bitrate_kbps` is the CBR target; maxrate equals it and the VBV buffer holds
    `vbv_ms` of it (<= 1 s so a viewer's buffer never has to absorb more than that).
    `keyint_s` is the IDR interval (platforms ask for 2 s). `threads` is per x264 encoder:
    small, because N sessions share the cores and one thread each packs best.
    """

    bitrate_kbps: int = 2500
    encoder: str = "auto"
    preset: str = "veryfast"
    keyint_s: float = 2.0
    vbv_ms: int = 1000
    threads: int = 1
    nvenc_preset: str = "P3"
    nvenc_codec: str = "h264"
    gpu_id: int = 0

    def __post_init__(self) -> None:
        if not 100 <= self.bitrate_kbps <= 50_000:
            raise StreamError("bitrate_kbps must be between 100 and 50000", "bitrate_kbps")
        if self.encoder not in ENCODER_CHOICES:
            raise StreamError(f"encoder must be one of {ENCODER_CHOICES}", "encoder")
        if self.preset not in X264_PRESETS:
            raise StreamError(f"preset must be one of {X264_PRESETS}", "preset")
        if not 0.25 <= self.keyint_s <= 10:
            raise StreamError("keyint_s must be between 0.25 and 10", "keyint_s")
        if not 100 <= self.vbv_ms <= 1000:
            raise StreamError("vbv_ms must be between 100 and 1000", "vbv_ms")
        if not 1 <= self.threads <= 16:
            raise StreamError("threads must be between 1 and 16", "threads")
        if self.nvenc_preset not in NVENC_PRESETS:
            raise StreamError(f"nvenc_preset must be one of {NVENC_PRESETS}", "nvenc_preset")
        if self.nvenc_codec not in NVENC_CODECS:
            raise StreamError(f"nvenc_codec must be one of {NVENC_CODECS}", "nvenc_codec")

    def keyint_frames(self, fps: int) -> int:
        return max(1, round(self.keyint_s * fps))

    def vbv_kbit(self) -> int:
        return max(1, self.bitrate_kbps * self.vbv_ms // 1000)
