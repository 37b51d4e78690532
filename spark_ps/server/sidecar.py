"""``python -m spark_ps.server.sidecar``: the shard process the executor plugin starts.

Contract with the JVM plugin (``io.sparkps.PSExecutorPlugin``):

1. The first line on stdin is the per-application secret, in hex. It never
   appears in argv, where ``ps`` would show it to every local user.
2. The sidecar binds port 0 on ``--host`` and prints exactly one line,
   ``SPARK_PS_READY port=<port> pid=<pid>``, to stdout. The plugin waits for
   that line with a deadline; nothing else is ever written to stdout.
3. The plugin keeps stdin open for the sidecar's whole life. EOF on stdin means
   the executor is gone (even after ``kill -9``, the kernel closes the pipe), so
   the sidecar shuts down: no orphans. A change of parent pid is a second,
   independent signal for the same thing. SIGTERM also shuts it down cleanly.
4. ``--conf key=value`` (repeated) carries the application's ``spark.ps.*``
   confs; the shard's limits are read from them once
   (:class:`~spark_ps.server.settings.ShardSettings`), and a bad one stops the
   sidecar with exit code 2 before it reports ready.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import signal
import sys
import threading

from spark_ps.server.settings import KEYS, ShardSettings
from spark_ps.server.tcp import ShardServer

log = logging.getLogger("spark_ps.server.sidecar")

READY_PREFIX = "SPARK_PS_READY"
PARENT_POLL_SECONDS = 1.0
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


def _watch_parent(server: ShardServer, parent_pid: int, stop: threading.Event) -> None:
    # Backup to stdin EOF, for a parent that leaked our stdin to another process.
    while not stop.wait(PARENT_POLL_SECONDS):
        if os.getppid() != parent_pid:
            log.warning("parent %d is gone; shutting down", parent_pid)
            server.shutdown()
            return


def _watch_stdin(server: ShardServer, fd: int) -> None:
    # Raw os.read, not sys.stdin: a daemon thread blocked inside a buffered
    # reader aborts the interpreter at exit (it cannot take the buffer's lock).
    while os.read(fd, 4096):
        pass  # the plugin never writes after the secret; we only wait for EOF
    log.info("stdin closed: the executor is gone; shutting down")
    server.shutdown()


def _warn_if_descriptors_short(settings: ShardSettings) -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < settings.max_connections + SPARE_DESCRIPTORS:
        log.warning("the open-file limit (%d) is below %s=%d plus %d spare: past about %d connections, "
                    "accept() fails with EMFILE and the shard waits for descriptors to free up instead of "
                    "refusing with a reply; raise `ulimit -n` or lower %s", soft, KEYS["max_connections"],
                    settings.max_connections, SPARE_DESCRIPTORS, max(soft - SPARE_DESCRIPTORS, 0),
                    KEYS["max_connections"])


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
    with ShardServer(secret, host=args.host, port=args.port, settings=settings) as server:
        signal.signal(signal.SIGTERM, lambda *_: server.shutdown())
        stop = threading.Event()
        threading.Thread(target=_watch_stdin, args=(server, stdin.fileno()), daemon=True).start()
        threading.Thread(target=_watch_parent, args=(server, parent_pid, stop), daemon=True).start()
        sys.stdout.write(f"{READY_PREFIX} port={server.address[1]} pid={os.getpid()}\n")
        sys.stdout.flush()
        log.info("serving on %s:%d with %s", *server.address, settings)
        server.serve_forever()
        stop.set()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
