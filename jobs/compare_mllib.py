"""Train spark-ps LogisticRegression next to MLlib's on a9a.

``SPARK_PS_DEMO_JOB=jobs/compare_mllib.py bash jobs/run_demo.sh`` runs it.

Run through spark-submit with the project's ``conf/spark-defaults.conf`` (the
plugin, its jar, Delta)::

    spark-submit --properties-file conf/spark-defaults.conf jobs/compare_mllib.py [--train F --test F --out DIR]

Prints one progress line per epoch, then held-out AUC and wall time for both
learners on the same split, and saves our model (Params as MLlib metadata,
weights as a Delta table) under ``./warehouse/``.
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import sys
import time

from pyspark.ml.classification import LogisticRegression as MLlibLogisticRegression
from pyspark.ml.evaluation import BinaryClassificationEvaluator
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from spark_ps import PSContext
from spark_ps.ml.classification import LogisticRegression, LogisticRegressionModel

ROOT = pathlib.Path(__file__).resolve().parents[1]


def read_libsvm(spark: SparkSession, path: str, num_features: int):
    """libsvm file (labels -1/+1 or 0/1) as (label in {0,1}, features)."""
    df = spark.read.format("libsvm").option("numFeatures", num_features).load(path)
    return df.withColumn("label", F.when(F.col("label") > 0, 1.0).otherwise(0.0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", default=str(ROOT / "data" / "a9a.libsvm.gz"))
    parser.add_argument("--test", default=str(ROOT / "data" / "a9a.t.libsvm.gz"))
    parser.add_argument("--num-features", type=int, default=123)
    parser.add_argument("--out", default=str(ROOT / "warehouse" / "a9a_logistic_regression"))
    parser.add_argument("--epochs", type=int, default=0, help="numEpochs (0: chosen from the rows)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)
    logging.getLogger("spark_ps.ml").setLevel(logging.INFO)

    spark = SparkSession.builder.appName("spark-ps demo: a9a").getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    ps = PSContext.get(spark)  # the shards, and (in the background) the Python workers of the training tasks
    train = read_libsvm(spark, args.train, args.num_features).cache()
    test = read_libsvm(spark, args.test, args.num_features).cache()
    print(f"a9a: {train.count()} training rows, {test.count()} test rows, {args.num_features} features")
    auc = BinaryClassificationEvaluator(metricName="areaUnderROC")

    with ps:
        print("shards:", ", ".join(f"executor {s.executor_id} -> {s.host}:{s.port} (pid {s.pid})"
                                    for s in ps.servers))
        start = time.perf_counter()
        ours = LogisticRegression(numEpochs=args.epochs, regParam=1e-5).fit(train)
        passes = ours.summary.totalIterations
        ours_time = time.perf_counter() - start
        ours_auc = auc.evaluate(ours.transform(test))

        start = time.perf_counter()
        mllib = MLlibLogisticRegression(maxIter=100, regParam=1e-4).fit(train)
        mllib_time = time.perf_counter() - start
        mllib_auc = auc.evaluate(mllib.transform(test))

        ours.write().overwrite().save(args.out)
        reloaded_auc = auc.evaluate(LogisticRegressionModel.load(args.out).transform(test))

    print()
    print("| learner | held-out AUC | fit wall time (s) |")
    print("|---|---:|---:|")
    print(f"| spark-ps LogisticRegression (FTRL, {passes} passes) | {ours_auc:.4f} | {ours_time:.1f} |")
    print(f"| MLlib LogisticRegression (L-BFGS, regParam 1e-4) | {mllib_auc:.4f} | {mllib_time:.1f} |")
    print(f"AUC difference (ours - MLlib): {ours_auc - mllib_auc:+.4f}")
    print(f"model saved to {args.out} (weights: Delta table {args.out}/weights); reloaded AUC {reloaded_auc:.4f}")
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
