"""GLB export: the file is valid glTF 2.0 (checked by our own parser) and reloads unchanged."""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from avatarfarm.render.asset import (
    AlphaMode,
    AvatarAsset,
    CameraSuggestion,
    Expression,
    Materials,
    Shading,
)
from avatarfarm.render.default_avatar import build_default_avatar
from avatarfarm.render.glb_export import export_glb, to_glb_bytes

COMPONENT = {5120: np.int8, 5121: np.uint8, 5122: np.int16, 5123: np.uint16, 5125: np.uint32,
             5126: np.float32}  # fmt: skip
WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}


# ---- a generic asset: textured MASK material, unlit material, rotated joint, 2 targets ----


def _rot_z(angle: float) -> np.ndarray:
    m = np.eye(4)
    c, s = np.cos(angle), np.sin(angle)
    m[:2, :2] = [[c, -s], [s, c]]
    return m


def tiny_asset() -> AvatarAsset:
    """Two quads on two materials, three joints (one rotated and scaled), two morph targets."""
    pos = np.array(
        [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [2, 0, 0.5], [3, 0, 0.5], [3, 1, 0.5],
         [2, 1, 0.5]], np.float32,
    )  # fmt: skip
    tris = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]], np.int32)
    n = len(pos)
    # target 0 moves vertices 1, 2 and 5; target 1 moves vertex 7 only.
    offsets = np.array([0, 0, 1, 2, 2, 2, 3, 3, 4], np.int32)
    target = np.array([0, 0, 0, 1], np.int32)
    dpos = np.array([[0, 0.1, 0], [0, 0.2, 0], [0.3, 0, 0], [0, 0, -0.5]], np.float32)
    dnor = np.array([[0, 0, 0], [0.1, 0, 0], [0, 0, 0], [0, 0.2, 0]], np.float32)
    local = np.stack([np.eye(4), np.eye(4), _rot_z(0.5) @ np.diag([1, 2, 1, 1])])
    local[1][:3, 3] = [0, 1, 0]
    local[2][:3, 3] = [0.5, 0.2, 0]
    world = np.stack([local[0], local[0] @ local[1], local[0] @ local[1] @ local[2]])
    uv_t = np.zeros((2, 2, 3), np.float32)
    uv_t[:, 0, 0] = uv_t[:, 1, 1] = 1
    c, s = np.cos(0.3), np.sin(0.3)
    uv_t[0] = [[2 * c, 0.5 * s, 0.25], [-2 * s, 0.5 * c, 0.5]]
    texture = np.arange(4 * 4 * 4, dtype=np.uint8).reshape(4, 4, 4) * 3
    materials = Materials(
        name=["cloth", "glow"],
        base_color=np.array([[1, 0.5, 0.25, 1], [0.2, 0.4, 0.6, 0.5]], np.float32),
        texture=np.array([0, -1], np.int32),
        uv_transform=uv_t,
        alpha_mode=np.array([AlphaMode.MASK, AlphaMode.BLEND], np.int8),
        alpha_cutoff=np.array([0.3, 0.5], np.float32),
        double_sided=np.array([True, False]),
        shading=np.array([Shading.LAMBERT, Shading.UNLIT], np.int8),
        shade_color=np.zeros((2, 3), np.float32),
        shading_toony=np.full(2, 0.9, np.float32),
        shading_shift=np.zeros(2, np.float32),
        render_queue=np.zeros(2, np.int32),
    )
    cam = CameraSuggestion(np.zeros(3, np.float32), np.zeros(3, np.float32), 25.0, 1.0)
    return AvatarAsset(
        name="tiny", format="gltf", positions=pos,
        normals=np.tile(np.array([[0, 0, 1]], np.float32), (n, 1)),
        uvs=np.stack([pos[:, 0] / 3, pos[:, 1]], -1).astype(np.float32), triangles=tris,
        triangle_material=np.array([0, 0, 1, 1], np.int32), target_names=["up", "back"],
        target_mesh=np.zeros(2, np.int32), default_weights=np.array([0.0, 0.25], np.float32),
        morph_offsets=offsets, morph_target=target, morph_dpos=dpos, morph_dnormal=dnor,
        skin_joints=np.array([[0, 1, 2, 0]] * n, np.int32),
        skin_weights=np.tile(np.array([[0.5, 0.25, 0.25, 0]], np.float32), (n, 1)),
        joint_names=["root", "mid", "tip"], joint_parent=np.array([-1, 0, 1], np.int32),
        joint_rest_local=local.astype(np.float32), joint_rest_world=world.astype(np.float32),
        materials=materials, textures=[texture],
        expressions=[Expression("up", [(0, 1.0)])], humanoid={"head": 2},
        cameras={"head": cam, "bust": cam, "full": cam}, meta={"title": "tiny"},
    )  # fmt: skip


