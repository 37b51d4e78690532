"""pyspark's Python worker daemon, with a training task's heavy imports done once, before any fork.

Spark runs one Python daemon per executor and forks a worker from it for
every Python task that finds no idle worker (``spark.python.worker.reuse``
keeps a worker only while it is idle; a stage with more tasks than idle
workers, or a worker killed with its task, means new ones). Each new worker
imported numpy, pyarrow, numba and our client on its own and loaded numba's
compiled kernels from disk: about 1.5 s of CPU per worker, 17 workers in
``tests/ml/test_ml_api.py`` alone, on a host the tests keep CPU-bound.

:func:`spark_ps.spark.session.configure_spark_with_ps` names this module as
``spark.python.daemon.module`` (unless the session names another): it runs
:func:`~spark_ps.spark.warmup.preload` in the daemon, then pyspark's own
daemon loop, so every worker is forked with all of it loaded
(copy-on-write). Safe to fork: the imports start no Python thread, and
OpenBLAS, which starts its own threads at numpy's import, re-creates them in
the child (``pthread_atfork``), as it does under ``multiprocessing``'s fork.

A failed preload is logged to the executor's stderr and the daemon runs
anyway: workers then import on their own, as without this module.
"""

from __future__ import annotations

import sys

from pyspark import daemon


def main() -> None:
    """Preload, then serve as pyspark's daemon (never returns while the executor lives)."""
    try:
        from spark_ps.spark.warmup import preload

        preload()
    except ImportError as exc:  # an executor without our dependencies: its tasks will say what is missing
        print(f"spark-ps: preloading the Python workers failed, they import on their own: {exc}", file=sys.stderr)
    daemon.manager()


if __name__ == "__main__":
    main()
