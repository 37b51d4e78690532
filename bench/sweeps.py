"""Parameter sweeps of our estimators under pyspark.ml tuning, moved out of ``make test``.

``tests/ml/test_ml_api_pipelines.py`` proves that ``CrossValidator`` and
``TrainValidationSplit`` drive our estimators: each Param map reaches the fit,
the best model is ours with the chosen Params, the evaluator reads our
columns, and the result scores like MLlib's. Two Param maps (both Params
varied) prove that; the full ``regParam x numEpochs`` products below prove
nothing more about our code and cost twice the fits, so they run here,
reporting every map's metric next to MLlib's default estimator on the same
data:

* ``CrossValidator`` (2 folds) over our ``LogisticRegression`` on 400 a9a
  rows, ``regParam`` {0, 0.02} x ``numEpochs`` {1, 3}, held-out AUC on the
  next 200 rows;
* ``TrainValidationSplit`` (75/25) over our ``LinearRegression`` (FTRL) on
  300 synthetic rows, ``regParam`` {0, 0.01} x ``numEpochs`` {2, 6},
  held-out RMSE on 100 more.

Run from the repository root (``make bench`` runs it after the MLlib bench,
``make bench-sweeps`` alone): ``python -m bench.sweeps [--master local[2]]``.
Prints one Markdown table per sweep; a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import tempfile
import threading
import time

import numpy as np

from bench import ROOT

A9A = ROOT / "data" / "a9a.libsvm.gz"
A9A_DIM = 123


def a9a_rows(n: int, skip: int = 0):
    """``n`` rows of a9a after ``skip``, as ``(label in {0, 1}, SparseVector(123))``."""
    from pyspark.ml.linalg import Vectors

    rows = []
    with gzip.open(A9A, "rt") as fh:
        for i, line in enumerate(fh):
            if i < skip:
                continue
            if len(rows) == n:
                break
            label, *feats = line.split()
            pairs = sorted((int(k) - 1, float(v)) for k, v in (f.split(":") for f in feats))
            rows.append((1.0 if float(label) > 0 else 0.0,
                         Vectors.sparse(A9A_DIM, [k for k, _ in pairs], [v for _, v in pairs])))
    return rows


def regression_rows(n: int, dim: int = 20, seed: int = 3):
    """``y = w.x + 0.5 + noise`` with 1..5 non-zeros of ``dim`` per row (the tests' data)."""
    from pyspark.ml.linalg import Vectors

    rng = np.random.default_rng(seed)
    truth = rng.normal(0, 1.0, dim)
    rows = []
    for _ in range(n):
        idx = np.sort(rng.choice(dim, rng.integers(1, 6), replace=False))
        val = rng.uniform(0.5, 1.5, len(idx))
        y = float(val @ truth[idx] + 0.5 + rng.normal(0, 0.1))
        rows.append((y, Vectors.sparse(dim, idx.tolist(), val.tolist())))
    return rows


def session(master: str, checkpoint_dir: str):
    """A session with the spark-ps plugin; the fits write their weights under ``checkpoint_dir``."""
    from pyspark.sql import SparkSession

    from spark_ps.spark.session import configure_spark_with_ps

    builder = SparkSession.builder.master(master).appName("bench-sweeps")
    for key, value in {"spark.driver.host": "127.0.0.1", "spark.ui.enabled": "false",
                       "spark.ui.showConsoleProgress": "false", "spark.sql.shuffle.partitions": "2",
                       "spark.default.parallelism": "2", "spark.ps.checkpointDir": checkpoint_dir}.items():
        builder = builder.config(key, value)
    return configure_spark_with_ps(builder).getOrCreate()


def _table(title: str, metric: str, params: list[str], rows: list[tuple], best: int, mllib: float,
           held_out: float, seconds: float) -> str:
    lines = [f"### {title}", "", f"| {' | '.join(params)} | {metric} |", "|" + "---|" * (len(params) + 1)]
    for i, (values, value) in enumerate(rows):
        mark = " (best)" if i == best else ""
        lines.append(f"| {' | '.join(str(v) for v in values)} | {value:.4f}{mark} |")
    lines += ["", f"Best model on held-out rows: {held_out:.4f}; MLlib's default estimator: {mllib:.4f}; "
                  f"{seconds:.0f} s.", ""]
    return "\n".join(lines)


def cross_validator_sweep(spark) -> str:
    from pyspark.ml.classification import LogisticRegression as MLlibLogisticRegression
    from pyspark.ml.evaluation import BinaryClassificationEvaluator
    from pyspark.ml.tuning import CrossValidator, ParamGridBuilder

    from spark_ps.ml.classification import LogisticRegression

    train = spark.createDataFrame(a9a_rows(400), ["label", "features"]).cache()
    test = spark.createDataFrame(a9a_rows(200, skip=400), ["label", "features"]).cache()
    est = LogisticRegression(batchSize=32, alpha=0.3)
    grid = ParamGridBuilder().addGrid(est.regParam, [0.0, 0.02]).addGrid(est.numEpochs, [1, 3]).build()
    evaluator = BinaryClassificationEvaluator()
    start = time.perf_counter()
    model = CrossValidator(estimator=est, estimatorParamMaps=grid, evaluator=evaluator, numFolds=2,
                           seed=3).fit(train)
    seconds = time.perf_counter() - start
    held_out = evaluator.evaluate(model.transform(test))
    mllib = evaluator.evaluate(MLlibLogisticRegression().fit(train).transform(test))
    rows = [((m[est.regParam], m[est.numEpochs]), metric) for m, metric in zip(grid, model.avgMetrics)]
    return _table("CrossValidator, LogisticRegression, a9a (400 rows, 2 folds)", "mean AUC",
                  ["regParam", "numEpochs"], rows, int(np.argmax(model.avgMetrics)), mllib, held_out, seconds)


def train_validation_split_sweep(spark) -> str:
    from pyspark.ml.evaluation import RegressionEvaluator
    from pyspark.ml.regression import LinearRegression as MLlibLinearRegression
    from pyspark.ml.tuning import ParamGridBuilder, TrainValidationSplit

    from spark_ps.ml.regression import LinearRegression

    rows = regression_rows(400)
    train = spark.createDataFrame(rows[:300], ["label", "features"]).cache()
    test = spark.createDataFrame(rows[300:], ["label", "features"]).cache()
    est = LinearRegression(optimizer="ftrl", batchSize=8, alpha=0.5)
    grid = ParamGridBuilder().addGrid(est.regParam, [0.0, 0.01]).addGrid(est.numEpochs, [2, 6]).build()
    evaluator = RegressionEvaluator()
    start = time.perf_counter()
    model = TrainValidationSplit(estimator=est, estimatorParamMaps=grid, evaluator=evaluator, trainRatio=0.75,
                                 seed=3).fit(train)
    seconds = time.perf_counter() - start
    held_out = evaluator.evaluate(model.transform(test))
    mllib = evaluator.evaluate(MLlibLinearRegression().fit(train).transform(test))
    table = [((m[est.regParam], m[est.numEpochs]), metric) for m, metric in zip(grid, model.validationMetrics)]
    return _table("TrainValidationSplit, LinearRegression (FTRL), synthetic (300 rows, 75/25)", "RMSE",
                  ["regParam", "numEpochs"], table, int(np.argmin(model.validationMetrics)), mllib, held_out,
                  seconds)


def _wait_for_weight_exports(timeout: float = 300.0) -> None:
    """Let the fits' background Delta exports (threads ``ps-export-*``) finish before the session stops."""
    for thread in threading.enumerate():
        if thread.name.startswith("ps-export-"):
            thread.join(timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args(argv)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    with tempfile.TemporaryDirectory(prefix="bench-sweeps-") as checkpoint_dir:
        spark = session(args.master, checkpoint_dir)
        spark.sparkContext.setLogLevel("ERROR")
        try:
            for sweep in (cross_validator_sweep, train_validation_split_sweep):
                print(sweep(spark), flush=True)
            _wait_for_weight_exports()
        finally:
            spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
