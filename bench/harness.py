"""The MLlib bench's parent process: data, the grid and the ladders, one child per configuration.

Order (what survives a ``--budget-min`` cut-off first): masters in the order
given, ``d`` ascending inside each; at each ``(master, d)`` MLlib, then
spark-ps. With the default masters that is: 2^18 and 2^22 on ``local[2]``
(both systems), 2^26 and 2^30 on ``local[2]`` (spark-ps, and MLlib's OOM
check), then everything again on ``local-cluster``. ``results.json`` and the
report are rewritten after every ``(master, d)``, and the report lists exactly
which cells ran and which did not.

Each configuration runs in a child process (:mod:`bench.child`) in its own
process group with a timeout (``--timeout``); a timed-out child is killed
with its JVMs and sidecars. A run that fails or times out keeps its error,
the tail of its driver log and (local-cluster) the tails of its executors'
logs; the executors' logs are moved into the run's directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time

import numpy as np
import psutil

from bench import DOC, ROOT, ctr_data, ctr_files
from bench.analysis import is_complete, partitions_of, rollup_status
from bench.child import oom_line, spark_ps_unavailable
from bench.config import ChildConfig, DataPaths, Options
from bench.logs import collect_executor_logs, log_tail
from bench.plot import plot
from bench.records import (
    MLLIB,
    NOT_RUN,
    OK,
    OOM,
    PS,
    REF,
    SKIPPED,
    TIMEOUT,
    UNSUPPORTED,
    Cell,
    ChildResult,
    Meta,
    MLlibParams,
    PSParams,
    ReferenceRun,
    Results,
    RunRecord,
    params_items,
)
from bench.report import BEGIN, END, PLOT_NAME, format_run, markdown, write_section


def worker_memory_mb(master: str) -> int | None:
    """Worker memory of ``local-cluster[E,C,M]`` (used as ``spark.executor.memory``), else ``None``.

    Examples
    --------
    >>> worker_memory_mb("local-cluster[2,1,2048]"), worker_memory_mb("local[2]")
    (2048, None)
    """
    m = re.fullmatch(r"local-cluster\[(\d+),\s*(\d+),\s*(\d+)\]", master)
    return int(m.group(3)) if m else None


def master_tag(master: str) -> str:
    """A directory-safe name of a master.

    Examples
    --------
    >>> master_tag("local[2]"), master_tag("local-cluster[2,1,2048]")
    ('local2', 'lc2x1x2048')
    """
    m = re.fullmatch(r"local-cluster\[(\d+),\s*(\d+),\s*(\d+)\]", master)
    if m:
        return "lc" + "x".join(m.groups())
    return re.sub(r"[^A-Za-z0-9]+", "", master)


def prepare_data(opts: Options, log2d: int) -> DataPaths:
    """Train/test directories for ``d = 2**log2d``, written once and reused while the parameters match."""
    dim = 2**log2d
    data_format = "vector" if dim <= ctr_files.VECTOR_MAX_DIM else "keys"
    root = opts.out / "data" / f"d{log2d}_n{opts.rows}_t{opts.test_rows}_s{opts.seed}"
    spec = ctr_data.CTRSpec()
    n_files = max(2, *(partitions_of(m) for m in opts.masters))
    paths = {}
    for split, n, start in (("train", opts.rows, 0), ("test", opts.test_rows, opts.rows)):
        ctr_files.ensure_dataset(root / split, n, dim, opts.seed, start_row=start, formats=(data_format,),
                                 n_files=n_files, spec=spec)
        paths[split] = str(root / split / data_format)
    return DataPaths(data_format, paths["train"], paths["test"])


def ftrl_alpha(settings) -> float:
    """The FTRL alpha spark-ps trains with: ``--ps-alpha``, or (0) our LogisticRegression's default."""
    if settings.alpha:
        return settings.alpha
    from spark_ps.ml.classification import LogisticRegression
    return LogisticRegression()._learning_rate()


def reference_run(opts: Options, log2d: int) -> ReferenceRun:
    """Single-process numpy FTRL, one pass (median time of ``ref_repeats``): the accuracy and speed yardstick."""
    from bench.metrics import auc, log_loss
    from bench.numpy_ftrl import predict, train_ftrl

    dim = 2**log2d
    train = ctr_data.generate(opts.rows, dim, opts.seed)
    test = ctr_data.generate(opts.test_rows, dim, opts.seed, start_row=opts.rows)
    train_ftrl(np.array([0, 1]), np.array([0]), np.ones(1), np.ones(1))  # compile outside the clock
    times, load = [], os.getloadavg()[0]
    for _ in range(max(1, opts.ref_repeats)):
        t0 = time.perf_counter()
        model = train_ftrl(*train, alpha=ftrl_alpha(opts.ps_params), beta=opts.ps_params.beta)
        times.append(time.perf_counter() - t0)
    fit_s = statistics.median(times)
    p = predict(model, *test[:3])
    return ReferenceRun(d_log2=log2d, name=f"{REF} d=2^{log2d}", status=OK, fit_s=fit_s, fit_s_all=times,
                        rows_per_s=opts.rows / fit_s, load_avg_before=load, auc=auc(test[3], p),
                        log_loss=log_loss(test[3], p))


