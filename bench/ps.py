"""``make bench-ps``: pull/push throughput of one shard over loopback vs in-process.

One real sidecar process (``python -m spark_ps.server.sidecar``) serves one shard;
this process is the client. For each request size and row width, the same
sorted-unique key batches go (a) over the socket through :class:`PSClient`
and (b) straight into a :class:`~spark_ps.server.table.Table` in this process with
the same optimizer (the no-network floor). The ratio is what the protocol,
the socket and the second process cost. Absolute numbers on a shared 2-core
machine are noisy; the ratio, measured in the same run, is the figure of merit.
Each figure is the best of ``--repeats`` timed passes over the same batches
(as ``timeit`` reports its best), the passes of loopback and in-process
alternating: on this virtual machine the host takes 5-30% of the CPU time at
random moments (steal time, reported with the table), and the best pass is
the one least disturbed by that.

Wire protection (issue 11, item 1): the sidecar runs with
``spark.ps.integrity.enabled=false``, so each of three clients gets the
session it asks for: ``off`` (no tag), ``on`` (a Poly1305 tag per frame,
the default) and ``crypto`` (AES-256-GCM). The first table's loopback columns
are the default, ``on``; the second compares the three on the same batches,
their passes alternating like the others. Target: ``on`` keeps at least 80%
of ``off``'s throughput at 100k-key requests.

Writes Markdown tables to stdout and into ``docs/benchmarks.md`` between
markers, so the committed doc always comes from a real run (``--no-doc``:
stdout only). Run from the repository root: ``python -m bench.ps``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np

from bench.report import write_section
from spark_ps.client.client import PSClient
from spark_ps.server.optim import make_optimizer
from spark_ps.server.rowinit import make_init
from spark_ps.server.table import Table

BEGIN, END = "<!-- bench-ps:begin -->", "<!-- bench-ps:end -->"
FTRL = {"alpha": 0.1, "beta": 1.0, "l1": 0.0, "l2": 0.0}


#: The client options of each wire protection measured; ``on`` is the default and the first table's loopback.
PROTECTIONS = {"off": {"integrity": False}, "on": {}, "crypto": {"crypto": True}}


@dataclasses.dataclass(frozen=True)
class ShardCell:
    """One (row width, keys per request) cell: keys/s by op and where (``local`` or a protection's name)."""

    width: int
    keys: int
    rates: dict[str, float]

    def rate(self, op: str, where: str) -> float:
        """Keys/s of ``op`` (``"pull"`` or ``"push"``) ``where`` (``"local"``, ``"net"`` = ``"on"``, ``"off"``...)."""
        return self.rates[f"{op}_{'on' if where == 'net' else where}"]


def start_sidecar(secret: bytes, *conf: str) -> tuple[subprocess.Popen, int]:
    """Start ``python -m spark_ps.server.sidecar`` on 127.0.0.1 with ``secret``; wait for its port.

    Parameters
    ----------
    secret : bytes
        The shared secret, sent to the sidecar's stdin as hex.
    *conf : str
        ``spark.ps.*=value`` settings, passed as ``--conf``.

    Returns
    -------
    proc : subprocess.Popen
        The sidecar; closing its stdin stops it.
    port : int
        The port it reported ready on.
    """
    args = [a for pair in conf for a in ("--conf", pair)]
    proc = subprocess.Popen([sys.executable, "-m", "spark_ps.server.sidecar", "--host", "127.0.0.1", *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    proc.stdin.write(secret.hex().encode() + b"\n")
    proc.stdin.flush()
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(60):
        proc.kill()
        raise TimeoutError("sidecar did not report ready within 60 s")
    line = proc.stdout.readline().decode()
    return proc, int(line.split("port=")[1].split()[0])


def key_batches(rng, universe: np.ndarray, size: int, count: int) -> list[np.ndarray]:
    """``count`` sorted unique batches of ``size`` keys drawn from ``universe`` without replacement."""
    return [np.unique(rng.choice(universe, size, replace=False)) for _ in range(count)]


def best_rates(fns: dict[str, Callable[[np.ndarray], object]], batches: list[np.ndarray],
               repeats: int) -> dict[str, float]:
    """Keys per second of each of ``fns``: the best of ``repeats`` passes over ``batches``.

    The passes of the different functions alternate, so loopback and
    in-process see the same spells of host contention and their ratio stays
    fair even when the absolute rates drift.
    """
    for fn in fns.values():
        fn(batches[0])  # warm up (numba compile, connection, page faults)
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for keys in batches:
                fn(keys)
            best[name] = min(best[name], time.perf_counter() - start)
    total = sum(len(k) for k in batches)
    return {name: total / seconds for name, seconds in best.items()}


def cpu_ticks() -> tuple[int, int]:
    """(steal, total) CPU ticks of the machine so far, from ``/proc/stat`` (zeros elsewhere)."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except OSError:
        return 0, 0
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def run(table_keys: int, seconds_per_cell: float, repeats: int) -> list[ShardCell]:
    """Measure every (row width, request size) cell, loopback against in-process.

    Parameters
    ----------
    table_keys : int
        Keys pushed into each table before the timing.
    seconds_per_cell : float
        Rough time budget of one pass of one cell (sets the number of batches).
    repeats : int
        Timed passes per figure; the best is kept.

    Returns
    -------
    list of ShardCell
        Widths 1 and 9 by 1k, 10k and 100k keys per request.
    """
    rng = np.random.default_rng(0)
    universe = np.unique(rng.integers(-2**62, 2**62, table_keys, dtype=np.int64))
    secret = os.urandom(32)
    proc, port = start_sidecar(secret, "spark.ps.integrity.enabled=false")
    rows = []
    clients = {name: PSClient([("127.0.0.1", port)], secret, **options) for name, options in PROTECTIONS.items()}
    client = clients["on"]
    try:
        for width in (1, 9):
            name = f"bench{width}"
            client.create_table(name, width=width, optimizer="ftrl", hyper=FTRL)
            local = Table(name, width, make_optimizer("ftrl", **FTRL), make_init("zeros"))
            fill = np.zeros((len(universe), width), np.float32) + 0.01
            for chunk in np.array_split(np.arange(len(universe)), 20):
                client.push(name, universe[chunk], fill[chunk])
                local.push(universe[chunk], fill[chunk])
            for size in (1_000, 10_000, 100_000):
                count = max(3, int(seconds_per_cell * 5e6 / size / (1 + width / 4)))
                batches = key_batches(rng, universe, size, count)
                grads = {len(k): rng.normal(0, 0.1, (len(k), width)).astype(np.float32) for k in batches}
                fns = {"pull_local": local.pull, "push_local": lambda k: local.push(k, grads[len(k)])}
                for mode, c in clients.items():
                    fns[f"pull_{mode}"] = lambda k, c=c: c.pull(name, k)
                    fns[f"push_{mode}"] = lambda k, c=c: c.push(name, k, grads[len(k)])
                cell = ShardCell(width, size, best_rates(fns, batches, repeats))
                rows.append(cell)
                print(format_row(cell), flush=True)
    finally:
        for c in clients.values():
            c.close()
        proc.stdin.close()
        proc.wait(timeout=30)
    return rows


def format_row(c: ShardCell) -> str:
    """One Markdown table row of a cell of :func:`run`: loopback (integrity on) against in-process."""
    cols = []
    for op in ("pull", "push"):
        net, local = c.rate(op, "net"), c.rate(op, "local")
        cols += [f"{net / 1e6:.2f}", f"{local / 1e6:.2f}", f"{net / local:.0%}"]
    return f"| {c.width} | {c.keys:,} | " + " | ".join(cols) + " |"


def format_protection_row(c: ShardCell) -> str:
    """One Markdown row of the protection table: Mkeys/s off, on, crypto, and on/off, crypto/off, per op."""
    cols = []
    for op in ("pull", "push"):
        off, on, crypto = (c.rate(op, mode) for mode in PROTECTIONS)
        cols += [f"{off / 1e6:.2f}", f"{on / 1e6:.2f}", f"{crypto / 1e6:.2f}", f"{on / off:.0%}", f"{crypto / off:.0%}"]
    return f"| {c.width} | {c.keys:,} | " + " | ".join(cols) + " |"


HEADER = ("| width | keys/request | pull Mkeys/s (loopback) | pull Mkeys/s (in-process) | pull ratio "
          "| push Mkeys/s (loopback) | push Mkeys/s (in-process) | push ratio |\n"
          "|---:|---:|---:|---:|---:|---:|---:|---:|")
PROTECTION_HEADER = ("| width | keys/request | pull off | pull on | pull crypto | pull on/off | pull crypto/off "
                     "| push off | push on | push crypto | push on/off | push crypto/off |\n"
                     "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


def write_doc(rows: list[ShardCell], table_keys: int, repeats: int, steal: float) -> None:
    """Rewrite the bench-ps section of ``docs/benchmarks.md`` (other sections untouched)."""
    text = "\n".join([
        f"One shard, {table_keys:,} keys already in the table, FTRL on push, "
        f"sorted unique random keys per request; {time.strftime('%Y-%m-%d')}, "
        f"{os.cpu_count()} cores, client and sidecar as separate processes over 127.0.0.1; "
        f"best of {repeats} passes per figure; CPU steal during the run {steal:.0%}.",
        "",
        HEADER,
        *[format_row(r) for r in rows],
        "",
        "Wire protection, Mkeys/s over loopback, same batches and passes: `off` no tag "
        "(`spark.ps.integrity.enabled=false` on both ends), `on` a Poly1305 tag per frame (the default), "
        "`crypto` AES-256-GCM (`spark.ps.crypto.enabled=true`).",
        "",
        PROTECTION_HEADER,
        *[format_protection_row(r) for r in rows],
    ])
    write_section(BEGIN, END, text, new_doc="# Benchmarks\n\n## Shard throughput (`make bench-ps`)\n")


def main() -> None:
    """Command line: run the cells, print the table and the target verdicts, write the doc section."""
    parser = argparse.ArgumentParser(prog="python -m bench.ps", description=__doc__.splitlines()[0])
    parser.add_argument("--table-keys", type=int, default=2_000_000)
    parser.add_argument("--seconds-per-cell", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per figure; the best is kept")
    parser.add_argument("--no-doc", action="store_true", help="print only; do not rewrite docs/benchmarks.md")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    print(HEADER)
    steal_before, total_before = cpu_ticks()
    rows = run(args.table_keys, args.seconds_per_cell, args.repeats)
    steal_after, total_after = cpu_ticks()
    steal = (steal_after - steal_before) / max(1, total_after - total_before)
    print(f"CPU steal during the run: {steal:.1%}")
    if not args.no_doc:
        write_doc(rows, args.table_keys, args.repeats, steal)
    print(PROTECTION_HEADER)
    for r in rows:
        print(format_protection_row(r))
    big = [r for r in rows if r.keys == 100_000]
    for r in big:
        for op in ("pull", "push"):
            net, local = r.rate(op, "net"), r.rate(op, "local")
            ok = net >= 5e6 and net >= 0.5 * local
            print(f"target width={r.width} {op} 100k: {'MET' if ok else 'MISSED'} "
                  f"({net / 1e6:.1f} Mkeys/s, {net / local:.0%} of floor)")
            on, off = r.rate(op, "on"), r.rate(op, "off")
            print(f"target integrity width={r.width} {op} 100k: {'MET' if on >= 0.8 * off else 'MISSED'} "
                  f"(on {on / off:.0%} of off; crypto {r.rate(op, 'crypto') / off:.0%} of off)")


if __name__ == "__main__":
    main()
