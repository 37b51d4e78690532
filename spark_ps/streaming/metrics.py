"""The metrics table of an online model: one row per committed micro-batch, from the commits' metadata.

Each batch is scored by the model *before* it learns from the batch
(:mod:`spark_ps.streaming.progressive`), so the metrics measure
generalisation to data the model has not seen, with no held-out split (the
"progressive validation" of online learning). A classifier reports AUC and
log-loss, a regressor RMSE and R²; a batch whose labels are all one class
has no AUC (null).
"""

from __future__ import annotations

import datetime
from typing import Any

from pyspark.sql import DataFrame, SparkSession

__all__ = ["metrics_frame"]

_COMMON = [("batchId", "long"), ("modelVersion", "long"), ("scoredByVersion", "long"), ("rows", "long"),
           ("quarantined", "long"), ("trainSeconds", "double"), ("scoreSeconds", "double"),
           ("committedAt", "timestamp")]
_CLASSIFICATION = [("auc", "double"), ("logLoss", "double")]
_REGRESSION = [("rmse", "double"), ("r2", "double")]


def metrics_frame(spark: SparkSession, records: list[dict[str, Any]], regression: bool) -> DataFrame:
    """The metrics table: one row per committed batch (small: built on the driver from commit metadata).

    ``committedAt`` (the Delta commit's time) is given in milliseconds since the epoch.

    Examples
    --------
    >>> metrics_frame(spark, [{"batchId": 0, "modelVersion": 1, "rows": 5, "auc": 0.5}], False).columns[:4]
    ['batchId', 'modelVersion', 'scoredByVersion', 'rows']
    """
    fields = _COMMON + (_REGRESSION if regression else _CLASSIFICATION)
    schema = ", ".join(f"{name} {kind}" for name, kind in fields)
    cast = {"long": int, "double": float,
            "timestamp": lambda ms: datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)}
    rows = [tuple(None if r.get(n) is None else cast[k](r[n]) for n, k in fields) for r in records]
    return spark.createDataFrame(rows, schema).orderBy("batchId")
