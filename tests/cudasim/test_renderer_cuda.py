"""The whole Renderer on the CUDA backend equals the CPU backend (numba simulator in CI,
natively on a GPU host). Tiny frames: the simulator runs every CUDA thread in Python."""

from __future__ import annotations

import numpy as np
import pytest
from test_renderer import pose, sphere_avatar  # noqa: I001

from avatarfarm.kernels.backend import cuda_available
from avatarfarm.render.renderer import Renderer
from avatarfarm.render.scene import Label, Scene

pytestmark = pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU and no simulator")


def test_cuda_renderer_matches_cpu_renderer():
    ball = sphere_avatar()
    scenes = [
        (48, 32, Scene(framing="full", background="#203040", label=Label(enabled=False))),
        (32, 48, Scene(framing="head", background="#ffffff", label=Label(enabled=False))),
    ]
    e, head, eyes = pose(2, jawOpen=0.8)
    head[1] = (15.0, 0.0, 0.0)
    frames = {}
    for device in ("cpu", "cuda"):
        r = Renderer(device)
        slots = np.array([r.open(ball, w, h, s) for w, h, s in scenes])
        for _ in range(2):  # the second tick exercises the partial (avatar box) redraw
            r.render(slots, e, head, eyes)
        frames[device] = [r.frame(int(s)).astype(int) for s in slots]
    for cpu, cuda in zip(frames["cpu"], frames["cuda"], strict=True):
        assert np.abs(cpu - cuda).max() <= 2
        assert np.mean(cpu != cuda) < 0.02
