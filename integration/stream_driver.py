"""A streaming-training driver run as its own process, so that a test can SIGKILL it mid-stream.

``python integration/stream_driver.py SOURCE MODEL CHECKPOINT`` trains a
LogisticRegression (one worker, BSP: deterministic) from the Parquet files
in SOURCE, one file per micro-batch, until the source is drained, and
prints ``COMMITTED <batchId>`` after each commit (flushed), which is what
the test waits for before it kills the process.
"""

from __future__ import annotations

import logging
import sys

from sparkkit import start_ps_session


class _Committed(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("batch ") and "model version" in record.getMessage():
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
    query.stop()


def main(source: str, model: str, checkpoint: str) -> None:
    logger = logging.getLogger("spark_ps.streaming")
    logger.setLevel(logging.INFO)
    logger.addHandler(_Committed())
    spark = start_ps_session("local[2]", "stream-driver")
    train(spark, source, model, checkpoint)
    print("DRAINED", flush=True)
    spark.stop()


if __name__ == "__main__":
    main(*sys.argv[1:4])
