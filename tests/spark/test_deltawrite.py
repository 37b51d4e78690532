"""``deltawrite``: tables committed without Delta's writer are tables Delta itself reads, verifies and extends."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pytest

from spark_ps.ml import weights as weight_store
from spark_ps.spark import deltacommit, deltalog, deltawrite
from spark_ps.spark.context import PSContext

#: Delta re-derives a table's state from its log before and after a commit and fails on any checksum mismatch.
VERIFY = {"spark.databricks.delta.incremental.commit.verify": "true",
          "spark.databricks.delta.checksum.mismatch.fatal": "true"}


@pytest.fixture
def verifying(local_spark):
    """``local_spark`` with Delta's checksum verification on, for the test."""
    before = {key: local_spark.conf.get(key, None) for key in VERIFY}
    for key, value in VERIFY.items():
        local_spark.conf.set(key, value)
    yield local_spark
    for key, value in before.items():
        if value is None:
            local_spark.conf.unset(key)
        else:
            local_spark.conf.set(key, value)


def rows(frame) -> list[tuple]:
    return sorted(tuple(r) for r in frame.collect())


def checksum(table: str, version: int) -> dict:
    with open(os.path.join(table, "_delta_log", f"{version:020d}.crc")) as f:
        return json.load(f)


def test_a_written_frame_reads_as_delta_writes_it_and_delta_verifies_and_extends_it(verifying, tmp_path):
    spark = verifying
    frame = spark.createDataFrame([(k, [k / 4.0, -1.0]) for k in range(-3, 40)],
                                  "key long, value array<float>").repartition(3)
    ours, delta = str(tmp_path / "ours"), str(tmp_path / "delta")
    deltawrite.write_new(frame, ours, user_metadata="first")
    frame.write.format("delta").save(delta)

    def read(table, version=None):
        reader = spark.read.format("delta")
        return (reader if version is None else reader.option("versionAsOf", version)).load(table)

    assert rows(read(ours)) == rows(read(delta))
    assert read(ours).schema == read(delta).schema          # both record every field nullable
    assert deltalog.commit_info(spark, ours, 0)["userMetadata"] == "first"
    ours_crc, delta_crc = checksum(ours, 0), checksum(delta, 0)
    assert {k: ours_crc[k] for k in ("numFiles", "numMetadata", "numProtocol")} \
        == {k: delta_crc[k] for k in ("numFiles", "numMetadata", "numProtocol")}
    assert ours_crc["metadata"]["schemaString"] == delta_crc["metadata"]["schemaString"]

    # Delta appends to it with verification on: its replay of our log must equal our checksum.
    spark.createDataFrame([(100, [1.0, 1.0])], "key long, value array<float>").write.format("delta") \
        .mode("append").save(ours)
    detail = spark.sql(f"DESCRIBE DETAIL delta.`{ours}`").first()
    assert detail.numFiles == ours_crc["numFiles"] + 1 == checksum(ours, 1)["numFiles"]
    assert detail.sizeInBytes == checksum(ours, 1)["tableSizeBytes"]
    assert read(ours, 1).count() == 44
    assert rows(deltalog.read_version(spark, ours, 0)) == rows(read(delta))


def test_a_second_version_0_is_refused_and_leaves_the_first(local_spark, tmp_path):
    table = str(tmp_path / "t")
    first, second = (local_spark.range(*ends).selectExpr("id AS key") for ends in ((3,), (10, 20)))
    deltawrite.write_new(first, table)
    with pytest.raises(FileExistsError, match="has a version 0 already.*nothing of this write was committed"):
        deltawrite.write_new(second, table)
    assert rows(local_spark.read.format("delta").load(table)) == [(0,), (1,), (2,)]
    assert [n for n in os.listdir(os.path.join(table, "_delta_log")) if n.endswith(".tmp")] == []


def test_files_no_commit_names_are_not_part_of_the_table(local_spark, tmp_path):
    """A task attempt whose result never reached the driver leaves its file; the table does not list it."""
    table = str(tmp_path / "t")
    schema = pa.schema([("key", pa.int64())])
    deltawrite.write_part(table, [pa.record_batch([[99]], schema=schema)])        # a lost attempt's file
    kept = deltawrite.write_part(table, [pa.record_batch([[1, 2]], schema=schema)]).to_pylist()
    deltacommit.commit_new_table(table, local_spark.createDataFrame([], "key long").schema.jsonValue(), kept)
    assert len([n for n in os.listdir(table) if n.endswith(".parquet")]) == 2
    assert rows(local_spark.read.format("delta").load(table)) == [(1,), (2,)]
    assert rows(deltalog.read_version(local_spark, table)) == [(1,), (2,)]


def test_new_local_tables_are_written_directly_and_others_by_delta(local_spark, tmp_path):
    spark = local_spark
    new, existing, split = str(tmp_path / "new"), str(tmp_path / "existing"), str(tmp_path / "split")
    spark.range(1).selectExpr("id AS key", "array(9.0f) AS value").write.format("delta").save(existing)
    assert deltawrite.new_local_table(spark, new) == new
    assert deltawrite.new_local_table(spark, "file://" + new) == new
    assert deltawrite.new_local_table(spark, existing) is None
    with PSContext.get(spark) as ps, ps.client() as client:
        ps.create_table("dw", width=1, optimizer="delta")
        try:
            client.push("dw", [5, 6, 7], [1.0, 0.0, -2.0])
            assert weight_store.save_table(spark, client, "dw", new) == 2
            assert weight_store.save_table(spark, client, "dw", existing) == 2
            spark.conf.set("spark.sql.files.maxRecordsPerFile", "1")
            try:  # a file per row; the task's count is still counted once
                assert weight_store.save_table(spark, client, "dw", split) == 2
            finally:
                spark.conf.unset("spark.sql.files.maxRecordsPerFile")
        finally:
            ps.drop_table("dw")
    assert len([n for n in os.listdir(split) if n.endswith(".parquet")]) == 2
    assert deltalog.commit_info(spark, new, 0)["engineInfo"].startswith("spark-ps/")
    assert deltalog.commit_versions(spark, existing) == [0, 1]
    assert "spark-ps" not in deltalog.commit_info(spark, existing, 1)["engineInfo"]    # Delta's own commit
    for table in (new, existing, split):
        assert rows(spark.read.format("delta").load(table)) == [(5, [1.0]), (7, [-2.0])]


