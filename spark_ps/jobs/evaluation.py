"""Held-out metrics of a scored DataFrame, computed by Spark, and a one-page PNG of them.

Decisions:

- **Every pass over the rows is a Spark aggregation**; the driver receives
  O(bins) numbers, never O(rows): the ROC curve is drawn from
  :data:`ROC_BINS` score bins (its area is MLlib's exact
  ``BinaryClassificationEvaluator``, not the binned one), calibration from
  :data:`CALIBRATION_BINS` equal-width probability bins.
- **Log-loss clips** probabilities to ``[1e-15, 1 - 1e-15]``, as scikit-learn
  does, so one confident mistake costs 34.5, not infinity.
- Calibration is reported per bin (mean predicted, observed rate, rows) and
  as the expected calibration error (rows-weighted mean gap).
"""

from __future__ import annotations

import json
import os
from typing import Any

from pyspark.ml.evaluation import BinaryClassificationEvaluator, RegressionEvaluator
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

__all__ = ["CALIBRATION_BINS", "ROC_BINS", "classification_metrics", "plot_report", "positive_probability",
           "regression_metrics", "write_report"]

ROC_BINS = 200
CALIBRATION_BINS = 10
_EPS = 1e-15


def positive_probability(scored: DataFrame, column: str = "probability") -> DataFrame:
    """``scored`` with ``p``: the probability of label 1 (the second entry of the probability vector)."""
    return scored.withColumn("p", vector_to_array(F.col(column))[1])


def classification_metrics(scored: DataFrame, label: str = "label") -> dict[str, Any]:
    """AUC, log-loss, calibration and ROC points of a binary classifier's scores.

    Parameters
    ----------
    scored : DataFrame
        A classifier's ``transform`` output (``rawPrediction``, ``probability``) with ``label`` in {0, 1}.

    Returns
    -------
    dict
        ``rows``, ``positives``, ``auc``, ``logLoss``, ``calibrationError``,
        ``calibration`` (list of ``{bin, meanPredicted, observedRate, rows}``),
        ``roc`` (list of ``[fpr, tpr]``, from (0, 0) to (1, 1)).

    Examples
    --------
    >>> from pyspark.ml.linalg import Vectors
    >>> rows = [(1.0, Vectors.dense([-2.0, 2.0]), Vectors.dense([0.1, 0.9])),
    ...         (0.0, Vectors.dense([1.0, -1.0]), Vectors.dense([0.8, 0.2]))]
    >>> m = classification_metrics(spark.createDataFrame(rows, ["label", "rawPrediction", "probability"]))
    >>> m["rows"], m["auc"], round(m["logLoss"], 4), m["roc"][0], m["roc"][-1]
    (2, 1.0, 0.1643, [0.0, 0.0], [1.0, 1.0])
    """
    auc = BinaryClassificationEvaluator(labelCol=label, rawPredictionCol="rawPrediction").evaluate(scored)
    with_p = positive_probability(scored).select(F.col(label).cast("double").alias("y"), "p")
    clipped = F.least(F.greatest(F.col("p"), F.lit(_EPS)), F.lit(1 - _EPS))
    totals = with_p.agg(F.count("*").alias("rows"), F.sum("y").alias("positives"),
                        F.avg(-(F.col("y") * F.log(clipped) + (1 - F.col("y")) * F.log(1 - clipped)))
                        .alias("logLoss")).head()
    rows, positives = int(totals.rows), float(totals.positives or 0.0)
    bins = (with_p.withColumn("bin", F.least(F.floor(F.col("p") * CALIBRATION_BINS), F.lit(CALIBRATION_BINS - 1)))
            .groupBy("bin").agg(F.avg("p").alias("meanPredicted"), F.avg("y").alias("observedRate"),
                                F.count("*").alias("rows")).orderBy("bin").collect())
    calibration = [{"bin": int(b.bin), "meanPredicted": float(b.meanPredicted), "observedRate": float(b.observedRate),
                    "rows": int(b.rows)} for b in bins]
    ece = sum(b["rows"] * abs(b["meanPredicted"] - b["observedRate"]) for b in calibration) / max(rows, 1)
    return {"rows": rows, "positives": int(positives), "auc": float(auc), "logLoss": float(totals.logLoss),
            "calibrationError": float(ece), "calibration": calibration, "roc": _roc(with_p, positives, rows)}


def _roc(with_p: DataFrame, positives: float, rows: int) -> list[list[float]]:
    """ROC points from score bins, highest scores first: each bin's rows enter together."""
    counts = (with_p.withColumn("bin", F.least(F.floor(F.col("p") * ROC_BINS), F.lit(ROC_BINS - 1)))
              .groupBy("bin").agg(F.sum("y").alias("pos"), F.count("*").alias("n")).orderBy(F.desc("bin")).collect())
    negatives = rows - positives
    points, tp, fp = [[0.0, 0.0]], 0.0, 0.0
    for c in counts:
        tp += float(c.pos)
        fp += float(c.n) - float(c.pos)
        points.append([fp / negatives if negatives else 0.0, tp / positives if positives else 0.0])
    return points


def regression_metrics(scored: DataFrame, label: str = "label") -> dict[str, Any]:
    """RMSE, R² and mean absolute error of a regressor's ``prediction`` column.

    Examples
    --------
    >>> m = regression_metrics(spark.createDataFrame([(1.0, 1.5), (3.0, 2.5)], ["label", "prediction"]))
    >>> m["rows"], m["rmse"], m["r2"]
    (2, 0.5, 0.75)
    """
    evaluator = RegressionEvaluator(labelCol=label, predictionCol="prediction")
    return {"rows": scored.count(), "rmse": evaluator.setMetricName("rmse").evaluate(scored),
            "r2": evaluator.setMetricName("r2").evaluate(scored),
            "mae": evaluator.setMetricName("mae").evaluate(scored)}


def plot_report(metrics: dict[str, Any], path: str, title: str) -> str:
    """A PNG of the ROC curve and the calibration plot (classification) or a text card (regression)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a cluster
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    if "roc" in metrics:
        fpr, tpr = zip(*metrics["roc"])
        axes[0].plot(fpr, tpr, label=f"AUC {metrics['auc']:.4f}")
        axes[0].plot([0, 1], [0, 1], linestyle=":", color="grey")
        axes[0].set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
        axes[0].legend(loc="lower right")
        cal = metrics["calibration"]
        axes[1].plot([b["meanPredicted"] for b in cal], [b["observedRate"] for b in cal], marker="o",
                     label=f"ECE {metrics['calibrationError']:.4f}")
        axes[1].plot([0, 1], [0, 1], linestyle=":", color="grey")
        axes[1].set(xlabel="mean predicted probability", ylabel="observed rate", title="calibration")
        axes[1].legend(loc="upper left")
    else:
        for ax in axes:
            ax.axis("off")
        axes[0].text(0.0, 0.5, "\n".join(f"{k}: {v:.5g}" for k, v in metrics.items() if isinstance(v, float)),
                     fontsize=14)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(metrics: dict[str, Any], directory: str, title: str) -> tuple[str, str]:
    """Write ``metrics.json`` and ``report.png`` into a local ``directory``; returns both paths."""
    os.makedirs(directory, exist_ok=True)
    json_path = os.path.join(directory, "metrics.json")
    tmp = json_path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(metrics, handle, indent=1)
    os.replace(tmp, json_path)  # never a half-written metrics.json
    return json_path, plot_report(metrics, os.path.join(directory, "report.png"), title)
