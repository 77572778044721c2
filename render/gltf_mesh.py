"""Mesh instances of the scene flattened into world-space rest-pose arrays.

Each primitive of each mesh instance is decoded, its rest pose skinned (or its node
transform applied) so that skinning at rest is the identity, and its morph deltas moved
into the same space and stored sparse (CSR by vertex). Targets are numbered per glTF mesh:
all primitives and all instances of a mesh share that mesh's flat targets.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .gltf_accessors import accessor_info, read_floats, read_ints
from .gltf_io import Document, as_float, as_int, fail, get_dict, get_int, get_list
from .gltf_scene import SceneGraph

MODE_NAMES = {0: "POINTS", 1: "LINES", 2: "LINE_LOOP", 3: "LINE_STRIP"}
TRIANGLE_MODES = (4, 5, 6)
MAX_COORDINATE = 1e6  # larger rest positions would overflow camera and projection math


class MaterialRows(Protocol):
    """What geometry needs from the material table: a row and its UV set per primitive."""

    def row(self, material: object, where: str) -> int: ...

    def texcoord(self, row: int) -> int: ...


@dataclass
class TargetLayout:
    """Flat morph targets: one per (glTF mesh, target) of the meshes in the scene."""

    offset: dict[int, int] = field(default_factory=dict)  # mesh -> first flat target
    count: dict[int, int] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)
    mesh: list[int] = field(default_factory=list)
    default_weights: list[float] = field(default_factory=list)

    def flat(self, mesh: int, index: int) -> int | None:
        """The flat target of (mesh, index), or None when no such target is in the scene."""
        if mesh not in self.offset or not 0 <= index < self.count[mesh]:
            return None
        return self.offset[mesh] + index


@dataclass
class Geometry:
    positions: np.ndarray
    normals: np.ndarray
    uvs: np.ndarray
    triangles: np.ndarray
    triangle_material: np.ndarray
    skin_joints: np.ndarray
    skin_weights: np.ndarray
    morph_offsets: np.ndarray
    morph_target: np.ndarray
    morph_dpos: np.ndarray
    morph_dnormal: np.ndarray


@dataclass
class _Part:
    positions: np.ndarray
    normals: np.ndarray
    uvs: np.ndarray
    triangles: np.ndarray
    material: int
    joints: np.ndarray
    weights: np.ndarray
    morph_vertex: np.ndarray
    morph_target: np.ndarray
    morph_dpos: np.ndarray
    morph_dnormal: np.ndarray


@dataclass
class _Instance:
    joint: int
    node: dict
    mesh_index: int
    mesh: dict


def mesh_instances(doc: Document, graph: SceneGraph) -> Iterator[_Instance]:
    nodes = doc.items("nodes")
    for j, n in enumerate(graph.nodes):
        if nodes[n].get("mesh") is not None:
            m = nodes[n]["mesh"]
            yield _Instance(j, nodes[n], m, doc.item("meshes", m, f"nodes[{n}].mesh"))


def _primitives(mesh_index: int, mesh: dict) -> Iterator[tuple[dict, str]]:
    where = f"meshes[{mesh_index}]"
    prims = get_list(mesh, "primitives", where)
    if not prims:
        fail(f"{where} has no primitives")
    for p, prim in enumerate(prims):
        if not isinstance(prim, dict):
            fail(f"{where}.primitives[{p}] must be an object")
        yield prim, f"{where}.primitives[{p}]"


def _mode(prim: dict, where: str) -> int:
    mode = get_int(prim, "mode", where, default=4)
    if mode in MODE_NAMES:
        fail(f"{where}: mode {mode} ({MODE_NAMES[mode]}) is not supported, only triangles")
    if mode not in TRIANGLE_MODES:
        fail(f"{where}: unknown primitive mode {mode}")
    return mode


def check_sizes(doc: Document, graph: SceneGraph) -> None:
    """Reject oversized scenes from accessor counts alone, before decoding anything."""
    vertices = triangles = 0
    for inst in mesh_instances(doc, graph):
        for prim, where in _primitives(inst.mesh_index, inst.mesh):
            attributes = get_dict(prim, "attributes", where, required=True)
            if "POSITION" not in attributes:
                fail(f"{where}: no POSITION attribute")
            count = accessor_info(doc, attributes["POSITION"], where).count
            if prim.get("indices") is not None:
                count_i = accessor_info(doc, prim["indices"], where).count
            else:
                count_i = count
            vertices += count
            triangles += count_i // 3 if _mode(prim, where) == 4 else max(count_i - 2, 0)
    limits = doc.limits
    if vertices > limits.max_vertices:
        fail(f"{vertices} vertices exceed max_vertices ({limits.max_vertices})")
    if triangles > limits.max_triangles:
        fail(f"{triangles} triangles exceed max_triangles ({limits.max_triangles})")


def _target_names(mesh: dict, count: int, where: str) -> list[str]:
    """mesh.extras.targetNames, else a primitive's extras.targetNames (VRM exporters)."""
    candidates = [get_dict(mesh, "extras", where).get("targetNames")]
    for prim in get_list(mesh, "primitives", where):
        if isinstance(prim, dict):
            candidates.append(get_dict(prim, "extras", where).get("targetNames"))
    names = next((c for c in candidates if isinstance(c, list) and c), [])
    return [
        names[k] if k < len(names) and isinstance(names[k], str) else f"target{k}"
        for k in range(count)
    ]


