"""Arrow VectorUDT batches -> CSR: against a per-row reference, errors, and Spark's real layout."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spark_ps.errors import MissingColumnError
from spark_ps.ml.csr import (
    VECTOR_ARROW_TYPE,
    CSRBatch,
    labels_to_array,
    record_batch_to_csr,
    vectors_to_csr,
    weights_to_array,
)


def sparse(size, indices, values):
    return {"type": 0, "size": size, "indices": list(indices), "values": list(values)}


def dense(values):
    return {"type": 1, "size": None, "indices": None, "values": list(values)}


def column(rows):
    return pa.array(rows, type=VECTOR_ARROW_TYPE)


def reference(rows):
    """Per row: sorted [(index, value)] with repeats summed and zeros dropped."""
    out = []
    for row in rows:
        acc = {}
        indices = range(len(row["values"])) if row["type"] == 1 else row["indices"]
        for i, v in zip(indices, row["values"]):
            acc[i] = acc.get(i, 0.0) + v
        out.append([(i, v) for i, v in sorted(acc.items()) if v != 0.0])
    return out


def as_rows(indptr, indices, values):
    assert indptr.dtype == np.int64 and indices.dtype == np.int64 and values.dtype == np.float64
    assert indptr[0] == 0 and indptr[-1] == len(indices) == len(values)
    return [list(zip(indices[a:b].tolist(), values[a:b].tolist())) for a, b in zip(indptr[:-1], indptr[1:])]


# --------------------------------------------------------------------------- conversion


def test_mixed_sparse_dense_with_zeros_and_empty_rows():
    rows = [sparse(10, [1, 4, 9], [1.0, 0.0, -2.5]), dense([0.0, 3.0, 0.0, 4.0]), sparse(3, [], []),
            dense([]), sparse(10, [0], [7.0]), dense([0.0, 0.0])]
    assert as_rows(*vectors_to_csr(column(rows))) == reference(rows)


@pytest.mark.parametrize("rows", [[], [dense([1.0])] * 3, [sparse(5, [2], [1.0])] * 3])
def test_uniform_and_empty_batches(rows):
    assert as_rows(*vectors_to_csr(column(rows))) == reference(rows)


def test_chunked_and_sliced():
    rows = [sparse(8, [i % 8], [i + 1.0]) if i % 3 else dense([i, 0.0, 1.0]) for i in range(20)]
    chunked = pa.chunked_array([column(rows[:7]).slice(2), column(rows[7:]).slice(0, 9)])
    expected = reference(rows[2:7] + rows[7:16])
    assert as_rows(*vectors_to_csr(chunked)) == expected
    assert as_rows(*vectors_to_csr(pa.chunked_array([], type=VECTOR_ARROW_TYPE))) == []


def test_unsorted_and_repeated_indices_are_canonicalised():
    rows = [sparse(9, [5, 1, 5, 3], [1.0, 2.0, 0.5, 1.0]), sparse(9, [2, 2], [1.0, -1.0]), dense([1.0, 2.0])]
    indptr, indices, values = vectors_to_csr(column(rows))
    assert as_rows(indptr, indices, values) == [[(1, 2.0), (3, 1.0), (5, 1.5)], [], [(0, 1.0), (1, 2.0)]]


def test_dense_rows_null_index_lists_owning_entries_are_ignored():
    # Arrow allows a null list slot to own child entries; a dense row's must not leak in.
    indices = pa.ListArray.from_arrays(pa.array([0, 2, 3], pa.int32()), pa.array([7, 7, 1], pa.int32()),
                                       mask=pa.array([True, False]),
                                       type=VECTOR_ARROW_TYPE.field("indices").type)
    values = pa.ListArray.from_arrays(pa.array([0, 1, 2], pa.int32()), pa.array([5.0, 6.0]),
                                      type=VECTOR_ARROW_TYPE.field("values").type)
    arr = pa.StructArray.from_arrays([pa.array([1, 0], pa.int8()), pa.array([None, 4], pa.int32()), indices, values],
                                     fields=list(VECTOR_ARROW_TYPE))
    assert as_rows(*vectors_to_csr(arr)) == [[(0, 5.0)], [(1, 6.0)]]


@st.composite
def vector_rows(draw):
    size = draw(st.integers(1, 12))
    value = st.sampled_from([0.0, 1.0, -2.0, 0.5, 3.25])
    if draw(st.booleans()):
        return dense(draw(st.lists(value, max_size=size)))
    if draw(st.integers(0, 4)) == 0:  # hand-built: unsorted, repeated
        idx = draw(st.lists(st.integers(0, size - 1), max_size=6))
    else:
        idx = sorted(draw(st.sets(st.integers(0, size - 1), max_size=6)))
    return sparse(size, idx, draw(st.lists(value, min_size=len(idx), max_size=len(idx))))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(vector_rows(), max_size=25), data=st.data())
def test_matches_per_row_reference(rows, data):
    arr = column(rows)
    start = data.draw(st.integers(0, len(rows)))
    stop = data.draw(st.integers(start, len(rows)))
    cut = data.draw(st.integers(start, stop))
    expected = reference(rows[start:stop])
    assert as_rows(*vectors_to_csr(arr.slice(start, stop - start))) == expected
    chunked = pa.chunked_array([arr.slice(start, cut - start), arr.slice(cut, stop - cut)], type=VECTOR_ARROW_TYPE)
    assert as_rows(*vectors_to_csr(chunked, num_features=12)) == expected


# --------------------------------------------------------------------------- conversion errors


@pytest.mark.parametrize("rows, kwargs, message", [
    ([dense([1.0]), None], {}, "row 101: null feature vector"),
    ([dense([1.0, np.nan])], {}, "row 100: non-finite feature value nan"),
    ([sparse(4, [0, 2], [1.0, 1.0]), sparse(4, [1], [-np.inf])], {}, "row 101: non-finite feature value -inf"),
    ([dense([1.0]), sparse(4, [-3], [1.0])], {}, "row 101: negative feature index -3"),
    ([sparse(100, [1, 50], [1.0, 1.0])], {"num_features": 10}, "row 100: sparse vector has feature index 50"),
    ([dense([1.0]), dense([1.0] * 11)], {"num_features": 10}, "row 101: dense vector of size 11"),
    ([sparse(4, [1], [1.0]), sparse(4, [0, 4], [1.0, 1.0])], {}, "row 101: sparse vector of size 4 has feature index 4"),
    ([{"type": 3, "size": None, "indices": None, "values": []}], {}, "row 100: unknown vector type code 3"),
    ([{"type": 0, "size": 4, "indices": [1, 2], "values": [1.0]}], {}, "row 100: sparse vector with 2 indices but 1"),
    ([{"type": 0, "size": 4, "indices": None, "values": [1.0]}], {}, "row 100: sparse vector (type 0) with null indices"),
    ([{"type": 0, "size": None, "indices": [1], "values": [1.0]}], {}, "row 100: sparse vector (type 0) with null size"),
    ([{"type": 1, "size": None, "indices": None, "values": None}], {}, "row 100: vector with a null values list"),
])
def test_errors_name_column_and_global_row(rows, kwargs, message):
    with pytest.raises(ValueError, match="column 'feats' ") as info:
        vectors_to_csr(column(rows), column_name="feats", row_offset=100, **kwargs)
    assert message in str(info.value)


def test_error_rows_account_for_slices_and_chunks():
    rows = [dense([1.0])] * 5 + [dense([np.nan])]
    with pytest.raises(ValueError, match="row 14:"):  # 10 + 1 (chunk 1) + 3 (inside sliced chunk 2)
        vectors_to_csr(pa.chunked_array([column(rows[:1]), column(rows).slice(2)]), row_offset=10)


def test_null_element_inside_values_names_row():
    values = pa.ListArray.from_arrays(pa.array([0, 1, 3], pa.int32()), pa.array([1.0, None, 2.0]))
    arr = pa.StructArray.from_arrays([pa.array([1, 1], pa.int8()), pa.array([None, None], pa.int32()),
                                      pa.array([None, None], pa.list_(pa.int32())), values],
                                     names=["type", "size", "indices", "values"])
    with pytest.raises(ValueError, match="row 1: null element inside the values list"):
        vectors_to_csr(arr)


def test_not_a_vector_column():
    with pytest.raises(TypeError, match="column 'x' has Arrow type list<item: double>, not a Spark ML vector"):
        vectors_to_csr(pa.array([[1.0]]), column_name="x")
    with pytest.raises(ValueError, match="num_features"):
        vectors_to_csr(column([]), num_features=0)


# --------------------------------------------------------------------------- labels, weights, batches


def test_labels():
    assert labels_to_array(pa.array([True, False])).tolist() == [1.0, 0.0]
    assert labels_to_array(pa.chunked_array([[1, 0], [1]]), binary=True).tolist() == [1.0, 0.0, 1.0]
    assert labels_to_array(pa.array([2.5, -1.0])).tolist() == [2.5, -1.0]
    with pytest.raises(ValueError, match=r"label column 'y' row 7: label -1.0 is not 0 or 1"):
        labels_to_array(pa.array([1.0, 0.0, -1.0]), column_name="y", binary=True, row_offset=5)
    with pytest.raises(ValueError, match="label column 'label' row 1: null label"):
        labels_to_array(pa.array([1.0, None]))
    with pytest.raises(ValueError, match="row 0: non-finite label nan"):
        labels_to_array(pa.array([np.nan]))
    with pytest.raises(TypeError, match="label column 's' has Arrow type string"):
        labels_to_array(pa.array(["1"]), column_name="s")


def test_weights():
    assert weights_to_array(pa.array([0, 2])).tolist() == [0.0, 2.0]
    with pytest.raises(ValueError, match="weight column 'w' row 1: negative weight -0.5"):
        weights_to_array(pa.array([1.0, -0.5]), column_name="w")
    with pytest.raises(ValueError, match="row 0: non-finite weight inf"):
        weights_to_array(pa.array([np.inf]))


def test_record_batch_to_csr():
    rb = pa.RecordBatch.from_arrays(
        [column([sparse(5, [4], [2.0]), dense([0.0, 1.0])]), pa.array([1, 0]), pa.array([0.5, 2.0])],
        names=["f", "y", "w"])
    b = record_batch_to_csr(rb, "f", "y", "w", num_features=5, binary_labels=True, row_offset=3)
    assert b.indptr.tolist() == [0, 1, 2] and b.indices.tolist() == [4, 1] and b.values.tolist() == [2.0, 1.0]
    assert b.labels.tolist() == [1.0, 0.0] and b.weights.tolist() == [0.5, 2.0]
    assert record_batch_to_csr(rb, "f").labels is None
    for missing in ({"features_col": "nope"}, {"features_col": "f", "label_col": "nope"},
                    {"features_col": "f", "weight_col": "nope"}):
        with pytest.raises(KeyError, match=r"column 'nope' not found .* available columns: \['f', 'y', 'w'\]"):
            record_batch_to_csr(rb, **missing)
    assert issubclass(MissingColumnError, ValueError)
    with pytest.raises(ValueError, match="label column 'w' row 3: label 0.5 is not 0 or 1"):
        record_batch_to_csr(rb, "f", "w", binary_labels=True, row_offset=3)


def test_csr_batch_slice_and_concat():
    b = CSRBatch(np.array([0, 2, 2, 5]), np.arange(5), np.arange(1.0, 6.0), np.array([1.0, 0.0, 1.0]),
                 np.array([1.0, 2.0, 3.0]))
    assert (b.num_rows, b.nnz) == (3, 5)
    tail = b.slice_rows(1, 3)
    assert tail.indptr.tolist() == [0, 0, 3] and tail.indices.tolist() == [2, 3, 4]
    assert np.shares_memory(tail.values, b.values) and np.shares_memory(tail.labels, b.labels)
    assert b.slice_rows(0, 1).indptr.base is not None  # starts at entry 0: indptr not even copied
    assert b.slice_rows(-1, 99).labels.tolist() == [1.0] and b.slice_rows(2, 1).num_rows == 0
    whole = CSRBatch.concat([b.slice_rows(0, 1), tail.slice_rows(0, 1), tail.slice_rows(1, 2)])
    for name in ("indptr", "indices", "values", "labels", "weights"):
        np.testing.assert_array_equal(getattr(whole, name), getattr(b, name))
    assert CSRBatch.concat([b]) is b
    with pytest.raises(ValueError, match="only some have weights"):
        CSRBatch.concat([b, CSRBatch(b.indptr, b.indices, b.values, b.labels)])
    with pytest.raises(ValueError, match="at least one batch"):
        CSRBatch.concat([])


@pytest.mark.parametrize("args, message", [
    (([1, 2], [0], [1.0], None), "indptr must run from 0 to nnz=1"),
    (([0, 2, 1, 2], [0, 1], [1.0, 1.0], None), "non-decreasing"),
    (([0, 1], [0], [1.0, 2.0], None), "must be 1-D and of equal length"),
    (([0, 1], [0], [1.0], [1.0, 0.0]), r"labels must have shape \(1,\)"),
])
def test_csr_batch_validation(args, message):
    with pytest.raises(ValueError, match=message):
        CSRBatch(*args)


# --------------------------------------------------------------------------- real Spark layout


@pytest.fixture
def spark(local_spark):
    """The shared session, with Arrow batches of 4 rows while the test runs (a runtime SQL setting)."""
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    before = local_spark.conf.get(key)
    local_spark.conf.set(key, "4")
    try:
        yield local_spark
    finally:
        local_spark.conf.set(key, before)


def test_real_mapinarrow_layout(spark):
    from pyspark.ml.linalg import Vectors
    vectors = [Vectors.sparse(7, [1, 5], [2.0, -1.0]), Vectors.dense([0.0, 1.5, 0.0, 3.0]), Vectors.sparse(3, [], []),
               Vectors.dense([]), Vectors.sparse(7, [0, 6], [1.0, 0.0]), Vectors.dense([4.0]),
               Vectors.sparse(1_000_000, [999_999], [0.25])]
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql.types import LongType, StructField, StructType
    schema = StructType([StructField("id", LongType()), StructField("features", VectorUDT())])
    df = spark.createDataFrame(list(enumerate(vectors)), schema).coalesce(1)

    def capture(batches):
        for batch in batches:  # ship each batch back untouched, as Arrow IPC bytes
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, batch.schema) as writer:
                writer.write_batch(batch)
            yield pa.RecordBatch.from_pydict({"ipc": [sink.getvalue().to_pybytes()]})

    delivered = [pa.ipc.open_stream(row.ipc).read_all() for row in df.mapInArrow(capture, "ipc binary").collect()]
    assert len(delivered) == 2  # maxRecordsPerBatch=4: several batches per task
    features_type = delivered[0].schema.field("features").type
    print("mapInArrow features type:", features_type)
    assert features_type == VECTOR_ARROW_TYPE
    assert df.toArrow().schema.field("features").type == VECTOR_ARROW_TYPE

    parts, offset = [], 0
    for table in delivered:
        for batch in table.to_batches():
            parts.append(record_batch_to_csr(batch, "features", row_offset=offset))
            offset += batch.num_rows
    got = CSRBatch.concat(parts)
    for r, v in enumerate(vectors):
        dense_row = v.toArray()
        nz = np.flatnonzero(dense_row)
        lo, hi = got.indptr[r], got.indptr[r + 1]
        assert got.indices[lo:hi].tolist() == nz.tolist()
        np.testing.assert_array_equal(got.values[lo:hi], dense_row[nz])
