"""glTF loader: sample files against independent reference decoding, and built edge cases."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from gltf_builder import GltfBuilder, glb_bytes, png_bytes, quad, shared_asset, simple_glb

from avatarfarm.render.asset import AlphaMode, AssetError, AvatarAsset, Shading
from avatarfarm.render.gltf import AssetLimits, load_avatar


def sample(relative: str) -> Path:
    path = shared_asset(relative)
    if not path.is_file():
        pytest.skip(f"sample asset {relative} not present (../shared/assets is absent)")
    return path


# --- an independent reference reader (float accessors, no sparse) -------------------------


def read_gltf_json(path: Path) -> tuple[dict, list[bytes]]:
    data = path.read_bytes()
    if data[:4] == b"glTF":
        length = struct.unpack_from("<I", data, 12)[0]
        return json.loads(data[20 : 20 + length]), [data[20 + length + 8 :]]
    doc = json.loads(data)
    buffers = []
    for buffer in doc["buffers"]:
        uri = buffer["uri"]
        if uri.startswith("data:"):
            buffers.append(base64.b64decode(uri.split(",", 1)[1]))
        else:
            buffers.append((path.parent / uri).read_bytes())
    return doc, buffers


def ref_accessor(doc: dict, buffers: list[bytes], index: int) -> np.ndarray:
    acc = doc["accessors"][index]
    view = doc["bufferViews"][acc["bufferView"]]
    binary = buffers[view["buffer"]]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}[acc["type"]]
    dtype = {5126: "<f4", 5123: "<u2", 5121: "<u1", 5125: "<u4"}[acc["componentType"]]
    item = np.dtype(dtype).itemsize
    stride = view.get("byteStride", width * item)
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    rows = [np.frombuffer(binary, dtype, width, start + i * stride) for i in range(acc["count"])]
    return np.array(rows, np.float64)


def ref_world_matrices(doc: dict) -> dict[int, np.ndarray]:
    """World matrix of every node, by plain recursion over children."""

    def local(node: dict) -> np.ndarray:
        if "matrix" in node:
            return np.array(node["matrix"], float).reshape(4, 4).T
        x, y, z, w = node.get("rotation", [0, 0, 0, 1])
        r = np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
            ]
        )
        m = np.eye(4)
        m[:3, :3] = r @ np.diag(node.get("scale", [1, 1, 1]))
        m[:3, 3] = node.get("translation", [0, 0, 0])
        return m

    out: dict[int, np.ndarray] = {}

    def visit(i: int, parent: np.ndarray) -> None:
        out[i] = parent @ local(doc["nodes"][i])
        for c in doc["nodes"][i].get("children", []):
            visit(c, out[i])

    for root in doc["scenes"][doc.get("scene", 0)]["nodes"]:
        visit(root, np.eye(4))
    return out


def dense_deltas(asset: AvatarAsset, target: int) -> np.ndarray:
    """Reconstruct the dense [V,3] position deltas of one target from the CSR arrays."""
    out = np.zeros((asset.vertex_count, 3))
    counts = np.diff(asset.morph_offsets)
    vertex = np.repeat(np.arange(asset.vertex_count), counts)
    mask = asset.morph_target == target
    np.add.at(out, vertex[mask], asset.morph_dpos[mask])
    return out


# --- sample files -------------------------------------------------------------------------


def test_morph_stress_targets_and_exact_deltas() -> None:
    path = sample("khronos/MorphStressTest/MorphStressTest.packed.glb")
    asset = load_avatar(path)
    assert asset.format == "gltf"
    assert asset.target_names == [f"Key {k}" for k in range(1, 9)]
    assert asset.default_weights.tolist() == [0.0] * 8
    doc, binary = read_gltf_json(path)
    prims = doc["meshes"][0]["primitives"]
    for t in range(8):
        expected = np.concatenate(
            [ref_accessor(doc, binary, p["targets"][t]["POSITION"]) for p in prims]
        )
        np.testing.assert_allclose(dense_deltas(asset, t), expected, atol=1e-6)
    # CSR keeps only non-zero deltas, sorted by vertex
    assert np.all(np.abs(asset.morph_dpos).sum(1) + np.abs(asset.morph_dnormal).sum(1) > 0)
    counts = np.diff(asset.morph_offsets)
    assert counts.sum() == len(asset.morph_target) and (counts >= 0).all()


def test_weight_one_moves_vertices_by_transformed_deltas() -> None:
    path = sample("khronos/AnimatedMorphCube/AnimatedMorphCube.gltf")
    asset = load_avatar(path)
    doc, binary = read_gltf_json(path)
    world = ref_world_matrices(doc)[0]
    prim = doc["meshes"][0]["primitives"][0]
    assert len(asset.target_names) == 2
    base = ref_accessor(doc, binary, prim["attributes"]["POSITION"])
    np.testing.assert_allclose(asset.positions, base @ world[:3, :3].T + world[:3, 3], atol=1e-5)
    for t in range(2):
        delta = ref_accessor(doc, binary, prim["targets"][t]["POSITION"])
        morphed = asset.positions + dense_deltas(asset, t)
        expected = (base + delta) @ world[:3, :3].T + world[:3, 3]
        np.testing.assert_allclose(morphed, expected, atol=1e-5)
    assert np.allclose(np.linalg.norm(asset.normals, axis=1), 1.0, atol=1e-5)


def test_gltf_and_packed_glb_agree() -> None:
    a = load_avatar(sample("khronos/MorphPrimitivesTest/MorphPrimitivesTest.gltf"))
    b = load_avatar(sample("khronos/MorphPrimitivesTest/MorphPrimitivesTest.packed.glb"))
    for field in ("positions", "normals", "uvs", "triangles", "morph_dpos", "morph_offsets"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    np.testing.assert_array_equal(a.textures[0], b.textures[0])


def test_morph_primitives_shared_target_weights_and_texture() -> None:
    asset = load_avatar(sample("khronos/MorphPrimitivesTest/MorphPrimitivesTest.packed.glb"))
    assert len(asset.target_names) == 1
    assert asset.default_weights.tolist() == [0.5]
    assert asset.target_mesh.tolist() == [0]
    used = np.unique(asset.triangle_material)
    assert used.tolist() == [0, 1]
    np.testing.assert_allclose(asset.materials.base_color[:2], [[1, 0, 0, 1], [0, 1, 0, 1]])
    assert asset.materials.texture[:2].tolist() == [0, 0]
    assert asset.textures[0].shape == (512, 512, 4) and asset.textures[0].dtype == np.uint8
    # both primitives carry deltas of the same flat target 0
    moved = np.unique(np.repeat(np.arange(asset.vertex_count), np.diff(asset.morph_offsets)))
    first_prim = 21
    assert (moved < first_prim).any() and (moved >= first_prim).any()


@pytest.mark.parametrize("relative", ["khronos/SimpleSkin/SimpleSkin.gltf", "khronos/Fox/Fox.glb"])
def test_skinning_at_rest_matches_reference(relative: str) -> None:
    path = sample(relative)
    asset = load_avatar(path)
    doc, binary = read_gltf_json(path)
    world = ref_world_matrices(doc)
    skinned_node = next(n for n in doc["nodes"] if "skin" in n)
    skin = doc["skins"][skinned_node["skin"]]
    ibm = (
        ref_accessor(doc, binary, skin["inverseBindMatrices"]).reshape(-1, 4, 4).transpose(0, 2, 1)
    )
    palette = np.array([world[j] @ ibm[k] for k, j in enumerate(skin["joints"])])
    prim = doc["meshes"][skinned_node["mesh"]]["primitives"][0]
    pos = ref_accessor(doc, binary, prim["attributes"]["POSITION"])
    joints = ref_accessor(doc, binary, prim["attributes"]["JOINTS_0"]).astype(int)
    weights = ref_accessor(doc, binary, prim["attributes"]["WEIGHTS_0"])
    weights /= weights.sum(1, keepdims=True)
    homo = np.concatenate([pos, np.ones((len(pos), 1))], axis=1)
    expected = np.zeros_like(pos)
    for i in range(4):
        expected += (
            weights[:, i : i + 1] * np.einsum("vij,vj->vi", palette[joints[:, i]], homo)[:, :3]
        )
    scale = np.abs(expected).max()
    np.testing.assert_allclose(asset.positions, expected, atol=1e-5 * scale)
    # joints are scene nodes in topological order, skin weights sum to one
    assert all(asset.joint_parent[j] < j for j in range(len(asset.joint_names)))
    np.testing.assert_allclose(asset.skin_weights.sum(1), 1.0, atol=1e-5)
    # rest world of each joint is the reference world matrix of its node
    for k, node in enumerate(skin["joints"]):
        name = doc["nodes"][node].get("name", f"node{node}")
        j = asset.joint_names.index(name)
        np.testing.assert_allclose(
            asset.joint_rest_world[j], world[node], atol=1e-4 * max(1, scale)
        )
        assert k >= 0


# --- built files: accessors ---------------------------------------------------------------


def _single_quad(b: GltfBuilder, **prim_args: object) -> bytes:
    positions, indices = quad()
    prim = b.primitive(positions, indices, **prim_args)  # type: ignore[arg-type]
    b.set_scene([b.add_node(mesh=b.add_mesh([prim]))])
    return b.glb()


def test_sparse_accessor_substitutes_values() -> None:
    b = GltfBuilder()
    positions, indices = quad()
    prim = b.primitive(positions, indices)
    # a target with no bufferView: zeros plus sparse values at vertices 1 and 3
    idx_view = b.add_view(np.array([1, 3], np.uint16).tobytes())
    val_view = b.add_view(np.array([[0, 0.5, 0], [0.25, 0, -1]], np.float32).tobytes())
    sparse = {
        "count": 2,
        "indices": {"bufferView": idx_view, "componentType": 5123},
        "values": {"bufferView": val_view},
    }
    target = b._add(
        "accessors", {"componentType": 5126, "count": 4, "type": "VEC3", "sparse": sparse}
    )
    prim["targets"] = [{"POSITION": target}]
    # sparse on top of a real bufferView: base positions with vertex 2 replaced
    base_sparse_vals = b.add_view(np.array([[9, 9, 9]], np.float32).tobytes())
    b.json["accessors"][prim["attributes"]["POSITION"]]["sparse"] = {
        "count": 1,
        "indices": {
            "bufferView": b.add_view(np.array([2], np.uint8).tobytes()),
            "componentType": 5121,
        },
        "values": {"bufferView": base_sparse_vals},
    }
    b.set_scene([b.add_node(mesh=b.add_mesh([prim], target_names=["t"]))])
    asset = load_avatar(b.glb())
    expected_pos = positions.copy()
    expected_pos[2] = 9
    np.testing.assert_allclose(asset.positions, expected_pos)
    dense = dense_deltas(asset, 0)
    np.testing.assert_allclose(dense, [[0, 0, 0], [0, 0.5, 0], [0, 0, 0], [0.25, 0, -1]])
    assert np.diff(asset.morph_offsets).tolist() == [0, 1, 0, 1]


@pytest.mark.parametrize(
    ("dtype", "raw", "expected"),
    [
        (np.uint8, [0, 255, 51], [0.0, 1.0, 0.2]),
        (np.uint16, [0, 65535, 13107], [0.0, 1.0, 0.2]),
        (np.int8, [-128, 127, -127], [-1.0, 1.0, -1.0]),
        (np.int16, [-32768, 32767, 16384], [-1.0, 1.0, 16384 / 32767]),
    ],
)
def test_normalized_texcoords(dtype: type, raw: list[int], expected: list[float]) -> None:
    b = GltfBuilder()
    positions, indices = quad()
    prim = b.primitive(positions, indices)
    uv = np.array([[raw[0], raw[1]], [raw[2], raw[0]], [raw[1], raw[2]], [raw[0], raw[0]]], dtype)
    prim["attributes"]["TEXCOORD_0"] = b.add_accessor(uv, normalized=True)
    b.set_scene([b.add_node(mesh=b.add_mesh([prim]))])
    asset = load_avatar(b.glb())
    e = expected
    np.testing.assert_allclose(
        asset.uvs, [[e[0], e[1]], [e[2], e[0]], [e[1], e[2]], [e[0], e[0]]], atol=1e-6
    )


def test_interleaved_byte_stride() -> None:
    b = GltfBuilder()
    positions, indices = quad()
    normals = np.tile(np.array([[0, 0, 1]], np.float32), (4, 1))
    interleaved = np.concatenate([positions, normals], axis=1).astype(np.float32)
    view = b.add_view(interleaved.tobytes(), stride=24)
    pos = b._add(
        "accessors", {"bufferView": view, "componentType": 5126, "count": 4, "type": "VEC3"}
    )
    nrm = b._add(
        "accessors",
        {"bufferView": view, "byteOffset": 12, "componentType": 5126, "count": 4, "type": "VEC3"},
    )
    prim = {
        "attributes": {"POSITION": pos, "NORMAL": nrm},
        "indices": b.add_accessor(indices.reshape(-1)),
    }
    b.set_scene([b.add_node(mesh=b.add_mesh([prim]))])
    asset = load_avatar(b.glb())
    np.testing.assert_allclose(asset.positions, positions)
    np.testing.assert_allclose(asset.normals, normals)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (4, [[0, 1, 2], [3, 4, 5]]),
        (5, [[0, 1, 2], [1, 3, 2], [2, 3, 4], [3, 5, 4]]),
        (6, [[1, 2, 0], [2, 3, 0], [3, 4, 0], [4, 5, 0]]),
    ],
)
def test_triangle_modes(mode: int, expected: list[list[int]]) -> None:
    b = GltfBuilder()
    positions = np.random.default_rng(1).normal(size=(6, 3)).astype(np.float32)
    _single = b.primitive(positions, mode=mode)
    b.set_scene([b.add_node(mesh=b.add_mesh([_single]))])
    asset = load_avatar(b.glb())
    assert asset.triangles.tolist() == expected


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_points_and_lines_rejected(mode: int) -> None:
    with pytest.raises(AssetError, match="only triangles"):
        load_avatar(_single_quad(GltfBuilder(), mode=mode))


def test_missing_normals_are_area_weighted() -> None:
    b = GltfBuilder()
    # a big triangle facing +Z and a tiny one facing +X share vertex 0
    positions = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0.01, 0], [0, 0, -0.01]], np.float32)
    prim = b.primitive(positions, np.array([0, 1, 2, 0, 4, 3]))
    b.set_scene([b.add_node(mesh=b.add_mesh([prim]))])
    asset = load_avatar(b.glb())
    n0 = asset.normals[0]
    assert n0[2] > 0.99 and 0 < n0[0] < 0.01  # dominated by the large face
    np.testing.assert_allclose(asset.normals[1], [0, 0, 1], atol=1e-6)
    np.testing.assert_allclose(asset.normals[3], [1, 0, 0], atol=1e-6)
    assert asset.uvs.shape == (5, 2) and not asset.uvs.any()


# --- built files: scene, skin, morph weights ---------------------------------------------


def test_hierarchy_instancing_and_rigid_binding() -> None:
    b = GltfBuilder()
    positions, indices = quad()
    # file normals tilted towards +X, with a normal delta: both go through the normal matrix
    normals = np.tile([0.6, 0.0, 0.8], (4, 1))
    target = {"POSITION": np.ones((4, 3)), "NORMAL": np.tile([0.0, 0.1, 0.0], (4, 1))}
    prim = b.primitive(positions, indices, normals=normals, targets=[target])
    mesh = b.add_mesh([prim], weights=[0.25])
    child = b.add_node(mesh=mesh, translation=[0, 0, 1], weights=[0.75])
    matrix = np.eye(4)
    matrix[:3, 3] = [2, 0, 0]
    matrix[:3, :3] *= 2
    parent = b.add_node(children=[child], matrix=matrix.T.reshape(-1).tolist())
    other = b.add_node(mesh=mesh, rotation=[0, 1, 0, 0])  # 180 degrees about Y
    b.set_scene([parent, other])
    asset = load_avatar(b.glb())
    assert asset.vertex_count == 8 and asset.triangle_count == 4
    assert len(asset.target_names) == 1  # instances share the mesh's target
    assert asset.default_weights.tolist() == [0.75]  # node.weights overrides mesh.weights
    np.testing.assert_allclose(asset.positions[:4], positions * 2 + [2, 0, 2])
    np.testing.assert_allclose(asset.positions[4:], positions * [-1, 1, -1])
    np.testing.assert_allclose(dense_deltas(asset, 0)[:4], np.full((4, 3), 2.0))
    np.testing.assert_allclose(dense_deltas(asset, 0)[4:], np.tile([-1.0, 1, -1], (4, 1)))
    np.testing.assert_allclose(asset.normals[:4], np.tile([0.6, 0, 0.8], (4, 1)), atol=1e-6)
    np.testing.assert_allclose(asset.normals[4:], np.tile([-0.6, 0, -0.8], (4, 1)), atol=1e-6)
    dn = asset.morph_dnormal[asset.morph_target == 0]
    np.testing.assert_allclose(dn, np.tile([0, 0.1, 0], (8, 1)), atol=1e-6)  # scale removed
    assert asset.joint_parent.tolist() == [-1, 0, -1]
    assert (
        asset.skin_joints[:4, 0].tolist() == [1] * 4
        and asset.skin_joints[4:, 0].tolist() == [2] * 4
    )
    np.testing.assert_allclose(asset.skin_weights, np.tile([1.0, 0, 0, 0], (8, 1)))


def test_skin_rest_bake_and_more_than_four_influences() -> None:
    b = GltfBuilder()
    positions, indices = quad()
    joints = [b.add_node(translation=[0, float(k), 0]) for k in range(6)]
    root = b.add_node(children=joints)
    weights0 = np.array([[0.1, 0.2, 0.3, 0.05]] * 4, np.float32)
    weights1 = np.array([[0.15, 0.2, 0.0, 0.0]] * 4, np.float32)
    prim = b.primitive(positions, indices, joints=np.tile([0, 1, 2, 3], (4, 1)), weights=weights0)
    prim["attributes"]["JOINTS_1"] = b.add_accessor(
        np.tile(np.array([4, 5, 0, 0], np.uint8), (4, 1))
    )
    prim["attributes"]["WEIGHTS_1"] = b.add_accessor(weights1)
    skin = b.add_skin(joints)  # no inverseBindMatrices: identity
    b.set_scene([root, b.add_node(mesh=b.add_mesh([prim]), skin=skin)])
    asset = load_avatar(b.glb())
    # kept influences: joints 2 (0.3), 1 (0.2), 5 (0.2), 4 (0.15) -> renormalised by 0.85
    w = np.array([0.3, 0.2, 0.2, 0.15]) / 0.85
    np.testing.assert_allclose(asset.skin_weights[0], w, atol=1e-6)
    names = [asset.joint_names[j] for j in asset.skin_joints[0]]
    assert names == [f"node{k}" for k in (2, 1, 5, 4)]
    # identity inverse binds: the rest pose lifts vertices by the weighted joint translation
    lift = float(w @ np.array([2, 1, 5, 4]))
    np.testing.assert_allclose(asset.positions, positions + [0, lift, 0], atol=1e-6)


def test_plain_gltf_vocabulary_expressions() -> None:
    b = GltfBuilder()
    positions, indices = quad()
    delta = np.zeros((4, 3), np.float32)
    delta[0, 1] = 0.1
    m1 = b.add_mesh(
        [b.primitive(positions, indices, targets=[{"POSITION": delta}] * 3)],
        target_names=["eyeBlinkLeft", "Fun_Face", "a"],
    )
    m2 = b.add_mesh(
        [b.primitive(positions, indices, targets=[{"POSITION": delta}])],
        target_names=["EyeBlink_L"],
    )
    b.set_scene([b.add_node(mesh=m1), b.add_node(mesh=m2)])
    asset = load_avatar(b.glb())
    assert [e.name for e in asset.expressions] == ["eyeBlinkLeft"]
    assert asset.expressions[0].binds == [(0, 1.0), (3, 1.0)]
    assert asset.target_mesh.tolist() == [0, 0, 0, 1]


# --- materials ----------------------------------------------------------------------------


def test_materials_alpha_texture_transform_unlit_and_default() -> None:
    b = GltfBuilder()
    positions, indices = quad()
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    tex = b.add_texture(png_bytes(rgba))
    m0 = b.add_material(
        (0.5, 0.25, 1.0, 0.5), texture=tex, alphaMode="MASK", alphaCutoff=0.3, doubleSided=True
    )
    b.json["materials"][m0]["pbrMetallicRoughness"]["baseColorTexture"]["extensions"] = {
        "KHR_texture_transform": {"offset": [0, 1], "rotation": np.pi / 2, "scale": [0.5, 0.5]}
    }
    m1 = b.add_material(alphaMode="BLEND", extensions={"KHR_materials_unlit": {}})
    prims = [
        b.primitive(positions, indices, material=m0),
        b.primitive(positions, indices, material=m1),
        b.primitive(positions, indices),
    ]
    b.set_scene([b.add_node(mesh=b.add_mesh(prims))])
    asset = load_avatar(b.glb())
    mat = asset.materials
    assert len(mat) == 3 and mat.name[2] == "default"
    assert asset.triangle_material.tolist() == [0, 0, 1, 1, 2, 2]
    np.testing.assert_allclose(mat.base_color[0], [0.5, 0.25, 1.0, 0.5])
    assert mat.alpha_mode.tolist() == [AlphaMode.MASK, AlphaMode.BLEND, AlphaMode.OPAQUE]
    assert mat.alpha_cutoff[0] == pytest.approx(0.3)
    assert mat.double_sided.tolist() == [True, False, False]
    assert mat.shading.tolist() == [Shading.LAMBERT, Shading.UNLIT, Shading.LAMBERT]
    assert mat.texture.tolist() == [0, -1, -1]
    assert asset.textures[0].shape == (2, 3, 4) and asset.textures[0][0, 0].tolist() == [
        200,
        0,
        0,
        255,
    ]
    # spec example: lower-left quadrant rotated: uv (1,0) -> (0, 0.5), (0,1) -> (0.5, 1)
    m = mat.uv_transform[0].astype(float)
    np.testing.assert_allclose(m @ [1, 0, 1], [0, 0.5], atol=1e-6)
    np.testing.assert_allclose(m @ [0, 1, 1], [0.5, 1], atol=1e-6)
    np.testing.assert_allclose(mat.uv_transform[1], [[1, 0, 0], [0, 1, 0]])
    assert mat.render_queue[1] > mat.render_queue[0] > mat.render_queue[2]


# --- bad input ----------------------------------------------------------------------------


def _doc_and_bin(data: bytes) -> tuple[dict, bytes]:
    length = struct.unpack_from("<I", data, 12)[0]
    return json.loads(data[20 : 20 + length]), data[28 + length :]


def _edited(edit) -> bytes:  # noqa: ANN001
    doc, binary = _doc_and_bin(simple_glb())
    edit(doc)
    return glb_bytes(doc, binary)


def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    idat = (
        struct.pack(">I", 4)
        + b"IDAT"
        + b"\x00" * 4
        + struct.pack(">I", zlib.crc32(b"IDAT\0\0\0\0"))
    )
    return b"\x89PNG\r\n\x1a\n" + chunk + idat


def _huge_texture(doc: dict) -> None:
    png = base64.b64encode(_png_header(100_000, 100_000)).decode()
    doc["images"] = [{"uri": "data:image/png;base64," + png}]
    doc["textures"] = [{"source": 0}]
    doc["materials"][0]["pbrMetallicRoughness"]["baseColorTexture"] = {"index": 0}


BAD_EDITS = {
    "bufferViews[": lambda d: d["accessors"][0].update(bufferView=99),
    "outside its buffer": lambda d: d["bufferViews"][0].update(byteOffset=10**6),
    "need": lambda d: d["accessors"][0].update(count=10**6 // 12),
    "exceed max_vertices": lambda d: d["accessors"][0].update(count=50_000_000),
    "cyclic": lambda d: (
        d["nodes"].append({"children": [2]}) or d["nodes"].append({"children": [1]})
    ),
    "two parents": lambda d: d["nodes"].extend([{"children": [0]}, {"children": [0]}]),
    "KHR_draco_mesh_compression": lambda d: d.update(
        extensionsRequired=["KHR_draco_mesh_compression"]
    ),
    "not supported": lambda d: d["buffers"][0].update(uri="http://example.com/a.bin"),
    "cannot be resolved": lambda d: d["buffers"][0].update(uri="model.bin"),
    "max_texture_pixels|too many pixels": _huge_texture,
    "byteStride": lambda d: d["bufferViews"][0].update(byteStride=2),
    "asset.version": lambda d: d["asset"].update(version="1.0"),
    "must be an integer": lambda d: d["accessors"][0].update(count="12"),
    "is beyond": lambda d: d["accessors"][0].update(
        sparse={
            "count": 1,
            "indices": {"bufferView": 0, "componentType": 5125},
            "values": {"bufferView": 0},
        }
    ),
}


@pytest.mark.parametrize("message", sorted(BAD_EDITS))
def test_bad_json_content_is_one_clear_error(message: str) -> None:
    with pytest.raises(AssetError, match=message.replace("[", r"\[")):
        load_avatar(_edited(BAD_EDITS[message]))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d[:10], "truncated header"),
        (lambda d: b"gLTF" + d[4:], "not a glTF"),
        (lambda d: d[:4] + struct.pack("<I", 1) + d[8:], "version 1"),
        (lambda d: d[:-20], "truncated"),
        (lambda d: d[:12] + struct.pack("<I", 10**6) + d[16:], "past the end"),
        (lambda d: d[:20] + b"{oops" + d[25:], "broken JSON"),
        (lambda d: b"\x00\x01garbage", "not a glTF"),
    ],
)
def test_bad_container_is_one_clear_error(mutate, message: str) -> None:  # noqa: ANN001
    with pytest.raises(AssetError, match=message):
        load_avatar(mutate(simple_glb()))


def test_limits_are_configurable() -> None:
    data = simple_glb()
    assert load_avatar(data).vertex_count == 4
    with pytest.raises(AssetError, match="max_vertices"):
        load_avatar(data, limits=AssetLimits(max_vertices=3))
    with pytest.raises(AssetError, match="max_file_bytes"):
        load_avatar(data, limits=AssetLimits(max_file_bytes=100))
    with pytest.raises(AssetError, match="max_triangles"):
        load_avatar(data, limits=AssetLimits(max_triangles=1))


def test_external_files_stay_inside_the_folder(tmp_path: Path) -> None:
    b = GltfBuilder()
    _single_quad(b)
    doc = json.loads(b.gltf())
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "data.bin").write_bytes(bytes(b.bin))
    (tmp_path / "secret.bin").write_bytes(bytes(b.bin))
    doc["buffers"][0]["uri"] = "data.bin"
    good = tmp_path / "model" / "ok.gltf"
    good.write_text(json.dumps(doc))
    assert load_avatar(good).vertex_count == 4
    for uri in ("../secret.bin", "/etc/passwd", "file:///etc/passwd", "missing.bin"):
        doc["buffers"][0]["uri"] = uri
        bad = tmp_path / "model" / "bad.gltf"
        bad.write_text(json.dumps(doc))
        with pytest.raises(AssetError, match="bad.gltf: buffers"):
            load_avatar(bad)


def test_gltf_json_bytes_with_data_uri() -> None:
    b = GltfBuilder()
    glb = _single_quad(b)
    a, c = load_avatar(glb), load_avatar(b.gltf(), name="json")
    assert c.name == "json"
    np.testing.assert_array_equal(a.positions, c.positions)
    np.testing.assert_array_equal(a.triangles, c.triangles)


def test_texture_size_checked_from_header_before_decoding() -> None:
    b = GltfBuilder()
    tex = b.add_texture(png_bytes(np.zeros((16, 16, 4), np.uint8)))
    data = _single_quad(b, material=b.add_material(texture=tex))
    assert load_avatar(data).textures[0].shape == (16, 16, 4)
    with pytest.raises(AssetError, match=r"16x16 image exceeds max_texture_pixels \(255\)"):
        load_avatar(data, limits=AssetLimits(max_texture_pixels=255))


@pytest.mark.parametrize("extension", ["EXT_meshopt_compression", "KHR_draco_mesh_compression"])
def test_required_compression_extensions_rejected(extension: str) -> None:
    doc, binary = _doc_and_bin(simple_glb())
    doc["extensionsRequired"] = ["KHR_texture_transform", extension]
    with pytest.raises(AssetError, match=f"required extension.*{extension}"):
        load_avatar(glb_bytes(doc, binary))


def test_scene_without_triangles_rejected() -> None:
    b = GltfBuilder()
    b.set_scene([b.add_node(name="empty")])
    with pytest.raises(AssetError, match="no triangle meshes"):
        load_avatar(b.glb())


def test_normalized_integer_skin_weights_and_second_uv_set() -> None:
    b = GltfBuilder()
    positions, indices = quad()
    joints = [b.add_node(translation=[1.0, 0, 0]), b.add_node(translation=[0, 2.0, 0])]
    prim = b.primitive(positions, indices, material=b.add_material(texture=None))
    prim["attributes"]["JOINTS_0"] = b.add_accessor(
        np.tile(np.array([0, 1, 0, 0], np.uint8), (4, 1))
    )
    weights = np.tile(np.array([192, 64, 0, 0], np.uint8), (4, 1))
    prim["attributes"]["WEIGHTS_0"] = b.add_accessor(weights, normalized=True)
    prim["attributes"]["TEXCOORD_1"] = b.add_accessor(np.full((4, 2), 0.5, np.float32))
    b.json["materials"][0]["pbrMetallicRoughness"]["baseColorTexture"] = {
        "index": b.add_texture(png_bytes(np.zeros((1, 1, 4), np.uint8))),
        "texCoord": 1,
    }
    node = b.add_node(mesh=b.add_mesh([prim]), skin=b.add_skin(joints))
    b.set_scene([*joints, node])
    asset = load_avatar(b.glb())
    np.testing.assert_allclose(asset.skin_weights[:, :2], np.tile([0.75, 0.25], (4, 1)))
    np.testing.assert_allclose(asset.positions, positions + [0.75, 0.5, 0], atol=1e-6)
    np.testing.assert_allclose(asset.uvs, 0.5)
