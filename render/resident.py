"""Scenes resident in the renderer's buffers, each in regions of its own.

A loaded scene owns a region of the background arena, a run of rows in the overlay table
and a region of overlay pixels. Showing another loaded scene (standby and back) therefore
moves no pixels; loading or unloading one touches only its own regions, so other sessions
keep their incremental redraw and a device copy uploads only what was written; and a
large scene (a looping video background) can be copied in pieces between ticks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .arena import Arena, PendingCopy, Table, copy_some
from .scene import CompiledScene, Scene


@dataclass(eq=False)
class LoadedScene:
    """A compiled scene placed in the renderer's buffers (see SceneStore)."""

    scene: Scene
    compiled: CompiledScene
    bg_base: int
    bg_size: int  # bytes of one NV12 background frame
    bg_frames: int  # 1 for a still, the loop length for a video
    ov_start: int  # its rows in the overlay table
    ov_count: int
    px_base: int  # its overlay pixels
    px_count: int
    copies: list[PendingCopy] = field(default_factory=list)  # left to copy; none once ready
    showing: int = 0  # slots showing it
    unloaded: bool = False

    @property
    def ready(self) -> bool:
        return not self.copies

    @property
    def nbytes(self) -> int:
        return self.bg_size * self.bg_frames + 4 * self.px_count


class OverlayTable(Table):
    """Overlay rows the composite kernel reads (position, size, first pixel, opacity, z),
    with their premultiplied RGBA pixels in one arena; a scene's overlays are one run."""

    def __init__(self, track_writes: bool = False) -> None:
        i32 = (np.int32, ())
        super().__init__(
            {"x": i32, "y": i32, "w": i32, "h": i32, "base": (np.int64, ()),
             "opacity": (np.float32, ()), "z": i32},
            track_writes,
        )  # fmt: skip
        self.pixel_arena = Arena(np.uint8, width=4, track_writes=track_writes)

    @property
    def pixels(self) -> np.ndarray:
        return self.pixel_arena.data

    def add(self, layers, px_base: int) -> int:
        """Rows for `layers` (CompiledLayer), their pixels counted from `px_base`."""
        start = self.alloc(len(layers))
        sizes = np.array([layer.rgba.shape[:2] for layer in layers], np.int64).reshape(-1, 2)
        area = sizes[:, 0] * sizes[:, 1]
        rows = {
            "x": [layer.x for layer in layers], "y": [layer.y for layer in layers],
            "w": sizes[:, 1], "h": sizes[:, 0], "base": px_base + np.cumsum(area) - area,
            "opacity": [layer.opacity for layer in layers], "z": [layer.z for layer in layers],
        }  # fmt: skip
        for column, values in rows.items():
            self.write(column, start, np.asarray(values))
        return start


class SceneStore:
    """Loads compiled scenes into the background arena and the overlay table."""

    def __init__(self, track_writes: bool = False) -> None:
        self.backgrounds = Arena(track_writes=track_writes)
        self.overlays = OverlayTable(track_writes)

    def load(self, scene: Scene, compiled: CompiledScene) -> LoadedScene:
        """Reserve the scene's regions and write its overlay rows; its pixels are copied by
        `fill` (all at once, or a budget at a time)."""
        size = compiled.width * compiled.height * 3 // 2
        frames = len(compiled.backgrounds)
        bg_base = self.backgrounds.alloc(size * frames)
        layers = compiled.layers
        px_count = sum(layer.rgba.shape[0] * layer.rgba.shape[1] for layer in layers)
        px_base = self.overlays.pixel_arena.alloc(px_count)
        ov_start = self.overlays.add(layers, px_base)
        copies = [
            PendingCopy(self.backgrounds.write, bg_base + i * size, nv12.reshape(-1))
            for i, nv12 in enumerate(compiled.backgrounds)
        ]
        base = px_base
        for layer in layers:
            pixels = layer.rgba.reshape(-1, 4)
            copies.append(PendingCopy(self.overlays.pixel_arena.write, base, pixels))
            base += len(pixels)
        return LoadedScene(
            scene, compiled, bg_base, size, frames, ov_start, len(layers), px_base, px_count,
            copies,
        )  # fmt: skip

    @staticmethod
    def fill(loaded: LoadedScene, max_bytes: int | None = None) -> bool:
        """Copy up to `max_bytes` more of the scene's pixels (all when None); True when
        the scene is ready to show."""
        return copy_some(loaded.copies, max_bytes)

    def unload(self, loaded: LoadedScene) -> None:
        """Free the scene's regions (once; later calls do nothing)."""
        if loaded.showing:
            raise ValueError("cannot unload a scene a slot is showing")
        if loaded.unloaded:
            return
        loaded.unloaded = True
        self.backgrounds.free(loaded.bg_base, loaded.bg_size * loaded.bg_frames)
        self.overlays.pixel_arena.free(loaded.px_base, loaded.px_count)
        self.overlays.free(loaded.ov_start, loaded.ov_count)
        loaded.copies.clear()