def test_appends_and_overwrites_committed_here_replay_as_delta_writes_them(verifying, tmp_path):
    """Every version equals Delta's own writer's twin, by Delta's reader and ours; Delta verifies and extends it."""
    spark = verifying
    ours, twin = str(tmp_path / "ours"), str(tmp_path / "twin")
    frames = [spark.createDataFrame([(k, [k / 2.0]) for k in range(n, n + 5)], "key long, value array<float>")
              .repartition(2) for n in (0, 10, 20)]
    steps = [(frames[0], "append"), (frames[1], "append"), (frames[2], "overwrite")]
    for number, (frame, mode) in enumerate(steps):
        deltawrite.save_frame(frame, ours, mode, user_metadata=f"step {number}")
        frame.write.format("delta").mode(mode).save(twin)

    assert [deltalog.commit_info(spark, ours, v)["engineInfo"].split("/")[0] for v in range(3)] == ["spark-ps"] * 3
    assert [deltalog.commit_info(spark, ours, v)["userMetadata"] for v in range(3)] == [f"step {n}" for n in range(3)]
    for version in range(3):
        expected = rows(spark.read.format("delta").option("versionAsOf", version).load(twin))
        assert rows(spark.read.format("delta").option("versionAsOf", version).load(ours)) == expected, version
        assert rows(deltalog.read_version(spark, ours, version)) == expected, version
        assert checksum(ours, version)["numFiles"] == len(checksum(ours, version)["allFiles"])
    # Delta appends with verification on: its replay of our log must equal our checksum of version 2.
    frames[1].write.format("delta").mode("append").save(ours)
    detail = spark.sql(f"DESCRIBE DETAIL delta.`{ours}`").first()
    assert detail.numFiles == checksum(ours, 3)["numFiles"] == checksum(ours, 2)["numFiles"] + 2
    assert detail.sizeInBytes == checksum(ours, 3)["tableSizeBytes"]


def test_racing_appends_all_land_once_each(local_spark, tmp_path):
    """Writers that take the same next version: the loser appends on top, so every batch is committed once."""
    table, key = str(tmp_path / "t"), "spark.databricks.delta.properties.defaults.checkpointInterval"
    local_spark.conf.set(key, "100")  # no version of the race is one that Delta's writer must take
    try:
        deltawrite.save_frame(local_spark.range(0), table, "append")
    finally:
        local_spark.conf.unset(key)
    schema = pa.schema([("id", pa.int64())])

    def append(writer: int) -> list[int]:
        return [deltacommit.commit_next(local_spark, table, deltawrite.write_part(
            table, [pa.record_batch([[writer * 100 + i]], schema=schema)]).to_pylist(), "append",
            local_spark.range(0).schema) for i in range(8)]

    with ThreadPoolExecutor(3) as pool:
        versions = [v for got in pool.map(append, range(3)) for v in got]
    assert sorted(versions) == list(range(1, 25))
    assert rows(local_spark.read.format("delta").load(table)) == sorted((w * 100 + i,) for w in range(3)
                                                                           for i in range(8))


def test_an_append_after_another_writer_changed_the_schema_commits_nothing(local_spark, tmp_path):
    table = str(tmp_path / "t")
    deltawrite.save_frame(local_spark.range(2), table, "append")
    parts = deltawrite.write_part(table, [pa.record_batch([[5]], names=["id"])]).to_pylist()
    local_spark.range(1).selectExpr("'x' AS name").write.format("delta").mode("overwrite") \
        .option("overwriteSchema", "true").save(table)        # while those files were written
    with pytest.raises(RuntimeError, match="nothing of this write was committed"):
        deltacommit.commit_next(local_spark, table, parts, "append", local_spark.range(0).schema)
    assert deltalog.commit_versions(local_spark, table) == [0, 1]
    assert rows(local_spark.read.format("delta").load(table)) == [("x",)]


def test_delta_commits_and_checkpoints_every_interval_th_version(local_spark, tmp_path):
    """Readers replay at most an interval of commit files: every checkpointInterval-th version is Delta's."""
    table, key = str(tmp_path / "t"), "spark.databricks.delta.properties.defaults.checkpointInterval"
    local_spark.conf.set(key, "2")
    try:
        for n in range(4):
            deltawrite.save_frame(local_spark.range(n, n + 1), table, "append")
    finally:
        local_spark.conf.unset(key)
    engines = [deltalog.commit_info(local_spark, table, v)["engineInfo"].split("/")[0] for v in range(4)]
    assert engines == ["spark-ps", "spark-ps", "Apache-Spark", "spark-ps"]
    assert checksum(table, 0)["metadata"]["configuration"] == {"delta.checkpointInterval": "2"}
    checkpoints = sorted(n for n in os.listdir(os.path.join(table, "_delta_log")) if n.endswith("checkpoint.parquet"))
    assert checkpoints == [f"{2:020d}.checkpoint.parquet"]
    assert rows(local_spark.read.format("delta").load(table)) == [(n,) for n in range(4)]
