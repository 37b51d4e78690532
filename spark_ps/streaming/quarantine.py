"""Quarantine: the rows of a micro-batch the model must not learn from, set aside with a reason.

A row is **bad** when training or scoring would refuse it or learn garbage
from it. Each bad row gets **one** reason, the first rule it fails, in this
fixed order (:data:`REASONS`):

1. ``features_null``: the feature vector is null.
2. ``features_malformed``: an unknown vector type code, a null ``values`` list,
   a sparse vector with a null size or null indices, or with a different number
   of indices and values, or a null element inside either list. (Spark's own vectors never
   look like this; hand-built Arrow or Parquet data can.)
3. ``features_not_finite``: a NaN or +-inf among the stored values.
4. ``index_negative``: a sparse vector with a negative index.
5. ``index_out_of_range``: a sparse vector with an index ``>=`` its own size.
6. ``size_mismatch``: the vector's size (``size`` of a sparse vector, the
   length of a dense one) is not the model's expected size (below).
7. ``label_null``, ``label_not_finite``, then ``label_out_of_domain``: a label
   other than 0 or 1 for the classifiers (``_binary_labels``); any finite
   label is in LinearRegression's domain.
8. ``weight_null``, ``weight_not_finite``, ``weight_negative`` (only with a
   weight column).

These are exactly the rows :func:`spark_ps.ml.csrcolumns.vectors_to_csr`,
``labels_to_array`` and ``weights_to_array`` refuse (rules 1-5, 7, 8), plus
rule 6, so a clean batch never fails in training.

**The expected size** is the estimator's ``numFeatures`` Param if it has one
(none of ours has today: MLlib's estimators take the size from the data);
else the ``numFeatures`` recorded in the newest commit's metadata; else (the
first batch) the most common size among the rows of the batch that pass the
feature rules, ties to the smaller size. The trainer records it with every
commit (a warm start records its initial model's), so one stream keeps one
size; a recorded 0 counts as unknown. The most common size rather than the
first row's: one bad row at the head of the first batch must not set it.

**How.** Every rule is numpy over the Arrow columns, in one place
(:func:`reason_codes`): the vector rules read the ``VectorUDT``'s struct
(``type, size, indices, values``) with whole-column tests on the list
children, a set flag mapped to its row by a binary search over the list
offsets; labels and weights are cast to double and tested whole. No loop
over rows. Measured on 100k sparse rows of 30 entries (d = 2^22): ~20 ms
(0.2 us a row; the first version, a cumulative sum over every element per
rule, took ~180 ms).

**Where.** The training task applies the rules to the Arrow batches it
converts to CSR anyway (:func:`clean_batches`) and reports how many rows it
dropped for each reason; only a micro-batch that had a bad row is read a
second time, by :func:`split`, to write those rows to the quarantine. The
first version split every batch before training: a ``mapInArrow`` round
trip of the whole batch, ``persist`` and a count, 0.85-1.4 s per 100k-row
batch on an idle ``local[2]`` (4.5 s at load 12-17), the largest cost after
the Delta commit; checking inside the task costs the 20 ms above. Spark SQL
cannot read a ``VectorUDT``'s fields (``vector_to_array`` densifies a
sparse vector: a 2^22 array for each hashed row), and the one all-JVM route
found, ``from_json(to_json(struct(features)))`` with SQL higher-order
functions over the struct, took 66 s.

The bad rows are appended to the Delta table ``<modelPath>/quarantine`` by
the executors: columns ``batchId``, ``reason``, then the original features,
label and weight columns, the features as the vector's plain struct (which
reads back even where a pyspark ``Vector`` would refuse the row). The
append is an idempotent Delta write (``txnAppId``/``txnVersion`` =
``batchId``): a replayed batch does not quarantine its rows twice.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.ml.linalg import VectorUDT
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import BooleanType, IntegerType, NumericType, StringType, StructField, StructType

from spark_ps.errors import ColumnTypeError, MissingColumnError

__all__ = ["REASONS", "QuarantineRules", "check_schema", "clean_batches", "common_size", "inspect_features",
           "quarantine_path", "reason_codes", "rules_for", "split", "vector_reasons", "write_quarantine"]

#: Every reason, in the order the rules are applied (a row gets the first it fails).
REASONS = ("features_null", "features_malformed", "features_not_finite", "index_negative",
           "index_out_of_range", "size_mismatch", "label_null", "label_not_finite", "label_out_of_domain",
           "weight_null", "weight_not_finite", "weight_negative")

#: Columns :func:`inspect_features` adds: the row's reason (null: clean) and its vector's size.
REASON_COL, SIZE_COL = "__spark_ps_reason", "__spark_ps_size"

_SPARSE, _DENSE = 0, 1
_VECTOR_RULES = REASONS[:5]
#: Code k of :func:`reason_codes` is ``_REASON_NAMES[k]``: null (clean), then :data:`REASONS`.
_REASON_NAMES = pa.array([None, *REASONS], pa.string())


@dataclasses.dataclass(frozen=True)
class QuarantineRules:
    """What a clean row looks like: the columns, the label domain and the expected vector size.

    Attributes
    ----------
    features_col, label_col : str
    weight_col : str or None
    binary_labels : bool
        Labels must be 0 or 1 (else: any finite label).
    num_features : int or None
        Expected vector size; None: no size rule.

    Examples
    --------
    >>> QuarantineRules("features", "label", num_features=1 << 20).binary_labels
    True
    """

    features_col: str
    label_col: str
    weight_col: str | None = None
    binary_labels: bool = True
    num_features: int | None = None


def rules_for(estimator, num_features: int | None = None) -> QuarantineRules:
    """The rules of ``estimator``'s columns and labels; its ``numFeatures`` Param, if any, overrides ``num_features``.

    A size of 0 or None is unknown (a model's metadata says 0 when it never saw a vector).

    Examples
    --------
    >>> from spark_ps.ml.regression import LinearRegression
    >>> rules_for(LinearRegression(weightCol="w"), 8)
    QuarantineRules(features_col='features', label_col='label', weight_col='w', binary_labels=False, num_features=8)
    """
    if estimator.hasParam("numFeatures") and estimator.isDefined("numFeatures"):
        num_features = int(estimator.getOrDefault("numFeatures"))
    return QuarantineRules(estimator.getFeaturesCol(), estimator.getLabelCol(), estimator._weight_col(),
                           bool(estimator._binary_labels), int(num_features) if num_features else None)


def check_schema(schema: StructType, estimator) -> None:
    """Refuse a stream whose columns the estimator cannot read, naming the column and its type.

    Raises
    ------
    MissingColumnError
        A features, label or (set) weight column is not in ``schema``.
    ColumnTypeError
        The features column is not a ``VectorUDT``, or the label or weight is not numeric.

    Examples
    --------
    >>> from pyspark.sql.types import StringType
    >>> from spark_ps.ml.classification import LogisticRegression
    >>> schema = StructType([StructField("label", StringType()), StructField("features", VectorUDT())])
    >>> check_schema(schema, LogisticRegression())
    Traceback (most recent call last):
    ...
    spark_ps.errors.ColumnTypeError: label column 'label' has type string; expected a numeric type (double, int, ...);
    the stream was not started
    """
    fields = {f.name: f.dataType for f in schema.fields}
    needed = {"features": estimator.getFeaturesCol(), "label": estimator.getLabelCol(),
              "weight": estimator._weight_col()}
    for role, name in needed.items():
        if not name:
            continue
        if name not in fields:
            raise MissingColumnError(f"{role} column {name!r} not found in the stream's schema "
                                     f"{list(fields)}; the stream was not started")
        kind = fields[name]
        if role == "features" and not isinstance(kind, VectorUDT):
            raise ColumnTypeError(f"features column {name!r} has type {kind.simpleString()}; expected a vector "
                                  "(pyspark.ml.linalg.VectorUDT, e.g. from VectorAssembler or FeatureHasher); "
                                  "the stream was not started")
        if role != "features" and not isinstance(kind, (NumericType, BooleanType)):
            raise ColumnTypeError(f"{role} column {name!r} has type {kind.simpleString()}; "
                                  "expected a numeric type (double, int, ...); the stream was not started")


# --------------------------------------------------------------------------- the vector rules (Arrow)


def _any_per_row(flags: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per row, whether any of its elements ``flags[offsets[r]:offsets[r + 1]]`` is set.

    Costs one pass over ``flags`` and a binary search per set flag (clean data sets none).
    """
    out = np.zeros(len(offsets) - 1, bool)
    hits = np.flatnonzero(flags)
    if len(hits):
        out[np.searchsorted(offsets, hits, side="right") - 1] = True
    return out


def _numpy(arr: pa.Array, fill) -> np.ndarray:
    """``arr`` as numpy, nulls replaced by ``fill`` (copied only when there are nulls)."""
    return (pc.fill_null(arr, fill) if arr.null_count else arr).to_numpy(zero_copy_only=False)


def _nulls(arr: pa.Array) -> np.ndarray:
    """Where ``arr`` is null, as a numpy mask."""
    if not arr.null_count:
        return np.zeros(len(arr), bool)
    return arr.is_null().to_numpy(zero_copy_only=False)


def _elements(lists: pa.ListArray) -> tuple[pa.Array, np.ndarray]:
    """The child elements a list array spans, and its offsets rebased onto them."""
    offsets = lists.offsets.to_numpy().astype(np.int64)
    start = int(offsets[0]) if len(offsets) else 0
    return lists.values.slice(start, int(offsets[-1]) - start if len(offsets) else 0), offsets - start


def _vector_codes(column: pa.StructArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rules 1-5 of a ``VectorUDT`` column: each row's code (0: passes, k: ``REASONS[k - 1]``), size, size known."""
    n = len(column)
    code = np.zeros(n, np.int8)

    def fail(rule: str, mask: np.ndarray) -> None:
        code[(code == 0) & mask] = REASONS.index(rule) + 1

    fail("features_null", _nulls(column))
    kind = _numpy(column.field("type"), -1)
    sparse = kind == _SPARSE
    fail("features_malformed", (kind != _SPARSE) & (kind != _DENSE))
    vlists = column.field("values")
    fail("features_malformed", _nulls(vlists))
    values, voff = _elements(vlists)
    value_null = _nulls(values)
    fail("features_malformed", _any_per_row(value_null, voff))
    lengths = np.diff(voff)

    ilists = column.field("indices")
    indices, ioff = _elements(ilists)
    index_null = _nulls(indices)
    size = column.field("size")
    fail("features_malformed", sparse & (_nulls(ilists) | _nulls(size) | (np.diff(ioff) != lengths)
                                         | _any_per_row(index_null, ioff)))
    finite = np.isfinite(_numpy(values, 0.0))
    fail("features_not_finite", _any_per_row(~finite, voff))
    idx = _numpy(indices, 0)
    fail("index_negative", sparse & _any_per_row(idx < 0, ioff))
    own = _numpy(size, 0).astype(np.int64)
    fail("index_out_of_range", sparse & _any_per_row(idx >= np.repeat(own, np.diff(ioff)), ioff))
    known = (code == 0) | (code > REASONS.index("features_malformed") + 1)
    return code, np.where(sparse, own, lengths), known


def vector_reasons(column: pa.StructArray) -> tuple[pa.Array, pa.Array]:
    """Reasons of rules 1-5 (null where a vector passes) and sizes of a ``VectorUDT`` column, vectorised.

    Parameters
    ----------
    column : pyarrow.StructArray
        A ``VectorUDT`` column as ``mapInArrow`` delivers it (see
        :data:`spark_ps.ml.csr.VECTOR_ARROW_TYPE`); slices are fine.

    Returns
    -------
    reasons : pyarrow.StringArray
    sizes : pyarrow.Int32Array
        ``size`` of a sparse vector, the length of a dense one; null where a vector is null or malformed.

    Examples
    --------
    >>> from spark_ps.ml.csr import VECTOR_ARROW_TYPE
    >>> col = pa.array([{"type": 0, "size": 4, "indices": [1, 3], "values": [1.0, 2.0]},
    ...                 {"type": 1, "size": None, "indices": None, "values": [1.0, float("nan")]},
    ...                 {"type": 0, "size": 4, "indices": [-1], "values": [1.0]}, None], VECTOR_ARROW_TYPE)
    >>> reasons, sizes = vector_reasons(col)
    >>> reasons.to_pylist(), sizes.to_pylist()
    ([None, 'features_not_finite', 'index_negative', 'features_null'], [4, 2, 4, None])
    """
    code, sizes, known = _vector_codes(column)
    return _REASON_NAMES.take(pa.array(code)), pa.array(sizes.astype(np.int32), pa.int32(), mask=~known)


def _number_codes(column: pa.Array, role: str, binary: bool, code: np.ndarray) -> None:
    """Rules 7-8 on a numeric label (``role`` "label") or weight column: set the first failing rule's code."""
    def fail(rule: str, mask: np.ndarray) -> None:
        code[(code == 0) & mask] = REASONS.index(f"{role}_{rule}") + 1

    values = pc.cast(column, pa.float64()) if column.type != pa.float64() else column
    fail("null", _nulls(values))
    x = _numpy(values, 0.0)
    fail("not_finite", ~np.isfinite(x))
    if role == "label" and binary:
        fail("out_of_domain", (x != 0.0) & (x != 1.0))
    if role == "weight":
        fail("negative", x < 0.0)


def reason_codes(batch: pa.RecordBatch, rules: QuarantineRules) -> tuple[np.ndarray, pa.Array]:
    """Every rule on one Arrow batch: each row's code (0: clean, k: ``REASONS[k - 1]``) and its vector's size.

    The one implementation of the rules: the training task drops the rows it
    flags (:func:`clean_batches`), and :func:`split` names them for the quarantine.

    Examples
    --------
    >>> from spark_ps.ml.csr import VECTOR_ARROW_TYPE
    >>> vectors = pa.array([{"type": 0, "size": 4, "indices": [1], "values": [1.0]}] * 3, VECTOR_ARROW_TYPE)
    >>> batch = pa.RecordBatch.from_arrays([pa.array([1.0, 2.0, None]), vectors], ["label", "features"])
    >>> codes, sizes = reason_codes(batch, QuarantineRules("features", "label", num_features=4))
    >>> [REASONS[c - 1] if c else None for c in codes]
    [None, 'label_out_of_domain', 'label_null']
    >>> reason_codes(batch, QuarantineRules("features", "label", num_features=8))[0].tolist()
    [6, 6, 6]
    """
    column = batch.column(rules.features_col)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    code, sizes, known = _vector_codes(column)
    if rules.num_features is not None:
        code[(code == 0) & known & (sizes != int(rules.num_features))] = REASONS.index("size_mismatch") + 1
    _number_codes(batch.column(rules.label_col), "label", rules.binary_labels, code)
    if rules.weight_col:
        _number_codes(batch.column(rules.weight_col), "weight", False, code)
    return code, pa.array(sizes.astype(np.int32), pa.int32(), mask=~known)


def clean_batches(batches: Iterator[pa.RecordBatch], rules: QuarantineRules, counts: np.ndarray
                  ) -> Iterator[pa.RecordBatch]:
    """``batches`` without their bad rows; ``counts[k]`` grows by the rows dropped for ``REASONS[k]``.

    What a training task reads instead of its partition: the rules cost about
    0.2 us a row on numpy, the filter is paid only by a batch with a bad row.

    Examples
    --------
    >>> from spark_ps.ml.csr import VECTOR_ARROW_TYPE
    >>> vectors = pa.array([{"type": 1, "size": None, "indices": None, "values": [1.0]}] * 2, VECTOR_ARROW_TYPE)
    >>> counts = np.zeros(len(REASONS), np.int64)
    >>> [b.num_rows for b in clean_batches(iter([pa.RecordBatch.from_arrays(
    ...     [pa.array([0.0, 3.0]), vectors], ["label", "features"])]), QuarantineRules("features", "label"), counts)]
    [1]
    >>> {REASONS[k]: int(n) for k, n in enumerate(counts) if n}
    {'label_out_of_domain': 1}
    """
    for batch in batches:
        code, _ = reason_codes(batch, rules)
        bad = code != 0
        if bad.any():
            counts += np.bincount(code[bad] - 1, minlength=len(REASONS))
            batch = batch.filter(pa.array(~bad))
        yield batch


def inspect_features(df: DataFrame, rules: QuarantineRules) -> DataFrame:
    """``df`` with each row's reason (null: clean) and its vector's size added (one ``mapInArrow`` pass, lazy).

    Examples
    --------
    >>> from pyspark.ml.linalg import Vectors
    >>> df = spark.createDataFrame([(0.0, Vectors.sparse(4, [1], [1.0])), (1.0, Vectors.dense([float("nan")]))],
    ...                            ["label", "f"])
    >>> [tuple(r)[2:] for r in inspect_features(df, QuarantineRules("f", "label")).collect()]
    [(None, 4), ('features_not_finite', 1)]
    """
    schema = StructType(df.schema.fields + [StructField(REASON_COL, StringType()),
                                            StructField(SIZE_COL, IntegerType())])

    def inspect(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            code, sizes = reason_codes(batch, rules)
            yield pa.RecordBatch.from_arrays([*batch.columns, _REASON_NAMES.take(pa.array(code)), sizes],
                                             names=[*batch.schema.names, REASON_COL, SIZE_COL])

    return df.mapInArrow(inspect, schema)


def common_size(df: DataFrame, rules: QuarantineRules) -> int | None:
    """The most common size among ``df``'s vectors that pass rules 1-5 (ties: the smaller); None if there is none.

    Examples
    --------
    >>> from pyspark.ml.linalg import Vectors
    >>> df = spark.createDataFrame([(0.0, Vectors.dense([1.0, 2.0]),), (0.0, Vectors.dense([1.0]),)], ["label", "f"])
    >>> common_size(df, QuarantineRules("f", "label"))
    1
    """
    inspected = inspect_features(df, dataclasses.replace(rules, num_features=None))
    vector_ok = F.col(REASON_COL).isNull() | ~F.col(REASON_COL).isin(*_VECTOR_RULES)
    row = (inspected.where(vector_ok).groupBy(SIZE_COL).count()
           .orderBy(F.col("count").desc(), F.col(SIZE_COL)).first())
    return None if row is None else int(row[SIZE_COL])


def split(df: DataFrame, rules: QuarantineRules) -> tuple[DataFrame, DataFrame]:
    """``(clean, bad)``: the rows of ``df`` that pass every rule, and the others with a ``reason`` column.

    Lazy and evaluated on the executors; each frame re-runs the inspection.

    Examples
    --------
    >>> from pyspark.ml.linalg import Vectors
    >>> rows = [(1.0, Vectors.sparse(3, [0], [1.0])), (2.0, Vectors.sparse(3, [1], [1.0])),
    ...         (0.0, Vectors.sparse(5, [1], [1.0]))]
    >>> clean, bad = split(spark.createDataFrame(rows, ["label", "features"]), QuarantineRules("features", "label",
    ...                    num_features=3))
    >>> clean.count(), sorted((r.label, r.reason) for r in bad.collect())
    (1, [(0.0, 'size_mismatch'), (2.0, 'label_out_of_domain')])
    """
    columns = df.columns
    labelled = inspect_features(df, rules)
    clean = labelled.where(F.col(REASON_COL).isNull()).select(*columns)
    bad = labelled.where(F.col(REASON_COL).isNotNull()).select(*columns, F.col(REASON_COL).alias("reason"))
    return clean, bad


# --------------------------------------------------------------------------- the quarantine table


def quarantine_path(model_path: str) -> str:
    """The quarantine table of a model directory.

    Examples
    --------
    >>> quarantine_path("warehouse/ctr")
    'warehouse/ctr/quarantine'
    """
    return os.path.join(model_path, "quarantine")


def _vectors_as_structs(df: DataFrame) -> DataFrame:
    """``df`` with its ``VectorUDT`` columns typed as their plain struct (the Arrow data passes through as is).

    A malformed vector (a negative index, ...) cannot be read back as a
    pyspark ``Vector``, whose constructor refuses it; as a struct, every row
    of the quarantine can be read, in SQL too (``features.indices``).
    """
    fields = [StructField(f.name, f.dataType.sqlType(), f.nullable) if isinstance(f.dataType, VectorUDT) else f
              for f in df.schema.fields]
    if all(a is b for a, b in zip(fields, df.schema.fields)):
        return df

    def same(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        yield from batches

    return df.mapInArrow(same, StructType(fields))


def write_quarantine(bad: DataFrame, path: str, batch_id: int, app_id: str) -> None:
    """Append ``bad`` (with its ``reason``) to the Delta table at ``path``, once per ``batch_id``.

    Columns: ``batchId``, ``reason``, then ``bad``'s, vectors as their struct
    ``type, size, indices, values`` (type 0 sparse, 1 dense) and numbers as
    doubles, so that a stream whose label turns from int to double, or that
    gains a weight column, still appends (``mergeSchema`` adds new columns):
    a quarantine write that failed would stop the stream.

    ``txnAppId``/``txnVersion`` make the append idempotent: Delta skips a
    write whose ``txnVersion`` is not above the newest it recorded for the
    app, so a second write of the same batch (a replay) is skipped, and so
    would an older batch's be: the trainer's fence keeps batches in order.
    The executors write.

    Examples
    --------
    >>> import tempfile
    >>> from pyspark.ml.linalg import Vectors
    >>> bad = spark.createDataFrame([(2.0, Vectors.dense([1.0]), "label_out_of_domain")],
    ...                             ["label", "features", "reason"])
    >>> path = tempfile.mkdtemp()
    >>> write_quarantine(bad, path, 7, "app"); write_quarantine(bad, path, 7, "app")   # a replay: skipped
    >>> spark.read.format("delta").load(path).select("batchId", "reason", "label", "features.values").collect()
    [Row(batchId=7, reason='label_out_of_domain', label=2.0, values=[1.0])]
    >>> later = spark.createDataFrame([(3, Vectors.dense([1.0]), 0.5, "label_out_of_domain")],
    ...                               ["label", "features", "w", "reason"])   # an int label, a weight column
    >>> write_quarantine(later, path, 8, "app")
    >>> spark.read.format("delta").load(path).orderBy("batchId").select("batchId", "label", "w").collect()
    [Row(batchId=7, label=2.0, w=None), Row(batchId=8, label=3.0, w=0.5)]
    """
    numeric = {f.name for f in bad.schema.fields if isinstance(f.dataType, (NumericType, BooleanType))}
    others = [F.col(c).cast("double").alias(c) if c in numeric else F.col(c) for c in bad.columns if c != "reason"]
    (_vectors_as_structs(bad).select(F.lit(int(batch_id)).cast("long").alias("batchId"), "reason", *others)
     .write.format("delta").mode("append").option("mergeSchema", "true").option("txnAppId", app_id)
     .option("txnVersion", int(batch_id)).save(path))
