"""VRM 0.x (`extensions.VRM`) and VRM 1.0 (`extensions.VRMC_vrm`) on top of the glTF loader.

Both versions end up in the same form: VRM 1.0 humanoid bone names, expressions named by
the vocabulary (presets) or by the file (custom), MToon parameters in their 1.0 meaning.

MToon 0.x -> 1.0. In 0.x the lit/shade blend ramps linearly over N.L from `_ShadeShift`
(shade) to `lerp(1, _ShadeShift, _ShadeToony)` (lit). In 1.0 it ramps over N.L +
shadingShift from -1 + toony to 1 - toony, i.e. over N.L from -shift - (1 - toony) to
-shift + (1 - toony). Matching the two ramps' centre and width gives
`toony = 1 - (max - min) / 2` and `shift = -(max + min) / 2`. 0.x colours (`_Color`,
`_ShadeColor`) are Unity gamma-space colours and are converted to linear.

VRM 0.x faces -Z; `turn_vrm0` turns the loaded arrays 180 degrees about Y so it faces +Z.
Joint matrices are conjugated (R M R) rather than left-multiplied, so bones keep their
local axes (a VRM 0.x bone with identity rotation still has identity rotation).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from .asset import AlphaMode, Expression, Override, Shading
from .gltf_io import Document, as_float, fail, get_dict, get_float, get_floats, get_list, get_str
from .gltf_material import MaterialRow, MaterialTable
from .gltf_mesh import Geometry, TargetLayout, node_mesh
from .gltf_scene import SceneGraph
from .vocabulary import VRM0_PRESETS, VRM_PRESETS

log = logging.getLogger(__name__)

# VRM 0.x thumb bones were renamed in 1.0; every other bone name is the same.
VRM0_BONES = {
    f"{side}Thumb{old}": f"{side}Thumb{new}"
    for side in ("left", "right")
    for old, new in (("Proximal", "Metacarpal"), ("Intermediate", "Proximal"))
}
OVERRIDES = {"none": Override.NONE, "block": Override.BLOCK, "blend": Override.BLEND}
ZWRITE_QUEUE = 2501  # Unity queue of transparent-with-ZWrite MToon materials
META_KEYS = {
    "title": ("title", "name"),
    "author": ("author", "authors"),
    "version": ("version",),
    "license": ("licenseName", "licenseUrl", "otherLicenseUrl"),
    "contact": ("contactInformation",),
    "reference": ("reference", "references"),
}


@dataclass
class VrmData:
    humanoid: dict[str, int] = field(default_factory=dict)
    expressions: list[Expression] = field(default_factory=list)
    meta: dict = field(default_factory=dict)


def vrm_format(doc: Document) -> str:
    extensions = get_dict(doc.json, "extensions", "glTF")
    if isinstance(extensions.get("VRMC_vrm"), dict):
        return "vrm1"
    if isinstance(extensions.get("VRM"), dict):
        return "vrm0"
    return "gltf"


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def mtoon0_to_1(toony0: float, shift0: float) -> tuple[float, float]:
    """0.x (_ShadeToony, _ShadeShift) -> 1.0 (shadingToony, shadingShift); see the docstring."""
    lo = shift0
    hi = 1.0 + (shift0 - 1.0) * toony0  # lerp(1, shift, toony)
    toony = float(np.clip(1.0 - (hi - lo) / 2.0, 0.0, 1.0))
    shift = float(np.clip(-(hi + lo) / 2.0, -1.0, 1.0))
    return toony, shift


# --- materials ----------------------------------------------------------------------------


def _mtoon0(row: MaterialRow, props: dict, table: MaterialTable, where: str) -> None:
    floats = get_dict(props, "floatProperties", where)
    vectors = get_dict(props, "vectorProperties", where)

    def number(key: str, default: float) -> float:
        return get_float(floats, key, where, default)

    color = get_floats(vectors, "_Color", where, (1.0, 1.0, 1.0, 1.0))
    row.base_color = np.concatenate([srgb_to_linear(color[:3]), np.clip(color[3:], 0, 1)])
    shade = get_floats(vectors, "_ShadeColor", where, (0.97, 0.81, 0.86, 1.0))
    row.shade_color = srgb_to_linear(shade[:3])
    row.shading_toony, row.shading_shift = mtoon0_to_1(
        number("_ShadeToony", 0.9), number("_ShadeShift", 0.0)
    )
    blend = int(number("_BlendMode", 0.0))
    row.alpha_mode = [AlphaMode.OPAQUE, AlphaMode.MASK, AlphaMode.BLEND, AlphaMode.BLEND][
        min(max(blend, 0), 3)
    ]
    row.alpha_cutoff = number("_Cutoff", 0.5)
    row.double_sided = int(number("_CullMode", 2.0)) == 0
    row.shading = Shading.MTOON
    main = get_dict(props, "textureProperties", where).get("_MainTex")
    if main is not None:
        row.texture = table.textures.index(main, f"{where}._MainTex")
    queue = props.get("renderQueue")
    default = ZWRITE_QUEUE if blend == 3 else {0: 2000, 1: 2450}.get(blend, 3000)
    if queue in (None, -1):
        row.render_queue = default
    else:
        row.render_queue = int(np.clip(as_float(queue, f"{where}.renderQueue"), -1e4, 1e4))


def vrm0_materials(doc: Document, table: MaterialTable) -> None:
    """Apply `materialProperties` (index-aligned with glTF materials) of VRM/MToon shaders."""
    vrm = get_dict(get_dict(doc.json, "extensions", "glTF"), "VRM", "extensions")
    for i, props in enumerate(get_list(vrm, "materialProperties", "VRM")):
        where = f"VRM.materialProperties[{i}]"
        if not isinstance(props, dict) or i >= len(doc.items("materials")):
            continue
        shader = get_str(props, "shader")
        if shader == "VRM/MToon":
            _mtoon0(table.rows[i], props, table, where)
        elif shader.startswith("VRM/Unlit"):
            table.rows[i].shading = Shading.UNLIT


def vrm1_materials(doc: Document, table: MaterialTable) -> None:
    """Read `VRMC_materials_mtoon` of each material (valid in plain glTF files too)."""
    for i, spec in enumerate(doc.items("materials")):
        where = f"materials[{i}]"
        ext = get_dict(get_dict(spec, "extensions", where), "VRMC_materials_mtoon", where)
        if not ext:
            continue
        here = f"{where}.VRMC_materials_mtoon"
        row = table.rows[i]
        row.shading = Shading.MTOON
        row.shade_color = get_floats(ext, "shadeColorFactor", here, (1.0, 1.0, 1.0))
        row.shading_toony = get_float(ext, "shadingToonyFactor", here, 0.9)
        row.shading_shift = get_float(ext, "shadingShiftFactor", here, 0.0)
        offset = int(np.clip(get_float(ext, "renderQueueOffsetNumber", here, 0.0), -9, 9))
        if row.alpha_mode == AlphaMode.BLEND:
            base = ZWRITE_QUEUE if ext.get("transparentWithZWrite") is True else 3000
            row.render_queue = base + offset


# --- humanoid, meta -----------------------------------------------------------------------


def _bone(graph: SceneGraph, humanoid: dict[str, int], name: object, node: object) -> None:
    if isinstance(name, str) and isinstance(node, int) and node in graph.joint_of:
        humanoid[name] = graph.joint_of[node]


def _meta(raw: dict) -> dict:
    """JSON-ready meta: common keys (title, author, ...) plus the file's scalar fields."""
    meta: dict = {}
    for key, value in raw.items():
        if isinstance(value, str | int | float | bool):
            meta[key] = value
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            meta[key] = list(value)
    for key, sources in META_KEYS.items():
        for source in sources:
            value = meta.get(source)
            if value:
                meta.setdefault(key, ", ".join(value) if isinstance(value, list) else value)
                break
    return meta


