"""glTF accessors to numpy: component types, normalization, byteStride, sparse substitution.

Byte ranges are checked against the bufferView before numpy sees them and element counts
against a caller-given ceiling, so a file cannot make us read outside a buffer or allocate
more than the limits allow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .gltf_io import Document, fail, get_dict, get_int, get_str

COMPONENT_TYPES: dict[int, np.dtype] = {
    5120: np.dtype("<i1"),
    5121: np.dtype("<u1"),
    5122: np.dtype("<i2"),
    5123: np.dtype("<u2"),
    5125: np.dtype("<u4"),
    5126: np.dtype("<f4"),
}
# Divisors of normalized integers (glTF 2.0 "Animations"/"Accessors": c / (2^(n-1) - 1)).
NORMALIZERS = {5120: 127.0, 5121: 255.0, 5122: 32767.0, 5123: 65535.0}
SIGNED = {5120, 5122}
# type -> (columns, rows); matrix columns start on 4-byte boundaries.
TYPES = {
    "SCALAR": (1, 1),
    "VEC2": (1, 2),
    "VEC3": (1, 3),
    "VEC4": (1, 4),
    "MAT2": (2, 2),
    "MAT3": (3, 3),
    "MAT4": (4, 4),
}
INDEX_TYPES = {5121, 5123, 5125}


@dataclass(frozen=True)
class AccessorInfo:
    """Declared shape of an accessor, known without reading any data."""

    index: int
    count: int
    component_type: int
    type: str
    normalized: bool

    @property
    def where(self) -> str:
        return f"accessors[{self.index}]"

    @property
    def width(self) -> int:
        cols, rows = TYPES[self.type]
        return cols * rows


def accessor_info(doc: Document, index: object, where: str) -> AccessorInfo:
    spec = doc.item("accessors", index, where)
    here = f"accessors[{index}]"
    component_type = get_int(spec, "componentType", here)
    if component_type not in COMPONENT_TYPES:
        fail(f"{here}: unknown componentType {component_type}")
    kind = get_str(spec, "type")
    if kind not in TYPES:
        fail(f"{here}: unknown type {spec.get('type')!r}")
    count = get_int(spec, "count", here, lo=0)
    normalized = spec.get("normalized") is True
    return AccessorInfo(int(index), count, component_type, kind, normalized)  # type: ignore[arg-type]


def _strided(
    view: memoryview, offset: int, count: int, stride: int, dtype: np.dtype, cols: int, rows: int
) -> np.ndarray:
    """Copy `count` elements out of `view`; the caller has checked the byte range."""
    size = dtype.itemsize
    column = -(-rows * size // 4) * 4 if cols > 1 else rows * size
    arr = np.ndarray(
        (count, cols, rows), dtype, buffer=view, offset=offset, strides=(stride, column, size)
    )
    return arr.reshape(count, cols * rows).copy()


def _element_bytes(dtype: np.dtype, cols: int, rows: int) -> int:
    if cols == 1:
        return rows * dtype.itemsize
    return cols * (-(-rows * dtype.itemsize // 4) * 4)


def _read_range(
    doc: Document, spec: dict, count: int, dtype: np.dtype, cols: int, rows: int, where: str
) -> np.ndarray:
    """Elements from spec.bufferView at spec.byteOffset, honouring the view's byteStride."""
    view, stride = doc.buffer_view(spec.get("bufferView"), where)
    offset = get_int(spec, "byteOffset", where, default=0)
    element = _element_bytes(dtype, cols, rows)
    stride = stride or element
    if stride < element:
        fail(f"{where}: byteStride {stride} is smaller than one element ({element} bytes)")
    if count == 0:
        return np.zeros((0, cols * rows), dtype)
    end = offset + stride * (count - 1) + element
    if end > len(view):
        fail(f"{where}: {count} elements need {end} bytes but the bufferView has {len(view)}")
    return _strided(view, offset, count, stride, dtype, cols, rows)


def _apply_sparse(doc: Document, spec: dict, info: AccessorInfo, out: np.ndarray) -> None:
    here = f"{info.where}.sparse"
    sparse = get_dict(spec, "sparse", info.where)
    n = get_int(sparse, "count", here, lo=1, hi=info.count)
    indices_spec = get_dict(sparse, "indices", here, required=True)
    index_type = get_int(indices_spec, "componentType", f"{here}.indices")
    if index_type not in INDEX_TYPES:
        fail(f"{here}.indices: componentType {index_type} is not an unsigned integer type")
    indices = _read_range(
        doc, indices_spec, n, COMPONENT_TYPES[index_type], 1, 1, f"{here}.indices"
    )
    indices = indices[:, 0].astype(np.int64)
    if indices.max() >= info.count:
        fail(f"{here}: index {int(indices.max())} is beyond count {info.count}")
    values_spec = get_dict(sparse, "values", here, required=True)
    cols, rows = TYPES[info.type]
    dtype = COMPONENT_TYPES[info.component_type]
    out[indices] = _read_range(doc, values_spec, n, dtype, cols, rows, f"{here}.values")


def read_raw(doc: Document, info: AccessorInfo, max_count: int) -> np.ndarray:
    """[count, width] in the file's component type, sparse values substituted."""
    if info.count > max_count:
        fail(f"{info.where}: count {info.count} exceeds the limit {max_count}")
    spec = doc.item("accessors", info.index, info.where)
    cols, rows = TYPES[info.type]
    dtype = COMPONENT_TYPES[info.component_type]
    if spec.get("bufferView") is not None:
        out = _read_range(doc, spec, info.count, dtype, cols, rows, info.where)
    else:
        out = np.zeros((info.count, cols * rows), dtype)
    if spec.get("sparse") is not None:
        _apply_sparse(doc, spec, info, out)
    return out


def _expect(info: AccessorInfo, types: tuple[str, ...], where: str) -> None:
    if info.type not in types:
        fail(f"{where}: {info.where} has type {info.type}, expected {' or '.join(types)}")


def read_floats(
    doc: Document, index: object, where: str, types: tuple[str, ...], max_count: int
) -> np.ndarray:
    """float32 [count, width]: normalized integers scaled per spec, NaN/inf rejected."""
    info = accessor_info(doc, index, where)
    _expect(info, types, where)
    raw = read_raw(doc, info, max_count)
    if info.component_type == 5126:
        out = raw.astype(np.float32)
        if not np.isfinite(out).all():
            fail(f"{where}: {info.where} contains NaN or infinite values")
        return out
    out = raw.astype(np.float32)
    if info.normalized and info.component_type in NORMALIZERS:
        out /= NORMALIZERS[info.component_type]
        if info.component_type in SIGNED:
            np.maximum(out, -1.0, out=out)
    return out


def read_ints(
    doc: Document, index: object, where: str, types: tuple[str, ...], max_count: int
) -> np.ndarray:
    """int64 [count, width] from an unsigned integer accessor (indices, joints)."""
    info = accessor_info(doc, index, where)
    _expect(info, types, where)
    if info.component_type not in INDEX_TYPES:
        fail(f"{where}: {info.where} must use an unsigned integer componentType")
    return read_raw(doc, info, max_count).astype(np.int64)
