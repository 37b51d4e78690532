"""Smoke job for ``make demo`` (placeholder until the real demo job lands).

Run through ``jobs/run_demo.sh`` (spark-submit with ``conf/spark-defaults.conf``):
waits for every executor's sidecar to register with the driver, prints the
shard registry, and round-trips a small Delta table.
"""

from __future__ import annotations

import argparse
import tempfile

from pyspark.sql import SparkSession

from spark_ps.spark.registry import wait_for_servers


def main(argv: list[str] | None = None) -> int:
    """Run the smoke checks against the session spark-submit configured; return the exit code.

    Examples
    --------
    ``bash jobs/run_demo.sh --timeout 60`` (what ``make demo`` runs).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the sidecars")
    args = parser.parse_args(argv)

    spark = SparkSession.builder.appName("spark-ps-smoke").getOrCreate()
    try:
        servers = wait_for_servers(spark, timeout=args.timeout)
        print(f"{len(servers)} spark-ps shard(s) registered:")
        for server in servers:
            print(f"  executor {server.executor_id}/{server.index}: {server.host}:{server.port} (pid {server.pid})")
        with tempfile.TemporaryDirectory(prefix="spark-ps-smoke-") as tmp:
            path = f"{tmp}/numbers"
            spark.range(100).write.format("delta").save(path)
            total = spark.read.format("delta").load(path).groupBy().sum("id").first()[0]
            print(f"Delta round trip: sum(0..99) = {total}")
            if total != 4950:
                print("unexpected sum from the Delta table")
                return 1
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
