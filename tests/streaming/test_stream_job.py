"""The streaming job (jobs/stream_train.py) run through its ``main`` on the shared session.

The expected rows per micro-batch are the test's own appends to the source
(one Delta version of one file each, read one file per trigger), not
anything the trainer reports; the model's commits must match them batch by
batch. Stopping and restarting the job: ``integration/test_stream_job_restart.py``
and ``make stream-demo``.
"""

from __future__ import annotations

import re

import pytest
from pyspark.ml.linalg import Vectors

from jobs import stream_train
from spark_ps.ml.modelstore import ModelStore

DIM = 16


@pytest.fixture(scope="module")
def spark(local_spark):
    local_spark.sparkContext.setLogLevel("ERROR")
    return local_spark


def _append(spark, path, n: int, offset: int) -> None:
    rows = [(float((i + offset) % 2), Vectors.sparse(DIM, [(i + offset) % 2, 2 + i % 7], [1.0, 1.0]))
            for i in range(n)]
    spark.createDataFrame(rows, ["label", "features"]).coalesce(1).write.format("delta").mode("append").save(path)


def _batches(spark, model) -> list[tuple[int, int]]:
    return [(c.batch_id, c.metadata["rows"]) for c in ModelStore(spark, model).commits()]


@pytest.mark.stream  # a whole job run
def test_until_idle_commits_one_batch_per_append(spark, tmp_path, capsys):
    source, model, ckpt = (str(tmp_path / name) for name in ("events", "model", "ckpt"))
    for i, n in enumerate([40, 25]):
        _append(spark, source, n, i)
    argv = ["--events", source, "--max-files-per-trigger", "1", "--model-path", model, "--checkpoint", ckpt,
            "--until-idle"]

    assert stream_train.main(argv, spark=spark) == 0

    assert _batches(spark, model) == [(0, 40), (1, 25)]
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if re.search(r"batch \d+: \d+ rows", line)]
    assert [line.split()[1:4] for line in lines] == [["batch", "0:", "40"], ["batch", "1:", "25"]], lines
    assert all(" auc " in line and "rows/s" in line and "model version" in line for line in lines), lines
    assert "model: 2 committed batches, 65 rows trained" in out


def test_settings_refuse_a_missing_or_doubled_source():
    with pytest.raises(ValueError, match="exactly one source"):
        stream_train.StreamJobSettings(model_path="m", checkpoint="c")
    with pytest.raises(ValueError, match="exactly one source"):
        stream_train.StreamJobSettings(model_path="m", checkpoint="c", events="e", kafka_bootstrap="k", topic="t")
    with pytest.raises(ValueError, match="--impressions and --clicks go together"):
        stream_train.StreamJobSettings(model_path="m", checkpoint="c", impressions="i")
    with pytest.raises(SystemExit):  # argparse: both ways to stop at once
        stream_train.parse_args(["--events", "e", "--model-path", "m", "--checkpoint", "c", "--until-idle",
                                 "--max-batches", "2"])