@pytest.fixture(scope="module")
def presenter() -> AvatarAsset:
    return build_default_avatar()


# ---- our own GLB reader and validity checks --------------------------------------------


def parse_glb(data: bytes) -> tuple[dict, bytes]:
    """Header and chunks checked against the GLB layout; returns (json, bin)."""
    magic, version, length = struct.unpack_from("<III", data, 0)
    assert magic == 0x46546C67 and version == 2 and length == len(data)
    json_len, json_type = struct.unpack_from("<II", data, 12)
    assert json_type == 0x4E4F534A and json_len % 4 == 0
    doc = json.loads(data[20 : 20 + json_len])
    at = 20 + json_len
    bin_len, bin_type = struct.unpack_from("<II", data, at)
    assert bin_type == 0x004E4942 and bin_len % 4 == 0
    assert at + 8 + bin_len == len(data)
    binary = data[at + 8 : at + 8 + bin_len]
    assert doc["asset"]["version"] == "2.0"
    assert len(doc["buffers"]) == 1 and "uri" not in doc["buffers"][0]
    assert doc["buffers"][0]["byteLength"] <= bin_len < doc["buffers"][0]["byteLength"] + 4
    return doc, binary


def read_accessor(doc: dict, binary: bytes, index: int) -> np.ndarray:
    """[count, width] values of an accessor, zeros + sparse substitution included."""
    acc = doc["accessors"][index]
    dtype = np.dtype(COMPONENT[acc["componentType"]])
    width = WIDTH[acc["type"]]
    out = np.zeros((acc["count"], width), dtype)
    if "bufferView" in acc:
        view = doc["bufferViews"][acc["bufferView"]]
        start = view["byteOffset"] + acc.get("byteOffset", 0)
        size = acc["count"] * width * dtype.itemsize
        assert "byteStride" not in view and start + size <= view["byteOffset"] + view["byteLength"]
        out[:] = np.frombuffer(binary, dtype, acc["count"] * width, start).reshape(-1, width)
    if "sparse" in acc:
        sp = acc["sparse"]
        iv = doc["bufferViews"][sp["indices"]["bufferView"]]
        vv = doc["bufferViews"][sp["values"]["bufferView"]]
        idx = np.frombuffer(binary, COMPONENT[sp["indices"]["componentType"]], sp["count"],
                            iv["byteOffset"])  # fmt: skip
        assert sp["count"] >= 1 and (np.diff(idx.astype(np.int64)) > 0).all()
        assert idx.max() < acc["count"]
        out[idx] = np.frombuffer(binary, dtype, sp["count"] * width, vv["byteOffset"]).reshape(
            -1, width
        )
    return out


