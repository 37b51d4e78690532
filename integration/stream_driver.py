"""A streaming-training driver run as its own process, so that a test can SIGKILL it mid-stream.

``python integration/stream_driver.py SOURCE MODEL CHECKPOINT`` trains a
LogisticRegression (one worker, BSP: deterministic) from the Parquet files
in SOURCE, one file per micro-batch, until the source is drained, and
prints (flushed) ``STARTED <batchId>`` when the trainer starts a micro-batch
and ``COMMITTED <batchId>`` after its commit: what the test waits for before
it kills the process.
"""

from __future__ import annotations

import logging
import pathlib
import sys
import time

import pyarrow.parquet as pq
from sparkkit import start_ps_session

from spark_ps.ml.modelstore import ModelStore


class _Progress(logging.Handler):
    """Prints the trainer's start and commit of each micro-batch, by the format of its log lines."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.startswith("batch %d: started"):
            print("STARTED", record.args[0], flush=True)
        elif record.msg.startswith("batch %d: %d rows"):
            print("COMMITTED", record.args[0], flush=True)


def train(spark, source: str, model: str, checkpoint: str) -> None:
    """Train from ``source`` until it is drained (the test's uninterrupted reference runs this in-process)."""
    from spark_ps.ml.classification import LogisticRegression
    from spark_ps.streaming import StreamingTrainer

    schema = spark.read.parquet(source).schema
    events = spark.readStream.schema(schema).option("maxFilesPerTrigger", 1).parquet(source)
    trainer = StreamingTrainer(LogisticRegression(numWorkers=1, syncMode="bsp", batchSize=64),
                               modelPath=model, snapshotEvery=2)
    query = trainer.start(events, checkpointLocation=checkpoint)
    query.processAllAvailable()
    # Drained means every source row committed: rows, not batches (a file source restarted between logging a file
    # and logging its offsets reads two files as one batch). processAllAvailable() should be enough; should it not
    # be, wait on the query, a second at a time, two minutes at most, rather than stop it short.
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in pathlib.Path(source).glob("*.parquet"))
    store, deadline = ModelStore(spark, model), time.monotonic() + 120
    while _committed_rows(store) < rows and time.monotonic() < deadline and not query.awaitTermination(1.0):
        query.processAllAvailable()
    query.stop()


def _committed_rows(store) -> int:
    """Rows of the batches committed to the model, read from the log's commit files."""
    return sum(c.metadata["rows"] for c in store.commits() if c.batch_id >= 0)


def main(source: str, model: str, checkpoint: str) -> None:
    logger = logging.getLogger("spark_ps.streaming")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(_Progress())
    spark = start_ps_session("local[2]", "stream-driver")
    train(spark, source, model, checkpoint)
    print("DRAINED", flush=True)
    spark.stop()


if __name__ == "__main__":
    main(*sys.argv[1:4])
