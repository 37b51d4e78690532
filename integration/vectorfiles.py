"""Parquet files of ``label, features`` rows (a sparse ``VectorUDT``) written by pyarrow, with no Spark job.

What Spark writes for such a frame: the vector as its physical struct
``{type, size, indices, values}`` and Spark's schema JSON in the footer, so
``spark.read.parquet`` and a streaming file source read a ``vector`` column.
A test that streams a few small files writes them in milliseconds this way;
``createDataFrame`` of ``SparseVector`` objects on the ``local-cluster``
session took seconds a file (a Python job on the executors).
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.ml.linalg import VectorUDT
from pyspark.sql.types import DoubleType, StructField, StructType

#: The files' Spark schema.
SCHEMA = StructType([StructField("label", DoubleType()), StructField("features", VectorUDT())])
_STRUCT = pa.struct([("type", pa.int8()), ("size", pa.int32()), ("indices", pa.list_(pa.int32())),
                     ("values", pa.list_(pa.float64()))])


def random_indices(rng: np.random.Generator, rows: int, size: int, nnz: int) -> np.ndarray:
    """``(rows, nnz)`` ascending indices below ``size``, distinct within each row, drawn from ``rng``.

    Examples
    --------
    >>> idx = random_indices(np.random.default_rng(0), 3, 10, 4)
    >>> idx.shape, bool((np.diff(idx, axis=1) > 0).all()), bool((idx < 10).all())
    ((3, 4), True, True)
    """
    return np.sort(np.argsort(rng.random((rows, size)), axis=1)[:, :nnz], axis=1)


def write_vectors(path: str | os.PathLike, labels: np.ndarray, indices: np.ndarray, size: int) -> None:
    """Write one file: row ``i`` is ``labels[i]`` and a sparse vector of ``size`` with ones at ``indices[i]``.

    Examples
    --------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "part-0.parquet")
    >>> write_vectors(path, np.array([1.0, 0.0]), np.array([[0, 3], [1, 2]]), 5)
    >>> row = spark.read.parquet(path).first()
    >>> row.label, row.features
    (1.0, SparseVector(5, {0: 1.0, 3: 1.0}))
    """
    vectors = [{"type": 0, "size": size, "indices": [int(i) for i in row], "values": [1.0] * len(row)}
               for row in indices]
    table = pa.table({"label": pa.array(labels, pa.float64()), "features": pa.array(vectors, _STRUCT)})
    pq.write_table(table.replace_schema_metadata({"org.apache.spark.sql.parquet.row.metadata": SCHEMA.json()}),
                   path)
