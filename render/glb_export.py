"""Write any `AvatarAsset` as a standard glTF 2.0 binary (GLB) that other tools can open.

Layout: one skinned mesh with one primitive per material (each primitive carries only the
vertices its triangles use), morph targets with POSITION and NORMAL deltas (sparse
accessors by default, dense on request), `mesh.extras.targetNames`, the joints as a node
hierarchy with local TRS and inverseBindMatrices = inv(joint_rest_world). Because asset
positions are already the world-space rest pose, the mesh node has an identity transform.
MToon parameters go into `VRMC_materials_mtoon` (optional, so generic viewers ignore it);
expressions and humanoid bones go into the root `extras.avatarfarm` for our own loader.
"""

from __future__ import annotations

import io
import json
import struct
from os import PathLike
from typing import BinaryIO

import numpy as np
from PIL import Image

from .asset import AlphaMode, AvatarAsset, Shading

FLOAT, UBYTE, USHORT, UINT = 5126, 5121, 5123, 5125
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
_TYPES = {1: "SCALAR", 2: "VEC2", 3: "VEC3", 4: "VEC4", 16: "MAT4"}
_NP = {FLOAT: np.float32, UBYTE: np.uint8, USHORT: np.uint16, UINT: np.uint32}


class _Builder:
    """Accumulates the binary chunk and the JSON arrays that index into it."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.length = 0
        self.buffer_views: list[dict] = []
        self.accessors: list[dict] = []

    def view(self, data: bytes, target: int | None = None) -> int:
        pad = (-self.length) % 4
        if pad:
            self.chunks.append(b"\0" * pad)
            self.length += pad
        view = {"buffer": 0, "byteOffset": self.length, "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        self.chunks.append(data)
        self.length += len(data)
        self.buffer_views.append(view)
        return len(self.buffer_views) - 1

    def accessor(
        self, array: np.ndarray, ctype: int, target: int | None = None, bounds: bool = False
    ) -> int:
        """A tightly packed accessor over `array` ([n] or [n,k]) in component type `ctype`."""
        data = np.ascontiguousarray(array, _NP[ctype])
        n = data.shape[0]
        width = 1 if data.ndim == 1 else int(np.prod(data.shape[1:]))
        acc = {
            "bufferView": self.view(data.tobytes(), target),
            "componentType": ctype,
            "count": n,
            "type": _TYPES[width],
        }
        if bounds:
            flat = data.reshape(n, width)
            acc["min"] = flat.min(axis=0).tolist() if n else [0.0] * width
            acc["max"] = flat.max(axis=0).tolist() if n else [0.0] * width
        self.accessors.append(acc)
        return len(self.accessors) - 1

    def sparse_vec3(self, count: int, index: np.ndarray, values: np.ndarray, bounds: bool) -> int:
        """A VEC3 float accessor of `count` zeros overridden at `index` (no bufferView)."""
        acc: dict = {"componentType": FLOAT, "count": count, "type": "VEC3"}
        vals = np.ascontiguousarray(values, np.float32)
        if len(index):
            itype = USHORT if count <= 65535 else UINT
            acc["sparse"] = {
                "count": int(len(index)),
                "indices": {"bufferView": self.view(index.astype(_NP[itype]).tobytes()),
                            "componentType": itype},
                "values": {"bufferView": self.view(vals.tobytes())},
            }  # fmt: skip
        if bounds:
            lo = vals.min(axis=0) if len(vals) else np.zeros(3, np.float32)
            hi = vals.max(axis=0) if len(vals) else np.zeros(3, np.float32)
            if len(index) < count:
                lo, hi = np.minimum(lo, 0), np.maximum(hi, 0)
            acc["min"], acc["max"] = lo.tolist(), hi.tolist()
        self.accessors.append(acc)
        return len(self.accessors) - 1

    def binary(self) -> bytes:
        return b"".join(self.chunks)


def _trs(m: np.ndarray) -> dict:
    """glTF node TRS from an affine 4x4 (no shear), omitting identity parts."""
    out: dict = {}
    t = m[:3, 3].astype(np.float64)
    basis = m[:3, :3].astype(np.float64)
    scale = np.linalg.norm(basis, axis=0)
    if np.linalg.det(basis) < 0:
        scale[0] = -scale[0]
    r = basis / np.where(scale == 0, 1.0, scale)
    w = np.sqrt(max(0.0, 1 + r[0, 0] + r[1, 1] + r[2, 2])) / 2
    x = np.copysign(np.sqrt(max(0.0, 1 + r[0, 0] - r[1, 1] - r[2, 2])) / 2, r[2, 1] - r[1, 2])
    y = np.copysign(np.sqrt(max(0.0, 1 - r[0, 0] + r[1, 1] - r[2, 2])) / 2, r[0, 2] - r[2, 0])
    z = np.copysign(np.sqrt(max(0.0, 1 - r[0, 0] - r[1, 1] + r[2, 2])) / 2, r[1, 0] - r[0, 1])
    q = np.array([x, y, z, w])
    q /= np.linalg.norm(q)
    if np.any(np.abs(t) > 0):
        out["translation"] = t.tolist()
    if not np.allclose(q, [0, 0, 0, 1], atol=1e-7):
        out["rotation"] = q.tolist()
    if not np.allclose(scale, 1.0, atol=1e-7):
        out["scale"] = scale.tolist()
    return out


def _texture_transform(uv: np.ndarray) -> dict | None:
    """KHR_texture_transform (offset, rotation, scale) for a 2x3 affine, None if identity."""
    if np.allclose(uv, [[1, 0, 0], [0, 1, 0]], atol=1e-7):
        return None
    rotation = float(np.arctan2(-uv[1, 0], uv[0, 0]))
    sx = float(np.hypot(uv[0, 0], uv[1, 0]))
    sy = float(uv[0, 1] * np.sin(rotation) + uv[1, 1] * np.cos(rotation))
    return {"offset": [float(uv[0, 2]), float(uv[1, 2])], "rotation": rotation,
            "scale": [sx, sy]}  # fmt: skip


def _materials(asset: AvatarAsset, textures: list[int]) -> tuple[list[dict], set[str]]:
    mats, used = [], set()
    m = asset.materials
    for i, name in enumerate(m.name):
        pbr: dict = {"baseColorFactor": [float(c) for c in m.base_color[i]],
                     "metallicFactor": 0.0, "roughnessFactor": 1.0}  # fmt: skip
        if m.texture[i] >= 0:
            info: dict = {"index": textures[int(m.texture[i])]}
            transform = _texture_transform(m.uv_transform[i])
            if transform is not None:
                info["extensions"] = {"KHR_texture_transform": transform}
                used.add("KHR_texture_transform")
            pbr["baseColorTexture"] = info
        mode = AlphaMode(int(m.alpha_mode[i]))
        mat: dict = {"name": name, "pbrMetallicRoughness": pbr, "alphaMode": mode.name,
                     "doubleSided": bool(m.double_sided[i])}  # fmt: skip
        if mode == AlphaMode.MASK:
            mat["alphaCutoff"] = float(m.alpha_cutoff[i])
        shading = Shading(int(m.shading[i]))
        if shading == Shading.UNLIT:
            mat["extensions"] = {"KHR_materials_unlit": {}}
            used.add("KHR_materials_unlit")
        elif shading == Shading.MTOON:
            mat["extensions"] = {
                "VRMC_materials_mtoon": {
                    "specVersion": "1.0",
                    "shadeColorFactor": [float(c) for c in m.shade_color[i]],
                    "shadingToonyFactor": float(m.shading_toony[i]),
                    "shadingShiftFactor": float(m.shading_shift[i]),
                    "renderQueueOffsetNumber": int(m.render_queue[i]),
                }
            }
            used.add("VRMC_materials_mtoon")
        mats.append(mat)
    return mats, used


def _expressions_extra(asset: AvatarAsset) -> dict:
    return {
        "humanoid": dict(asset.humanoid),
        "expressions": [
            {"name": e.name, "binds": [[int(t), float(w)] for t, w in e.binds],
             "isBinary": e.is_binary, "preset": e.preset,
             "overrideBlink": e.override_blink.name.lower(),
             "overrideMouth": e.override_mouth.name.lower(),
             "overrideLookAt": e.override_look_at.name.lower()}
            for e in asset.expressions
        ],
    }  # fmt: skip


def to_glb_bytes(asset: AvatarAsset, *, sparse_morphs: bool = True) -> bytes:
    """The asset as GLB bytes; `sparse_morphs=False` writes dense morph accessors."""
    asset.validate()
    b = _Builder()
    n_vert = asset.vertex_count
    n_joint = len(asset.joint_names)
    joint_type = UBYTE if n_joint <= 256 else USHORT

    images, textures = [], []
    for tex in asset.textures:
        png = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(tex, np.uint8), "RGBA").save(png, "PNG")
        images.append({"bufferView": b.view(png.getvalue()), "mimeType": "image/png"})
        textures.append(len(textures))
    materials, ext_used = _materials(asset, textures)

    # Morph entries grouped by target, each in increasing vertex order (CSR is by vertex).
    entry_vertex = np.repeat(np.arange(n_vert), np.diff(asset.morph_offsets))
    by_target = np.argsort(asset.morph_target, kind="stable")
    starts = np.searchsorted(asset.morph_target[by_target], np.arange(len(asset.target_names) + 1))

    primitives = []
    for mat in range(len(asset.materials)):
        tri = asset.triangles[asset.triangle_material == mat]
        if len(tri) == 0:
            continue
        used = np.unique(tri)
        local = np.full(n_vert, -1, np.int64)
        local[used] = np.arange(len(used))
        weights = asset.skin_weights[used].astype(np.float32)
        weights /= np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
        attrs = {
            "POSITION": b.accessor(asset.positions[used], FLOAT, ARRAY_BUFFER, bounds=True),
            "NORMAL": b.accessor(asset.normals[used], FLOAT, ARRAY_BUFFER),
            "TEXCOORD_0": b.accessor(asset.uvs[used], FLOAT, ARRAY_BUFFER),
            "JOINTS_0": b.accessor(asset.skin_joints[used], joint_type, ARRAY_BUFFER),
            "WEIGHTS_0": b.accessor(weights, FLOAT, ARRAY_BUFFER),
        }
        index_type = USHORT if len(used) < 65535 else UINT
        prim: dict = {
            "attributes": attrs,
            "indices": b.accessor(local[tri].ravel(), index_type, ELEMENT_ARRAY_BUFFER),
            "material": mat,
            "mode": 4,
        }
        targets = []
        for t in range(len(asset.target_names)):
            sel = by_target[starts[t] : starts[t + 1]]
            lv = local[entry_vertex[sel]]
            keep = lv >= 0
            lv, sel = lv[keep], sel[keep]
            dpos, dnor = asset.morph_dpos[sel], asset.morph_dnormal[sel]
            if sparse_morphs:
                targets.append({"POSITION": b.sparse_vec3(len(used), lv, dpos, True),
                                "NORMAL": b.sparse_vec3(len(used), lv, dnor, False)})  # fmt: skip
            else:
                dense_p = np.zeros((len(used), 3), np.float32)
                dense_n = np.zeros((len(used), 3), np.float32)
                dense_p[lv], dense_n[lv] = dpos, dnor
                targets.append({"POSITION": b.accessor(dense_p, FLOAT, ARRAY_BUFFER, True),
                                "NORMAL": b.accessor(dense_n, FLOAT, ARRAY_BUFFER)})  # fmt: skip
        if targets:
            prim["targets"] = targets
        primitives.append(prim)

    mesh: dict = {"name": asset.name, "primitives": primitives}
    if len(asset.target_names):
        mesh["weights"] = [float(w) for w in asset.default_weights]
        mesh["extras"] = {"targetNames": list(asset.target_names)}

    nodes = []
    for j, name in enumerate(asset.joint_names):
        node = {"name": name, **_trs(asset.joint_rest_local[j])}
        children = np.nonzero(asset.joint_parent == j)[0]
        if len(children):
            node["children"] = children.tolist()
        nodes.append(node)
    inverse_bind = np.linalg.inv(asset.joint_rest_world.astype(np.float64))
    skin = {
        "joints": list(range(n_joint)),
        # glTF stores matrices column-major.
        "inverseBindMatrices": b.accessor(inverse_bind.transpose(0, 2, 1).reshape(-1, 16), FLOAT),
    }
    roots = np.nonzero(asset.joint_parent < 0)[0].tolist()
    if roots:
        skin["skeleton"] = roots[0]
    mesh_node = {"name": asset.name, "mesh": 0}
    if n_joint:
        mesh_node["skin"] = 0
    nodes.append(mesh_node)

    doc: dict = {
        "asset": {"version": "2.0", "generator": "avatarfarm glb_export"},
        "scene": 0,
        "scenes": [{"name": asset.name, "nodes": roots + [len(nodes) - 1]}],
        "nodes": nodes,
        "meshes": [mesh],
        "materials": materials,
        "accessors": b.accessors,
        "bufferViews": b.buffer_views,
        "buffers": [{"byteLength": b.length}],
        "extras": {"avatarfarm": _expressions_extra(asset)},
    }
    if n_joint:
        doc["skins"] = [skin]
    if images:
        doc["images"] = images
        doc["samplers"] = [{"magFilter": 9729, "minFilter": 9987, "wrapS": 10497, "wrapT": 10497}]
        doc["textures"] = [{"source": i, "sampler": 0} for i in range(len(images))]
    if ext_used:
        doc["extensionsUsed"] = sorted(ext_used)
    if asset.meta:
        doc["asset"]["extras"] = json.loads(json.dumps(asset.meta, default=str))
    return _pack(doc, b.binary())


def _pack(doc: dict, binary: bytes) -> bytes:
    """GLB container: 12-byte header, JSON chunk (space padded), BIN chunk (zero padded)."""
    text = json.dumps(doc, separators=(",", ":")).encode()
    text += b" " * ((-len(text)) % 4)
    binary += b"\0" * ((-len(binary)) % 4)
    total = 12 + 8 + len(text) + 8 + len(binary)
    return b"".join(
        [
            struct.pack("<III", 0x46546C67, 2, total),
            struct.pack("<II", len(text), 0x4E4F534A),
            text,
            struct.pack("<II", len(binary), 0x004E4942),
            binary,
        ]
    )


def export_glb(
    asset: AvatarAsset, path_or_file: str | PathLike | BinaryIO, *, sparse_morphs: bool = True
) -> None:
    """Write the asset as a .glb file (a path or a binary file object)."""
    data = to_glb_bytes(asset, sparse_morphs=sparse_morphs)
    if hasattr(path_or_file, "write"):
        path_or_file.write(data)  # type: ignore[union-attr]
        return
    with open(path_or_file, "wb") as f:  # type: ignore[arg-type]
        f.write(data)
