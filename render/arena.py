"""Growable buffers: flat arrays, regions handed out by offset, grown by doubling.

Kernels address every session's frame, background, overlays and scratch space through
offsets into a few flat arrays, so those arrays must grow without per-frame allocation,
and space freed by one session must be reusable by another of a different size (a day
of sessions opening, closing and changing scenes must not grow memory without bound).

An Arena's array lives in address space reserved up front (as much as the machine has
memory; a page costs memory only once written), so it grows by a longer view of the same
pages: doubling a multi-GB background or texture arena copies nothing and never stalls
the engine, and views handed out earlier stay valid.
"""

from __future__ import annotations

import bisect
import mmap
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# Python < 3.13 lacks the constant; without it Linux would count the whole reservation
# against memory at once and refuse it.
_MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000 if sys.platform.startswith("linux") else 0)


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


def reserve_bytes() -> int:
    """Address space one arena reserves: the machine's memory (an arena never usefully
    holds more); 0 where that is unknown."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def _reserve(dtype: np.dtype, row: tuple[int, ...]) -> np.ndarray | None:
    """Reserved address space as one array of rows, or None where the OS refuses it (the
    arena then grows by copying, as ordinary arrays do)."""
    row_bytes = np.dtype(dtype).itemsize * int(np.prod(row, dtype=np.int64))
    rows = reserve_bytes() // row_bytes
    if rows < 16:
        return None
    try:
        space = mmap.mmap(-1, rows * row_bytes, flags=mmap.MAP_PRIVATE | _MAP_NORESERVE)
    except (OSError, ValueError, AttributeError):
        return None
    return np.frombuffer(space, dtype).reshape(rows, *row)


class _WriteLog:
    """[start, stop) ranges written since last taken (only when tracking is on)."""

    def __init__(self, track: bool) -> None:
        self.track = track
        self._spans: list[tuple[int, int]] = []

    def record(self, start: int, stop: int) -> None:
        if self.track and stop > start:
            self._spans.append((start, stop))

    def take(self) -> list[tuple[int, int]]:
        """The ranges, sorted and merged where they touch; the log is emptied."""
        spans = sorted(self._spans)
        self._spans.clear()
        merged: list[tuple[int, int]] = []
        for start, stop in spans:
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(stop, merged[-1][1]))
            else:
                merged.append((start, stop))
        return merged


class Arena(Regions):
    """Regions of one flat array (rows of `width` elements when given). With `track_writes`,
    writes through `write` are kept until `take_written`, so a device copy can upload
    just them."""

    def __init__(self, dtype=np.uint8, width: int | None = None, track_writes: bool = False):
        super().__init__()
        row = () if width is None else (width,)
        self._space = _reserve(dtype, row)
        empty = np.zeros((0, *row), dtype) if self._space is None else self._space[:0]
        self.data = self._grown(empty, 1)
        self._log = _WriteLog(track_writes)

    def alloc(self, size: int) -> int:
        offset = super().alloc(size)
        self.data = self._grown(self.data, self.top)
        return offset

    def _grown(self, data: np.ndarray, needed: int) -> np.ndarray:
        """`data`, or a doubled view of the reserved pages (a copy past the reservation)."""
        space = self._space
        if data.shape[0] >= needed or space is None or needed > len(space):
            return grow(data, needed)
        return space[: min(max(needed, 2 * data.shape[0], 16), len(space))]

    def view(self, offset: int, size: int) -> np.ndarray:
        return self.data[offset : offset + size]

    def write(self, offset: int, values: np.ndarray) -> None:
        """Copy `values` (its leading axis counts elements) into the arena at `offset`."""
        self.data[offset : offset + len(values)] = values
        self._log.record(offset, offset + len(values))

    def take_written(self) -> list[tuple[int, int]]:
        return self._log.take()


class Table(Regions):
    """Rows of several column arrays (a struct of arrays) handed out together; each column
    is an attribute. Writes are logged like an Arena's."""

    def __init__(self, columns: dict[str, tuple], track_writes: bool = False) -> None:
        """`columns`: name -> (dtype, shape of one row)."""
        super().__init__()
        self.columns = tuple(columns)
        for name, (dtype, shape) in columns.items():
            setattr(self, name, grow(np.zeros((0, *shape), dtype), 1))
        self._log = _WriteLog(track_writes)

    def alloc(self, size: int) -> int:
        start = super().alloc(size)
        for name in self.columns:
            setattr(self, name, grow(getattr(self, name), self.top))
        return start

    def write(self, column: str, start: int, values: np.ndarray) -> None:
        getattr(self, column)[start : start + len(values)] = values
        self._log.record(start, start + len(values))

    def take_written(self) -> list[tuple[int, int]]:
        return self._log.take()


@dataclass
class PendingCopy:
    """Rows of `source` still to be written, from `offset` on, by `write(offset, rows)`."""

    write: Callable[[int, np.ndarray], None]
    offset: int
    source: np.ndarray
    done: int = 0


def copy_some(copies: list[PendingCopy], max_bytes: int | None = None) -> bool:
    """Carry out up to `max_bytes` of `copies` (all when None), oldest first, removing
    finished ones; True when none are left. Large copies go in pieces, so a caller with
    a deadline (the engine between ticks) never blocks for the whole of one."""
    budget = max_bytes
    while copies and (budget is None or budget > 0):
        copy = copies[0]
        left = len(copy.source) - copy.done
        row_bytes = max(1, copy.source[:1].nbytes)
        rows = left if budget is None else min(left, max(1, budget // row_bytes))
        copy.write(copy.offset + copy.done, copy.source[copy.done : copy.done + rows])
        copy.done += rows
        if budget is not None:
            budget -= rows * row_bytes
        if copy.done == len(copy.source):
            copies.pop(0)
    return not copies
