#!/usr/bin/env bash
# `make demo`: spark-submit jobs/train.py on the embedded default (local Spark with
# our plugin) using conf/spark-defaults.conf. Extra arguments go to the job.
# SPARK_PS_DEMO_MASTER overrides the master (default local[2]; try
# local-cluster[2,1,1024] for two executor JVMs with a sidecar each).
# SPARK_PS_DEMO_JOB picks another job (jobs/ps_smoke.py: push/pull smoke test).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export SPARK_LOCAL_IP=127.0.0.1
root="$PWD"
python="$root/.venv/bin/python"
# Driver, PySpark workers and sidecars all run the venv's interpreter; absolute
# paths because executors start in their own work directories.
export PYSPARK_PYTHON="$python"
export PYSPARK_DRIVER_PYTHON="$python"

exec "$root/.venv/bin/spark-submit" \
    --master "${SPARK_PS_DEMO_MASTER:-local[2]}" \
    --properties-file conf/spark-defaults.conf \
    --conf "spark.pyspark.python=$python" \
    --conf "spark.ps.python=$python" \
    --conf "spark.ps.pythonPath=$root" \
    --conf spark.ui.showConsoleProgress=false \
    "${SPARK_PS_DEMO_JOB:-jobs/train.py}" "$@"
