#!/usr/bin/env bash
# `make demo`: the batch jobs on the embedded default (local Spark with our plugin), using
# conf/spark-defaults.conf: jobs/train.py, jobs/predict.py and jobs/evaluate.py from conf/a9a.toml.
# Extra arguments go to every job (e.g. --model.params.regParam=1e-4).
# SPARK_PS_DEMO_MASTER overrides the master (default local[2]; try
# local-cluster[2,1,1024] for two executor JVMs with a sidecar each).
# SPARK_PS_DEMO_JOB runs one other job instead, with the extra arguments (jobs/ps_smoke.py: push/pull
# smoke test; jobs/compare_mllib.py: a9a against MLlib).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export SPARK_LOCAL_IP=127.0.0.1
# The sidecars' own log (on this console in local mode): warnings only, so the jobs' progress lines
# are what a person reads. SPARK_PS_LOG_LEVEL=INFO brings back their start and stop lines.
export SPARK_PS_LOG_LEVEL="${SPARK_PS_LOG_LEVEL:-WARNING}"
root="$PWD"
python="$root/.venv/bin/python"
# Driver, PySpark workers and sidecars all run the venv's interpreter; absolute
# paths because executors start in their own work directories.
export PYSPARK_PYTHON="$python"
export PYSPARK_DRIVER_PYTHON="$python"

submit() {
    "$root/.venv/bin/spark-submit" \
        --master "${SPARK_PS_DEMO_MASTER:-local[2]}" \
        --properties-file conf/spark-defaults.conf \
        --conf "spark.pyspark.python=$python" \
        --conf "spark.ps.python=$python" \
        --conf "spark.ps.pythonPath=$root" \
        --conf spark.ui.showConsoleProgress=false \
        "$@"
}

if [ -n "${SPARK_PS_DEMO_JOB:-}" ]; then
    submit "$SPARK_PS_DEMO_JOB" "$@"
    exit
fi
test="data/a9a.t.libsvm.gz"
submit jobs/train.py --config conf/a9a.toml "$@"
submit jobs/predict.py --config conf/a9a.toml --input.path="$test" --output.mode=overwrite "$@"
submit jobs/evaluate.py --config conf/a9a.toml --input.path="$test" --output.path=warehouse/a9a_lr_report "$@"
