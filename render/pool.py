"""All avatars in use, in the pooled arrays the kernels read (range mode).

Each avatar owns regions of a few tables (vertices, morph deltas, triangles, materials,
textures and texels), its indices into the others baked in when it is placed. Adding an
avatar therefore copies only that avatar, and the device copy uploads only what was
written; an avatar keeps its index for as long as it is pooled. The copy can also go a
budget at a time (`add(fill=False)`, then `fill`), so a VRoid model with 50 MB of
textures joins between the engine's ticks instead of stalling one. Each avatar counts the
sessions using it; the next avatar added drops the ones no session uses any more, so a
server that loads avatar after avatar for days holds only those in use (their space is
reused). Layout: see avatarfarm.kernels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from types import SimpleNamespace

import numpy as np

from .arena import Arena, PendingCopy, Table, copy_some
from .asset import AvatarAsset
from .expressions import ExpressionRig
from .rig import PoseRig

_F32, _I32 = np.float32, np.int32
COLUMNS = {
    # per vertex; each avatar's run has one pad row, so morph_offsets[v + 1] stays in it
    "vertices": {
        "base_pos": (_F32, (3,)), "base_nrm": (_F32, (3,)), "uv": (_F32, (2,)),
        "morph_offsets": (_I32, ()), "skin_slot": (_I32, (4,)), "skin_weight": (_F32, (4,)),
    },
    "morphs": {"morph_target": (_I32, ()), "morph_dpos": (_F32, (3,)), "morph_dnrm": (_F32, (3,))},
    "triangles": {"tris": (_I32, (3,)), "tri_mat": (_I32, ())},
    "materials": {
        "mat_base_color": (_F32, (4,)), "mat_texture": (_I32, ()),
        "mat_uv_transform": (_F32, (2, 3)), "mat_alpha_mode": (np.int8, ()),
        "mat_alpha_cutoff": (_F32, ()), "mat_double_sided": (np.uint8, ()),
        "mat_shading": (np.int8, ()), "mat_shade_color": (_F32, (3,)),
        "mat_toony": (_F32, ()), "mat_shift": (_F32, ()),
    },
    "textures": {"tex_offset": (np.int64, ()), "tex_size": (_I32, (2,))},
}  # fmt: skip


@dataclass(eq=False)
class PooledAvatar:
    asset: AvatarAsset
    expressions: ExpressionRig
    pose: PoseRig
    starts: dict[str, int]  # its first row in each table, and in the texels
    sizes: dict[str, int]
    users: int = 0  # sessions rendering this avatar (or about to)
    copies: list[PendingCopy] = field(default_factory=list)  # left to copy; none once ready

    @property
    def ready(self) -> bool:
        return not self.copies

    @property
    def vbase(self) -> int:
        return self.starts["vertices"]


class MeshPool:
    """Pooled geometry, morphs, skinning, materials and textures of every loaded avatar."""

    def __init__(self, track_writes: bool = False) -> None:
        self.tables = {name: Table(cols, track_writes) for name, cols in COLUMNS.items()}
        self.texels = Arena(np.uint8, track_writes=track_writes)
        self.avatars: list[PooledAvatar | None] = []  # by index; None where one was dropped
        self.ranges = np.zeros((0, 4), np.int64)  # per index: vbase, vcount, tbase, tcount
        self._by_id: dict[int, int] = {}
        self.version = 0  # changes whenever an avatar is placed or dropped
        self._arrays: SimpleNamespace | None = None

    def add(self, asset: AvatarAsset, fill: bool = True) -> int:
        """One more user of `asset`; its index. With `fill=False` a new avatar's rows are
        reserved but not copied yet: `fill` copies them, and it must be ready before a
        slot renders it."""
        key = id(asset)  # the pool holds the asset, so its id cannot be reused meanwhile
        if key in self._by_id:
            index = self._by_id[key]
            self.avatars[index].users += 1  # type: ignore[union-attr]
            if fill:
                self.fill(index)
            return index
        self._drop_unused()
        pooled = self._place(asset)
        if fill:
            copy_some(pooled.copies)
        index = self.avatars.index(None) if None in self.avatars else len(self.avatars)
        if index == len(self.avatars):
            self.avatars.append(None)
            self.ranges = np.concatenate([self.ranges, np.zeros((1, 4), np.int64)])
        self.avatars[index] = pooled
        self.ranges[index] = (
            pooled.vbase,
            asset.vertex_count,
            pooled.starts["triangles"],
            asset.triangle_count,
        )
        self._by_id[key] = index
        return index

    def fill(self, index: int, max_bytes: int | None = None) -> bool:
        """Copy up to `max_bytes` more of avatar `index` (all when None); True when ready."""
        copies = self.avatars[index].copies  # type: ignore[union-attr]
        if not copies:
            return True
        done = copy_some(copies, max_bytes)
        self.version += 1  # the device copy has rows to upload
        return done

    def release(self, index: int) -> None:
        """A session stopped using avatar `index`; it goes when the next avatar is added."""
        self.avatars[index].users -= 1  # type: ignore[union-attr]

    @property
    def max_targets(self) -> int:
        return max([len(a.asset.target_names) for a in self.avatars if a] + [1])

    @property
    def has_blend(self) -> bool:
        return any((a.asset.materials.alpha_mode != 0).any() for a in self.avatars if a)

    def arrays(self) -> SimpleNamespace:
        """Every column (and tex_pixels) by name, as the kernels take them."""
        if self._arrays is None:
            columns = {c: getattr(t, c) for t in self.tables.values() for c in t.columns}
            self._arrays = SimpleNamespace(**columns, tex_pixels=self.texels.data)
        return self._arrays

    def _place(self, asset: AvatarAsset) -> PooledAvatar:
        """Copy one avatar into regions of its own, with its cross-table indices rebased."""
        pose = PoseRig(asset)
        mats = asset.materials
        textures = asset.textures
        sizes = {
            "vertices": asset.vertex_count + 1, "morphs": len(asset.morph_target),
            "triangles": asset.triangle_count, "materials": len(mats),
            "textures": len(textures), "texels": sum(t.size for t in textures),
        }  # fmt: skip
        starts = {name: self.tables[name].alloc(n) for name, n in sizes.items() if name in COLUMNS}
        starts["texels"] = self.texels.alloc(sizes["texels"])
        t_offsets = np.cumsum([0] + [t.size for t in textures])[:-1]

        def pad(rows: np.ndarray) -> np.ndarray:  # the vertex run's extra row: zeros
            return np.concatenate([rows, np.zeros((1, *rows.shape[1:]), rows.dtype)])

        rows = {
            "vertices": {
                "base_pos": pad(asset.positions), "base_nrm": pad(asset.normals),
                "uv": pad(asset.uvs), "morph_offsets": asset.morph_offsets + starts["morphs"],
                "skin_slot": pad(pose.skin_slot), "skin_weight": pad(pose.skin_weight),
            },
            "morphs": {
                "morph_target": asset.morph_target, "morph_dpos": asset.morph_dpos,
                "morph_dnrm": asset.morph_dnormal,
            },
            "triangles": {
                "tris": asset.triangles,
                "tri_mat": asset.triangle_material + starts["materials"],
            },
            "materials": {
                "mat_base_color": mats.base_color,
                "mat_texture": np.where(mats.texture >= 0, mats.texture + starts["textures"], -1),
                "mat_uv_transform": mats.uv_transform, "mat_alpha_mode": mats.alpha_mode,
                "mat_alpha_cutoff": mats.alpha_cutoff, "mat_double_sided": mats.double_sided,
                "mat_shading": mats.shading, "mat_shade_color": mats.shade_color,
                "mat_toony": mats.shading_toony, "mat_shift": mats.shading_shift,
            },
            "textures": {
                "tex_offset": starts["texels"] + t_offsets,
                "tex_size": np.array([[t.shape[1], t.shape[0]] for t in textures]).reshape(-1, 2),
            },
        }  # fmt: skip
        copies = []
        for name, columns in rows.items():
            for column, values in columns.items():
                write = partial(self.tables[name].write, column)
                copies.append(PendingCopy(write, starts[name], np.asarray(values)))
        for texture, offset in zip(textures, t_offsets, strict=True):
            copies.append(
                PendingCopy(self.texels.write, starts["texels"] + int(offset), texture.reshape(-1))
            )
        self._changed()
        return PooledAvatar(asset, ExpressionRig(asset), pose, starts, sizes, 1, copies)

    def _drop_unused(self) -> None:
        for index, pooled in enumerate(self.avatars):
            if pooled is None or pooled.users > 0:
                continue
            for name, table in self.tables.items():
                table.free(pooled.starts[name], pooled.sizes[name])
            self.texels.free(pooled.starts["texels"], pooled.sizes["texels"])
            del self._by_id[id(pooled.asset)]
            self.avatars[index] = None
            self.ranges[index] = 0
            self._changed()

    def _changed(self) -> None:
        self.version += 1
        self._arrays = None  # columns may have grown into new arrays
