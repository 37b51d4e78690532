"""Table: lazy rows, all-or-nothing pushes, thread safety.

Arrow checkpoints (export and import) are tested in ``test_table_arrow.py``.
"""

from __future__ import annotations

import json
import math
import sys
import threading

import numpy as np
import pyarrow as pa
import pytest
from test_optim import FTRLRef  # the scalar per-coordinate reference

from spark_ps.server import table as table_module
from spark_ps.server import workpool
from spark_ps.server.optim import make_optimizer
from spark_ps.server.rowinit import Normal
from spark_ps.server.table import Table

INT64 = np.iinfo(np.int64)
FTRL = {"alpha": 0.3, "beta": 1.0, "l1": 0.2, "l2": 0.1}


def snapshot(table: Table) -> dict:
    """Everything observable about a table's contents, keyed by key."""
    batches = list(table.export_batches())
    out = {}
    for batch in batches:
        keys = batch.column("key").to_numpy()
        for name in batch.schema.names[1:]:
            rows = batch.column(name).flatten().to_numpy().reshape(len(keys), -1)
            for key, row in zip(keys, rows, strict=True):
                out.setdefault(int(key), {})[name] = row.copy()
    return out


def assert_same_contents_as(table: Table, expected: dict):
    got = snapshot(table)
    assert got.keys() == expected.keys()
    for key, columns in expected.items():
        for name, row in columns.items():
            np.testing.assert_array_equal(got[key][name], row)


def assert_same_contents(a: Table, b: Table):
    sa, sb = snapshot(a), snapshot(b)
    assert sa.keys() == sb.keys()
    for key in sa:
        for column in sa[key]:
            np.testing.assert_array_equal(sa[key][column], sb[key][column], err_msg=f"key {key} {column}")


def sparse_pushes(rng, universe, width, n_pushes, size):
    for _ in range(n_pushes):
        keys = np.unique(rng.choice(universe, size=size))
        yield keys, rng.normal(size=(len(keys), width)).astype(np.float32)


def fsl(rows, width):
    return pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(rows, np.float32).reshape(-1)), width)


