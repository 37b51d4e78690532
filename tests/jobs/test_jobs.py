"""The batch jobs' ``main`` from the shipped ``conf/criteo.toml``, in-process on the shared ``local[2]`` session.

train -> predict -> evaluate, versions listed and loaded, a failed job, and
one ``error:`` line per bad input. The same jobs through spark-submit on
``local-cluster[2,1,1024]`` are ``integration/test_jobs_submit.py``.

Independent checks: predict's scores are compared with the saved model's
own ``transform`` of the same hashed rows, and their AUC is computed here
with numpy from the labels, not by the job.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import rawctr

from spark_ps.jobs.run import main
from spark_ps.ml import history
from spark_ps.ml.classification import LogisticRegressionModel
from spark_ps.ml.feature import FieldHasher

ROOT = Path(__file__).resolve().parents[2]
CONF = str(ROOT / "conf" / "criteo.toml")
TRAIN_ROWS, SCORE_ROWS = 8_000, 3_000


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney AUC, ties counted half (average ranks)."""
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    for start, count in zip(first[counts > 1], counts[counts > 1]):
        ranks[order[start:start + count]] = start + (count + 1) / 2
    positives = labels == 1
    n_pos, n_neg = positives.sum(), (~positives).sum()
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def run(kind: str, *args: str, spark) -> int:
    return main(kind, ["--config", CONF, *args], spark=spark)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("jobs")
    return {"day1": rawctr.write_tsv(str(root / "day1.tsv"), TRAIN_ROWS, seed=1),
            "day2": rawctr.write_tsv(str(root / "day2.tsv"), SCORE_ROWS, seed=2),
            "model": str(root / "ctr_lr"), "scores": str(root / "scores"), "report": str(root / "report"),
            "root": root}


@pytest.fixture(scope="module")
def trained(files, local_spark):
    assert run("train", f"--input.path={files['day1']}", f"--model.path={files['model']}", spark=local_spark) == 0
    return files


def test_train_then_predict_and_evaluate_hash_as_the_model_was_trained(trained, local_spark):
    files, model_arg = trained, f"--model.path={trained['model']}"
    assert run("predict", f"--input.path={files['day2']}", f"--output.path={files['scores']}", model_arg,
               spark=local_spark) == 0
    assert run("evaluate", f"--input.path={files['day2']}", f"--output.path={files['report']}", model_arg,
               spark=local_spark) == 0
    scores = local_spark.read.format("delta").load(files["scores"]).toPandas()
    assert len(scores) == SCORE_ROWS and set(scores["modelVersion"]) == {0}
    held_out = auc(scores["label"].to_numpy(), scores["probability"].to_numpy())
    assert held_out > 0.7
    report = json.loads(Path(files["report"], "metrics.json").read_text())
    assert report["version"] == 0 and report["rows"] == SCORE_ROWS
    assert report["auc"] == pytest.approx(held_out, abs=2e-3)
    assert sum(b["rows"] for b in report["calibration"]) == SCORE_ROWS
    assert Path(files["report"], "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The hashing travelled with the model: the model's own transform of rows hashed from [features] agrees.
    model = LogisticRegressionModel.load(files["model"])
    hasher = FieldHasher(hashCols=[f"c{k}" for k in range(8)], bucketCols=["i0", "i1", "i2"], crosses=[["c0", "c1"]])
    raw = local_spark.createDataFrame(rawctr.events(SCORE_ROWS, seed=2))
    direct = model.transform(hasher.transform(raw)).select("probability").toPandas()["probability"]
    np.testing.assert_allclose(np.sort([p[1] for p in direct]), np.sort(scores["probability"]), rtol=1e-5)


def test_versions_are_listed_and_loaded_and_a_failed_job_keeps_the_latest(trained, local_spark, capsys):
    path = trained["model"]
    before = history(path).count()
    assert run("train", f"--input.path={trained['day1']}", f"--model.path={path}", "--model.params.regParam=1e-3",
               spark=local_spark) == 0
    versions = history(path).orderBy("version").collect()
    assert len(versions) == before + 1
    newest = versions[-1]
    assert json.loads(newest.params)["regParam"] == 1e-3 and newest.rows == TRAIN_ROWS
    assert newest.inputPath == trained["day1"]
    assert json.loads(versions[0].params)["regParam"] == 1e-5
    assert LogisticRegressionModel.load(path, version=versions[0].version).getRegParam() == 1e-5
    assert LogisticRegressionModel.load(path).getRegParam() == 1e-3

    # A job that fails mid-way: a label of 2 in the input, seen only by the training tasks.
    bad = rawctr.events(200, seed=5)
    bad.loc[7, "label"] = 2.0
    bad_path = str(trained["root"] / "bad.tsv")
    bad.to_csv(bad_path, sep="\t", header=False, index=False, na_rep="")
    capsys.readouterr()
    assert run("train", f"--input.path={bad_path}", f"--model.path={path}", spark=local_spark) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    # Rows are numbered within the training task's partition.
    assert re.search(r"error: ValueError: label column 'label' row \d+: label 2.0 is not 0 or 1", err[0]), err[0]
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
def test_each_bad_input_gets_one_line_and_nothing_is_written(files, local_spark, capsys, override, message):
    missing = str(files["root"] / "no_such_day.tsv")
    path = str(files["root"] / "never_written")
    capsys.readouterr()
    code = run("train", f"--input.path={files['day1']}", f"--model.path={path}", override.format(missing=missing),
               spark=local_spark)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert message.format(missing=missing) in err[0]
    assert not Path(path).exists()
