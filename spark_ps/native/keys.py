"""The one rule for keys, wherever they enter: a client call, the key index, a table, an import.

A key is a 64-bit feature id. Hashed ids span all 64 bits, so:

* any integer dtype is accepted; ``uint64`` is reinterpreted bit for bit as
  ``int64`` (``2**64 - 1`` is key ``-1``), narrower integers are widened;
* floats, bools and objects are refused, since truncating them would alias
  features silently (an empty float array, what ``np.asarray([])`` gives, is
  an empty key array);
* keys are 1-D.

Requests carry their keys sorted and unique (ps-lite's contract), which
:func:`is_sorted_unique` checks in one vectorised pass.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["as_keys", "is_sorted_unique"]


def as_keys(keys: Any, what: str = "keys") -> np.ndarray:
    """Validate ``keys`` and return them as a 1-D int64 array (a view where possible).

    Parameters
    ----------
    keys : array-like of integers
        Feature ids of any integer dtype.
    what : str
        How the error messages name the input (e.g. ``"table 'w': push keys"``).

    Raises
    ------
    ValueError
        If ``keys`` is not 1-D.
    TypeError
        If ``keys`` is not of an integer dtype.

    Examples
    --------
    >>> import numpy as np
    >>> as_keys([3, 1, 2]).dtype
    dtype('int64')
    >>> as_keys(np.array([2**64 - 1], dtype=np.uint64)).tolist()
    [-1]
    >>> as_keys(np.array([1.5]))
    Traceback (most recent call last):
    ...
    TypeError: keys must be integers (int64 feature ids), got dtype float64
    """
    arr = np.asarray(keys)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be a 1-D array, got shape {arr.shape}")
    if arr.dtype == np.int64:
        return arr
    if arr.dtype == np.uint64:
        return arr.view(np.int64)
    if arr.dtype.kind not in "iu" or arr.dtype == np.bool_:
        if arr.size == 0 and arr.dtype.kind == "f":
            return arr.astype(np.int64)
        raise TypeError(f"{what} must be integers (int64 feature ids), got dtype {arr.dtype}")
    return arr.astype(np.int64)


def is_sorted_unique(keys: np.ndarray) -> bool:
    """Whether 1-D ``keys`` are strictly increasing: the order every request carries them in on the wire.

    Examples
    --------
    >>> import numpy as np
    >>> is_sorted_unique(np.array([-3, 0, 7])), is_sorted_unique(np.array([1, 1]))
    (True, False)
    """
    return keys.shape[0] < 2 or bool(np.all(keys[1:] > keys[:-1]))
