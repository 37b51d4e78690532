"""The real sparse data sets in ``../shared/data`` (or ``data/``), as Spark DataFrames.

Each loader returns ``(train, test)`` with ``label`` in {0, 1} and a
``features`` VectorUDT column, read by Spark's own libsvm source on the
executors. iPinYou is 0-based with index 0 never used: Spark's reader
subtracts one from every index, which maps it onto 0-based vector positions
without any collision.
"""

from __future__ import annotations

import pathlib

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
#: Seed of the fixed 80/20 split of w8a (it has no official test file here).
W8A_SPLIT_SEED = 20261122


def data_file(name: str) -> str:
    """Path of a data file: the project's copy in ``data/`` first, then ``../shared/data``."""
    for folder in (ROOT / "data", SHARED):
        if (folder / name).exists():
            return str(folder / name)
    raise FileNotFoundError(f"{name} is in neither {ROOT / 'data'} nor {SHARED}")


def read_libsvm(spark: SparkSession, path: str, num_features: int, positive: float = 0.5) -> DataFrame:
    """libsvm file as (label in {0, 1}, features); labels above ``positive`` become 1."""
    df = spark.read.format("libsvm").option("numFeatures", num_features).load(path)
    return df.withColumn("label", F.when(F.col("label") > positive, 1.0).otherwise(0.0))


def a9a(spark: SparkSession) -> tuple[DataFrame, DataFrame]:
    return (read_libsvm(spark, data_file("a9a.libsvm.gz"), 123),
            read_libsvm(spark, data_file("a9a.t.libsvm.gz"), 123))


def ipinyou(spark: SparkSession) -> tuple[DataFrame, DataFrame]:
    return (read_libsvm(spark, data_file("ipinyou_deepctr.train.libsvm.gz"), 133465),
            read_libsvm(spark, data_file("ipinyou_deepctr.test.libsvm.gz"), 133465))


def w8a(spark: SparkSession) -> tuple[DataFrame, DataFrame]:
    full = read_libsvm(spark, data_file("w8a.libsvm.gz"), 300)
    # Spark's randomSplit is deterministic for a fixed seed and a fixed input ordering (one file).
    train, test = full.repartition(1).randomSplit([0.8, 0.2], seed=W8A_SPLIT_SEED)
    return train, test


DATASETS = {"a9a": a9a, "ipinyou": ipinyou, "w8a": w8a}