def kill_tree(proc: subprocess.Popen) -> None:
    """Kill a timed-out child: its process group, then any descendant that left it (by pid)."""
    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for p in descendants:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()
    psutil.wait_procs(descendants, timeout=30)


def run_child_process(module_args: list[str], run_dir: pathlib.Path, log_path: pathlib.Path,
                      timeout: float) -> int | None:
    """Run ``python -m MODULE ARGS`` in ``run_dir``, output to ``log_path``; its exit code, ``None`` on timeout.

    The child runs in its run directory (Derby and Spark leave files in the
    working directory), with this package on ``PYTHONPATH`` and Spark bound
    to loopback, in a process group of its own (pgid = child pid), so a
    timeout kills the child, its JVMs and sidecars together (:func:`kill_tree`).

    Parameters
    ----------
    module_args : list of str
        ``python -m``'s arguments: the module, then its own.
    run_dir, log_path : pathlib.Path
    timeout : float
        Seconds before the child's tree is killed.

    Examples
    --------
    >>> import tempfile
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> run_child_process(["json.tool", "--help"], tmp, tmp / "log", 60), (tmp / "log").read_text()[:6]
    (0, 'usage:')
    """
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable, PYTHONPATH=path)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", *module_args], stdout=log, stderr=subprocess.STDOUT,
                                cwd=run_dir, env=env, start_new_session=True)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_tree(proc)
            return None