def _weights(owner: dict, count: int, where: str) -> list[float] | None:
    values = get_list(owner, "weights", where)
    if not values:
        return None
    if len(values) != count:
        fail(f"{where}.weights has {len(values)} entries for {count} morph targets")
    weights = [as_float(v, f"{where}.weights") for v in values]
    if any(abs(w) > 1e3 for w in weights):
        fail(f"{where}.weights has absurd values (beyond +-1000)")
    return weights


def plan_targets(doc: Document, graph: SceneGraph) -> TargetLayout:
    layout = TargetLayout()
    first_node: dict[int, dict] = {}
    for inst in mesh_instances(doc, graph):
        first_node.setdefault(inst.mesh_index, inst.node)
    for m in sorted(first_node):
        mesh = doc.item("meshes", m, "nodes")
        where = f"meshes[{m}]"
        count = max(len(get_list(p, "targets", w)) for p, w in _primitives(m, mesh))
        weights = _weights(first_node[m], count, "node") or _weights(mesh, count, where)
        layout.offset[m] = len(layout.names)
        layout.count[m] = count
        layout.names += _target_names(mesh, count, where)
        layout.mesh += [m] * count
        layout.default_weights += weights or [0.0] * count
    return layout


# --- per-primitive decoding ---------------------------------------------------------------


def _attribute(
    doc: Document, attributes: dict, name: str, where: str, types: tuple[str, ...], count: int
) -> np.ndarray | None:
    if attributes.get(name) is None:
        return None
    values = read_floats(doc, attributes[name], f"{where}.{name}", types, count)
    if len(values) != count:
        fail(f"{where}: {name} has {len(values)} entries, POSITION has {count}")
    return values


