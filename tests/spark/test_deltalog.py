"""``deltalog.read_version``: the rows of every version equal Delta's own reader's, planned with no Spark job."""

from __future__ import annotations

import os
import shutil

import pytest

from spark_ps.spark import deltalog


def jobs_run(spark) -> int:
    """The number of Spark jobs the application has started so far."""
    return len(spark.sparkContext.statusTracker().getJobIdsForGroup(None))


def rows(frame) -> list[tuple]:
    return sorted(tuple(r) for r in frame.collect())


def delta_rows(spark, table: str, version: int) -> list[tuple]:
    return rows(spark.read.format("delta").option("versionAsOf", version).load(table))


@pytest.fixture(scope="module")
def history(local_spark, tmp_path_factory):
    """A plain table through a create, an append, an overwrite, a delete and an empty overwrite: versions 0-4."""
    spark, table = local_spark, str(tmp_path_factory.mktemp("history") / "t")
    spark.createDataFrame([(1, [0.5]), (2, [1.5])], "key long, value array<float>").write.format("delta").save(table)
    spark.createDataFrame([(3, [2.5])], "key long, value array<float>").write.format("delta").mode("append").save(table)
    (spark.createDataFrame([(7, [7.0]), (8, [8.0]), (9, [9.0])], "key long, value array<float>").repartition(2)
     .write.format("delta").mode("overwrite").save(table))
    spark.sql(f"DELETE FROM delta.`{table}` WHERE key = 8")
    spark.createDataFrame([], "key long, value array<float>").write.format("delta").mode("overwrite").save(table)
    return table


def test_every_version_reads_as_delta_reads_it_without_a_job_to_plan(local_spark, history):
    spark = local_spark
    assert deltalog.commit_versions(spark, history) == [0, 1, 2, 3, 4]
    for version in range(5):
        before = jobs_run(spark)
        frame = deltalog.read_version(spark, history, version)
        assert jobs_run(spark) == before, f"version {version}: planning the read ran a Spark job"
        assert rows(frame) == delta_rows(spark, history, version), version
    assert rows(deltalog.read_version(spark, history)) == [] == delta_rows(spark, history, 4)
    assert [f.name for f in deltalog.read_version(spark, history, 1).schema] == ["key", "value"]


def test_a_version_without_its_checksum_is_read_by_delta(local_spark, history, tmp_path):
    table = shutil.copytree(history, tmp_path / "copy")
    os.remove(table / "_delta_log" / f"{2:020d}.crc")
    assert rows(deltalog.read_version(local_spark, str(table), 2)) == [(7, [7.0]), (8, [8.0]), (9, [9.0])]


def test_a_table_with_deletion_vectors_is_read_by_delta(local_spark, tmp_path):
    spark, table = local_spark, str(tmp_path / "dv")
    (spark.range(10).selectExpr("id AS key").write.format("delta")
     .option("delta.enableDeletionVectors", "true").save(table))
    spark.sql(f"DELETE FROM delta.`{table}` WHERE key < 4")
    assert rows(deltalog.read_version(spark, table, 1)) == [(k,) for k in range(4, 10)] == delta_rows(spark, table, 1)


def test_a_path_that_is_not_a_delta_table_is_named(local_spark, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a Delta table"):
        deltalog.read_version(local_spark, str(tmp_path / "none"))
