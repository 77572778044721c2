"""Build small glTF / GLB / VRM files in memory for tests.

    b = GltfBuilder()
    prim = b.primitive(positions, indices, targets=[{"POSITION": deltas}])
    node = b.add_node(mesh=b.add_mesh([prim], target_names=["jawOpen"]))
    b.set_scene([node])
    avatar = load_avatar(b.glb())

`b.json` is the document being built; tests add extensions (VRMC_vrm, ...) to it directly.
"""

from __future__ import annotations

import base64
import io
import json
import struct
from pathlib import Path

import numpy as np
from PIL import Image

SHARED_ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"

_COMPONENT = {
    np.dtype(np.int8): 5120,
    np.dtype(np.uint8): 5121,
    np.dtype(np.int16): 5122,
    np.dtype(np.uint16): 5123,
    np.dtype(np.uint32): 5125,
    np.dtype(np.float32): 5126,
}
_TYPE = {1: "SCALAR", 2: "VEC2", 3: "VEC3", 4: "VEC4", 16: "MAT4"}


def shared_asset(relative: str) -> Path:
    """Path of a file under ../shared/assets (callers skip when it is missing)."""
    return SHARED_ASSETS / relative


def png_bytes(rgba: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.asarray(rgba, np.uint8)).save(out, format="PNG")
    return out.getvalue()


def glb_bytes(document: dict, binary: bytes) -> bytes:
    """Pack a JSON document and a BIN chunk into a GLB (padded as the spec requires)."""
    text = json.dumps(document).encode()
    text += b" " * (-len(text) % 4)
    binary = binary + b"\x00" * (-len(binary) % 4)
    chunks = struct.pack("<II", len(text), 0x4E4F534A) + text
    if binary:
        chunks += struct.pack("<II", len(binary), 0x004E4942) + binary
    return struct.pack("<4sII", b"glTF", 2, 12 + len(chunks)) + chunks


