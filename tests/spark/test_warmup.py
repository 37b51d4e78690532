"""The first PSContext of an application starts a Python worker in every task slot (issue 12, cold start)."""

from __future__ import annotations

import threading

from sparkkit import start_ps_session

from spark_ps.spark.context import PSContext
from spark_ps.spark.warmup import JOB_GROUP


def test_the_first_handle_of_an_application_runs_one_warm_up_task_per_slot():
    spark = start_ps_session("local[2]", "spark-ps-warm-up")
    try:
        PSContext.get(spark)
        PSContext.get(spark)  # the same application: no second warm-up
        for thread in [t for t in threading.enumerate() if t.name == "ps-warm-up"]:
            thread.join(timeout=120)
            assert not thread.is_alive(), "the warm-up job did not finish in 120 s"
        tracker = spark.sparkContext.statusTracker()
        jobs = tracker.getJobIdsForGroup(JOB_GROUP)
        assert len(jobs) == 1, f"expected one warm-up job, found {jobs}"
        info = tracker.getJobInfo(jobs[0])
        assert info.status == "SUCCEEDED"
        assert sum(tracker.getStageInfo(s).numTasks for s in info.stageIds) == 2  # local[2]: two slots
        assert spark.sparkContext.getLocalProperty("spark.jobGroup.id") is None  # the caller's jobs are not in it
    finally:
        spark.stop()



def test_python_workers_are_forked_from_a_daemon_that_loaded_numba(local_spark):
    """The daemon (spark/daemon.py) imported the heavy modules before it forked: llvmlite is in its memory map.

    pyspark's own daemon imports only pyspark: each new worker then loaded numba itself.
    """
    def parent_of_worker(batches):  # nested: pickled by value (workers cannot import this test module)
        import os

        import pyarrow as pa

        for _ in batches:
            pass
        parent = os.getppid()
        with open(f"/proc/{parent}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode()
        with open(f"/proc/{parent}/maps") as f:
            llvm_loaded = any("llvmlite" in line for line in f)
        yield pa.RecordBatch.from_pylist([{"cmdline": cmdline, "llvm_loaded": llvm_loaded}])

    rows = local_spark.range(2, numPartitions=2).mapInArrow(parent_of_worker,
                                                            "cmdline string, llvm_loaded boolean").collect()
    assert all("spark_ps.spark.daemon" in row.cmdline for row in rows), [row.cmdline for row in rows]
    assert all(row.llvm_loaded for row in rows)
