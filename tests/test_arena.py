"""Regions and arenas: freed space is reused whatever its size, and memory stays bounded."""

from __future__ import annotations

import numpy as np

from avatarfarm.render.arena import Arena, Regions


def test_freed_regions_merge_and_are_reused_by_other_sizes():
    r = Regions()
    a, b, c = r.alloc(100), r.alloc(50), r.alloc(10)
    assert (a, b, c) == (0, 100, 150)
    r.free(a, 100)
    r.free(b, 50)  # merges with a: one free region of 150
    assert r.alloc(120) == 0  # a size never allocated before fits into the merged space
    assert r.alloc(30) == 120
    assert r.top == 160


def test_best_fit_keeps_large_regions_for_large_requests():
    r = Regions()
    big, _, small, _ = r.alloc(1000), r.alloc(1), r.alloc(10), r.alloc(1)
    r.free(big, 1000)
    r.free(small, 10)
    assert r.alloc(8) == small  # the tight hole, not the big one
    assert r.alloc(900) == big


def test_freeing_the_last_regions_lowers_the_top():
    r = Regions()
    a, b = r.alloc(10), r.alloc(20)
    r.free(a, 10)
    r.free(b, 20)
    assert r.top == 0 and r.free_total == 0


def test_churn_of_mixed_sizes_stays_bounded():
    """A day of sessions with different background lengths opening and closing."""
    rng = np.random.default_rng(1)
    r = Regions()
    live: list[tuple[int, int]] = []
    for _ in range(5000):
        if len(live) < 20 or (len(live) < 40 and rng.random() < 0.5):
            size = int(rng.integers(1, 300)) * 1000
            live.append((r.alloc(size), size))
        else:
            r.free(*live.pop(int(rng.integers(len(live)))))
    assert r.top <= 3 * 40 * 300_000  # no unbounded growth from holes of the wrong size
    spans = sorted(live)
    assert all(a + n <= b for (a, n), (b, _) in zip(spans, spans[1:], strict=False))


def test_written_ranges_are_merged_and_only_tracked_when_asked():
    arena = Arena(track_writes=True)
    base = arena.alloc(64)
    arena.write(base + 16, np.full(8, 7, np.uint8))
    arena.write(base, np.full(16, 5, np.uint8))
    arena.write(base + 40, np.full(4, 9, np.uint8))
    assert arena.take_written() == [(base, base + 24), (base + 40, base + 44)]
    assert arena.take_written() == []
    assert arena.view(base, 24).tolist() == [5] * 16 + [7] * 8
    quiet = Arena()
    quiet.write(quiet.alloc(4), np.ones(4, np.uint8))
    assert quiet.take_written() == []


def test_growing_moves_nothing_and_keeps_earlier_views_valid():
    """A doubling arena is a longer view of the pages it reserved: what was written stays
    where it is (no copy of a multi-GB arena on the engine thread) and so do views of it."""
    arena = Arena(np.uint8, width=4)
    first = arena.alloc(1000)
    arena.write(first, np.full((1000, 4), 7, np.uint8))
    view = arena.view(first, 1000)
    before = arena.data.__array_interface__["data"][0]
    arena.alloc(64 << 20)  # 256 MiB of RGBA: many doublings at once
    assert arena.data.shape[0] >= (64 << 20) + 1000
    assert arena.data.__array_interface__["data"][0] == before  # grown in place
    assert np.shares_memory(view, arena.data) and (view == 7).all()
    arena.write(first, np.full((1000, 4), 9, np.uint8))
    assert (view == 9).all()  # the old view sees writes made after the growth
