"""The glTF container: GLB chunks, JSON, buffers and URIs, read defensively.

Everything a file declares (lengths, offsets, indices, URIs) is checked against what is
really there and against `AssetLimits` before any memory is allocated for it, so a hostile
or broken file ends in one `AssetError` naming the problem.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import unquote

import numpy as np

from .asset import AssetError

GLB_MAGIC = b"glTF"
CHUNK_JSON = 0x4E4F534A
CHUNK_BIN = 0x004E4942
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")

# Extensions whose meaning we implement (or that do not change geometry we read).
SUPPORTED_EXTENSIONS = frozenset(
    {
        "KHR_materials_unlit",
        "KHR_texture_transform",
        "KHR_mesh_quantization",  # any component type is already decoded
        "VRM",
        "VRMC_vrm",
        "VRMC_materials_mtoon",
        "VRMC_springBone",
        "VRMC_node_constraint",
        "KHR_materials_emissive_strength",
    }
)


@dataclass
class AssetLimits:
    """Ceilings checked before allocating, so one bad upload cannot exhaust the server."""

    max_file_bytes: int = 256 * 1024 * 1024  # main file plus every external file it reads
    max_vertices: int = 2_000_000
    max_triangles: int = 4_000_000
    max_texture_pixels: int = 8192 * 8192  # per texture, checked from the image header
    max_total_texture_pixels: int = 4 * 8192 * 8192
    max_morph_deltas: int = 8_000_000  # stored non-zero (vertex, target) deltas
    max_nodes: int = 65_536


def fail(message: str) -> NoReturn:
    raise AssetError(message)


# --- typed JSON access: wrong types become AssetError, never TypeError/KeyError ----------


def get_dict(obj: dict, key: str, where: str, *, required: bool = False) -> dict:
    value = obj.get(key)
    if value is None:
        if required:
            fail(f"{where}: missing {key}")
        return {}
    if not isinstance(value, dict):
        fail(f"{where}.{key} must be an object")
    return value


def get_list(obj: dict, key: str, where: str) -> list:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        fail(f"{where}.{key} must be an array")
    return value


def as_int(value: Any, where: str, lo: int = 0, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        fail(f"{where} must be an integer, got {type(value).__name__}")
    if value < lo or (hi is not None and value > hi):
        fail(f"{where} = {value} is out of range [{lo}, {hi if hi is not None else '...'}]")
    return value


def get_int(
    obj: dict, key: str, where: str, default: int | None = None, lo: int = 0, hi: int | None = None
) -> int:
    if key not in obj or obj[key] is None:
        if default is None:
            fail(f"{where}: missing {key}")
        return default
    return as_int(obj[key], f"{where}.{key}", lo, hi)


def as_float(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        fail(f"{where} must be a number")
    result = float(value)
    if not math.isfinite(result):
        fail(f"{where} must be finite")
    return result


def get_float(obj: dict, key: str, where: str, default: float) -> float:
    if key not in obj or obj[key] is None:
        return default
    return as_float(obj[key], f"{where}.{key}")


def get_floats(obj: dict, key: str, where: str, default: tuple[float, ...]) -> np.ndarray:
    """A fixed-length numeric array (a colour, a matrix); the default when absent."""
    value = obj.get(key)
    if value is None:
        return np.array(default, np.float64)
    if not isinstance(value, list) or len(value) != len(default):
        fail(f"{where}.{key} must be an array of {len(default)} numbers")
    return np.array([as_float(v, f"{where}.{key}") for v in value], np.float64)


def get_str(obj: dict, key: str, default: str = "") -> str:
    value = obj.get(key)
    return value if isinstance(value, str) else default


# --- container --------------------------------------------------------------------------


def parse_json(raw: bytes | memoryview, where: str) -> dict:
    try:
        text = bytes(raw).rstrip(b"\x00 \t\r\n").decode("utf-8-sig")
        doc = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        fail(f"{where}: broken JSON ({str(exc)[:120]})")
    if not isinstance(doc, dict):
        fail(f"{where}: the top level must be a JSON object")
    return doc


def parse_glb(data: bytes) -> tuple[dict, memoryview | None]:
    """Split a GLB (also .vrm) into its JSON document and BIN chunk."""
    if len(data) < 12:
        fail("GLB: truncated header")
    magic, version, length = struct.unpack_from("<4sII", data)
    if magic != GLB_MAGIC:
        fail("GLB: wrong magic (not a glTF binary)")
    if version != 2:
        fail(f"GLB: version {version} is not supported (only 2)")
    if length > len(data):
        fail(f"GLB: header declares {length} bytes but the file has {len(data)} (truncated)")
    if length < 20:
        fail("GLB: no JSON chunk")
    view = memoryview(data)[:length]
    pos, chunks = 12, []
    while pos < length:
        if length - pos < 8:
            fail(f"GLB: truncated chunk header at byte {pos}")
        chunk_length, chunk_type = struct.unpack_from("<II", view, pos)
        pos += 8
        if chunk_length > length - pos:
            fail(f"GLB: chunk at byte {pos - 8} declares {chunk_length} bytes past the end")
        chunks.append((chunk_type, view[pos : pos + chunk_length]))
        pos += chunk_length
    if chunks[0][0] != CHUNK_JSON:
        fail("GLB: the first chunk must be JSON")
    binary = chunks[1][1] if len(chunks) > 1 and chunks[1][0] == CHUNK_BIN else None
    return parse_json(chunks[0][1], "GLB JSON chunk"), binary


def check_header(doc: dict) -> None:
    """glTF 2.x only, and no required extension we would silently render wrong."""
    version = get_str(get_dict(doc, "asset", "glTF", required=True), "version")
    if not version.startswith("2."):
        fail(f"asset.version {version!r} is not supported (glTF 2.x only)")
    required = get_list(doc, "extensionsRequired", "glTF")
    unsupported = [e for e in required if not isinstance(e, str) or e not in SUPPORTED_EXTENSIONS]
    if unsupported:
        fail(f"required extension(s) not supported: {', '.join(map(str, unsupported))}")


@dataclass
class Document:
    """A parsed glTF document with lazily loaded, bounds-checked buffers."""

    json: dict
    limits: AssetLimits
    base_dir: Path | None
    binary: memoryview | None
    bytes_left: int
    _buffers: dict[int, memoryview] = field(default_factory=dict)
    _lists: dict[str, list[dict]] = field(default_factory=dict)

    def items(self, kind: str) -> list[dict]:
        """A top-level array (nodes, meshes, ...) whose entries are all objects."""
        if kind not in self._lists:
            values = get_list(self.json, kind, "glTF")
            for i, value in enumerate(values):
                if not isinstance(value, dict):
                    fail(f"{kind}[{i}] must be an object")
            self._lists[kind] = values
        return self._lists[kind]

    def item(self, kind: str, index: Any, where: str) -> dict:
        values = self.items(kind)
        if isinstance(index, bool) or not isinstance(index, int):
            fail(f"{where}: {kind} index must be an integer")
        if not 0 <= index < len(values):
            fail(f"{where}: {kind}[{index}] does not exist ({len(values)} defined)")
        return values[index]

    def read_uri(self, uri: Any, where: str) -> bytes:
        """Bytes of a data: URI or of a file beside the .gltf; never fetches from a network."""
        if not isinstance(uri, str):
            fail(f"{where}.uri must be a string")
        if uri.startswith("data:"):
            return _decode_data_uri(uri, where)
        if _SCHEME.match(uri):
            fail(f"{where}: URI {uri[:60]!r} is not supported (only data: and relative files)")
        if self.base_dir is None:
            fail(f"{where}: external file {uri[:60]!r} cannot be resolved when loading bytes")
        return self._read_file(unquote(uri), where)

    def _read_file(self, relative: str, where: str) -> bytes:
        if relative.startswith(("/", "\\")) or "\\" in relative or "\x00" in relative:
            fail(f"{where}: URI {relative[:60]!r} must be a relative path")
        base = self.base_dir.resolve()
        path = (base / relative).resolve()
        if not path.is_relative_to(base):
            fail(f"{where}: URI {relative[:60]!r} escapes the folder of the .gltf file")
        if not path.is_file():
            fail(f"{where}: file {relative[:60]!r} not found")
        size = path.stat().st_size
        if size > self.bytes_left:
            fail(f"{where}: file {relative[:60]!r} exceeds max_file_bytes")
        self.bytes_left -= size
        return path.read_bytes()

    def buffer(self, index: Any, where: str) -> memoryview:
        self.item("buffers", index, where)  # validates the index before it is used as a key
        if index not in self._buffers:
            self._buffers[index] = self._load_buffer(index, where)
        return self._buffers[index]

    def _load_buffer(self, index: Any, where: str) -> memoryview:
        spec = self.item("buffers", index, where)
        here = f"buffers[{index}]"
        byte_length = get_int(spec, "byteLength", here, lo=1)
        if "uri" in spec:
            data: bytes | memoryview = self.read_uri(spec["uri"], here)
        elif self.binary is not None:
            data = self.binary
        else:
            fail(f"{here}: no uri and no GLB binary chunk")
        if len(data) < byte_length:
            fail(f"{here}: byteLength {byte_length} but only {len(data)} bytes present")
        return memoryview(data)[:byte_length]

    def buffer_view(self, index: Any, where: str) -> tuple[memoryview, int | None]:
        """The bytes of a bufferView, and its byteStride when declared."""
        spec = self.item("bufferViews", index, where)
        here = f"bufferViews[{index}]"
        buffer = self.buffer(spec.get("buffer"), here)
        offset = get_int(spec, "byteOffset", here, default=0)
        length = get_int(spec, "byteLength", here, lo=1)
        if offset + length > len(buffer):
            fail(f"{here}: bytes {offset}..{offset + length} lie outside its buffer")
        stride = None
        if spec.get("byteStride") is not None:
            stride = get_int(spec, "byteStride", here, lo=4, hi=252)
        return buffer[offset : offset + length], stride


def _decode_data_uri(uri: str, where: str) -> bytes:
    header, comma, payload = uri.partition(",")
    if not comma or not header.endswith(";base64"):
        fail(f"{where}: only base64 data: URIs are supported")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        fail(f"{where}: broken base64 data URI ({exc})")


def open_source(
    source: str | Path | bytes | bytearray | memoryview, limits: AssetLimits
) -> tuple[Document, str]:
    """Read a path or bytes into a Document; returns it and a default display name."""
    if isinstance(source, bytes | bytearray | memoryview):
        data, base_dir, name = bytes(source), None, "avatar"
    else:
        path = Path(source)
        if not path.is_file():
            fail(f"file not found: {path}")
        if path.stat().st_size > limits.max_file_bytes:
            fail(f"file is larger than max_file_bytes ({limits.max_file_bytes})")
        data, base_dir, name = path.read_bytes(), path.parent, path.stem
    if len(data) > limits.max_file_bytes:
        fail(f"file is larger than max_file_bytes ({limits.max_file_bytes})")
    if data[:4] == GLB_MAGIC:
        doc, binary = parse_glb(data)
    elif data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{":
        doc, binary = parse_json(data, "glTF JSON"), None
    else:
        fail("not a glTF file (neither GLB magic nor a JSON object)")
    check_header(doc)
    left = limits.max_file_bytes - len(data)
    return Document(doc, limits, base_dir, binary, left), name
