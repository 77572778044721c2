"""glTF materials and base colour textures as the rows of `Materials`.

Textures are decoded with Pillow (PNG and JPEG only) after their header size has been
checked against the limits, so a file declaring a 100k x 100k image is refused before any
pixel is decoded. VRM loaders adjust the rows (MToon) before they are packed.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .asset import AlphaMode, Materials, Shading
from .gltf_io import Document, as_int, fail, get_dict, get_float, get_floats, get_int, get_str

IMAGE_FORMATS = ("PNG", "JPEG")
ALPHA_MODES = {"OPAQUE": AlphaMode.OPAQUE, "MASK": AlphaMode.MASK, "BLEND": AlphaMode.BLEND}
# Unity render queues, which VRM's renderQueue values are expressed in.
QUEUE = {AlphaMode.OPAQUE: 2000, AlphaMode.MASK: 2450, AlphaMode.BLEND: 3000}
IDENTITY_UV = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))


@dataclass
class MaterialRow:
    name: str
    base_color: np.ndarray = field(default_factory=lambda: np.ones(4))
    texture: int = -1
    uv_transform: np.ndarray = field(default_factory=lambda: np.array(IDENTITY_UV))
    alpha_mode: AlphaMode = AlphaMode.OPAQUE
    alpha_cutoff: float = 0.5
    double_sided: bool = False
    shading: Shading = Shading.LAMBERT
    shade_color: np.ndarray = field(default_factory=lambda: np.ones(3))
    shading_toony: float = 0.9
    shading_shift: float = 0.0
    render_queue: int = QUEUE[AlphaMode.OPAQUE]
    texcoord: int = 0


def _open_checked(data: bytes, where: str, max_pixels: int) -> Image.Image:
    """Open lazily (header only) and refuse oversized images before any pixel is decoded."""
    image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    width, height = image.size
    if width * height > max_pixels:
        fail(f"{where}: {width}x{height} image exceeds max_texture_pixels ({max_pixels})")
    if width == 0 or height == 0:
        fail(f"{where}: empty image")
    return image


def decode_image(data: bytes, where: str, max_pixels: int) -> np.ndarray:
    """[H,W,4] uint8 from PNG/JPEG bytes; the declared size is checked before decoding."""
    try:
        image = _open_checked(data, where, max_pixels)
        if image.mode.startswith(("I", "F")):  # 16-bit or float greyscale
            grey = np.clip(np.asarray(image, np.float64) / 257.0, 0, 255).astype(np.uint8)
            image = Image.fromarray(grey)
        rgba = np.asarray(image.convert("RGBA"), dtype=np.uint8)
    except Image.DecompressionBombError as exc:
        fail(f"{where}: image declares too many pixels ({exc})")
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        fail(f"{where}: cannot decode image ({str(exc)[:120]})")
    if rgba.ndim != 3 or rgba.shape[2] != 4:
        fail(f"{where}: decoded image has an unexpected shape {rgba.shape}")
    return np.ascontiguousarray(rgba)


class TextureSet:
    """glTF textures decoded on first use; each image is decoded once."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.images: list[np.ndarray] = []
        self._by_image: dict[int, int] = {}
        self._pixels = 0

    def index(self, texture: object, where: str) -> int:
        """AvatarAsset.textures index of glTF texture `texture`, -1 when it has no image."""
        spec = self.doc.item("textures", texture, where)
        if spec.get("source") is None:
            return -1  # e.g. only an extension source (basisu, webp) we do not decode
        source = as_int(spec["source"], f"textures[{texture}].source")
        if source not in self._by_image:
            self._by_image[source] = self._decode(source, f"textures[{texture}]")
        return self._by_image[source]

    def _decode(self, source: int, where: str) -> int:
        image = self.doc.item("images", source, where)
        here = f"images[{source}]"
        if image.get("bufferView") is not None:
            data = bytes(self.doc.buffer_view(image["bufferView"], here)[0])
        elif image.get("uri") is not None:
            data = self.doc.read_uri(image["uri"], here)
        else:
            fail(f"{here}: neither bufferView nor uri")
        limits = self.doc.limits
        rgba = decode_image(data, here, limits.max_texture_pixels)
        self._pixels += rgba.shape[0] * rgba.shape[1]
        if self._pixels > limits.max_total_texture_pixels:
            fail(f"textures exceed max_total_texture_pixels ({limits.max_total_texture_pixels})")
        self.images.append(rgba)
        return len(self.images) - 1