# --------------------------------------------------------------------------- pull / push
def test_push_then_pull_follows_a_dict_reference_with_hashed_keys():
    # sgd with a Normal init: the reference starts every key at init.rows([key]).
    rng = np.random.default_rng(0)
    width, lr = 4, 0.1
    init = Normal(0.05, seed=3)
    table = Table("emb", width, make_optimizer("sgd", lr=lr), init)
    universe = np.concatenate([[INT64.min, -1, 0, INT64.max], rng.integers(INT64.min, INT64.max, 300)])
    reference: dict[int, np.ndarray] = {}
    for keys, grads in sparse_pushes(rng, universe, width, n_pushes=20, size=60):
        table.push(keys, grads)
        for key, g in zip(keys, grads, strict=True):
            start = reference.get(int(key), init.rows(np.array([key]), width)[0].astype(np.float64))
            reference[int(key)] = start - lr * g.astype(np.float64)
    assert len(table) == len(reference)
    probe = np.unique(np.concatenate([universe, rng.integers(INT64.min, INT64.max, 50)]))
    expected = np.array([reference.get(int(k), init.rows(np.array([k]), width)[0]) for k in probe])
    np.testing.assert_allclose(table.pull(probe), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("width", [1, 9])
def test_ftrl_table_matches_per_key_reference(width):
    rng = np.random.default_rng(width)
    table = Table("ftrl", width, make_optimizer("ftrl", **FTRL))
    ref = FTRLRef(**FTRL)
    universe = rng.integers(0, 2**40, 200)
    for keys, grads in sparse_pushes(rng, universe, width, n_pushes=12, size=80):
        table.push(keys, grads)
        for key, row in zip(keys, grads, strict=True):
            for col in range(width):
                ref.update(ref.coord(int(key), col), float(row[col]))
    keys = np.unique(universe)
    expected = np.array([[ref.weight(int(k), c) for c in range(width)] for k in keys])
    np.testing.assert_allclose(table.pull(keys), expected, rtol=2e-4, atol=2e-6)


def test_ftrl_table_stores_z_and_n_and_pulls_their_closed_form():
    from test_optim import ftrl_weight
    rng = np.random.default_rng(8)
    table = Table("m", 3, make_optimizer("ftrl", **FTRL), unpenalised_keys=[-1])
    keys = np.sort(rng.choice(2**50, 500, replace=False))
    keys[0] = -1
    grads = rng.normal(size=(500, 3)).astype(np.float32)
    table.push(keys, grads)
    # Two arrays of rows, like Adagrad's weights and accumulator: FTRL's w is not stored.
    same_push = [Table("f", 3, make_optimizer("ftrl", **FTRL)), Table("a", 3, make_optimizer("adagrad"))]
    for t in same_push:
        t.push(keys[1:], grads[1:])
    assert same_push[0].nbytes == same_push[1].nbytes
    exported = snapshot(table)
    free = {**FTRL, "l1": 0.0, "l2": 0.0}
    for key, row in zip(keys, table.pull(keys), strict=True):
        state = exported[int(key)]
        hyper = free if key == -1 else FTRL
        expected = [ftrl_weight(float(z), float(n), **hyper) for z, n in zip(state["state_z"], state["state_n"])]
        np.testing.assert_allclose(row, expected, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(state["value"], row)


def test_ftrl_that_cannot_hold_initial_weights_refuses_them():
    with pytest.raises(ValueError, match=r"table 'e': .* keeps every row at weight 0 .* 'normal' initialiser"):
        Table("e", 2, make_optimizer("ftrl", beta=0.0), Normal(0.1, seed=1))
    with pytest.raises(ValueError, match="keeps every row at weight 0"):  # the intercept's rule has no l2
        Table("e", 2, make_optimizer("ftrl", beta=0.0, l2=1.0), Normal(0.1, seed=1), unpenalised_keys=[-1])
    Table("e", 2, make_optimizer("ftrl", beta=0.0, l2=1.0), Normal(0.1, seed=1))  # l2 > 0 can hold them
    table = Table("w", 1, make_optimizer("ftrl", beta=0.0))
    table.push(np.array([5]), np.ones((1, 1), np.float32))
    before = snapshot(table)
    weights_only = pa.RecordBatch.from_arrays([pa.array([1, 2], pa.int64()), fsl([[0.0], [0.5]], 1)],
                                              names=["key", "value"])
    with pytest.raises(ValueError, match="key 2 has a non-zero weight but no ftrl state"):
        table.import_batches([weights_only])
    assert_same_contents_as(table, before)


def test_unpenalised_keys_follow_the_unregularised_reference_others_the_penalised_one():
    """An intercept row pushed with the features: no L1/L2 for it, the table's penalty for the rest."""
    rng = np.random.default_rng(5)
    exempt = [-1, 2**40 + 7]
    table = Table("m", 2, make_optimizer("ftrl", **FTRL), unpenalised_keys=exempt)
    penalised, free = FTRLRef(**FTRL), FTRLRef(**{**FTRL, "l1": 0.0, "l2": 0.0})
    universe = np.concatenate([rng.integers(0, 2**40, 60), exempt])
    for keys, grads in sparse_pushes(rng, universe, 2, n_pushes=15, size=40):
        table.push(keys, grads)
        for key, row in zip(keys, grads, strict=True):
            ref = free if int(key) in exempt else penalised
            for col in range(2):
                ref.update(ref.coord(int(key), col), float(row[col]))
    keys = np.unique(universe)
    expected = np.array([[(free if int(k) in exempt else penalised).weight(int(k), c) for c in range(2)]
                         for k in keys])
    np.testing.assert_allclose(table.pull(keys), expected, rtol=2e-4, atol=2e-6)
    assert table.describe()["unpenalised_keys"] == sorted(exempt)


@pytest.mark.parametrize("bad", ["exempt", "other"])
def test_push_with_unpenalised_keys_is_all_or_nothing(bad):
    table = Table("m", 1, make_optimizer("sgd", lr=1e30), unpenalised_keys=[-1])
    table.push(np.array([-1, 5]), np.array([[1.0], [1.0]], np.float32))
    before = snapshot(table)
    grads = np.array([[1.0], [1.0], [1.0]], np.float32)
    grads[0 if bad == "exempt" else 2] = 1e10  # overflows to inf in the update of that row
    with pytest.raises(ValueError, match="non-finite weight or state for key " + ("-1" if bad == "exempt" else "9")):
        table.push(np.array([-1, 5, 9]), grads)
    assert len(table) == 2
    assert_same_contents_as(table, before)


def test_unpenalised_keys_must_be_integers():
    with pytest.raises(TypeError, match="unpenalised_keys must be integers"):
        Table("m", 1, make_optimizer("ftrl"), unpenalised_keys=[0.5])


def test_pull_of_absent_keys_creates_nothing_and_is_consistent_with_first_push():
    table = Table("w", 3, make_optimizer("delta"), Normal(1.0, seed=9), dim=10**12)
    keys = np.array([5, 10**12 - 1], dtype=np.int64)
    first = table.pull(keys)
    assert len(table) == 0 and table.nbytes < 4096  # memory is independent of dim
    np.testing.assert_array_equal(first, Normal(1.0, seed=9).rows(keys, 3))
    np.testing.assert_array_equal(table.pull(keys[::-1]), first[::-1])
    table.push(keys[:1], np.zeros((1, 3), np.float32))
    assert len(table) == 1
    np.testing.assert_array_equal(table.pull(keys), first)


def test_unsorted_keys_work_and_duplicates_are_rejected():
    table = Table("w", 1, make_optimizer("delta"))
    table.push(np.array([9, 2, 5]), np.array([[1.0], [2.0], [3.0]], np.float32))
    assert table.pull(np.array([2, 5, 9])).ravel().tolist() == [2.0, 3.0, 1.0]
    with pytest.raises(ValueError, match="table 'w': push has duplicate key 5"):
        table.push(np.array([5, 1, 5]), np.ones((3, 1), np.float32))
    assert table.pull(np.array([1, 5])).ravel().tolist() == [0.0, 3.0] and len(table) == 3


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e39])  # 1e39 overflows float32
def test_non_finite_gradient_is_rejected_naming_table_and_key(bad):
    table = Table("ctr", 2, make_optimizer("adagrad", lr=0.1))
    table.push(np.array([1, 2]), np.ones((2, 2), np.float32))
    before = snapshot(table)
    grads = np.ones((3, 2))
    grads[1, 1] = bad
    with pytest.raises(ValueError, match=r"table 'ctr': push has a non-finite gradient for key 7 "):
        table.push(np.array([2, 7, 8]), grads)
    assert snapshot(table).keys() == before.keys() and len(table) == 2
    for key in before:
        for column in before[key]:
            np.testing.assert_array_equal(snapshot(table)[key][column], before[key][column])


