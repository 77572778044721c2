"""The Renderer end to end on the CPU backend: batching, NV12 exactness, label, expressions."""

from __future__ import annotations

import numpy as np
import pytest
from gltf_builder import GltfBuilder

from avatarfarm.render.frames import nv12_planes, nv12_to_rgb
from avatarfarm.render.gltf import load_avatar
from avatarfarm.render.renderer import Renderer
from avatarfarm.render.scene import Label, Scene
from avatarfarm.render.vocabulary import INDEX, VOCABULARY

K = len(VOCABULARY)


def sphere_avatar(
    radius: float = 0.12, color=(0.8, 0.5, 0.4, 1.0), name: str = "ball", **material: object
):
    """A head-sized ball with a `jawOpen` target that pushes its lower half forward."""
    lat, lon = np.meshgrid(np.linspace(0, np.pi, 17), np.linspace(0, 2 * np.pi, 25), indexing="ij")
    pos = np.stack(
        [np.sin(lat) * np.sin(lon), np.cos(lat), np.sin(lat) * np.cos(lon)], axis=-1
    ).reshape(-1, 3) * radius + np.array([0.0, 1.5, 0.0])
    rows, cols = lat.shape
    quads = [
        (r * cols + c, (r + 1) * cols + c, (r + 1) * cols + c + 1, r * cols + c + 1)
        for r in range(rows - 1)
        for c in range(cols - 1)
    ]
    tris = np.array([t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))], np.uint32)
    delta = np.zeros_like(pos)
    lower = pos[:, 1] < 1.5 - 0.3 * radius
    delta[lower, 2] = 0.05
    b = GltfBuilder()
    mat = b.add_material(base_color=color, **material)
    prim = b.primitive(
        pos.astype(np.float32), tris, targets=[{"POSITION": delta.astype(np.float32)}], material=mat
    )
    node = b.add_node(mesh=b.add_mesh([prim], target_names=["jawOpen"]), name=name)
    b.set_scene([node])
    return load_avatar(b.glb(), name=name)


def pose(n: int, **expressions: float):
    e = np.zeros((n, K), np.float32)
    for key, value in expressions.items():
        e[:, INDEX[key]] = value
    return e, np.zeros((n, 3), np.float32), np.zeros((n, 4), np.float32)


