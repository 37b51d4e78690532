"""The 64-bit mixing function every hash in spark-ps is built from.

SplitMix64's finaliser (Steele, Lea & Flood, OOPSLA 2014) turns clustered
feature ids into well-spread bits. It is used three ways, each deliberately
different so that the hashes stay independent of one another:

* shard routing mixes ``key + GOLDEN`` (:func:`spark_ps.client.slicer.shard_of`);
* a shard's hash index mixes ``key ^ seed``, a random seed per process (:mod:`spark_ps.native.keyindex`);
* seeded row initialisation mixes ``key ^ seed`` streams (:mod:`spark_ps.server.rowinit`).

Were routing and the index to share a hash, every key on shard ``s`` of
``n`` would have the same hash residue mod ``n``, and the index would only
ever use ``1/n`` of its slots.
"""

from __future__ import annotations

import numba
import numpy as np

#: 2**64 / golden ratio: SplitMix64's stream increment.
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


@numba.njit(cache=True, nogil=True, inline="always")
def mix64(z: np.uint64) -> np.uint64:
    """SplitMix64 finaliser of one 64-bit value (for numba kernels).

    Examples
    --------
    >>> int(mix64(np.uint64(0))), hex(int(mix64(np.uint64(1))))
    (0, '0x5692161d100b05e5')
    """
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def mix64_array(values: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser of a uint64 array, vectorised (wraps mod 2**64).

    Examples
    --------
    >>> import numpy as np
    >>> int(mix64_array(np.array([1], dtype=np.uint64))[0]) == int(mix64(np.uint64(1)))
    True
    """
    z = values.astype(np.uint64, copy=False)
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))