# --- expressions --------------------------------------------------------------------------


def _weight(value: object, scale: float, where: str) -> float:
    return float(np.clip(as_float(value, where) / scale, 0.0, 1.0))


def _add(expressions: list[Expression], expression: Expression) -> None:
    if any(e.name == expression.name for e in expressions):
        log.warning("duplicate expression %r ignored", expression.name)
        return
    expressions.append(expression)


def _dicts(values: list) -> list[dict]:
    return [dict(v) for v in values if isinstance(v, dict)]


def vrm0(doc: Document, graph: SceneGraph, layout: TargetLayout) -> VrmData:
    vrm = get_dict(get_dict(doc.json, "extensions", "glTF"), "VRM", "extensions")
    data = VrmData(meta=_meta(get_dict(vrm, "meta", "VRM")))
    for entry in get_list(get_dict(vrm, "humanoid", "VRM"), "humanBones", "VRM.humanoid"):
        if isinstance(entry, dict):
            bone = entry.get("bone")
            if isinstance(bone, str):
                _bone(graph, data.humanoid, VRM0_BONES.get(bone, bone), entry.get("node"))
    master = get_dict(vrm, "blendShapeMaster", "VRM")
    for k, group in enumerate(get_list(master, "blendShapeGroups", "VRM.blendShapeMaster")):
        if not isinstance(group, dict):
            fail(f"VRM.blendShapeGroups[{k}] must be an object")
        where = f"VRM.blendShapeGroups[{k}]"
        preset = VRM0_PRESETS.get(get_str(group, "presetName").lower())
        binds = []
        for bind in _dicts(get_list(group, "binds", where)):
            mesh, index = bind.get("mesh"), bind.get("index")
            flat = (
                layout.flat(mesh, index)
                if isinstance(mesh, int) and isinstance(index, int)
                else None
            )
            if flat is not None:
                binds.append((flat, _weight(bind.get("weight", 100), 100.0, where)))
        name = preset or get_str(group, "name") or f"expression{k}"
        _add(
            data.expressions,
            Expression(
                name=name,
                binds=binds,
                is_binary=group.get("isBinary") is True,
                preset=preset is not None,
                material_color_binds=_dicts(get_list(group, "materialValues", where)),
            ),
        )
    return data


