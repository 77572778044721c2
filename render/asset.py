"""The flat, render-ready form of an avatar: numpy arrays that kernels consume directly.

Every loader (glTF, VRM 0.x, VRM 1.0, the built-in avatar) produces an `AvatarAsset`.
Conventions, fixed for the whole project:

- Units are metres, +Y is up and the avatar **faces +Z** (towards a camera placed on +Z).
  VRM 0.x files face -Z and are turned 180 degrees about Y when loaded.
- `positions`/`normals` are the **rest pose in world space**: node transforms and the
  rest-pose skinning are already applied. Skinning at rest is therefore the identity and a
  pose is expressed as world-space joint deltas: `M_j = world_posed_j @ inv(joint_rest_world_j)`.
- Joints are the scene's nodes in topological order (a parent's index is smaller than its
  child's). A vertex of a mesh without a skin is bound with weight 1 to its own node, so
  meshes parented to a bone (a hat on the head) follow that bone.
- Morph deltas are stored sparse, by vertex (CSR): vertex v owns entries
  `morph_offsets[v]:morph_offsets[v+1]`, each a (target, dpos, dnormal) triple. Deltas are
  already in the same world space as `positions`.
- Colours are linear floats; textures are sRGB RGBA8 arrays as stored in the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np


class AssetError(ValueError):
    """The one exception type of the asset layer: a file that cannot be loaded, and why."""


class AlphaMode(IntEnum):
    OPAQUE = 0
    MASK = 1
    BLEND = 2


class Shading(IntEnum):
    LAMBERT = 0  # plain glTF PBR approximated as lambert + ambient
    UNLIT = 1  # KHR_materials_unlit
    MTOON = 2  # VRM's toon shader: two-tone base/shade colour


class Override(IntEnum):
    """VRM 1.0 override modes for blink, mouth and lookAt expressions."""

    NONE = 0
    BLOCK = 1
    BLEND = 2


@dataclass
class Materials:
    """Struct of arrays, one row per material; `triangle_material` indexes into it."""

    name: list[str]
    base_color: np.ndarray  # [Mt,4] float32, linear RGBA factor
    texture: np.ndarray  # [Mt] int32, index into AvatarAsset.textures, -1 for none
    uv_transform: np.ndarray  # [Mt,2,3] float32 affine on TEXCOORD_0 (KHR_texture_transform)
    alpha_mode: np.ndarray  # [Mt] int8, AlphaMode
    alpha_cutoff: np.ndarray  # [Mt] float32 (MASK only)
    double_sided: np.ndarray  # [Mt] bool
    shading: np.ndarray  # [Mt] int8, Shading
    shade_color: np.ndarray  # [Mt,3] float32 linear (MToon shade colour; unused otherwise)
    shading_toony: np.ndarray  # [Mt] float32 0..1 (MToon 1.0 meaning)
    shading_shift: np.ndarray  # [Mt] float32 -1..1 (MToon 1.0 meaning)
    render_queue: np.ndarray  # [Mt] int32 draw order for BLEND materials (lower first)

    def __len__(self) -> int:
        return len(self.name)

    @staticmethod
    def empty() -> Materials:
        return Materials(
            name=[],
            base_color=np.zeros((0, 4), np.float32),
            texture=np.zeros(0, np.int32),
            uv_transform=np.zeros((0, 2, 3), np.float32),
            alpha_mode=np.zeros(0, np.int8),
            alpha_cutoff=np.zeros(0, np.float32),
            double_sided=np.zeros(0, bool),
            shading=np.zeros(0, np.int8),
            shade_color=np.zeros((0, 3), np.float32),
            shading_toony=np.zeros(0, np.float32),
            shading_shift=np.zeros(0, np.float32),
            render_queue=np.zeros(0, np.int32),
        )


@dataclass
class Expression:
    """One avatar expression (a VRM preset, a custom one, or an ARKit-named morph target)."""

    name: str  # vocabulary name for presets (see render.vocabulary), the file's name otherwise
    binds: list[tuple[int, float]]  # (morph target index, weight 0..1)
    is_binary: bool = False
    override_blink: Override = Override.NONE
    override_mouth: Override = Override.NONE
    override_look_at: Override = Override.NONE
    preset: bool = False
    # Read and listed; not rendered yet.
    material_color_binds: list[dict] = field(default_factory=list)
    texture_transform_binds: list[dict] = field(default_factory=list)


@dataclass
class CameraSuggestion:
    """A perspective camera that frames part of the avatar (head, bust or full)."""

    eye: np.ndarray  # [3] float32 world position
    target: np.ndarray  # [3] float32 point looked at
    fov_y_deg: float
    height: float  # vertical extent (metres) that the framing shows at `target`


@dataclass
class AvatarAsset:
    name: str
    format: str  # "gltf" | "vrm0" | "vrm1" | "builtin"

    positions: np.ndarray  # [V,3] float32
    normals: np.ndarray  # [V,3] float32, unit length
    uvs: np.ndarray  # [V,2] float32 (zeros when the file has none)
    triangles: np.ndarray  # [T,3] int32, counter-clockwise front faces
    triangle_material: np.ndarray  # [T] int32

    target_names: list[str]  # [M]
    target_mesh: np.ndarray  # [M] int32, the glTF mesh each target belongs to
    default_weights: np.ndarray  # [M] float32 (mesh.weights / node.weights)
    morph_offsets: np.ndarray  # [V+1] int32 CSR row pointers
    morph_target: np.ndarray  # [NNZ] int32
    morph_dpos: np.ndarray  # [NNZ,3] float32
    morph_dnormal: np.ndarray  # [NNZ,3] float32

    skin_joints: np.ndarray  # [V,4] int32 joint indices
    skin_weights: np.ndarray  # [V,4] float32, rows sum to 1
    joint_names: list[str]  # [J]
    joint_parent: np.ndarray  # [J] int32, -1 for roots; parent index < child index
    joint_rest_local: np.ndarray  # [J,4,4] float32
    joint_rest_world: np.ndarray  # [J,4,4] float32

    materials: Materials
    textures: list[np.ndarray]  # each [H,W,4] uint8 sRGB
    expressions: list[Expression]
    humanoid: dict[str, int]  # VRM 1.0 bone name (head, neck, leftEye, ...) -> joint index
    cameras: dict[str, CameraSuggestion]  # "head" | "bust" | "full"
    meta: dict = field(default_factory=dict)  # title, author, licence ... as found in the file

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        if len(self.positions) == 0:
            z = np.zeros(3, np.float32)
            return z, z
        return self.positions.min(axis=0), self.positions.max(axis=0)

    @property
    def vertex_count(self) -> int:
        return int(self.positions.shape[0])

    @property
    def triangle_count(self) -> int:
        return int(self.triangles.shape[0])

    def expression(self, name: str) -> Expression | None:
        for e in self.expressions:
            if e.name == name:
                return e
        return None

    def summary(self) -> dict:
        """A JSON-ready description, as printed by `avatarfarm avatar info`."""
        lo, hi = self.bounds
        return {
            "name": self.name,
            "format": self.format,
            "vertices": self.vertex_count,
            "triangles": self.triangle_count,
            "morph_targets": len(self.target_names),
            "morph_target_names": list(self.target_names),
            "morph_deltas": int(self.morph_target.shape[0]),
            "expressions": [e.name for e in self.expressions],
            "joints": len(self.joint_names),
            "humanoid_bones": sorted(self.humanoid),
            "materials": [
                {
                    "name": self.materials.name[i],
                    "alpha_mode": AlphaMode(int(self.materials.alpha_mode[i])).name,
                    "shading": Shading(int(self.materials.shading[i])).name,
                    "texture": int(self.materials.texture[i]),
                    "double_sided": bool(self.materials.double_sided[i]),
                }
                for i in range(len(self.materials))
            ],
            "textures": [list(t.shape[1::-1]) for t in self.textures],
            "bounds": {
                "min": [round(float(x), 4) for x in lo],
                "max": [round(float(x), 4) for x in hi],
            },
            "meta": self.meta,
        }

    def validate(self) -> None:
        """Check the invariants kernels rely on; raises AssetError naming the first broken one."""
        v = self.vertex_count
        t = self.triangle_count
        m = len(self.target_names)
        j = len(self.joint_names)
        checks = [
            (self.positions.shape == (v, 3), "positions must be [V,3]"),
            (self.normals.shape == (v, 3), "normals must be [V,3]"),
            (self.uvs.shape == (v, 2), "uvs must be [V,2]"),
            (self.triangles.ndim == 2 and self.triangles.shape[1] == 3, "triangles must be [T,3]"),
            (
                t == 0 or (self.triangles.min() >= 0 and self.triangles.max() < v),
                "triangle index out of range",
            ),
            (self.triangle_material.shape == (t,), "triangle_material must be [T]"),
            (
                t == 0
                or (
                    self.triangle_material.min() >= 0
                    and self.triangle_material.max() < len(self.materials)
                ),
                "triangle material out of range",
            ),
            (self.morph_offsets.shape == (v + 1,), "morph_offsets must be [V+1]"),
            (
                self.morph_offsets[0] == 0 and self.morph_offsets[-1] == len(self.morph_target),
                "morph_offsets must span morph_target",
            ),
            (
                len(self.morph_target) == 0 or int(self.morph_target.max()) < m,
                "morph target index out of range",
            ),
            (self.default_weights.shape == (m,), "default_weights must be [M]"),
            (
                self.skin_joints.shape == (v, 4) and self.skin_weights.shape == (v, 4),
                "skin arrays must be [V,4]",
            ),
            (
                v == 0 or (self.skin_joints.min() >= 0 and self.skin_joints.max() < j),
                "skin joint out of range",
            ),
            (
                all(self.joint_parent[i] < i for i in range(j)),
                "joints must be topologically ordered",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise AssetError(f"{self.name}: {message}")
