"""The streaming bench's records (``bench/out/bench_stream/results.json``) and the numbers derived from them.

One :class:`StreamRun` per stream a child ran: our ``StreamingTrainer`` at
one micro-batch size (``purpose`` ``"throughput"``: the batch-size sweep,
the latency run, the snapshot and the restart) or at one ``d``
(``"memory"``: the driver-memory sweep), or MLlib's
``StreamingLogisticRegressionWithSGD`` on the same files. Each keeps one
:class:`BatchStat` per micro-batch, so every figure of the report is
recomputed from the raw per-batch numbers (``--report-only``).

Definitions (the same for both systems, so their ratio is meaningful):

* **latency** of a batch: ours, the query's ``durationMs.triggerExecution``
  (from the trigger's start to Spark's commit log entry, after our Delta
  commit: everything the batch costs, progressive scoring included); MLlib,
  from the start of its first output operation (the scoring) to the end of
  its last (the SGD update), read by the bench's own ``foreachRDD`` hooks;
* **sustained rows/s**: rows of every batch after the first divided by the
  sum of their latencies (the first batch carries the cold start: Python
  workers, JIT, Delta's first write). Our triggers run back to back, so
  that sum is the wall time of those batches;
* **training-pass rows/s**: the same rows over the training pass alone
  (ours: ``trainSeconds`` of ``trainer.metrics()``; MLlib: its ``trainOn``
  output operation).

JSON round trip (``None`` fields are left out):

>>> run = StreamRun(system="spark-ps", purpose="throughput", d_log2=22, batch_rows=100,
...                 batches=[BatchStat(batch_id=0, rows=100, latency_s=2.0)])
>>> StreamRun.from_dict(run.to_dict()) == run
True
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np

from bench.records import ERROR, OK, ReferenceRun, known_fields, to_jsonable

THROUGHPUT, MEMORY = "throughput", "memory"


@dataclasses.dataclass(kw_only=True)
class BatchStat:
    """One micro-batch: its rows, latency, training and scoring seconds, progressive metrics, model version.

    ``start`` is the batch's start in seconds since the epoch (ours: the
    trigger's timestamp), ``auc`` and ``log_loss`` the batch scored by the
    model *before* it learnt from the batch. ``latency_s`` is the trigger's
    whole ``triggerExecution``; ``to_commit_s`` (ours) runs from the trigger's
    start to the batch's Delta commit, the moment its version exists: it
    leaves out what the trigger does after the commit (an in-stream snapshot,
    Spark's own commit log).
    """

    batch_id: int
    rows: int
    latency_s: float | None = None
    to_commit_s: float | None = None
    start: float | None = None
    train_s: float | None = None
    score_s: float | None = None
    auc: float | None = None
    log_loss: float | None = None
    model_version: int | None = None
    snapshot: bool = False


@dataclasses.dataclass(kw_only=True)
class StreamRun:
    """One stream of one system: per-batch numbers, and the run-level costs and memory.

    ``session_s`` is the child's session start-up (JVM, plugin, shards
    registered); ``stop_s`` the trainer's ``stop()`` (query stop, then a
    full snapshot of the newest version); ``restart_s`` the time from a new
    trainer on the same model path and checkpoint to its first committed
    batch (``restart_rows`` rows, rebuilding the shards from the store
    included); ``heap_after_gc_mb`` the driver JVM's used heap after a full
    GC at the end of the stream; the peaks are ``VmHWM`` of the child's whole
    life (all its streams).
    """

    system: str
    purpose: str
    d_log2: int
    batch_rows: int
    status: str = ERROR
    error: str | None = None
    note: str | None = None
    settings: str | None = None
    workers: int | None = None
    batches: list[BatchStat] = dataclasses.field(default_factory=list)
    session_s: float | None = None
    stop_s: float | None = None
    restart_s: float | None = None
    restart_rows: int | None = None
    restart_batch: BatchStat | None = None
    #: The same files through Structured Streaming with nothing but one barrier stage whose tasks receive each batch
    #: as the training tasks do (:func:`bench.stream_child.run_floor`): what a batch costs before it trains.
    floor_batches: list[BatchStat] = dataclasses.field(default_factory=list)
    heap_after_gc_mb: float | None = None
    driver_jvm_peak_mb: float | None = None
    driver_python_peak_mb: float | None = None
    log: str | None = None
    log_tail: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the stream ran to its end."""
        return self.status == OK

    @property
    def driver_mb(self) -> float | None:
        """Driver JVM + driver Python peak (MB), or ``None`` if either is unknown."""
        if self.driver_jvm_peak_mb is None or self.driver_python_peak_mb is None:
            return None
        return self.driver_jvm_peak_mb + self.driver_python_peak_mb

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``None`` fields left out)."""
        return to_jsonable(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StreamRun:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        restart = data.get("restart_batch")
        return known_fields(cls, data, batches=[known_fields(BatchStat, b) for b in data.get("batches", [])],
                            floor_batches=[known_fields(BatchStat, b) for b in data.get("floor_batches", [])],
                            restart_batch=known_fields(BatchStat, restart) if restart else None)


@dataclasses.dataclass(kw_only=True)
class StreamMeta:
    """How the bench ran: its options, the machine, when, and whether every stream was run."""

    d_log2: int
    rows: int
    batch_rows: list[int]
    latency_batch_rows: int
    snapshot_every: int
    mem_dims: list[int]
    mem_batches: int
    master: str
    driver_memory: str
    alpha: float
    beta: float
    batch_size: int
    mllib_dims: list[int]
    mllib_batches: int
    mllib_iterations: int
    mllib_step: float
    ref_rows: int
    seed: int
    smoke: bool = False
    cores: int | None = None
    date: str = "?"
    started: str = "?"
    commit: str | None = None
    wall_s: float = 0.0
    complete: bool = False


@dataclasses.dataclass
class StreamResults:
    """The whole run: ``results.json``."""

    meta: StreamMeta
    runs: list[StreamRun] = dataclasses.field(default_factory=list)
    reference: ReferenceRun | None = None
    notes: list[str] = dataclasses.field(default_factory=list)

    def find(self, system: str, purpose: str, batch_rows: int | None = None,
             d_log2: int | None = None) -> list[StreamRun]:
        """The runs of ``system`` for ``purpose`` (at ``batch_rows`` and ``d_log2`` if given), in run order."""
        return [r for r in self.runs if r.system == system and r.purpose == purpose
                and (batch_rows is None or r.batch_rows == batch_rows) and (d_log2 is None or r.d_log2 == d_log2)]

    def to_json(self) -> str:
        """``results.json``'s text."""
        data = {"meta": to_jsonable(self.meta), "runs": [r.to_dict() for r in self.runs],
                "reference": self.reference.to_dict() if self.reference else None, "notes": list(self.notes)}
        return json.dumps(data, indent=1, default=str)

    @classmethod
    def from_json(cls, text: str) -> StreamResults:
        """Inverse of :meth:`to_json`."""
        data = json.loads(text)
        ref = data.get("reference")
        return cls(known_fields(StreamMeta, data["meta"]), [StreamRun.from_dict(r) for r in data["runs"]],
                   ReferenceRun.from_dict(ref) if ref else None, list(data.get("notes", [])))


