"""All avatars in use, concatenated into the pooled arrays the kernels read (range mode).

Adding an avatar rebuilds the pool (a rare event, never per frame); sessions then refer to
their avatar by its vertex/triangle range. Each avatar counts the sessions using it, and
the rebuild drops the ones no session uses any more, so a server that loads avatar after
avatar for days holds only those in use. Layout: see avatarfarm.kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .asset import AvatarAsset
from .expressions import ExpressionRig
from .rig import PoseRig


@dataclass
class PooledAvatar:
    asset: AvatarAsset
    expressions: ExpressionRig
    pose: PoseRig
    vbase: int = 0
    tbase: int = 0
    mbase: int = 0  # first material in the material pool
    users: int = 0  # sessions rendering this avatar


class MeshPool:
    """Pooled geometry, morphs, skinning, materials and textures of every loaded avatar."""

    def __init__(self) -> None:
        self.avatars: list[PooledAvatar] = []
        self._by_id: dict[int, int] = {}
        self.version = 0
        self._rebuild()

    def add(self, asset: AvatarAsset) -> tuple[int, np.ndarray | None]:
        """One more user of `asset`: its index, and how the other avatars' indices moved
        (old index -> new) when adding it rebuilt the pool and dropped unused ones."""
        key = id(asset)  # the pool holds the asset, so its id cannot be reused meanwhile
        if key in self._by_id:
            index = self._by_id[key]
            self.avatars[index].users += 1
            return index, None
        moved = np.full(len(self.avatars), -1, np.int64)
        kept = [i for i, a in enumerate(self.avatars) if a.users > 0]
        moved[kept] = np.arange(len(kept))
        self.avatars = [self.avatars[i] for i in kept]
        self.avatars.append(PooledAvatar(asset, ExpressionRig(asset), PoseRig(asset), users=1))
        self._by_id = {id(a.asset): i for i, a in enumerate(self.avatars)}
        self._rebuild()
        return len(self.avatars) - 1, moved

    def release(self, index: int) -> None:
        """A session stopped using avatar `index`; it goes at the next rebuild if unused."""
        self.avatars[index].users -= 1

    @property
    def max_targets(self) -> int:
        return max([len(a.asset.target_names) for a in self.avatars] + [1])

    def _rebuild(self) -> None:
        assets = [a.asset for a in self.avatars]
        v_counts = [a.vertex_count for a in assets]
        t_counts = [a.triangle_count for a in assets]
        m_counts = [len(a.materials) for a in assets]
        vbase = np.concatenate([[0], np.cumsum(v_counts)]).astype(np.int64)
        tbase = np.concatenate([[0], np.cumsum(t_counts)]).astype(np.int64)
        mbase = np.concatenate([[0], np.cumsum(m_counts)]).astype(np.int64)
        for i, pooled in enumerate(self.avatars):
            pooled.vbase, pooled.tbase, pooled.mbase = int(vbase[i]), int(tbase[i]), int(mbase[i])
        # Per avatar: vertex base, vertex count, triangle base, triangle count.
        self.ranges = np.stack(
            [vbase[:-1], np.array(v_counts, np.int64), tbase[:-1], np.array(t_counts, np.int64)],
            axis=1,
        ).reshape(-1, 4)

        def cat(arrays, shape, dtype):
            arrays = [np.asarray(a, dtype) for a in arrays]
            if not arrays:
                return np.zeros(shape, dtype)
            return np.ascontiguousarray(np.concatenate(arrays))

        self.base_pos = cat([a.positions for a in assets], (0, 3), np.float32)
        self.base_nrm = cat([a.normals for a in assets], (0, 3), np.float32)
        self.uv = cat([a.uvs for a in assets], (0, 2), np.float32)

        nnz = np.concatenate([[0], np.cumsum([len(a.morph_target) for a in assets])])
        offsets = [a.morph_offsets[:-1].astype(np.int64) + nnz[i] for i, a in enumerate(assets)]
        self.morph_offsets = cat(offsets + [np.array([nnz[-1]])], (1,), np.int32)
        self.morph_target = cat([a.morph_target for a in assets], (0,), np.int32)
        self.morph_dpos = cat([a.morph_dpos for a in assets], (0, 3), np.float32)
        self.morph_dnrm = cat([a.morph_dnormal for a in assets], (0, 3), np.float32)

        self.skin_slot = cat([p.pose.skin_slot for p in self.avatars], (0, 4), np.int32)
        self.skin_weight = cat([p.pose.skin_weight for p in self.avatars], (0, 4), np.float32)
        self.tris = cat([a.triangles for a in assets], (0, 3), np.int32)
        self.tri_mat = cat(
            [a.triangle_material + mbase[i] for i, a in enumerate(assets)], (0,), np.int32
        )

        tex_base = np.concatenate([[0], np.cumsum([len(a.textures) for a in assets])])
        textures = [t for a in assets for t in a.textures]
        sizes = np.array([[t.shape[1], t.shape[0]] for t in textures], np.int32).reshape(-1, 2)
        self.tex_size = sizes
        self.tex_offset = np.concatenate(
            [[0], np.cumsum([t.size for t in textures])[:-1]] if textures else [[]]
        ).astype(np.int64)
        self.tex_pixels = cat([t.reshape(-1) for t in textures], (4,), np.uint8)

        mats = [a.materials for a in assets]
        self.mat_base_color = cat([m.base_color for m in mats], (0, 4), np.float32)
        self.mat_texture = cat(
            [np.where(m.texture >= 0, m.texture + tex_base[i], -1) for i, m in enumerate(mats)],
            (0,),
            np.int32,
        )
        self.mat_uv_transform = cat([m.uv_transform for m in mats], (0, 2, 3), np.float32)
        self.mat_alpha_mode = cat([m.alpha_mode for m in mats], (0,), np.int8)
        self.mat_alpha_cutoff = cat([m.alpha_cutoff for m in mats], (0,), np.float32)
        self.mat_double_sided = cat([m.double_sided for m in mats], (0,), np.uint8)
        self.mat_shading = cat([m.shading for m in mats], (0,), np.int8)
        self.mat_shade_color = cat([m.shade_color for m in mats], (0, 3), np.float32)
        self.mat_toony = cat([m.shading_toony for m in mats], (0,), np.float32)
        self.mat_shift = cat([m.shading_shift for m in mats], (0,), np.float32)
        self.has_blend = bool((self.mat_alpha_mode != 0).any())
        self.version += 1