def expected_nv12(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """BT.709 limited range from the standard's formulas, independently of the kernels."""
    r, g, b = (c / 255.0 for c in rgb)
    y = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return (
        round(16 + 219 * y),
        round(128 + 224 * (b - y) / 1.8556),
        round(128 + 224 * (r - y) / 1.5748),
    )


def render_one(renderer: Renderer, slot: int, **expressions: float) -> np.ndarray:
    renderer.render(np.array([slot]), *pose(1, **expressions))
    return renderer.frame(slot).copy()


@pytest.fixture(scope="module")
def ball():
    return sphere_avatar()


def test_background_is_exact_bt709_limited_nv12(ball):
    r = Renderer("cpu")
    slot = r.open(ball, 160, 96, Scene(background="#203040", framing="full"))
    frame = render_one(r, slot)
    y, uv = nv12_planes(frame, 160, 96)
    ey, eu, ev = expected_nv12((0x20, 0x30, 0x40))
    assert y[-4:, :8].tolist() == [[ey] * 8] * 4  # bottom-left: no avatar, no label
    assert uv[-2:, :4, 0].tolist() == [[eu] * 4] * 2
    assert uv[-2:, :4, 1].tolist() == [[ev] * 4] * 2
    white = Renderer("cpu")
    white_scene = Scene(background="#ffffff", framing="full")
    frame = render_one(white, white.open(ball, 160, 96, white_scene))
    assert nv12_planes(frame, 160, 96)[0][-1, 0] == 235


def test_avatar_is_drawn_in_the_middle(ball):
    r = Renderer("cpu")
    slot = r.open(ball, 160, 96, Scene(background="#000000", framing="full"))
    rgb = nv12_to_rgb(render_one(r, slot), 160, 96)
    assert rgb[48, 80].sum() > 150  # the ball's lit face
    assert rgb[48, 2].sum() < 10


def test_label_is_in_every_frame_and_can_be_enforced(ball):
    plain = Scene(background="#203040", framing="full", label=Label(enabled=False))
    labelled = Scene(background="#203040", framing="full")
    r = Renderer("cpu")
    a = r.open(ball, 320, 180, labelled)
    b = r.open(ball, 320, 180, plain)
    for _ in range(3):
        r.render(np.array([a, b]), *pose(2))
        ya, _ = nv12_planes(r.frame(a), 320, 180)
        yb, _ = nv12_planes(r.frame(b), 320, 180)
        corner = (slice(0, 24), slice(272, 320))  # top-right, where the label sits
        assert np.ptp(ya[corner]) > 50  # text and its plate
        assert np.ptp(yb[corner]) == 0
    enforced = Renderer("cpu", enforce_label=True, label_text="AI generated")
    slot = enforced.open(ball, 320, 180, plain)
    y, _ = nv12_planes(render_one(enforced, slot), 320, 180)
    assert np.ptp(y[0:24, 272:320]) > 50


def test_batch_of_mixed_sizes_and_avatars_equals_one_by_one(ball):
    other = sphere_avatar(radius=0.1, color=(0.2, 0.6, 0.9, 1.0), name="blue")
    setups = [
        (ball, 160, 96, Scene(framing="head"), {"jawOpen": 1.0}),
        (other, 160, 240, Scene(framing="full", background="#102010"), {}),
        (ball, 192, 192, Scene(framing="bust"), {"jawOpen": 0.3}),
    ]
    batched = Renderer("cpu")
    slots = [batched.open(a, w, h, s) for a, w, h, s, _ in setups]
    e = np.concatenate([pose(1, **x)[0] for *_, x in setups])
    head = np.array([[10, 0, 0], [0, 0, 0], [-20, 5, 0]], np.float32)
    batched.render(np.array(slots), e, head, np.zeros((3, 4), np.float32))
    for i, (a, w, h, s, _) in enumerate(setups):
        alone = Renderer("cpu")
        slot = alone.open(a, w, h, s)
        alone.render(np.array([slot]), e[i : i + 1], head[i : i + 1], np.zeros((1, 4), np.float32))
        np.testing.assert_array_equal(batched.frame(slots[i]), alone.frame(slot))


def test_blend_layer_appears_when_a_translucent_avatar_joins(ball):
    """Opaque-only pools share one visibility buffer for both layers; a BLEND avatar joining
    later gets a real blend layer, and every frame still equals its session rendered alone."""
    glass = sphere_avatar(radius=0.1, color=(0.2, 0.6, 0.9, 0.5), name="glass", alphaMode="BLEND")
    r = Renderer("cpu")
    first = r.open(ball, 160, 96, Scene(framing="head"))
    render_one(r, first)
    assert r._scratch.shared_blend
    second = r.open(glass, 160, 96, Scene(framing="head"))
    r.render(np.array([first, second]), *pose(2))
    assert not r._scratch.shared_blend
    for avatar, slot in ((ball, first), (glass, second)):
        alone = Renderer("cpu")
        expected = render_one(alone, alone.open(avatar, 160, 96, Scene(framing="head")))
        np.testing.assert_array_equal(r.frame(slot), expected)
    _, uv = nv12_planes(r.frame(second), 160, 96)
    assert np.ptp(uv) > 10  # the translucent ball is drawn, not dropped


def test_pool_keeps_only_avatars_in_use_and_sessions_follow_their_avatar(ball):
    red = sphere_avatar(radius=0.11, color=(0.9, 0.1, 0.1, 1.0), name="red")
    blue = sphere_avatar(radius=0.1, color=(0.2, 0.6, 0.9, 1.0), name="blue")
    r = Renderer("cpu")
    gone = r.open(ball, 160, 96, Scene(framing="head"))
    kept = r.open(red, 160, 96, Scene(framing="head"))
    also_gone = r.open(ball, 160, 96, Scene(framing="head"))
    r.close(gone)
    r.close(also_gone)  # no session uses `ball` now
    top = r.pool.tables["vertices"].top
    r.open(blue, 160, 96, Scene(framing="head"))  # adding an avatar drops unused ones ...
    assert sorted(a.asset.name for a in r.pool.avatars if a) == ["blue", "red"]
    assert r.pool.tables["vertices"].top == top  # ... and blue reuses ball's space
    alone = Renderer("cpu")
    expected = render_one(alone, alone.open(red, 160, 96, Scene(framing="head")))
    np.testing.assert_array_equal(render_one(r, kept), expected)  # still the red ball


def test_partial_redraw_leaves_no_stale_pixels(ball):
    """After the first frame only the avatar's box is recomposited: it must still be exact."""
    r = Renderer("cpu")
    slot = r.open(ball, 160, 96, Scene(framing="head"))
    render_one(r, slot, jawOpen=1.0)
    second = render_one(r, slot)
    fresh = Renderer("cpu")
    np.testing.assert_array_equal(
        second, render_one(fresh, fresh.open(ball, 160, 96, Scene(framing="head")))
    )


def test_scene_change_applies_from_next_frame(ball):
    r = Renderer("cpu")
    slot = r.open(ball, 160, 96, Scene(background="#000000", framing="full"))
    before = render_one(r, slot)
    r.set_scene(slot, Scene(background="#ffffff", framing="full"))
    after = render_one(r, slot)
    assert nv12_planes(before, 160, 96)[0][-1, 0] == 16
    assert nv12_planes(after, 160, 96)[0][-1, 0] == 235


def test_bad_frame_size_is_rejected(ball):
    with pytest.raises(ValueError, match="even"):
        Renderer("cpu").open(ball, 101, 64)


def test_a_scene_change_redraws_only_its_own_session(ball):
    """Other sessions keep their partial redraw: pixels outside their avatar box are not
    recomposited when someone else's scene changes or a session closes."""
    r = Renderer("cpu")
    changed, other, closing = (r.open(ball, 160, 96, Scene(framing="head")) for _ in range(3))
    slots = np.array([changed, other, closing])
    r.render(slots, *pose(3))
    r.render(slots, *pose(3))
    r.frame(other)[:8] = 99  # a marker in a corner the avatar's box does not cover
    r.set_scene(changed, Scene(framing="head", background="#ffffff"))
    r.close(closing)
    r.render(slots[:2], *pose(2))
    assert (r.frame(other)[:8] == 99).all()
    assert nv12_planes(r.frame(changed), 160, 96)[0][0, 0] == 235


def test_showing_a_loaded_scene_moves_no_pixels_and_matches_a_fresh_render(ball):
    """Standby and back: both scenes stay loaded, a switch only repoints the slot."""
    live = Scene(framing="head", background="#406080")
    standby = Scene(framing="head", background="#101010", label=Label(text="back soon"))
    r = Renderer("cpu")
    slot = r.open(ball, 160, 96, live)
    parked = r.load(standby, 160, 96)
    backgrounds = r._scenes.backgrounds
    top, data = backgrounds.top, backgrounds.data.copy()
    shown = r.show(slot, parked)
    first = render_one(r, slot)
    r.show(slot, shown)
    second = render_one(r, slot)
    assert backgrounds.top == top
    np.testing.assert_array_equal(backgrounds.data, data)
    for scene, frame in ((standby, first), (live, second)):
        fresh = Renderer("cpu")
        np.testing.assert_array_equal(frame, render_one(fresh, fresh.open(ball, 160, 96, scene)))


def test_a_scene_can_be_copied_in_pieces_before_it_is_shown(ball):
    r = Renderer("cpu")
    slot = r.open(ball, 160, 96, Scene(framing="head"))
    loaded = r.load(Scene(framing="head", background="#ffffff"), 160, 96, fill=False)
    with pytest.raises(ValueError, match="fill"):
        r.show(slot, loaded)
    pieces = 1
    while not r.fill(loaded, 4096):
        pieces += 1
    assert pieces >= 160 * 96 * 3 // 2 // 4096  # the budget held
    r.unload(r.show(slot, loaded))
    with pytest.raises(ValueError, match="showing"):
        r.unload(loaded)
    assert nv12_planes(render_one(r, slot), 160, 96)[0][0, 0] == 235


def test_an_avatar_can_be_copied_in_pieces_before_a_session_opens_with_it(ball):
    r = Renderer("cpu")
    index = r.load_avatar(ball, fill=False)
    pieces = 1
    while not r.fill_avatar(index, 1024):
        pieces += 1
    assert pieces >= ball.positions.nbytes // 1024  # the budget held
    slot = r.open(ball, 160, 96, Scene(framing="head"))
    r.release_avatar(index)
    assert r.pool.avatars[index].users == 1  # the session's
    half = Renderer("cpu")  # opened before its copy finished: open completes it
    half.fill_avatar(half.load_avatar(ball, fill=False), 1024)
    fresh = Renderer("cpu")
    expected = render_one(fresh, fresh.open(ball, 160, 96, Scene(framing="head")))
    np.testing.assert_array_equal(render_one(r, slot), expected)
    np.testing.assert_array_equal(
        render_one(half, half.open(ball, 160, 96, Scene(framing="head"))), expected
    )


def test_background_memory_is_reused_across_scene_changes_of_any_size(ball):
    """Video backgrounds of different lengths, changed all day, do not grow the arena."""
    import dataclasses

    r = Renderer("cpu")
    slots = [r.open(ball, 160, 96, Scene(framing="head")) for _ in range(3)]
    compiled = r.compile(Scene(framing="head"), 160, 96)
    frame = compiled.backgrounds[0]
    rng = np.random.default_rng(0)
    for _ in range(200):
        loop = dataclasses.replace(compiled, backgrounds=[frame] * int(rng.integers(1, 40)))
        r.set_scene(slots[int(rng.integers(3))], Scene(framing="head"), loop)
    assert r._scenes.backgrounds.top <= 3 * 2 * 40 * frame.size
