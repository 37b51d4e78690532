"""``make stream-demo``: streaming training from Delta with delayed labels, killed with SIGKILL and resumed.

1. ``jobs/ctr_events.py`` writes CTR impressions and, later, their clicks
   into two Delta tables, one round per append.
2. ``jobs/stream_train.py`` (spark-submit as ``jobs/run_demo.sh`` does, on
   ``local[2]``, shuffles and Delta's log replay sized for two cores) joins
   them into labelled impressions and trains a LogisticRegression, one
   round per micro-batch, printing one line per committed batch. Once it has committed ``--kill-after`` batches, the
   whole job (driver JVM, Python driver, sidecar: its process group) is
   killed with SIGKILL, mid-stream.
3. The same command runs again on the same checkpoint and model path until
   the source is drained.
4. The check reads the model's Delta log itself (the ``commitInfo`` of every
   ``_delta_log/*.json``, not the trainer's code): the committed batch ids
   must be 0, 1, ..., n - 1, each once, and their rows must add up to the
   impressions the generator wrote (counted again from the impressions
   table's own log). Exit status 1 if not.

``python jobs/stream_demo.py [--out DIR] [--rounds 5] [--rows-per-round 6000] [--kill-after 2]``; the output
directory is recreated. Takes about two and a half minutes on two cores, mostly
three JVM start-ups and the join's state store.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import psutil

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: A commit line of the stream job (the trainer's log line, printed by jobs/stream_train.py).
COMMIT = re.compile(r"batch (\d+): (\d+) rows, .*model version (\d+)")


#: Sizes for two cores: the join's state is split spark.sql.shuffle.partitions ways (default 200 stores per
#: operator and side, each written to the checkpoint every batch) and Delta replays its log in
#: snapshotPartitions tasks (default 50). Fixed by the checkpoint after the query's first batch.
LOCAL_CONF = {"spark.sql.shuffle.partitions": "2", "spark.default.parallelism": "2",
              "spark.databricks.delta.snapshotPartitions": "2", "spark.ui.enabled": "false",
              "spark.ui.showConsoleProgress": "false"}


def _job(job: str, args: list[str], log: pathlib.Path, extra_conf: dict[str, str] | None = None
         ) -> subprocess.Popen:
    """spark-submit ``job`` as jobs/run_demo.sh does, in a process group of its own; stderr to ``log``."""
    python = sys.executable  # the venv's: driver, PySpark workers and sidecars all run it
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "SPARK_LOCAL_IP": "127.0.0.1",
           "PYSPARK_PYTHON": python, "PYSPARK_DRIVER_PYTHON": python}
    conf = {"spark.pyspark.python": python, "spark.ps.python": python, "spark.ps.pythonPath": str(ROOT), **LOCAL_CONF,
            **(extra_conf or {})}
    cmd = [str(pathlib.Path(python).parent / "spark-submit"), "--master", "local[2]",
           "--properties-file", "conf/spark-defaults.conf"]
    for key, value in conf.items():
        cmd += ["--conf", f"{key}={value}"]
    return subprocess.Popen([*cmd, job, *args], cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=log.open("w"), start_new_session=True)


def _echo(proc: subprocess.Popen, tag: str, stop_after: int | None = None) -> list[int]:
    """Print the job's output as it comes; return the batch ids it committed (stop reading after ``stop_after``)."""
    committed = []
    for line in proc.stdout:
        print(f"[{tag}] {line.rstrip()}", flush=True)
        match = COMMIT.search(line.rstrip())
        if match:
            committed.append(int(match.group(1)))
            if stop_after is not None and len(committed) >= stop_after:
                break
    return committed


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the job's whole process group (it leads it: start_new_session) and wait until every member is gone."""
    members = [p for p in psutil.process_iter(["pid"]) if _pgid(p.pid) == proc.pid]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(60)
    _, alive = psutil.wait_procs(members, timeout=60)
    if alive:
        raise RuntimeError(f"processes of the killed job still alive after 60 s: {[p.pid for p in alive]}")


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:  # exited since the listing
        return None


def _delta_commits(table: pathlib.Path) -> list[dict]:
    """The ``commitInfo`` and ``add`` actions of each version of a Delta table, read from its JSON log."""
    versions = []
    for path in sorted((table / "_delta_log").glob("*.json")):
        actions = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        info = next((a["commitInfo"] for a in actions if "commitInfo" in a), {})
        adds = [a["add"] for a in actions if "add" in a]
        versions.append({"version": int(path.stem), "info": info, "adds": adds})
    return versions


