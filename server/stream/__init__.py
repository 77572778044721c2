"""Streams out: per-session encoders (NVENC or x264), AAC, and RTMP/HLS/recording outputs."""

from .encoder import select_encoder
from .errors import StreamError
from .pipeline import StreamPipeline
from .settings import VideoSettings
from .urls import mask_url

__all__ = ["StreamError", "StreamPipeline", "VideoSettings", "mask_url", "select_encoder"]