class GltfBuilder:
    """Accumulates buffer data and JSON objects; every add_* returns the new index."""

    def __init__(self) -> None:
        self.json: dict = {"asset": {"version": "2.0", "generator": "tests"}}
        self.bin = bytearray()

    def _add(self, kind: str, value: dict) -> int:
        items = self.json.setdefault(kind, [])
        items.append(value)
        return len(items) - 1

    def add_view(self, data: bytes, *, stride: int | None = None) -> int:
        self.bin += b"\x00" * (-len(self.bin) % 4)
        view = {"buffer": 0, "byteOffset": len(self.bin), "byteLength": len(data)}
        if stride is not None:
            view["byteStride"] = stride
        self.bin += data
        return self._add("bufferViews", view)

    def add_accessor(self, array: np.ndarray, *, normalized: bool = False, **extra: object) -> int:
        """An accessor over a new bufferView holding `array` ([N] or [N,k], dtype kept)."""
        arr = np.ascontiguousarray(array)
        width = 1 if arr.ndim == 1 else int(np.prod(arr.shape[1:]))
        accessor = {
            "bufferView": self.add_view(arr.astype(arr.dtype.newbyteorder("<")).tobytes()),
            "componentType": _COMPONENT[arr.dtype],
            "count": int(arr.shape[0]),
            "type": _TYPE[width],
            **extra,
        }
        if normalized:
            accessor["normalized"] = True
        if arr.dtype == np.float32 and width == 3:
            flat = arr.reshape(len(arr), 3)
            accessor["min"] = flat.min(axis=0).tolist() if len(arr) else [0, 0, 0]
            accessor["max"] = flat.max(axis=0).tolist() if len(arr) else [0, 0, 0]
        return self._add("accessors", accessor)

    def primitive(
        self,
        positions: np.ndarray,
        indices: np.ndarray | None = None,
        *,
        normals: np.ndarray | None = None,
        uvs: np.ndarray | None = None,
        targets: list[dict[str, np.ndarray]] | None = None,
        material: int | None = None,
        joints: np.ndarray | None = None,
        weights: np.ndarray | None = None,
        mode: int | None = None,
        extras: dict | None = None,
    ) -> dict:
        """A primitive dict whose arrays become accessors (float32 unless given otherwise)."""
        attributes = {"POSITION": self.add_accessor(np.asarray(positions, np.float32))}
        for name, values in (("NORMAL", normals), ("TEXCOORD_0", uvs)):
            if values is not None:
                attributes[name] = self.add_accessor(np.asarray(values, np.float32))
        if joints is not None and weights is not None:
            attributes["JOINTS_0"] = self.add_accessor(np.asarray(joints, np.uint16))
            attributes["WEIGHTS_0"] = self.add_accessor(np.asarray(weights, np.float32))
        prim: dict = {"attributes": attributes}
        if indices is not None:
            prim["indices"] = self.add_accessor(np.asarray(indices, np.uint32).reshape(-1))
        if targets:
            prim["targets"] = [
                {k: self.add_accessor(np.asarray(v, np.float32)) for k, v in t.items()}
                for t in targets
            ]
        for key, value in (("material", material), ("mode", mode), ("extras", extras)):
            if value is not None:
                prim[key] = value
        return prim

    def add_mesh(
        self,
        primitives: list[dict],
        *,
        weights: list[float] | None = None,
        target_names: list[str] | None = None,
        name: str | None = None,
    ) -> int:
        mesh: dict = {"primitives": primitives}
        if weights is not None:
            mesh["weights"] = weights
        if target_names is not None:
            mesh["extras"] = {"targetNames": target_names}
        if name is not None:
            mesh["name"] = name
        return self._add("meshes", mesh)

    def add_node(self, **fields: object) -> int:
        """A node; keyword arguments are glTF node fields (mesh, children, translation...)."""
        return self._add("nodes", {k: v for k, v in fields.items() if v is not None})

    def add_skin(self, joints: list[int], inverse_bind: np.ndarray | None = None) -> int:
        skin: dict = {"joints": joints}
        if inverse_bind is not None:
            ibm = np.asarray(inverse_bind, np.float32).transpose(0, 2, 1).reshape(-1, 16)
            skin["inverseBindMatrices"] = self.add_accessor(ibm)
        return self._add("skins", skin)

    def add_texture(self, png: bytes) -> int:
        image = self._add("images", {"bufferView": self.add_view(png), "mimeType": "image/png"})
        return self._add("textures", {"source": image})

    def add_material(
        self,
        base_color: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
        *,
        texture: int | None = None,
        **fields: object,
    ) -> int:
        """A material; extra keyword arguments are glTF material fields (alphaMode, ...)."""
        pbr: dict = {"baseColorFactor": list(base_color)}
        if texture is not None:
            pbr["baseColorTexture"] = {"index": texture}
        return self._add("materials", {"pbrMetallicRoughness": pbr, **fields})

    def set_scene(self, nodes: list[int]) -> None:
        self.json["scenes"] = [{"nodes": nodes}]
        self.json["scene"] = 0

    def extension(self, name: str, value: dict) -> None:
        self.json.setdefault("extensions", {})[name] = value
        used = self.json.setdefault("extensionsUsed", [])
        if name not in used:
            used.append(name)

    def _document(self, buffer: dict) -> dict:
        document = json.loads(json.dumps(self.json))
        if self.bin:
            document["buffers"] = [buffer]
        return document

    def glb(self) -> bytes:
        return glb_bytes(self._document({"byteLength": len(self.bin)}), bytes(self.bin))

    def gltf(self) -> bytes:
        """The .gltf JSON form with the buffer embedded as a base64 data: URI."""
        uri = "data:application/octet-stream;base64," + base64.b64encode(self.bin).decode()
        return json.dumps(self._document({"byteLength": len(self.bin), "uri": uri})).encode()


def quad(size: float = 1.0, z: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Four vertices and two counter-clockwise triangles facing +Z."""
    h = size / 2
    positions = np.array([[-h, -h, z], [h, -h, z], [h, h, z], [-h, h, z]], np.float32)
    return positions, np.array([[0, 1, 2], [0, 2, 3]], np.uint32)


def simple_glb(target_names: tuple[str, ...] = ("jawOpen",)) -> bytes:
    """A one-quad GLB with one morph target per name (target k lifts vertex k % 4)."""
    b = GltfBuilder()
    positions, indices = quad()
    targets = []
    for k in range(len(target_names)):
        delta = np.zeros((4, 3), np.float32)
        delta[k % 4, 1] = 0.1 * (k + 1)
        targets.append({"POSITION": delta})
    prim = b.primitive(positions, indices, targets=targets, material=b.add_material())
    mesh = b.add_mesh([prim], target_names=list(target_names))
    b.set_scene([b.add_node(mesh=mesh, name="quad")])
    return b.glb()
