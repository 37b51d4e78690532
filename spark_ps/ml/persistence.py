"""How a fitted model is saved and loaded: MLlib's metadata JSON for the Params, Delta for the weights.

The weights are never read by the driver: the writer has executors copy the
model's Delta table, and the reader only records where it is.
"""

from __future__ import annotations

import os

from pyspark.ml.util import DefaultParamsReader, DefaultParamsWriter

__all__ = ["PSModelReader", "PSModelWriter"]


class PSModelWriter(DefaultParamsWriter):
    """Params as MLlib metadata JSON; weights copied by executors into ``<path>/weights`` (Delta).

    ``overwrite()`` replaces the metadata but writes the weights as a new
    version of the existing Delta table (MLlib's writer would delete the whole
    directory, losing the table's history, and with it the weights of a
    model loaded from that very path).
    """

    def save(self, path: str) -> None:
        if self.shouldOverwrite:
            self._delete(os.path.join(path, "metadata"))
        self.saveImpl(path)

    def _delete(self, path: str) -> None:
        jvm = self.sparkSession.sparkContext._jvm
        hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
        fs = hadoop_path.getFileSystem(self.sparkSession.sparkContext._jsc.hadoopConfiguration())
        fs.delete(hadoop_path, True)

    def saveImpl(self, path: str) -> None:
        model = self.instance
        spark = self.sparkSession
        DefaultParamsWriter.saveMetadata(model, path, spark, extraMetadata=model._extra_metadata())
        target = os.path.join(path, "weights")
        if os.path.abspath(model.weightsPath) == os.path.abspath(target):
            return  # saving a loaded model onto itself: its weights are already there
        (spark.read.format("delta").load(model.weightsPath)
         .write.format("delta").mode("overwrite" if self.shouldOverwrite else "errorifexists").save(target))


class PSModelReader(DefaultParamsReader):
    def load(self, path: str):
        metadata = DefaultParamsReader.loadMetadata(path, self.sparkSession)
        instance = DefaultParamsReader.load(self, path)
        instance._restore(metadata, os.path.join(path, "weights"))
        return instance
