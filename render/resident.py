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

from .arena import Arena, Regions, grow
from .scene import CompiledScene, Scene


@dataclass
class _Copy:
    """Pixels still to be copied into an arena: `source` rows go to `offset` onwards."""

    arena: Arena
    offset: int
    source: np.ndarray
    done: int = 0


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
    copies: list[_Copy] = field(default_factory=list)  # left to copy; empty once ready
    showing: int = 0  # slots showing it
    unloaded: bool = False

    @property
    def ready(self) -> bool:
        return not self.copies

    @property
    def nbytes(self) -> int:
        return self.bg_size * self.bg_frames + 4 * self.px_count


class OverlayTable:
    """Overlay rows the composite kernel reads (position, size, first pixel, opacity, z),
    with their premultiplied RGBA pixels in one arena; a scene's overlays are one run."""

    FIELDS = {
        "x": np.int32, "y": np.int32, "w": np.int32, "h": np.int32, "base": np.int64,
        "opacity": np.float32, "z": np.int32,
    }  # fmt: skip

    def __init__(self, track_writes: bool = False) -> None:
        self.rows = Regions()
        for name, dtype in self.FIELDS.items():
            setattr(self, name, grow(np.zeros(0, dtype), 1))
        self.pixel_arena = Arena(np.uint8, width=4, track_writes=track_writes)
        self.track_writes = track_writes
        self._written: list[tuple[int, int]] = []

    @property
    def pixels(self) -> np.ndarray:
        return self.pixel_arena.data

    def add(self, layers, px_base: int) -> int:
        """Rows for `layers` (CompiledLayer), their pixels counted from `px_base`."""
        start = self.rows.alloc(len(layers))
        for name in self.FIELDS:
            setattr(self, name, grow(getattr(self, name), self.rows.top))
        base = px_base
        for i, layer in enumerate(layers, start):
            h, w = layer.rgba.shape[:2]
            self.x[i], self.y[i], self.w[i], self.h[i] = layer.x, layer.y, w, h
            self.base[i], self.opacity[i], self.z[i] = base, layer.opacity, layer.z
            base += w * h
        if self.track_writes:
            self._written.append((start, start + len(layers)))
        return start

    def take_written(self) -> list[tuple[int, int]]:
        written, self._written = self._written, []
        return written


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
            _Copy(self.backgrounds, bg_base + i * size, nv12.reshape(-1))
            for i, nv12 in enumerate(compiled.backgrounds)
        ]
        base = px_base
        for layer in layers:
            pixels = layer.rgba.reshape(-1, 4)
            copies.append(_Copy(self.overlays.pixel_arena, base, pixels))
            base += len(pixels)
        return LoadedScene(
            scene, compiled, bg_base, size, frames, ov_start, len(layers), px_base, px_count,
            copies,
        )  # fmt: skip

    @staticmethod
    def fill(loaded: LoadedScene, max_bytes: int | None = None) -> bool:
        """Copy up to `max_bytes` more of the scene's pixels (all when None); True when
        the scene is ready to show."""
        budget = max_bytes
        while loaded.copies and (budget is None or budget > 0):
            copy = loaded.copies[0]
            left = len(copy.source) - copy.done
            row_bytes = max(1, copy.source[:1].nbytes)
            rows = left if budget is None else min(left, max(1, budget // row_bytes))
            copy.arena.write(copy.offset + copy.done, copy.source[copy.done : copy.done + rows])
            copy.done += rows
            if budget is not None:
                budget -= rows * row_bytes
            if copy.done == len(copy.source):
                loaded.copies.pop(0)
        return loaded.ready

    def unload(self, loaded: LoadedScene) -> None:
        """Free the scene's regions (once; later calls do nothing)."""
        if loaded.showing:
            raise ValueError("cannot unload a scene a slot is showing")
        if loaded.unloaded:
            return
        loaded.unloaded = True
        self.backgrounds.free(loaded.bg_base, loaded.bg_size * loaded.bg_frames)
        self.overlays.pixel_arena.free(loaded.px_base, loaded.px_count)
        self.overlays.rows.free(loaded.ov_start, loaded.ov_count)
        loaded.copies.clear()
