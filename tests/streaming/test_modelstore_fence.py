"""The model store's fence: a batch commits once, and a raced second commit of it does not count.

Two real :class:`ModelStore` writers on one model path, real Delta commits.
The race the fence guards against (a zombie driver that passed its check
just before its successor committed the same batch) is reproduced by
letting the second writer append without the check, as it would have after
passing it: the readers must ignore its rows and its metrics, and the
writer must learn that its commit does not count.
"""

from __future__ import annotations

import time

import pytest

from spark_ps.ml.modelstore import ModelStore
from spark_ps.ml.weights import full_row_schema

SCHEMA = full_row_schema(("n",))


def _rows(spark, session, values: dict[int, float]):
    return session.createDataFrame([(k, [v], [1.0]) for k, v in values.items()], SCHEMA)


def test_a_batch_commits_once_and_a_raced_second_commit_does_not_count(local_spark, tmp_path):
    path = str(tmp_path / "model")
    start_ms = time.time() * 1000
    first, zombie = ModelStore(local_spark, path, writer=True), ModelStore(local_spark, path, writer=True)
    assert zombie.last_commit() is None  # the zombie read the log before anyone committed
    v0 = first.commit(_rows(local_spark, first.session, {1: 1.0, 2: 2.0}), 0, {"rows": 10})

    # The check: the zombie's cached view is stale, but it reads the newest commit files before appending.
    with pytest.raises(ValueError, match="batch 0 is not newer than the last committed batch 0"):
        zombie.commit(_rows(local_spark, zombie.session, {1: 99.0}), 0, {"rows": 10})

    # The race: the zombie had passed its check just before the first writer's commit, and appends.
    raced, after = zombie._append(_rows(local_spark, zombie.session, {1: 99.0, 3: 99.0}), 0, {"rows": 10},
                                  since=-1)
    assert raced.version > v0
    with pytest.raises(RuntimeError, match="another writer .* committed it first"):
        zombie._check_first(raced, after)  # what commit() runs after its append
    v1 = first.commit(_rows(local_spark, first.session, {2: 5.0}), 1, {"rows": 7})

    reader = ModelStore(local_spark, path)
    assert [(c.batch_id, c.version) for c in reader.commits()] == [(0, v0), (1, v1)]
    # When each batch committed: the writer's copy (from the commit files) and the reader's (Delta's history).
    assert [c.committed_ms for c in first.commits()] == [c.committed_ms for c in reader.commits()]
    assert start_ms - 1000 <= reader.commits()[0].committed_ms <= reader.commits()[1].committed_ms <= time.time() * 1000
    assert reader.newest_commit().version == v1
    state = {r.key: r.value[0] for r in reader.state().collect()}
    assert state == {1: 1.0, 2: 5.0}  # nothing of the zombie's rows; batch 1 newer than batch 0 for key 2
    assert {r.key: r.value[0] for r in reader.state(version=raced.version).collect()} == {1: 1.0, 2: 2.0}
