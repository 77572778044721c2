"""PoseRig: joint -> slot mapping, merged skinning, and the batched head/eye palette."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avatarfarm.render.asset import AvatarAsset, Materials
from avatarfarm.render.rig import P, PoseRig

# name, parent, world position
JOINTS = [
    ("root", -1, (0.0, 0.0, 0.0)),
    ("neck", 0, (0.0, 1.4, 0.0)),
    ("head", 1, (0.0, 1.5, 0.0)),
    ("leftEye", 2, (0.03, 1.6, 0.08)),  # the avatar's left is +X
    ("rightEye", 2, (-0.03, 1.6, 0.08)),
    ("jaw", 2, (0.0, 1.55, 0.05)),
    ("hat", 5, (0.0, 1.7, 0.0)),  # a child of a non-posed child of the head
]
NOSE = np.array([0.0, 1.6, 0.12])
LEFT_PUPIL = np.array([0.03, 1.6, 0.095])
# vertex position, 4 (joint, weight) influences
VERTICES = [
    ((0.0, 1.0, 0.0), [(0, 1.0)]),
    ((0.0, 1.45, 0.0), [(1, 1.0)]),
    (tuple(NOSE), [(2, 1.0)]),
    (tuple(LEFT_PUPIL), [(3, 1.0)]),
    ((-0.03, 1.6, 0.095), [(4, 1.0)]),
    ((0.0, 1.5, 0.1), [(2, 0.5), (5, 0.3), (1, 0.2)]),  # head + jaw merge into slot 2
    ((0.0, 1.4, 0.1), [(0, 0.25), (1, 0.5), (0, 0.25)]),  # root twice
    ((0.0, 1.7, 0.0), [(6, 1.0)]),
]


def make_asset(drop: tuple[str, ...] = ()) -> AvatarAsset:
    """A tiny skeleton root -> neck -> head -> eyes/jaw; `drop` leaves bones out of humanoid."""
    v = len(VERTICES)
    j = len(JOINTS)
    world = np.tile(np.eye(4, dtype=np.float32), (j, 1, 1))
    local = world.copy()
    for i, (_, parent, pos) in enumerate(JOINTS):
        world[i, :3, 3] = pos
        local[i, :3, 3] = np.subtract(pos, JOINTS[parent][2] if parent >= 0 else 0.0)
    skin_joints = np.zeros((v, 4), np.int32)
    skin_weights = np.zeros((v, 4), np.float32)
    for i, (_, influences) in enumerate(VERTICES):
        for k, (joint, w) in enumerate(influences):
            skin_joints[i, k], skin_weights[i, k] = joint, w
    return AvatarAsset(
        name="tiny",
        format="builtin",
        positions=np.array([p for p, _ in VERTICES], np.float32),
        normals=np.tile(np.array([0, 0, 1], np.float32), (v, 1)),
        uvs=np.zeros((v, 2), np.float32),
        triangles=np.zeros((0, 3), np.int32),
        triangle_material=np.zeros(0, np.int32),
        target_names=[],
        target_mesh=np.zeros(0, np.int32),
        default_weights=np.zeros(0, np.float32),
        morph_offsets=np.zeros(v + 1, np.int32),
        morph_target=np.zeros(0, np.int32),
        morph_dpos=np.zeros((0, 3), np.float32),
        morph_dnormal=np.zeros((0, 3), np.float32),
        skin_joints=skin_joints,
        skin_weights=skin_weights,
        joint_names=[n for n, _, _ in JOINTS],
        joint_parent=np.array([p for _, p, _ in JOINTS], np.int32),
        joint_rest_local=local,
        joint_rest_world=world,
        materials=Materials.empty(),
        textures=[],
        expressions=[],
        humanoid={n: i for i, (n, _, _) in enumerate(JOINTS[1:5], 1) if n not in drop},
        cameras={},
    )


def pose(head=(0.0, 0.0, 0.0), eyes=(0.0, 0.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    return np.array([head], np.float32), np.array([eyes], np.float32)


def apply(m: np.ndarray, p: np.ndarray) -> np.ndarray:
    return m[:, :3] @ p + m[:, 3]


def test_joint_slots_and_merged_skinning():
    rig = PoseRig(make_asset())
    assert rig.joint_slot.tolist() == [0, 1, 2, 3, 4, 2, 2]
    assert rig.skin_slot.dtype == np.int32 and rig.skin_weight.dtype == np.float32
    assert rig.skin_slot[:5, 0].tolist() == [0, 1, 2, 3, 4]
    assert rig.skin_slot[5].tolist() == [2, 1, 0, 0]
    np.testing.assert_allclose(rig.skin_weight[5], [0.8, 0.2, 0, 0], atol=1e-6)
    assert rig.skin_slot[6].tolist() == [0, 1, 0, 0]  # ties keep the lower slot first
    np.testing.assert_allclose(rig.skin_weight[6], [0.5, 0.5, 0, 0])
    assert rig.skin_slot[7, 0] == 2  # the hat follows the head through the jaw
    np.testing.assert_allclose(rig.skin_weight.sum(axis=1), 1.0, atol=1e-6)
    assert np.all(np.diff(rig.skin_weight, axis=1) <= 0), "sorted strongest first"


def test_zero_pose_is_identity():
    rig = PoseRig(make_asset())
    out = np.full((3, P, 3, 4), 9.0, np.float32)
    assert rig.palette(np.zeros((3, 3)), np.zeros((3, 4)), out) is out
    np.testing.assert_array_equal(out, np.broadcast_to(np.eye(3, 4), out.shape))


def test_yaw_turns_the_nose_towards_plus_x():
    rig = PoseRig(make_asset())
    for yaw in (60.0, 90.0):  # 90 is clamped to 60
        m = rig.palette(*pose(head=(yaw, 0, 0)))[0]
        head_pivot = apply(m[2], np.array(JOINTS[2][2]))
        direction = apply(m[2], NOSE) - head_pivot
        # The head's total rotation is the full yaw (neck 40% + head 60%), about +Y.
        expected = rot(1, 60.0)[:3, :3] @ (NOSE - JOINTS[2][2])
        np.testing.assert_allclose(direction, expected, atol=1e-5)
        assert apply(m[2], NOSE)[0] > 0.05
    # The neck alone takes 40%: its rotation is yaw 24.
    m = rig.palette(*pose(head=(60.0, 0, 0)))[0]
    np.testing.assert_allclose(m[1, 0, 2], np.sin(np.radians(24.0)), atol=1e-6)
    np.testing.assert_allclose(apply(m[1], np.array(JOINTS[1][2])), JOINTS[1][2], atol=1e-6)


def test_pitch_down_and_roll_conventions():
    rig = PoseRig(make_asset())
    m = rig.palette(*pose(head=(0, 30, 0)))[0]
    nose = apply(m[2], NOSE)
    assert nose[1] < NOSE[1] - 0.02, "positive pitch looks down"
    m = rig.palette(*pose(head=(0, 0, 30)))[0]
    top = apply(m[2], np.array([0.0, 1.8, 0.0]))
    assert top[0] < -0.05, "positive roll tips the head top towards -X (the avatar's right)"


def test_eyes_rotate_about_their_centres():
    rig = PoseRig(make_asset())
    left_centre = np.array(JOINTS[3][2])
    m = rig.palette(*pose(eyes=(20, 0, -20, 10)))[0]
    np.testing.assert_allclose(apply(m[3], left_centre), left_centre, atol=1e-6)
    pupil = apply(m[3], LEFT_PUPIL)
    assert pupil[0] > LEFT_PUPIL[0] + 0.004, "positive eye yaw looks to +X"
    np.testing.assert_allclose(np.linalg.norm(pupil - left_centre), 0.015, atol=1e-6)
    right = apply(m[4], np.array([-0.03, 1.6, 0.095]))
    assert right[0] < -0.03 - 0.004 and right[1] < 1.6, "right eye: yaw -20, pitch 10 (down)"
    np.testing.assert_array_equal(m[2], np.eye(3, 4))  # the head did not move
    # On top of the head pose the eye centre moves with the head only.
    m = rig.palette(*pose(head=(30, -10, 5), eyes=(25, 20, 0, 0)))[0]
    np.testing.assert_allclose(apply(m[3], left_centre), apply(m[2], left_centre), atol=1e-6)


def test_nan_and_clamping():
    rig = PoseRig(make_asset())
    nan = rig.palette(*pose(head=(np.nan, 10, np.nan), eyes=(np.nan, 0, 0, np.inf)))[0]
    ref = rig.palette(*pose(head=(0, 10, 0), eyes=(0, 0, 0, 25)))[0]
    np.testing.assert_array_equal(nan, ref)
    big = rig.palette(*pose(head=(-500, 500, -500), eyes=(99, -99, -99, 99)))[0]
    ref = rig.palette(*pose(head=(-60, 40, -40), eyes=(30, -25, -30, 25)))[0]
    np.testing.assert_array_equal(big, ref)
    head, eyes = pose(head=(np.nan, 1, 2))
    rig.palette(head, eyes)
    assert np.isnan(head[0, 0]), "the caller's arrays must not be modified"


def test_missing_neck_and_eyes_fall_back_to_parent_slot():
    rig = PoseRig(make_asset(drop=("neck", "leftEye", "rightEye")))
    assert rig.joint_slot.tolist() == [0, 0, 2, 2, 2, 2, 2]
    m = rig.palette(*pose(head=(40, 0, 0), eyes=(20, 10, 20, 10)))[0]
    np.testing.assert_array_equal(m[1], np.eye(3, 4))
    np.testing.assert_array_equal(m[3], m[2])
    np.testing.assert_array_equal(m[4], m[2])
    np.testing.assert_allclose(m[2, 0, 2], np.sin(np.radians(40.0)), atol=1e-6)  # head: 100%
    np.testing.assert_allclose(apply(m[2], np.array(JOINTS[2][2])), JOINTS[2][2], atol=1e-6)
    rig = PoseRig(make_asset(drop=("neck", "head", "leftEye", "rightEye")))
    m = rig.palette(*pose(head=(40, 20, 10), eyes=(20, 10, 20, 10)))
    np.testing.assert_array_equal(m, np.broadcast_to(np.eye(3, 4), m.shape))


def rot(axis: int, deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    r = np.eye(4)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def about(p, r: np.ndarray) -> np.ndarray:
    t, tinv = np.eye(4), np.eye(4)
    t[:3, 3], tinv[:3, 3] = p, -np.asarray(p)
    return t @ r @ tinv


def reference_palette(head: np.ndarray, eyes: np.ndarray) -> np.ndarray:
    """One session's palette from explicit 4x4 products, as the module docstring states."""
    yaw, pitch, roll = np.clip(head, [-60, -40, -40], [60, 40, 40])
    eyes = np.clip(eyes, [-30, -25, -30, -25], [30, 25, 30, 25])

    def r(y, p, z=0.0):
        return rot(1, y) @ rot(0, p) @ rot(2, z)

    neck = about(JOINTS[1][2], r(0.4 * yaw, 0.4 * pitch, 0.4 * roll))
    hd = neck @ about(JOINTS[2][2], r(0.6 * yaw, 0.6 * pitch, 0.6 * roll))
    slots = [np.eye(4)] * P
    slots[1], slots[2] = neck, hd
    slots[3] = hd @ about(JOINTS[3][2], r(eyes[0], eyes[1]))
    slots[4] = hd @ about(JOINTS[4][2], r(eyes[2], eyes[3]))
    return np.array([s[:3] for s in slots])


