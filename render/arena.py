"""Growable buffers: flat arrays, regions handed out by offset, grown by doubling.

Kernels address every session's frame, background, overlays and scratch space through
offsets into a few flat arrays, so those arrays must grow without per-frame allocation,
and space freed by one session must be reusable by another of a different size (a day
of sessions opening, closing and changing scenes must not grow memory without bound).
"""

from __future__ import annotations

import bisect

import numpy as np


def grow(array: np.ndarray, needed: int) -> np.ndarray:
    """`array` if it holds `needed` elements along axis 0, else a doubled copy."""
    if array.shape[0] >= needed:
        return array
    size = max(needed, 2 * array.shape[0], 16)
    bigger = np.zeros((size, *array.shape[1:]), array.dtype)
    bigger[: array.shape[0]] = array
    return bigger


class Regions:
    """Offsets into a flat index space: best-fit reuse of freed regions, which merge with
    free neighbours; freeing the last region lowers the top."""

    def __init__(self) -> None:
        self.top = 0
        self._starts: list[int] = []  # free regions, sorted by start
        self._sizes: dict[int, int] = {}

    def alloc(self, size: int) -> int:
        if size <= 0:
            return 0
        best = None
        for start in self._starts:
            free = self._sizes[start]
            if free >= size and (best is None or free < self._sizes[best]):
                best = start
                if free == size:
                    break
        if best is None:
            offset = self.top
            self.top += size
            return offset
        free = self._sizes.pop(best)
        self._starts.remove(best)
        if free > size:
            self._insert(best + size, free - size)
        return best

    def free(self, offset: int, size: int) -> None:
        if size <= 0:
            return
        i = bisect.bisect_left(self._starts, offset)
        if i < len(self._starts) and self._starts[i] == offset + size:  # merge the next one
            size += self._sizes.pop(self._starts.pop(i))
        if i > 0 and self._starts[i - 1] + self._sizes[self._starts[i - 1]] == offset:
            offset = self._starts.pop(i - 1)  # merge into the previous one
            size += self._sizes.pop(offset)
        if offset + size == self.top:
            self.top = offset
        else:
            self._insert(offset, size)

    @property
    def free_total(self) -> int:
        return sum(self._sizes.values())

    def _insert(self, offset: int, size: int) -> None:
        bisect.insort(self._starts, offset)
        self._sizes[offset] = size


class Arena(Regions):
    """Regions of one flat array (rows of `width` elements when given). With `track_writes`,
    writes through `write` are kept until `take_written`, so a device copy can upload
    just them."""

    def __init__(self, dtype=np.uint8, width: int | None = None, track_writes: bool = False):
        super().__init__()
        self.data = grow(np.zeros((0,) if width is None else (0, width), dtype), 1)
        self.track_writes = track_writes
        self._written: list[tuple[int, int]] = []

    def alloc(self, size: int) -> int:
        offset = super().alloc(size)
        self.data = grow(self.data, self.top)
        return offset

    def view(self, offset: int, size: int) -> np.ndarray:
        return self.data[offset : offset + size]

    def write(self, offset: int, values: np.ndarray) -> None:
        """Copy `values` (its leading axis counts elements) into the arena at `offset`."""
        self.data[offset : offset + len(values)] = values
        if self.track_writes:
            self._written.append((offset, offset + len(values)))

    def take_written(self) -> list[tuple[int, int]]:
        """The [start, stop) ranges written since the last call, merged where they touch."""
        spans = sorted(self._written)
        self._written.clear()
        merged: list[tuple[int, int]] = []
        for start, stop in spans:
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(stop, merged[-1][1]))
            else:
                merged.append((start, stop))
        return merged
