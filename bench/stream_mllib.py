"""MLlib's ``StreamingLogisticRegressionWithSGD`` on the streaming bench's files, in its own child process.

The baseline the issue names: DStreams (``pyspark.streaming``), a dense
model on the driver, ``numIterations`` steps of full-batch SGD on it per
micro-batch (``LogisticRegressionWithSGD.train`` from the previous weights;
no intercept). Its input is a ``queueStream`` of one RDD of ``LabeledPoint``
per file of our stream (the same Parquet files, the same rows, the same
order; ``oneAtATime``), read lazily when its batch runs, as our file source
reads them.

Each batch runs three output operations in order (a ``StreamingContext``
runs a batch's output operations one after another):

1. the bench's scoring hook: the batch is cached (the two passes that
   follow read it once) and scored by ``latestModel()``, the model *before*
   it learns from the batch (its dense weights broadcast; margins summed with
   numpy per partition; AUC and log-loss on the driver with
   :mod:`bench.metrics`);
2. MLlib's own ``trainOn`` (the SGD update);
3. the bench's end hook: the batch's latency (start of 1 to end of 3) and
   training seconds (end of 1 to end of 3), the batch uncached.

Step size. The class's default ``stepSize=0.1`` barely moves in 50
iterations on these sparse binary rows: a numpy replay of MLlib's update
(``w -= step / sqrt(t) * mean gradient``, t = 1..50 per batch, from the
previous batch's weights) on the first five 100k-row batches at d = 2^22
gave progressive AUCs 0.52 / 0.54 / 0.55 / 0.57 at step 0.1, 0.64 / 0.69 /
0.70 / 0.71 at 1.0 (``LogisticRegressionWithSGD.train``'s default) and
0.72 / 0.74 / 0.75 / 0.76 at 5.0. The bench gives MLlib the best of those,
5.0 (``--mllib-step``), so the comparison is with a tuned baseline.

A failed output operation stops the wait at once
(``awaitTerminationOrTimeout`` rethrows it); a JVM that exits on
``OutOfMemoryError`` shows in the log, which the parent reads.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from bench.metrics import auc, log_loss
from bench.records import MLLIB, OK, TIMEOUT
from bench.stream_records import THROUGHPUT, BatchStat, StreamRun


def to_labeled_points(rows):
    """``mapPartitions`` function: Spark ML rows (``label``, ``features``) to MLlib ``LabeledPoint``s."""
    from pyspark.mllib.linalg import Vectors
    from pyspark.mllib.regression import LabeledPoint

    for r in rows:
        yield LabeledPoint(r.label, Vectors.fromML(r.features))


def margins_of(weights):
    """``mapPartitions`` function: one ``(labels, margins)`` pair per partition of ``LabeledPoint``s.

    ``weights`` is a broadcast dense weight vector; the margins are summed
    with numpy over the partition's concatenated non-zeros (no intercept:
    MLlib's streaming model has none).

    Examples
    --------
    >>> from pyspark.mllib.linalg import Vectors
    >>> from pyspark.mllib.regression import LabeledPoint
    >>> class W:
    ...     value = np.array([0.5, -1.0, 2.0])
    >>> pts = [LabeledPoint(1.0, Vectors.sparse(3, [0, 2], [1.0, 1.0])), LabeledPoint(0.0, Vectors.sparse(3, [1], [2.0]))]
    >>> [(y.tolist(), m.tolist()) for y, m in margins_of(W)(iter(pts))]
    [([1.0, 0.0], [2.5, -2.0])]
    """
    def score(points):
        labels, indices, values = [], [], []
        for p in points:
            labels.append(p.label)
            indices.append(p.features.indices)
            values.append(p.features.values)
        if not labels:
            return
        lengths = np.fromiter((len(i) for i in indices), np.int64, len(indices))
        contrib = weights.value[np.concatenate(indices)] * np.concatenate(values)
        rows = np.repeat(np.arange(len(labels)), lengths)
        yield np.asarray(labels), np.bincount(rows, weights=contrib, minlength=len(labels))

    return score


class _Hooks:
    """The bench's two output operations around ``trainOn``, and what they measured."""

    def __init__(self, sc, model, expected: int):
        self.sc, self.model, self.expected = sc, model, expected
        self.batches: list[BatchStat] = []
        self.done = threading.Event()
        self._pending: BatchStat | None = None
        self._start = self._trained_from = 0.0

    def score(self, _time, rdd) -> None:
        """Cache the batch and score it with the model as it is before ``trainOn`` sees the batch."""
        self._start = time.perf_counter()
        rdd.cache()
        weights = self.sc.broadcast(self.model.latestModel().weights.toArray())
        parts = rdd.mapPartitions(margins_of(weights)).collect()
        weights.unpersist()
        if not parts:  # queueStream's empty RDD once its queue is drained
            return
        y = np.concatenate([p[0] for p in parts])
        m = np.concatenate([p[1] for p in parts])
        self._trained_from = time.perf_counter()
        self._pending = BatchStat(batch_id=len(self.batches), rows=len(y), start=time.time(),
                                  score_s=self._trained_from - self._start, auc=auc(y, m),
                                  log_loss=log_loss(y, 0.5 * (1.0 + np.tanh(0.5 * m))))

    def finish(self, _time, rdd) -> None:
        """After ``trainOn``: the batch's latency and training seconds; uncache it."""
        end = time.perf_counter()
        rdd.unpersist()
        stat, self._pending = self._pending, None
        if stat is None:
            return
        stat.latency_s, stat.train_s = end - self._start, end - self._trained_from
        self.batches.append(stat)
        print(f"[bench.stream] {MLLIB} batch {stat.batch_id}: {stat.rows} rows, {stat.latency_s:.2f} s, "
              f"auc {stat.auc:.4f}", flush=True)
        if len(self.batches) >= self.expected:
            self.done.set()


