"""``configure_spark_with_ps`` (builder only, no JVM) and a local session with Delta and the plugin."""

from __future__ import annotations

import importlib.metadata
import os
import sys
from pathlib import Path

import psutil
import pytest
from pyspark.sql import SparkSession
from sparkkit import SHARED

from spark_ps.errors import PluginNotRunningError
from spark_ps.spark import session
from spark_ps.spark.registry import ServerInfo, app_secret, expected_server_count, read_registry, wait_for_servers
from spark_ps.spark.session import configure_spark_with_ps, delta_jar_paths, plugin_jar_path


def options(builder) -> dict[str, str]:
    return dict(builder._options)


@pytest.fixture
def fake_jars(tmp_path, monkeypatch):
    """A jars dir with plugin and Delta jars, so builder tests do not depend on `make`."""
    for name in (session.PLUGIN_JAR_NAME, *session.DELTA_JAR_NAMES):
        (tmp_path / name).write_bytes(b"PK")
    monkeypatch.setattr(session, "JARS_DIR", tmp_path)
    return tmp_path


def test_configure_sets_plugin_jars_delta_and_ps_options(fake_jars, monkeypatch):
    monkeypatch.delenv("PYSPARK_PYTHON", raising=False)
    opts = options(configure_spark_with_ps(SparkSession.Builder(), servers_per_executor=2, startup_timeout=1.5,
                                           expected_servers=4, log_level="DEBUG", verbose=True))
    assert opts["spark.plugins"] == "io.sparkps.PSPlugin"
    assert opts["spark.jars"].split(",") == [str(fake_jars / n)
                                             for n in (session.PLUGIN_JAR_NAME, *session.DELTA_JAR_NAMES)]
    assert "spark.jars.packages" not in opts  # local Delta jars: no Maven download
    assert opts["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    assert opts["spark.sql.catalog.spark_catalog"] == "org.apache.spark.sql.delta.catalog.DeltaCatalog"
    assert opts["spark.driver.host"] == "127.0.0.1"
    assert opts["spark.ps.python"] == sys.executable
    # `python app.py` drivers take their workers' Python from the variable only (not the conf).
    assert os.environ["PYSPARK_PYTHON"] == sys.executable
    # The directory holding the spark_ps package, wherever the jars are.
    assert opts["spark.ps.pythonPath"] == str(Path(session.__file__).resolve().parents[2])
    assert opts["spark.ps.serversPerExecutor"] == "2"
    assert opts["spark.ps.startupTimeout"] == "1.5"
    assert opts["spark.ps.expectedServers"] == "4"
    assert opts["spark.ps.logLevel"] == "DEBUG"
    assert opts["spark.ps.verbose"] == "true"


def test_configure_appends_to_existing_settings_and_keeps_the_users(fake_jars, monkeypatch):
    monkeypatch.delenv("PYSPARK_PYTHON", raising=False)
    builder = (SparkSession.Builder()
               .config("spark.plugins", "com.example.Other")
               .config("spark.jars", "/opt/x.jar")
               .config("spark.sql.extensions", "com.example.Ext")
               .config("spark.driver.host", "10.1.2.3")
               .config("spark.pyspark.python", "/opt/py/bin/python"))
    opts = options(configure_spark_with_ps(builder, extra_packages=["org.example:lib:1.0"]))
    assert opts["spark.plugins"] == "com.example.Other,io.sparkps.PSPlugin"
    assert opts["spark.jars"].startswith("/opt/x.jar,") and opts["spark.jars"].count(",") == 3
    assert opts["spark.sql.extensions"] == "com.example.Ext,io.delta.sql.DeltaSparkSessionExtension"
    assert opts["spark.driver.host"] == "10.1.2.3"  # only defaulted, never overridden
    assert opts["spark.ps.python"] == "/opt/py/bin/python"  # the workers' Python
    assert os.environ["PYSPARK_PYTHON"] == "/opt/py/bin/python"  # which pyspark reads from the variable
    assert opts["spark.jars.packages"] == "org.example:lib:1.0"
    # Idempotent: configuring twice does not duplicate list entries.
    again = options(configure_spark_with_ps(builder))
    assert again["spark.plugins"] == opts["spark.plugins"] and again["spark.jars"] == opts["spark.jars"]


def test_configure_falls_back_to_maven_for_delta_and_requires_the_plugin_jar(fake_jars, monkeypatch):
    monkeypatch.setenv("PYSPARK_PYTHON", "/usr/bin/python3.11")
    for name in session.DELTA_JAR_NAMES:
        (fake_jars / name).unlink()
    assert delta_jar_paths() == []
    opts = options(configure_spark_with_ps(SparkSession.Builder()))
    import pyspark

    group, artifact, version = opts["spark.jars.packages"].split(":")
    assert (group, artifact) == ("io.delta", f"delta-spark_{'.'.join(pyspark.__version__.split('.')[:2])}_2.13")
    assert version == importlib.metadata.version("delta-spark")
    assert opts["spark.jars"] == str(fake_jars / session.PLUGIN_JAR_NAME)
    assert opts["spark.ps.python"] == "/usr/bin/python3.11"

    (fake_jars / session.PLUGIN_JAR_NAME).unlink()
    with pytest.raises(FileNotFoundError, match="make plugin"):
        plugin_jar_path()
    with pytest.raises(FileNotFoundError, match="make plugin"):
        configure_spark_with_ps(SparkSession.Builder())


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_configure_rejects_bad_server_counts(fake_jars, bad):
    with pytest.raises(ValueError, match="servers_per_executor"):
        configure_spark_with_ps(SparkSession.Builder(), servers_per_executor=bad)


class _FakeConf:
    def __init__(self, values):
        self.values = values

    def get(self, key, default=None):
        return self.values.get(key, default)


class _FakeSparkContext:
    def __init__(self, master, conf):
        self.master = master
        self._conf = _FakeConf(conf)

    def getConf(self):
        return self._conf


class _FakeSpark:
    def __init__(self, master, **conf):
        self.sparkContext = _FakeSparkContext(master, conf)


@pytest.mark.parametrize("master, conf, expected", [
    ("local", {}, 1),
    ("local[*]", {}, 1),
    ("local[4, 2]", {"spark.ps.serversPerExecutor": "3"}, 3),
    ("local-cluster[2,1,1024]", {}, 2),
    ("local-cluster[3, 1, 512]", {"spark.ps.serversPerExecutor": "2"}, 6),
    ("spark://127.0.0.1:7077", {"spark.executor.instances": "5"}, 5),
    ("yarn", {"spark.ps.expectedServers": "7", "spark.executor.instances": "5"}, 7),
    ("local[2]", {"spark.ps.serversPerExecutor": "0"}, 0),
])
def test_expected_server_count(master, conf, expected):
    assert expected_server_count(_FakeSpark(master, **conf)) == expected


def test_server_info_field_order():
    assert ServerInfo("3", "127.0.0.1", 5000, 42) == ServerInfo(executor_id="3", host="127.0.0.1", port=5000,
                                                                 pid=42, index=0)


# ---- a real local[2] session: executor plugins run in local mode too (executor "driver") ----

def test_delta_round_trip(local_spark, tmp_path):
    path = str(tmp_path / "events")
    df = local_spark.createDataFrame([(i, f"e{i}") for i in range(20)], "id long, name string")
    df.write.format("delta").save(path)
    local_spark.createDataFrame([(20, "e20")], "id long, name string").write.format("delta").mode("append").save(path)
    back = local_spark.read.format("delta").load(path)
    assert back.count() == 21
    assert sorted(r.id for r in back.collect()) == list(range(21))
    # Two commits: the table really is Delta (plain parquet has no _delta_log).
    assert sorted(p.name for p in (tmp_path / "events" / "_delta_log").glob("*.json")) == [
        "00000000000000000000.json", "00000000000000000001.json"]


def test_local_mode_starts_one_sidecar_in_the_driver_jvm(local_spark):
    servers = wait_for_servers(local_spark, timeout=60)
    assert expected_server_count(local_spark) == 1
    assert len(servers) == 1
    server = servers[0]
    assert server.executor_id == "driver" and server.host == "127.0.0.1" and server.port > 0
    sidecar = psutil.Process(server.pid)
    driver_jvm = psutil.Process(sidecar.ppid())
    # The driver JVM is this Python process's child (launched by PySpark's gateway).
    assert driver_jvm.ppid() == psutil.Process().pid
    assert "java" in driver_jvm.name()
    assert len(app_secret(local_spark)) == 32


def test_registry_errors_clearly_once_the_plugin_stopped(local_spark):
    sidecar = psutil.Process(read_registry(local_spark)[0].pid)
    # Stops the shared session (the next module's local_spark starts a new one); this test must stay last.
    SHARED.release()
    with pytest.raises(PluginNotRunningError, match="spark.plugins=io.sparkps.PSPlugin"):
        read_registry(local_spark)
    _, alive = psutil.wait_procs([sidecar], timeout=30)
    assert not alive, "the sidecar outlived spark.stop() in local mode"
