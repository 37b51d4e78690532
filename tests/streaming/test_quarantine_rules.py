"""The quarantine's vector rules and schema check, without Spark.

The reference for the vector rules is training's own converter: a row gets a
reason exactly when :func:`vectors_to_csr` refuses it alone, and the reason
names what the converter's error says.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.ml.linalg import VectorUDT
from pyspark.sql.types import ArrayType, DoubleType, IntegerType, StringType, StructField, StructType

from spark_ps.errors import ColumnTypeError, MissingColumnError, PSError
from spark_ps.ml.classification import LogisticRegression
from spark_ps.ml.csr import VECTOR_ARROW_TYPE, vectors_to_csr
from spark_ps.ml.regression import LinearRegression
from spark_ps.streaming.quarantine import REASONS, check_schema, vector_reasons

#: VECTOR_ARROW_TYPE with nullable list elements, to build the malformed rows Spark itself never writes.
LOOSE_TYPE = pa.struct([pa.field("type", pa.int8()), pa.field("size", pa.int32()),
                        pa.field("indices", pa.list_(pa.int32())), pa.field("values", pa.list_(pa.float64()))])


def sparse(size, indices, values, kind=0):
    return {"type": kind, "size": size, "indices": indices, "values": values}


def dense(values):
    return {"type": 1, "size": None, "indices": None, "values": values}


CASES = [  # (row, reason, size)
    (sparse(8, [1, 5], [1.0, -2.0]), None, 8),
    (dense([0.0, 3.0, 1.0]), None, 3),
    (sparse(8, [], []), None, 8),
    (dense([]), None, 0),
    (None, "features_null", None),
    (sparse(8, [1], [1.0], kind=7), "features_malformed", None),
    (dense(None), "features_malformed", None),
    (sparse(None, [1], [1.0]), "features_malformed", None),
    (sparse(8, None, [1.0]), "features_malformed", None),
    (sparse(8, [1, 2], [1.0]), "features_malformed", None),
    (sparse(8, [1, None], [1.0, 2.0]), "features_malformed", None),
    (sparse(8, [1, 2], [1.0, None]), "features_malformed", None),
    (sparse(8, [1], [math.nan]), "features_not_finite", 8),
    (dense([1.0, -math.inf]), "features_not_finite", 2),
    (sparse(8, [-3], [1.0]), "index_negative", 8),
    (sparse(8, [8], [1.0]), "index_out_of_range", 8),
    (sparse(8, [-1, 9], [math.nan, 1.0]), "features_not_finite", 8),  # first failing rule wins
    (sparse(8, [-1, 9], [1.0, 1.0]), "index_negative", 8),
]


def test_each_vector_rule_and_the_sizes():
    column = pa.array([row for row, *_ in CASES], LOOSE_TYPE)
    reasons, sizes = vector_reasons(column)
    assert reasons.to_pylist() == [reason for _, reason, _ in CASES]
    assert sizes.to_pylist() == [size for *_, size in CASES]
    assert set(reasons.to_pylist()) - {None} == set(REASONS[:5])


def test_sliced_columns_and_spark_layout():
    column = pa.array([row for row, *_ in CASES], LOOSE_TYPE)
    whole = vector_reasons(column)
    for start in range(len(CASES)):
        part = vector_reasons(column.slice(start, 5))
        assert part[0].to_pylist() == whole[0].to_pylist()[start:start + 5]
        assert part[1].to_pylist() == whole[1].to_pylist()[start:start + 5]
    clean = pa.array([CASES[0][0], CASES[1][0]], VECTOR_ARROW_TYPE)
    assert vector_reasons(clean)[0].null_count == 2


#: What vectors_to_csr's error message says, as the quarantine's reason.
_MESSAGE_REASONS = [("null feature vector", "features_null"), ("non-finite", "features_not_finite"),
                    ("negative feature index", "index_negative"), ("sparse vector of size", "index_out_of_range")]


def _converter_reason(row) -> str | None:
    try:
        vectors_to_csr(pa.array([row], LOOSE_TYPE))
    except ValueError as exc:
        return next((reason for text, reason in _MESSAGE_REASONS if text in str(exc)), "features_malformed")
    return None


@st.composite
def vector_rows(draw):
    if draw(st.integers(0, 19)) == 0:
        return None
    value = st.one_of(st.floats(-3, 3), st.sampled_from([math.nan, math.inf, 0.0]), st.none()) \
        if draw(st.booleans()) else st.floats(-3, 3)
    values = draw(st.lists(value, max_size=5))
    kind = draw(st.sampled_from([0, 0, 0, 1, 1, 2]))
    if kind == 1:
        return dense(values)
    size = draw(st.one_of(st.integers(0, 10), st.none()) if draw(st.integers(0, 9)) == 0 else st.integers(0, 10))
    count = len(values) + (draw(st.integers(-1, 1)) if draw(st.integers(0, 9)) == 0 else 0)
    index = st.one_of(st.integers(-2, 12), st.none()) if draw(st.integers(0, 9)) == 0 else st.integers(-2, 12)
    indices = draw(st.lists(index, min_size=max(count, 0), max_size=max(count, 0)))
    return sparse(size, None if draw(st.integers(0, 19)) == 0 else indices, values, kind)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(vector_rows(), max_size=30))
def test_a_row_is_quarantined_exactly_when_training_would_refuse_it(rows):
    reasons, _ = vector_reasons(pa.array(rows, LOOSE_TYPE))
    assert reasons.to_pylist() == [_converter_reason(row) for row in rows]


def test_clean_rows_cost_no_per_row_work():
    """100k clean sparse rows of 30 entries: the rules take well under training's per-row cost (~10 us)."""
    import time

    n, nnz = 100_000, 30
    indices = np.sort(np.random.default_rng(0).integers(0, 1 << 22, (n, nnz)), axis=1).astype(np.int32)
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * nnz)
    column = pa.StructArray.from_arrays(
        [pa.array(np.zeros(n, np.int8)), pa.array(np.full(n, 1 << 22, np.int32)),
         pa.ListArray.from_arrays(offsets, pa.array(indices.ravel())),
         pa.ListArray.from_arrays(offsets, pa.array(np.ones(n * nnz)))], names=["type", "size", "indices", "values"])
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        reasons, sizes = vector_reasons(column)
        best = min(best, time.perf_counter() - start)
    assert reasons.null_count == n and sizes.to_numpy().min() == 1 << 22
    assert best < 0.5, f"{best:.3f} s for {n} rows"  # ~0.02 s on an idle core; generous for a loaded host


