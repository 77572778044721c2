"""Server settings: defaults, then an optional TOML file, then AVATARFARM_* environment.

One frozen object is built at start-up and handed to everything that needs it, so no
module reads the environment on its own (an engine per GPU can get its own settings).
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .stream.settings import X264_PRESETS

ENV_PREFIX = "AVATARFARM_"
MAX_LATENESS_LIMIT_MS = 10_000.0  # beyond this a stall is an outage, not lateness


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it."""


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    device: str = "auto"  # auto | cpu | cuda
    api_keys: dict[str, str] = field(default_factory=dict)  # tenant -> key
    keys_file: Path | None = None  # lines of "tenant:key"
    admin_key: str | None = None
    data_dir: Path = Path.home() / ".local" / "share" / "avatarfarm"
    hls_root: Path | None = None
    recordings_root: Path | None = None
    media_dir: Path | None = None  # images/videos scenes may use as `media:<name>`
    max_upload_mb: float = 64.0
    tenant_storage_mb: float = 2048.0  # one tenant's avatars and media together
    tenant_max_sessions: int = 16
    max_sessions: int = 256  # hard ceiling whatever the measured capacity says
    max_frame_pixels: int = 3840 * 2160
    command_queue_size: int = 256
    drain_timeout_s: float = 20.0
    max_lateness_ms: float = 100.0  # a frame later than this is dropped (server/engine.py)
    capacity_budget: float = 0.8  # fraction of the engine thread a full load may use
    capacity_probe: bool = True  # measure the cost per frame (and compile kernels) at start
    frame_cost_ms: float | None = None  # pins the cost of a 1280x720 frame (no measuring)
    preview_fps: float = 8.0
    jpeg_quality: int = 80
    enforce_label: bool = True
    label_text: str | None = None
    x264_preset: str = "veryfast"  # every x264 stream's; faster presets fit more sessions

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def tenant_storage_bytes(self) -> int:
        return int(self.tenant_storage_mb * 1024 * 1024)

    def all_api_keys(self) -> dict[str, str]:
        """Keys from the environment/config merged with the keys file (file wins)."""
        keys = dict(self.api_keys)
        if self.keys_file is not None:
            try:
                text = Path(self.keys_file).read_text()
            except OSError as exc:
                raise ConfigError(f"keys_file: cannot read ({exc.strerror})") from None
            keys.update(parse_keys(text.replace("\n", ","), "keys_file"))
        return keys


_COMMENT = re.compile(r"(^|\s)#.*$")


def parse_keys(text: str, where: str) -> dict[str, str]:
    """`tenant1:key1,tenant2:key2` (blank items and #comments ignored).

    A comment starts at a `#` that begins an item or follows a space, so a key may hold
    `#` itself (a silently shortened key would be weaker and match no client).
    """
    keys: dict[str, str] = {}
    for item in text.split(","):
        item = _COMMENT.sub("", item).strip()
        if not item:
            continue
        tenant, sep, key = item.partition(":")
        if not sep or not tenant.strip() or len(key.strip()) < 8:
            raise ConfigError(f"{where}: entries must be tenant:key with keys of 8+ characters")
        keys[tenant.strip()] = key.strip()
    return keys


def load_settings(
    config: str | os.PathLike | None = None,
    env: dict[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Defaults < TOML file (top level or [server]) < environment < explicit overrides."""
    env = dict(os.environ if env is None else env)
    values: dict[str, Any] = {}
    path = config or env.get(ENV_PREFIX + "CONFIG")
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config {path}: {exc}") from None
        values.update(data.get("server", data))
    known = {f.name: f for f in fields(Settings)}
    for name in known:
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None and raw != "":
            values[name] = raw
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(unknown)}")
    settings = Settings()
    return replace(settings, **{k: _coerce(k, v, getattr(settings, k)) for k, v in values.items()})


def _coerce(name: str, value: Any, default: Any) -> Any:
    try:
        if name == "api_keys":
            return parse_keys(value, name) if isinstance(value, str) else dict(value)
        if name in ("keys_file", "hls_root", "recordings_root", "data_dir", "media_dir"):
            return Path(value).expanduser()
        if name == "frame_cost_ms":
            return float(value)
        if name in ("label_text", "admin_key"):
            return str(value)
        if name == "max_lateness_ms":
            ms = float(value)
            if not 0.0 <= ms <= MAX_LATENESS_LIMIT_MS:
                raise ValueError(f"must be between 0 and {MAX_LATENESS_LIMIT_MS:g} ms")
            return ms
        if name == "x264_preset":
            if value not in X264_PRESETS:
                raise ValueError(f"must be one of {', '.join(X264_PRESETS)}")
            return value
        if isinstance(default, bool):
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
        return type(default)(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: {exc}") from None
