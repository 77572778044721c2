"""Where a stream can go, and how to open a muxer for each kind of place.

`rtmp://` / `rtmps://` push FLV to an ingest; `hls:` writes a rolling preview into a
per-session temp folder; `record:<name>` writes fMP4 (or FLV for `.flv`) under the
recordings folder. Only this module turns a user-supplied string into a path or a socket.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import av

from .errors import StreamError
from .rtmp import FlvSink, RtmpPublisher
from .urls import mask_url, stream_key

HLS_WINDOW = 6


@dataclass
class Target:
    """One destination's address; `open()` returns a container whose header is written."""

    kind: str  # "rtmp" | "hls" | "record"
    address: str  # URL or file path; may hold a secret, never log it raw
    format: str
    options: dict[str, str] = field(default_factory=dict)
    retry: bool = False
    secret: str = ""
    cleanup_dir: Path | None = None
    _publisher: RtmpPublisher | None = field(default=None, repr=False, compare=False)

    @property
    def display(self) -> str:
        return mask_url(self.address) if self.kind == "rtmp" else self.address

    def open(self, templates: tuple[Any, Any]) -> tuple[av.container.OutputContainer, Any, Any]:
        """A container with its header written; RTMP is published by our own client
        (rtmp.py) so that a silent ingest can never hold the GIL."""
        if self.kind == "rtmp":
            self._publisher = RtmpPublisher(self.address)
            self._publisher.connect()
            where: Any = FlvSink(self._publisher)
        else:
            where = self.address
        try:
            container = av.open(where, "w", format=self.format, options=self.options)
            try:
                video = container.add_stream_from_template(templates[0])
                audio = container.add_stream_from_template(templates[1])
                container.start_encoding()
            except Exception:
                container.close()
                raise
        except Exception:
            self._close_publisher()
            raise
        return container, video, audio

    def close(self, container: av.container.OutputContainer) -> None:
        """Write the trailer (FLV durations, MP4 last fragment), then end the connection."""
        try:
            container.close()
        finally:
            self._close_publisher()

    def _close_publisher(self) -> None:
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            publisher.close()

    def discard(self) -> None:
        """Remove what only this destination needed (the HLS preview folder)."""
        if self.cleanup_dir is not None:
            shutil.rmtree(self.cleanup_dir, ignore_errors=True)


def parse_target(
    spec: str,
    session_id: str,
    keyint_s: float,
    hls_root: Path | None,
    recordings_root: Path | None,
) -> Target:
    """Turn an output spec into a Target, or raise StreamError naming what is wrong."""
    scheme = spec.split(":", 1)[0].lower()
    if scheme in ("rtmp", "rtmps"):
        parts = urlsplit(spec)
        try:
            parts.port  # noqa: B018 - urlsplit checks the port only when it is read
        except ValueError:
            raise StreamError(f"RTMP URL has a bad port: {mask_url(spec)}", "url") from None
        if not parts.hostname or parts.path.count("/") < 2 or not stream_key(spec):
            raise StreamError(f"RTMP URL needs host, app and stream key: {mask_url(spec)}", "url")
        # no seeking back on a live connection to fill in duration and size
        options = {"flvflags": "no_duration_filesize"}
        return Target("rtmp", spec, "flv", options, retry=True, secret=stream_key(spec))
    if scheme == "hls":
        return _hls_target(session_id, keyint_s, hls_root)
    if scheme == "record":
        return _record_target(spec.split(":", 1)[1], recordings_root)
    raise StreamError("output must be rtmp://, rtmps://, hls: or record:<name>", "url")


def _hls_target(session_id: str, keyint_s: float, hls_root: Path | None) -> Target:
    """Segments cut on IDRs, so they last one keyframe interval (2 s by default).

    One encode feeds every destination and platforms want 2 s IDRs; a 1 s preview segment
    would need IDRs every second on the live stream too (more bits for the same quality).
    The preview therefore keeps 2 s segments: a window of 6 is ~12 s, at most ~8 on disk.
    """
    root = Path(hls_root) if hls_root else Path(tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"hls-{_safe_name(session_id)}-", dir=root))
    options = {
        "hls_time": f"{keyint_s:g}",
        "hls_list_size": str(HLS_WINDOW),
        "hls_flags": "delete_segments+independent_segments+omit_endlist",
        "hls_segment_filename": str(folder / "seg_%06d.ts"),
    }
    return Target("hls", str(folder / "index.m3u8"), "hls", options, cleanup_dir=folder)


def _record_target(name: str, recordings_root: Path | None) -> Target:
    """fMP4 by default: every fragment is self-contained, so a crash leaves a playable file."""
    if recordings_root is None:
        raise StreamError("recording is not configured (no recordings folder)", "url")
    path = safe_recording_path(Path(recordings_root), name)
    if path.suffix == ".flv":
        return Target("record", str(path), "flv", {"flush_packets": "1"})
    # flush_packets: each finished fragment reaches the file now, not when AVIO's buffer fills.
    options = {"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}
    return Target("record", str(path), "mp4", options)


def safe_recording_path(root: Path, name: str) -> Path:
    """`root/name`, refusing absolute names, '..', odd suffixes and symlinks out of root."""
    pure = PurePosixPath(name)
    if not name or pure.is_absolute() or "\\" in name or ".." in pure.parts:
        raise StreamError("recording name must be a relative path inside the folder", "url")
    if pure.suffix not in (".mp4", ".flv"):
        raise StreamError("recording name must end in .mp4 or .flv", "url")
    root = root.resolve()
    path = (root / pure).resolve()
    if not path.is_relative_to(root):
        raise StreamError("recording name must be a relative path inside the folder", "url")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:40] or "session"
