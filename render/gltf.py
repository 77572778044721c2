"""Load glTF 2.0, GLB, VRM 0.x and VRM 1.0 avatars into the flat `AvatarAsset` form.

`load_avatar` is the one entry point. Bad input of any kind ends in a single `AssetError`
whose message names the file and the problem; limits (`AssetLimits`) are checked from
declared sizes before memory is allocated.
"""

from __future__ import annotations

import os

import numpy as np

from .asset import AssetError, AvatarAsset, Expression
from .framing import suggest_cameras
from .gltf_io import AssetLimits, Document, open_source
from .gltf_material import MaterialTable
from .gltf_mesh import Geometry, GeometryBuilder, TargetLayout, check_sizes, plan_targets
from .gltf_scene import SceneGraph, build_scene
from .vocabulary import canonical_name
from .vrm import VrmData, turn_vrm0, vrm0, vrm0_materials, vrm1, vrm1_materials, vrm_format

__all__ = ["AssetLimits", "load_avatar"]


def name_expressions(layout: TargetLayout, defined: list[Expression]) -> list[Expression]:
    """One expression per vocabulary name that morph targets carry, unless already defined.

    ARKit-named targets (`eyeBlinkLeft`, `EyeBlink_L`, ...) thus drive ARKit expressions
    directly; every target with that canonical name is bound with weight 1.
    """
    taken = {e.name for e in defined}
    found: dict[str, list[tuple[int, float]]] = {}
    for t, target_name in enumerate(layout.names):
        canon = canonical_name(target_name)
        if canon is not None and canon not in taken:
            found.setdefault(canon, []).append((t, 1.0))
    return [Expression(name=n, binds=b, preset=True) for n, b in found.items()]


def _vrm(doc: Document, kind: str, graph: SceneGraph, layout: TargetLayout) -> VrmData:
    if kind == "vrm1":
        return vrm1(doc, graph, layout)
    if kind == "vrm0":
        return vrm0(doc, graph, layout)
    return VrmData(meta=_gltf_meta(doc))


def _gltf_meta(doc: Document) -> dict:
    asset = doc.json.get("asset", {})
    extras = asset.get("extras") if isinstance(asset.get("extras"), dict) else {}
    meta = {k: v for k, v in {**asset, **extras}.items() if isinstance(v, str | int | float)}
    if "copyright" in meta:
        meta.setdefault("license", meta["copyright"])
    return meta


def _build(doc: Document, name: str) -> AvatarAsset:
    kind = vrm_format(doc)
    graph = build_scene(doc)
    check_sizes(doc, graph)
    layout = plan_targets(doc, graph)
    table = MaterialTable(doc)
    if kind == "vrm0":
        vrm0_materials(doc, table)
    vrm1_materials(doc, table)
    geometry: Geometry = GeometryBuilder(doc, graph, layout, table).build()
    if len(geometry.triangles) == 0:
        raise AssetError("the scene has no triangle meshes")
    vrm = _vrm(doc, kind, graph, layout)
    if kind == "vrm0":
        turn_vrm0(geometry, graph.local, graph.world)
    expressions = vrm.expressions + name_expressions(layout, vrm.expressions)
    world = graph.world.astype(np.float32)
    asset = AvatarAsset(
        name=name,
        format=kind,
        positions=geometry.positions,
        normals=geometry.normals,
        uvs=geometry.uvs,
        triangles=geometry.triangles,
        triangle_material=geometry.triangle_material,
        target_names=list(layout.names),
        target_mesh=np.array(layout.mesh, np.int32),
        default_weights=np.array(layout.default_weights, np.float32),
        morph_offsets=geometry.morph_offsets,
        morph_target=geometry.morph_target,
        morph_dpos=geometry.morph_dpos,
        morph_dnormal=geometry.morph_dnormal,
        skin_joints=geometry.skin_joints,
        skin_weights=geometry.skin_weights,
        joint_names=graph.names,
        joint_parent=graph.parent,
        joint_rest_local=graph.local.astype(np.float32),
        joint_rest_world=world,
        materials=table.pack(),
        textures=table.textures.images,
        expressions=expressions,
        humanoid=vrm.humanoid,
        cameras=suggest_cameras(geometry.positions, vrm.humanoid, world),
        meta=vrm.meta,
    )
    asset.validate()
    return asset


def load_avatar(
    source: str | os.PathLike | bytes,
    *,
    name: str | None = None,
    limits: AssetLimits | None = None,
) -> AvatarAsset:
    """Load a .glb, .vrm or .gltf file (or its bytes) as an AvatarAsset; raises AssetError."""
    label = name or (os.fspath(source) if isinstance(source, str | os.PathLike) else "avatar")
    try:
        doc, default_name = open_source(source, limits or AssetLimits())
        return _build(doc, name or default_name)
    except AssetError as exc:
        raise AssetError(f"{label}: {exc}") from None
    except MemoryError:
        raise AssetError(f"{label}: out of memory while loading") from None
    except Exception as exc:  # a check we missed must still surface as a clear AssetError
        raise AssetError(f"{label}: cannot load ({type(exc).__name__}: {exc})") from exc
