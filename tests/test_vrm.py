"""VRM 0.x (Godette, built files) and VRM 1.0 (built files): bones, expressions, MToon, facing."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from gltf_builder import GltfBuilder, quad, shared_asset

from avatarfarm.render.asset import AlphaMode, AvatarAsset, Override, Shading
from avatarfarm.render.gltf import load_avatar
from avatarfarm.render.vocabulary import VRM0_PRESETS
from avatarfarm.render.vrm import mtoon0_to_1, srgb_to_linear

GODETTE = "vrm/Godette/Godette_vrm_v4.vrm"


@pytest.fixture(scope="module")
def godette_path() -> Path:
    path = shared_asset(GODETTE)
    if not path.is_file():
        pytest.skip(f"sample asset {GODETTE} not present (../shared/assets is absent)")
    return path


@pytest.fixture(scope="module")
def godette(godette_path: Path) -> AvatarAsset:
    return load_avatar(godette_path)


def godette_json(path: Path) -> dict:
    data = path.read_bytes()
    return json.loads(data[20 : 20 + struct.unpack_from("<I", data, 12)[0]])


def test_godette_counts(godette: AvatarAsset) -> None:
    assert godette.format == "vrm0"
    assert godette.vertex_count == 8067
    assert godette.triangle_count == 3439
    assert len(godette.target_names) == 15
    assert len(godette.joint_names) == 71  # 68 skin joints + mesh and helper nodes
    assert len(godette.expressions) == 17  # the 17 groups; name-matched targets add nothing new
    assert godette.meta["title"] == "Low-Poly Godette"
    assert godette.meta["author"] == "SirRichard94"


def test_godette_groups_map_presets_to_targets(godette: AvatarAsset, godette_path: Path) -> None:
    groups = godette_json(godette_path)["extensions"]["VRM"]["blendShapeMaster"]["blendShapeGroups"]
    assert len(groups) == 17
    for group in groups:
        expression = godette.expression(VRM0_PRESETS[group["presetName"]])
        assert expression is not None and expression.preset
        expected = [(b["index"], b["weight"] / 100) for b in group["binds"]]  # mesh 0 first
        assert expression.binds == pytest.approx(expected)
        assert expression.is_binary == group["isBinary"]
    happy = godette.expression("happy")
    assert happy is not None and happy.binds == [(9, 0.5), (10, 0.25)]
    assert godette.target_names[9] == "oh" and godette.target_names[10] == "look_up"
    blink_left = godette.expression("blinkLeft")
    assert blink_left is not None and blink_left.binds == [(3, 1.0)] and blink_left.is_binary


def test_godette_faces_plus_z(godette: AvatarAsset) -> None:
    h = godette.humanoid
    world = godette.joint_rest_world
    head = world[h["head"]][:3, 3]
    # toes point forward, the avatar's left hand is at +X when facing +Z
    assert world[h["leftToes"]][2, 3] > world[h["leftFoot"]][2, 3]
    assert world[h["leftUpperArm"]][0, 3] > 0 > world[h["rightUpperArm"]][0, 3]
    # the eyelids (what blink moves) are in front of the head bone
    counts = np.diff(godette.morph_offsets)
    vertex = np.repeat(np.arange(godette.vertex_count), counts)
    eyelids = vertex[godette.morph_target == godette.target_names.index("blink_left")]
    assert godette.positions[eyelids, 2].mean() > head[2] + 0.05
    # the skin at rest is the identity: joint rest matrices stay consistent with the parents
    for j, p in enumerate(godette.joint_parent):
        if p >= 0:
            np.testing.assert_allclose(world[p] @ godette.joint_rest_local[j], world[j], atol=1e-5)
    assert godette.cameras["head"].eye[2] > head[2]


def test_godette_humanoid_uses_vrm1_bone_names(godette: AvatarAsset) -> None:
    h = godette.humanoid
    for bone in ("hips", "spine", "chest", "neck", "head", "leftHand", "rightFoot"):
        assert bone in h
    assert "leftThumbMetacarpal" in h and "leftThumbIntermediate" not in h
    assert godette.joint_names[h["head"]] == "head_Armature"
    assert godette.joint_names[h["leftThumbMetacarpal"]].startswith("thumb")


def test_godette_mtoon_materials(godette: AvatarAsset) -> None:
    m = godette.materials
    face = m.name.index("Face")
    assert m.shading[face] == Shading.MTOON
    toony, shift = mtoon0_to_1(0.800000011920929, -0.44999998807907104)
    assert m.shading_toony[face] == pytest.approx(toony) and toony == pytest.approx(0.855)
    assert m.shading_shift[face] == pytest.approx(shift) and shift == pytest.approx(0.305)
    expected = srgb_to_linear(np.array([0.8270000219345093, 0.7359541058540344, 0.85]))
    np.testing.assert_allclose(m.shade_color[face], expected, rtol=1e-5)
    logo = m.name.index("GodotLogo")
    assert m.shading[logo] == Shading.UNLIT and m.alpha_mode[logo] == AlphaMode.BLEND
    assert all(t.ndim == 3 and t.shape[2] == 4 for t in godette.textures)


@pytest.mark.parametrize(("toony0", "shift0"), [(0.9, 0.0), (0.5, -0.3), (0.8, 0.1), (0.0, -0.5)])
def test_mtoon0_ramp_matches_mtoon1_ramp(toony0: float, shift0: float) -> None:
    """The converted 1.0 ramp starts and ends at the same N.L as the 0.x ramp."""
    toony, shift = mtoon0_to_1(toony0, shift0)
    lo0, hi0 = shift0, 1 + (shift0 - 1) * toony0
    lo1, hi1 = -1 + toony - shift, 1 - toony - shift
    assert (lo1, hi1) == pytest.approx((lo0, hi0))


# --- built VRM files ----------------------------------------------------------------------


def _avatar_builder() -> tuple[GltfBuilder, dict[str, int]]:
    """Two meshes (face with 2 targets, body with 1) under a hips/head/leftEye skeleton."""
    b = GltfBuilder()
    positions, indices = quad(z=0.1)
    d1 = np.zeros((4, 3), np.float32)
    d1[0] = [0.0, 0.0, 0.05]
    d2 = np.zeros((4, 3), np.float32)
    d2[2] = [0.1, 0.0, 0.0]
    face = b.add_mesh(
        [
            b.primitive(
                positions + [0, 1.5, 0], indices, targets=[{"POSITION": d1}, {"POSITION": d2}]
            )
        ],
        target_names=["Fcl_MTH_A", "Fcl_EYE_Close"],
    )
    body = b.add_mesh(
        [b.primitive(positions, indices, targets=[{"POSITION": d2}], material=b.add_material())],
        target_names=["mouthSmileLeft"],
    )
    nodes = {"leftEye": b.add_node(translation=[0.03, 0.05, 0.08], name="eye_L")}
    nodes["head"] = b.add_node(translation=[0, 0.4, 0], children=[nodes["leftEye"]], name="head")
    nodes["face"] = b.add_node(mesh=face, name="face")
    nodes["body"] = b.add_node(mesh=body, name="body")
    nodes["hips"] = b.add_node(translation=[0.1, 1.0, 0.2], children=[nodes["head"]], name="hips")
    b.set_scene([nodes["hips"], nodes["face"], nodes["body"]])
    return b, nodes


def test_vrm1_binds_overrides_and_mtoon() -> None:
    b, nodes = _avatar_builder()
    bind = {"node": nodes["face"], "index": 1, "weight": 0.7}
    b.extension(
        "VRMC_vrm",
        {
            "specVersion": "1.0",
            "meta": {"name": "Tester", "authors": ["A", "B"], "licenseUrl": "https://example.com"},
            "humanoid": {
                "humanBones": {k: {"node": nodes[k]} for k in ("hips", "head", "leftEye")}
            },
            "expressions": {
                "preset": {
                    "aa": {
                        "morphTargetBinds": [{"node": nodes["face"], "index": 0, "weight": 1.0}]
                    },
                    "blink": {
                        "morphTargetBinds": [bind],
                        "isBinary": True,
                        "overrideMouth": "block",
                    },
                    "happy": {
                        "morphTargetBinds": [{"node": nodes["body"], "index": 0, "weight": 0.4}],
                        "overrideBlink": "blend",
                        "overrideLookAt": "block",
                        "materialColorBinds": [
                            {"material": 0, "type": "color", "targetValue": [1, 0, 0, 1]}
                        ],
                        "textureTransformBinds": [
                            {"material": 0, "scale": [2, 2], "offset": [0, 0]}
                        ],
                    },
                },
                "custom": {
                    "smirk": {
                        "morphTargetBinds": [{"node": nodes["body"], "index": 0, "weight": 2.0}]
                    }
                },
            },
        },
    )
    b.json["materials"][0]["alphaMode"] = "BLEND"
    b.json["materials"][0]["extensions"] = {
        "VRMC_materials_mtoon": {
            "specVersion": "1.0",
            "shadeColorFactor": [0.2, 0.3, 0.4],
            "shadingToonyFactor": 0.6,
            "shadingShiftFactor": -0.2,
            "renderQueueOffsetNumber": 3,
            "transparentWithZWrite": True,
        }
    }
    asset = load_avatar(b.glb())
    assert asset.format == "vrm1"
    assert asset.humanoid == {"hips": 0, "head": 1, "leftEye": 2}
    np.testing.assert_allclose(asset.joint_rest_world[2][:3, 3], [0.13, 1.45, 0.28], atol=1e-6)
    assert [e.name for e in asset.expressions] == [
        "aa",
        "blink",
        "happy",
        "smirk",
        "mouthSmileLeft",
    ]
    aa, blink, happy, smirk, smile = asset.expressions
    assert aa.binds == [(0, 1.0)] and aa.preset
    assert blink.binds == [(1, pytest.approx(0.7))] and blink.is_binary
    assert blink.override_mouth == Override.BLOCK and blink.override_blink == Override.NONE
    assert happy.binds == [(2, pytest.approx(0.4))]
    assert happy.override_blink == Override.BLEND and happy.override_look_at == Override.BLOCK
    assert happy.material_color_binds[0]["targetValue"] == [1, 0, 0, 1]
    assert happy.texture_transform_binds[0]["scale"] == [2, 2]
    assert smirk.binds == [(2, 1.0)] and not smirk.preset  # weight clamped to 1
    assert smile.binds == [(2, 1.0)]  # ARKit-named target not defined by the VRM data
    assert asset.meta["title"] == "Tester" and asset.meta["author"] == "A, B"
    m = asset.materials
    assert m.shading[0] == Shading.MTOON
    np.testing.assert_allclose(m.shade_color[0], [0.2, 0.3, 0.4])
    assert m.shading_toony[0] == pytest.approx(0.6) and m.shading_shift[0] == pytest.approx(-0.2)
    assert m.render_queue[0] == 2501 + 3
    # VRM 1.0 already faces +Z: nothing turned
    np.testing.assert_allclose(asset.positions[:4, 2], 0.1)


def test_vrm0_built_file_is_turned_and_binds_scaled() -> None:
    b, nodes = _avatar_builder()
    b.extension(
        "VRM",
        {
            "specVersion": "0.0",
            "meta": {"title": "Zero", "author": "Me", "licenseName": "CC0"},
            "humanoid": {
                "humanBones": [
                    {"bone": "hips", "node": nodes["hips"]},
                    {"bone": "head", "node": nodes["head"]},
                    {"bone": "leftThumbIntermediate", "node": nodes["leftEye"]},
                ]
            },
            "blendShapeMaster": {
                "blendShapeGroups": [
                    {
                        "name": "A",
                        "presetName": "a",
                        "binds": [{"mesh": 0, "index": 0, "weight": 100}],
                    },
                    {
                        "name": "Joy",
                        "presetName": "joy",
                        "binds": [{"mesh": 1, "index": 0, "weight": 50}],
                    },
                    {
                        "name": "Wink",
                        "presetName": "unknown",
                        "isBinary": True,
                        "binds": [
                            {"mesh": 0, "index": 1, "weight": 30},
                            {"mesh": 7, "index": 0, "weight": 9},
                        ],
                        "materialValues": [
                            {
                                "materialName": "m",
                                "propertyName": "_Color",
                                "targetValue": [1, 1, 1, 1],
                            }
                        ],
                    },
                ]
            },
            "materialProperties": [
                {
                    "name": "m",
                    "shader": "VRM/MToon",
                    "floatProperties": {
                        "_ShadeToony": 0.5,
                        "_ShadeShift": -0.3,
                        "_BlendMode": 1,
                        "_Cutoff": 0.4,
                        "_CullMode": 0,
                    },
                    "vectorProperties": {"_Color": [0.5, 0.5, 0.5, 1], "_ShadeColor": [1, 0, 0, 1]},
                    "renderQueue": 2450,
                }
            ],
        },
    )
    asset = load_avatar(b.glb())
    assert asset.format == "vrm0"
    assert [e.name for e in asset.expressions] == ["aa", "happy", "Wink", "mouthSmileLeft"]
    aa, happy, wink, _ = asset.expressions
    assert aa.binds == [(0, 1.0)] and happy.binds == [(2, 0.5)]
    assert wink.binds == [(1, pytest.approx(0.3))] and wink.is_binary and not wink.preset
    assert wink.material_color_binds[0]["propertyName"] == "_Color"
    assert asset.humanoid == {"hips": 0, "head": 1, "leftThumbProximal": 2}
    # turned 180 degrees about Y: x and z negated, joints conjugated (rotation stays identity)
    body = asset.positions[4:]
    np.testing.assert_allclose(body[:, 2], -0.1)
    np.testing.assert_allclose(asset.joint_rest_world[0][:3, 3], [-0.1, 1.0, -0.2])
    np.testing.assert_allclose(asset.joint_rest_world[0][:3, :3], np.eye(3))
    np.testing.assert_allclose(asset.joint_rest_world[2][:3, 3], [-0.13, 1.45, -0.28], atol=1e-6)
    counts = np.diff(asset.morph_offsets)
    vertex = np.repeat(np.arange(asset.vertex_count), counts)
    first = asset.morph_dpos[(asset.morph_target == 0)]
    assert vertex[asset.morph_target == 0].tolist() == [0]
    np.testing.assert_allclose(first, [[0, 0, -0.05]])
    np.testing.assert_allclose(asset.normals[4:], np.tile([0, 0, -1.0], (4, 1)), atol=1e-6)
    m = asset.materials
    assert m.shading[0] == Shading.MTOON and m.alpha_mode[0] == AlphaMode.MASK
    assert m.alpha_cutoff[0] == pytest.approx(0.4) and m.double_sided[0]
    assert m.base_color[0][0] == pytest.approx(srgb_to_linear(np.array(0.5)), rel=1e-5)
    assert m.render_queue[0] == 2450
    assert asset.meta["license"] == "CC0"
