"""The measurements behind LogisticRegression's default batchSize, learning rate and passes.

For every data set we have (a9a, w8a, iPinYou from ``../shared/data``, and
synthetic CTR data at 400k rows from :mod:`bench.ctr_data`), fits our
``LogisticRegression`` over a grid of ``batchSize`` x ``alpha`` x ``numEpochs``
(``tol=0``: every pass runs) and, with the estimator's defaults, prints each
fit's held-out AUC, its training passes' progressive loss and its wall time,
one Markdown table per data set. MLlib's best held-out AUC over
``regParam`` {1e-3, 1e-4} x ``standardization`` is printed beside it as the bar.

Run from the repository root: ``python -m bench.defaults [--only a9a,w8a]``.
About ten minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

from bench import ROOT
from bench.profile_fit import OUT as PROFILE_OUT
from bench.profile_fit import prepare_data

sys.path.insert(0, str(ROOT / "tests"))        # the session helper of the fast tests
sys.path.insert(0, str(ROOT / "integration"))  # the real data sets' loaders

GRID = {"batchSize": (256, 1024, 4096), "alpha": (0.2, 0.5), "numEpochs": (1, 2, 3, 5)}
SYNTHETIC_GRID = {"batchSize": (1024, 4096), "alpha": (0.2, 0.5), "numEpochs": (1, 2, 3)}


def frames(spark, names):
    """``{name: (train, test, grid)}``, cached."""
    from real_data import DATASETS

    out = {}
    for name in names:
        if name in DATASETS:
            train, test = DATASETS[name](spark)
            grid = GRID
        else:  # synthetic, "ctr18" or "ctr22": 400k training rows at d=2^18 or 2^22
            paths = prepare_data(400_000, 100_000, int(name[3:]), 2)
            train, test = spark.read.parquet(paths["train"]), spark.read.parquet(paths["test"])
            grid = SYNTHETIC_GRID
        train, test = train.cache(), test.cache()
        train.count(), test.count()
        out[name] = train, test, grid
    return out


def main() -> None:
    """Command line: the grid on each data set, then the defaults, then MLlib's bar."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="a9a,w8a,ipinyou,ctr18,ctr22")
    parser.add_argument("--no-grid", action="store_true", help="defaults and MLlib only")
    parser.add_argument("--no-mllib", action="store_true", help="skip MLlib's bar")
    args = parser.parse_args()
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"

    from pyspark.ml.classification import LogisticRegression as MLlibLR
    from pyspark.ml.evaluation import BinaryClassificationEvaluator
    from sparkkit import start_ps_session

    from spark_ps.ml.classification import LogisticRegression
    from spark_ps.spark.context import PSContext

    spark = start_ps_session("local[2]", "bench-defaults", conf={
        "spark.driver.memory": "4g", "spark.sql.warehouse.dir": str(PROFILE_OUT / "warehouse"),
        "spark.ui.showConsoleProgress": "false"})
    spark.sparkContext.setLogLevel("ERROR")
    auc = BinaryClassificationEvaluator(numBins=0)
    try:
        PSContext.get(spark)
        for name, (train, test, grid) in frames(spark, args.only.split(",")).items():
            print(f"\n### {name}: {train.count():,} training rows, {test.count():,} test rows\n")
            print("| batchSize | alpha | numEpochs | held-out AUC | pass losses | passes | fit s |")
            print("|---|---|---|---|---|---|---|")
            runs = [] if args.no_grid else [dict(zip(grid, values, strict=True))
                                             for values in itertools.product(*grid.values())]
            for params in [*runs, None]:
                est = LogisticRegression() if params is None else LogisticRegression(tol=0.0, **params)
                start = time.perf_counter()
                model = est.fit(train)
                seconds = time.perf_counter() - start
                area = auc.evaluate(model.transform(test))
                losses = " ".join(f"{v:.4f}" for v in model.summary.objectiveHistory)
                label = "defaults | | " if params is None else " | ".join(str(v) for v in params.values())
                print(f"| {label} | {area:.4f} | {losses} | {model.summary.totalIterations} | {seconds:.1f} |",
                      flush=True)
            best = 0.0
            for reg, std in [] if args.no_mllib else itertools.product((1e-3, 1e-4), (True, False)):
                start = time.perf_counter()
                m = MLlibLR(regParam=reg, standardization=std, maxIter=100).fit(train)
                area = auc.evaluate(m.transform(test))
                best = max(best, area)
                print(f"MLlib regParam={reg} standardization={std}: AUC {area:.4f} "
                      f"in {time.perf_counter() - start:.1f} s", flush=True)
            if best:
                print(f"MLlib best: {best:.4f}")
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
