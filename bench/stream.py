"""``make bench-stream``: streaming training speed (issue 10), spark-ps vs MLlib's DStreams and numpy FTRL.

One invocation, one ``results.json`` (``bench/out/bench_stream/``) and one
section of ``docs/benchmarks.md``:

1. **Data.** Synthetic CTR events (:mod:`bench.ctr_data`, ~30 non-zeros a
   row) at d = 2^``--dim``, written beforehand (:func:`bench.ctr_files.ensure_dataset`,
   kept between runs) as VectorUDT Parquet files of one micro-batch each,
   for every size of ``--batch-rows`` (``--rows`` rows each: the same events,
   cut into different batches), plus one more batch for the restart.
2. **numpy FTRL** (:func:`bench.harness.reference_run`): the single-process
   reference on the first ``--ref-rows`` of the same events, rows/s on one core.
3. **Ours** (one child, :mod:`bench.stream_child`): each batch size streamed
   through ``StreamingTrainer`` on ``--master`` (``local[2]``): sustained
   rows/s, per-batch latency (``triggerExecution``), progressive AUC, the
   cost of ``stop()`` (with its snapshot), and at ``--latency-batch-rows``
   the restart to the first committed batch.
4. **MLlib** (one child per attempt, :mod:`bench.stream_mllib`):
   ``StreamingLogisticRegressionWithSGD`` on the first ``--mllib-batches``
   files of that stream; if it fails at the first d of ``--mllib-dims``
   (its model is dense, on the driver), the next smaller d, on the same rows.
5. **Driver memory** (one fresh child per d of ``--mem-dims``): a short
   stream (``--mem-batches`` batches of ``--latency-batch-rows``), peak RSS
   of the driver JVM + Python, and the JVM's heap used after a full GC.

Every child has its own Python + JVM and a timeout; a failure is recorded,
with the end of its log, and the bench goes on. ``results.json`` and the
report are rewritten after every step. Definitions of every figure:
:mod:`bench.stream_records`; the report: :mod:`bench.stream_report`.

Examples
--------
The tiny check (a couple of minutes, writes only ``bench/out/bench_stream_smoke``)::

    python -m bench.stream --smoke

The full benchmark (``make bench-stream``)::

    python -m bench.stream

Scaled down (still writes the doc section unless ``--no-doc``)::

    python -m bench.stream --rows 400000 --batch-rows 50000,100000 --mem-dims 18,30 --mllib-batches 4
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import time

from bench import DOC, OUT, ROOT, ctr_files
from bench.analysis import partitions_of
from bench.child import oom_line
from bench.logs import log_tail
from bench.mllib import _shown
from bench.records import ERROR, MLLIB, OOM, PS, TIMEOUT, FTRLSettings
from bench.stream_child import StreamChildConfig, StreamSpec
from bench.stream_records import MEMORY, THROUGHPUT, StreamMeta, StreamResults, StreamRun, steady

#: Defaults of the full run, and of ``--smoke`` (tiny, to check the bench works).
FULL = dict(dim=22, rows=2_000_000, batch_rows="50000,100000,200000", latency_batch_rows=100_000, snapshot_every=10,
            mem_dims="18,22,26,30", mem_batches=5, mllib_dims="22,20,18", mllib_batches=10, mllib_iterations=50,
            ref_rows=400_000, test_rows=100_000, ref_repeats=3, timeout=3600.0, mllib_timeout=1800.0,
            out=str(OUT / "bench_stream"))
SMOKE = dict(dim=18, rows=8_000, batch_rows="2000,4000", latency_batch_rows=2_000, snapshot_every=2,
             mem_dims="18,20", mem_batches=2, mllib_dims="18", mllib_batches=3, mllib_iterations=5,
             ref_rows=8_000, test_rows=2_000, ref_repeats=1, timeout=600.0, mllib_timeout=600.0,
             out=str(OUT / "bench_stream_smoke"))


@dataclasses.dataclass(frozen=True)
class StreamOptions:
    """The command line, parsed (``python -m bench.stream --help``)."""

    dim: int
    rows: int
    batch_rows: tuple[int, ...]
    latency_batch_rows: int
    snapshot_every: int
    mem_dims: tuple[int, ...]
    mem_batches: int
    mllib_dims: tuple[int, ...]
    mllib_batches: int
    mllib_iterations: int
    mllib_step: float
    mllib_interval_s: float
    ref_rows: int
    test_rows: int
    ref_repeats: int
    master: str
    driver_memory: str
    ps_params: FTRLSettings
    seed: int
    timeout: float
    mllib_timeout: float
    out: pathlib.Path
    smoke: bool
    write_doc: bool
    skip_mllib: bool
    skip_memory: bool
    reference: bool

    @property
    def all_batch_rows(self) -> tuple[int, ...]:
        """The streamed batch sizes: ``--batch-rows`` and the latency run's."""
        return tuple(sorted({*self.batch_rows, self.latency_batch_rows}))


