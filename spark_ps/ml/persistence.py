"""How a fitted model is saved and loaded: MLlib's metadata JSON for the Params, Delta for the weights.

The weights are never read by the driver: the writer has executors copy the
model's Delta table, and the reader only records where it is (or, for an
earlier version, the Delta time-travel query that reads it).

Two layouts share the metadata: a batch model's weights are the Delta table
``<path>/weights`` (``key, value`` and the optimizer state ``state_<name>``
of :func:`~spark_ps.ml.weights.full_row_schema`, so that a stream can
continue training from it; every save a new version), an online
model's are its change log and snapshots (:mod:`spark_ps.ml.modelstore`,
``weightsFormat`` :data:`ONLINE_FORMAT`), one version per committed
micro-batch.
"""

from __future__ import annotations

import os

from pyspark.ml.util import DefaultParamsReader, DefaultParamsWriter

from spark_ps.errors import UnavailableError
from spark_ps.ml import weights as weight_store
from spark_ps.ml.modelstore import ModelStore
from spark_ps.ml.objectives import BIAS_KEY
from spark_ps.spark import hadoop

__all__ = ["BATCH_FORMAT", "ONLINE_FORMAT", "PSModelReader", "PSModelWriter"]

#: ``weightsFormat`` of a fitted and saved model: the Delta table ``<path>/weights``.
BATCH_FORMAT = "delta:key,value"
#: ``weightsFormat`` of an online model: the change log of :class:`~spark_ps.ml.modelstore.ModelStore`.
ONLINE_FORMAT = "delta:log"


class PSModelWriter(DefaultParamsWriter):
    """Params as MLlib metadata JSON; weights copied by executors into ``<path>/weights`` (Delta).

    ``overwrite()`` replaces the metadata but writes the weights as a new
    version of the existing Delta table (MLlib's writer would delete the whole
    directory, losing the table's history, and with it the weights of a
    model loaded from that very path).
    """

    def save(self, path: str) -> None:
        if self.shouldOverwrite:
            hadoop.delete(self.sparkSession, os.path.join(path, "metadata"))
        self.saveImpl(path)

    def saveImpl(self, path: str) -> None:
        model = self.instance
        spark = self.sparkSession
        DefaultParamsWriter.saveMetadata(model, path, spark, extraMetadata=model._extra_metadata())
        target = os.path.join(path, "weights")
        if model._weights_source is None and os.path.abspath(model.weightsPath) == os.path.abspath(target):
            return  # saving a loaded model onto itself: its weights are already there
        # Every column: the optimizer state (state_*) lets a stream continue from the model (initialModel=).
        (model._weights_frame()
         .write.format("delta").mode("overwrite" if self.shouldOverwrite else "errorifexists").save(target))


class PSModelReader(DefaultParamsReader):
    """Reads a model's Params and points it at its weights, at the newest or a given version.

    Parameters
    ----------
    cls : type
        The model class.
    version : int, optional
        Delta version of the weights (batch) or of the change log (online).
    timestamp : str, optional
        Load the version that was current at this time.
    """

    def __init__(self, cls, version: int | None = None, timestamp: str | None = None):
        super().__init__(cls)
        if version is not None and timestamp is not None:
            raise ValueError("load: give a version or a timestamp, not both")
        self.version, self.timestamp = version, timestamp

    def load(self, path: str):
        """The model at ``path``, as of the reader's version or timestamp."""
        spark = self.sparkSession
        metadata = DefaultParamsReader.loadMetadata(path, spark)
        instance = DefaultParamsReader.load(self, path)
        if metadata.get("weightsFormat", BATCH_FORMAT) == ONLINE_FORMAT:
            store = ModelStore(spark, path)
            version = self.version if self.timestamp is None else store.version_at(self.timestamp)
            state = store.state(version)
            if state is None:
                raise UnavailableError(f"online model {path} has no committed batch yet: nothing to load")
            bias = weight_store.read_rows(spark, state, [BIAS_KEY]).get(BIAS_KEY, [0.0])[0]
            metadata = {**metadata, "intercept": bias + metadata.get("interceptOffset", 0.0)}
            instance._restore(metadata, store.log_path, state)
            return instance
        if self.version is not None or self.timestamp is not None:
            # The metadata (intercept, Params) of a saved batch model is rewritten by every save,
            # so an old weights version would be scored with today's intercept: refuse, never guess.
            raise ValueError(f"{path} is a batch model: only its newest version can be loaded (its intercept "
                             "and Params are not versioned); online models load any committed version")
        instance._restore(metadata, os.path.join(path, "weights"))
        return instance
