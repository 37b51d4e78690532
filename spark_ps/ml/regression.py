"""Drop-in replacement for ``pyspark.ml.regression.LinearRegression`` on the parameter server.

Squared loss, trained online (AdaGrad by default) over ``numEpochs`` passes.
``regParam``/``elasticNetParam`` map to per-coordinate L1/L2 exactly as for
:mod:`spark_ps.ml.classification` (FTRL); with adagrad/sgd/adam, a non-zero
``regParam`` raises, since those update rules carry no regulariser.
``loss="huber"`` raises. ``solver``, ``standardization``, ``aggregationDepth``
and ``maxBlockSizeInMB`` are accepted and have no effect.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pyspark import keyword_only
from pyspark.ml.linalg import SparseVector, Vector
from pyspark.ml.param.shared import HasSeed
from pyspark.ml.regression import _LinearRegressionParams
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from spark_ps.ml.base import _MARGIN_COL, _PSEstimator, _PSModel
from spark_ps.ml.classification import _margin_from_delta
from spark_ps.ml.fitting import FitResult
from spark_ps.ml.objectives import Objective
from spark_ps.ml.params import _PSTrainingParams, _SharedSetters
from spark_ps.ml.summary import RegressionSummary

__all__ = ["LinearRegression", "LinearRegressionModel"]


class LinearRegression(_SharedSetters, _PSEstimator, _LinearRegressionParams, _PSTrainingParams, HasSeed):
    """Least-squares linear regression trained on the parameter server.

    Examples
    --------
    >>> from spark_ps.ml.regression import LinearRegression
    >>> LinearRegression().getOptimizer(), LinearRegression().getLoss()
    ('adagrad', 'squaredError')
    """

    _label = "LinearRegression"
    _binary_labels = False

    @keyword_only
    def __init__(self, *, featuresCol: str = "features", labelCol: str = "label",
                 predictionCol: str = "prediction", maxIter: int = 100, regParam: float = 0.0,
                 elasticNetParam: float = 0.0, tol: float = 1e-6, fitIntercept: bool = True,
                 standardization: bool = True, solver: str = "auto", weightCol: str | None = None,
                 aggregationDepth: int = 2, loss: str = "squaredError", epsilon: float = 1.35,
                 maxBlockSizeInMB: float = 0.0, optimizer: str = "adagrad", alpha: float | None = None,
                 beta: float = 1.0, batchSize: int = 256, numEpochs: int = 5, syncMode: str = "ssp",
                 staleness: int = 4, numWorkers: int = 0, psTimeout: float = 600.0,
                 checkpointDir: str | None = None, seed: int | None = None):
        super().__init__()
        self._setDefault(optimizer="adagrad")
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(self, **kwargs: Any) -> "LinearRegression":
        """Set any of the constructor's Params; returns ``self``."""
        self._set(**{k: v for k, v in kwargs.items() if v is not None})
        return self

    def setLoss(self, value: str) -> "LinearRegression":
        return self._set(loss=value)

    def setEpsilon(self, value: float) -> "LinearRegression":
        return self._set(epsilon=value)

    def _objective(self) -> Objective:
        return Objective("squared")

    def _validate_params(self) -> None:
        super()._validate_params()
        if self.getLoss() != "squaredError":
            raise ValueError(f"loss={self.getLoss()!r} is not supported: spark-ps LinearRegression uses squaredError")
        if self.getSolver() not in ("auto", "normal", "l-bfgs"):
            raise ValueError(f"solver must be 'auto', 'normal' or 'l-bfgs' (as in pyspark.ml; it has no effect "
                             f"here), got {self.getSolver()!r}")
        if self.getRegParam() < 0 or not 0.0 <= self.getElasticNetParam() <= 1.0:
            raise ValueError("regParam must be >= 0 and elasticNetParam in [0, 1]")
        if self.getRegParam() > 0 and self.getOptimizer() != "ftrl":
            raise ValueError(f"regParam > 0 needs optimizer='ftrl' (it carries the L1/L2 terms); "
                             f"got optimizer={self.getOptimizer()!r}")

    def _create_model(self, fit: FitResult) -> "LinearRegressionModel":
        return LinearRegressionModel(fit.weights_path, fit.intercept, fit.num_rows,
                                     objective_history=fit.objective_history, table=fit.table,
                                     num_features=fit.extra.get("num_features"))


class LinearRegressionModel(_SharedSetters, _PSModel, _LinearRegressionParams, _PSTrainingParams, HasSeed):
    """Model fitted by :class:`LinearRegression`."""

    def __init__(self, weights_path: str | None = None, intercept: float = 0.0, num_rows: int = 0, nnz: int = 0,
                 objective_history: list[float] | None = None, table: str | None = None,
                 num_features: int | None = None):
        super().__init__(weights_path, intercept, num_rows, nnz, objective_history, table, num_features)
        self._setDefault(optimizer="adagrad")

    def _objective(self) -> Objective:
        return Objective("squared")

    def _output_columns(self, scored: DataFrame) -> DataFrame:
        if self.getPredictionCol():
            scored = scored.withColumn(self.getPredictionCol(), F.col(_MARGIN_COL))
            # MLlib tags it a numeric ML attribute (empty), as here.
            scored = scored.withMetadata(self.getPredictionCol(), {"ml_attr": {}})
        return scored

    @property
    def coefficients(self) -> SparseVector:
        keys, values = self._sparse_rows()
        size = max(self.numFeatures, int(keys.max()) + 1 if len(keys) else 0)
        return SparseVector(size, keys.astype(np.int32), values[:, 0])

    @property
    def scale(self) -> float:
        return 1.0

    def predict(self, value: Vector) -> float:
        return _margin_from_delta(self, value)

    def _summary_of(self, dataset: DataFrame) -> RegressionSummary:
        """Metrics of this model on ``dataset``; scores with a prediction column even when the user's is ""."""
        model = self
        if not self.getPredictionCol():  # as MLlib's findSummaryModel: score into a temporary column
            model = self.copy().setPredictionCol(f"prediction_{self.uid}")
        weight_col = self.getWeightCol() if self.isDefined(self.weightCol) and self.getWeightCol() else None
        return RegressionSummary(model.transform(dataset), self._objective_history, model.getPredictionCol(),
                                 self.getLabelCol(), weight_col)

    def evaluate(self, dataset: DataFrame) -> RegressionSummary:
        """Metrics (rootMeanSquaredError, r2, ...) of this model on ``dataset``, computed on the executors."""
        return self._summary_of(dataset)

    @property
    def summary(self) -> RegressionSummary:
        """Training summary: ``objectiveHistory``, ``totalIterations`` and metrics on the training data."""
        if self._training_data is None:
            raise RuntimeError(f"no training summary available for this {type(self).__name__}: it was loaded, "
                               "not fitted; use evaluate(df)")
        return self._summary_of(self._training_data)

    @property
    def hasSummary(self) -> bool:
        return self._training_data is not None

