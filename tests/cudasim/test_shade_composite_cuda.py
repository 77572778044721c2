"""shade_cuda and composite_cuda equal the CPU launchers on the same tiny inputs.

Runs under numba's CUDA simulator on machines without a GPU (own process, variable set
before numba is imported):
    NUMBA_ENABLE_CUDASIM=1 pytest tests/cudasim/test_shade_composite_cuda.py
and natively where numba sees a GPU. Skipped otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from avatarfarm.kernels.backend import cuda_available, cuda_module

if not cuda_available():
    pytest.skip(
        "no CUDA: set NUMBA_ENABLE_CUDASIM=1 (own pytest process) or run on a GPU",
        allow_module_level=True,
    )

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the CPU tests' builders

from test_composite import COMPOSITE_ARGS, comp_batch, run_composite, solid  # noqa: E402
from test_shade import (  # noqa: E402
    BLEND,
    FULL_QUAD,
    FULL_QUAD_UV,
    LAMBERT,
    MTOON,
    QUAD_TRIS,
    SHADE_ARGS,
    SLANT_TRI,
    UNLIT,
    checker_2x2,
    flat_mesh,
    make_batch,
    material,
    run_shade,
    tilted_quad_session,
)

from avatarfarm.kernels.composite import composite_cuda  # noqa: E402
from avatarfarm.kernels.shade import shade_cuda  # noqa: E402

SCALARS = {"n", "max_lw", "max_lh", "max_rw", "max_rh"}


def to_device(batch: dict, names: list[str]) -> list:
    cuda = cuda_module()
    return [batch[k] if k in SCALARS else cuda.to_device(batch[k]) for k in names]


def shade_scene() -> dict:
    mats = [
        material(color=(0.8, 0.5, 0.3, 1.0), shading=LAMBERT),
        material(color=(1, 1, 1, 1), texture=0, shading=UNLIT),
        material(color=(0.9, 0.8, 0.7, 1.0), shading=MTOON, toony=0.5, shade_color=(0.2, 0.1, 0.3)),
        material(color=(0.2, 0.4, 1.0, 0.5), alpha_mode=BLEND, shading=UNLIT),
    ]
    tri = flat_mesh(SLANT_TRI, [(0, 1, 2)], lw=12, lh=10, mat=0)  # silhouette AA
    tex = flat_mesh(FULL_QUAD, QUAD_TRIS, uvs=FULL_QUAD_UV, lw=6, lh=4, mat=1)
    tilt, _ = tilted_quad_session(16, 16)
    tilt["tri_mat"][:] = 2
    tilt["wnrm"] = np.asarray([(-1, 0, 1), (1, 0, 1), (1, 0, 1), (-1, 0, 1)], np.float32)
    tilt["light"] = (1.0, 0.2, 0.3, 0.2)
    glass = flat_mesh([(-0.5, 0.6), (0.7, 0.2), (0.0, -0.8)], [(0, 1, 2)], z=-0.5, mat=3,
                      lw=8, lh=8)  # fmt: skip
    return make_batch([tri, tex, tilt, glass], mats, [checker_2x2()])


def test_shade_cuda_matches_cpu():
    cpu = shade_scene()
    run_shade(cpu)
    gpu = shade_scene()
    args = to_device(gpu, SHADE_ARGS)
    shade_cuda(*args, stream=0)
    got = args[SHADE_ARGS.index("rgba")].copy_to_host()
    want = cpu["rgba"]
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    assert (want[:, 3] > 0).sum() > 100 and ((want[:, 3] > 0) & (want[:, 3] < 255)).any()


def composite_scene() -> dict:
    rng = np.random.default_rng(7)
    layer_a = rng.integers(0, 256, (10, 12, 4), dtype=np.uint8)
    layer_a[..., :3] = np.minimum(layer_a[..., :3], layer_a[..., 3:])  # premultiplied
    bg = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    a = dict(
        fw=32, fh=24, bg=bg, layer=layer_a, lx=5, ly=3, rect=(2, 2, 30, 20),
        overlays=[
            dict(img=solid(6, 6, (0, 200, 0, 255)), x=10, y=8, z=3, opacity=0.6),
            dict(img=solid(8, 4, (0, 0, 128, 128)), x=0, y=0, z=-2),
        ],
    )  # fmt: skip
    c = dict(
        fw=16, fh=16, bg=np.full((16, 16, 3), 200, np.uint8), layer=solid(4, 6, (255, 0, 0, 255)),
        lx=3, ly=9, rect=(0, 0, 16, 16), overlays=[],
    )  # fmt: skip
    return comp_batch([a, c])


def test_composite_cuda_matches_cpu():
    cpu = composite_scene()
    run_composite(cpu)
    gpu = composite_scene()
    args = to_device(gpu, COMPOSITE_ARGS)
    composite_cuda(*args, stream=0)
    got = args[COMPOSITE_ARGS.index("frame")].copy_to_host()
    assert np.abs(got.astype(int) - cpu["frame"].astype(int)).max() <= 1
    assert np.array_equal(got == 0x5A, cpu["frame"] == 0x5A)  # same untouched bytes
