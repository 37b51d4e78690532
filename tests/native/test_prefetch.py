"""Row gather/scatter with software prefetch, against numpy's fancy indexing."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from spark_ps.native.prefetch import PREFETCH_DISTANCE, gather_rows, prefetch_row, scatter_rows


@pytest.mark.parametrize("n_rows", [0, 1, PREFETCH_DISTANCE, PREFETCH_DISTANCE + 1, 5000])
@pytest.mark.parametrize("width", [1, 9])
def test_gather_and_scatter_match_numpy(n_rows, width):
    rng = np.random.default_rng(n_rows + width)
    source = rng.normal(size=(20_000, width)).astype(np.float32)
    rows = rng.choice(source.shape[0], n_rows, replace=False)
    out = np.empty((n_rows, width), np.float32)
    gather_rows(source, rows, out)
    np.testing.assert_array_equal(out, source[rows])

    target, expected = source.copy(), source.copy()
    values = rng.normal(size=(n_rows, width)).astype(np.float32)
    scatter_rows(target, rows, values)
    expected[rows] = values
    np.testing.assert_array_equal(target, expected)


def test_prefetch_accepts_any_integer_row_and_changes_nothing():
    @numba.njit
    def touch(values, rows):
        for i in range(rows.shape[0]):
            prefetch_row(values, rows[i])

    values = np.arange(12.0).reshape(6, 2)
    for dtype in (np.int32, np.int64, np.uint32):
        touch(values, np.array([5, 0, 3], dtype=dtype))
    np.testing.assert_array_equal(values, np.arange(12.0).reshape(6, 2))