def test_batch_matches_reference_and_single_rows():
    rig = PoseRig(make_asset())
    rng = np.random.default_rng(3)
    s = 1000
    head = rng.uniform(-80, 80, (s, 3)).astype(np.float32)
    eyes = rng.uniform(-40, 40, (s, 4)).astype(np.float32)
    batch = np.zeros((s + 2, P, 3, 4), np.float32)
    out = rig.palette(head, eyes, batch[1 : 1 + s])
    assert np.all(batch[0] == 0) and np.all(batch[-1] == 0)
    for i in range(0, s, 7):
        np.testing.assert_allclose(out[i], reference_palette(head[i], eyes[i]), atol=2e-6)
    for i in range(s):
        np.testing.assert_allclose(rig.palette(head[i : i + 1], eyes[i : i + 1])[0], out[i])


def test_bad_shapes_raise():
    rig = PoseRig(make_asset())
    with pytest.raises(ValueError, match="head"):
        rig.palette(np.zeros((2, 2)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="out"):
        rig.palette(np.zeros((2, 3)), np.zeros((2, 4)), np.zeros((2, 5, 3, 4), np.float32))


def test_godette(shared_assets: Path):
    gltf = pytest.importorskip("avatarfarm.render.gltf", reason="render/gltf.py not written yet")
    asset = gltf.load_avatar(shared_assets / "vrm/Godette/Godette_vrm_v4.vrm")
    rig = PoseRig(asset)
    assert rig.skin_slot.shape == (asset.vertex_count, 4)
    np.testing.assert_allclose(
        rig.skin_weight.sum(axis=1), asset.skin_weights.sum(axis=1), atol=1e-5
    )
    # Godette has neck and head but no eye bones: eyes follow the head.
    assert {"neck", "head"} <= set(asset.humanoid)
    head_verts = rig.skin_slot[:, 0] == 2
    assert head_verts.any() and (rig.skin_slot[:, 0] == 1).any()
    m = rig.palette(*pose(head=(30, 0, 0), eyes=(10, 0, 10, 0)))[0]
    np.testing.assert_array_equal(m[3], m[2])
    # The face looks towards +X: head vertices in front of the head joint move to +X.
    p = asset.positions[head_verts]
    front = p[p[:, 2] > rig.pivots[1, 2] + 0.03]
    moved = front @ m[2, :, :3].T + m[2, :, 3]
    assert moved[:, 0].mean() > front[:, 0].mean() + 0.01
