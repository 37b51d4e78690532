"""The batch jobs from the shipped ``conf/criteo.toml``: train -> predict -> evaluate, versions, failures.

The data are :mod:`rawctr`'s raw TSV files (day 1 to train, day 2 to score),
so the jobs hash raw columns into 64-bit keys. The three jobs run through
spark-submit on ``local-cluster[2,1,1024]`` with ``conf/spark-defaults.conf``,
as a scheduler would run them; the version, failure and bad-input cases run
the same ``main`` in-process on the shared cluster session (a spark-submit
costs 20-30 s of JVM and executor start-up here, the checks themselves
seconds).

Independent checks: predict's scores are compared with the saved model's
own ``transform`` of the same rows (same hashing, same version), and their
AUC is computed here with numpy from the labels, not by the job.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rawctr
from clusterkit import CLUSTER_MASTER

from spark_ps.jobs.run import main
from spark_ps.ml import history
from spark_ps.ml.classification import LogisticRegressionModel

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf" / "criteo.toml")
TRAIN_ROWS, SCORE_ROWS = 20_000, 5_000
SUBMIT_TIMEOUT = 300

pytestmark = pytest.mark.cluster


def spark_submit(job: str, *args: str) -> subprocess.CompletedProcess:
    """``jobs/<job>.py ARGS`` through spark-submit on local-cluster, as ``jobs/run_demo.sh`` runs jobs."""
    python = sys.executable
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": python, "PYSPARK_DRIVER_PYTHON": python}
    command = [str(Path(python).parent / "spark-submit"), "--master", CLUSTER_MASTER,
               "--properties-file", str(ROOT / "conf" / "spark-defaults.conf"),
               "--conf", f"spark.pyspark.python={python}", "--conf", f"spark.ps.python={python}",
               "--conf", f"spark.ps.pythonPath={ROOT}", "--conf", "spark.ui.showConsoleProgress=false",
               str(ROOT / "jobs" / f"{job}.py"), "--config", CONF, *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=SUBMIT_TIMEOUT)


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney AUC (ties count half)."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores[np.diff(np.sort(scores), prepend=np.nan) == 0]):
        ranks[scores == value] = ranks[scores == value].mean()
    positives = labels == 1
    n_pos, n_neg = positives.sum(), (~positives).sum()
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("jobs")
    return {"day1": rawctr.write_tsv(str(root / "day1.tsv"), TRAIN_ROWS, seed=1),
            "day2": rawctr.write_tsv(str(root / "day2.tsv"), SCORE_ROWS, seed=2),
            "model": str(root / "ctr_lr"), "scores": str(root / "scores"), "report": str(root / "report"),
            "root": root}


def test_train_predict_evaluate_through_spark_submit(files, cluster_spark):
    model_args = [f"--model.path={files['model']}"]
    trained = spark_submit("train", f"--input.path={files['day1']}", *model_args)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "train: modelPath=" in trained.stdout and "version=0" in trained.stdout
    scored = spark_submit("predict", f"--input.path={files['day2']}", f"--output.path={files['scores']}", *model_args)
    assert scored.returncode == 0, scored.stderr[-3000:]
    evaluated = spark_submit("evaluate", f"--input.path={files['day2']}", f"--output.path={files['report']}",
                             *model_args)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]

    scores = cluster_spark.read.format("delta").load(files["scores"]).toPandas()
    assert len(scores) == SCORE_ROWS and set(scores["modelVersion"]) == {0}
    held_out = auc(scores["label"].to_numpy(), scores["probability"].to_numpy())
    assert held_out > 0.75
    report = json.loads(Path(files["report"], "metrics.json").read_text())
    assert report["version"] == 0 and report["rows"] == SCORE_ROWS
    assert report["auc"] == pytest.approx(held_out, abs=2e-3)
    assert Path(files["report"], "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The job hashed the raw columns as the model was trained: the model's own transform agrees.
    model = LogisticRegressionModel.load(files["model"])
    hasher_args = ["--input.path", files["day2"]]
    assert main("predict", ["--config", CONF, *hasher_args, f"--model.path={files['model']}",
                            f"--output.path={files['root'] / 'scores_again'}"], spark=cluster_spark) == 0
    again = cluster_spark.read.format("delta").load(str(files["root"] / "scores_again")).toPandas()
    np.testing.assert_allclose(np.sort(again["probability"]), np.sort(scores["probability"]), rtol=1e-6)
    assert model.numFeatures == -1


def test_versions_are_listed_and_loaded_and_a_failed_job_keeps_the_latest(files, cluster_spark, capsys):
    path = files["model"]
    if not Path(path).exists():
        assert main("train", ["--config", CONF, f"--input.path={files['day1']}", f"--model.path={path}"],
                    spark=cluster_spark) == 0
    before = history(path).count()
    assert main("train", ["--config", CONF, f"--input.path={files['day1']}", f"--model.path={path}",
                          "--model.params.regParam=1e-3"], spark=cluster_spark) == 0
    versions = history(path).orderBy("version").collect()
    assert len(versions) == before + 1
    newest = versions[-1]
    assert json.loads(newest.params)["regParam"] == 1e-3 and newest.rows == TRAIN_ROWS
    assert newest.inputPath == files["day1"]
    assert json.loads(versions[0].params)["regParam"] == 1e-5
    first, last = LogisticRegressionModel.load(path, version=versions[0].version), LogisticRegressionModel.load(path)
    assert first.getRegParam() == 1e-5 and last.getRegParam() == 1e-3

    # A job that fails mid-way: a label of 2 in row 7 of the input, seen by the training tasks.
    bad = rawctr.events(200, seed=5)
    bad.loc[7, "label"] = 2.0
    bad_path = str(files["root"] / "bad.tsv")
    bad.to_csv(bad_path, sep="\t", header=False, index=False, na_rep="")
    capsys.readouterr()
    code = main("train", ["--config", CONF, f"--input.path={bad_path}", f"--model.path={path}"], spark=cluster_spark)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "label column 'label' row 7: label 2.0 is not 0 or 1" in err[0]
    assert history(path).count() == before + 1
    assert LogisticRegressionModel.load(path).getRegParam() == 1e-3


@pytest.mark.parametrize(("override", "message"), [
    ("--input.path={missing}", "[input] path '{missing}' does not exist"),
    ("--features.hash=['c0', 'nope']", "[features] column 'nope' is not in the input's schema"),
    ("--input.label=c0", "[input] label = 'c0' is string, not numeric"),
    ("--model.estimator=GBTClassifier", "[model] estimator = 'GBTClassifier': expected one of"),
    ("--model.params.regParm=0.1", "LogisticRegression has no Param 'regParm'"),
    ("--input.format=avro", "[input] format = 'avro': expected one of"),
])
def test_each_bad_input_gets_one_line_and_nothing_is_written(files, cluster_spark, capsys, override, message):
    missing = str(files["root"] / "no_such_day.tsv")
    path = str(files["root"] / "never_written")
    capsys.readouterr()
    code = main("train", ["--config", CONF, f"--input.path={files['day1']}", f"--model.path={path}",
                          override.format(missing=missing)], spark=cluster_spark)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ")
    assert message.format(missing=missing) in err[0]
    assert not Path(path).exists()
