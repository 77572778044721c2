"""The node hierarchy of the chosen scene: joints in topological order with rest matrices.

Every scene node becomes a joint (the contract binds rigid meshes to their own node), in
depth-first pre-order so that a parent's index is always smaller than its children's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .gltf_io import Document, as_int, fail, get_floats, get_int, get_list, get_str


@dataclass
class SceneGraph:
    nodes: list[int]  # [J] glTF node index of each joint
    joint_of: dict[int, int]  # glTF node index -> joint index
    parent: np.ndarray  # [J] int32, -1 for roots
    local: np.ndarray  # [J,4,4] float64
    world: np.ndarray  # [J,4,4] float64
    names: list[str]


def quaternion_matrix(q: np.ndarray) -> np.ndarray:
    """3x3 rotation of a glTF (x, y, z, w) quaternion; identity when it has no length."""
    norm = float(np.linalg.norm(q))
    if norm < 1e-12:
        return np.eye(3)
    x, y, z, w = q / norm
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def node_matrix(node: dict, where: str) -> np.ndarray:
    """Local 4x4 of a node: its column-major `matrix`, else T * R * S."""
    with np.errstate(all="ignore"):  # absurd values end as non-finite, rejected later
        return _node_matrix(node, where)


def _node_matrix(node: dict, where: str) -> np.ndarray:
    if node.get("matrix") is not None:
        return get_floats(node, "matrix", where, (0.0,) * 16).reshape(4, 4).T.copy()
    out = np.eye(4)
    rotation = quaternion_matrix(get_floats(node, "rotation", where, (0.0, 0.0, 0.0, 1.0)))
    out[:3, :3] = rotation * get_floats(node, "scale", where, (1.0, 1.0, 1.0))
    out[:3, 3] = get_floats(node, "translation", where, (0.0, 0.0, 0.0))
    return out


def _parents(doc: Document) -> list[int]:
    """Parent of every node; rejects bad child indices, two parents and cycles."""
    nodes = doc.items("nodes")
    if len(nodes) > doc.limits.max_nodes:
        fail(f"{len(nodes)} nodes exceed max_nodes ({doc.limits.max_nodes})")
    parent = [-1] * len(nodes)
    for i, node in enumerate(nodes):
        for child in get_list(node, "children", f"nodes[{i}]"):
            c = as_int(child, f"nodes[{i}].children", 0, len(nodes) - 1)
            if c == i:
                fail(f"nodes[{i}] is its own child (cyclic node graph)")
            if parent[c] != -1:
                fail(f"nodes[{c}] has two parents (nodes {parent[c]} and {i})")
            parent[c] = i
    _check_acyclic(doc, parent)
    return parent


def _check_acyclic(doc: Document, parent: list[int]) -> None:
    """With one parent each, a node is in a cycle iff walking down from roots misses it."""
    nodes = doc.items("nodes")
    seen = [p == -1 for p in parent]
    stack = [i for i, p in enumerate(parent) if p == -1]
    while stack:
        i = stack.pop()
        for child in get_list(nodes[i], "children", f"nodes[{i}]"):
            if not seen[child]:
                seen[child] = True
                stack.append(child)
    if not all(seen):
        fail(f"cyclic node graph (through nodes[{seen.index(False)}])")


def _scene_roots(doc: Document, parent: list[int]) -> list[int]:
    """Roots of the default scene, else scene 0, else every parentless node."""
    scenes = doc.items("scenes")
    if not scenes:
        return [i for i, p in enumerate(parent) if p == -1]
    index = get_int(doc.json, "scene", "glTF", default=0)
    scene = doc.item("scenes", index, "scene")
    roots: list[int] = []
    for value in get_list(scene, "nodes", f"scenes[{index}]"):
        root = as_int(value, f"scenes[{index}].nodes", 0, len(parent) - 1)
        if parent[root] != -1:
            fail(f"scenes[{index}] lists nodes[{root}], which is not a root node")
        if root not in roots:
            roots.append(root)
    return roots


def build_scene(doc: Document) -> SceneGraph:
    parent_of = _parents(doc)
    nodes = doc.items("nodes")
    order: list[int] = []
    stack = list(reversed(_scene_roots(doc, parent_of)))
    while stack:
        i = stack.pop()
        order.append(i)
        stack.extend(reversed(get_list(nodes[i], "children", f"nodes[{i}]")))
    joint_of = {n: j for j, n in enumerate(order)}
    count = len(order)
    parent = np.array([joint_of.get(parent_of[n], -1) for n in order], np.int32).reshape(count)
    local = np.zeros((count, 4, 4))
    world = np.zeros((count, 4, 4))
    with np.errstate(all="ignore"):
        for j, n in enumerate(order):
            local[j] = node_matrix(nodes[n], f"nodes[{n}]")
            world[j] = local[j] if parent[j] < 0 else world[parent[j]] @ local[j]
    if not np.isfinite(world).all():
        fail("node transforms overflow to non-finite values")
    names = [get_str(nodes[n], "name") or f"node{n}" for n in order]
    return SceneGraph(order, joint_of, parent, local, world, names)
