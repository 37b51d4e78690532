"""A training task killed with SIGKILL mid-fit: the job fails, and the fit starts over under new names.

The fit runs on one worker under BSP, so that it is deterministic. While it
trains (its model table exists on the shards), the test SIGKILLs every
Python worker the executors have forked; the training task's worker dies
with them. Spark does not retry a barrier result stage, and the shards hold
part of the dead attempt's updates: the driver starts the fit over
(:func:`spark_ps.spark.tasks.task_died`), and its model must equal a clean fit's.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

import numpy as np
import psutil
import pytest
from pyspark.ml.linalg import Vectors

from spark_ps.ml.classification import LogisticRegression
from spark_ps.spark.context import PSContext

ROWS, DIM = 4000, 60


def _data(spark):
    rng = np.random.default_rng(11)
    truth = rng.normal(0, 1.5, DIM)
    rows = []
    for _ in range(ROWS):
        idx = np.sort(rng.choice(DIM, 6, replace=False))
        rows.append((float(rng.random() < 1 / (1 + np.exp(-truth[idx].sum()))),
                     Vectors.sparse(DIM, idx.tolist(), [1.0] * 6)))
    return spark.createDataFrame(rows, ["label", "features"]).repartition(1).cache()


def _python_workers(app_id: str) -> list[psutil.Process]:
    """The Python workers forked by the pyspark daemons of this application's executor JVMs."""
    workers = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if "CoarseGrainedExecutorBackend" in cmd and app_id in cmd:
            for daemon in proc.children():
                workers.extend(daemon.children())
    return workers


def _kill_while_training(spark, before: set[str], stop: threading.Event, killed: list[int]) -> None:
    """Once a new model table exists on the shards, SIGKILL every executor Python worker (once)."""
    app_id = spark.sparkContext.applicationId
    with PSContext.get(spark).client() as client:
        while not stop.is_set():
            if any(name.startswith("model_") and name not in before for name in client.list_tables()):
                for worker in _python_workers(app_id):
                    os.kill(worker.pid, signal.SIGKILL)
                    killed.append(worker.pid)
                return
            stop.wait(0.05)  # a poll of the shards, not synchronisation: the fit does not wait for it


@pytest.mark.slow  # three fits and a killed worker, ~15 s: make test-slow keeps make test under ten minutes
def test_a_killed_training_task_makes_the_fit_start_over_and_match_a_clean_fit(cluster_spark, caplog):
    df = _data(cluster_spark)
    est = LogisticRegression(numWorkers=1, syncMode="bsp", batchSize=16, numEpochs=4)
    clean = est.fit(df)
    clean._await_weights()  # its Delta export runs in the background: the kill must not hit it
    with PSContext.get(cluster_spark).client() as client:
        before = set(client.list_tables())  # the clean model's live table among them

    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_while_training, args=(cluster_spark, before, stop, killed))
    killer.start()
    try:
        with caplog.at_level(logging.WARNING, logger="spark_ps.ml"):
            refit = est.fit(df)
    finally:
        stop.set()
        killer.join()
    assert killed, "no Python worker was found to kill"
    assert any("fitting again from scratch" in r.getMessage() for r in caplog.records), \
        "the kill did not hit the training stage (the fit never started over)"
    np.testing.assert_allclose(refit.coefficients.toArray(), clean.coefficients.toArray(), rtol=0, atol=1e-6)
    assert abs(refit.intercept - clean.intercept) < 1e-6
    assert np.abs(clean.coefficients.toArray()).max() > 0.1
    refit._await_weights()
    df.unpersist()
