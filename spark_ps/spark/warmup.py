"""Python workers ready before the first fit needs them (issue 12: no cold-start tax).

A fit's tasks are Spark's Python workers. In a fresh application the first
Python task of each executor starts its worker: a Python interpreter that
imports pyarrow, numpy, numba and our training modules, and loads the numba
kernels from their on-disk cache. The first ``mapInArrow`` also runs the
JVM's Arrow writer cold. Measured on ``local[2]`` (400k rows, d = 2^18,
default Params, a fresh application each): the first fit took 4.95 s and
the second 2.59 s; after a two-task ``mapInArrow`` that only imports the
training modules, the first fit took 4.26 s.

So the first :class:`~spark_ps.spark.context.PSContext` of an application
(made by ``PSContext.get``, which a job can call as soon as its session
exists, and which every fit calls) runs :func:`warm_workers` in the
background: one such task per task slot. Spark keeps the workers for the
fit's tasks (``spark.python.worker.reuse``, on by default).

The tasks import what is heavy in a training task's imports: numpy, pyarrow,
numba (0.7 s of the 0.9 s it takes to import ``spark_ps.ml.training``) and
the client, and run the key factorisation kernel once, which loads numba's
compiled code from its cache. The estimator modules above them are plain
Python (this module sits with the driver's code, which may not import them).

The job reads :data:`WARM_ROWS` rows a slot shaped as a ``VectorUDT``
column reaches ``mapInArrow`` (a struct of a byte, an int and two lists),
so each executor's JVM has run its Arrow writers for that shape before a
fit converts its partitions. On ``local-cluster[2,1,2048]`` (400k cached
rows at 2^18, a fresh application each, alternating runs) the first Arrow
pass over the cached rows took 0.93-0.94 s after such a job and 1.21-1.40 s
without it (later passes 0.55-0.63 s), and a first default fit 2.48-2.54 s
against 2.56-2.90 s (``bench.profile_fit``).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from spark_ps.spark.tasks import task_slots

#: Spark job group of the warm-up job (``statusTracker().getJobIdsForGroup`` finds it).
JOB_GROUP = "spark-ps-warm-up"
#: Rows per task slot of the warm-up job; more did not make the first fit's conversion faster (50,000: the same).
WARM_ROWS = 10_000
#: Those rows: a sparse vector's struct as ``mapInArrow`` receives a ``VectorUDT`` column, and a label.
_WARM_COLUMNS = ("named_struct('type', CAST(0 AS TINYINT), 'size', 1024, "
                 "'indices', sequence(CAST(id % 8 AS INT), CAST(id % 8 AS INT) + 29), "
                 "'values', array_repeat(1.0D, 30)) AS features", "CAST(id % 2 AS DOUBLE) AS label")


def warm_workers(spark) -> None:
    """Start a Python worker in every task slot with a training task's heavy imports, and warm the Arrow writers.

    Each executor's JVM converts :data:`WARM_ROWS` rows a slot shaped as a
    sparse vector column to Arrow for those workers.

    Parameters
    ----------
    spark : pyspark.sql.SparkSession

    Examples
    --------
    >>> warm_workers(spark)       # a two-task job on local[2]; returns when both workers are ready
    """
    slots = task_slots(spark)
    sc = spark.sparkContext
    sc.setJobGroup(JOB_GROUP, "spark-ps: start the Python workers of the training tasks")
    try:
        rows = spark.range(0, slots * WARM_ROWS, 1, numPartitions=slots).selectExpr(*_WARM_COLUMNS)
        rows.mapInArrow(_import_training, "ready boolean").collect()
    finally:  # the group is a property of this thread: the caller's next jobs are not in it
        for key in ("spark.jobGroup.id", "spark.job.description", "spark.job.interruptOnCancel"):
            sc.setLocalProperty(key, None)


def preload() -> None:
    """Import the heavy part of a training task's imports, and run its key factorisation once.

    Run by the warm-up tasks, and by :mod:`spark_ps.spark.daemon` before it
    forks any worker.

    Examples
    --------
    >>> preload(); preload()      # the second call finds everything loaded
    """
    from spark_ps.client.client import PSClient  # noqa: F401  (the import is the warm-up)
    from spark_ps.native.factorize import sorted_unique_inverse

    sorted_unique_inverse(np.array([3, -1, 3], dtype=np.int64))  # numba loads its compiled code


def _import_training(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    for _ in batches:
        pass
    preload()
    yield pa.RecordBatch.from_pylist([{"ready": True}])
