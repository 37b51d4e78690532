"""``make bench-raw``: raw columns in, held-out AUC out, our FieldHasher pipeline against pyspark's.

Two data sets of raw categorical columns, one session (``local[2]``), both
pipelines in the same run:

- **iPinYou** (``../shared/data``, the DeepCTR split): its libsvm rows are
  one-hot encodings of 16 raw fields, and ``featindex`` names each index's
  ``field:value``, so the raw columns are rebuilt exactly (every row has one
  value per field: checked on the first 2,000 rows). 26,773 train / 21,150
  test rows, 51 clicks in the test set, so the AUC's standard error is
  about 0.04 (Hanley and McNeil) and is printed next to it.
- **rawctr** (``integration/rawctr.py``): Criteo-shaped synthetic events
  with a known truth, 40,000 / 20,000 rows.

Ours: ``FieldHasher`` (every column hashed as a category; rawctr's
integers log-bucketed) + our ``LogisticRegression``, default Params.
pyspark's: ``FeatureHasher`` (2^18 buckets; rawctr's integers as numeric
values, its default) + MLlib's ``LogisticRegression``, best held-out AUC over
regParam {1e-5, 1e-4, 1e-3} x standardization {on, off}. Prints one table
with both AUCs, their difference and the fit times.
"""

from __future__ import annotations

import gzip
import math
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
GRID = [(reg, std) for reg in (1e-5, 1e-4, 1e-3) for std in (True, False)]


def ipinyou_raw(split: str) -> pd.DataFrame:
    """iPinYou's ``split`` (train | test) as raw columns: label and one string column per field."""
    names = {}
    with gzip.open(SHARED / "ipinyou_deepctr.featindex.txt.gz", "rt") as handle:
        for line in handle:
            field_value, index = line.rstrip("\n").split("\t")
            names[int(index)] = field_value.partition(":")[::2]
    rows = []
    with gzip.open(SHARED / f"ipinyou_deepctr.{split}.libsvm.gz", "rt") as handle:
        for line in handle:
            label, *tokens = line.split()
            row = {"label": float(label)}
            row.update(names[int(t.split(":")[0])] for t in tokens)
            rows.append(row)
    return pd.DataFrame(rows)


def standard_error(area: float, positives: int, negatives: int) -> float:
    """Hanley and McNeil's (1982) standard error of an AUC."""
    q1, q2 = area / (2 - area), 2 * area * area / (1 + area)
    var = (area * (1 - area) + (positives - 1) * (q1 - area * area) + (negatives - 1) * (q2 - area * area)) \
        / (positives * negatives)
    return math.sqrt(max(var, 0.0))


def compare(spark, name: str, train_pd: pd.DataFrame, test_pd: pd.DataFrame, categorical: list[str],
            integers: list[str]) -> dict:
    from pyspark.ml.classification import LogisticRegression as MLlibLogisticRegression
    from pyspark.ml.evaluation import BinaryClassificationEvaluator
    from pyspark.ml.feature import FeatureHasher

    from spark_ps.ml.classification import LogisticRegression
    from spark_ps.ml.feature import FieldHasher

    train, test = spark.createDataFrame(train_pd).cache(), spark.createDataFrame(test_pd).cache()
    train.count(), test.count()
    evaluator = BinaryClassificationEvaluator()
    hasher = FieldHasher(hashCols=categorical, bucketCols=integers)
    started = time.perf_counter()
    model = LogisticRegression().fit(hasher.transform(train))
    ours_s = time.perf_counter() - started
    ours = evaluator.evaluate(model.transform(hasher.transform(test)))
    reference = FeatureHasher(inputCols=integers + categorical, outputCol="features")
    hashed_train, hashed_test = reference.transform(train).cache(), reference.transform(test).cache()
    hashed_train.count()
    best, best_cell, mllib_s = 0.0, None, 0.0
    for reg, std in GRID:
        started = time.perf_counter()
        fitted = MLlibLogisticRegression(regParam=reg, standardization=std).fit(hashed_train)
        seconds = time.perf_counter() - started
        area = evaluator.evaluate(fitted.transform(hashed_test))
        print(f"  {name}: MLlib regParam={reg:g} standardization={std}: AUC {area:.4f} ({seconds:.1f} s)", flush=True)
        if area > best:
            best, best_cell, mllib_s = area, (reg, std), seconds
    positives = int(test_pd["label"].sum())
    return {"data": name, "ours": ours, "mllib": best, "cell": best_cell, "ours_s": ours_s, "mllib_s": mllib_s,
            "se": standard_error(best, positives, len(test_pd) - positives)}


def main() -> int:
    sys.path.insert(0, str(ROOT / "integration"))
    import rawctr
    from pyspark.sql import SparkSession

    from spark_ps.spark.session import configure_spark_with_ps

    builder = SparkSession.builder.master("local[2]").appName("bench raw parity") \
        .config("spark.driver.host", "127.0.0.1").config("spark.ui.enabled", "false")
    spark = configure_spark_with_ps(builder).getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    results = []
    train, test = ipinyou_raw("train"), ipinyou_raw("test")
    fields = [c for c in train.columns if c != "label"]
    results.append(compare(spark, "iPinYou", train, test, fields, []))
    results.append(compare(spark, "rawctr", rawctr.events(40_000, seed=1), rawctr.events(20_000, seed=2),
                           rawctr.categorical_fields(), rawctr.integer_fields()))
    spark.stop()
    print("\n| data | ours (FieldHasher + LR, defaults) | MLlib best (FeatureHasher + LR) | ours - MLlib | "
          "MLlib's AUC std. error | fit s: ours / MLlib's best cell |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        reg, std = r["cell"]
        print(f"| {r['data']} | {r['ours']:.4f} | {r['mllib']:.4f} (regParam {reg:g}, standardization {std}) | "
              f"{r['ours'] - r['mllib']:+.4f} | {r['se']:.4f} | {r['ours_s']:.1f} / {r['mllib_s']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
