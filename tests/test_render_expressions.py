"""Expressions and pose seen in rendered frames: what a viewer would notice."""

from __future__ import annotations

import numpy as np
import pytest
from test_renderer import pose  # noqa: I001

from avatarfarm.render.default_avatar import load_default_avatar
from avatarfarm.render.frames import nv12_to_rgb
from avatarfarm.render.gltf import load_avatar
from avatarfarm.render.renderer import Renderer
from avatarfarm.render.scene import Label, Scene

W, H = 256, 256
SCENE = Scene(framing="head", background="#203040", label=Label(enabled=False))


@pytest.fixture(scope="module")
def presenter():
    renderer = Renderer("cpu")
    return renderer, renderer.open(load_default_avatar(), W, H, SCENE)


def frame(setup, head=(0.0, 0.0, 0.0), **expressions) -> np.ndarray:
    renderer, slot = setup
    e, h, eyes = pose(1, **expressions)
    h[0] = head
    renderer.render(np.array([slot]), e, h, eyes)
    return nv12_to_rgb(renderer.frame(slot), W, H).astype(int)


FACE_ROWS = slice(0, int(H * 0.62))  # above the mouth: the white shirt is far below
MOUTH_ROWS = slice(int(H * 0.62), int(H * 0.85))


def eye_white_pixels(rgb: np.ndarray) -> np.ndarray:
    """Bright, nearly grey pixels in the upper face: the sclera (skin is warmer)."""
    whites = (rgb.min(axis=2) > 200) & (np.ptp(rgb, axis=2) < 30)
    whites[FACE_ROWS.stop :] = False
    return whites


def teeth_pixels(rgb: np.ndarray) -> np.ndarray:
    bright = (rgb.min(axis=2) > 180) & (np.ptp(rgb, axis=2) < 40)
    return bright[MOUTH_ROWS]


def iris_pixels(rgb: np.ndarray) -> np.ndarray:
    """Godette's green-cyan eyes (her blue hair has more blue than green; her teal collar is
    below the face rows)."""
    iris = (rgb[..., 1] > rgb[..., 2] + 15) & (rgb[..., 1] > rgb[..., 0] + 40)
    iris[FACE_ROWS.stop :] = False
    return iris


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b).sum(axis=2) > 24


def test_jaw_open_changes_only_the_mouth_region(presenter):
    neutral = frame(presenter)
    diff = changed(neutral, frame(presenter, jawOpen=1.0))
    rows, cols = np.nonzero(diff)
    assert len(rows) > 200  # the mouth visibly opens
    eyes_row = np.nonzero(eye_white_pixels(neutral))[0].mean()
    assert rows.min() > eyes_row  # nothing changes at or above the eyes
    assert abs(cols.mean() - W / 2) < W * 0.08  # centred on the mouth


def test_jaw_open_shows_the_teeth(presenter):
    closed, opened = frame(presenter), frame(presenter, jawOpen=1.0)
    assert teeth_pixels(opened).sum() > teeth_pixels(closed).sum() + 10


def test_blink_hides_the_eye_whites(presenter):
    open_whites = eye_white_pixels(frame(presenter)).sum()
    closed = eye_white_pixels(frame(presenter, eyeBlinkLeft=1.0, eyeBlinkRight=1.0)).sum()
    assert open_whites > 50
    assert closed < 0.1 * open_whites


def test_blink_left_closes_the_eye_on_the_viewers_right(presenter):
    """The avatar's left is +X, which a camera in front sees on the right."""
    whites = eye_white_pixels(frame(presenter, eyeBlinkLeft=1.0))
    left_half, right_half = whites[:, : W // 2].sum(), whites[:, W // 2 :].sum()
    assert left_half > 25 and right_half < 0.2 * left_half


def test_head_yaw_turns_the_face(presenter):
    def face_centre(rgb):
        return np.nonzero(eye_white_pixels(rgb))[1].mean()

    straight = face_centre(frame(presenter))
    turned = face_centre(frame(presenter, head=(25.0, 0.0, 0.0)))
    assert turned > straight + 5  # yaw + turns the face towards +X: the viewer's right


def test_sample_vrm_renders_facing_the_camera_with_working_expressions(shared_assets):
    godette = load_avatar(shared_assets / "vrm/Godette/Godette_vrm_v4.vrm")
    setup = (renderer := Renderer("cpu"), renderer.open(godette, W, H, SCENE))
    neutral = frame(setup)
    background = np.array([0x20, 0x30, 0x40])
    covered = np.abs(neutral - background).sum(axis=2) > 30
    assert covered.mean() > 0.3  # the head fills the head framing
    # Her eyes are textured green-cyan: visible only when she faces the camera.
    iris = iris_pixels(neutral)
    assert iris.sum() > 40
    rows = np.nonzero(iris)[0]
    assert rows.mean() < H * 0.75  # eyes in the face, not at the feet: upright
    blink = frame(setup, blink=1.0)
    assert iris_pixels(blink).sum() < 0.3 * iris.sum()
    assert changed(neutral, frame(setup, aa=1.0)).sum() > 30
