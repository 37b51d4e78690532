"""Table's Arrow checkpoints: round trips that resume training identically, upserts and warm
starts from weights without state, and imports refused before anything is written."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest
from test_table import FTRL, assert_same_contents, fsl, snapshot, sparse_pushes  # shared with the push tests

from spark_ps.server.optim import make_optimizer
from spark_ps.server.rowinit import Normal, Zeros
from spark_ps.server.table import Table


# --------------------------------------------------------------------------- Arrow checkpoints
def test_import_without_state_gives_unpenalised_rows_the_state_that_reproduces_them():
    hyper = {"alpha": 0.5, "beta": 1.0, "l1": 2.0, "l2": 1.0}
    table = Table("m", 1, make_optimizer("ftrl", **hyper), unpenalised_keys=[-1])
    keys, values = np.array([-1, 3]), np.array([[0.75], [-0.5]], np.float32)
    table.import_batches([pa.RecordBatch.from_arrays(
        [pa.array(keys), pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), 1)], names=["key", "value"])])
    np.testing.assert_allclose(table.pull(keys), values, rtol=1e-6)
    table.push(keys, np.zeros((2, 1), np.float32))  # a zero gradient keeps each row where it was
    np.testing.assert_allclose(table.pull(keys), values, rtol=1e-6)


@pytest.mark.parametrize("opt, hyper", [("ftrl", FTRL), ("adam", {"lr": 0.05}), ("adagrad", {"lr": 0.1}),
                                        ("delta", {})])
def test_export_import_round_trip_then_training_continues_identically(opt, hyper):
    rng = np.random.default_rng(1)
    width = 3
    universe = rng.integers(-2**62, 2**62, 500)
    pushes = list(sparse_pushes(rng, universe, width, n_pushes=16, size=120))

    def new():
        return Table("m", width, make_optimizer(opt, **hyper), Normal(0.1, seed=4))

    uninterrupted, original = new(), new()
    for keys, grads in pushes[:8]:
        uninterrupted.push(keys, grads)
        original.push(keys, grads)
    batches = list(original.export_batches(max_rows=97))
    assert len(batches) == math.ceil(len(original) / 97) and sum(b.num_rows for b in batches) == len(original)
    schema = batches[0].schema
    assert schema.names == ["key", "value"] + [f"state_{s}" for s in make_optimizer(opt).state_names]
    assert schema.field("value").type == pa.list_(pa.float32(), width)
    meta = {k.decode(): v.decode() for k, v in schema.metadata.items()}
    assert meta["spark_ps.server.table"] == "m" and meta["spark_ps.width"] == "3"
    assert json.loads(meta["spark_ps.optimizer"]) == {"name": opt, "params": make_optimizer(opt, **hyper).params()}

    restored = new()
    assert restored.import_batches(iter(batches)) == len(original)
    assert_same_contents(restored, original)
    for keys, grads in pushes[8:]:
        uninterrupted.push(keys, grads)
        restored.push(keys, grads)
    probe = np.unique(np.concatenate([universe, [0, 1]]))
    np.testing.assert_array_equal(restored.pull(probe), uninterrupted.pull(probe))
    assert_same_contents(restored, uninterrupted)


def test_import_upserts_and_fills_missing_state_like_a_fresh_row():
    src = Table("w", 2, make_optimizer("adagrad", lr=0.1, initial_accumulator_value=0.5))
    src.push(np.array([1, 2, 3]), np.ones((3, 2), np.float32))
    batch = next(src.export_batches())
    dst = Table("w", 2, make_optimizer("adagrad", lr=0.1, initial_accumulator_value=0.5))
    dst.push(np.array([3, 4]), np.full((2, 2), 7.0, np.float32))
    weights_only = batch.select(["key", "value"])
    assert dst.import_batches([weights_only]) == 3
    assert len(dst) == 4
    np.testing.assert_array_equal(dst.pull(np.array([1, 2, 3])), src.pull(np.array([1, 2, 3])))
    state_n = {k: v["state_n"] for k, v in snapshot(dst).items()}
    np.testing.assert_array_equal(state_n[1], [0.5, 0.5])  # fresh accumulator, not src's 1.5
    np.testing.assert_array_equal(state_n[4], [0.5 + 49, 0.5 + 49])  # untouched by the import


def test_import_of_another_optimizers_checkpoint_warm_starts_ftrl():
    src = Table("w", 1, make_optimizer("adam", lr=0.1))
    src.push(np.array([1, 2]), np.array([[1.0], [-1.0]], np.float32))
    dst = Table("w", 1, make_optimizer("ftrl", alpha=0.1, l1=0.0))
    dst.import_batches(src.export_batches())
    np.testing.assert_array_equal(dst.pull(np.array([1, 2])), src.pull(np.array([1, 2])))
    # FTRL's z was derived from the imported weights: a zero gradient keeps them.
    dst.push(np.array([1, 2]), np.zeros((2, 1), np.float32))
    np.testing.assert_allclose(dst.pull(np.array([1, 2])), src.pull(np.array([1, 2])), rtol=1e-6)


@pytest.mark.parametrize("columns, message", [
    ({"value": fsl([[1, 2]], 2)}, "no 'key' column"),
    ({"key": pa.array([1], pa.int64())}, "no 'value' column"),
    ({"key": pa.array([1], pa.int32()), "value": fsl([[1, 2]], 2)}, "'key' must be int64"),
    ({"key": pa.array([1], pa.int64()), "value": fsl([[1, 2, 3]], 3)}, "rows of width 3, this table has width 2"),
    ({"key": pa.array([1], pa.int64()), "value": pa.array([[1.0, 2.0]])}, "must be fixed_size_list<float32>"),
    ({"key": pa.array([1], pa.int64()), "value": fsl([[1, np.nan]], 2)}, "non-finite entry in column 'value' "
                                                                        "for key 1"),
    ({"key": pa.array([None], pa.int64()), "value": fsl([[1, 2]], 2)}, "'key' has 1 null"),
    ({"key": pa.array([1, 1], pa.int64()), "value": fsl([[1, 2], [3, 4]], 2)}, "duplicate key 1"),
    ({"key": pa.array([1], pa.int64()), "value": fsl([[1, 2]], 2), "bias": pa.array([0.0])},
     "unexpected column 'bias'"),
    ({"key": pa.array([1], pa.int64()), "value": fsl([[1, 2]], 2), "state_n": fsl([[1, 2, 3]], 3)},
     "'state_n' has rows of width 3"),
])
def test_import_validation_is_atomic_and_clear(columns, message):
    table = Table("w", 2, make_optimizer("adagrad"))
    table.push(np.array([1]), np.ones((1, 2), np.float32))
    before = snapshot(table)
    good = pa.RecordBatch.from_pydict({"key": pa.array([50], pa.int64()), "value": fsl([[5, 5]], 2)})
    bad = pa.RecordBatch.from_pydict(columns)
    with pytest.raises(ValueError, match=message):
        table.import_batches([good, bad])  # the good batch must not be applied either
    assert len(table) == 1
    np.testing.assert_array_equal(snapshot(table)[1]["value"], before[1]["value"])


def test_import_checks_width_metadata_and_batch_type():
    src = Table("w", 2, make_optimizer("sgd"))
    src.push(np.array([1]), np.ones((1, 2), np.float32))
    batch = next(src.export_batches())
    meta = dict(batch.schema.metadata)
    meta[b"spark_ps.width"] = b"4"
    with pytest.raises(ValueError, match="width 4, this table has width 2"):
        Table("w", 2, make_optimizer("sgd")).import_batches([batch.replace_schema_metadata(meta)])
    with pytest.raises(TypeError, match="RecordBatch"):
        Table("w", 2, make_optimizer("sgd")).import_batches([{"key": [1]}])


def test_export_of_sliced_batches_and_empty_table():
    table = Table("w", 2, make_optimizer("delta"), Zeros())
    assert list(table.export_batches()) == []
    assert table.arrow_schema().names == ["key", "value"]
    table.push(np.arange(10), np.arange(20, dtype=np.float32).reshape(10, 2))
    batch = next(table.export_batches())
    other = Table("w", 2, make_optimizer("delta"))
    other.import_batches([batch.slice(3, 4)])  # a non-zero offset into the child values
    np.testing.assert_array_equal(other.pull(np.arange(3, 7)), table.pull(np.arange(3, 7)))
    assert len(other) == 4
    with pytest.raises(ValueError, match="max_rows"):
        next(table.export_batches(max_rows=0))