class Bench:
    """Runs the matrix: launches each configuration in a child, enforces the budget, saves as it goes.

    Parameters
    ----------
    opts : Options
    write_doc : bool
        Also rewrite the bench-mllib section of ``docs/benchmarks.md`` and
        ``docs/bench_mllib.png`` on every save (``results.json``,
        ``report.md`` and the plot in ``opts.out`` are always written).
    """

    def __init__(self, opts: Options, write_doc: bool):
        self.opts = opts
        self.write_doc = write_doc
        self.t0 = time.perf_counter()
        spec = ctr_data.CTRSpec()
        self.ps_reason = "skipped (--skip-ps)" if opts.skip_ps else spark_ps_unavailable()
        meta = Meta(rows=opts.rows, test_rows=opts.test_rows, masters=opts.masters, primary=opts.primary,
                    mllib_all_masters=opts.mllib_all_masters, dims=opts.dims, driver_memory=opts.driver_memory,
                    cores=os.cpu_count(), date=time.strftime("%Y-%m-%d"), started=time.strftime("%H:%M"),
                    ladder=opts.ladder, n_fields=spec.n_fields, ctr=spec.ctr, max_iter=opts.max_iter,
                    reg_params=opts.reg_params, ps_epochs=opts.ps_epochs, ps_params=opts.ps_params,
                    ps_full_ladder=opts.ps_full_ladder, target_auc=opts.target_auc, timeout=opts.timeout,
                    budget_s=opts.budget_s, seed=opts.seed, skip_mllib=opts.skip_mllib, skip_ps=opts.skip_ps,
                    warmup_rows=opts.warmup_rows)
        self.results = Results(meta)
        if self.ps_reason:
            self.results.notes.append(f"spark-ps not run: {self.ps_reason}")
            print(f"spark-ps half skipped: {self.ps_reason}", flush=True)

    # --- budget and persistence ------------------------------------------------
    def elapsed(self) -> float:
        """Seconds since the bench started."""
        return time.perf_counter() - self.t0

    def over_budget(self) -> bool:
        """Whether ``--budget-min`` is used up (no more configurations are launched)."""
        return self.opts.budget_s is not None and self.elapsed() > self.opts.budget_s

    def save(self) -> None:
        """Write ``results.json``, ``report.md`` and the plot to ``opts.out`` (and the doc, if asked)."""
        self.results.meta.wall_s = self.elapsed()
        save(self.results, self.opts.out, self.write_doc)

    # --- the matrix -------------------------------------------------------------
    def run(self) -> Results:
        """Every ``(master, d)`` in order: data and the reference once per ``d``, MLlib, then spark-ps."""
        opts = self.opts
        data: dict[int, DataPaths] = {}
        for master in opts.masters:
            for log2d in opts.dims:
                per_d = self.results.dim(log2d)
                if log2d not in data:
                    if self.over_budget():
                        per_d.masters.setdefault(master, {})
                        self._not_run(master, log2d, "time budget (--budget-min) used up before its data")
                        continue
                    print(f"d = 2^{log2d}: data ...", flush=True)
                    data[log2d] = prepare_data(opts, log2d)
                    if opts.reference:
                        per_d.reference = reference_run(opts, log2d)
                        print(f"  {format_run(per_d.reference)}, {per_d.reference.rows_per_s:,.0f} rows/s", flush=True)
                cell = per_d.masters.setdefault(master, {})
                print(f"d = 2^{log2d} on {master}:", flush=True)
                if opts.runs_mllib(master):
                    cell[MLLIB] = self.bench_mllib(master, log2d, data[log2d])
                    self.save()
                target, source = self.resolve_target(log2d)
                if per_d.target_source is None or master == opts.primary:
                    per_d.target_auc, per_d.target_source = target, source
                print(f"  target AUC {'—' if target is None else f'{target:.4f}'} ({source})", flush=True)
                if self.ps_reason is None:
                    cell[PS] = self.bench_ps(master, log2d, data[log2d], per_d.target_auc)
                elif not opts.skip_ps:
                    cell[PS] = Cell(SKIPPED, note=self.ps_reason)
                self.save()
        self.results.meta.complete = is_complete(self.results)
        return self.results

    def _not_run(self, master: str, log2d: int, why: str) -> None:
        cell = self.results.dims[log2d].masters[master]
        for system in ([MLLIB] if self.opts.runs_mllib(master) else []) + ([PS] if self.ps_reason is None else []):
            cell[system] = Cell(NOT_RUN, note=why)

    def resolve_target(self, log2d: int) -> tuple[float | None, str]:
        """MLlib's best held-out AUC at ``d`` (primary master); where it failed, its best at the largest ``d`` that worked."""
        if self.opts.target_auc is not None:
            return self.opts.target_auc, "fixed with --target-auc"
        primary = self.opts.primary
        here = self.results.cell(log2d, primary, MLLIB)
        if here and here.best:
            return here.best.auc, f"MLlib's best at 2^{log2d}"
        ok = [d for d in self.results.dims if (c := self.results.cell(d, primary, MLLIB)) and c.best]
        why = f"MLlib {here.status}" if here else "MLlib not run"
        if ok:
            d2 = max(ok)
            return self.results.cell(d2, primary, MLLIB).best.auc, f"{why} at 2^{log2d}: fallback to MLlib's best at 2^{d2}"
        return None, f"{why} at 2^{log2d} and at every smaller d: no target"

    def launch(self, system: str, master: str, log2d: int, data: DataPaths,
               params: MLlibParams | PSParams) -> RunRecord:
        """Run one configuration in a child process; classify OOM, timeout and crashes; keep log tails."""
        opts = self.opts
        label = ",".join(f"{k}={v}" for k, v in params_items(params))
        name = f"{system}_{master_tag(master)}_d{log2d}_{label}".replace("=", "").replace(",", "_").replace(" ", "")
        base = dict(system=system, master=master, d_log2=log2d, name=name, params=params)
        if self.over_budget():
            record = RunRecord(**base, status=NOT_RUN,
                               error=f"time budget (--budget-min {opts.budget_s / 60:g}) used up")
            self.results.runs.append(record)
            print(f"  {format_run(record)}", flush=True)
            return record
        run_dir = opts.out / "runs" / name
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        result_path = run_dir / "result.json"
        mem = worker_memory_mb(master)
        cfg_path = run_dir / "config.json"
        ChildConfig(name=name, system=system, params=params, format=data.format, train=data.train, test=data.test,
                    master=master, driver_memory=opts.driver_memory, executor_memory=f"{mem}m" if mem else None,
                    partitions=partitions_of(master), warehouse=str(run_dir / "warehouse"),
                    result=str(result_path), warmup_rows=opts.warmup_rows).write(cfg_path)
        log_path = run_dir / "child.log"
        t0 = time.perf_counter()
        rc = run_child_process(["bench.mllib", "--child", str(cfg_path)], run_dir, log_path, opts.timeout)
        log_text = log_path.read_text(errors="replace")
        if result_path.exists():
            result = ChildResult.from_dict(json.loads(result_path.read_text()))
        elif rc is None:
            result = ChildResult(status=TIMEOUT, error=f"no result after {opts.timeout:.0f} s (killed)")
        else:
            result = ChildResult(error=f"child exited with {rc} and no result")
        oom = oom_line(log_text)
        if oom and result.status != OK:
            # The JVM exits on OOM (-XX:+ExitOnOutOfMemoryError); Python then sees only a broken py4j link.
            result.status, result.error = OOM, oom[:300]
        app_id_path = run_dir / "app_id"
        app_id = result.app_id or (app_id_path.read_text().strip() if app_id_path.exists() else None)
        executor_tails = collect_executor_logs(app_id, run_dir)
        if result.status != OK:
            result.log_tail = log_tail(log_text, 30)
            result.executor_log_tail = result.executor_log_tail or executor_tails
        fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(ChildResult)}
        record = RunRecord(**fields, **base, log=str(log_path), wall_s=time.perf_counter() - t0)
        self.results.runs.append(record)
        print(f"  {format_run(record)}", flush=True)
        return record

    def bench_mllib(self, master: str, log2d: int, data: DataPaths) -> Cell:
        """Grid at ``maxIter``; then the ``maxIter`` ladder on the best setting, descending, while it keeps the best AUC."""
        opts = self.opts
        if data.format != "vector":
            return Cell(UNSUPPORTED, note="d > 2^31-1: SparseVector indices are int32")
        runs: list[RunRecord] = []
        stop = None
        for reg in opts.reg_params:
            for std in (False, True):
                params = MLlibParams(opts.max_iter, reg, std)
                if stop is not None:
                    # Memory is set by d, not by these knobs: another run would only fail again, slowly.
                    record = RunRecord(system=MLLIB, master=master, d_log2=log2d, name="", params=params,
                                       status=SKIPPED, error=f"not run: {stop}")
                    self.results.runs.append(record)
                    runs.append(record)
                    continue
                run = self.launch(MLLIB, master, log2d, data, params)
                runs.append(run)
                if run.status in (OOM, TIMEOUT):
                    stop = f"{run.label()} hit {run.status} at this d"
        ok = [r for r in runs if r.ok]
        oom = next((r for r in runs if r.status == OOM), None)
        if not ok:
            return Cell(rollup_status(runs), oom_run=oom, note=stop or "")
        best = max(ok, key=lambda r: r.auc)
        for it in sorted((i for i in opts.ladder if i < opts.max_iter), reverse=True):
            run = self.launch(MLLIB, master, log2d, data, dataclasses.replace(best.params, maxIter=it))
            runs.append(run)
            if not run.ok or run.auc < best.auc:
                break
            best = run  # as good as the best so far (or better): the target moves up to it
        hit = min((r for r in runs if r.ok and r.auc >= best.auc), key=lambda r: r.fit_s)
        return Cell(OK, best=best, target_run=hit, oom_run=oom)

    def bench_ps(self, master: str, log2d: int, data: DataPaths, target: float | None) -> Cell:
        """``numEpochs`` ladder, ascending; stops at the first rung that reaches the target (unless --ps-full-ladder)."""
        opts = self.opts
        runs: list[RunRecord] = []
        note = ""
        for epochs in sorted(opts.ps_epochs):
            ftrl = opts.ps_params
            run = self.launch(PS, master, log2d, data, PSParams(epochs, 0.0, ftrl.alpha, ftrl.beta, ftrl.batchSize))
            runs.append(run)
            if run.status == TIMEOUT:
                note = f"epochs={epochs} timed out: larger rungs not run"
                break
            if not opts.ps_full_ladder and run.ok and target is not None and run.auc >= target:
                break
        ok = [r for r in runs if r.ok]
        best = max(ok, key=lambda r: r.auc) if ok else None
        reached = [r for r in ok if target is not None and r.auc >= target]
        hit = min(reached, key=lambda r: r.fit_s) if reached else None
        oom = next((r for r in runs if r.status == OOM), None)
        failed = [r for r in runs if r.status not in (OK, NOT_RUN)]
        if failed and not note:
            note = f"{len(failed)} of {len(runs)} rungs failed ({', '.join(r.status for r in failed)})"
        return Cell(rollup_status(runs), best=best, target_run=hit, oom_run=oom, note=note)


def save(results: Results, out, write_doc: bool) -> None:
    """Write ``results.json``, ``report.md`` and the plot into ``out``; with ``write_doc`` also the doc's section.

    Parameters
    ----------
    results : Results
    out : pathlib.Path
        Output directory (created).
    write_doc : bool
        Rewrite the bench-mllib section of ``docs/benchmarks.md`` and copy
        the plot to ``docs/bench_mllib.png``.
    """
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(results.to_json())
    os.replace(tmp, path)
    text = markdown(results)
    (out / "report.md").write_text(text + "\n")
    if write_doc:
        write_section(BEGIN, END, text)
    try:
        plot(results, out / PLOT_NAME)
        if write_doc:
            shutil.copy(out / PLOT_NAME, DOC.parent / PLOT_NAME)
    except Exception as exc:  # a plot must never cost the run
        print(f"plot failed: {exc}", flush=True)
