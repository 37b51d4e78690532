"""Benchmarks of spark-ps: an application of its own, run from the repository root.

``python -m bench.mllib`` (``make bench``) is the head-to-head with MLlib's
``LogisticRegression``; ``python -m bench.ps`` (``make bench-ps``) the
pull/push throughput of one shard; ``python -m bench.profile_fit`` times the
phases of one fit; ``python -m bench.stream`` (``make bench-stream``) the
streaming trainer's throughput, latency, snapshot and restart costs and driver
memory against MLlib's DStream ``StreamingLogisticRegressionWithSGD``
(:mod:`bench.stream`, :mod:`bench.stream_child`, :mod:`bench.stream_mllib`,
:mod:`bench.stream_records`, :mod:`bench.stream_report`). Each bench writes
its own section of ``docs/benchmarks.md``.

Modules of the MLlib bench, by the process that runs them:

* :mod:`bench.mllib`: the command line (parent and ``--child``);
* :mod:`bench.harness`: the parent: data, the grid and the ladders, one
  child process per configuration, timeouts, log collection;
* :mod:`bench.child`: one configuration in its own Python + JVM;
* :mod:`bench.probes`: what a child measures besides time (peak RSS, CPU
  seconds, our estimator's epoch lines, task result bytes);
* :mod:`bench.analysis`: speed-up, throughput, driver RSS, the target checks;
* :mod:`bench.report` and :mod:`bench.plot`: Markdown, the plot, the doc;
* :mod:`bench.records`: one dataclass per record, and their JSON form.

Data and references: :mod:`bench.ctr_data` (synthetic CTR rows),
:mod:`bench.ctr_files` (their Parquet / libsvm files), :mod:`bench.numpy_ftrl`
(the single-process FTRL yardstick), :mod:`bench.metrics` (AUC, log-loss).

The package is not installed (``pyproject.toml`` packages ``spark_ps*``
only); run it from the repository root, where ``python -m`` finds it.
"""

from __future__ import annotations

import pathlib

#: The repository root (``bench/`` is one of its top-level directories).
ROOT = pathlib.Path(__file__).resolve().parents[1]
#: Default directory of the benches' data, run logs and raw results (ignored by git).
OUT = ROOT / "bench" / "out"
#: The benchmark report; each bench owns one marked section of it.
DOC = ROOT / "docs" / "benchmarks.md"
