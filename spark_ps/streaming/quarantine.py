"""Quarantine: the rows of a micro-batch the model must not learn from, set aside with a reason.

A row is **bad** when training or scoring would refuse it or learn garbage
from it. Each bad row gets **one** reason, the first rule it fails, in this
fixed order (:data:`REASONS`):

1. ``features_null``: the feature vector is null.
2. ``features_malformed``: an unknown vector type code, a null ``values`` list,
   a sparse vector with a null size or null indices, or with as many indices
   as values, or a null element inside either list. (Spark's own vectors never
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

**How.** The vector rules (1-5) and the sizes are computed by one
``mapInArrow`` pass over the batch that reads the ``VectorUDT``'s struct
(``type, size, indices, values``) with pyarrow and numpy: whole-column
tests on the list children, a set flag mapped to its row by a binary search
over the list offsets; no loop over rows. Spark SQL cannot read a
``VectorUDT``'s fields, and ``vector_to_array`` densifies a sparse vector (a
2^22 array for each hashed row), so SQL is used for what it can see: the
size rule, labels and weights (``when`` chains evaluated on the executors).
Measured on 100k sparse rows of 30 entries (d = 2^22): the rules' own work
is ~20 ms (0.2 us a row; the first version, a cumulative sum over every
element per rule, took ~180 ms). The pass as a whole is dominated by moving
the rows to Python and back: on ``local[2]`` from Parquet, best of 5 on a
host at load 12-17 (2 cores, shared), what the trainer did before
(``persist`` + ``count``) took 1.0 s, an identity ``mapInArrow`` round trip
+ ``persist`` + ``count`` 3.1 s and :func:`split_batch` 4.5 s. The one
all-JVM route found, ``from_json(to_json(struct(features)))`` with SQL
higher-order functions over the struct, took 66 s. Checking the vectors
inside the training task, which converts them to CSR anyway, would save the
round trip; that needs the training and scoring tasks to skip bad rows.

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

__all__ = ["REASONS", "QuarantineRules", "Split", "check_schema", "common_size", "inspect_features",
           "quarantine_path", "rules_for", "split", "split_batch", "vector_reasons", "write_quarantine"]

#: Every reason, in the order the rules are applied (a row gets the first it fails).
REASONS = ("features_null", "features_malformed", "features_not_finite", "index_negative",
           "index_out_of_range", "size_mismatch", "label_null", "label_not_finite", "label_out_of_domain",
           "weight_null", "weight_not_finite", "weight_negative")

#: Columns :func:`inspect_features` adds: the vector rules' reason (null: passes) and the vector's size.
VECTOR_REASON_COL, SIZE_COL = "__spark_ps_vector_reason", "__spark_ps_size"
#: Column :func:`split` adds: the row's reason (null: clean).
REASON_COL = "__spark_ps_reason"

_SPARSE, _DENSE = 0, 1
_VECTOR_RULES = REASONS[:5]


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
    n = len(column)
    code = np.zeros(n, np.int8)  # 0: passes; k: the k-th rule failed first

    def fail(rule: str, mask: np.ndarray) -> None:
        code[(code == 0) & mask] = _VECTOR_RULES.index(rule) + 1

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

    names = pa.array([None, *_VECTOR_RULES], pa.string())
    sizes = np.where(sparse, own, lengths).astype(np.int32)
    ok_size = (code == 0) | (code > _VECTOR_RULES.index("features_malformed") + 1)
    return names.take(pa.array(code)), pa.array(sizes, pa.int32(), mask=~ok_size)


def inspect_features(df: DataFrame, features_col: str) -> DataFrame:
    """``df`` with the vector rules' reason and each vector's size added (one ``mapInArrow`` pass, lazy).

    Examples
    --------
    >>> from pyspark.ml.linalg import Vectors
    >>> df = spark.createDataFrame([(Vectors.sparse(4, [1], [1.0]),), (Vectors.dense([float("nan")]),)], ["f"])
    >>> [tuple(r)[1:] for r in inspect_features(df, "f").collect()]
    [(None, 4), ('features_not_finite', 1)]
    """
    schema = StructType(df.schema.fields + [StructField(VECTOR_REASON_COL, StringType()),
                                            StructField(SIZE_COL, IntegerType())])

    def inspect(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            column = batch.column(features_col)
            if isinstance(column, pa.ChunkedArray):
                column = column.combine_chunks()
            reasons, sizes = vector_reasons(column)
            yield pa.RecordBatch.from_arrays([*batch.columns, reasons, sizes],
                                             names=[*batch.schema.names, VECTOR_REASON_COL, SIZE_COL])

    return df.mapInArrow(inspect, schema)


def common_size(inspected: DataFrame) -> int | None:
    """The most common size among vectors that pass rules 1-5 (ties: the smaller); None if there is none.

    Examples
    --------
    >>> from pyspark.ml.linalg import Vectors
    >>> df = spark.createDataFrame([(Vectors.dense([1.0, 2.0]),), (Vectors.dense([1.0]),)], ["f"])
    >>> common_size(inspect_features(df, "f"))
    1
    """
    row = (inspected.where(F.col(VECTOR_REASON_COL).isNull()).groupBy(SIZE_COL).count()
           .orderBy(F.col("count").desc(), F.col(SIZE_COL)).first())
    return None if row is None else int(row[SIZE_COL])


# --------------------------------------------------------------------------- all rules (SQL)


def _reason(rules: QuarantineRules) -> F.Column:
    """The first failing rule of a row of an inspected frame, as one SQL expression (null: clean)."""
    reason = F.when(F.col(VECTOR_REASON_COL).isNotNull(), F.col(VECTOR_REASON_COL))
    if rules.num_features is not None:
        reason = reason.when(F.col(SIZE_COL) != F.lit(int(rules.num_features)), F.lit("size_mismatch"))
    checks = [("label", rules.label_col)] + ([("weight", rules.weight_col)] if rules.weight_col else [])
    for role, name in checks:
        value = F.col(name).cast("double")
        reason = (reason.when(value.isNull(), F.lit(f"{role}_null"))
                  .when(F.isnan(value) | (F.abs(value) == F.lit(float("inf"))), F.lit(f"{role}_not_finite")))
        if role == "label" and rules.binary_labels:
            reason = reason.when(~value.isin(0.0, 1.0), F.lit("label_out_of_domain"))
        if role == "weight":
            reason = reason.when(value < 0.0, F.lit("weight_negative"))
    return reason


def split(df: DataFrame, rules: QuarantineRules) -> tuple[DataFrame, DataFrame]:
    """``(clean, bad)``: the rows of ``df`` that pass every rule, and the others with a ``reason`` column.

    Lazy and evaluated on the executors; each frame re-runs the inspection, so
    persist ``df`` or use :func:`split_batch` when both are read.

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
    labelled = inspect_features(df, rules.features_col).withColumn(REASON_COL, _reason(rules))
    clean = labelled.where(F.col(REASON_COL).isNull()).select(*columns)
    bad = labelled.where(F.col(REASON_COL).isNotNull()).select(*columns, F.col(REASON_COL).alias("reason"))
    return clean, bad