def check_valid(doc: dict, binary: bytes) -> None:
    """The spec rules an exporter can get wrong: ranges, alignment, targets, bounds, skin."""
    total = doc["buffers"][0]["byteLength"]
    for view in doc["bufferViews"]:
        assert view["byteOffset"] % 4 == 0 and view["byteOffset"] + view["byteLength"] <= total
    for i, acc in enumerate(doc["accessors"]):
        read_accessor(doc, binary, i)
        assert acc["count"] >= 1
    mesh = doc["meshes"][0]
    names = mesh.get("extras", {}).get("targetNames", [])
    for prim in mesh["primitives"]:
        attrs = prim["attributes"]
        count = doc["accessors"][attrs["POSITION"]]["count"]
        for key, acc_i in attrs.items():
            acc = doc["accessors"][acc_i]
            assert acc["count"] == count
            assert doc["bufferViews"][acc["bufferView"]]["target"] == 34962, key
        pos_acc = doc["accessors"][attrs["POSITION"]]
        pos = read_accessor(doc, binary, attrs["POSITION"])
        np.testing.assert_allclose(pos_acc["min"], pos.min(axis=0))
        np.testing.assert_allclose(pos_acc["max"], pos.max(axis=0))
        idx_acc = doc["accessors"][prim["indices"]]
        assert idx_acc["type"] == "SCALAR" and idx_acc["componentType"] in (5123, 5125)
        assert doc["bufferViews"][idx_acc["bufferView"]]["target"] == 34963
        indices = read_accessor(doc, binary, prim["indices"])
        assert indices.max() < count and idx_acc["count"] % 3 == 0
        weights = read_accessor(doc, binary, attrs["WEIGHTS_0"])
        np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-5)
        assert len(prim.get("targets", [])) == len(names) == len(mesh.get("weights", []))
        for target in prim.get("targets", []):
            acc = doc["accessors"][target["POSITION"]]
            assert acc["count"] == count and "min" in acc and "max" in acc
            values = read_accessor(doc, binary, target["POSITION"])
            assert (values.min(axis=0) >= np.array(acc["min"]) - 1e-7).all()
            assert (values.max(axis=0) <= np.array(acc["max"]) + 1e-7).all()
    skin = doc["skins"][0]
    ibm = read_accessor(doc, binary, skin["inverseBindMatrices"])
    assert ibm.shape == (len(skin["joints"]), 16)
    used = set(doc.get("extensionsUsed", []))
    for mat in doc["materials"]:
        assert set(mat.get("extensions", {})) <= used
    assert "extensionsRequired" not in doc


@dataclass
class Flat:
    """Per-vertex attributes, triangles by material and per-target deltas of a mesh."""

    base: np.ndarray  # [V,8] position, normal, uv
    triangles: np.ndarray  # [T,3]
    material: np.ndarray  # [T]
    deltas: Callable[[int], np.ndarray]  # target -> [V,6] dpos, dnormal
    n_targets: int


def flat_asset(asset: AvatarAsset) -> Flat:
    vid = np.repeat(np.arange(asset.vertex_count), np.diff(asset.morph_offsets))

    def deltas(t: int) -> np.ndarray:
        out = np.zeros((asset.vertex_count, 6), np.float32)
        sel = asset.morph_target == t
        out[vid[sel], :3] = asset.morph_dpos[sel]
        out[vid[sel], 3:] = asset.morph_dnormal[sel]
        return out

    base = np.concatenate([asset.positions, asset.normals, asset.uvs], 1)
    return Flat(base, asset.triangles, asset.triangle_material, deltas, len(asset.target_names))


def flat_glb(doc: dict, binary: bytes) -> Flat:
    """The same view decoded straight from the GLB with our own reader."""
    bases, tris, mats, targets, start = [], [], [], [], 0
    for prim in doc["meshes"][0]["primitives"]:
        a = prim["attributes"]
        base = np.concatenate(
            [read_accessor(doc, binary, a[k]) for k in ("POSITION", "NORMAL", "TEXCOORD_0")], 1
        )
        tri = read_accessor(doc, binary, prim["indices"]).reshape(-1, 3).astype(np.int64)
        bases.append(base)
        tris.append(tri + start)
        mats.append(np.full(len(tri), prim["material"]))
        targets.append(prim.get("targets", []))
        start += len(base)

    def deltas(t: int) -> np.ndarray:
        return np.concatenate(
            [
                np.concatenate(
                    [
                        read_accessor(doc, binary, tg[t]["POSITION"]),
                        read_accessor(doc, binary, tg[t]["NORMAL"]),
                    ],
                    1,
                )  # fmt: skip
                for tg in targets
            ]
        )

    n = len(doc["meshes"][0].get("weights", []))
    return Flat(np.concatenate(bases), np.concatenate(tris), np.concatenate(mats), deltas, n)


