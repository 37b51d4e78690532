"""sorted_unique_inverse against np.unique, its independent reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from spark_ps.native.factorize import sorted_unique_inverse

INT64 = np.iinfo(np.int64)


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.int64, st.integers(0, 300),
                  elements=st.one_of(st.integers(-5, 5), st.integers(int(INT64.min), int(INT64.max)))))
def test_matches_np_unique_on_any_int64(values):
    unique, inverse = sorted_unique_inverse(values)
    expected_unique, expected_inverse = np.unique(values, return_inverse=True)
    np.testing.assert_array_equal(unique, expected_unique)
    np.testing.assert_array_equal(inverse, expected_inverse.reshape(-1))
    assert unique.dtype == np.int64 and inverse.dtype == np.int64


def test_matches_np_unique_on_a_zipf_ctr_batch():
    rng = np.random.default_rng(3)
    values = (rng.zipf(1.3, 120_000) % 2**22).astype(np.int64)
    unique, inverse = sorted_unique_inverse(values)
    expected_unique, expected_inverse = np.unique(values, return_inverse=True)
    np.testing.assert_array_equal(unique, expected_unique)
    np.testing.assert_array_equal(inverse, expected_inverse)


def test_accepts_other_integer_dtypes_and_rejects_2d():
    unique, inverse = sorted_unique_inverse(np.array([3, 1, 3], dtype=np.int32))
    assert unique.tolist() == [1, 3] and inverse.tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="1-D"):
        sorted_unique_inverse(np.zeros((2, 2), np.int64))
