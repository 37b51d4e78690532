"""The three batch jobs through spark-submit on ``local-cluster[2,1,1024]``, from the shipped ``conf/criteo.toml``.

As a scheduler runs them: ``jobs/train.py``, then ``jobs/predict.py`` and
``jobs/evaluate.py`` on the next day's raw file, each a spark-submit with
``conf/spark-defaults.conf``. Three applications of 10-20 s of start-up each
(about a minute in all, on a quiet host); ``tests/jobs/test_jobs.py`` checks
the same jobs in-process, with the failures and their one-line errors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import rawctr
from clusterkit import CLUSTER_MASTER
from sparkkit import TEST_CONF, TEST_DRIVER_JAVA_OPTIONS

ROOT = Path(__file__).resolve().parents[1]
SUBMIT_TIMEOUT = 300
#: Keys the shipped conf sets that the tests' settings must not override (the driver's options are merged above).
SHIPPED_KEYS = frozenset({"spark.driver.host", "spark.driver.extraJavaOptions"})
ROWS = 10_000


def _shipped(key: str) -> str:
    """The value of ``key`` in the shipped ``conf/spark-defaults.conf`` ("" if it sets none)."""
    for line in (ROOT / "conf" / "spark-defaults.conf").read_text().splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[0] == key:
            return parts[1].strip()
    return ""


def spark_submit(job: str, *args: str) -> subprocess.Popen:
    """``jobs/<job>.py --config conf/criteo.toml ARGS`` started through spark-submit, as ``jobs/run_demo.sh`` runs jobs.

    :func:`finished` waits for it.

    The JVMs get the tests' JIT settings (``sparkkit.TEST_DRIVER_JAVA_OPTIONS``) on top of the shipped ones:
    each of these applications lives for seconds on 10,000 rows, where C2's compiles are CPU never won back.
    """
    python = sys.executable
    driver_options = f"{_shipped('spark.driver.extraJavaOptions')} {TEST_DRIVER_JAVA_OPTIONS}".strip()
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": python, "PYSPARK_DRIVER_PYTHON": python}
    command = [str(Path(python).parent / "spark-submit"), "--master", CLUSTER_MASTER,
               "--properties-file", str(ROOT / "conf" / "spark-defaults.conf"),
               "--conf", f"spark.pyspark.python={python}", "--conf", f"spark.ps.python={python}",
               "--conf", f"spark.ps.pythonPath={ROOT}", "--conf", "spark.ui.showConsoleProgress=false",
               "--conf", f"spark.driver.extraJavaOptions={driver_options}",
               "--conf", f"spark.executor.extraJavaOptions={TEST_DRIVER_JAVA_OPTIONS}",
               *(arg for key, value in TEST_CONF.items() if key not in SHIPPED_KEYS
                 for arg in ("--conf", f"{key}={value}")),
               str(ROOT / "jobs" / f"{job}.py"), "--config", str(ROOT / "conf" / "criteo.toml"), *args]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(job: subprocess.Popen) -> subprocess.CompletedProcess:
    """Wait (at most ``SUBMIT_TIMEOUT``) for a :func:`spark_submit` to end; its exit code and output."""
    try:
        out, err = job.communicate(timeout=SUBMIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        job.kill()  # spark-submit's JVM; local-cluster's workers and our sidecars end with it
        out, err = job.communicate()
        script = next(arg for arg in job.args if arg.endswith(".py"))
        pytest.fail(f"{script} still running after {SUBMIT_TIMEOUT} s; stderr ends:\n{err[-3000:]}")
    return subprocess.CompletedProcess(job.args, job.returncode, out, err)


def test_train_predict_evaluate_through_spark_submit(tmp_path):
    day1 = rawctr.write_tsv(str(tmp_path / "day1.tsv"), ROWS, seed=1)
    day2 = rawctr.write_tsv(str(tmp_path / "day2.tsv"), ROWS // 4, seed=2)
    model = f"--model.path={tmp_path / 'ctr_lr'}"
    trained = finished(spark_submit("train", f"--input.path={day1}", model))
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "train: modelPath=" in trained.stdout and "version=0" in trained.stdout
    # Our progress lines, not Spark's log (conf/log4j2.properties): conversion, epochs, export, with rows/s.
    # They are the driver's Python stderr, which spark-submit merges into its stdout.
    progress = [line for line in trained.stdout.splitlines() if "rows/s" in line]
    assert any(" converted " in line for line in progress) and any(" epoch 1/" in line for line in progress)
    assert any(line.split(" ", 1)[1].startswith("saved ") for line in progress), trained.stdout[-3000:]
    assert " INFO " not in trained.stderr, trained.stderr[-3000:]
    # predict and evaluate read the same saved version and write apart: side by side, as a scheduler may run them.
    predict = spark_submit("predict", f"--input.path={day2}", f"--output.path={tmp_path / 'scores'}", model)
    evaluate = spark_submit("evaluate", f"--input.path={day2}", f"--output.path={tmp_path / 'report'}", model)
    scored, evaluated = finished(predict), finished(evaluate)
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert f"rowsWithThisVersion={ROWS // 4}" in scored.stdout
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert report["version"] == 0 and report["rows"] == ROWS // 4 and report["auc"] > 0.7
    assert (tmp_path / "report" / "report.png").stat().st_size > 1000
