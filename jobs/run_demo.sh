#!/usr/bin/env bash
# `make demo`: spark-submit the demo job on a local-cluster with conf/spark-defaults.conf.
# Placeholder job for now (jobs/ps_smoke.py); extra arguments go to the job.
# SPARK_PS_DEMO_MASTER overrides the master (default local-cluster[2,1,1024]).
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
    --master "${SPARK_PS_DEMO_MASTER:-local-cluster[2,1,1024]}" \
    --properties-file conf/spark-defaults.conf \
    --conf "spark.pyspark.python=$python" \
    --conf "spark.ps.python=$python" \
    --conf "spark.ps.pythonPath=$root" \
    jobs/ps_smoke.py "$@"
