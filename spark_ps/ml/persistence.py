"""How a fitted model is saved and loaded: one Delta commit holds a version's weights and its metadata.

The weights are never read by the driver: the writer has executors copy the
model's rows into a new Delta version, and the reader only records where
they are (a Delta ``versionAsOf`` query the executors run when scoring).

Two layouts: a batch model's weights are the Delta table ``<path>/weights``
(``key, value`` and the optimizer state ``state_<name>`` of
:func:`~spark_ps.ml.weights.full_row_schema`, so that a stream can continue
training from it). Every save is one commit of that table, carrying the
model's Params, intercept and lineage in its ``userMetadata``
(:mod:`spark_ps.ml.versions` says why), then MLlib's ``metadata/`` is
rewritten for MLlib's own readers. An online model's weights are its change
log and snapshots (:mod:`spark_ps.ml.modelstore`, ``weightsFormat``
:data:`ONLINE_FORMAT`), one version per committed micro-batch, its Params in
``metadata/`` (written once by the stream).
"""

from __future__ import annotations

import datetime
import json
import os

from pyspark.ml.util import DefaultParamsReader, DefaultParamsWriter

from spark_ps.errors import UnavailableError
from spark_ps.ml import versions
from spark_ps.ml import weights as weight_store
from spark_ps.ml.modelstore import ModelStore
from spark_ps.ml.objectives import BIAS_KEY
from spark_ps.ml.versions import BATCH_FORMAT, ONLINE_FORMAT, Lineage
from spark_ps.spark import hadoop
from spark_ps.spark.deltalog import read_version

__all__ = ["BATCH_FORMAT", "ONLINE_FORMAT", "PSModelReader", "PSModelWriter"]


class PSModelWriter(DefaultParamsWriter):
    """Saves a model as a new version of ``<path>``: weights and metadata in one Delta commit.

    ``overwrite()`` adds a version to the existing weights table (MLlib's
    writer would delete the whole directory, losing the table's history, and
    with it the weights of a model loaded from that very path). Without it,
    a path that holds a model is refused. :meth:`lineage` attaches the
    input and metrics to record; after :meth:`save`, :attr:`savedVersion`
    is the version written.

    Examples
    --------
    >>> import os, tempfile
    >>> from spark_ps.ml.classification import LogisticRegressionModel
    >>> from spark_ps.ml.versions import Lineage, history
    >>> weights = os.path.join(tempfile.mkdtemp(), "w")
    >>> spark.createDataFrame([(3, [0.5])], "key long, value array<float>").write.format("delta").save(weights)
    >>> model, path = LogisticRegressionModel(weights, 0.25, 100), os.path.join(tempfile.mkdtemp(), "lr")
    >>> writer = model.write().lineage(Lineage("data/clicks", 12, {"auc": 0.71}))
    >>> writer.save(path); writer.savedVersion
    0
    >>> model.write().overwrite().save(path)
    >>> [(r.version, r.inputVersion) for r in history(path).collect()]
    [(0, 12), (1, None)]
    """

    def __init__(self, instance):
        super().__init__(instance)
        self._lineage = Lineage()
        #: The model version the last :meth:`save` committed.
        self.savedVersion: int | None = None

    def lineage(self, lineage: Lineage) -> PSModelWriter:
        """Record ``lineage`` (the input's path and Delta version, metrics) with the version this writer saves.

        Parameters
        ----------
        lineage : Lineage

        Returns
        -------
        PSModelWriter
            This writer, to chain with ``overwrite()`` and ``save(path)``.

        Examples
        --------
        >>> from spark_ps.ml.classification import LogisticRegressionModel
        >>> writer = LogisticRegressionModel().write().lineage(Lineage("in", 1))
        >>> writer.lineage("in")
        Traceback (most recent call last):
        ...
        TypeError: lineage: expected a spark_ps.ml.versions.Lineage, got str
        """
        if not isinstance(lineage, Lineage):
            raise TypeError(f"lineage: expected a spark_ps.ml.versions.Lineage, got {type(lineage).__name__}")
        self._lineage = lineage
        return self

    def save(self, path: str) -> None:
        """Save the model as a new version at ``path`` (refused if a model is there, unless ``overwrite()``)."""
        if not self.shouldOverwrite:
            present = [p for p in ("metadata", "weights") if hadoop.exists(self.sparkSession, os.path.join(path, p))]
            if present:
                raise FileExistsError(f"model path {path} already exists (it has {' and '.join(present)}); nothing "
                                      "written: write().overwrite().save(path) adds a new version")
        self.saveImpl(path)

    def saveImpl(self, path: str) -> None:
        model = self.instance
        spark = self.sparkSession
        metadata = json.loads(DefaultParamsWriter._get_metadata_to_save(model, spark,
                                                                         extraMetadata=model._extra_metadata()))
        # Every column: the optimizer state (state_*) lets a stream continue from the model (initialModel=).
        self.savedVersion = versions.commit_weights(model._weights_frame(), path, metadata, self._lineage)
        # After the commit, the version's truth: a failure here leaves a complete version with stale metadata/,
        # which only MLlib's own readers use for the class name.
        versions.write_metadata_dir(spark, path, metadata)


class PSModelReader(DefaultParamsReader):
    """Reads a model's Params and points it at its weights, at the newest or a given version.

    Parameters
    ----------
    cls : type
        The model class.
    version : int, optional
        Model version (batch: a Delta version of the weights table that a save
        committed, see :func:`spark_ps.ml.versions.history`; online: a version of the change log).
    timestamp : str or datetime, optional
        Load the newest version saved at or before this time.
    """

    def __init__(self, cls, version: int | None = None, timestamp: str | datetime.datetime | None = None):
        super().__init__(cls)
        if version is not None and timestamp is not None:
            raise ValueError("load: give a version or a timestamp, not both")
        self.version, self.timestamp = version, timestamp

    def load(self, path: str):
        """The model at ``path``, as of the reader's version or timestamp."""
        spark = self.sparkSession
        table = versions.weights_table(path)
        if versions.commit_versions(spark, table):
            version, metadata = versions.resolve(spark, path, self.version, self.timestamp)
            instance = versions.instantiate(metadata)
            # Pinned to the version: a later save to the path does not change this model's weights.
            instance._restore(metadata, table, read_version(spark, table, version))
            return instance
        if not hadoop.exists(spark, os.path.join(path, "metadata")):
            raise FileNotFoundError(f"{path} holds no model (neither {table} nor {path}/metadata exists)")
        metadata = DefaultParamsReader.loadMetadata(path, spark)
        if metadata.get("weightsFormat", BATCH_FORMAT) != ONLINE_FORMAT:
            raise FileNotFoundError(f"{path} has metadata but no weights table {table}: nothing to load")
        instance = versions.instantiate(metadata)
        store = ModelStore(spark, path)
        version = self.version if self.timestamp is None else store.version_at(self.timestamp)
        if version is not None:
            committed = [c.version for c in store.commits()]
            if version not in committed:
                raise ValueError(f"online model {path} has no version {version}: its versions are "
                                 f"{versions.spans(committed)}; nothing loaded")
        state = store.state(version)
        if state is None:
            raise UnavailableError(f"online model {path} has no committed batch yet: nothing to load")
        bias = weight_store.read_rows(spark, state, [BIAS_KEY]).get(BIAS_KEY, [0.0])[0]
        metadata = {**metadata, "intercept": bias + metadata.get("interceptOffset", 0.0)}
        instance._restore(metadata, store.log_path, state)
        return instance