def _records(table: pathlib.Path) -> int:
    """Rows appended to a Delta table (its ``add`` actions' statistics; the demo's tables are append-only)."""
    return sum(json.loads(add["stats"])["numRecords"] for v in _delta_commits(table) for add in v["adds"])


def check(out: pathlib.Path, manifest: dict, runs: list[list[int]]) -> bool:
    """Print the committed batches and whether every one is there exactly once with every impression; return that."""
    batches = []
    for v in _delta_commits(out / "model" / "log"):
        meta = json.loads(v["info"].get("userMetadata") or "{}")
        if "batchId" in meta:
            batches.append({"version": v["version"], **meta})
    ids = [b["batchId"] for b in batches]
    rows = sum(b["rows"] for b in batches)
    produced = _records(out / "events" / "impressions") - 1  # less the watermark marker (ctr_events.py)
    print("\ncommitted batches, from the model's Delta log (model/log/_delta_log):")
    print(f"{'batchId':>8} {'version':>8} {'rows':>7} {'auc':>7} {'run':>4}")
    for b in batches:
        run = next((str(i + 1) for i, committed in enumerate(runs) if b["batchId"] in committed), "?")
        auc = "-" if b.get("auc") is None else f"{b['auc']:.4f}"
        print(f"{b['batchId']:>8} {b['version']:>8} {b['rows']:>7} {auc:>7} {run:>4}")
    checks = [
        (ids == list(range(len(ids))), f"batch ids 0..{len(ids) - 1}, each once: {ids}"),
        (produced == manifest["impressions"], f"impressions in the source table: {produced} "
                                              f"(the generator reports {manifest['impressions']})"),
        (rows == produced, f"rows trained {rows} = impressions produced {produced}"),
        (len(runs) == 2 and len(runs[0]) >= 1 and len(runs[1]) >= 1,
         f"both runs committed batches: run 1 {runs[0]}, run 2 {runs[1] if len(runs) > 1 else None}"),
    ]
    for ok, what in checks:
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
    return all(ok for ok, _ in checks)


def main(argv: list[str] | None = None) -> int:
    """Run the demo; return 0 if the resumed stream trained every impression exactly once, else 1."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "warehouse" / "stream_demo"), help="recreated")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rows-per-round", type=int, default=6000)
    parser.add_argument("--kill-after", type=int, default=2, help="committed batches before the SIGKILL")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out).resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    start = time.perf_counter()

    print(f"== 1. CTR events -> {out / 'events'}", flush=True)
    gen = _job("jobs/ctr_events.py", ["--out", str(out / "events"), "--rounds", str(args.rounds),
                                      "--rows-per-round", str(args.rows_per_round)], out / "ctr_events.log",
               {"spark.ps.serversPerExecutor": "0"})  # it only writes Delta: no sidecar
    _echo(gen, "events")
    if gen.wait() != 0:
        print(f"the event generator failed (exit {gen.returncode}); see {out / 'ctr_events.log'}", file=sys.stderr)
        return 1
    manifest = json.loads((out / "events" / "manifest.json").read_text())
    job = ["--impressions", str(out / "events" / "impressions"), "--clicks", str(out / "events" / "clicks"),
           "--delay", manifest["join"]["delay"], "--lateness", manifest["join"]["lateness"],
           "--max-files-per-trigger", "1", "--model-path", str(out / "model"),
           "--checkpoint", str(out / "checkpoint"), "--snapshot-every", "3", "--until-idle"]

    print(f"\n== 2. ({time.perf_counter() - start:.0f} s) stream job, killed with SIGKILL after {args.kill_after} "
          "committed batches", flush=True)
    first = _job("jobs/stream_train.py", job, out / "stream_run1.log")
    runs = [_echo(first, "run 1", stop_after=args.kill_after)]
    if len(runs[0]) < args.kill_after:
        print(f"run 1 ended (exit {first.wait()}) before {args.kill_after} commits; see {out / 'stream_run1.log'}",
              file=sys.stderr)
        return 1
    _kill_group(first)
    print(f"[run 1] SIGKILLed (process group {first.pid}) after committing batches {runs[0]}", flush=True)

    print(f"\n== 3. ({time.perf_counter() - start:.0f} s) the same command again: resumes from the checkpoint and "
          "the model path", flush=True)
    second = _job("jobs/stream_train.py", job, out / "stream_run2.log")
    runs.append(_echo(second, "run 2"))
    if second.wait() != 0:
        print(f"run 2 failed (exit {second.returncode}); see {out / 'stream_run2.log'}", file=sys.stderr)
        return 1

    ok = check(out, manifest, runs)
    print(f"\nstream demo {'passed' if ok else 'FAILED'} in {time.perf_counter() - start:.0f} s", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
