"""Initial values of table rows that have never been pushed.

A table creates a row only when a key is first pushed, but any key can be
pulled before that. The initialiser therefore has to be a *pure function* of
the key: a pull of an absent key returns ``init.rows([key])`` without storing
anything, and the row that the first push creates starts from the very same
values. Two workers pulling the same absent key in different batches, or the
same worker before and after a restart, must see identical rows.

:class:`Normal` gets that property from counter-based randomness instead of a
stateful generator: each entry ``(key, column)`` hashes ``key``, ``seed`` and
``column`` with splitmix64 into two independent 53-bit uniforms and turns them
into a Gaussian with the Box–Muller transform. The hash is part of the
definition of the initial values (a checkpoint of a table that still has
absent keys relies on it), so it is spelled out here rather than shared with
the key index, whose hash may change freely.
"""

from __future__ import annotations

import inspect
import math
import numbers
from typing import Any

import numba
import numpy as np

from spark_ps.native.hashing import GOLDEN, mix64

__all__ = ["Initializer", "Normal", "Zeros", "make_init"]

_SEED_SALT = 0x5DEECE66D  # keeps seed 0 from hashing to key 0's stream
_TWO_PI = 2.0 * math.pi
_INV_2_53 = 1.0 / 9007199254740992.0  # 2**-53: a 53-bit integer to a double in [0, 1)


@numba.njit(cache=True, nogil=True)
def _normal_kernel(keys: np.ndarray, seed_hash: np.uint64, sigma: float, out: np.ndarray) -> None:
    for i in range(out.shape[0]):
        stream = mix64(np.uint64(keys[i]) ^ seed_hash)
        for c in range(out.shape[1]):
            # Two counters per column: entry (key, c) owns the stream positions 2c+1 and 2c+2.
            h1 = mix64(stream + np.uint64(2 * c + 1) * GOLDEN)
            h2 = mix64(stream + np.uint64(2 * c + 2) * GOLDEN)
            u1 = (np.float64(h1 >> np.uint64(11)) + 1.0) * _INV_2_53  # (0, 1]: log(u1) is finite
            u2 = np.float64(h2 >> np.uint64(11)) * _INV_2_53  # [0, 1)
            out[i, c] = sigma * math.sqrt(-2.0 * math.log(u1)) * math.cos(_TWO_PI * u2)


def _check_rows_args(keys: np.ndarray, width: int) -> np.ndarray:
    keys = np.asarray(keys)
    if keys.ndim != 1 or (keys.size and keys.dtype.kind not in "iu"):
        raise ValueError(f"keys must be a 1-D integer array, got {keys.dtype} with shape {keys.shape}")
    if not isinstance(width, numbers.Integral) or width < 1:
        raise ValueError(f"width must be a positive integer, got {width!r}")
    return keys.astype(np.int64, copy=False)


class Initializer:
    """Base class: maps keys to their initial rows, independently of each other."""

    #: Name accepted by :func:`make_init`.
    name: str = ""

    def rows(self, keys: np.ndarray, width: int) -> np.ndarray:
        """Initial rows of ``keys`` as a float32 array of shape ``(len(keys), width)``.

        Examples
        --------
        >>> import numpy as np
        >>> make_init("normal", sigma=0.5).rows(np.array([4, 4]), 2).shape      # the same key, the same row
        (2, 2)
        """
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """Constructor arguments; ``make_init(init.name, **init.params())`` rebuilds it.

        Examples
        --------
        >>> init = Normal(sigma=0.2, seed=3)
        >>> init.params(), make_init(init.name, **init.params()) == init
        ({'sigma': 0.2, 'seed': 3}, True)
        """
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.params() == self.params()

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(self.params().items()))))


class Zeros(Initializer):
    """Every row starts at zero.

    Examples
    --------
    >>> import numpy as np
    >>> Zeros().rows(np.array([3, 9]), 2).tolist()
    [[0.0, 0.0], [0.0, 0.0]]
    """

    name = "zeros"

    def rows(self, keys: np.ndarray, width: int) -> np.ndarray:
        """Zero rows of ``keys``: float32 ``(len(keys), width)``.

        Examples
        --------
        >>> import numpy as np
        >>> Zeros().rows(np.array([], dtype=np.int64), 3).shape
        (0, 3)
        """
        keys = _check_rows_args(keys, width)
        return np.zeros((keys.shape[0], width), dtype=np.float32)


