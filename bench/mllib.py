"""``make bench`` (head-to-head): spark-ps vs MLlib ``LogisticRegression`` on synthetic CTR data.

One invocation runs the whole matrix: every feature dimension ``d`` of
``--dims`` on every master of ``--masters`` (default ``local[2]`` and
``local-cluster[2,1,2048]``), MLlib on the first master only (its target AUC
is a property of the data, not of the master; ``--mllib-all-masters`` runs it
on each), spark-ps on every master, and the single-process numpy FTRL
reference once per ``d``. Everything lands in one ``results.json`` and one
report section.

For each ``d`` the harness (:mod:`bench.harness`) writes a train/test set
with :mod:`bench.ctr_files` (VectorUDT Parquet, the same files for both
systems and both masters) and runs every configuration in its **own**
Python + JVM (``python -m bench.mllib --child CONFIG``, :mod:`bench.child`),
so a driver ``OutOfMemoryError`` (MLlib keeps several dense
``d``-vectors on the driver) is recorded as ``OOM`` instead of taking the
harness down. The JVMs run with ``-XX:+ExitOnOutOfMemoryError`` so an OOM
ends the run at once instead of leaving a half-dead driver to time out, and
with ``spark.driver.maxResultSize=0`` so MLlib's large-``d`` failure is its
memory, not that safety limit. Each configuration has a timeout (``--timeout``);
a run that fails or times out keeps its error, the tail of its driver log and
(local-cluster) the tails of its executors' logs in the record and the report.

Order (what survives a ``--budget-min`` cut-off first): masters in the order
given, ``d`` ascending inside each; at each ``(master, d)`` MLlib, then
spark-ps. With the default masters that is: 2^18 and 2^22 on ``local[2]``
(both systems), 2^26 and 2^30 on ``local[2]`` (spark-ps, and MLlib's OOM
check), then everything again on ``local-cluster``. ``results.json`` and the
report are rewritten after every ``(master, d)``, and the report lists exactly
which cells ran and which did not.

MLlib: a grid over ``regParam`` x ``standardization`` at ``maxIter`` (40);
the best by held-out AUC. **The target AUC at ``d`` is MLlib's best held-out
AUC at that ``d``** (the maximum over every MLlib run there). Where MLlib
failed (OOM) it is MLlib's best at the largest ``d`` where it succeeded, and
the report says so. MLlib's time to target: the fit time of the cheapest of
its runs that reaches the target; a ``maxIter`` ladder (30, 20, 10, 5, tried
in that order on the best setting, stopping at the first rung below the
target) looks for one cheaper than the ``maxIter=40`` fit. spark-ps: a
``numEpochs`` ladder (1, 2, 4) with FTRL, in ascending order, stopping at the
first rung that reaches the target (``--ps-full-ladder`` runs every rung);
each rung is a complete fit, so the first to reach the target gives our time
to it. See :func:`bench.child.fit_spark_ps` for the one function that wires
our estimator in.

Per run, the child records: fit wall time (the training DataFrame is read,
repartitioned if needed and cached, and for spark-ps the shards registered,
*before* the clock starts, identically for both systems), held-out AUC
(``BinaryClassificationEvaluator`` with ``numBins=0``, exact) and log-loss (a
Spark SQL aggregate), both computed on the executors; peak RSS (``VmHWM``) of
the driver JVM, of the driver Python process and of executor-side processes;
CPU seconds of all the run's processes during the fit (less sensitive than
wall time to other load on a shared machine); the bytes of task results sent
to the driver during the fit (sum of the stages' ``resultSize`` from the Spark
UI REST API on 127.0.0.1, read after draining the listener bus); and for
spark-ps the per-epoch seconds our estimator logs (``spark_ps.ml``:
``epoch i/n: ... rows/s (S s)``, S being the mean task time of the epoch).
:mod:`bench.probes` takes these measurements.

Training throughput per core (spark-ps): ``rows / S / workers`` with ``S`` the
median logged epoch time of our longest run at that ``d`` (the epoch loop
only: no barrier-stage launch, repartition or weight save); the report also
gives ``rows x epochs / fit time / workers`` (everything the fit clock sees).
The numpy FTRL reference: ``rows / train time`` (one pass, key mapping
included, median of ``--ref-repeats``), one core.

Target checks (the issue's), each MET / MISSED / NOT RUN, per master:
speed-up to MLlib's best AUC >= 5x at 2^18 and >= 10x at 2^22; our AUC at
2^26 and 2^30 within 0.01 of ours at 2^22; driver RSS growth (driver JVM +
driver Python peak, our worst run at ``d`` minus our worst at 2^18) < 150 MB at
2^26 and 2^30; our training throughput per core >= 50% of the numpy FTRL's at
every ``d`` run (:mod:`bench.analysis`).

Writes a Markdown report (:mod:`bench.report`) to stdout and into ``docs/benchmarks.md`` between
``<!-- bench-mllib:begin -->`` and ``<!-- bench-mllib:end -->`` (other
sections untouched), a plot ``docs/bench_mllib.png``, and every run's raw
record (:mod:`bench.records`) to ``bench/out/bench_mllib/results.json``, with
a copy of the report and the plot beside it. With ``--no-doc`` only those
files in ``--out`` are written, so a trial run leaves ``docs/`` alone. Paths
in the report are relative to the repository (:func:`bench.logs.portable_paths`).

Examples
--------
The quick end-to-end check (d = 2**18, a few minutes on 2 cores)::

    python -m bench.mllib --dims 18 --rows 50000 --test-rows 20000 --masters 'local[2]'

A trial that leaves ``docs/`` untouched::

    python -m bench.mllib --dims 18 --rows 20000 --test-rows 5000 --masters 'local[2]' \
        --no-doc --out /tmp/bench-trial

The full comparison (``make bench``)::

    python -m bench.mllib --dims 18,22,26,30 --rows 400000 --test-rows 100000 \
        --masters 'local[2],local-cluster[2,1,2048]'
"""