def _expression1(
    doc: Document, layout: TargetLayout, name: str, spec: dict, preset: bool, where: str
) -> Expression:
    binds = []
    for bind in _dicts(get_list(spec, "morphTargetBinds", where)):
        node, index = bind.get("node"), bind.get("index")
        if not isinstance(node, int) or not isinstance(index, int):
            continue
        mesh = node_mesh(doc, node, where) if 0 <= node < len(doc.items("nodes")) else None
        flat = None if mesh is None else layout.flat(mesh, index)
        if flat is not None:
            binds.append((flat, _weight(bind.get("weight", 1.0), 1.0, where)))

    def override(key: str) -> Override:
        return OVERRIDES.get(get_str(spec, key, "none"), Override.NONE)

    return Expression(
        name=name,
        binds=binds,
        is_binary=spec.get("isBinary") is True,
        override_blink=override("overrideBlink"),
        override_mouth=override("overrideMouth"),
        override_look_at=override("overrideLookAt"),
        preset=preset,
        material_color_binds=_dicts(get_list(spec, "materialColorBinds", where)),
        texture_transform_binds=_dicts(get_list(spec, "textureTransformBinds", where)),
    )


def vrm1(doc: Document, graph: SceneGraph, layout: TargetLayout) -> VrmData:
    vrm = get_dict(get_dict(doc.json, "extensions", "glTF"), "VRMC_vrm", "extensions")
    data = VrmData(meta=_meta(get_dict(vrm, "meta", "VRMC_vrm")))
    bones = get_dict(get_dict(vrm, "humanoid", "VRMC_vrm"), "humanBones", "VRMC_vrm.humanoid")
    for bone, spec in bones.items():
        if isinstance(spec, dict):
            _bone(graph, data.humanoid, bone, spec.get("node"))
    expressions = get_dict(vrm, "expressions", "VRMC_vrm")
    for group in ("preset", "custom"):
        where = f"VRMC_vrm.expressions.{group}"
        for name, spec in get_dict(expressions, group, "VRMC_vrm.expressions").items():
            if isinstance(spec, dict):
                preset = group == "preset" and name in VRM_PRESETS
                expression = _expression1(doc, layout, name, spec, preset, f"{where}.{name}")
                _add(data.expressions, expression)
    return data


def turn_vrm0(geometry: Geometry, local: np.ndarray, world: np.ndarray) -> None:
    """Turn a -Z-facing VRM 0.x model 180 degrees about Y, in place (see module docstring)."""
    for array in (
        geometry.positions,
        geometry.normals,
        geometry.morph_dpos,
        geometry.morph_dnormal,
    ):
        array[:, [0, 2]] *= -1.0
    flip = np.diag([-1.0, 1.0, -1.0, 1.0])
    local[:] = flip @ local @ flip
    world[:] = flip @ world @ flip
