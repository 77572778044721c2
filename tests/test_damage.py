"""Damage tracking: only what moved is redrawn, and the frames equal full redraws."""

from __future__ import annotations

import numpy as np
import pytest
from test_renderer import pose, sphere_avatar

from avatarfarm.kernels.damage import SHADE_MARGIN, damage_cpu
from avatarfarm.render.avatars import load
from avatarfarm.render.motion import demo_motion
from avatarfarm.render.renderer import Renderer
from avatarfarm.render.scene import Scene

LW, LH, LX, LY = 64, 48, 3, 2  # an odd layer origin: the rects must still be whole 2x2 blocks


def grid_mesh(n: int = 5):
    """An n x n vertex grid over NDC [-0.8, 0.8]^2 at w = 1, two triangles per cell."""
    xs = np.linspace(-0.8, 0.8, n)
    x, y = np.meshgrid(xs, xs)
    clip = np.stack([x.ravel(), y.ravel(), np.zeros(n * n), np.ones(n * n)], -1)
    tris = []
    for r in range(n - 1):
        for c in range(n - 1):
            a, b, d, e = r * n + c, r * n + c + 1, (r + 1) * n + c, (r + 1) * n + c + 1
            tris += [(a, b, e), (a, e, d)]
    wnrm = np.tile([0.0, 0.0, 1.0], (n * n, 1))
    return clip.astype(np.float32), wnrm.astype(np.float32), np.array(tris, np.int32)


def run_damage(clip, wnrm, hist, tris, full=0):
    """One session; returns (s_dirty, s_rect) rows."""
    i32 = lambda *v: np.array(v, np.int32)  # noqa: E731
    dirty = np.full((1, 4), -7, np.int32)
    rect = np.full((1, 4), -9, np.int32)
    damage_cpu(
        clip, wnrm, hist, np.zeros(len(clip), np.uint8), tris, i32(0), i32(len(tris)), i32(0),
        i32(len(clip)), np.array([0], np.int64), np.array([full], np.uint8), i32(LX), i32(LY),
        i32(LW), i32(LH), 1, dirty, rect, np.zeros((1, 4), np.int32),
    )  # fmt: skip
    return tuple(dirty[0]), tuple(rect[0])


def history_of(clip, wnrm):
    hist = np.zeros((len(clip), 8), np.float32)
    hist[:, :4], hist[:, 4:7] = clip, wnrm
    return hist


def pixel(clip_row):
    return (clip_row[0] * 0.5 + 0.5) * LW, (0.5 - clip_row[1] * 0.5) * LH


def test_nothing_moved_gives_empty_rects_and_keeps_history():
    clip, wnrm, tris = grid_mesh()
    hist = history_of(clip, wnrm)
    assert run_damage(clip, wnrm, hist, tris) == ((0,) * 4, (0,) * 4)
    np.testing.assert_array_equal(hist[:, :4], clip)


def test_a_moved_vertex_marks_its_triangles_old_and_new_boxes():
    clip, wnrm, tris = grid_mesh()
    hist = history_of(clip, wnrm)
    moved = clip.copy()
    moved[12, 0] += 0.1  # the centre vertex, 3.2 px to the right
    dirty, rect = run_damage(moved, wnrm, hist, tris)
    x0, y0, x1, y1 = dirty
    # the cells around vertex 12: vertices 6..18 of the grid, old and new positions
    ring = [6, 7, 8, 11, 12, 13, 16, 17, 18]
    px = [pixel(clip[v])[0] for v in ring] + [pixel(moved[12])[0]]
    py = [pixel(clip[v])[1] for v in ring]
    assert x0 <= min(px) - SHADE_MARGIN and x1 >= max(px) + SHADE_MARGIN
    assert y0 <= min(py) - SHADE_MARGIN and y1 >= max(py) + SHADE_MARGIN
    assert (x1 - x0) * (y1 - y0) < 0.6 * LW * LH  # the rest of the grid did not move
    assert rect == (x0 + LX, y0 + LY, x1 + LX, y1 + LY)
    assert all(v % 2 == 0 for v in rect)  # whole NV12 blocks in the frame
    np.testing.assert_array_equal(hist[:, :4], moved)  # history now holds this frame


