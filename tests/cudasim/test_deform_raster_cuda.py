"""deform_cuda and raster_cuda against the CPU launchers on the same small batch.

Run with NUMBA_ENABLE_CUDASIM=1 (numba's CUDA simulator: slow Python, so tiny inputs) or on
a machine with a GPU. Both backends run the same math, so results agree exactly here:
the inputs have no depth ties, and raster gets the same clip buffer on both sides.
"""

from __future__ import annotations

import numpy as np
import pytest
from kernel_fixtures import (
    BLEND,
    EMPTY,
    MASK,
    OPAQUE,
    Mesh,
    Session,
    camera,
    deform_args,
    grid_mesh,
    layer,
    pack,
    perspective,
    raster_args,
    sphere_mesh,
    vis_ids,
)

from avatarfarm.kernels.backend import cuda_available, cuda_module
from avatarfarm.kernels.deform import deform_cpu, deform_cuda
from avatarfarm.kernels.raster import clear_vis_cpu, clear_vis_cuda, raster_cpu, raster_cuda

pytestmark = [
    pytest.mark.cudasim,
    pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU and the simulator is off"),
]


def small_batch():
    rng = np.random.default_rng(11)
    sphere = sphere_mesh(4, 6, radius=0.7)
    v = sphere.n_vertices
    # two morph targets on a few vertices, and two bones
    offsets = np.zeros(v + 1, np.int32)
    offsets[1:] = np.cumsum(np.arange(v) % 3 == 0)
    nnz = int(offsets[-1])
    sphere.morph_offsets = offsets
    sphere.morph_target = (np.arange(nnz) % 2).astype(np.int32)
    sphere.morph_dpos = rng.normal(0, 0.05, (nnz, 3)).astype(np.float32)
    sphere.morph_dnrm = rng.normal(0, 0.1, (nnz, 3)).astype(np.float32)
    sphere.skin_slot = np.tile(np.array([0, 1, 0, 0], np.int32), (v, 1))
    w1 = (sphere.positions[:, 1] > 0).astype(np.float32) * 0.6
    sphere.skin_weight = np.stack([1 - w1, w1, 0 * w1, 0 * w1], 1).astype(np.float32)

    grid = grid_mesh(3, 2, size=(1.2, 0.8), z=0.2, jitter=0.3, seed=3)
    grid.tri_mat = (np.arange(grid.n_tris) % 3).astype(np.int32)
    grid.alpha_mode = [OPAQUE, MASK, BLEND]
    grid.double_sided = [False, True, False]

    palette = np.zeros((2, 3, 4), np.float32)
    palette[:, :, :3] = np.eye(3)
    c, s = np.cos(0.3), np.sin(0.3)
    palette[1, :, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    palette[1, :, 3] = [0.0, 0.05, 0.0]
    sessions = [
        Session(0, 32, 24, camera((0.2, 0.1, 2.5), (0, 0, 0), 32, 24),
                weights=np.array([0.7, 0.3]), palette=palette),
        Session(1, 24, 32, camera((-0.3, 0.2, 1.8), (0, 0, 0), 24, 32)),
    ]  # fmt: skip
    return [sphere, grid], sessions


def to_device(b, names):
    cuda = cuda_module()
    return {k: cuda.to_device(getattr(b, k)) for k in names}


DEFORM_NAMES = (
    "base_pos base_nrm morph_offsets morph_target morph_dpos morph_dnrm skin_slot skin_weight "
    "s_vbase s_vcount s_obase s_weights s_palette s_viewproj clip wnrm"
).split()
RASTER_NAMES = (
    "clip tris tri_mat mat_alpha_mode mat_double_sided s_tbase s_tcount s_obase "
    "s_lw s_lh s_lbase vis_opaque vis_blend"
).split()


def run_cuda_raster(b):
    d = to_device(b, RASTER_NAMES)
    raster_cuda(*[d[k] for k in RASTER_NAMES[:11]], b.n_sessions, d["vis_opaque"], d["vis_blend"])
    return d["vis_opaque"].copy_to_host(), d["vis_blend"].copy_to_host()


def test_deform_cuda_matches_cpu():
    meshes, sessions = small_batch()
    b = pack(meshes, sessions)
    deform_cpu(*deform_args(b))
    d = to_device(b, DEFORM_NAMES)
    d["clip"] = cuda_module().to_device(np.full_like(b.clip, np.nan))
    d["wnrm"] = cuda_module().to_device(np.full_like(b.wnrm, np.nan))
    deform_cuda(*[d[k] for k in DEFORM_NAMES[:14]], b.n_sessions, d["clip"], d["wnrm"])
    np.testing.assert_allclose(d["clip"].copy_to_host(), b.clip, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(d["wnrm"].copy_to_host(), b.wnrm, rtol=1e-6, atol=1e-6)


def test_raster_cuda_matches_cpu():
    meshes, sessions = small_batch()
    b = pack(meshes, sessions)
    deform_cpu(*deform_args(b))
    raster_cpu(*raster_args(b))
    vo, vb = run_cuda_raster(b)
    for s in range(b.n_sessions):
        for cpu_buf, gpu_buf in ((b.vis_opaque, vo), (b.vis_blend, vb)):
            np.testing.assert_array_equal(
                vis_ids(layer(b, gpu_buf, s)), vis_ids(layer(b, cpu_buf, s))
            )
    np.testing.assert_array_equal(vo, b.vis_opaque)  # depths too: same float32 math
    np.testing.assert_array_equal(vb, b.vis_blend)
    assert (layer(b, b.vis_opaque, 0) != EMPTY).sum() > 50
    assert (layer(b, b.vis_blend, 1) != EMPTY).sum() > 20


def test_raster_cuda_near_plane_matches_cpu():
    rng = np.random.default_rng(4)
    pos = (rng.uniform(-1.5, 1.5, (30, 3)) - [0, 0, 0.6]).astype(np.float32)
    mesh = Mesh(positions=pos, tris=np.arange(30, dtype=np.int32).reshape(10, 3),
                double_sided=[True])  # fmt: skip
    vp = perspective(60.0, 1.0, 0.1, 10.0).astype(np.float32)
    b = pack([mesh], [Session(0, 24, 24, viewproj=vp)])
    deform_cpu(*deform_args(b))
    assert (b.clip[:, 2] < -b.clip[:, 3]).any() and (b.clip[:, 2] > -b.clip[:, 3]).any()
    b.vis_opaque[:] = 0
    raster_cpu(*raster_args(b))
    vo, vb = run_cuda_raster(b)
    np.testing.assert_array_equal(vo, b.vis_opaque)
    np.testing.assert_array_equal(vb, b.vis_blend)
    assert (vis_ids(vo) >= 0).sum() > 10


def test_clear_cuda_touches_only_the_sessions_layers():
    cuda = cuda_module()
    s_lw = np.array([8, 4], np.int32)
    s_lh = np.array([4, 4], np.int32)
    s_lbase = np.array([0, 40], np.int64)
    host = np.full(60, 99, np.uint64)
    vo, vb = cuda.to_device(host), cuda.to_device(host)
    clear_vis_cuda(*[cuda.to_device(a) for a in (s_lw, s_lh, s_lbase)], 2, vo, vb)
    cpu_o, cpu_b = host.copy(), host.copy()
    clear_vis_cpu(s_lw, s_lh, s_lbase, 2, cpu_o, cpu_b)
    np.testing.assert_array_equal(vo.copy_to_host(), cpu_o)
    np.testing.assert_array_equal(vb.copy_to_host(), cpu_b)
    assert (cpu_o[32:40] == 99).all() and (cpu_o[:32] == EMPTY).all()