from __future__ import annotations

import argparse
import pathlib
import re

from bench import DOC, OUT, ROOT
from bench.config import Options
from bench.records import FTRLSettings, Results

DEFAULT_MASTERS = "local[2],local-cluster[2,1,2048]"


def _floats(s: str) -> list[float]:
    """Comma-separated floats."""
    return [float(x) for x in s.split(",") if x.strip()]


def _ints(s: str) -> list[int]:
    """Comma-separated ints."""
    return [int(x) for x in s.split(",") if x.strip()]


def _masters(s: str) -> list[str]:
    """Split ``--masters`` on commas outside brackets.

    Examples
    --------
    >>> _masters("local[2],local-cluster[2,1,2048]")
    ['local[2]', 'local-cluster[2,1,2048]']
    """
    return [m.strip() for m in re.findall(r"[^,\[]+(?:\[[^\]]*\])?", s) if m.strip()]


def parse_args(argv: list[str] | None = None) -> tuple[Options, argparse.Namespace]:
    """Parse the command line.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name (default ``sys.argv[1:]``).

    Returns
    -------
    opts : Options
    args : argparse.Namespace
        The raw arguments, for ``--child``, ``--no-doc`` and ``--report-only``.
    """
    parser = argparse.ArgumentParser(prog="python -m bench.mllib", description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--dims", default="18,22,26,30", help="comma-separated log2(d), each in 10..40")
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--test-rows", type=int, default=100_000)
    parser.add_argument("--masters", default=None,
                        help=f"comma-separated masters, run in this order; the first is MLlib's "
                             f"(default '{DEFAULT_MASTERS}')")
    parser.add_argument("--master", default=None, help="one master (same as --masters with one entry)")
    parser.add_argument("--mllib-all-masters", action="store_true", help="run MLlib on every master, not just the first")
    parser.add_argument("--driver-memory", default="4g")
    parser.add_argument("--max-iter", type=int, default=40, help="MLlib maxIter of the grid")
    parser.add_argument("--ladder", default="30,20,10,5",
                        help="MLlib maxIter values tried (descending) on the best setting for time to target")
    # 0 and 1e-3 lost clearly to 1e-4 at 50k rows (docs/benchmarks.md history); with 8x the rows the best
    # L2 strength can only move down, so the grid brackets it with 1e-5 and 1e-4.
    parser.add_argument("--reg-params", default="1e-5,1e-4", help="MLlib regParam grid (x standardization F/T)")
    parser.add_argument("--ps-epochs", default="0",
                        help="spark-ps numEpochs ladder (0: the estimator's default, passes chosen from the rows)")
    parser.add_argument("--ps-full-ladder", action="store_true",
                        help="run every spark-ps rung, not only up to the first that reaches the target")
    # Issue 12: what a user who swaps the import gets: our estimator's default Params, no warm-up fit.
    parser.add_argument("--ps-alpha", type=float, default=0.0, help="FTRL alpha (0: the estimator's default)")
    parser.add_argument("--ps-beta", type=float, default=1.0)
    parser.add_argument("--ps-batch-size", type=int, default=0,
                        help="rows per mini-batch (0: the estimator's default, chosen from the rows)")
    parser.add_argument("--warmup-rows", type=int, default=0,
                        help="before the timed fit, fit each configuration once, untimed, on this many training "
                             "rows (0: no warm-up, the timed fit is the application's first)")
    parser.add_argument("--target-auc", default="mllib",
                        help="AUC to reach, or 'mllib' = MLlib's best held-out AUC at each d (the issue's definition)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per configuration")
    parser.add_argument("--budget-min", type=float, default=None,
                        help="stop launching configurations after this many minutes (those left are reported "
                             "as not run)")
    parser.add_argument("--ref-repeats", type=int, default=3, help="numpy FTRL timings (median)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(OUT / "bench_mllib"),
                        help="results.json, run logs, data, report.md and the plot (default bench/out/bench_mllib)")
    parser.add_argument("--skip-mllib", action="store_true")
    parser.add_argument("--skip-ps", action="store_true")
    parser.add_argument("--no-reference", action="store_true", help="skip the numpy FTRL reference")
    parser.add_argument("--no-doc", action="store_true",
                        help="leave docs/ untouched: write the report and plot only into --out")
    parser.add_argument("--report-only", action="store_true", help="rebuild the report from results.json")
    args = parser.parse_args(argv)
    dims = _ints(args.dims)
    if any(not 10 <= d <= 40 for d in dims):
        parser.error("--dims entries must be in 10..40")
    if args.master and args.masters:
        parser.error("give --masters or --master, not both")
    masters = [args.master] if args.master else _masters(args.masters or DEFAULT_MASTERS)
    target = None if args.target_auc in ("mllib", "auto") else float(args.target_auc)
    if target is None and args.skip_mllib:
        parser.error("--skip-mllib leaves no MLlib target: give --target-auc")
    opts = Options(dims=dims, rows=args.rows, test_rows=args.test_rows, masters=masters,
                   mllib_all_masters=args.mllib_all_masters, driver_memory=args.driver_memory,
                   max_iter=args.max_iter, ladder=_ints(args.ladder), reg_params=_floats(args.reg_params),
                   ps_epochs=_ints(args.ps_epochs),
                   ps_params=FTRLSettings(args.ps_alpha, args.ps_beta, args.ps_batch_size),
                   ps_full_ladder=args.ps_full_ladder, target_auc=target, timeout=args.timeout,
                   budget_s=None if args.budget_min is None else 60 * args.budget_min,
                   ref_repeats=args.ref_repeats, seed=args.seed, out=pathlib.Path(args.out).resolve(),
                   skip_mllib=args.skip_mllib, skip_ps=args.skip_ps, reference=not args.no_reference,
                   warmup_rows=args.warmup_rows)
    return opts, args


def main(argv: list[str] | None = None) -> None:
    """Run the bench (or, with ``--child``, one configuration; with ``--report-only``, only the report).

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name (default ``sys.argv[1:]``).
    """
    opts, args = parse_args(argv)
    if args.child:
        from bench.child import run_child

        run_child(args.child)
        return
    from bench.harness import Bench, save
    from bench.report import checks_text, markdown

    if args.report_only:
        results = Results.from_json((opts.out / "results.json").read_text())
        save(results, opts.out, write_doc=not args.no_doc)
    else:
        bench = Bench(opts, write_doc=not args.no_doc)
        try:
            bench.run()
        finally:
            bench.save()  # also after Ctrl-C: what ran so far, marked partial
        results = bench.results
    print("\n" + markdown(results))
    print("\nTarget checks:\n" + checks_text(results))
    written = [opts.out / "report.md", opts.out / "bench_mllib.png"]
    if not args.no_doc:
        written += [DOC, DOC.parent / "bench_mllib.png"]
    print("\nwrote " + ", ".join(_shown(p) for p in written))


def _shown(path: pathlib.Path) -> str:
    """``path`` relative to the repository if it is inside it."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


if __name__ == "__main__":
    main()