def run_mllib(spark, cfg, session_s: float) -> StreamRun:
    """Stream ``cfg.streams[0]``'s files through ``StreamingLogisticRegressionWithSGD``; the run's record.

    Parameters
    ----------
    spark : pyspark.sql.SparkSession
        A session without our plugin.
    cfg : bench.stream_child.StreamChildConfig
        ``d_log2``, the files, ``mllib_iterations``, ``mllib_step``,
        ``mllib_interval_s`` (the DStream batch interval) and ``timeout``
        (the wait ends at 90% of it, so the batches done so far are kept).
    session_s : float
        The child's session start-up seconds, recorded.
    """
    from pyspark.mllib.classification import StreamingLogisticRegressionWithSGD
    from pyspark.streaming import StreamingContext

    spec = cfg.streams[0]
    sc = spark.sparkContext
    run = StreamRun(system=MLLIB, purpose=THROUGHPUT, d_log2=cfg.d_log2, batch_rows=spec.batch_rows,
                    session_s=session_s, workers=sc.defaultParallelism,
                    settings=f"numIterations={cfg.mllib_iterations}, stepSize={cfg.mllib_step:g}, "
                             f"miniBatchFraction=1, regParam 0, no intercept, batch interval "
                             f"{cfg.mllib_interval_s:g} s")
    model = StreamingLogisticRegressionWithSGD(stepSize=cfg.mllib_step, numIterations=cfg.mllib_iterations)
    model.setInitialWeights(np.zeros(2**cfg.d_log2))
    ssc = StreamingContext(sc, cfg.mllib_interval_s)
    queue = [spark.read.parquet(f).rdd.mapPartitions(to_labeled_points) for f in spec.files]
    stream = ssc.queueStream(queue, oneAtATime=True)
    hooks = _Hooks(sc, model, len(queue))
    stream.foreachRDD(hooks.score)
    model.trainOn(stream)
    stream.foreachRDD(hooks.finish)
    deadline = time.monotonic() + 0.9 * cfg.timeout
    ssc.start()
    try:
        # Wake up on the last batch, a failed batch (rethrown here) or the deadline.
        while not hooks.done.is_set():
            if ssc.awaitTerminationOrTimeout(2.0):
                run.error = "the StreamingContext stopped before the last batch"
                break
            if time.monotonic() > deadline:
                run.status, run.error = TIMEOUT, f"{len(hooks.batches)} of {len(queue)} batches in {0.9 * cfg.timeout:.0f} s"
                break
    finally:
        run.batches = list(hooks.batches)
        ssc.stop(stopSparkContext=False, stopGraceFully=False)
    if hooks.done.is_set():
        run.status = OK
    return run
