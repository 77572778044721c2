"""damage_cuda against damage_cpu: the same rects, flags and history on a small batch."""

from __future__ import annotations

import numpy as np
import pytest
from test_damage import grid_mesh, history_of

from avatarfarm.kernels.backend import cuda_available, cuda_module
from avatarfarm.kernels.damage import damage_cpu, damage_cuda

pytestmark = [
    pytest.mark.cudasim,
    pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU and the simulator is off"),
]


def batch():
    """Three sessions of one grid: a vertex moved, nothing moved, a full redraw."""
    clip, wnrm, tris = grid_mesh()
    v = len(clip)
    hist = np.concatenate([history_of(clip, wnrm)] * 3)
    moved = clip.copy()
    moved[12, :2] += 0.1
    clips = np.concatenate([moved, clip, clip])
    wnrms = np.concatenate([wnrm] * 3)
    i32 = lambda *x: np.array(x, np.int32)  # noqa: E731
    rows = dict(
        s_tbase=i32(0, 0, 0), s_tcount=i32(*[len(tris)] * 3), s_obase=i32(0, v, 2 * v),
        s_vcount=i32(v, v, v), s_hbase=np.array([0, v, 2 * v], np.int64),
        s_full=np.array([0, 0, 1], np.uint8), s_lx=i32(3, 0, 8), s_ly=i32(2, 4, 0),
        s_lw=i32(64, 40, 32), s_lh=i32(48, 40, 24),
    )  # fmt: skip
    return clips, wnrms, hist, tris, rows


def run(launcher, to_device):
    clips, wnrms, hist, tris, rows = batch()
    out = dict(
        hist=hist, moved=np.zeros(len(clips), np.uint8), dirty=np.full((3, 4), -7, np.int32),
        rect=np.full((3, 4), -9, np.int32), box=np.zeros((3, 4), np.int32),
    )  # fmt: skip
    dev = {k: to_device(a) for k, a in out.items()}
    r = {k: to_device(a) for k, a in rows.items()}
    launcher(
        to_device(clips), to_device(wnrms), dev["hist"], dev["moved"], to_device(tris),
        r["s_tbase"], r["s_tcount"], r["s_obase"], r["s_vcount"], r["s_hbase"], r["s_full"],
        r["s_lx"], r["s_ly"], r["s_lw"], r["s_lh"], 3, dev["dirty"], dev["rect"], dev["box"],
    )  # fmt: skip
    host = {k: (a if isinstance(a, np.ndarray) else a.copy_to_host()) for k, a in dev.items()}
    return host, clips


def test_damage_cuda_matches_cpu():
    cpu, clips = run(damage_cpu, lambda a: a)
    cuda, _ = run(damage_cuda, cuda_module().to_device)
    np.testing.assert_array_equal(cuda["dirty"], cpu["dirty"])
    np.testing.assert_array_equal(cuda["rect"], cpu["rect"])
    np.testing.assert_array_equal(cuda["hist"], cpu["hist"])
    np.testing.assert_array_equal(cuda["moved"] & 1, cpu["moved"] & 1)
    assert 0 < cpu["dirty"][0, 2] - cpu["dirty"][0, 0] < 64  # moved: part of the layer
    assert tuple(cpu["dirty"][1]) == (0, 0, 0, 0)  # still: nothing
    assert tuple(cpu["dirty"][2]) == (0, 0, 32, 24)  # full: the layer, host rect kept
    assert tuple(cpu["rect"][2]) == (-9,) * 4
    np.testing.assert_array_equal(cpu["hist"][:, :4], clips)
