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


def test_scene_change_uploads_only_its_regions_and_matches_cpu():
    """A scene change rewrites one session's background and overlays in place on the
    device (no whole re-upload) and the frames still equal the CPU backend's."""
    ball = sphere_avatar()
    first = Scene(framing="head", background="#203040", label=Label(text="AI"))
    second = Scene(framing="head", background="#f0f0f0", label=Label(text="AI"))
    e, head, eyes = pose(2, jawOpen=0.5)
    frames = {}
    for device in ("cpu", "cuda"):
        r = Renderer(device)
        slots = [r.open(ball, 48, 32, first) for _ in range(3)]
        r.render(np.array(slots), *pose(3))
        r.close(slots.pop())  # its regions are free: the new scene reuses them
        if device == "cuda":
            mirror = r._device
            kept = {name: mirror.arrays[name] for name in ("backgrounds", "ov.pixels", "ov.x")}
            sent = _count_uploads(mirror)
        r.set_scene(slots[0], second)
        r.render(np.array(slots), e, head, eyes)
        if device == "cuda":
            assert all(mirror.arrays[name] is dev for name, dev in kept.items())
            assert sent["backgrounds"] == 48 * 32 * 3 // 2  # one frame, not every session's
            assert sent["ov.x"] == 1  # its label's row
        frames[device] = [r.frame(s).astype(int) for s in slots]
    for cpu, cuda in zip(frames["cpu"], frames["cuda"], strict=True):
        assert np.abs(cpu - cuda).max() <= 2
        assert np.mean(cpu != cuda) < 0.02
    assert frames["cpu"][0][0] > 200 and frames["cpu"][1][0] < 100  # the change applied


def _count_uploads(mirror) -> dict[str, int]:
    """Elements each persistent device array receives (its written ranges) from now on."""
    sent: dict[str, int] = {}
    sync = mirror._sync

    def counted(name, host, written):
        sent[name] = sum(stop - start for start, stop in written)
        return sync(name, host, written)

    mirror._sync = counted
    return sent


def test_a_new_avatar_uploads_only_itself_and_matches_cpu():
    ball = sphere_avatar()
    red = sphere_avatar(radius=0.1, color=(0.9, 0.1, 0.1, 1.0), name="red")
    blue = sphere_avatar(radius=0.11, color=(0.2, 0.6, 0.9, 1.0), name="blue")
    scene = Scene(framing="head", label=Label(enabled=False))
    frames = {}
    for device in ("cpu", "cuda"):
        r = Renderer(device)
        gone = r.open(ball, 32, 32, scene)
        kept = r.open(red, 32, 32, scene)
        r.render(np.array([gone, kept]), *pose(2))
        r.close(gone)
        if device == "cuda":
            sent = _count_uploads(r._device)
        joined = r.open(blue, 32, 32, scene)  # takes the dropped ball's space
        r.render(np.array([kept, joined]), *pose(2))
        if device == "cuda":
            assert sent["pool.base_pos"] == blue.vertex_count + 1  # its rows (and a pad row)
            assert sent["pool.tris"] == blue.triangle_count
        frames[device] = [r.frame(s).astype(int) for s in (kept, joined)]
    for cpu, cuda in zip(frames["cpu"], frames["cuda"], strict=True):
        assert np.abs(cpu - cuda).max() <= 2
        assert np.mean(cpu != cuda) < 0.02


def test_grown_buffers_are_not_sent_again():
    """When the frame and background arenas double, their device copies grow on the
    device: only the new session's background is sent, not every session's again."""
    ball = sphere_avatar()
    scene = Scene(framing="head", background="#203040", label=Label(enabled=False))
    r = Renderer("cuda")
    slots = [r.open(ball, 32, 32, scene)]
    r.render(np.array(slots), *pose(1))
    mirror = r._device
    shapes = {name: mirror.arrays[name].shape for name in ("backgrounds", "frames")}
    whole = _count_whole_uploads(mirror)
    sent = _count_uploads(mirror)
    slots.append(r.open(ball, 32, 32, scene))
    r.render(np.array(slots), *pose(2))
    assert all(mirror.arrays[name].shape != shape for name, shape in shapes.items())  # grew
    assert whole == []
    assert sent["backgrounds"] == 32 * 32 * 3 // 2
    for s in slots:  # the first session's frame survived the device-side growth
        frame = r.frame(s)
        assert frame[: 32 * 32].min() != frame[: 32 * 32].max()  # the avatar on the bg


def _count_whole_uploads(mirror) -> list[int]:
    """Bytes of every whole array sent to the device from now on."""
    whole: list[int] = []
    cuda = mirror.cuda

    class Counting:
        def __getattr__(self, name):
            return getattr(cuda, name)

        def to_device(self, host, *args, **kwargs):
            whole.append(host.nbytes)
            return cuda.to_device(host, *args, **kwargs)

    mirror.cuda = Counting()
    return whole
