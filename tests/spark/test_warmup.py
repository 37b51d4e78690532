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

