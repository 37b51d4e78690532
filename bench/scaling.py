"""Rows scaling of a default fit (issue 12, Scale): 400k, 1.6M and 6.4M rows at d = 2^26 on ``local-cluster``.

Each row count runs :mod:`bench.profile_fit` in a fresh application of its own
(``--defaults --repeats 1 --evaluate``: ``LogisticRegression()`` with its
default Params, no warm-up fit) on ``local-cluster[2,1,2048]``, and this
prints one Markdown table: fit wall time, its floor (Arrow to CSR plus the
epochs' mean task times, from the tasks' own log lines), the passes and
mini-batch size the defaults chose, microseconds per row and pass, held-out
AUC, the wait for the Delta export, and where the cached training rows were
when the fit started (memory and disk: blocks the executors could not keep
in memory are read back from disk by the fit's tasks).

MLlib is not run here: at d = 2^26 its driver runs out of memory (the
``make bench`` matrix records that ``OOM`` at 2^26 and 2^30), so there is no
MLlib time to compare at any row count of this run.

Run from the repository root: ``python -m bench.scaling [--rows 400000,1600000,6400000]``.
Writing the 6.4M-row data set takes a few minutes the first time (it is reused).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import ROOT


def run(rows: int, log2d: int, master: str, test_rows: int) -> dict:
    """One fresh application: ``bench.profile_fit`` on ``rows`` rows; its record (a dict)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "fit.json"
        cmd = [sys.executable, "-m", "bench.profile_fit", "--defaults", "--repeats", "1", "--evaluate",
               "--rows", str(rows), "--test-rows", str(test_rows), "--dim-log2", str(log2d), "--master", master,
               "--json", str(out)]
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())[0]


def main() -> None:
    """Command line: one fresh application per row count, then the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="400000,1600000,6400000")
    parser.add_argument("--dim-log2", type=int, default=26)
    parser.add_argument("--master", default="local-cluster[2,1,2048]")
    parser.add_argument("--test-rows", type=int, default=100_000)
    args = parser.parse_args()
    lines = ["| rows | fit s | floor s | fit ÷ floor | passes | batch | µs per row and pass | held-out AUC | "
             "Delta export wait s | cached MB in memory / on disk |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for rows in (int(r) for r in args.rows.split(",")):
        r = run(rows, args.dim_log2, args.master, args.test_rows)
        per_row = 1e6 * r["fit_s"] / (rows * max(r["passes"], 1))
        floor = r["floor_s"] or float("nan")
        lines.append(f"| {rows:,} | {r['fit_s']:.2f} | {floor:.2f} | {r['fit_s'] / floor:.2f} | {r['passes']} | "
                     f"{r['batch_size']} | {per_row:.2f} | {r['auc']:.4f} | {r['export_wait_s']:.2f} | "
                     f"{r['cached_memory_mb']:,.0f} / {r['cached_disk_mb']:,.0f} |")
        print(lines[-1], flush=True)
    print(f"\nd = 2^{args.dim_log2}, `{args.master}`, `LogisticRegression()` defaults, one fresh application "
          "per row count\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
