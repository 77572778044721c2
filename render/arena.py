"""Growable buffers: one flat array, regions handed out by offset, grown by doubling.

Kernels address every session's frame, background and scratch space through offsets into
a few flat arrays, so those arrays must be able to grow without per-frame allocation.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def grow(array: np.ndarray, needed: int) -> np.ndarray:
    """`array` if it holds `needed` elements along axis 0, else a doubled copy."""
    if array.shape[0] >= needed:
        return array
    size = max(needed, 2 * array.shape[0], 16)
    bigger = np.zeros((size, *array.shape[1:]), array.dtype)
    bigger[: array.shape[0]] = array
    return bigger


class Arena:
    """Regions of one flat uint8 array; freed regions are reused by later ones of equal size
    (sessions mostly share a handful of frame sizes)."""

    def __init__(self, dtype=np.uint8) -> None:
        self.data = np.zeros(0, dtype)
        self._top = 0
        self._free: dict[int, list[int]] = defaultdict(list)

    def alloc(self, size: int) -> int:
        if self._free[size]:
            return self._free[size].pop()
        offset = self._top
        self._top += size
        self.data = grow(self.data, self._top)
        return offset

    def free(self, offset: int, size: int) -> None:
        self._free[size].append(offset)

    def view(self, offset: int, size: int) -> np.ndarray:
        return self.data[offset : offset + size]
