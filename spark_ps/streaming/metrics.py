"""Progressive-validation metrics of a micro-batch, computed on the executors, and the metrics table.

Each batch is scored by the model *before* it learns from the batch, so the
metrics measure generalisation to data the model has not seen, with no
held-out split (the "progressive validation" of online learning). A
classifier reports AUC and log-loss, a regressor RMSE and R²; a batch whose
labels are all one class has no AUC (null).
"""

from __future__ import annotations

from typing import Any

from pyspark.ml.evaluation import BinaryClassificationEvaluator, RegressionEvaluator
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

__all__ = ["batch_metrics", "metrics_frame"]

_COMMON = [("batchId", "long"), ("modelVersion", "long"), ("scoredByVersion", "long"), ("rows", "long"),
           ("quarantined", "long"), ("trainSeconds", "double"), ("scoreSeconds", "double")]
_CLASSIFICATION = [("auc", "double"), ("logLoss", "double")]
_REGRESSION = [("rmse", "double"), ("r2", "double")]

#: Probabilities are clipped to [EPS, 1 - EPS] in the log-loss, as scikit-learn does.
EPS = 1e-15


def batch_metrics(scored: DataFrame, estimator) -> dict[str, float | None]:
    """Metrics of a scored batch: ``auc`` and ``logLoss``, or ``rmse`` and ``r2`` for regression."""
    label = estimator.getLabelCol()
    weight = estimator._weight_col()
    if not estimator._binary_labels:
        evaluator = RegressionEvaluator(predictionCol=estimator.getPredictionCol(), labelCol=label)
        if weight:
            evaluator.setWeightCol(weight)
        return {"rmse": evaluator.evaluate(scored, {evaluator.metricName: "rmse"}),
                "r2": evaluator.evaluate(scored, {evaluator.metricName: "r2"})}
    w = F.col(weight) if weight else F.lit(1.0)
    p = F.least(F.greatest(F.element_at(_to_array(estimator.getProbabilityCol()), 2), F.lit(EPS)), F.lit(1 - EPS))
    y = F.col(label)
    sums = scored.agg(F.sum(w * -(y * F.log(p) + (1 - y) * F.log(1 - p))).alias("loss"), F.sum(w).alias("w"),
                      F.countDistinct(y).alias("classes")).first()
    auc = None
    if sums["classes"] == 2:
        evaluator = BinaryClassificationEvaluator(rawPredictionCol=estimator.getRawPredictionCol(), labelCol=label)
        if weight:
            evaluator.setWeightCol(weight)
        auc = evaluator.evaluate(scored)
    return {"auc": auc, "logLoss": float(sums["loss"] / sums["w"]) if sums["w"] else None}


def _to_array(column: str):
    from pyspark.ml.functions import vector_to_array

    return vector_to_array(F.col(column))


def metrics_frame(spark: SparkSession, records: list[dict[str, Any]], regression: bool) -> DataFrame:
    """The metrics table: one row per committed batch (small: built on the driver from commit metadata).

    Examples
    --------
    >>> metrics_frame(spark, [{"batchId": 0, "modelVersion": 1, "rows": 5, "auc": 0.5}], False).columns[:4]
    ['batchId', 'modelVersion', 'scoredByVersion', 'rows']
    """
    fields = _COMMON + (_REGRESSION if regression else _CLASSIFICATION)
    schema = ", ".join(f"{name} {kind}" for name, kind in fields)
    cast = {"long": int, "double": float}
    rows = [tuple(None if r.get(n) is None else cast[k](r[n]) for n, k in fields) for r in records]
    return spark.createDataFrame(rows, schema).orderBy("batchId")
