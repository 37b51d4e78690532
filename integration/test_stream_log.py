"""A micro-batch's log rows, written by its training tasks across two executors and two shards.

Each task exports the changed rows of its share of the shards once every
task has pushed (``spark_ps.streaming.training``); the driver commits the
files (``spark_ps.ml.logfiles``). Checked here on ``local-cluster``, where
two training tasks each export one of two shards:

* every batch's log rows are exactly its distinct feature keys and the
  intercept, each once (a shard exported twice or not at all would double
  or lose keys);
* the last batch's rows hold the final state of its keys: the snapshot
  that ``stop()`` writes from the shards has the same rows (a task that
  exported before the other task's last push would have logged older
  values);
* the batches after the first are committed by our commit
  (``spark_ps.spark.deltacommit``), not by Delta's writer after a job of
  their own.
"""

from __future__ import annotations

import numpy as np
import pytest
from vectorfiles import SCHEMA, random_indices, write_vectors

from spark_ps.ml.classification import LogisticRegression
from spark_ps.ml.keycolumns import BIAS_KEY
from spark_ps.ml.logfiles import BATCH_COL
from spark_ps.ml.modelstore import ModelStore
from spark_ps.spark.deltalog import commit_info
from spark_ps.streaming import StreamingTrainer

FILES, ROWS, DIM, NNZ = 3, 300, 2000, 4


def _write_files(root) -> list[set[int]]:
    """Two Parquet files per micro-batch (two partitions: two training tasks); the distinct feature indices of each."""
    rng = np.random.default_rng(11)
    keys = []
    for part in range(FILES):
        indices = random_indices(rng, ROWS, DIM, NNZ)
        labels = (rng.random(ROWS) < 0.3).astype(float)
        (root / f"b{part}").mkdir(parents=True)
        for half in (slice(0, ROWS // 2), slice(ROWS // 2, ROWS)):
            write_vectors(root / f"b{part}" / f"part-{half.start}.parquet", labels[half], indices[half], DIM)
        keys.append({int(i) for i in np.unique(indices)})
    return keys


@pytest.mark.stream
def test_each_batch_logs_its_changed_rows_once_with_their_final_values(cluster_spark, tmp_path):
    keys = _write_files(tmp_path / "in")
    events = (cluster_spark.readStream.schema(SCHEMA).option("maxFilesPerTrigger", 2)
              .parquet(str(tmp_path / "in" / "b*")))
    model = str(tmp_path / "model")
    trainer = StreamingTrainer(LogisticRegression(batchSize=64), modelPath=model, snapshotEvery=100)
    trainer.start(events, checkpointLocation=str(tmp_path / "ckpt")).processAllAvailable()
    trainer.stop()

    store = ModelStore(cluster_spark, model)
    commits = store.commits()
    assert [c.batch_id for c in commits] == list(range(FILES))
    log = cluster_spark.read.format("delta").load(store.log_path).collect()
    for batch, expected in enumerate(keys):
        logged = [r.key for r in log if r[BATCH_COL] == batch]
        assert len(logged) == len(set(logged)), f"batch {batch}: a key logged twice"
        assert set(logged) == expected | {BIAS_KEY}, f"batch {batch}: logged keys differ from the batch's keys"
    engines = [commit_info(cluster_spark, store.log_path, c.version)["engineInfo"] for c in commits[1:]]
    assert all(e.startswith("spark-ps/") for e in engines), engines

    last = FILES - 1
    snapshot = cluster_spark.read.format("delta").load(store.snapshot_path)
    final = {r.key: (r.value, r.state_z, r.state_n) for r in snapshot.collect()}
    logged = [r for r in log if r[BATCH_COL] == last]
    assert logged and all((r.value, r.state_z, r.state_n) == final[r.key] for r in logged)

