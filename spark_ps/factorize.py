"""Sorted unique values of an int64 array and each entry's position among them.

``np.unique(values, return_inverse=True)`` answers this by sorting every
entry: for a mini-batch of CTR rows (4096 rows x 30 non-zeros, ~25k distinct
features) that argsort is the largest cost of planning a batch, and planning
a 200k-row partition took 0.6-1.1 s. Here each entry is hashed once into an
open-addressing table sized for the input (no growth, no deletes), and only
the distinct values are sorted: linear in the entries, ``u log u`` in the
distinct values, 5-10x faster on such batches. Same result as ``np.unique``.
"""

from __future__ import annotations

import numba
import numpy as np

from spark_ps.hashing import mix64

__all__ = ["sorted_unique_inverse"]


@numba.njit(cache=True, nogil=True)
def _first_seen_ids(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values in first-seen order, and the first-seen id of every entry."""
    n = values.shape[0]
    capacity = 16
    while capacity < 2 * n:  # load factor <= 1/2: short probes, and an empty slot always ends one
        capacity *= 2
    mask = np.uint64(capacity - 1)
    slot_value = np.empty(capacity, dtype=np.int64)
    slot_id = np.full(capacity, -1, dtype=np.int64)  # -1: empty (every int64 can be a value)
    distinct = np.empty(n, dtype=np.int64)
    ids = np.empty(n, dtype=np.int64)
    count = 0
    for i in range(n):
        value = values[i]
        slot = np.int64(mix64(np.uint64(value)) & mask)
        while slot_id[slot] >= 0 and slot_value[slot] != value:
            slot = (slot + 1) & (capacity - 1)
        if slot_id[slot] < 0:
            slot_value[slot] = value
            slot_id[slot] = count
            distinct[count] = value
            count += 1
        ids[i] = slot_id[slot]
    return distinct[:count], ids


def sorted_unique_inverse(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(values, return_inverse=True)`` for int64, by hashing instead of sorting every entry.

    Parameters
    ----------
    values : array of int64, shape (n,)

    Returns
    -------
    unique : ndarray of int64
        The distinct values, ascending.
    inverse : ndarray of int64, shape (n,)
        ``unique[inverse] == values``.

    Examples
    --------
    >>> import numpy as np
    >>> unique, inverse = sorted_unique_inverse(np.array([7, -3, 7, 2**62], dtype=np.int64))
    >>> unique.tolist(), inverse.tolist()
    ([-3, 7, 4611686018427387904], [1, 0, 1, 2])
    """
    values = np.ascontiguousarray(values, dtype=np.int64)
    if values.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {values.shape}")
    distinct, ids = _first_seen_ids(values)
    order = np.argsort(distinct, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.shape[0])
    return distinct[order], rank[ids]
