"""Fuzzing the loader: whatever the bytes or the JSON say, only AssetError may escape."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from gltf_builder import GltfBuilder, glb_bytes, png_bytes, quad, shared_asset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avatarfarm.render.asset import AssetError
from avatarfarm.render.gltf import AssetLimits, load_avatar

SAMPLES = (
    "khronos/AnimatedMorphCube/AnimatedMorphCube.packed.glb",
    "khronos/MorphPrimitivesTest/MorphPrimitivesTest.packed.glb",
    "khronos/SimpleSkin/SimpleSkin.gltf",
    "khronos/Fox/Fox.glb",
    "vrm/Godette/Godette_vrm_v4.vrm",
)
# Small limits keep the fuzz fast and also exercise the limit checks.
LIMITS = AssetLimits(max_vertices=20_000, max_triangles=20_000, max_texture_pixels=1024 * 1024)


def rich_glb() -> bytes:
    """A built file touching most features: skin, targets, sparse, texture, VRM 1.0."""
    b = GltfBuilder()
    positions, indices = quad()
    tex = b.add_texture(png_bytes(np.full((4, 4, 4), 128, np.uint8)))
    mat = b.add_material(texture=tex, alphaMode="MASK")
    joint = b.add_node(translation=[0, 1, 0])
    prim = b.primitive(
        positions,
        indices,
        normals=np.tile([0, 0, 1.0], (4, 1)),
        uvs=np.zeros((4, 2)),
        targets=[{"POSITION": np.ones((4, 3))}],
        material=mat,
        joints=np.zeros((4, 4)),
        weights=np.tile([1.0, 0, 0, 0], (4, 1)),
    )
    mesh = b.add_mesh([prim], weights=[0.5], target_names=["jawOpen"])
    node = b.add_node(mesh=mesh, skin=b.add_skin([joint], np.eye(4)[None]))
    b.set_scene([joint, node])
    b.extension(
        "VRMC_vrm",
        {
            "humanoid": {"humanBones": {"head": {"node": joint}}},
            "expressions": {
                "preset": {"aa": {"morphTargetBinds": [{"node": node, "index": 0, "weight": 1}]}}
            },
        },
    )
    return b.glb()


def load_or_asset_error(data: bytes) -> None:
    try:
        asset = load_avatar(data, limits=LIMITS)
    except AssetError as exc:
        # explicit checks name the problem; the catch-all ("cannot load") means one is missing
        assert "cannot load (" not in str(exc), str(exc)
        return
    asset.validate()


def _corpus() -> list[tuple[str, bytes]]:
    out = [("rich", rich_glb())]
    for relative in SAMPLES:
        path = shared_asset(relative)
        if path.is_file():
            out.append((relative, path.read_bytes()))
    return out


CORPUS = _corpus()


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    kind = rng.integers(4)
    if kind == 0:  # flip a few bytes
        for pos in rng.integers(0, len(buf), size=rng.integers(1, 8)):
            buf[pos] = int(rng.integers(256))
    elif kind == 1:  # truncate
        del buf[int(rng.integers(0, len(buf))) :]
    elif kind == 2:  # overwrite a 32-bit word with an extreme value
        pos = int(rng.integers(0, max(len(buf) - 4, 1)))
        value = int(rng.choice([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0x80000000, 4096]))
        buf[pos : pos + 4] = struct.pack("<I", value)
    else:  # mutate inside the JSON text, where the structure lives
        end = (
            min(len(buf), 20 + struct.unpack_from("<I", buf, 12)[0])
            if buf[:4] == b"glTF"
            else len(buf)
        )
        for pos in rng.integers(min(20, end - 1), end, size=rng.integers(1, 4)):
            buf[pos] = int(rng.choice(list(b'0123456789-[]{}",:e.9')))
    return bytes(buf)


@pytest.mark.filterwarnings("error::RuntimeWarning")  # numeric overflow = a missing check
@pytest.mark.parametrize("seed", range(6))
def test_byte_mutations_only_raise_asset_error(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for name, data in CORPUS:
        rounds = 6 if "Godette" in name or "Fox" in name else 20
        for _ in range(rounds):
            load_or_asset_error(_mutate(data, rng))


def _split(data: bytes) -> tuple[dict, bytes]:
    length = struct.unpack_from("<I", data, 12)[0]
    return json.loads(data[20 : 20 + length]), data[28 + length :]


def _paths(node: object, prefix: tuple = ()) -> list[tuple]:
    """Every JSON path (keys and list indices) inside a document."""
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*prefix, i))
    return out


JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.sampled_from([0, 1, -1, 2**31, 4, 5, 6, 5120, 5126, 1e308, float("nan")]),
    st.text(max_size=8),
    st.sampled_from(["VEC3", "MAT4", "BLEND", "http://x/y.bin", "../../etc/passwd", "data:,x"]),
    st.lists(st.integers(-2, 3), max_size=5),
    st.dictionaries(
        st.sampled_from(["node", "index", "weight", "bufferView", "count"]),
        st.integers(-2, 3),
        max_size=3,
    ),
)


def _json_case(data: bytes, roots: tuple[str, ...] | None = None) -> tuple[dict, bytes, list]:
    doc, binary = _split(data)
    paths = [p for p in _paths(doc)[1:] if roots is None or p[0] in roots]
    return doc, binary, paths


def _json_cases() -> dict[str, tuple[dict, bytes, list]]:
    cases = {"rich": _json_case(rich_glb())}
    godette = shared_asset("vrm/Godette/Godette_vrm_v4.vrm")
    if godette.is_file():  # the structure beyond accessors: VRM data, materials, nodes
        roots = ("extensions", "materials", "nodes", "skins", "meshes", "textures", "scenes")
        cases["godette"] = _json_case(godette.read_bytes(), roots)
    return cases


JSON_CASES = _json_cases()


def _replace(doc: dict, path: tuple, value: object) -> dict:
    out = json.loads(json.dumps(doc))
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("case", sorted(JSON_CASES))
def test_json_mutations_only_raise_asset_error(case: str) -> None:
    doc0, binary, paths = JSON_CASES[case]
    examples = 250 if case == "rich" else 40

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
    @given(edits=st.lists(st.tuples(st.integers(0, len(paths) - 1), JUNK), min_size=1, max_size=3))
    def check(edits: list[tuple[int, object]]) -> None:
        doc = doc0
        for index, value in edits:
            try:
                doc = _replace(doc, paths[index], value)
            except (KeyError, IndexError, TypeError):
                continue  # an earlier edit removed that path
        load_or_asset_error(glb_bytes(doc, binary))

    check()
