"""Warm start: a stream that continues training a saved model exactly where its fit stopped.

Decision: a batch ``fit`` + ``save`` keeps each row's optimizer state beside
its weights (``state_<name>`` columns, :func:`spark_ps.ml.weights.full_row_schema`),
and a stream with ``initialModel=`` copies those rows, unchanged, into its
model's change log as a seed commit (batch ``-1``,
:meth:`~spark_ps.ml.modelstore.ModelStore.seed`). From then on the saved
model is part of the stream's own truth: a restart rebuilds the shards from
the seed and the log after it, and never reads ``initialModel`` again.

Why the state and not the weights alone: FTRL's weight is a function of its
``z`` and ``n``; restarting it from the weights with zero state would make
the first online steps as large as the first steps of a fresh fit (the
learning rate per feature is ``alpha / (beta + sqrt(n))``), and undo what the
batch fit learnt. With the state, the first micro-batch applies the update a
further batch epoch would have applied (the test compares the two, to 1e-6).

The intercept: a batch fit starts the intercept at the mean label's link and
trains the difference on the intercept row, so the model's intercept is that
row plus an offset. The stream keeps the offset (``interceptOffset`` in the
model's metadata) and trains the same row.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.ml.util import DefaultParamsReader
from pyspark.sql import DataFrame, SparkSession

from spark_ps.ml import weights as weight_store
from spark_ps.ml.objectives import BIAS_KEY
from spark_ps.wire.spec import STATE_NAMES

__all__ = ["WarmStart", "warm_start"]


@dataclass(frozen=True)
class WarmStart:
    """The rows and facts a stream takes over from a saved model."""

    #: Full rows (``key, value, state_*``), read by the executors.
    rows: DataFrame
    #: Intercept minus the intercept row: the margin offset the model was trained with.
    offset: float
    #: Size of the saved model's training vectors.
    num_features: int


def warm_start(spark: SparkSession, estimator, path: str) -> WarmStart:
    """Check that the model saved at ``path`` can continue as ``estimator``'s stream; return its rows.

    Parameters
    ----------
    spark : SparkSession
    estimator : LogisticRegression, FMClassifier or LinearRegression
        The stream's estimator: its model class, row width and optimizer must be the saved model's.
    path : str
        A saved model (batch, with its optimizer state, or online).

    Raises
    ------
    ValueError
        If the saved model is of another class, has rows of another width,
        was trained with another optimizer, or was saved without its
        optimizer state (continuing would restart the optimizer from zero).

    Examples
    --------
    >>> import os, tempfile
    >>> from pyspark.ml.linalg import Vectors
    >>> from spark_ps.ml.classification import FMClassifier, LogisticRegression
    >>> rows = [(float(i % 2), Vectors.sparse(4, [i % 2, 2], [1.0, 1.0])) for i in range(40)]
    >>> path = os.path.join(tempfile.mkdtemp(), "lr")
    >>> LogisticRegression(numEpochs=2).fit(spark.createDataFrame(rows, ["label", "features"])).save(path)
    >>> start = warm_start(spark, LogisticRegression(), path)
    >>> start.rows.columns, start.num_features
    (['key', 'value', 'state_z', 'state_n'], 4)
    >>> warm_start(spark, FMClassifier(), path)
    Traceback (most recent call last):
    ...
    ValueError: initialModel ...: a LogisticRegressionModel cannot continue as a FMClassifier's stream ...
    """
    metadata = DefaultParamsReader.loadMetadata(path, spark)
    model_class = estimator._model_class()
    saved_class = metadata["class"].rsplit(".", 1)[-1]
    if saved_class != model_class.__name__:
        raise ValueError(f"initialModel {path}: a {saved_class} cannot continue as a "
                         f"{type(estimator).__name__}'s stream ({model_class.__name__})")
    model = model_class.load(path)
    optimizer = estimator.getOptimizer()
    if model.getOptimizer() != optimizer:
        raise ValueError(f"initialModel {path} was trained with optimizer {model.getOptimizer()!r}, the stream's "
                         f"estimator uses {optimizer!r}: its state cannot continue under another update rule")
    width, saved_width = estimator._objective().width, model._objective().width
    if width != saved_width:
        raise ValueError(f"initialModel {path} has rows of width {saved_width}, the stream's estimator needs "
                         f"{width} (factorSize differs?)")
    rows = model._weights_frame()
    schema = weight_store.full_row_schema(STATE_NAMES[optimizer])
    missing = [name for name in schema.fieldNames() if name not in rows.columns]
    if missing:
        raise ValueError(f"initialModel {path} has no {missing} columns: it was saved without its {optimizer} "
                         "state (by a version before it was kept), and continuing from its weights alone would "
                         "restart the optimizer; fit and save it again")
    offset = 0.0
    if estimator.getFitIntercept():
        bias_row = weight_store.read_rows(spark, rows, [BIAS_KEY]).get(BIAS_KEY, [0.0])[0]
        offset = model.intercept - bias_row
    return WarmStart(rows.select(*schema.fieldNames()), offset, model.numFeatures)
