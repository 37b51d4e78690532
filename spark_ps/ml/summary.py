"""Training and evaluation summaries, computed by Spark evaluators on the executors."""

from __future__ import annotations

from functools import cached_property

from pyspark.ml.evaluation import BinaryClassificationEvaluator, RegressionEvaluator
from pyspark.sql import DataFrame


class TrainingHistory:
    """Per-epoch objective (mean data loss, weighted) of a fit."""

    def __init__(self, objective_history: list[float]):
        self._history = list(objective_history)

    @property
    def objectiveHistory(self) -> list[float]:
        """Mean training loss after each epoch (without the regularisation term)."""
        return list(self._history)

    @property
    def totalIterations(self) -> int:
        """Epochs run (one parameter-server pass over the data each)."""
        return len(self._history)


class BinaryClassificationSummary(TrainingHistory):
    """Like MLlib's ``BinaryLogisticRegressionSummary``: metrics of ``predictions``.

    Examples
    --------
    >>> s = BinaryClassificationSummary(None, [0.6, 0.5], "rawPrediction", "label", None)  # doctest: +SKIP
    >>> s.totalIterations                                                                     # doctest: +SKIP
    2
    """

    def __init__(self, predictions: DataFrame | None, objective_history: list[float], raw_col: str,
                 label_col: str, weight_col: str | None):
        super().__init__(objective_history)
        self.predictions = predictions
        self._raw_col, self._label_col, self._weight_col = raw_col, label_col, weight_col

    def _metric(self, name: str) -> float:
        if self.predictions is None:
            raise RuntimeError("this summary has no predictions (the model was loaded); use model.evaluate(df)")
        evaluator = BinaryClassificationEvaluator(rawPredictionCol=self._raw_col, labelCol=self._label_col,
                                                  metricName=name)
        if self._weight_col:
            evaluator.setWeightCol(self._weight_col)
        return evaluator.evaluate(self.predictions)

    @cached_property
    def areaUnderROC(self) -> float:
        return self._metric("areaUnderROC")

    @cached_property
    def areaUnderPR(self) -> float:
        return self._metric("areaUnderPR")


class RegressionSummary(TrainingHistory):
    """Like MLlib's ``LinearRegressionSummary``: metrics of ``predictions``."""

    def __init__(self, predictions: DataFrame | None, objective_history: list[float], prediction_col: str,
                 label_col: str, weight_col: str | None):
        super().__init__(objective_history)
        self.predictions = predictions
        self._prediction_col, self._label_col, self._weight_col = prediction_col, label_col, weight_col

    def _metric(self, name: str) -> float:
        if self.predictions is None:
            raise RuntimeError("this summary has no predictions (the model was loaded); use model.evaluate(df)")
        evaluator = RegressionEvaluator(predictionCol=self._prediction_col, labelCol=self._label_col,
                                        metricName=name)
        if self._weight_col:
            evaluator.setWeightCol(self._weight_col)
        return evaluator.evaluate(self.predictions)

    @cached_property
    def rootMeanSquaredError(self) -> float:
        return self._metric("rmse")

    @cached_property
    def meanSquaredError(self) -> float:
        return self._metric("mse")

    @cached_property
    def meanAbsoluteError(self) -> float:
        return self._metric("mae")

    @cached_property
    def r2(self) -> float:
        return self._metric("r2")