def _canonical(flat: Flat) -> dict[int, np.ndarray]:
    """Per material, its triangles in an order that ignores vertex splitting and reordering."""
    out = {}
    for mat in np.unique(flat.material):
        tri = flat.triangles[flat.material == mat]
        key = np.round(flat.base[tri][:, :, :3].reshape(len(tri), -1), 5)
        out[int(mat)] = tri[np.lexsort(key.T[::-1])]
    return out


def assert_same_mesh(a: Flat, b: Flat) -> None:
    """Same triangles per material with the same corner attributes and morph deltas."""
    ca, cb = _canonical(a), _canonical(b)
    assert sorted(ca) == sorted(cb) and a.n_targets == b.n_targets
    for mat in ca:
        np.testing.assert_allclose(a.base[ca[mat]], b.base[cb[mat]], atol=2e-6, err_msg=str(mat))
    for t in range(a.n_targets):
        da, db = a.deltas(t), b.deltas(t)
        for mat in ca:
            np.testing.assert_allclose(da[ca[mat]], db[cb[mat]], atol=2e-6, err_msg=f"target {t}")


# ---- tests --------------------------------------------------------------------------------


@pytest.mark.parametrize("sparse", [True, False])
def test_tiny_asset_is_valid_and_exact(sparse: bool) -> None:
    asset = tiny_asset()
    doc, binary = parse_glb(to_glb_bytes(asset, sparse_morphs=sparse))
    check_valid(doc, binary)
    assert_same_mesh(flat_asset(asset), flat_glb(doc, binary))
    assert doc["meshes"][0]["extras"]["targetNames"] == ["up", "back"]
    assert doc["meshes"][0]["weights"] == [0.0, 0.25]
    # Joints: hierarchy, TRS that rebuilds the local matrices, inverse bind = inv(world).
    nodes = doc["nodes"]
    assert [n["name"] for n in nodes[:3]] == ["root", "mid", "tip"]
    assert nodes[0]["children"] == [1] and nodes[1]["children"] == [2]
    for j in range(3):
        n = nodes[j]
        x, y, z, w = n.get("rotation", [0, 0, 0, 1])
        r = np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
            ]
        )
        m = np.eye(4)
        m[:3, :3] = r * np.array(n.get("scale", [1, 1, 1]))
        m[:3, 3] = n.get("translation", [0, 0, 0])
        np.testing.assert_allclose(m, asset.joint_rest_local[j], atol=1e-6)
    ibm = read_accessor(doc, binary, doc["skins"][0]["inverseBindMatrices"])
    ibm = ibm.reshape(-1, 4, 4).transpose(0, 2, 1)
    np.testing.assert_allclose(
        ibm @ asset.joint_rest_world, np.tile(np.eye(4), (3, 1, 1)), atol=1e-5
    )
    mesh_node = nodes[doc["scenes"][0]["nodes"][-1]]
    assert mesh_node["mesh"] == 0 and mesh_node["skin"] == 0 and "matrix" not in mesh_node
    # Materials.
    cloth, glow = doc["materials"]
    assert cloth["alphaMode"] == "MASK" and cloth["alphaCutoff"] == pytest.approx(0.3)
    assert cloth["doubleSided"] and not glow["doubleSided"] and glow["alphaMode"] == "BLEND"
    assert "KHR_materials_unlit" in glow["extensions"]
    tt = cloth["pbrMetallicRoughness"]["baseColorTexture"]["extensions"]["KHR_texture_transform"]
    assert tt["rotation"] == pytest.approx(0.3) and tt["scale"] == pytest.approx([2, 0.5])
    assert tt["offset"] == pytest.approx([0.25, 0.5])
    image = doc["images"][0]
    view = doc["bufferViews"][image["bufferView"]]
    png = binary[view["byteOffset"] : view["byteOffset"] + view["byteLength"]]
    from PIL import Image

    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), asset.textures[0])


