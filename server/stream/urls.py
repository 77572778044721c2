"""Stream keys out of sight: every URL that reaches a log, an error or stats goes through here.

An RTMP URL carries the stream key as its last path segment (and sometimes in the query or
as userinfo); whoever holds it can broadcast on the account, so it is a secret.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

MASK = "****"
_URL_RE = re.compile(r"\b(?:rtmps?|srt|rtsp|https?)://[^\s'\"]+", re.IGNORECASE)


def mask_url(url: str) -> str:
    """`rtmp://host/app/KEY?x=y` -> `rtmp://host/app/****`: keeps what helps debugging."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    try:
        port: int | str | None = parts.port
    except ValueError:  # not a number in 0-65535: shown as such, never as its text
        port = "bad"
    if parts.scheme.lower() not in ("rtmp", "rtmps"):
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{port}" if port else host
    segments = parts.path.split("/")
    if len(segments) > 2 and segments[-1]:
        segments[-1] = MASK
    elif len(segments) > 2:
        segments[-2] = MASK
    query = MASK if parts.query else ""
    return urlunsplit((parts.scheme, netloc, "/".join(segments), query, ""))


def mask_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Mask every URL in free text (FFmpeg error strings echo the URL) and any known secret."""
    text = _URL_RE.sub(lambda m: mask_url(m.group(0)), text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


def stream_key(url: str) -> str:
    """The secret part of an RTMP URL (last path segment), for exact-match scrubbing."""
    path = urlsplit(url).path.rstrip("/")
    return path.rsplit("/", 1)[-1] if path.count("/") >= 2 else ""
