"""Row initialisers: determinism per (key, seed, column) and the Normal distribution."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spark_ps.server.rowinit import Normal, Zeros, make_init

INT64 = np.iinfo(np.int64)


def test_zeros():
    rows = Zeros().rows(np.array([INT64.min, 0, 5]), 3)
    assert rows.dtype == np.float32 and rows.shape == (3, 3) and not rows.any()


def test_normal_row_depends_only_on_key_seed_and_column():
    init = Normal(sigma=0.5, seed=11)
    rng = np.random.default_rng(0)
    keys = np.concatenate([[INT64.min, -1, 0, INT64.max], rng.integers(-10**15, 10**15, 500)])
    whole = init.rows(keys, 6)
    # Any batch composition and order gives each key the same row.
    for _ in range(5):
        subset = rng.choice(len(keys), size=rng.integers(1, len(keys)), replace=False)
        np.testing.assert_array_equal(init.rows(keys[subset], 6), whole[subset])
    for key, row in zip(keys[:20], whole[:20], strict=True):
        np.testing.assert_array_equal(init.rows(np.array([key]), 6)[0], row)
    # Column c does not depend on the width asked for.
    np.testing.assert_array_equal(init.rows(keys, 2), whole[:, :2])
    # A fresh instance with the same parameters agrees; another seed does not.
    np.testing.assert_array_equal(Normal(sigma=0.5, seed=11).rows(keys, 6), whole)
    other = Normal(sigma=0.5, seed=12).rows(keys, 6)
    assert np.mean(other == whole) < 0.01


def test_normal_is_gaussian_with_independent_entries():
    sigma = 0.25
    samples = Normal(sigma=sigma, seed=3).rows(np.arange(40_000), 5).astype(np.float64)
    flat = samples.ravel()
    n = flat.size
    assert abs(flat.mean()) < 4 * sigma / math.sqrt(n)
    assert abs(flat.std() / sigma - 1) < 4 / math.sqrt(2 * n)
    # Empirical CDF against the normal CDF at a few quantiles (a coarse Kolmogorov–Smirnov check).
    for x in (-2.0, -1.0, -0.3, 0.0, 0.7, 1.5, 2.5):
        expected = 0.5 * (1 + math.erf(x / math.sqrt(2)))
        assert abs(np.mean(flat < x * sigma) - expected) < 5 * math.sqrt(expected * (1 - expected) / n) + 1e-4
    # Columns, and consecutive keys, are uncorrelated; so are their squares,
    # which would catch two columns sharing a Box–Muller radius.
    for transformed in (samples, samples**2):
        corr = np.corrcoef(transformed.T)
        assert np.abs(corr - np.eye(5)).max() < 0.03
    assert abs(np.corrcoef(samples[:-1, 0], samples[1:, 0])[0, 1]) < 0.03
    assert np.isfinite(samples).all()


def test_make_init_and_validation():
    assert make_init("zeros") == Zeros()
    assert make_init("normal", sigma=0.1, seed=2) == Normal(0.1, 2)
    assert make_init("normal").params() == {"sigma": 0.01, "seed": 0}
    with pytest.raises(ValueError, match="'uniform'"):
        make_init("uniform")
    with pytest.raises(ValueError, match="stddev"):
        make_init("normal", stddev=0.1)
    with pytest.raises(ValueError, match="sigma"):
        make_init("zeros", sigma=1.0)
    for bad in (0.0, -1.0, float("nan"), float("inf"), True, "0.1"):
        with pytest.raises(ValueError, match="sigma"):
            Normal(sigma=bad)
    with pytest.raises(ValueError, match="seed"):
        Normal(seed=1.5)
    with pytest.raises(ValueError, match="width"):
        Normal().rows(np.array([1]), 0)
    with pytest.raises(ValueError, match="1-D integer"):
        Zeros().rows(np.array([1.0]), 1)