class Normal(Initializer):
    """Rows drawn from N(0, sigma²), reproducibly per (key, seed, column).

    The value of an entry depends only on its key, the seed and its column:
    not on which other keys are in the batch, their order, or the width
    requested (column ``c`` of a width-4 row equals column ``c`` of a width-8
    row), so pulls of absent keys agree across workers and time.

    Parameters
    ----------
    sigma : float, default 0.01
        Standard deviation, > 0. Small values are the usual choice for
        embedding and factorization-machine factors.
    seed : int, default 0
        Any integer; only its low 64 bits are used.

    Examples
    --------
    >>> import numpy as np
    >>> init = Normal(sigma=0.1, seed=7)
    >>> a = init.rows(np.array([5, 11]), 3)
    >>> b = init.rows(np.array([11, 2, 5]), 3)
    >>> bool((a[0] == b[2]).all() and (a[1] == b[0]).all())
    True
    >>> a.dtype, a.shape
    (dtype('float32'), (2, 3))
    """

    name = "normal"

    def __init__(self, sigma: float = 0.01, seed: int = 0) -> None:
        if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"normal init: sigma must be a finite number > 0, got {sigma!r}")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise ValueError(f"normal init: seed must be an integer, got {seed!r}")
        self.sigma = float(sigma)
        self.seed = int(seed)
        self._seed_hash = np.uint64(int(mix64(np.uint64((self.seed ^ _SEED_SALT) & (2**64 - 1)))))

    def rows(self, keys: np.ndarray, width: int) -> np.ndarray:
        """The seeded N(0, sigma²) rows of ``keys``: float32 ``(len(keys), width)``.

        Examples
        --------
        >>> import numpy as np
        >>> wide, narrow = Normal(seed=1).rows(np.array([8]), 4), Normal(seed=1).rows(np.array([8]), 2)
        >>> bool((wide[:, :2] == narrow).all()), bool((wide != Normal(seed=2).rows(np.array([8]), 4)).all())
        (True, True)
        """
        keys = _check_rows_args(keys, width)
        out = np.empty((keys.shape[0], width), dtype=np.float32)
        _normal_kernel(keys, self._seed_hash, self.sigma, out)  # computes in float64, stores float32
        return out

    def params(self) -> dict[str, Any]:
        """``sigma`` and ``seed``.

        Examples
        --------
        >>> Normal(seed=5).params()
        {'sigma': 0.01, 'seed': 5}
        """
        return {"sigma": self.sigma, "seed": self.seed}


_INITIALIZERS: dict[str, type[Initializer]] = {cls.name: cls for cls in (Zeros, Normal)}


def make_init(name: str, **params: Any) -> Initializer:
    """Build an initialiser by name: ``"zeros"`` or ``"normal"``.

    Parameters
    ----------
    name : str
        ``"zeros"`` (no parameters) or ``"normal"`` (``sigma``, ``seed``).
    **params
        Constructor arguments of the initialiser.

    Raises
    ------
    ValueError
        For an unknown name, an unknown parameter or an invalid value.

    Examples
    --------
    >>> make_init("normal", sigma=0.05, seed=1)
    Normal(sigma=0.05, seed=1)
    >>> make_init("zeros")
    Zeros()
    """
    cls = _INITIALIZERS.get(name)
    if cls is None:
        raise ValueError(f"unknown row initialiser {name!r}; known: {', '.join(sorted(_INITIALIZERS))}")
    accepted_names = list(inspect.signature(cls).parameters)
    unknown = sorted(set(params) - set(accepted_names))
    if unknown:
        accepted = ", ".join(accepted_names) or "none"
        raise ValueError(f"row initialiser {name!r} got unknown parameter(s) {', '.join(unknown)} "
                         f"(accepted: {accepted})")
    return cls(**params)
