"""``python -m spark_ps.server.sidecar``: the shard process the executor plugin starts.

Contract with the JVM plugin (``io.sparkps.PSExecutorPlugin``):

1. The first line on stdin is the per-application secret, in hex. It never
   appears in argv, where ``ps`` would show it to every local user.
2. The sidecar binds port 0 on ``--host`` and prints exactly one line,
   ``SPARK_PS_READY port=<port> pid=<pid>``, to stdout. The plugin waits for
   that line with a deadline; after it, stdout carries heartbeats only (3.).
3. The plugin keeps stdin open for the sidecar's whole life. EOF on stdin means
   the executor is gone (even after ``kill -9``, the kernel closes the pipe), so
   the sidecar shuts down: no orphans. A change of parent pid is a second,
   independent signal for the same thing. SIGTERM also shuts it down cleanly.
   Once ready, the sidecar prints ``SPARK_PS_ALIVE`` every
   :data:`TICK_SECONDS`: the plugin kills a sidecar whose heartbeats stop for
   ``spark.ps.heartbeatTimeout`` (frozen by SIGSTOP, say, or wedged) and
   starts a new one, as it does for a sidecar that died.
4. ``--conf key=value`` (repeated) carries the application's ``spark.ps.*``
   confs; the shard's limits are read from them once
   (:class:`~spark_ps.server.settings.ShardSettings`), and a bad one stops the
   sidecar with exit code 2 before it reports ready.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import resource
import select
import signal
import sys
from collections.abc import Iterator

import numpy as np

from spark_ps.server.optim import make_optimizer
from spark_ps.server.settings import KEYS, ShardSettings
from spark_ps.server.table import Table
from spark_ps.server.tcp import ShardServer

log = logging.getLogger("spark_ps.server.sidecar")

READY_PREFIX = "SPARK_PS_READY"
#: Period of the main thread's loop: one heartbeat and one check of the parent's pid each.
TICK_SECONDS = 1.0
HEARTBEAT_LINE = "SPARK_PS_ALIVE"
#: Descriptors a sidecar needs besides its connections (stdio, listener, imported libraries' files).
SPARE_DESCRIPTORS = 32


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m spark_ps.server.sidecar", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (the executor's host)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one")
    parser.add_argument("--executor-id", default="?", help="for logs only")
    parser.add_argument("--index", type=int, default=0, help="sidecar index within the executor")
    parser.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                        help="a spark.ps.* conf; the shard reads its limits from them, ignores the rest")
    return parser.parse_args(argv)


def _read_secret(stream) -> bytes:
    line = stream.readline()
    if not line:
        raise ValueError("no secret on stdin: the sidecar must be started by the spark-ps plugin")
    try:
        secret = bytes.fromhex(line.strip().decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError("the secret on stdin is not hex") from None
    if not secret:
        raise ValueError("empty secret on stdin")
    return secret


@contextlib.contextmanager
def _sigterm_pipe() -> Iterator[int]:
    """Catch SIGTERM into a pipe; yield the pipe's read end, readable once SIGTERM came.

    The shard serves from a background thread and the main thread waits, in
    :func:`_wait_for_stop`, for a reason to stop. A handler could not simply
    stop the server: Python runs handlers on the main thread only, and only
    once the kernel has interrupted it, while the kernel may deliver a
    process-wide signal to any thread. When it chose another thread (numpy's
    BLAS threads are enough), the main thread stayed in ``accept()`` for good:
    seen once in CI, no exit 20 s after SIGTERM. Whichever thread takes the
    signal writes to this wakeup pipe, and that wakes the main thread's ``select``.
    """
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    previous_fd = signal.set_wakeup_fd(wake_write)
    previous_handler = signal.signal(signal.SIGTERM, lambda *_: None)  # caught, so not fatal: the pipe wakes us
    try:
        yield wake_read
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        signal.set_wakeup_fd(previous_fd)
        os.close(wake_read)
        os.close(wake_write)


def _wait_for_stop(sigterm_fd: int, stdin_fd: int, parent_pid: int) -> str:
    """Beat until SIGTERM, EOF on stdin or a new parent; return which.

    The heartbeat comes from this loop, on the main thread, so that it stops
    when the process stops. A blocking write: the plugin drains stdout for
    the sidecar's whole life (a caller that never reads fills a 64 KiB pipe
    in about 4,000 beats, and then this loop waits for it).
    """
    while True:
        sys.stdout.write(HEARTBEAT_LINE + "\n")
        sys.stdout.flush()
        readable, _, _ = select.select([sigterm_fd, stdin_fd], [], [], TICK_SECONDS)
        if sigterm_fd in readable:
            return "SIGTERM"
        # The plugin never writes after the secret; EOF means the executor is gone (even after kill -9).
        if stdin_fd in readable and not os.read(stdin_fd, 4096):
            return "stdin closed: the executor is gone"
        # Backup to stdin EOF, for a parent that leaked our stdin to another process.
        if os.getppid() != parent_pid:
            return f"parent {parent_pid} is gone"


def _warn_if_descriptors_short(settings: ShardSettings) -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < settings.max_connections + SPARE_DESCRIPTORS:
        log.warning("the open-file limit (%d) is below %s=%d plus %d spare: past about %d connections, "
                    "accept() fails with EMFILE and the shard waits for descriptors to free up instead of "
                    "refusing with a reply; raise `ulimit -n` or lower %s", soft, KEYS["max_connections"],
                    settings.max_connections, SPARE_DESCRIPTORS, max(soft - SPARE_DESCRIPTORS, 0),
                    KEYS["max_connections"])


def warm_kernels() -> None:
    """Load the compiled kernels of a default fit's first requests from numba's on-disk cache, on a table of its own.

    The key index, the row gathers and scatters and FTRL's update and
    weights: 0.13 s in a fresh process, which the first push and pull of an
    application's first fit would wait for. Run once the sidecar has reported
    ready, while it serves: the executor's start does not wait for it.

    Examples
    --------
    >>> warm_kernels(); warm_kernels()     # the second call finds them loaded
    """
    table = Table("warm-up", 1, make_optimizer("ftrl", alpha=0.1))
    keys = np.arange(-64, 64, dtype=np.int64)
    table.push(keys, np.ones((keys.size, 1), np.float32))
    table.pull(keys)


def main(argv: list[str] | None = None) -> int:
    """Run a shard until the parent goes away or SIGTERM; return the exit code."""
    args = _parse_args(argv)
    logging.basicConfig(level=os.environ.get("SPARK_PS_LOG_LEVEL", "INFO"), stream=sys.stderr,
                        format=f"%(asctime)s sidecar[exec {args.executor_id}/{args.index}] %(levelname)s %(message)s")
    parent_pid = os.getppid()
    stdin = sys.stdin.buffer
    try:
        settings = ShardSettings.from_args(args.conf)
        secret = _read_secret(stdin)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    _warn_if_descriptors_short(settings)
    with _sigterm_pipe() as sigterm_fd, ShardServer(secret, host=args.host, port=args.port,
                                                    settings=settings) as server:
        server.serve_in_background()
        sys.stdout.write(f"{READY_PREFIX} port={server.address[1]} pid={os.getpid()}\n")
        sys.stdout.flush()
        log.info("serving on %s:%d with %s", *server.address, settings)
        warm_kernels()
        log.info("%s: shutting down", _wait_for_stop(sigterm_fd, stdin.fileno(), parent_pid))
    log.info("stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