def _triangles(doc: Document, prim: dict, count: int, where: str) -> np.ndarray:
    """[T,3] int64 counter-clockwise triangles; strips and fans converted per the spec."""
    mode = _mode(prim, where)
    if prim.get("indices") is None:
        idx = np.arange(count, dtype=np.int64)
    else:
        limit = 3 * doc.limits.max_triangles + 2
        idx = read_ints(doc, prim["indices"], f"{where}.indices", ("SCALAR",), limit)[:, 0]
        if idx.size and int(idx.max()) >= count:
            fail(f"{where}: index {int(idx.max())} is beyond the {count} vertices")
    if mode == 4:
        return idx[: len(idx) // 3 * 3].reshape(-1, 3)
    k = np.arange(max(len(idx) - 2, 0))
    if mode == 5:  # p_i = {v_i, v_(i+1+i%2), v_(i+2-i%2)}
        return np.stack([idx[k], idx[k + 1 + k % 2], idx[k + 2 - k % 2]], axis=1)
    return np.stack([idx[k + 1], idx[k + 2], np.full_like(k, idx[0] if len(idx) else 0)], axis=1)


def normal_matrices(linear: np.ndarray) -> np.ndarray:
    """Inverse-transpose of each 3x3 (via cofactors), scaled to act like a rotation.

    Works for singular matrices too (a zero-weight or zero-scale bone), where inv() would fail.
    """
    r0, r1, r2 = linear[:, 0], linear[:, 1], linear[:, 2]
    cof = np.stack([np.cross(r1, r2), np.cross(r2, r0), np.cross(r0, r1)], axis=1)
    det = np.einsum("vi,vi->v", r0, cof[:, 0])
    size = np.abs(det) ** (2.0 / 3.0)
    frobenius = np.linalg.norm(cof, axis=(1, 2)) / np.sqrt(3.0)
    scale = np.where(size > 1e-12, np.sign(det) / np.maximum(size, 1e-30), 0.0)
    scale = np.where(size > 1e-12, scale, 1.0 / np.maximum(frobenius, 1e-30))
    return cof * scale[:, None, None]


def _unit(v: np.ndarray, fallback: tuple[float, float, float] = (0.0, 0.0, 1.0)) -> np.ndarray:
    length = np.linalg.norm(v, axis=1, keepdims=True)
    return np.where(length > 1e-12, v / np.maximum(length, 1e-30), np.array(fallback))


def area_normals(positions: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Vertex normals as the area-weighted sum of adjacent face normals."""
    a, b, c = (positions[triangles[:, i]] for i in range(3))
    face = np.cross(b - a, c - a)  # length = twice the area
    flat = triangles.reshape(-1)
    out = np.stack(
        [np.bincount(flat, np.repeat(face[:, i], 3), len(positions)) for i in range(3)], axis=1
    )
    return _unit(out)


@dataclass
class _Skin:
    palette: np.ndarray  # [K,3,4] float64: joint world @ inverse bind, rest pose
    joints: np.ndarray  # [K] int64 joint index of each skin joint


class Skinning:
    """Rest-pose bindings of primitives: skinned through a skin, or rigid to their node."""

    def __init__(self, doc: Document, graph: SceneGraph) -> None:
        self.doc = doc
        self.graph = graph
        self._skins: dict[int, _Skin] = {}

    def skin(self, index: object, where: str) -> _Skin:
        spec = self.doc.item("skins", index, where)
        key = int(index)  # type: ignore[call-overload]
        if key not in self._skins:
            self._skins[key] = self._load(spec, f"skins[{key}]")
        return self._skins[key]

    def _load(self, spec: dict, where: str) -> _Skin:
        nodes = get_list(spec, "joints", where)
        if not nodes:
            fail(f"{where} has no joints")
        joints = []
        for value in nodes:
            node = as_int(value, f"{where}.joints", 0)
            if node not in self.graph.joint_of:
                fail(f"{where}: joint nodes[{node}] is not part of the scene")
            joints.append(self.graph.joint_of[node])
        k = len(joints)
        if spec.get("inverseBindMatrices") is None:
            ibm = np.broadcast_to(np.eye(4), (k, 4, 4))
        else:
            raw = read_floats(self.doc, spec["inverseBindMatrices"], where, ("MAT4",), k)
            if len(raw) < k:
                fail(f"{where}: {len(raw)} inverseBindMatrices for {k} joints")
            ibm = raw[:k].astype(np.float64).reshape(k, 4, 4).transpose(0, 2, 1)
        palette = (self.graph.world[joints] @ ibm)[:, :3, :]
        return _Skin(palette, np.array(joints, np.int64))

    def bind(
        self, inst: _Instance, attributes: dict, count: int, where: str
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rest matrix per vertex [V,3,4] (or [1,3,4] when rigid), joints [V,4], weights [V,4]."""
        rigid = self.graph.world[inst.joint][:3]
        joints = np.full((count, 4), inst.joint, np.int32)
        weights = np.zeros((count, 4), np.float32)
        weights[:, 0] = 1.0
        if inst.node.get("skin") is None or attributes.get("JOINTS_0") is None:
            return rigid[None], joints, weights
        skin = self.skin(inst.node["skin"], where)
        j4, w4 = self._influences(attributes, count, len(skin.joints), where)
        matrices = np.zeros((count, 3, 4))
        for i in range(4):  # per influence, so memory stays [V,3,4]
            matrices += w4[:, i, None, None] * skin.palette[j4[:, i]]
        unbound = w4.sum(axis=1) <= 0.0  # no weight at all: keep the vertex on its node
        matrices[unbound] = rigid
        joints[~unbound] = skin.joints[j4[~unbound]]
        weights[~unbound] = w4[~unbound]
        return matrices, joints, weights

    def _influences(
        self, attributes: dict, count: int, skin_size: int, where: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """The 4 largest influences of JOINTS_n/WEIGHTS_n, renormalised to sum to 1."""
        j_sets, w_sets, n = [], [], 0
        while (
            attributes.get(f"JOINTS_{n}") is not None and attributes.get(f"WEIGHTS_{n}") is not None
        ):
            j = read_ints(
                self.doc, attributes[f"JOINTS_{n}"], f"{where}.JOINTS_{n}", ("VEC4",), count
            )
            w = _attribute(self.doc, attributes, f"WEIGHTS_{n}", where, ("VEC4",), count)
            if len(j) != count:
                fail(f"{where}: JOINTS_{n} has {len(j)} entries, POSITION has {count}")
            j_sets.append(j)
            w_sets.append(np.maximum(w, 0.0))  # type: ignore[arg-type]
            n += 1
        if not j_sets:
            fail(f"{where}: JOINTS_0 without WEIGHTS_0")
        j_all = np.concatenate(j_sets, axis=1)
        w_all = np.concatenate(w_sets, axis=1).astype(np.float64)
        bad = (j_all >= skin_size) & (w_all > 0)
        if bad.any():
            fail(
                f"{where}: joint index {int(j_all[bad].max())} beyond the skin's {skin_size} joints"
            )
        j_all = np.where(j_all < skin_size, j_all, 0)
        top = np.argsort(-w_all, axis=1, kind="stable")[:, :4]
        w4 = np.take_along_axis(w_all, top, axis=1)
        j4 = np.take_along_axis(j_all, top, axis=1)
        total = w4.sum(axis=1, keepdims=True)
        w4 = np.where(total > 0, w4 / np.where(total > 0, total, 1.0), 0.0)
        return j4, w4


@dataclass
class _World:
    positions: np.ndarray  # [V,3]
    normals: np.ndarray  # [V,3] unit
    linear: np.ndarray  # [V,3,3] rest-pose linear part, moves position deltas
    normal_matrix: np.ndarray  # [V,3,3] moves normals and normal deltas


def _to_world(
    matrices: np.ndarray, local: np.ndarray, normals: np.ndarray | None, triangles: np.ndarray
) -> _World:
    """Apply per-vertex rest matrices; normals are computed here when the file has none."""
    count = len(local)
    normal_m = np.broadcast_to(normal_matrices(matrices[:, :, :3]), (count, 3, 3))
    matrices = np.broadcast_to(matrices, (count, 3, 4))
    linear = matrices[:, :, :3]
    positions = np.einsum("vij,vj->vi", linear, local) + matrices[:, :, 3]
    if normals is None:
        world_normals = area_normals(positions, triangles)
    else:
        world_normals = _unit(np.einsum("vij,vj->vi", normal_m, normals))
    return _World(positions, world_normals, linear, normal_m)


class GeometryBuilder:
    """Decodes and concatenates every primitive instance of the scene."""

    def __init__(self, doc: Document, graph: SceneGraph, layout: TargetLayout, rows: MaterialRows):
        self.doc = doc
        self.graph = graph
        self.layout = layout
        self.rows = rows
        self.skinning = Skinning(doc, graph)
        self.deltas = 0

    def build(self) -> Geometry:
        parts = [
            self._part(inst, prim, where)
            for inst in mesh_instances(self.doc, self.graph)
            for prim, where in _primitives(inst.mesh_index, inst.mesh)
        ]
        geometry = _concatenate(parts)
        if len(geometry.positions) and np.abs(geometry.positions).max() > MAX_COORDINATE:
            fail(f"vertex positions beyond +-{MAX_COORDINATE:g} (absurd scale or transforms)")
        return geometry

    def _part(self, inst: _Instance, prim: dict, where: str) -> _Part:
        attributes = get_dict(prim, "attributes", where, required=True)
        doc = self.doc
        limit = doc.limits.max_vertices
        local = read_floats(doc, attributes.get("POSITION"), f"{where}.POSITION", ("VEC3",), limit)
        count = len(local)
        triangles = _triangles(doc, prim, count, where)
        row = self.rows.row(prim.get("material"), where)
        uvs = _attribute(
            doc, attributes, f"TEXCOORD_{self.rows.texcoord(row)}", where, ("VEC2",), count
        )
        normals = _attribute(doc, attributes, "NORMAL", where, ("VEC3",), count)
        matrices, joints, weights = self.skinning.bind(inst, attributes, count, where)
        world = _to_world(matrices, local, normals, triangles)
        morph = self._morphs(inst, prim, count, world.linear, world.normal_matrix, where)
        return _Part(
            world.positions, world.normals, np.zeros((count, 2)) if uvs is None else uvs,
            triangles, row, joints, weights, *morph,
        )  # fmt: skip

    def _morphs(
        self,
        inst: _Instance,
        prim: dict,
        count: int,
        linear: np.ndarray,
        normal_m: np.ndarray,
        where: str,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Non-zero deltas of each target, moved by the vertex's rest-pose linear part."""
        vertex, target, dpos, dnormal = [], [], [], []
        for k, spec in enumerate(get_list(prim, "targets", where)):
            here = f"{where}.targets[{k}]"
            if not isinstance(spec, dict):
                fail(f"{here} must be an object")
            dp = _attribute(self.doc, spec, "POSITION", here, ("VEC3",), count)
            dn = _attribute(self.doc, spec, "NORMAL", here, ("VEC3",), count)
            dp = np.zeros((count, 3), np.float32) if dp is None else dp
            dn = np.zeros((count, 3), np.float32) if dn is None else dn
            idx = np.flatnonzero((dp != 0).any(axis=1) | (dn != 0).any(axis=1))
            self.deltas += len(idx)
            if self.deltas > self.doc.limits.max_morph_deltas:
                fail(
                    f"more than max_morph_deltas ({self.doc.limits.max_morph_deltas}) morph deltas"
                )
            vertex.append(idx)
            target.append(np.full(len(idx), self.layout.offset[inst.mesh_index] + k))
            dpos.append(np.einsum("vij,vj->vi", linear[idx], dp[idx]))
            dnormal.append(np.einsum("vij,vj->vi", normal_m[idx], dn[idx]))
        if not vertex:
            empty = np.zeros((0, 3))
            return np.zeros(0, np.int64), np.zeros(0, np.int64), empty, empty
        return (
            np.concatenate(vertex),
            np.concatenate(target),
            np.concatenate(dpos),
            np.concatenate(dnormal),
        )


def _concatenate(parts: list[_Part]) -> Geometry:
    starts = np.cumsum([0] + [len(p.positions) for p in parts])
    total = int(starts[-1])

    def cat(name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        arrays = [getattr(p, name) for p in parts]
        if not arrays:
            return np.zeros(shape, dtype)
        with np.errstate(over="ignore", invalid="ignore"):
            out = np.concatenate(arrays).astype(dtype)
        if out.dtype.kind == "f" and not np.isfinite(out).all():
            fail(f"vertex {name} overflow to non-finite values (absurd transforms or data)")
        return out

    triangles = [p.triangles + s for p, s in zip(parts, starts, strict=False)]
    morph_vertex = [p.morph_vertex + s for p, s in zip(parts, starts, strict=False)]
    materials = [np.full(len(p.triangles), p.material) for p in parts]
    vertex = np.concatenate(morph_vertex) if parts else np.zeros(0, np.int64)
    target = cat("morph_target", (0,), np.int32)
    order = np.lexsort((target, vertex))
    offsets = np.zeros(total + 1, np.int32)
    offsets[1:] = np.cumsum(np.bincount(vertex, minlength=total))
    return Geometry(
        positions=cat("positions", (0, 3), np.float32),
        normals=cat("normals", (0, 3), np.float32),
        uvs=cat("uvs", (0, 2), np.float32),
        triangles=np.concatenate(triangles).astype(np.int32)
        if parts
        else np.zeros((0, 3), np.int32),
        triangle_material=np.concatenate(materials).astype(np.int32)
        if parts
        else np.zeros(0, np.int32),
        skin_joints=cat("joints", (0, 4), np.int32),
        skin_weights=cat("weights", (0, 4), np.float32),
        morph_offsets=offsets,
        morph_target=target[order],
        morph_dpos=cat("morph_dpos", (0, 3), np.float32)[order],
        morph_dnormal=cat("morph_dnormal", (0, 3), np.float32)[order],
    )


def node_mesh(doc: Document, node: object, where: str) -> int | None:
    """The mesh index of a node (VRM 1.0 binds name nodes), or None."""
    spec = doc.item("nodes", node, where)
    mesh = spec.get("mesh")
    return None if mesh is None else as_int(mesh, f"{where}: nodes[{node}].mesh")