def test_diverging_update_is_rejected_and_table_unchanged():
    table = Table("w", 1, make_optimizer("sgd", lr=1e30))
    table.push(np.array([3]), np.array([[1.0]], np.float32))
    with pytest.raises(ValueError, match=r"table 'w': optimizer SGD\(lr=1e\+30\) produced a non-finite .* key 4"):
        table.push(np.array([3, 4]), np.array([[1.0], [1e10]], np.float32))
    assert len(table) == 1
    np.testing.assert_array_equal(table.pull(np.array([3, 4])), np.array([[-1e30], [0.0]], np.float32))


@pytest.mark.parametrize("bad_key", [3, 4])  # 3 exists (updated in place), 4 is new (appended last)
def test_push_that_creates_rows_is_all_or_nothing_whichever_part_fails(bad_key):
    table = Table("w", 1, make_optimizer("sgd", lr=1e30))
    table.push(np.array([3]), np.array([[1.0]], np.float32))
    grads = np.array([[1.0], [1.0]], np.float32)
    grads[[3, 4].index(bad_key)] = 1e10
    with pytest.raises(ValueError, match=f"non-finite weight or state for key {bad_key}"):
        table.push(np.array([3, 4]), grads)
    assert len(table) == 1
    np.testing.assert_array_equal(table.pull(np.array([3, 4])), np.array([[-1e30], [0.0]], np.float32))


