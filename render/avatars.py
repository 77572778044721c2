"""Resolve an avatar reference (`default` or a file path) to a loaded AvatarAsset."""

from __future__ import annotations

from pathlib import Path

from .asset import AssetError, AvatarAsset


def load(spec: str | Path) -> AvatarAsset:
    """`default` is the built-in presenter; anything else is a .glb/.gltf/.vrm path."""
    if str(spec) == "default":
        from .default_avatar import load_default_avatar

        return load_default_avatar()
    path = Path(spec)
    if not path.is_file():
        raise AssetError(f"{path}: no such file")
    from .gltf import load_avatar

    return load_avatar(path)
