"""KeyIndex against a Python dict, the obvious reference for a key -> row map."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spark_ps.native.keyindex import KeyIndex

INT64 = np.iinfo(np.int64)
EXTREMES = np.array([INT64.min, INT64.min + 1, -1, 0, 1, INT64.max - 1, INT64.max], dtype=np.int64)


class DictIndex:
    """Reference: rows handed out in first-occurrence order."""

    def __init__(self):
        self.rows: dict[int, int] = {}

    def lookup(self, keys):
        return np.array([self.rows.get(int(k), -1) for k in keys], dtype=np.int64)

    def lookup_or_insert(self, keys):
        for k in keys:
            self.rows.setdefault(int(k), len(self.rows))
        return self.lookup(keys)


def assert_same(index: KeyIndex, ref: DictIndex):
    assert len(index) == len(ref.rows)
    expected_keys = np.array(sorted(ref.rows, key=ref.rows.get), dtype=np.int64)
    np.testing.assert_array_equal(index.keys(), expected_keys)
    assert index.capacity >= 2 * len(index), "load factor must stay <= 1/2"
    assert index.capacity & (index.capacity - 1) == 0, "capacity must be a power of two"


def random_keys(rng, n):
    return rng.integers(INT64.min, INT64.max, n, dtype=np.int64, endpoint=True)


def test_matches_dict_through_growth_with_extreme_keys():
    rng = np.random.default_rng(0)
    index, ref = KeyIndex(), DictIndex()
    universe = np.concatenate([EXTREMES, random_keys(rng, 3000)])
    for step in range(25):
        # Batches mix new keys, keys seen before and repeats within the batch.
        keys = rng.choice(universe, size=rng.integers(0, 400))
        if step % 3 == 0:
            keys = np.unique(keys)  # the server's sorted-unique case
        probe = rng.choice(universe, size=300)
        np.testing.assert_array_equal(index.lookup(probe), ref.lookup(probe))
        np.testing.assert_array_equal(index.lookup_or_insert(keys), ref.lookup_or_insert(keys))
        assert_same(index, ref)
    assert index.capacity > 16, "the test must have exercised growth"
    np.testing.assert_array_equal(index.lookup(EXTREMES) >= 0, [int(k) in ref.rows for k in EXTREMES])


def test_new_keys_get_consecutive_rows_in_input_order():
    index = KeyIndex()
    assert index.lookup_or_insert(np.array([INT64.max, 0, INT64.min])).tolist() == [0, 1, 2]
    assert index.lookup_or_insert(np.array([5, 0, -5, 5, INT64.max])).tolist() == [3, 1, 4, 3, 0]
    assert index.keys().tolist() == [INT64.max, 0, INT64.min, 5, -5]


def test_structured_keys_do_not_collide_into_few_slots():
    # Keys differing only in high bits would share a slot under plain masking;
    # the mixer must still resolve them, and quickly enough to insert 200k.
    keys = np.arange(200_000, dtype=np.int64) << np.int64(40)
    index = KeyIndex()
    np.testing.assert_array_equal(index.lookup_or_insert(keys), np.arange(200_000))
    np.testing.assert_array_equal(index.lookup(keys[::-1]), np.arange(200_000)[::-1])
    np.testing.assert_array_equal(index.lookup(keys + 1), -1)


def test_presized_index_does_not_grow_and_reports_bytes():
    index = KeyIndex(expected_keys=1000)
    capacity = index.capacity
    index.lookup_or_insert(np.arange(1000, dtype=np.int64) * 7919)
    assert index.capacity == capacity == 2048
    assert index.nbytes == capacity * 16


def test_empty_and_invalid_inputs():
    index = KeyIndex()
    assert index.lookup(np.array([], dtype=np.int64)).shape == (0,)
    assert index.lookup_or_insert(np.array([], dtype=np.int64)).shape == (0,)
    assert index.keys().shape == (0,) and len(index) == 0
    assert index.lookup_or_insert(np.array([1, 2], dtype=np.int32)).tolist() == [0, 1]
    with pytest.raises(TypeError, match="int64"):
        index.lookup(np.array([1.5]))
    # The one key rule (spark_ps.native.keys): uint64 is the same 64 bits as int64.
    assert index.lookup_or_insert(np.array([2**63], dtype=np.uint64)).tolist() == [2]
    assert index.lookup(np.array([-(2**63)], dtype=np.int64)).tolist() == [2]
    with pytest.raises(ValueError, match="1-D"):
        index.lookup(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="expected_keys"):
        KeyIndex(-1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(INT64.min, INT64.max), max_size=40), max_size=8))
def test_property_any_int64_batches(batches):
    index, ref = KeyIndex(), DictIndex()
    for batch in batches:
        keys = np.array(batch, dtype=np.int64)
        np.testing.assert_array_equal(index.lookup(keys), ref.lookup(keys))
        np.testing.assert_array_equal(index.lookup_or_insert(keys), ref.lookup_or_insert(keys))
    assert_same(index, ref)


def _unmix64(h: np.ndarray) -> np.ndarray:
    """Inverse of the splitmix64 finaliser (``spark_ps.native.hashing.mix64_array``): what an attacker computes."""

    def unxorshift(y, shift):  # x ^ (x >> s) = y  =>  x = y ^ (y >> s) ^ (y >> 2s) ^ ...
        x, k = y.copy(), shift
        while k < 64:
            x ^= y >> np.uint64(k)
            k += shift
        return x

    x = unxorshift(h, 31) * np.uint64(pow(0x94D049BB133111EB, -1, 2**64))
    x = unxorshift(x, 27) * np.uint64(pow(0xBF58476D1CE4E5B9, -1, 2**64))
    return unxorshift(x, 30)


def test_keys_crafted_to_collide_under_the_unseeded_hash_spread_under_the_process_seed():
    from spark_ps.native.hashing import mix64_array
    from spark_ps.native.keyindex import PROCESS_SEED

    n = 20_000
    # Hashes that share their low 32 bits: one home slot in every table of up to 2^32 slots, without a seed.
    wanted = (np.arange(1, n + 1, dtype=np.uint64) << np.uint64(32)) | np.uint64(7)
    crafted = _unmix64(wanted)
    np.testing.assert_array_equal(mix64_array(crafted), wanted)
    keys = crafted.view(np.int64)
    index = KeyIndex()
    np.testing.assert_array_equal(index.lookup_or_insert(keys), np.arange(n))
    mask = np.uint64(index.capacity - 1)
    assert len(np.unique(mix64_array(crafted) & mask)) == 1  # the attack, had the index no seed
    home = mix64_array(crafted ^ index._seed) & mask
    # Random keys would fill ~1 - e^(-n/capacity) of the slots: ~26% of 65,536 here; allow for chance.
    assert len(np.unique(home)) > 0.8 * index.capacity * (1 - np.exp(-n / index.capacity))
    np.testing.assert_array_equal(index.lookup(keys[::-1]), np.arange(n)[::-1])
    assert index._seed == PROCESS_SEED


def test_each_process_draws_its_own_seed():
    import subprocess
    import sys

    code = "from spark_ps.native.keyindex import PROCESS_SEED; print(int(PROCESS_SEED))"
    seeds = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
             for _ in range(2)}
    assert len(seeds) == 2
