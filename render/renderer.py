"""The Renderer: every due session rendered in one batched pass per stage.

API used by the engine (server) and the command line:

    renderer = Renderer(device="auto")                  # "auto" | "cpu" | "cuda"
    slot = renderer.open(avatar, 1280, 720, Scene())    # persistent per-session state
    compiled = renderer.compile(scene, 1280, 720)       # decode images/videos: any thread
    renderer.set_scene(slot, scene, compiled)           # swap in (compiles here if omitted)
    loaded = renderer.load(scene, 1280, 720, compiled=compiled, fill=False)
    renderer.fill(loaded, 8 << 20)                      # copy its pixels in pieces ...
    previous = renderer.show(slot, loaded)              # ... then show it; keep or unload
    renderer.render(slots, expressions, head, eyes)     # one tick for the given slots
    nv12 = renderer.frame(slot)                         # host NV12 view, valid until next render
    renderer.close(slot)

Pose arrays are rows aligned with `slots`: expressions [N, len(VOCABULARY)] float32 in
vocabulary order, head [N, 3] (yaw, pitch, roll degrees), eyes [N, 4] (left yaw, left
pitch, right yaw, right pitch degrees). See render.rig for the angle conventions.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np

from avatarfarm.kernels import composite, damage, deform, raster, shade
from avatarfarm.kernels.backend import resolve_backend

from .arena import Arena, Table, grow
from .asset import AvatarAsset
from .camera import frame_view_projection, layer_rect, layer_view_projection
from .pool import MeshPool
from .resident import LoadedScene, SceneStore
from .rig import P as PALETTE_SLOTS
from .scene import CompiledScene, Scene, compile_scene

LIGHT = np.array([0.25, 0.45, 0.86, 0.38], np.float32)  # towards the key light; ambient in w
MAX_FRAME_SIDE = 4096


@dataclass
class _Slot:
    avatar: int
    width: int
    height: int
    fps: float
    frame_base: int
    shown: LoadedScene | None = None


class Renderer:
    """Batched renderer over one backend; see the module docstring for the API."""

    def __init__(
        self,
        device: str = "auto",
        *,
        enforce_label: bool = False,
        label_text: str | None = None,
        incremental: bool = True,
    ) -> None:
        """`incremental`: redo only the part of each frame whose geometry moved since the
        slot's last frame (kernels/damage.py; the result is the same bytes as a full
        redraw); False redraws every layer whole (for comparison)."""
        self.backend = resolve_backend(device)
        self.incremental = incremental
        self.enforce_label = enforce_label
        self.label_text = label_text
        self._slots: list[_Slot | None] = []
        self._free_slots: list[int] = []
        self._frames = Arena()
        self._device = None if self.backend == "cpu" else _DeviceMirror()
        self.pool = MeshPool(track_writes=self._device is not None)  # every avatar in use
        # backgrounds and overlays of every loaded scene; a device copy follows its writes
        self._scenes = SceneStore(track_writes=self._device is not None)
        self._history = Arena(np.float32)  # per slot: its last frame's vertices, 8 floats each
        cap = 0
        # Per-slot persistent rows, gathered into per-tick rows by index.
        self._slot_avatar = np.zeros(cap, np.int32)
        self._slot_frame = np.zeros((cap, 3), np.int64)  # fw, fh, fbase
        self._slot_bg = np.zeros((cap, 3), np.int64)  # base, size, frame count
        self._slot_layer = np.zeros((cap, 4), np.int32)  # lx, ly, lw, lh
        self._slot_viewproj = np.zeros((cap, 4, 4), np.float32)
        self._slot_dirty = np.zeros(cap, bool)
        self._slot_tick = np.zeros(cap, np.int64)
        self._slot_ov = np.zeros((cap, 2), np.int32)  # start, count in the overlay table
        self._slot_hist = np.zeros((cap, 2), np.int64)  # history row, vertex count
        self._rows = _Rows()
        self._scratch = _Scratch()
        self.stage_seconds: dict[str, float] | None = None  # set to {} to time each stage

    @contextlib.contextmanager
    def _stage(self, name: str):
        """Accumulate a stage's wall time when profiling (waits for the GPU on CUDA)."""
        if self.stage_seconds is None:
            yield
            return
        start = time.perf_counter()
        yield
        if self._device is not None:
            self._device.cuda.synchronize()
        self.stage_seconds[name] = self.stage_seconds.get(name, 0.0) + time.perf_counter() - start

    # -- sessions ---------------------------------------------------------------------------

    def open(
        self,
        avatar: AvatarAsset,
        width: int,
        height: int,
        scene: Scene | None = None,
        fps: float = 30.0,
        compiled: CompiledScene | None = None,
        loaded: LoadedScene | None = None,
    ) -> int:
        """Start rendering `avatar` at width x height; returns the slot used by render().
        `fps` paces a video background (one decoded frame per rendered frame); `compiled`,
        from `compile()` on another thread, keeps image/video decoding off the caller, and
        a ready `loaded` scene (from `load()`) keeps copying its pixels off this call."""
        if (
            width % 2
            or height % 2
            or not (16 <= width <= MAX_FRAME_SIDE)
            or not (16 <= height <= MAX_FRAME_SIDE)
        ):
            raise ValueError(f"frame size {width}x{height}: sides must be even, 16..4096")
        if loaded is None:
            loaded = self.load(scene or Scene(), width, height, fps, compiled)
        _check_shown(loaded, width, height)
        avatar_index = self.pool.add(avatar)
        slot = self._free_slots.pop() if self._free_slots else self._new_slot()
        size = width * height * 3 // 2
        frame_base = self._frames.alloc(size)
        vertices = int(self.pool.ranges[avatar_index, 1])
        self._slot_hist[slot] = (
            self._history.alloc(HISTORY_WIDTH * vertices) // HISTORY_WIDTH,
            vertices,
        )
        self._slots[slot] = _Slot(avatar_index, width, height, fps, frame_base)
        self._slot_avatar[slot] = avatar_index
        self._slot_frame[slot] = (width, height, frame_base)
        self.show(slot, loaded)
        return slot

    def set_scene(self, slot: int, scene: Scene, compiled: CompiledScene | None = None) -> None:
        """Change background, framing, overlays or label; applied from the next frame.
        Pass `compiled` (from `compile()`) to keep decoding off this thread."""
        state = self._slot(slot)
        loaded = self.load(scene, state.width, state.height, state.fps, compiled)
        self.unload(self.show(slot, loaded))

    def load(
        self,
        scene: Scene,
        width: int,
        height: int,
        fps: float = 30.0,
        compiled: CompiledScene | None = None,
        *,
        fill: bool = True,
    ) -> LoadedScene:
        """Place a scene's pixels in the renderer's buffers, ready for `show()`. With
        `fill=False` nothing is copied yet: `fill()` copies it a budget at a time."""
        compiled = compiled or self.compile(scene, width, height, fps)
        _check_size(compiled, width, height)
        loaded = self._scenes.load(scene, compiled)
        if fill:
            self._scenes.fill(loaded)
        return loaded

    def fill(self, loaded: LoadedScene, max_bytes: int | None = None) -> bool:
        """Copy up to `max_bytes` more of a loaded scene (all when None); True when ready."""
        return self._scenes.fill(loaded, max_bytes)

    def load_avatar(self, avatar: AvatarAsset, *, fill: bool = True) -> int:
        """Place `avatar` in the mesh pool ahead of `open()` and hold it there until
        `release_avatar()`; with `fill=False`, `fill_avatar()` copies it a budget at a time."""
        return self.pool.add(avatar, fill=fill)

    def fill_avatar(self, index: int, max_bytes: int | None = None) -> bool:
        """Copy up to `max_bytes` more of a loaded avatar (all when None); True when ready."""
        return self.pool.fill(index, max_bytes)

    def release_avatar(self, index: int) -> None:
        """Let go of an avatar held by `load_avatar()` (sessions rendering it keep it)."""
        self.pool.release(index)

    def unload(self, loaded: LoadedScene | None) -> None:
        """Free a loaded scene that no slot shows."""
        if loaded is not None:
            self._scenes.unload(loaded)

    def show(self, slot: int, loaded: LoadedScene) -> LoadedScene | None:
        """Render `slot` with a ready loaded scene from its next frame; nothing is copied.
        Returns the scene it showed before, which the caller keeps or unloads."""
        state = self._slot(slot)
        _check_shown(loaded, state.width, state.height)
        previous, state.shown = state.shown, loaded
        loaded.showing += 1
        if previous is not None:
            previous.showing -= 1
        self._slot_bg[slot] = (loaded.bg_base, loaded.bg_size, loaded.bg_frames)
        self._slot_ov[slot] = (loaded.ov_start, loaded.ov_count)
        asset = self.pool.avatars[state.avatar].asset
        scene = loaded.scene
        frame_vp = frame_view_projection(
            asset.cameras[scene.framing], state.width, state.height, scene.placement
        )
        lo, hi = asset.bounds
        rect = layer_rect(frame_vp, lo, hi, state.width, state.height)
        if rect.empty:
            self._slot_layer[slot] = (0, 0, 0, 0)
            self._slot_viewproj[slot] = frame_vp
        else:
            self._slot_layer[slot] = (rect.x0, rect.y0, rect.width, rect.height)
            self._slot_viewproj[slot] = layer_view_projection(
                frame_vp, rect, state.width, state.height
            )
        self._slot_dirty[slot] = True
        return previous

    def close(self, slot: int) -> None:
        state = self._slot(slot)
        self.pool.release(state.avatar)
        self._frames.free(state.frame_base, state.width * state.height * 3 // 2)
        row, vertices = self._slot_hist[slot]
        self._history.free(int(row) * HISTORY_WIDTH, int(vertices) * HISTORY_WIDTH)
        shown, state.shown = state.shown, None
        shown.showing -= 1
        self._scenes.unload(shown)
        self._slots[slot] = None
        self._free_slots.append(slot)
        self._slot_ov[slot] = 0

    def frame(self, slot: int) -> np.ndarray:
        """The slot's last NV12 frame (a view into the host frame buffer)."""
        state = self._slot(slot)
        return self._frames.view(state.frame_base, state.width * state.height * 3 // 2)

    def frame_size(self, slot: int) -> tuple[int, int]:
        state = self._slot(slot)
        return state.width, state.height

    @property
    def session_count(self) -> int:
        return sum(s is not None for s in self._slots)

    # -- one tick ---------------------------------------------------------------------------

    def render(
        self, slots: np.ndarray, expressions: np.ndarray, head: np.ndarray, eyes: np.ndarray
    ) -> None:
        """Render one frame for each slot in `slots` (pose rows aligned with it)."""
        slots = np.asarray(slots, np.int64)
        n = len(slots)
        if n == 0:
            return
        # Sessions of one avatar must be contiguous for the per-avatar rigs.
        avatar = self._slot_avatar[slots]
        order = np.argsort(avatar, kind="stable")
        slots, avatar = slots[order], avatar[order]
        rows = self._rows.pack(self, slots, avatar, n)
        for index, start, stop in _runs(avatar):
            pooled = self.pool.avatars[index]
            m = len(pooled.asset.target_names)
            pooled.expressions.evaluate(
                expressions[order[start:stop]], out=rows.weights[start:stop, :m]
            )
            pooled.pose.palette(
                head[order[start:stop]], eyes[order[start:stop]], out=rows.palette[start:stop]
            )
        scratch = self._scratch.ensure(rows, self.pool.has_blend)
        if self._device is None:
            self._launch(
                CPU_KERNELS, self.pool.arrays(), rows, scratch, self._scenes.overlays,
                self._scenes.backgrounds.data,
                self._frames.data, self._history.data.reshape(-1, HISTORY_WIDTH), n,
            )  # fmt: skip
        else:
            self._device.render(self, rows, scratch, n)
        self._slot_dirty[slots] = self._slot_bg[slots, 2] > 1  # video backgrounds redraw all
        self._slot_tick[slots] += 1

    def _launch(
        self, k: _Kernels, p, rows, scratch, o, backgrounds, frames, history, n: int
    ) -> None:
        """The stages, one launch each for the whole batch; host or device arrays."""
        h = self._rows  # launch extents are host integers
        with self._stage("deform"):
            k.deform(
                p.base_pos, p.base_nrm, p.morph_offsets, p.morph_target, p.morph_dpos,
                p.morph_dnrm, p.skin_slot, p.skin_weight, rows.vbase, rows.vcount, rows.obase,
                rows.weights, rows.palette, rows.viewproj, n, scratch.clip, scratch.wnrm,
            )  # fmt: skip
        with self._stage("damage"):
            k.damage(
                scratch.clip, scratch.wnrm, history, scratch.moved, p.tris, rows.tbase,
                rows.tcount, rows.obase, rows.vcount, rows.hbase, rows.full, rows.lx, rows.ly,
                rows.lw, rows.lh, n, rows.dirty, rows.rect, rows.box,
            )  # fmt: skip
        with self._stage("raster"):
            k.raster(
                scratch.clip, p.tris, p.tri_mat, p.mat_alpha_mode, p.mat_double_sided,
                rows.tbase, rows.tcount, rows.obase, rows.lw, rows.lh, rows.lbase, n,
                scratch.vis_opaque, scratch.vis_blend, True, rows.dirty,
            )  # fmt: skip
        with self._stage("shade"):
            k.shade(
                n, h.max_lw, h.max_lh, scratch.clip, scratch.wnrm, p.uv, p.tris, p.tri_mat,
                p.mat_base_color, p.mat_texture, p.mat_uv_transform, p.mat_alpha_mode,
                p.mat_alpha_cutoff, p.mat_shading, p.mat_shade_color, p.mat_toony, p.mat_shift,
                p.tex_pixels, p.tex_offset, p.tex_size, rows.vbase, rows.tbase, rows.obase,
                rows.light, rows.lw, rows.lh, rows.lbase, scratch.vis_opaque, scratch.vis_blend,
                scratch.rgba, rows.dirty,
            )  # fmt: skip
        with self._stage("composite"):
            k.composite(
                n, h.max_rw, h.max_rh, scratch.rgba, rows.lw, rows.lh, rows.lbase, rows.lx,
                rows.ly, rows.fw, rows.fh, rows.fbase, rows.bgbase, rows.rect, rows.ov_start,
                rows.ov_count, o.x, o.y, o.w, o.h, o.base, o.opacity, o.z, o.pixels,
                backgrounds, frames,
            )  # fmt: skip

    # -- internals --------------------------------------------------------------------------

    def _slot(self, slot: int) -> _Slot:
        if not (0 <= slot < len(self._slots)) or self._slots[slot] is None:
            raise KeyError(f"no render slot {slot}")
        return self._slots[slot]  # type: ignore[return-value]

    def _new_slot(self) -> int:
        slot = len(self._slots)
        self._slots.append(None)
        need = slot + 1
        self._slot_avatar = grow(self._slot_avatar, need)
        self._slot_frame = grow(self._slot_frame, need)
        self._slot_bg = grow(self._slot_bg, need)
        self._slot_layer = grow(self._slot_layer, need)
        self._slot_viewproj = grow(self._slot_viewproj, need)
        self._slot_dirty = grow(self._slot_dirty, need)
        self._slot_tick = grow(self._slot_tick, need)
        self._slot_ov = grow(self._slot_ov, need)
        self._slot_hist = grow(self._slot_hist, need)
        return slot

    def compile(self, scene: Scene, width: int, height: int, fps: float = 30.0) -> CompiledScene:
        """Turn a scene into pixels for one frame size (decodes images and videos, renders
        text). Touches no renderer state, so any thread may call it."""
        return compile_scene(
            scene,
            width,
            height,
            fps=fps,
            enforce_label=self.enforce_label,
            label_text=self.label_text,
        )


class _Kernels(NamedTuple):
    deform: object
    damage: object
    raster: object
    shade: object
    composite: object


CPU_KERNELS = _Kernels(
    deform.deform_cpu, damage.damage_cpu, raster.raster_cpu, shade.shade_cpu,
    composite.composite_cpu,
)  # fmt: skip
CUDA_KERNELS = _Kernels(
    deform.deform_cuda, damage.damage_cuda, raster.raster_cuda, shade.shade_cuda,
    composite.composite_cuda,
)  # fmt: skip
HISTORY_WIDTH = 8
"""Floats per vertex in a slot's history (kernels/damage.py): clip xyzw, normal xyz, spare."""
SCRATCH_FIELDS = ("clip", "wnrm", "moved", "vis_opaque", "vis_blend", "rgba")


def _check_size(compiled: CompiledScene, width: int, height: int) -> None:
    if (compiled.width, compiled.height) != (width, height):
        raise ValueError(
            f"scene compiled for {compiled.width}x{compiled.height}, not {width}x{height}"
        )


def _check_shown(loaded: LoadedScene, width: int, height: int) -> None:
    _check_size(loaded.compiled, width, height)
    if loaded.unloaded:
        raise ValueError("scene was unloaded")
    if not loaded.ready:
        raise ValueError("scene is not fully loaded: fill() it first")


def _runs(values: np.ndarray):
    """(value, start, stop) for each run of equal values in a sorted array."""
    edges = np.flatnonzero(np.diff(values)) + 1
    starts = np.concatenate(([0], edges))
    stops = np.concatenate((edges, [len(values)]))
    return zip(values[starts].tolist(), starts.tolist(), stops.tolist(), strict=True)


class _Rows:
    """Per-tick session rows (kernels/__init__ layout), persistent and grown by doubling."""

    def __init__(self) -> None:
        self.capacity = 0
        self.max_targets = 0

    def pack(self, r: Renderer, slots: np.ndarray, avatar: np.ndarray, n: int) -> _Rows:
        if n > self.capacity or r.pool.max_targets > self.max_targets:
            self._allocate(max(n, 2 * self.capacity, 8), max(r.pool.max_targets, self.max_targets))
        pool = r.pool
        ranges = pool.ranges[avatar]
        self.vbase[:n], self.vcount[:n] = ranges[:, 0], ranges[:, 1]
        self.tbase[:n], self.tcount[:n] = ranges[:, 2], ranges[:, 3]
        np.cumsum(self.vcount[: n - 1], out=self.obase[1:n])
        layer = r._slot_layer[slots]
        self.lx[:n], self.ly[:n], self.lw[:n], self.lh[:n] = layer.T
        area = self.lw[:n].astype(np.int64) * self.lh[:n]
        np.cumsum(area[: n - 1], out=self.lbase[1:n])
        frame = r._slot_frame[slots]
        self.fw[:n], self.fh[:n], self.fbase[:n] = frame.T
        bg = r._slot_bg[slots]
        self.bgbase[:n] = bg[:, 0] + (r._slot_tick[slots] % np.maximum(bg[:, 2], 1)) * bg[:, 1]
        dirty = r._slot_dirty[slots]
        self.rect[:n, 0] = np.where(dirty, 0, self.lx[:n])
        self.rect[:n, 1] = np.where(dirty, 0, self.ly[:n])
        self.rect[:n, 2] = np.where(dirty, self.fw[:n], self.lx[:n] + self.lw[:n])
        self.rect[:n, 3] = np.where(dirty, self.fh[:n], self.ly[:n] + self.lh[:n])
        self.viewproj[:n] = r._slot_viewproj[slots]
        self.hbase[:n] = r._slot_hist[slots, 0]
        self.full[:n] = dirty | (not r.incremental)
        ov = r._slot_ov[slots]
        self.ov_start[:n], self.ov_count[:n] = ov[:, 0], ov[:, 1]
        self.weights[:n] = 0.0
        self.n = n
        self.total_vertices = int(self.obase[n - 1] + self.vcount[n - 1])
        self.total_pixels = int(self.lbase[n - 1] + area[n - 1])
        self.max_lw, self.max_lh = int(self.lw[:n].max()), int(self.lh[:n].max())
        self.max_rw = int((self.rect[:n, 2] - self.rect[:n, 0]).max())
        self.max_rh = int((self.rect[:n, 3] - self.rect[:n, 1]).max())
        return self

    def _allocate(self, capacity: int, max_targets: int) -> None:
        self.capacity, self.max_targets = capacity, max_targets
        i32 = lambda *shape: np.zeros((capacity, *shape), np.int32)  # noqa: E731
        i64 = lambda *shape: np.zeros((capacity, *shape), np.int64)  # noqa: E731
        self.vbase, self.vcount, self.tbase, self.tcount, self.obase = (i32() for _ in range(5))
        self.lx, self.ly, self.lw, self.lh, self.fw, self.fh = (i32() for _ in range(6))
        self.lbase, self.fbase, self.bgbase, self.hbase = i64(), i64(), i64(), i64()
        self.rect, self.dirty, self.box = i32(4), i32(4), i32(4)
        self.full = np.zeros(capacity, np.uint8)
        self.ov_start, self.ov_count = i32(), i32()
        self.weights = np.zeros((capacity, max(max_targets, 1)), np.float32)
        self.palette = np.zeros((capacity, PALETTE_SLOTS, 3, 4), np.float32)
        self.viewproj = np.zeros((capacity, 4, 4), np.float32)
        self.light = np.tile(LIGHT, (capacity, 1))


class _Scratch:
    """Per-tick intermediate buffers (deformed vertices, visibility, layer colour)."""

    def __init__(self) -> None:
        self.clip = np.zeros((0, 4), np.float32)
        self.wnrm = np.zeros((0, 3), np.float32)
        self.moved = np.zeros(0, np.uint8)
        self.vis_opaque = np.zeros(0, np.uint64)
        self.vis_blend = np.zeros(0, np.uint64)
        self.rgba = np.zeros((0, 4), np.uint8)

    def ensure(self, rows: _Rows, blend: bool) -> _Scratch:
        """Buffers for this tick; without MASK/BLEND materials the blend layer is the opaque
        one (kernels/__init__.py), which saves its memory and its clearing."""
        v, px = max(rows.total_vertices, 1), max(rows.total_pixels, 1)
        self.clip, self.wnrm = grow(self.clip, v), grow(self.wnrm, v)
        self.moved = grow(self.moved, v)
        self.vis_opaque = grow(self.vis_opaque, px)
        if not blend:
            self.vis_blend = self.vis_opaque
        elif self.vis_blend is self.vis_opaque:
            self.vis_blend = np.zeros(px, np.uint64)
        else:
            self.vis_blend = grow(self.vis_blend, px)
        self.rgba = grow(self.rgba, px)
        return self

    @property
    def shared_blend(self) -> bool:
        return self.vis_blend is self.vis_opaque


class _DeviceMirror:
    """Device copies for the CUDA backend: pools re-uploaded when they change, per-tick rows
    copied into persistent device arrays, frames composited on the device and copied back
    once per tick for host encoders (x264); NVENC would read the device frames directly."""

    ROW_FIELDS = (
        "vbase", "vcount", "tbase", "tcount", "obase", "lx", "ly", "lw", "lh", "fw", "fh",
        "lbase", "fbase", "bgbase", "rect", "ov_start", "ov_count", "weights", "palette",
        "viewproj", "light", "hbase", "full", "dirty", "box",
    )  # fmt: skip

    def __init__(self) -> None:
        from avatarfarm.kernels.backend import cuda_module

        self.cuda = cuda_module()
        self.arrays: dict[str, object] = {}
        self.pool_version = -1
        self.pool: SimpleNamespace | None = None

    def _put(self, name: str, host: np.ndarray):
        """Copy `host` into the persistent device array `name`, reallocating on a new shape."""
        dev = self.arrays.get(name)
        if dev is None or dev.shape != host.shape or dev.dtype != host.dtype:
            dev = self.cuda.to_device(host)
            self.arrays[name] = dev
        else:
            dev.copy_to_device(host)
        return dev

    def _sync(self, name: str, host: np.ndarray, written: list[tuple[int, int]]):
        """The device array `name` brought up to `host`: sent whole the first time, then
        only the ranges written since last time (a grown host array grows the device
        copy on the device, so what it held is not sent again)."""
        dev = self.arrays.get(name)
        if dev is None:
            self.arrays[name] = dev = self.cuda.to_device(host)
            return dev
        dev = self._regrown(name, host.shape, host.dtype)
        for start, stop in written:
            dev[start:stop].copy_to_device(host[start:stop])
        return dev

    def _regrown(self, name: str, shape: tuple[int, ...], dtype):
        """The device array `name` at `shape`, keeping its leading rows (a copy on the
        device when the shape changed)."""
        dev = self.arrays.get(name)
        if dev is not None and dev.shape == shape:
            return dev
        bigger = self.cuda.device_array(shape, dtype)
        if dev is not None:
            keep = min(shape[0], dev.shape[0])
            bigger[:keep].copy_to_device(dev[:keep])
        self.arrays[name] = bigger
        return bigger

    def _sync_table(self, prefix: str, table: Table) -> dict[str, object]:
        written = table.take_written()
        return {c: self._sync(prefix + c, getattr(table, c), written) for c in table.columns}

    def _scratch(self, name: str, host: np.ndarray):
        """A device array shaped like `host`, contents left to the kernels."""
        dev = self.arrays.get(name)
        if dev is None or dev.shape != host.shape:
            dev = self.cuda.device_array(host.shape, host.dtype)
            self.arrays[name] = dev
        return dev

    def render(self, r: Renderer, rows: _Rows, scratch: _Scratch, n: int) -> None:
        """Bring the device copies up to date, launch the stages, copy the frames back."""
        pool = r.pool
        if pool.version != self.pool_version:  # an avatar was placed or dropped
            columns: dict[str, object] = {}
            for table in pool.tables.values():
                columns.update(self._sync_table("pool.", table))
            texels = self._sync("pool.tex_pixels", pool.texels.data, pool.texels.take_written())
            self.pool = SimpleNamespace(**columns, tex_pixels=texels)
            self.pool_version = pool.version
        overlays, backgrounds = r._scenes.overlays, r._scenes.backgrounds
        overlays = SimpleNamespace(
            **self._sync_table("ov.", overlays),
            pixels=self._sync("ov.pixels", overlays.pixels, overlays.pixel_arena.take_written()),
        )
        backgrounds = self._sync("backgrounds", backgrounds.data, backgrounds.take_written())
        frames = r._frames.data
        self._sync("frames", frames, [])  # the device draws them; the host only reads back
        device_rows = _mirror(self._put, "row.", rows, self.ROW_FIELDS)
        shared = scratch.shared_blend
        fields = [f for f in SCRATCH_FIELDS if not (shared and f == "vis_blend")]
        device_scratch = _mirror(self._scratch, "scratch.", scratch, fields)
        if shared:
            self.arrays.pop("scratch.vis_blend", None)
            device_scratch.vis_blend = device_scratch.vis_opaque
        r._launch(
            CUDA_KERNELS, self.pool, device_rows, device_scratch, overlays, backgrounds,
            self.arrays["frames"], self._history(r), n,
        )  # fmt: skip
        with r._stage("download"):
            self.arrays["frames"].copy_to_host(frames)

    def _history(self, r: Renderer):
        """The slots' vertex history lives only on the device (the kernels keep it); when
        the host arena grows, the device copy grows with it, keeping its rows."""
        rows = r._history.data.shape[0] // HISTORY_WIDTH
        return self._regrown("history", (rows, HISTORY_WIDTH), np.float32)


def _mirror(put, prefix: str, source, fields) -> SimpleNamespace:
    """A namespace of device arrays mirroring `fields` of `source` via `put`."""
    return SimpleNamespace(**{name: put(prefix + name, getattr(source, name)) for name in fields})