# --- derived numbers ------------------------------------------------------------------

def steady(run: StreamRun) -> list[BatchStat]:
    """The batches after the first (the first carries the cold start), with rows and a latency.

    Examples
    --------
    >>> run = StreamRun(system="s", purpose=THROUGHPUT, d_log2=18, batch_rows=2,
    ...                 batches=[BatchStat(batch_id=i, rows=2, latency_s=1.0) for i in range(3)])
    >>> [b.batch_id for b in steady(run)]
    [1, 2]
    """
    ordered = sorted(run.batches, key=lambda b: b.batch_id)
    return [b for b in ordered[1:] if b.rows and b.latency_s is not None]


def floor_run(run: StreamRun) -> StreamRun:
    """``run`` with its :attr:`~StreamRun.floor_batches` as its batches, for the figures below.

    Examples
    --------
    >>> run = StreamRun(system="s", purpose=THROUGHPUT, d_log2=18, batch_rows=1,
    ...                 floor_batches=[BatchStat(batch_id=0, rows=1, latency_s=0.5)])
    >>> [b.latency_s for b in floor_run(run).batches]
    [0.5]
    """
    return dataclasses.replace(run, batches=run.floor_batches)


def sustained_rows_per_s(run: StreamRun) -> float | None:
    """Rows of the batches after the first over the sum of their latencies; ``None`` without such batches.

    Examples
    --------
    >>> run = StreamRun(system="s", purpose=THROUGHPUT, d_log2=18, batch_rows=100,
    ...                 batches=[BatchStat(batch_id=i, rows=100, latency_s=s) for i, s in enumerate([9, 1, 3])])
    >>> sustained_rows_per_s(run)
    50.0
    """
    batches = steady(run)
    if not batches:
        return None
    return sum(b.rows for b in batches) / sum(b.latency_s for b in batches)