@dataclasses.dataclass(frozen=True)
class Split:
    """A micro-batch split once: the frames over one cached inspection, and the counts.

    Attributes
    ----------
    clean : DataFrame
        The rows to train on, in the input's columns and partitions.
    bad : DataFrame
        The other rows, with a ``reason`` column.
    rows, quarantined : int
        How many rows are clean and bad.
    reasons : dict
        Bad rows per reason.
    num_features : int or None
        The expected size the rules used.
    cached : DataFrame
        The persisted inspection: :meth:`release` unpersists it.

    Examples
    --------
    >>> from pyspark.ml.linalg import Vectors
    >>> batch = split_batch(spark.createDataFrame([(0.0, Vectors.dense([1.0]))], ["label", "features"]),
    ...                     QuarantineRules("features", "label"))
    >>> batch.clean.columns, batch.bad.columns, batch.quarantined
    (['label', 'features'], ['label', 'features', 'reason'], 0)
    >>> batch.release()
    """

    clean: DataFrame
    bad: DataFrame
    rows: int
    quarantined: int
    reasons: dict[str, int]
    num_features: int | None
    cached: DataFrame

    def release(self) -> None:
        """Drop the cached inspection (the frames stay usable: they recompute)."""
        self.cached.unpersist()


def split_batch(df: DataFrame, rules: QuarantineRules) -> Split:
    """Inspect ``df`` once (persisted), settle the expected size if unknown, and count each reason.

    Two Spark jobs (three on a stream's first batch, which finds the common size).

    Examples
    --------
    >>> from pyspark.ml.linalg import Vectors
    >>> rows = [(1.0, Vectors.dense([1.0, 0.0])), (1.0, Vectors.dense([1.0])), (0.0, Vectors.dense([0.0, 2.0]))]
    >>> batch = split_batch(spark.createDataFrame(rows, ["label", "features"]), QuarantineRules("features", "label"))
    >>> batch.rows, batch.reasons, batch.num_features
    (2, {'size_mismatch': 1}, 2)
    >>> batch.release()
    """
    columns = df.columns
    inspected = inspect_features(df, rules.features_col).persist()
    try:
        if rules.num_features is None:
            rules = dataclasses.replace(rules, num_features=common_size(inspected))
        labelled = inspected.withColumn(REASON_COL, _reason(rules))
        counts = {row[REASON_COL]: int(row["count"]) for row in labelled.groupBy(REASON_COL).count().collect()}
    except BaseException:  # the caller gets no Split to release: drop the cache here, then re-raise
        inspected.unpersist()
        raise
    clean_rows = counts.pop(None, 0)
    return Split(clean=labelled.where(F.col(REASON_COL).isNull()).select(*columns),
                 bad=labelled.where(F.col(REASON_COL).isNotNull())
                 .select(*columns, F.col(REASON_COL).alias("reason")),
                 rows=clean_rows, quarantined=sum(counts.values()), reasons=dict(sorted(counts.items())),
                 num_features=rules.num_features, cached=inspected)


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
