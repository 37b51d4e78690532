"""Training and evaluation summaries, computed by Spark evaluators on the executors.

A summary holds the fit's per-epoch history (small: one number per epoch)
and a scored DataFrame; its metrics are Spark jobs run on first access and
then cached, so the driver never collects the scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import ClassVar

from pyspark.ml.evaluation import BinaryClassificationEvaluator, Evaluator, RegressionEvaluator
from pyspark.sql import DataFrame

__all__ = ["BinaryClassificationSummary", "RegressionSummary", "TrainingHistory"]


class TrainingHistory:
    """What a fit did, pass by pass: mean loss and wall time of each epoch, and why it stopped.

    Examples
    --------
    >>> h = TrainingHistory([0.6, 0.5], [1.25, 0.75], stopReason="tol", batchSize=512)
    >>> h.totalIterations, h.objectiveHistory, h.epochSeconds, h.stopReason, h.batchSize
    (2, [0.6, 0.5], [1.25, 0.75], 'tol', 512)
    >>> TrainingHistory.from_metadata(h.to_metadata()).to_metadata() == h.to_metadata()
    True
    """

    def __init__(self, objective_history: Sequence[float], epoch_seconds: Sequence[float] = (),
                 stopReason: str | None = None, batchSize: int | None = None):
        self._history = list(objective_history)
        self._epoch_seconds = list(epoch_seconds)
        self._stop_reason = stopReason
        self._batch_size = batchSize

    @classmethod
    def from_metadata(cls, metadata: dict) -> TrainingHistory:
        """The history saved with a model (:meth:`to_metadata`); keys added later may be absent."""
        return cls(metadata["objectiveHistory"], metadata.get("epochSeconds", []), metadata.get("stopReason"),
                   metadata.get("batchSize"))

    def to_metadata(self) -> dict:
        """The history as JSON-ready model metadata."""
        return {"objectiveHistory": self._history, "epochSeconds": self._epoch_seconds,
                "stopReason": self._stop_reason, "batchSize": self._batch_size}

    @property
    def objectiveHistory(self) -> list[float]:
        """Mean training loss of each epoch (progressive: each row's loss before its own update).

        Examples
        --------
        >>> TrainingHistory([0.69, 0.41, 0.33]).objectiveHistory
        [0.69, 0.41, 0.33]
        """
        return list(self._history)

    @property
    def totalIterations(self) -> int:
        """Epochs run (one parameter-server pass over the data each).

        Examples
        --------
        >>> TrainingHistory([0.69, 0.41, 0.33]).totalIterations
        3
        """
        return len(self._history)

    @property
    def epochSeconds(self) -> list[float]:
        """Wall seconds of each epoch (the slowest worker's); empty for models saved without them.

        Examples
        --------
        >>> TrainingHistory([0.69], [2.5]).epochSeconds, TrainingHistory([0.69]).epochSeconds
        ([2.5], [])
        """
        return list(self._epoch_seconds)

    @property
    def stopReason(self) -> str | None:
        """Why training stopped: ``"tol"`` (a pass improved the loss by less than ``tol``), or the Param that
        capped the passes, ``"numEpochs"`` or ``"maxIter"``; None for models saved without it.

        Examples
        --------
        >>> TrainingHistory([0.69, 0.41], stopReason="numEpochs").stopReason
        'numEpochs'
        """
        return self._stop_reason

    @property
    def batchSize(self) -> int | None:
        """Rows per mini-batch the fit used (chosen from the data when ``batchSize`` is 0).

        Examples
        --------
        >>> TrainingHistory([0.69], batchSize=2048).batchSize
        2048
        """
        return self._batch_size


class _EvaluatedSummary(TrainingHistory):
    """A history plus metrics of ``predictions``, by a Spark evaluator reading ``score_col``."""

    _evaluator: ClassVar[type[Evaluator]]
    _score_param: ClassVar[str]

    def __init__(self, predictions: DataFrame, history: TrainingHistory, score_col: str, label_col: str,
                 weight_col: str | None):
        super().__init__(history.objectiveHistory, history.epochSeconds, history.stopReason, history.batchSize)
        self.predictions = predictions
        self._score_col, self._label_col, self._weight_col = score_col, label_col, weight_col

    def _metric(self, name: str) -> float:
        evaluator = self._evaluator(**{self._score_param: self._score_col}, labelCol=self._label_col,
                                    metricName=name)
        if self._weight_col:
            evaluator.setWeightCol(self._weight_col)
        return evaluator.evaluate(self.predictions)


class BinaryClassificationSummary(_EvaluatedSummary):
    """Like MLlib's ``BinaryLogisticRegressionSummary``: metrics of ``predictions``.

    A model's ``summary`` and ``evaluate(df)`` return one; each metric is a
    Spark job, run on first access.

    Examples
    --------
    >>> from pyspark.ml.linalg import Vectors
    >>> scored = spark.createDataFrame([(1.0, Vectors.dense([-2.0, 2.0])), (0.0, Vectors.dense([1.0, -1.0])),
    ...                                 (1.0, Vectors.dense([1.5, -1.5]))], ["label", "rawPrediction"])
    >>> summary = BinaryClassificationSummary(scored, TrainingHistory([0.6, 0.5]), "rawPrediction", "label", None)
    >>> summary.areaUnderROC, round(summary.areaUnderPR, 3), summary.totalIterations
    (0.5, 0.792, 2)
    """

    _evaluator = BinaryClassificationEvaluator
    _score_param = "rawPredictionCol"

    @cached_property
    def areaUnderROC(self) -> float:
        """Area under the ROC curve of the scores."""
        return self._metric("areaUnderROC")

    @cached_property
    def areaUnderPR(self) -> float:
        """Area under the precision-recall curve of the scores."""
        return self._metric("areaUnderPR")


class RegressionSummary(_EvaluatedSummary):
    """Like MLlib's ``LinearRegressionSummary``: metrics of ``predictions``.

    Examples
    --------
    >>> scored = spark.createDataFrame([(1.0, 1.5, 1.0), (2.0, 2.0, 1.0), (3.0, 2.0, 2.0)],
    ...                                ["label", "prediction", "weight"])
    >>> summary = RegressionSummary(scored, TrainingHistory([0.4]), "prediction", "label", None)
    >>> [round(m, 4) for m in (summary.meanSquaredError, summary.rootMeanSquaredError ** 2, summary.meanAbsoluteError)]
    [0.4167, 0.4167, 0.5]
    >>> weighted = RegressionSummary(scored, TrainingHistory([]), "prediction", "label", "weight")
    >>> round(summary.r2, 4), weighted.meanAbsoluteError
    (0.375, 0.625)
    """

    _evaluator = RegressionEvaluator
    _score_param = "predictionCol"

    @cached_property
    def rootMeanSquaredError(self) -> float:
        """Root of the (weighted) mean squared error."""
        return self._metric("rmse")

    @cached_property
    def meanSquaredError(self) -> float:
        """(Weighted) mean squared error."""
        return self._metric("mse")

    @cached_property
    def meanAbsoluteError(self) -> float:
        """(Weighted) mean absolute error."""
        return self._metric("mae")

    @cached_property
    def r2(self) -> float:
        """Coefficient of determination."""
        return self._metric("r2")