def test_push_mixing_new_and_existing_rows_matches_the_reference():
    rng = np.random.default_rng(11)
    table = Table("m", 3, make_optimizer("ftrl", **FTRL), Normal(0.1, seed=2))
    ref, init = FTRLRef(**FTRL), Normal(0.1, seed=2)
    universe = rng.integers(-2**62, 2**62, 400)
    for keys, grads in sparse_pushes(rng, universe, 3, n_pushes=10, size=150):  # each push: some new, some not
        for key in keys:
            if (int(key), 0) not in ref.coords:  # a new row starts at the initialiser's draw, with z0 giving it back
                for col, w0 in enumerate(init.rows(np.array([key]), 3)[0].astype(float)):
                    c = ref.coord(int(key), col)
                    c["w"] = w0
                    c["z"] = -(w0 * (FTRL["beta"] / FTRL["alpha"] + FTRL["l2"]) + math.copysign(FTRL["l1"], w0))
        table.push(keys, grads)
        for key, row in zip(keys, grads, strict=True):
            for col in range(3):
                ref.update(ref.coord(int(key), col), float(row[col]))
    keys = np.array(sorted({key for key, _ in ref.coords}))
    assert len(table) == len(keys)
    expected = np.array([[ref.weight(int(k), c) for c in range(3)] for k in keys])
    np.testing.assert_allclose(table.pull(keys), expected, rtol=2e-4, atol=2e-6)


@pytest.fixture
def small_spans(monkeypatch):
    """Pushes of a few thousand rows split into 3 parallel spans of several chunks each."""
    monkeypatch.setattr(workpool, "MIN_ROWS_PER_SPAN", 2 * table_module._CHUNK_ROWS)
    monkeypatch.setattr(workpool, "_workers", lambda: 3)
    return 7 * table_module._CHUNK_ROWS + 5


def test_parallel_chunked_push_equals_one_chunk_on_one_thread(small_spans, monkeypatch):
    rng = np.random.default_rng(11)
    keys = np.sort(rng.choice(2**62, small_spans, replace=False))
    chunked, whole = (Table("w", 3, make_optimizer("ftrl", **FTRL)) for _ in range(2))
    chunked.push(keys, rng.normal(size=(len(keys), 3)).astype(np.float32))
    whole.import_batches(chunked.export_batches())
    grads = rng.normal(size=(len(keys), 3)).astype(np.float32)
    assert len(workpool.spans(len(keys))) == 3
    chunked.push(keys, grads)
    monkeypatch.setattr(table_module, "_CHUNK_ROWS", len(keys))
    monkeypatch.setattr(workpool, "MIN_ROWS_PER_SPAN", len(keys))
    whole.push(keys, grads)
    assert_same_contents(chunked, whole)


