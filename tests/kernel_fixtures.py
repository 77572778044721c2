"""Small batches for kernel tests, laid out exactly as kernels/__init__.py describes.

`pack(meshes, sessions)` builds the pools (vertices, morph CSR, skin, triangles, materials,
an empty texture pool) and the per-session rows, and allocates the stage buffers (clip,
wnrm, vis_opaque, vis_blend, rgba, frame). Shared by the deform/raster and shade/composite
tests; everything is plain numpy, so the CUDA tests copy it with `to_device`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

OPAQUE, MASK, BLEND = 0, 1, 2
EMPTY = np.uint64(0xFFFFFFFFFFFFFFFF)


@dataclass
class Mesh:
    """One avatar: rest-pose world positions/normals, CCW triangles, per-triangle material."""

    positions: np.ndarray  # [V,3]
    tris: np.ndarray  # [T,3] local vertex indices
    normals: np.ndarray | None = None  # [V,3]; +Z when None
    uvs: np.ndarray | None = None  # [V,2]
    tri_mat: np.ndarray | None = None  # [T] local material index; 0 when None
    alpha_mode: list[int] = field(default_factory=lambda: [OPAQUE])  # per local material
    double_sided: list[bool] = field(default_factory=lambda: [False])
    base_color: list[tuple[float, float, float, float]] | None = None
    # Morph CSR (per vertex): offsets [V+1], target [NNZ], dpos/dnrm [NNZ,3]; none when None.
    morph_offsets: np.ndarray | None = None
    morph_target: np.ndarray | None = None
    morph_dpos: np.ndarray | None = None
    morph_dnrm: np.ndarray | None = None
    skin_slot: np.ndarray | None = None  # [V,4]; slot 0 with weight 1 when None
    skin_weight: np.ndarray | None = None

    @property
    def n_vertices(self) -> int:
        return int(self.positions.shape[0])

    @property
    def n_tris(self) -> int:
        return int(self.tris.shape[0])


@dataclass
class Session:
    mesh: int  # index into the meshes list
    lw: int
    lh: int
    viewproj: np.ndarray | None = None  # [4,4]; identity when None
    weights: np.ndarray | None = None  # [M]; zeros when None
    palette: np.ndarray | None = None  # [P,3,4]; identity when None
    light: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 0.2)
    frame: tuple[int, int] | None = None  # output (fw, fh); the layer size when None
    layer_xy: tuple[int, int] = (0, 0)


def perspective(fov_y_deg: float, aspect: float, near: float, far: float) -> np.ndarray:
    """OpenGL projection: eye looks down -Z, clip z in [-w, w] between near and far."""
    f = 1.0 / math.tan(math.radians(fov_y_deg) / 2.0)
    m = np.zeros((4, 4), np.float64)
    m[0, 0] = f / aspect
    m[1, 1] = f
    m[2, 2] = (far + near) / (near - far)
    m[2, 3] = 2.0 * far * near / (near - far)
    m[3, 2] = -1.0
    return m


def look_at(eye, target, up=(0.0, 1.0, 0.0)) -> np.ndarray:
    eye = np.asarray(eye, np.float64)
    fwd = np.asarray(target, np.float64) - eye
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, np.asarray(up, np.float64))
    right /= np.linalg.norm(right)
    true_up = np.cross(right, fwd)
    m = np.eye(4)
    m[0, :3], m[1, :3], m[2, :3] = right, true_up, -fwd
    m[:3, 3] = -m[:3, :3] @ eye
    return m


def camera(eye, target, lw: int, lh: int, fov=30.0, near=0.1, far=100.0) -> np.ndarray:
    return (perspective(fov, lw / lh, near, far) @ look_at(eye, target)).astype(np.float32)


def grid_mesh(nx: int, ny: int, size=(2.0, 2.0), z=0.0, jitter=0.0, seed=0) -> Mesh:
    """A (nx x ny)-cell grid in the z plane, centred on the origin, CCW seen from +Z."""
    rng = np.random.default_rng(seed)
    xs = np.linspace(-size[0] / 2, size[0] / 2, nx + 1)
    ys = np.linspace(-size[1] / 2, size[1] / 2, ny + 1)
    gx, gy = np.meshgrid(xs, ys)
    pos = np.stack([gx.ravel(), gy.ravel(), np.full(gx.size, z)], axis=1)
    if jitter:
        inner = np.ones_like(gx, bool)
        inner[[0, -1], :] = False
        inner[:, [0, -1]] = False
        step = min(size[0] / nx, size[1] / ny)
        pos[inner.ravel(), :2] += rng.uniform(-jitter, jitter, (inner.sum(), 2)) * step
    i = np.arange(ny)[:, None] * (nx + 1) + np.arange(nx)[None, :]
    a, b, c, d = i, i + 1, i + nx + 1, i + nx + 2
    tris = np.concatenate(
        [np.stack([a, b, d], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)]
    )
    return Mesh(positions=pos.astype(np.float32), tris=tris.astype(np.int32))


def sphere_mesh(n_lat: int, n_lon: int, radius=1.0, center=(0.0, 0.0, 0.0)) -> Mesh:
    """A UV sphere (2*n_lon*(n_lat-1) triangles), outward CCW faces, unit normals."""
    theta = np.linspace(0.0, math.pi, n_lat + 1)
    phi = np.linspace(0.0, 2 * math.pi, n_lon, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    nrm = np.stack([np.sin(t) * np.sin(p), np.cos(t), np.sin(t) * np.cos(p)], -1).reshape(-1, 3)
    pos = nrm * radius + np.asarray(center)
    idx = np.arange((n_lat + 1) * n_lon).reshape(n_lat + 1, n_lon)
    a = idx[:-1]
    b = np.roll(idx[:-1], -1, axis=1)
    c = idx[1:]
    d = np.roll(idx[1:], -1, axis=1)
    t1 = np.stack([a, c, d], -1)[:-1].reshape(-1, 3)  # skip the triangles collapsed
    t2 = np.stack([a, d, b], -1)[1:].reshape(-1, 3)  # onto a pole
    return Mesh(
        positions=pos.astype(np.float32),
        normals=nrm.astype(np.float32),
        tris=np.concatenate([t1, t2]).astype(np.int32),
    )


def pack(meshes: list[Mesh], sessions: list[Session], n_targets: int = 4, n_palette: int = 4):
    """Pools + session rows + stage buffers for `sessions` (all rows used this tick)."""
    vbase, tbase, mbase = [], [], []
    pos, nrm, uv, skin_slot, skin_weight = [], [], [], [], []
    offs, mtarget, mdpos, mdnrm = [np.zeros(1, np.int64)], [], [], []
    tris, tri_mat = [], []
    alpha, dside, color = [], [], []
    nv = nt = nnz = nm = 0
    for m in meshes:
        v, t = m.n_vertices, m.n_tris
        vbase.append(nv)
        tbase.append(nt)
        mbase.append(nm)
        pos.append(m.positions)
        nrm.append(m.normals if m.normals is not None else np.tile([0.0, 0.0, 1.0], (v, 1)))
        uv.append(m.uvs if m.uvs is not None else np.zeros((v, 2)))
        if m.skin_slot is None:
            skin_slot.append(np.zeros((v, 4), np.int32))
            w = np.zeros((v, 4))
            w[:, 0] = 1.0
            skin_weight.append(w)
        else:
            skin_slot.append(m.skin_slot)
            skin_weight.append(m.skin_weight)
        if m.morph_offsets is None:
            offs.append(np.full(v, nnz, np.int64))
        else:
            offs.append(np.asarray(m.morph_offsets[1:], np.int64) + nnz)
            mtarget.append(m.morph_target)
            mdpos.append(m.morph_dpos)
            mdnrm.append(m.morph_dnrm)
            nnz += len(m.morph_target)
        tris.append(m.tris)
        tri_mat.append((m.tri_mat if m.tri_mat is not None else np.zeros(t, np.int32)) + nm)
        alpha += list(m.alpha_mode)
        dside += list(m.double_sided)
        color += list(m.base_color or [(1.0, 1.0, 1.0, 1.0)] * len(m.alpha_mode))
        nv, nt, nm = nv + v, nt + t, nm + len(m.alpha_mode)

    def cat(parts, shape, dtype):
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(shape, dtype)

    b = SimpleNamespace()
    b.base_pos = cat(pos, (0, 3), np.float32)
    b.base_nrm = cat(nrm, (0, 3), np.float32)
    b.uv = cat(uv, (0, 2), np.float32)
    b.morph_offsets = cat(offs, (1,), np.int32)
    b.morph_target = cat(mtarget, (0,), np.int32)
    b.morph_dpos = cat(mdpos, (0, 3), np.float32)
    b.morph_dnrm = cat(mdnrm, (0, 3), np.float32)
    b.skin_slot = cat(skin_slot, (0, 4), np.int32)
    b.skin_weight = cat(skin_weight, (0, 4), np.float32)
    b.tris = cat(tris, (0, 3), np.int32)
    b.tri_mat = cat(tri_mat, (0,), np.int32)
    mt = nm
    b.mat_base_color = np.asarray(color, np.float32).reshape(mt, 4)
    b.mat_texture = np.full(mt, -1, np.int32)
    b.mat_uv_transform = np.tile(np.array([[1, 0, 0], [0, 1, 0]], np.float32), (mt, 1, 1))
    b.mat_alpha_mode = np.asarray(alpha, np.int8)
    b.mat_alpha_cutoff = np.full(mt, 0.5, np.float32)
    b.mat_double_sided = np.asarray(dside, np.uint8)
    b.mat_shading = np.zeros(mt, np.int8)
    b.mat_shade_color = np.full((mt, 3), 0.5, np.float32)
    b.mat_toony = np.full(mt, 0.9, np.float32)
    b.mat_shift = np.zeros(mt, np.float32)
    b.tex_pixels = np.zeros(4, np.uint8)
    b.tex_offset = np.zeros(0, np.int64)
    b.tex_size = np.zeros((0, 2), np.int32)

    n = len(sessions)
    b.n_sessions = n
    b.s_vbase = np.array([vbase[s.mesh] for s in sessions], np.int32)
    b.s_vcount = np.array([meshes[s.mesh].n_vertices for s in sessions], np.int32)
    b.s_tbase = np.array([tbase[s.mesh] for s in sessions], np.int32)
    b.s_tcount = np.array([meshes[s.mesh].n_tris for s in sessions], np.int32)
    b.s_obase = np.concatenate([[0], np.cumsum(b.s_vcount)[:-1]]).astype(np.int32)
    b.s_weights = np.zeros((n, n_targets), np.float32)
    b.s_palette = np.zeros((n, n_palette, 3, 4), np.float32)
    b.s_palette[:, :, :3, :3] = np.eye(3, dtype=np.float32)
    b.s_viewproj = np.tile(np.eye(4, dtype=np.float32), (n, 1, 1))
    b.s_light = np.array([s.light for s in sessions], np.float32).reshape(n, 4)
    for i, s in enumerate(sessions):
        if s.weights is not None:
            b.s_weights[i, : len(s.weights)] = s.weights
        if s.palette is not None:
            b.s_palette[i, : len(s.palette)] = s.palette
        if s.viewproj is not None:
            b.s_viewproj[i] = s.viewproj
    b.s_lw = np.array([s.lw for s in sessions], np.int32)
    b.s_lh = np.array([s.lh for s in sessions], np.int32)
    layer = b.s_lw.astype(np.int64) * b.s_lh
    b.s_lbase = np.concatenate([[0], np.cumsum(layer)[:-1]]).astype(np.int64)
    fsize = [s.frame or (s.lw, s.lh) for s in sessions]
    b.s_fw = np.array([f[0] for f in fsize], np.int32)
    b.s_fh = np.array([f[1] for f in fsize], np.int32)
    nv12 = np.array([f[0] * f[1] * 3 // 2 for f in fsize], np.int64)
    b.s_fbase = np.concatenate([[0], np.cumsum(nv12)[:-1]]).astype(np.int64)
    b.s_bgbase = b.s_fbase.copy()
    b.s_lx = np.array([s.layer_xy[0] for s in sessions], np.int32)
    b.s_ly = np.array([s.layer_xy[1] for s in sessions], np.int32)
    b.s_rect = np.array([(0, 0, f[0], f[1]) for f in fsize], np.int32).reshape(n, 4)

    n_out = int(b.s_vcount.sum())
    n_pix = int(layer.sum())
    b.clip = np.zeros((max(n_out, 1), 4), np.float32)
    b.wnrm = np.zeros((max(n_out, 1), 3), np.float32)
    b.vis_opaque = np.zeros(max(n_pix, 1), np.uint64)
    b.vis_blend = np.zeros(max(n_pix, 1), np.uint64)
    b.rgba = np.zeros((max(n_pix, 1), 4), np.uint8)
    b.frame = np.zeros(max(int(nv12.sum()), 1), np.uint8)
    b.background = np.zeros_like(b.frame)
    return b


DEFORM_ARGS = (
    "base_pos base_nrm morph_offsets morph_target morph_dpos morph_dnrm skin_slot skin_weight "
    "s_vbase s_vcount s_obase s_weights s_palette s_viewproj"
).split()
RASTER_ARGS = (
    "clip tris tri_mat mat_alpha_mode mat_double_sided s_tbase s_tcount s_obase s_lw s_lh s_lbase"
).split()


def deform_args(b) -> tuple:
    """Arguments of deform_cpu/deform_cuda, in order."""
    return (*[getattr(b, k) for k in DEFORM_ARGS], b.n_sessions, b.clip, b.wnrm)


def raster_args(b) -> tuple:
    """Arguments of raster_cpu/raster_cuda, in order."""
    return (*[getattr(b, k) for k in RASTER_ARGS], b.n_sessions, b.vis_opaque, b.vis_blend)


def run_deform_raster_cpu(b) -> None:
    from avatarfarm.kernels.deform import deform_cpu
    from avatarfarm.kernels.raster import raster_cpu

    deform_cpu(*deform_args(b))
    raster_cpu(*raster_args(b))


def layer(b, buf: np.ndarray, s: int) -> np.ndarray:
    """Session s's region of a layer buffer as an [lh, lw] view."""
    lw, lh, base = int(b.s_lw[s]), int(b.s_lh[s]), int(b.s_lbase[s])
    return buf[base : base + lw * lh].reshape(lh, lw)


def vis_ids(vis: np.ndarray) -> np.ndarray:
    """Local triangle ids of visibility words, -1 where empty."""
    ids = (vis & np.uint64(0xFFFFFFFF)).astype(np.int64) - 1
    return np.where(vis == EMPTY, -1, ids)


def vis_depth(vis: np.ndarray) -> np.ndarray:
    """Depths (float32) of visibility words; inf where empty."""
    d = (vis >> np.uint64(32)).astype(np.uint32).view(np.float32)
    return np.where(vis == EMPTY, np.float32(np.inf), d)
