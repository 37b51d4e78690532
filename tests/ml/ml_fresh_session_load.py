"""Load saved spark-ps models in a fresh Spark session that has Delta but no spark-ps plugin, and score.

Run by ``test_ml_api_persistence.py`` as a subprocess (a Python process runs
one SparkContext, and the test's own has the plugin). Usage::

    python ml_fresh_session_load.py SPEC.json

``SPEC.json`` holds ``{"models": [{"class": "module.Class", "path": saved model, "input": parquet path,
"output": parquet path}, ...]}``. Each model is loaded with ``Class.load(path)`` and transforms its input;
the ``id`` and the new output columns (vectors as arrays) are written to ``output``.
"""

from __future__ import annotations

import importlib
import json
import os
import sys


def _session():
    from pyspark.sql import SparkSession

    from spark_ps.spark.session import DELTA_CATALOG, DELTA_EXTENSION, delta_jar_paths

    jars = delta_jar_paths()
    if not jars:
        raise SystemExit("Delta jars missing from spark_ps/jars (run `make jars`)")
    return (SparkSession.builder.master("local[2]").appName("spark-ps-fresh-load")
            .config("spark.jars", ",".join(str(p) for p in jars))
            .config("spark.sql.extensions", DELTA_EXTENSION)
            .config("spark.sql.catalog.spark_catalog", DELTA_CATALOG)
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", "2")
            .config("spark.default.parallelism", "2")
            # As the tests' sessions: the Delta log in 2 tasks, not 50. And a JVM this short-lived starts
            # faster with the C1 JIT only (about 33 -> 28 s for this script on 2 busy cores).
            .config("spark.databricks.delta.snapshotPartitions", "2")
            .config("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1")
            .getOrCreate())


def main(spec_path: str) -> None:
    from pyspark.ml.functions import vector_to_array
    from pyspark.ml.linalg import VectorUDT

    from spark_ps.errors import PluginNotRunningError
    from spark_ps.spark.registry import read_registry

    spec = json.loads(open(spec_path).read())
    spark = _session()
    spark.sparkContext.setLogLevel("ERROR")
    try:
        assert "PSPlugin" not in spark.sparkContext.getConf().get("spark.plugins", ""), "plugin must be off"
        try:
            read_registry(spark)
        except PluginNotRunningError:
            pass
        else:
            raise AssertionError("the spark-ps plugin answered in a session started without it")
        for item in spec["models"]:
            data = spark.read.parquet(item["input"])
            module, _, name = item["class"].rpartition(".")
            model = getattr(importlib.import_module(module), name).load(item["path"])
            out = model.transform(data)
            new = [f for f in out.schema.fields if f.name not in data.columns]
            out.select("id", *[vector_to_array(f.name).alias(f.name) if isinstance(f.dataType, VectorUDT)
                               else f.name for f in new]).write.mode("overwrite").parquet(item["output"])
            print(f"scored {item['class']} from {item['path']}", flush=True)
    finally:
        spark.stop()


if __name__ == "__main__":
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    main(sys.argv[1])