@pytest.mark.parametrize("bad_row", ["first", "middle", "last"])
def test_a_failing_chunk_restores_every_chunk_of_every_span(small_spans, bad_row):
    rng = np.random.default_rng(12)
    keys = np.sort(rng.choice(2**62, small_spans, replace=False))
    table = Table("s", 1, make_optimizer("sgd", lr=1e30))
    table.push(keys, rng.normal(size=(len(keys), 1)).astype(np.float32))
    before = table.pull(keys)
    where = {"first": 0, "middle": len(keys) // 2, "last": len(keys) - 1}[bad_row]
    grads = np.ones((len(keys), 1), np.float32)
    grads[where] = 1e10  # a finite gradient whose update overflows
    with pytest.raises(ValueError, match=f"non-finite weight or state for key {keys[where]} "):
        table.push(keys, grads)
    assert len(table) == len(keys)
    np.testing.assert_array_equal(table.pull(keys), before)


def test_shape_dim_and_dtype_errors_leave_table_unchanged():
    table = Table("t", 2, make_optimizer("delta"), dim=100)
    table.push(np.array([1]), np.ones((1, 2), np.float32))
    cases = [
        ((np.array([1, 2]), np.ones((2, 3))), ValueError, r"table 't': push gradient array has shape \(2, 3\), "
                                                          r"expected \(2, 2\)"),
        ((np.array([1, 2]), np.ones((2,))), ValueError, "expected"),
        ((np.array([1, 100]), np.ones((2, 2))), ValueError, r"key 100 is outside \[0, dim=100\)"),
        ((np.array([-1, 5]), np.ones((2, 2))), ValueError, "key -1 is outside"),
        ((np.array([[1, 2]]), np.ones((2, 2))), ValueError, "keys must be a 1-D array"),
        ((np.array([1.0, 2.0]), np.ones((2, 2))), TypeError, "keys must be integers"),
        ((np.array([1, 2]), [["a", "b"], ["c", "d"]]), ValueError, "not convertible to float32"),
    ]
    for args, error, message in cases:
        with pytest.raises(error, match=message):
            table.push(*args)
    with pytest.raises(ValueError, match="outside"):
        table.pull(np.array([100]))
    assert len(table) == 1 and table.pull(np.array([1, 2])).tolist() == [[1.0, 1.0], [0.0, 0.0]]


def test_constructor_validation():
    opt = make_optimizer("sgd")
    for kwargs, message in [({"name": ""}, "name"), ({"width": 0}, "width"), ({"width": 2.0}, "width"),
                            ({"dim": 0}, "dim"), ({"optimizer": "sgd"}, "Optimizer"),
                            ({"init": "zeros"}, "Initializer")]:
        args = {"name": "w", "width": 1, "optimizer": opt, **kwargs}
        with pytest.raises((ValueError, TypeError), match=message):
            Table(**args)


def test_growth_keeps_rows_and_describe_reports_them():
    rng = np.random.default_rng(5)
    table = Table("big", 3, make_optimizer("delta"))
    keys = np.unique(rng.integers(INT64.min, INT64.max, 20_000))
    values = rng.normal(size=(len(keys), 3)).astype(np.float32)
    for chunk in np.array_split(np.arange(len(keys)), 7):  # several doublings of rows and index
        table.push(keys[chunk], values[chunk])
    np.testing.assert_array_equal(table.pull(keys), values)
    info = table.describe()
    assert info["rows"] == len(keys) == len(table)
    assert info["optimizer"] == "delta" and info["width"] == 3 and info["init"] == "zeros"
    assert len(keys) * 3 * 4 <= table.nbytes <= 4 * (len(keys) * 3 * 4) + 16 * 4 * len(keys)
    json.dumps(info)  # JSON-friendly


# --------------------------------------------------------------------------- threads
def test_concurrent_pushes_and_exports_lose_no_update():
    table = Table("acc", 2, make_optimizer("delta"))
    keys = np.arange(0, 600, dtype=np.int64)
    n_threads, rounds = 4, 60
    counts = [np.zeros(len(keys)) for _ in range(n_threads)]
    errors: list[BaseException] = []

    def pusher(seed):
        rng = np.random.default_rng(seed)
        try:
            for _ in range(rounds):
                # Overlapping keys, some new each time, so rows grow while others read.
                chosen = np.unique(rng.choice(keys, 200))
                table.push(chosen, np.ones((len(chosen), 2), np.float32))
                counts[seed][chosen] += 1
                sum(b.num_rows for b in table.export_batches(max_rows=128))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    # Switch threads as often as possible, so that an unguarded read-modify-write
    # of a push would be interleaved with another one and lose an update.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=pusher, args=(s,)) for s in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors
    total = sum(counts)
    np.testing.assert_array_equal(table.pull(keys), np.stack([total, total], axis=1))