def test_where_a_vertex_was_counts_too():
    """A corner pulled back in from outside: the pixels it covered last frame are redone."""
    clip, wnrm, tris = grid_mesh()
    hist = history_of(clip, wnrm)
    hist[0, :2] = (-1.2, -1.2)  # last frame: beyond the layer's bottom-left corner
    x0, y0, x1, y1 = run_damage(clip, wnrm, hist, tris)[0]
    assert x0 == 0 and y1 == LH  # the old position's box, clipped to the layer
    assert x1 < LW / 2 and y0 > LH / 2  # the rest of the grid did not move


def test_a_changed_normal_alone_counts_as_moved():
    clip, wnrm, tris = grid_mesh()
    hist = history_of(clip, wnrm)
    turned = wnrm.copy()
    turned[0] = (0.0, 0.6, 0.8)
    x0, y0, x1, y1 = run_damage(clip, turned, hist, tris)[0]
    px, py = pixel(clip[0])
    assert x0 <= px - SHADE_MARGIN < px + SHADE_MARGIN <= x1 and y0 <= py <= y1
    assert x1 < LW / 2  # only the corner cells


def test_a_vertex_behind_the_camera_or_a_full_session_marks_the_whole_layer():
    clip, wnrm, tris = grid_mesh()
    hist = history_of(clip, wnrm)
    behind = clip.copy()
    behind[0, 3] = -0.5
    dirty, rect = run_damage(behind, wnrm, hist, tris)
    # the layer's own frame rect: its odd edges composite widens outside the layer
    assert dirty == (0, 0, LW, LH) and rect == (LX, LY, LX + LW, LY + LH)
    hist = history_of(clip, wnrm)
    assert run_damage(clip, wnrm, hist, tris, full=1) == ((0, 0, LW, LH), (-9,) * 4)


@pytest.fixture(scope="module")
def default_avatar():
    return load("default")


def test_incremental_frames_equal_full_redraws(default_avatar):
    """Mixed sizes and avatars, head motion, a still tick and a scene change: every frame
    of the incremental renderer is the same bytes as a full redraw, and it really redrew
    less (a rect inside the layer; nothing on the still tick)."""
    ball = sphere_avatar()
    renderers = [Renderer("cpu"), Renderer("cpu", incremental=False)]
    specs = [(default_avatar, 256, 144, "bust"), (default_avatar, 144, 256, "head")]
    specs.append((ball, 192, 128, "full"))
    slots = [
        np.array([r.open(a, w, h, Scene(framing=f)) for a, w, h, f in specs]) for r in renderers
    ]
    n = len(specs)
    partial = []
    for tick in range(6):
        if tick == 4:
            for r, s in zip(renderers, slots, strict=True):
                r.set_scene(int(s[0]), Scene(framing="bust", background="#406080"))
        t = 1.0 + 0.7 * min(tick, 2) + 0.3 * np.arange(n)  # ticks 2 and 3: the same pose
        expressions, head, eyes = demo_motion(t)
        expressions[2] = pose(1, jawOpen=0.2 * tick)[0][0]
        for r, s in zip(renderers, slots, strict=True):
            r.render(s, expressions, head, eyes)
        dirty = renderers[0]._rows.dirty[:n].copy()
        layers = renderers[0]._rows.lw[:n].astype(int) * renderers[0]._rows.lh[:n]
        partial.append((dirty[:, 2] - dirty[:, 0]) * (dirty[:, 3] - dirty[:, 1]) / layers)
        for a, b in zip(slots[0], slots[1], strict=True):
            np.testing.assert_array_equal(
                renderers[0].frame(int(a)), renderers[1].frame(int(b)), err_msg=f"tick {tick}"
            )
    partial = np.array(partial)
    assert np.all(partial[0] == 1.0)  # first frame: whole layers
    assert 0.0 < partial[1, 0] < 0.8  # the bust: head moved, body did not
    assert np.all(partial[3, :2] == 0.0)  # same pose as tick 2: nothing to redo
    assert partial[4, 0] == 1.0  # new scene: whole layer again