@dataclasses.dataclass(frozen=True)
class RefSettings:
    """What :func:`bench.harness.reference_run` reads of its options: rows, seed, repeats, FTRL settings."""

    rows: int
    test_rows: int
    seed: int
    ref_repeats: int
    ps_params: FTRLSettings


def _ints(s: str) -> tuple[int, ...]:
    """Comma-separated ints.

    Examples
    --------
    >>> _ints("50000, 100000")
    (50000, 100000)
    """
    return tuple(int(x) for x in s.split(",") if x.strip())


def parse_args(argv: list[str] | None = None) -> tuple[StreamOptions, argparse.Namespace]:
    """Parse the command line; unset options take the full run's defaults, or ``--smoke``'s.

    Examples
    --------
    >>> opts, _ = parse_args(["--smoke", "--rows", "12000"])
    >>> opts.dim, opts.rows, opts.write_doc, opts.all_batch_rows
    (18, 12000, False, (2000, 4000))
    """
    p = argparse.ArgumentParser(prog="python -m bench.stream", description=__doc__.splitlines()[0])
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--smoke", action="store_true", help="tiny sizes (d = 2^18, a few thousand rows), no doc")
    p.add_argument("--dim", "--dims", type=int, dest="dim", help=f"log2 d of the main streams ({FULL['dim']})")
    p.add_argument("--rows", type=int, help=f"rows streamed per micro-batch size ({FULL['rows']:,})")
    p.add_argument("--batch-rows", help=f"comma-separated micro-batch sizes ({FULL['batch_rows']})")
    p.add_argument("--latency-batch-rows", type=int,
                   help=f"the batch size of the latency, snapshot, restart, memory and MLlib runs "
                        f"({FULL['latency_batch_rows']:,})")
    p.add_argument("--snapshot-every", type=int, help=f"StreamingTrainer snapshotEvery ({FULL['snapshot_every']})")
    p.add_argument("--mem-dims", help=f"log2 d of the driver-memory sweep ({FULL['mem_dims']})")
    p.add_argument("--mem-batches", type=int, help=f"batches per memory run ({FULL['mem_batches']})")
    p.add_argument("--mllib-dims", help=f"log2 d tried for MLlib, in order, until one works ({FULL['mllib_dims']})")
    p.add_argument("--mllib-batches", type=int, help=f"batches MLlib streams ({FULL['mllib_batches']})")
    p.add_argument("--mllib-iterations", type=int,
                   help=f"MLlib numIterations per batch ({FULL['mllib_iterations']}, its default)")
    p.add_argument("--mllib-step", type=float, default=5.0,
                   help="MLlib stepSize (5; see bench.stream_mllib for why not its default 0.1)")
    p.add_argument("--mllib-interval", type=float, default=1.0, help="DStream batch interval, seconds (1)")
    p.add_argument("--ref-rows", type=int, help=f"numpy FTRL training rows ({FULL['ref_rows']:,})")
    p.add_argument("--test-rows", type=int, help=f"numpy FTRL held-out rows ({FULL['test_rows']:,})")
    p.add_argument("--ref-repeats", type=int, help=f"numpy FTRL timings, median ({FULL['ref_repeats']})")
    p.add_argument("--master", default="local[2]")
    p.add_argument("--driver-memory", default="4g")
    p.add_argument("--alpha", type=float, default=0.2, help="FTRL alpha, ours and numpy's (as make bench)")
    p.add_argument("--beta", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=4096, help="our estimator's batchSize (rows per push)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, help=f"seconds per child of ours ({FULL['timeout']:.0f})")
    p.add_argument("--mllib-timeout", type=float, help=f"seconds per MLlib child ({FULL['mllib_timeout']:.0f})")
    p.add_argument("--out", help=f"results, logs, data (default {pathlib.Path(FULL['out']).relative_to(ROOT)})")
    p.add_argument("--no-doc", action="store_true", help="leave docs/ alone (implied by --smoke)")
    p.add_argument("--skip-mllib", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--no-reference", action="store_true", help="skip the numpy FTRL reference")
    p.add_argument("--report-only", action="store_true", help="rebuild the report from results.json")
    args = p.parse_args(argv)
    preset = SMOKE if args.smoke else FULL
    v = {k: (getattr(args, k) if getattr(args, k) is not None else d) for k, d in preset.items()}
    opts = StreamOptions(
        dim=v["dim"], rows=v["rows"], batch_rows=_ints(str(v["batch_rows"])),
        latency_batch_rows=v["latency_batch_rows"], snapshot_every=v["snapshot_every"],
        mem_dims=_ints(str(v["mem_dims"])), mem_batches=v["mem_batches"], mllib_dims=_ints(str(v["mllib_dims"])),
        mllib_batches=v["mllib_batches"], mllib_iterations=v["mllib_iterations"], mllib_step=args.mllib_step,
        mllib_interval_s=args.mllib_interval, ref_rows=v["ref_rows"], test_rows=v["test_rows"],
        ref_repeats=v["ref_repeats"], master=args.master, driver_memory=args.driver_memory,
        ps_params=FTRLSettings(args.alpha, args.beta, args.batch_size), seed=args.seed, timeout=v["timeout"],
        mllib_timeout=v["mllib_timeout"], out=pathlib.Path(v["out"]), smoke=args.smoke,
        write_doc=not (args.no_doc or args.smoke), skip_mllib=args.skip_mllib, skip_memory=args.skip_memory,
        reference=not args.no_reference)
    if any(b < 1 or opts.rows // b < 2 for b in opts.all_batch_rows):
        p.error(f"--rows {opts.rows} must hold at least two batches of every size {opts.all_batch_rows}")
    if any(not 10 <= d <= 30 for d in (opts.dim, *opts.mem_dims, *opts.mllib_dims)):
        p.error("dims must be in 10..30 (VectorUDT indices are int32)")
    return opts, args


#: Row groups in each micro-batch file: the task slots of ``local[2]`` (see :func:`stream_files`).
ROW_GROUPS_PER_FILE = 2


def stream_files(opts: StreamOptions, log2d: int, batch_rows: int, batches: int,
                 restart: bool = False) -> StreamSpec:
    """The Parquet files of ``batches`` micro-batches of ``batch_rows`` rows at ``d = 2**log2d`` (written once).

    Rows ``0 .. batches * batch_rows`` of stream ``--seed`` (so every batch
    size and every d sees the same events), one file a batch; with
    ``restart``, one more batch (the next rows) in a file of its own.

    Each file has :data:`ROW_GROUPS_PER_FILE` row groups of equal size. Spark
    cuts a file into byte ranges, one per task slot, and a range reads the
    row groups whose middle falls in it, so each slot of ``local[2]`` reads
    half a batch, as from a source of two partitions (a Kafka topic, a Delta
    table written by two tasks). The first version wrote row groups of
    65,536 rows: a 100k-row batch came as 65,536 + 34,464 rows, and the
    larger task set the pace of the stage.
    """
    root = opts.out / "data" / f"d{log2d}_b{batch_rows}_n{batches}_s{opts.seed}"
    n = batch_rows * batches
    chunk = -(-batch_rows // ROW_GROUPS_PER_FILE)
    ctr_files.ensure_dataset(root / "stream", n, 2**log2d, opts.seed, n_files=batches, chunk_rows=chunk)
    files = sorted(str(f) for f in (root / "stream" / "vector").glob("part-*.parquet"))
    extra = None
    if restart:
        ctr_files.ensure_dataset(root / "restart", batch_rows, 2**log2d, opts.seed, start_row=n, n_files=1,
                                 chunk_rows=chunk)
        extra = str(root / "restart" / "vector" / "part-00000.parquet")
    return StreamSpec(batch_rows, files, extra)


class StreamBench:
    """Runs the steps in order, one child at a time, saving the results after each.

    Parameters
    ----------
    opts : StreamOptions
    """

    def __init__(self, opts: StreamOptions):
        self.opts = opts
        self.t0 = time.perf_counter()
        self.results = StreamResults(StreamMeta(
            d_log2=opts.dim, rows=opts.rows, batch_rows=list(opts.all_batch_rows),
            latency_batch_rows=opts.latency_batch_rows, snapshot_every=opts.snapshot_every,
            mem_dims=list(opts.mem_dims), mem_batches=opts.mem_batches, master=opts.master,
            driver_memory=opts.driver_memory, alpha=opts.ps_params.alpha, beta=opts.ps_params.beta,
            batch_size=opts.ps_params.batchSize, mllib_dims=list(opts.mllib_dims), mllib_batches=opts.mllib_batches,
            mllib_iterations=opts.mllib_iterations, mllib_step=opts.mllib_step, ref_rows=opts.ref_rows,
            seed=opts.seed, smoke=opts.smoke, cores=os.cpu_count(), date=time.strftime("%Y-%m-%d"),
            started=time.strftime("%H:%M"), commit=_commit()))

    def save(self) -> None:
        """Write ``results.json`` and ``report.md`` (and the doc's section, unless ``--no-doc``)."""
        self.results.meta.wall_s = time.perf_counter() - self.t0
        save(self.results, self.opts.out, self.opts.write_doc)

    def run(self) -> StreamResults:
        """numpy FTRL, our streams, MLlib, the memory sweep; the results."""
        try:
            return self._run()
        finally:
            self.save()  # also after Ctrl-C or a crash: what ran so far

    def _run(self) -> StreamResults:
        opts = self.opts
        print(f"data: d = 2^{opts.dim}, {opts.rows:,} rows per batch size {opts.all_batch_rows} ...", flush=True)
        specs = [stream_files(opts, opts.dim, b, opts.rows // b, restart=b == opts.latency_batch_rows)
                 for b in opts.all_batch_rows]
        if opts.reference:
            self.reference()
        self.launch(PS, THROUGHPUT, opts.dim, specs, opts.timeout)
        if not opts.skip_mllib:
            latency = next(s for s in specs if s.batch_rows == opts.latency_batch_rows)
            for log2d in opts.mllib_dims:
                spec = (StreamSpec(latency.batch_rows, latency.files[:opts.mllib_batches]) if log2d == opts.dim
                        else stream_files(opts, log2d, opts.latency_batch_rows, opts.mllib_batches))
                # A run that timed out with batches done still measured MLlib at this d.
                if any(r.ok or steady(r) for r in self.launch(MLLIB, THROUGHPUT, log2d, [spec], opts.mllib_timeout)):
                    break
        if not opts.skip_memory:
            for log2d in opts.mem_dims:
                spec = stream_files(opts, log2d, opts.latency_batch_rows, opts.mem_batches)
                self.launch(PS, MEMORY, log2d, [spec], opts.timeout)
        self.results.meta.complete = all(r.ok for r in self.results.runs)
        return self.results

    def reference(self) -> None:
        """The numpy FTRL reference on the first ``--ref-rows`` rows of the same events (in this process)."""
        from bench.harness import reference_run

        opts = self.opts
        rows = min(opts.ref_rows, opts.rows)
        ref = reference_run(RefSettings(rows, opts.test_rows, opts.seed, opts.ref_repeats, opts.ps_params), opts.dim)
        ref.train_rows = rows
        self.results.reference = ref
        print(f"numpy FTRL: {ref.rows_per_s:,.0f} rows/s on one core, held-out AUC {ref.auc:.4f}", flush=True)
        self.save()

    def launch(self, system: str, purpose: str, log2d: int, specs: list[StreamSpec], timeout: float) -> list[StreamRun]:
        """Run one child; record its runs (or, if it left none, a failed run per stream); save."""
        from bench.harness import run_child_process

        opts = self.opts
        name = f"{system.replace(' ', '')}_{purpose}_d{log2d}"
        run_dir = opts.out / "runs" / name
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        result, log_path = run_dir / "result.json", run_dir / "child.log"
        StreamChildConfig(name=name, system=system, master=opts.master, driver_memory=opts.driver_memory,
                          partitions=partitions_of(opts.master), warehouse=str(run_dir / "work"), result=str(result), purpose=purpose,
                          d_log2=log2d, streams=specs, alpha=opts.ps_params.alpha, beta=opts.ps_params.beta,
                          batch_size=opts.ps_params.batchSize, snapshot_every=opts.snapshot_every,
                          mllib_iterations=opts.mllib_iterations, mllib_step=opts.mllib_step,
                          mllib_interval_s=opts.mllib_interval_s, timeout=timeout).write(run_dir / "config.json")
        print(f"{system} {purpose} d=2^{log2d}: {[s.batch_rows for s in specs]} rows a batch ...", flush=True)
        rc = run_child_process(["bench.stream", "--child", str(run_dir / "config.json")], run_dir, log_path, timeout)
        text = log_path.read_text(errors="replace")
        runs = [StreamRun.from_dict(r) for r in json.loads(result.read_text())] if result.exists() else []
        for spec in specs[len(runs):]:
            status, error = ((TIMEOUT, f"killed after {timeout:.0f} s") if rc is None else
                             (ERROR, f"child exited {rc}" if rc else "not run: the child stopped at an earlier stream"))
            runs.append(StreamRun(system=system, purpose=purpose, d_log2=log2d, batch_rows=spec.batch_rows,
                                  status=status, error=error))
        oom = oom_line(text)
        for r in runs:
            r.log = str(log_path)
            if not r.ok:
                r.status, r.error = (OOM, oom[:300]) if oom else (r.status, r.error)
                r.log_tail = log_tail(text, 30)
            print(f"  {r.batch_rows:,} rows a batch: {r.status} {r.error or ''}", flush=True)
        self.results.runs += runs
        self.save()
        return runs


def _commit() -> str | None:
    """The repository's short HEAD commit, or ``None`` outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.TimeoutExpired):  # no git here: the report says "?"
        return None
    return out.stdout.strip() or None


def save(results: StreamResults, out: pathlib.Path, write_doc: bool) -> None:
    """Write ``results.json`` and ``report.md`` into ``out``; with ``write_doc`` also the doc's section."""
    from bench.report import write_section
    from bench.stream_report import BEGIN, END, markdown

    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "results.json.tmp"
    tmp.write_text(results.to_json())
    os.replace(tmp, out / "results.json")
    text = markdown(results)
    (out / "report.md").write_text(text + "\n")
    if write_doc:
        write_section(BEGIN, END, text)


def main(argv: list[str] | None = None) -> None:
    """Command line: ``--child`` runs one child's streams; else the bench, or with ``--report-only`` its report.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name (default ``sys.argv[1:]``).
    """
    opts, args = parse_args(argv)
    if args.child:
        from bench.stream_child import run_child

        return run_child(args.child)
    if args.report_only:
        results = StreamResults.from_json((opts.out / "results.json").read_text())
        save(results, opts.out, opts.write_doc)
    else:
        results = StreamBench(opts).run()
    show(results, opts)


def show(results: StreamResults, opts: StreamOptions) -> None:
    """Print the report, the target checks and the files written."""
    from bench.stream_report import checks_text, markdown

    print("\n" + markdown(results) + "\n\nTarget checks:\n" + checks_text(results))
    written = [opts.out / "results.json", opts.out / "report.md"] + ([DOC] if opts.write_doc else [])
    print("\nwrote " + ", ".join(_shown(p) for p in written))


if __name__ == "__main__":
    main()