# --------------------------------------------------------------------------- schema


def _schema(**types):
    return StructType([StructField(name, kind) for name, kind in types.items()])


@pytest.mark.parametrize("estimator, schema, error, words", [
    (LogisticRegression(), _schema(label=DoubleType()), MissingColumnError, ["features column 'features'", "label"]),
    (LogisticRegression(featuresCol="x"), _schema(label=DoubleType(), x=ArrayType(DoubleType())), ColumnTypeError,
     ["features column 'x'", "array<double>", "VectorUDT"]),
    (LogisticRegression(), _schema(label=StringType(), features=VectorUDT()), ColumnTypeError,
     ["label column 'label'", "string"]),
    (LinearRegression(weightCol="w"), _schema(label=IntegerType(), features=VectorUDT(), w=StringType()),
     ColumnTypeError, ["weight column 'w'", "string"]),
    (LinearRegression(weightCol="w"), _schema(label=IntegerType(), features=VectorUDT()), MissingColumnError,
     ["weight column 'w'"]),
])
def test_schema_errors_name_the_column_and_its_type(estimator, schema, error, words):
    with pytest.raises(error) as info:
        check_schema(schema, estimator)
    assert isinstance(info.value, PSError)
    for word in words:
        assert word in str(info.value)


def test_a_readable_schema_passes():
    check_schema(_schema(label=IntegerType(), features=VectorUDT(), w=DoubleType(), other=StringType()),
                 LinearRegression(weightCol="w"))