def train_rows_per_s(run: StreamRun) -> float | None:
    """Rows of the batches after the first over their training-pass seconds; ``None`` if unknown.

    Examples
    --------
    >>> run = StreamRun(system="s", purpose=THROUGHPUT, d_log2=18, batch_rows=10, batches=[
    ...     BatchStat(batch_id=0, rows=10, latency_s=5, train_s=4), BatchStat(batch_id=1, rows=10, latency_s=1,
    ...     train_s=0.5)])
    >>> train_rows_per_s(run)
    20.0
    """
    batches = [b for b in steady(run) if b.train_s]
    if not batches:
        return None
    return sum(b.rows for b in batches) / sum(b.train_s for b in batches)


def latency_quantile(run: StreamRun, q: float, to_commit: bool = False) -> float | None:
    """The ``q`` quantile (0..1, linear interpolation) of the latencies of the batches after the first.

    ``to_commit``: of the batches' ``to_commit_s`` instead of ``latency_s``
    (``None`` if a batch has none).

    Examples
    --------
    >>> run = StreamRun(system="s", purpose=THROUGHPUT, d_log2=18, batch_rows=1,
    ...                 batches=[BatchStat(batch_id=i, rows=1, latency_s=float(i)) for i in range(11)])
    >>> latency_quantile(run, 0.5), round(latency_quantile(run, 0.95), 4), latency_quantile(run, 0.5, True)
    (5.5, 9.55, None)
    """
    values = [b.to_commit_s if to_commit else b.latency_s for b in steady(run)]
    return float(np.quantile(values, q)) if values and None not in values else None


def mean_auc(run: StreamRun) -> float | None:
    """Mean progressive AUC over the batches after the first (the first is scored by an empty model).

    Examples
    --------
    >>> run = StreamRun(system="s", purpose=THROUGHPUT, d_log2=18, batch_rows=1, batches=[
    ...     BatchStat(batch_id=0, rows=1, latency_s=1, auc=0.5), BatchStat(batch_id=1, rows=1, latency_s=1, auc=0.7),
    ...     BatchStat(batch_id=2, rows=1, latency_s=1, auc=0.8)])
    >>> round(mean_auc(run), 4)
    0.75
    """
    values = [b.auc for b in steady(run) if b.auc is not None]
    return float(np.mean(values)) if values else None


def snapshot_overhead_s(run: StreamRun) -> float | None:
    """Median latency of steady batches that wrote a snapshot minus that of the others; ``None`` if either is empty.

    Examples
    --------
    >>> run = StreamRun(system="s", purpose=THROUGHPUT, d_log2=18, batch_rows=1, batches=[
    ...     BatchStat(batch_id=i, rows=1, latency_s=3.0 if i == 2 else 1.0, snapshot=i == 2) for i in range(4)])
    >>> snapshot_overhead_s(run)
    2.0
    """
    batches = steady(run)
    with_snap = [b.latency_s for b in batches if b.snapshot]
    without = [b.latency_s for b in batches if not b.snapshot]
    if not with_snap or not without:
        return None
    return float(np.median(with_snap) - np.median(without))


def breakdown(run: StreamRun) -> tuple[float, float, float] | None:
    """Median scoring, training-pass and remaining seconds of the batches after the first; ``None`` if unknown.

    Examples
    --------
    >>> run = StreamRun(system="s", purpose=THROUGHPUT, d_log2=18, batch_rows=1, batches=[
    ...     BatchStat(batch_id=i, rows=1, latency_s=4.0, score_s=1.0, train_s=2.0) for i in range(3)])
    >>> breakdown(run)
    (1.0, 2.0, 1.0)
    """
    batches = [b for b in steady(run) if b.score_s is not None and b.train_s is not None]
    if not batches:
        return None
    score, train = [b.score_s for b in batches], [b.train_s for b in batches]
    rest = [b.latency_s - b.score_s - b.train_s for b in batches]
    return float(np.median(score)), float(np.median(train)), float(np.median(rest))
