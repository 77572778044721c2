"""Request and response bodies: strict, closed (unknown fields are errors), size-bounded.

Request models turn into the plain dataclasses the engine and renderer use (`to_spec`,
`to_scene`), so validation happens once, here at the edge.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from avatarfarm.render.camera import Placement
from avatarfarm.render.scene import CORNERS, DEFAULT_LABEL, FRAMINGS, Label, Overlay, Scene

from ..sessions import STANDBY_TEXT, DriverSpec, SessionSpec, StandbySpec, VideoSpec
from ..stream.pipeline import MAX_OUTPUTS

MAX_PIXELS = 3840 * 2160
Corner = Literal["top-left", "top-right", "bottom-left", "bottom-right"]
Framing = Literal["head", "bust", "full"]
MediaLookup = Callable[[str], Path | None]
"""`media:<name>` -> the file, or None when the caller has no media of that name."""
MEDIA_OR_COLOR = r"^(#[0-9a-fA-F]{6}|media:[A-Za-z0-9._-]{1,100})$"
assert set(CORNERS) == set(Corner.__args__) and set(FRAMINGS) == set(Framing.__args__)  # type: ignore[attr-defined]
COLOR = r"^#[0-9a-fA-F]{6}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class VideoIn(Strict):
    width: int = Field(1280, ge=16, le=4096)
    height: int = Field(720, ge=16, le=4096)
    fps: Literal[24, 25, 30, 60] = 30
    bitrate_kbps: int = Field(2500, ge=100, le=50_000)
    codec: Literal["h264", "hevc", "av1"] = "h264"
    encoder: Literal["auto", "nvenc", "x264", "none"] = "auto"

    @model_validator(mode="after")
    def _even(self) -> VideoIn:
        if self.width % 2 or self.height % 2:
            raise ValueError("width and height must be even (NV12)")
        if self.width * self.height > MAX_PIXELS:
            raise ValueError(f"frame larger than {MAX_PIXELS} pixels")
        if self.codec != "h264" and self.encoder in ("auto", "x264"):
            raise ValueError(f"codec {self.codec} needs encoder nvenc (x264 is h264 only)")
        return self


class PlacementIn(Strict):
    x: float = Field(0.5, ge=-1.0, le=2.0)
    y: float = Field(0.5, ge=-1.0, le=2.0)
    scale: float = Field(1.0, gt=0.0, le=8.0)


class OverlayIn(Strict):
    """A text overlay, or an image: `media:<id>` (uploaded to /v1/media) or `media:<name>`
    (the operator's media folder)."""

    text: str | None = Field(None, min_length=1, max_length=200)
    image: str | None = Field(None, pattern=r"^media:[A-Za-z0-9._-]{1,100}$")
    x: float = Field(0.05, ge=-1.0, le=2.0)
    y: float = Field(0.05, ge=-1.0, le=2.0)
    width: float | None = Field(None, gt=0.0, le=2.0)
    opacity: float = Field(1.0, ge=0.0, le=1.0)
    z: int = Field(1, ge=-100, le=100)
    font_size: float = Field(0.04, gt=0.0, le=0.5)
    color: str = Field("#ffffff", pattern=COLOR)

    @model_validator(mode="after")
    def _one_kind(self) -> OverlayIn:
        if (self.text is None) == (self.image is None):
            raise ValueError("an overlay has exactly one of text or image")
        return self


class LabelIn(Strict):
    text: str = Field(DEFAULT_LABEL, min_length=1, max_length=80)
    corner: Corner = "top-right"
    enabled: bool = True


class SceneIn(Strict):
    """`background`: a #rrggbb colour, or `media:<id>` (an upload to /v1/media) or
    `media:<name>` (the operator's media folder): an image or a short video."""

    background: str = Field("#203040", pattern=MEDIA_OR_COLOR)
    background_fit: Literal["fill", "fit"] = "fill"
    framing: Framing = "bust"
    placement: PlacementIn = Field(default_factory=PlacementIn)
    overlays: list[OverlayIn] = Field(default_factory=list, max_length=16)
    label: LabelIn = Field(default_factory=LabelIn)

    def to_scene(self, media: MediaLookup) -> Scene:
        return Scene(
            background=_media(self.background, media, "scene.background"),
            background_fit=self.background_fit,
            framing=self.framing,
            placement=Placement(**self.placement.model_dump()),
            overlays=tuple(
                Overlay(
                    image=None
                    if o.image is None
                    else _media(o.image, media, f"scene.overlays[{i}].image"),
                    text=o.text,
                    x=o.x,
                    y=o.y,
                    width=o.width,
                    opacity=o.opacity,
                    z=o.z,
                    font_size=o.font_size,
                    color=o.color,
                )  # fmt: skip
                for i, o in enumerate(self.overlays)
            ),
            label=Label(self.label.text, self.label.corner, self.label.enabled),
        )


class MediaError(ValueError):
    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def _media(value: str, media: MediaLookup, field: str) -> str:
    """`media:<name>` -> the caller's uploaded media or the operator's file; colours pass."""
    if not value.startswith("media:"):
        return value
    name = value.split(":", 1)[1]
    path = media(name)
    if path is None:
        raise MediaError(f"no media named {name} (upload it to /v1/media)", field)
    return str(path)


class OutputIn(Strict):
    url: str = Field(min_length=4, max_length=2048, pattern=r"^(rtmps?://|hls:|record:)")


class StandbyIn(Strict):
    """The standby scene: a #rrggbb colour or `media:<name>` image, and a line of text."""

    background: str = Field("#14181f", pattern=MEDIA_OR_COLOR)
    text: str = Field(STANDBY_TEXT, min_length=1, max_length=120)


class DriverIn(Strict):
    """Live driving: idle life, smoothing, and the operator-presence policy."""

    idle: bool = True
    operator_required: bool = False
    timeout_s: float = Field(10.0, ge=0.5, le=3600.0)
    smoothing: Literal["one_euro", "spring", "none"] = "one_euro"
    standby: StandbyIn = Field(default_factory=StandbyIn)

    def to_spec(self, media: MediaLookup) -> DriverSpec:
        background = _media(self.standby.background, media, "driver.standby.background")
        return DriverSpec(
            idle=self.idle,
            operator_required=self.operator_required,
            timeout_s=self.timeout_s,
            smoothing=self.smoothing,
            standby=StandbySpec(background, self.standby.text),
        )


class SessionCreate(Strict):
    avatar: str = Field("default", pattern=r"^(default|[0-9a-f]{64})$")
    video: VideoIn = Field(default_factory=VideoIn)
    scene: SceneIn = Field(default_factory=SceneIn)
    outputs: list[OutputIn] = Field(default_factory=list, max_length=MAX_OUTPUTS)
    driver: DriverIn = Field(default_factory=DriverIn)

    def to_spec(self, media: MediaLookup) -> SessionSpec:
        return SessionSpec(
            avatar=self.avatar,
            video=VideoSpec(**self.video.model_dump()),
            scene=self.scene.to_scene(media),
            outputs=tuple(o.url for o in self.outputs),
            driver=self.driver.to_spec(media),
        )


class SessionPatch(Strict):
    scene: SceneIn | None = None
    bitrate_kbps: int | None = Field(None, ge=100, le=50_000)


class HeadIn(Strict):
    yaw: float = Field(0.0, ge=-180, le=180)
    pitch: float = Field(0.0, ge=-180, le=180)
    roll: float = Field(0.0, ge=-180, le=180)


class EyesIn(Strict):
    left_yaw: float = Field(0.0, ge=-90, le=90)
    left_pitch: float = Field(0.0, ge=-90, le=90)
    right_yaw: float = Field(0.0, ge=-90, le=90)
    right_pitch: float = Field(0.0, ge=-90, le=90)


class PoseIn(Strict):
    """Expressions replace all weights (unlisted ones go to 0); omitted parts keep theirs."""

    expressions: dict[str, float] | None = Field(None, max_length=128)
    head: HeadIn | None = None
    eyes: EyesIn | None = None


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorOut(BaseModel):
    error: ErrorBody


class OutputOut(BaseModel):
    id: str
    url: str  # masked: rtmp://host/app/****
    state: str
    last_error: str | None = None
    stats: dict[str, Any] = Field(default_factory=dict)


class SessionOut(BaseModel):
    id: str
    state: str
    avatar: str
    video: dict[str, Any]
    driver: dict[str, Any]
    outputs: list[OutputOut]
    stats: dict[str, Any]
    error: ErrorBody | None = None
    created_at: float


class AvatarOut(BaseModel):
    id: str
    size_bytes: int
    summary: dict[str, Any]


class MediaOut(BaseModel):
    id: str
    kind: Literal["image", "video"]
    size_bytes: int
    width: int
    height: int


class CapacityOut(BaseModel):
    live_sessions: int
    profile: dict[str, int]
    room: int
    load: float
    model: dict[str, Any]
    draining: bool


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 404, 409, 413, 422, 429, 503)
}
