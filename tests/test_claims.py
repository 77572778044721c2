"""CPU work claiming (kernels/backend.py): every item exactly once, idle workers help."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from avatarfarm.kernels.backend import claim_counters, claim_item, start_claims


@numba.njit(parallel=True)
def _claim_all(n_items, workers, claims, done_by):
    """Each worker marks the items it claims; an item claimed twice counts twice."""
    start_claims(claims, workers, n_items)
    for w in numba.prange(workers):
        done = 0
        while True:
            item, done = claim_item(claims, w, workers, n_items, done)
            if item < 0:
                break
            done_by[item, w] += 1


@pytest.mark.parametrize("n_items, workers", [(0, 2), (1, 2), (7, 2), (1000, 2), (5, 8), (99, 3)])
def test_every_item_is_claimed_exactly_once(n_items, workers):
    done_by = np.zeros((n_items, workers), np.int64)
    _claim_all(n_items, workers, np.zeros(workers, np.int64), done_by)
    np.testing.assert_array_equal(done_by.sum(1), 1)


def test_a_worker_takes_its_own_slice_in_order_then_the_others():
    """What a thread does when the other one is descheduled: its own items first (they
    are contiguous, so they share caches), then the rest of the other slice."""
    claims = np.zeros(2, np.int64)
    start_claims(claims, 2, 10)
    taken, done = [], 0
    while True:
        item, done = claim_item(claims, 1, 2, 10, done)
        if item < 0:
            break
        taken.append(item)
    assert taken == [5, 6, 7, 8, 9, 0, 1, 2, 3, 4]
    assert claim_item(claims, 0, 2, 10, 0)[0] == -1  # nothing left for the late worker


def test_a_late_worker_still_takes_what_is_left_of_its_slice():
    claims = np.zeros(2, np.int64)
    start_claims(claims, 2, 10)
    assert claim_item(claims, 1, 2, 10, 0) == (5, 0)
    assert claim_item(claims, 0, 2, 10, 0) == (0, 0)
    assert claim_item(claims, 1, 2, 10, 0) == (6, 0)


def test_each_launching_thread_has_its_own_counters():
    import threading

    mine = claim_counters()
    assert claim_counters() is mine
    other = []
    thread = threading.Thread(target=lambda: other.append(claim_counters()))
    thread.start()
    thread.join()
    assert other[0] is not mine
    assert mine.shape[0] >= numba.get_num_threads()
