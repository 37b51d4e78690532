"""The streaming job (jobs/stream_train.py) stopped by ``--max-batches`` and restarted on its checkpoint.

The first run stops after one commit, while the next batch may be running
(``--max-batches`` stops the query, interrupting it); the restart with
``--until-idle`` must commit exactly the remaining appends. The expected rows
per batch are the test's own appends (one Delta version of one file each,
read one file per trigger). A SIGKILLed job: ``make stream-demo``.
"""

from __future__ import annotations

import pytest
from pyspark.ml.linalg import Vectors

from jobs import stream_train
from spark_ps.ml.modelstore import ModelStore

DIM = 16


def _append(spark, path, n: int, offset: int) -> None:
    rows = [(float((i + offset) % 2), Vectors.sparse(DIM, [(i + offset) % 2, 2 + i % 7], [1.0, 1.0]))
            for i in range(n)]
    spark.createDataFrame(rows, ["label", "features"]).coalesce(1).write.format("delta").mode("append").save(path)


@pytest.mark.stream
def test_max_batches_stops_and_a_restart_commits_only_the_rest(cluster_spark, tmp_path, capsys):
    spark = cluster_spark
    source, model, ckpt = (str(tmp_path / name) for name in ("events", "model", "ckpt"))
    sizes = [40, 25, 33]
    for i, n in enumerate(sizes):
        _append(spark, source, n, i)
    argv = ["--events", source, "--max-files-per-trigger", "1", "--model-path", model, "--checkpoint", ckpt]

    assert stream_train.main([*argv, "--max-batches", "1"], spark=spark) == 0
    first = [c.batch_id for c in ModelStore(spark, model).commits()]
    assert first[:1] == [0] and len(first) <= 2, first  # batch 1 committed only if it beat the stop
    assert "this run: committed batches [0" in capsys.readouterr().out

    assert stream_train.main([*argv, "--until-idle"], spark=spark) == 0
    out = capsys.readouterr().out
    commits = [(c.batch_id, c.metadata["rows"]) for c in ModelStore(spark, model).commits()]
    assert commits == list(enumerate(sizes)), commits
    assert f"this run: committed batches {list(range(len(first), len(sizes)))}" in out, out
    assert f"model: 3 committed batches, {sum(sizes)} rows trained" in out
