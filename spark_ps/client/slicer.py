"""Route keys to shards by hash, ps-lite style.

Hashed feature ids are often clustered (a few fields dominate a range), so the
shard is chosen from a mixed hash of the key, not from the key's range: that
spreads both keys and load evenly whatever the key distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spark_ps.native.hashing import GOLDEN, mix64_array

__all__ = ["Slices", "routing_hash", "shard_of", "slice_keys"]


def routing_hash(keys: np.ndarray) -> np.ndarray:
    """uint64 hash of int64 keys used for shard routing (see :mod:`spark_ps.native.hashing`).

    Examples
    --------
    >>> import numpy as np
    >>> h = routing_hash(np.array([0, 1, -1], dtype=np.int64))
    >>> h.dtype, len(set(h.tolist()))
    (dtype('uint64'), 3)
    """
    return mix64_array(keys.astype(np.int64, copy=False).view(np.uint64) + GOLDEN)


def shard_of(keys: np.ndarray, num_shards: int) -> np.ndarray:
    """Shard index (int64) of each key.

    Examples
    --------
    >>> import numpy as np
    >>> s = shard_of(np.arange(10_000, dtype=np.int64), 4)
    >>> sorted(set(s.tolist()))
    [0, 1, 2, 3]
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be at least 1, got {num_shards}")
    if num_shards == 1:
        return np.zeros(len(keys), dtype=np.int64)
    return (routing_hash(keys) % np.uint64(num_shards)).astype(np.int64)


@dataclass(frozen=True)
class Slices:
    """Sorted unique keys grouped by shard.

    ``order[bounds[s]:bounds[s + 1]]`` are the positions (into the sorted
    unique key array) of the keys that live on shard ``s``, in ascending key
    order, so each per-shard slice is itself sorted and unique.

    Examples
    --------
    >>> import numpy as np
    >>> s = slice_keys(np.arange(100, dtype=np.int64), 2)
    >>> int(s.bounds[0]), int(s.bounds[-1]), len(s.order)
    (0, 100, 100)
    """

    order: np.ndarray
    bounds: np.ndarray

    def positions(self, shard: int) -> np.ndarray:
        """Positions (into the sorted unique keys) of the keys on ``shard``, ascending.

        Examples
        --------
        >>> import numpy as np
        >>> keys = np.array([3, 8, 21, 40], dtype=np.int64)
        >>> s, shards = slice_keys(keys, 2), shard_of(keys, 2)
        >>> all(keys[s.positions(i)].tolist() == keys[shards == i].tolist() for i in range(2))
        True
        """
        return self.order[self.bounds[shard]: self.bounds[shard + 1]]


def slice_keys(sorted_keys: np.ndarray, num_shards: int) -> Slices:
    """Group sorted unique keys by shard, keeping each group sorted.

    Examples
    --------
    >>> import numpy as np
    >>> keys = np.arange(8, dtype=np.int64)
    >>> s = slice_keys(keys, 3)
    >>> sorted(np.concatenate([keys[s.positions(i)] for i in range(3)]).tolist())
    [0, 1, 2, 3, 4, 5, 6, 7]
    """
    shards = shard_of(sorted_keys, num_shards)
    # A stable sort by shard keeps ascending key order inside every shard.
    order = np.argsort(shards, kind="stable")
    bounds = np.zeros(num_shards + 1, dtype=np.int64)
    np.cumsum(np.bincount(shards, minlength=num_shards), out=bounds[1:])
    return Slices(order, bounds)