def test_presenter_is_valid_and_exact(presenter: AvatarAsset) -> None:
    data = to_glb_bytes(presenter)
    doc, binary = parse_glb(data)
    check_valid(doc, binary)
    assert len(doc["meshes"][0]["primitives"]) == len(presenter.materials)
    assert_same_mesh(flat_asset(presenter), flat_glb(doc, binary))
    assert "VRMC_materials_mtoon" in doc["extensionsUsed"]
    extra = doc["extras"]["avatarfarm"]
    assert extra["humanoid"] == presenter.humanoid
    assert [e["name"] for e in extra["expressions"]] == [e.name for e in presenter.expressions]
    assert len(data) < 16 * 2**20  # sparse morphs keep the file small


def test_export_to_path_and_file_object(tmp_path) -> None:
    asset = tiny_asset()
    path = tmp_path / "tiny.glb"
    export_glb(asset, path)
    buf = io.BytesIO()
    export_glb(asset, buf)
    assert path.read_bytes() == buf.getvalue() == to_glb_bytes(asset)


def _reload(data: bytes) -> AvatarAsset:
    gltf = pytest.importorskip("avatarfarm.render.gltf")
    return gltf.load_avatar(data)


@pytest.mark.parametrize("sparse", [True, False])
def test_reload_tiny_with_our_loader(sparse: bool) -> None:
    asset = tiny_asset()
    back = _reload(to_glb_bytes(asset, sparse_morphs=sparse))
    assert_same_mesh(flat_asset(asset), flat_asset(back))
    assert back.target_names == asset.target_names
    np.testing.assert_allclose(back.default_weights, asset.default_weights)
    assert back.joint_names[:3] == asset.joint_names
    np.testing.assert_allclose(back.joint_rest_world[:3], asset.joint_rest_world, atol=1e-5)
    np.testing.assert_array_equal(back.textures[0], asset.textures[0])
    np.testing.assert_allclose(back.materials.base_color, asset.materials.base_color, atol=1e-6)
    np.testing.assert_allclose(back.materials.uv_transform, asset.materials.uv_transform, atol=1e-5)
    np.testing.assert_array_equal(back.materials.alpha_mode, asset.materials.alpha_mode)
    np.testing.assert_array_equal(back.materials.shading, asset.materials.shading)


def test_reload_presenter_with_our_loader(presenter: AvatarAsset) -> None:
    back = _reload(to_glb_bytes(presenter))
    back.validate()
    assert_same_mesh(flat_asset(presenter), flat_asset(back))
    assert back.target_names == presenter.target_names
    assert back.joint_names[:5] == presenter.joint_names
    np.testing.assert_allclose(back.joint_rest_world[:5], presenter.joint_rest_world, atol=1e-6)
    assert back.triangle_count == presenter.triangle_count
    np.testing.assert_array_equal(back.materials.shading, presenter.materials.shading)
    np.testing.assert_allclose(
        back.materials.shade_color, presenter.materials.shade_color, atol=1e-6
    )
    # Skinning survives: every eyeball vertex still follows its eye joint.
    sclera = presenter.materials.name.index("sclera")
    verts = np.unique(back.triangles[back.triangle_material == sclera])
    assert set(back.skin_joints[verts, 0].tolist()) == {3, 4}
    assert set(e.name for e in back.expressions) >= set(presenter.target_names)