def texture_transform(info: dict, where: str) -> tuple[np.ndarray, int | None]:
    """KHR_texture_transform as a 2x3 affine on UVs (T * R * S), and its texCoord override."""
    ext = get_dict(get_dict(info, "extensions", where), "KHR_texture_transform", where)
    if not ext:
        return np.array(IDENTITY_UV), None
    here = f"{where}.KHR_texture_transform"
    ox, oy = get_floats(ext, "offset", here, (0.0, 0.0))
    sx, sy = get_floats(ext, "scale", here, (1.0, 1.0))
    angle = get_float(ext, "rotation", here, 0.0)
    c, s = math.cos(angle), math.sin(angle)
    matrix = np.array([[c * sx, s * sy, ox], [-s * sx, c * sy, oy]])
    override = None if ext.get("texCoord") is None else get_int(ext, "texCoord", here, hi=7)
    return matrix, override


def base_texture(row: MaterialRow, info: dict, textures: TextureSet, where: str) -> None:
    """Point `row` at the texture of a textureInfo, with its UV set and transform."""
    if not info:
        return
    row.texture = textures.index(info.get("index"), where)
    row.texcoord = get_int(info, "texCoord", where, default=0, hi=7)
    row.uv_transform, override = texture_transform(info, where)
    if override is not None:
        row.texcoord = override


def material_row(doc: Document, index: int, spec: dict, textures: TextureSet) -> MaterialRow:
    where = f"materials[{index}]"
    row = MaterialRow(name=get_str(spec, "name") or f"material{index}")
    pbr = get_dict(spec, "pbrMetallicRoughness", where)
    row.base_color = get_floats(pbr, "baseColorFactor", f"{where}.pbr", (1.0, 1.0, 1.0, 1.0))
    row.shade_color = row.base_color[:3].copy()
    base_texture(
        row, get_dict(pbr, "baseColorTexture", where), textures, f"{where}.baseColorTexture"
    )
    mode = spec.get("alphaMode", "OPAQUE")
    if not isinstance(mode, str) or mode not in ALPHA_MODES:
        fail(f"{where}: unknown alphaMode {mode!r}")
    row.alpha_mode = ALPHA_MODES[mode]
    row.alpha_cutoff = get_float(spec, "alphaCutoff", where, 0.5)
    row.double_sided = spec.get("doubleSided") is True
    row.render_queue = QUEUE[row.alpha_mode]
    if "KHR_materials_unlit" in get_dict(spec, "extensions", where):
        row.shading = Shading.UNLIT
    return row


class MaterialTable:
    """One row per glTF material, plus a default row for primitives without one."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.textures = TextureSet(doc)
        self.rows = [
            material_row(doc, i, spec, self.textures)
            for i, spec in enumerate(doc.items("materials"))
        ]
        self._default: int | None = None

    def row(self, material: object, where: str) -> int:
        if material is None:
            if self._default is None:
                self.rows.append(MaterialRow(name="default"))
                self._default = len(self.rows) - 1
            return self._default
        self.doc.item("materials", material, where)
        return int(material)  # type: ignore[call-overload]

    def texcoord(self, row: int) -> int:
        return self.rows[row].texcoord

    def pack(self) -> Materials:
        """The rows as Materials arrays, each value clamped to the range its meaning allows."""
        rows = self.rows or [MaterialRow(name="default")]

        def column(name: str, lo: float, hi: float) -> np.ndarray:
            return np.clip(np.array([getattr(r, name) for r in rows], np.float64), lo, hi)

        return Materials(
            name=[r.name for r in rows],
            base_color=column("base_color", 0, 1).astype(np.float32).reshape(-1, 4),
            texture=np.array([r.texture for r in rows], np.int32),
            uv_transform=column("uv_transform", -1e6, 1e6).astype(np.float32).reshape(-1, 2, 3),
            alpha_mode=np.array([int(r.alpha_mode) for r in rows], np.int8),
            alpha_cutoff=column("alpha_cutoff", 0, 1).astype(np.float32),
            double_sided=np.array([r.double_sided for r in rows], bool),
            shading=np.array([int(r.shading) for r in rows], np.int8),
            shade_color=column("shade_color", 0, 1).astype(np.float32).reshape(-1, 3),
            shading_toony=column("shading_toony", 0, 1).astype(np.float32),
            shading_shift=column("shading_shift", -1, 1).astype(np.float32),
            render_queue=column("render_queue", -1e4, 1e4).astype(np.int32),
        )
