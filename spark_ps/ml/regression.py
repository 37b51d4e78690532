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

from pyspark import keyword_only
from pyspark.ml.linalg import SparseVector, Vector
from pyspark.ml.param.shared import HasSeed
from pyspark.ml.regression import _LinearRegressionParams
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from spark_ps.ml.base import _MARGIN_COL, _PSEstimator, _PSModel
from spark_ps.ml.objectives import Objective
from spark_ps.ml.params import _PSTrainingParams, _SharedSetters
from spark_ps.ml.summary import RegressionSummary

__all__ = ["LinearRegression", "LinearRegressionModel"]


class _LinearRegressionPSParams(_SharedSetters, _LinearRegressionParams, _PSTrainingParams, HasSeed):
    """Params of :class:`LinearRegression` and :class:`LinearRegressionModel`; ``optimizer`` defaults to adagrad."""

    def __init__(self, *args):
        super().__init__(*args)
        self._setDefault(optimizer="adagrad")

    def _objective(self) -> Objective:
        return Objective("squared")


class LinearRegression(_PSEstimator, _LinearRegressionPSParams):
    """Least-squares linear regression trained on the parameter server.

    Examples
    --------
    >>> import os, tempfile
    >>> from pyspark.ml.linalg import Vectors
    >>> rows = [(2.0, Vectors.sparse(2, [0], [1.0])), (-1.0, Vectors.sparse(2, [1], [1.0]))]
    >>> df = spark.createDataFrame(rows * 20, ["label", "features"])
    >>> lr = LinearRegression(fitIntercept=False, alpha=0.5, batchSize=4, numEpochs=5)
    >>> lr.getOptimizer(), lr.getLoss()
    ('adagrad', 'squaredError')
    >>> model = lr.fit(df)
    >>> [round(c) for c in model.coefficients.toArray()], model.summary.rootMeanSquaredError < 0.5
    ([2, -1], True)
    >>> history = model.summary.objectiveHistory
    >>> len(history), history[-1] < history[0]
    (5, True)
    >>> path = os.path.join(tempfile.mkdtemp(), "linear")
    >>> model.save(path)
    >>> loaded = LinearRegressionModel.load(path)
    >>> x = Vectors.sparse(2, [0], [1.0])
    >>> loaded.numNonZeros, loaded.predict(x) == model.predict(x), round(loaded.predict(x))
    (2, True, 2)
    >>> LinearRegression(regParam=0.1).fit(df)
    Traceback (most recent call last):
    ...
    ValueError: regParam > 0 needs optimizer='ftrl' (it carries the L1/L2 terms); got optimizer='adagrad'
    """

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
        self.setParams(**self._input_kwargs)

    @classmethod
    def _model_class(cls) -> type[LinearRegressionModel]:
        return LinearRegressionModel

    @keyword_only
    def setParams(self, **kwargs: Any) -> LinearRegression:
        """Set any of the constructor's Params; returns ``self``."""
        self._set(**{k: v for k, v in kwargs.items() if v is not None})
        return self

    def setLoss(self, value: str) -> LinearRegression:
        return self._set(loss=value)

    def setEpsilon(self, value: float) -> LinearRegression:
        return self._set(epsilon=value)

    def _validate_params(self) -> None:
        super()._validate_params()
        if self.getLoss() != "squaredError":
            raise ValueError(f"loss={self.getLoss()!r} is not supported: spark-ps LinearRegression uses squaredError")
        if self.getSolver() not in ("auto", "normal", "l-bfgs"):
            raise ValueError(f"solver must be 'auto', 'normal' or 'l-bfgs' (as in pyspark.ml; it has no effect "
                             f"here), got {self.getSolver()!r}")
        if self.getRegParam() > 0 and self.getOptimizer() != "ftrl":
            raise ValueError(f"regParam > 0 needs optimizer='ftrl' (it carries the L1/L2 terms); "
                             f"got optimizer={self.getOptimizer()!r}")



class LinearRegressionModel(_PSModel, _LinearRegressionPSParams):
    """Model fitted by :class:`LinearRegression`."""

    _summary_class = RegressionSummary
    _summary_score_param = "predictionCol"

    def _output_columns(self, scored: DataFrame) -> DataFrame:
        if self.getPredictionCol():
            scored = scored.withColumn(self.getPredictionCol(), F.col(_MARGIN_COL))
            # MLlib tags it a numeric ML attribute (empty), as here.
            scored = scored.withMetadata(self.getPredictionCol(), {"ml_attr": {}})
        return scored

    @property
    def coefficients(self) -> SparseVector:
        """Non-zero coefficients as a SparseVector (read from Delta on the executors, O(nnz) here)."""
        return self._linear_weights()

    @property
    def scale(self) -> float:
        """Always 1.0: the loss is squared error (MLlib's huber scale does not apply)."""
        return 1.0

    def predict(self, value: Vector) -> float:
        """Prediction of one feature vector."""
        return self._margin_of(value)
