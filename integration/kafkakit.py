"""A real single-node Kafka broker (KRaft: broker and controller in one JVM) for the integration tests.

Decision: the broker is Apache Kafka's own server, ``kafka.Kafka`` from the
``kafka_2.13`` jars on Maven Central (``make kafka`` fetches them with their
full runtime classpath into ``build/kafka-broker/``), started as a child
JVM of the test process. Nothing is mocked: Spark's Kafka source and sink
talk to it over TCP on 127.0.0.1. Its classpath is never Spark's (Kafka's
Scala, Jackson and kafka-clients versions differ from Spark's); Spark gets
only spark-sql-kafka and the dependencies pyspark does not ship
(``spark_ps/jars/kafka/``, ``sparkkit.spark_kafka_jars``: every test session has them).

Start-up: ``StorageTool format`` on a fresh log directory (the class is
``kafka.tools.StorageTool`` up to Kafka 4.1, ``org.apache.kafka.tools.StorageTool``
where a later release moved it: whichever the jars hold), then ``kafka.Kafka
server.properties`` with a static one-voter quorum on two free loopback
ports. Readiness is asked of the broker itself, not guessed from a sleep:
the test polls a Metadata request (Kafka's wire protocol, v1, a few struct
calls: no Kafka client library is needed in Python) until the broker lists
itself, i.e. it is registered with the controller and unfenced; topics are
created with a CreateTopics request (v2) and waited for until every
partition has a leader. Measured here (2 cores, Kafka 4.1.1): format 1.5 s,
start to ready about 3 s.

The child is tied to this process's life: it asks the kernel for SIGKILL
when its parent dies (``prctl(PR_SET_PDEATHSIG)`` through ctypes, Linux
only), so a test process that is killed leaves no broker behind.
:meth:`KafkaBroker.stop` sends SIGTERM (Kafka's shutdown hook closes
the logs cleanly), SIGKILL after a timeout, and deletes the broker's
directory.
"""

from __future__ import annotations

import base64
import ctypes
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: ``make kafka``: the broker's runtime classpath (never put on Spark's).
BROKER_JARS_DIR = ROOT / "build" / "kafka-broker"

_STORAGE_TOOLS = {"kafka/tools/StorageTool.class": "kafka.tools.StorageTool",
                  "org/apache/kafka/tools/StorageTool.class": "org.apache.kafka.tools.StorageTool"}
_PR_SET_PDEATHSIG = 1
_CLIENT_ID = b"spark-ps-kafkakit"
_API_METADATA, _API_CREATE_TOPICS = 3, 19
_ERRORS = {3: "UNKNOWN_TOPIC_OR_PARTITION", 5: "LEADER_NOT_AVAILABLE", 7: "REQUEST_TIMED_OUT",
           36: "TOPIC_ALREADY_EXISTS", 37: "INVALID_PARTITIONS", 38: "INVALID_REPLICATION_FACTOR",
           41: "NOT_CONTROLLER"}


@dataclass(frozen=True)
class BrokerSettings:
    """How the test broker runs.

    Attributes
    ----------
    jars_dir : pathlib.Path
        The broker's classpath (``make kafka``).
    heap : str
        ``-Xmx`` of the broker JVM.
    ready_timeout : float
        Seconds from launch until the broker must list itself in its metadata.
    stop_timeout : float
        Seconds :meth:`KafkaBroker.stop` waits after SIGTERM before SIGKILL.
    poll_interval : float
        Seconds between readiness probes (spent waiting on the child's exit).

    Examples
    --------
    >>> BrokerSettings(heap="256m").heap
    '256m'
    """

    jars_dir: Path = BROKER_JARS_DIR
    heap: str = "512m"
    ready_timeout: float = 60.0
    stop_timeout: float = 20.0
    poll_interval: float = 0.1


#: The settings the tests use.
DEFAULT_SETTINGS = BrokerSettings()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the kernel's pick; another process may take it later).

    Examples
    --------
    >>> 0 < free_port() < 65536
    True
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent(parent: int):
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl

    def preexec() -> None:
        # Runs in the child between fork and exec: only the prctl call and a check, nothing that locks.
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: nobody would stop us
            os._exit(1)

    return preexec


# --------------------------------------------------------------------------- the wire protocol (just enough)


class KafkaProtocolError(RuntimeError):
    """The broker answered a request with an error code, or with bytes we could not parse."""


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, fmt: str):
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return values[0] if len(values) == 1 else values

    def string(self) -> str | None:
        size = self.take(">h")
        if size < 0:
            return None
        self.pos += size
        return self.data[self.pos - size:self.pos].decode()

    def array(self, item) -> list:
        return [item() for _ in range(max(self.take(">i"), 0))]


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">h", len(raw)) + raw


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            raise ConnectionResetError(f"the broker closed the connection after {len(buf)} of {size} bytes")
        buf += chunk
    return bytes(buf)


def _call(address: tuple[str, int], api_key: int, version: int, body: bytes, timeout: float) -> _Reader:
    """One request (header v1, non-flexible versions only) and its response, on a connection of its own."""
    correlation = int.from_bytes(os.urandom(3), "big")
    header = struct.pack(">hhih", api_key, version, correlation, len(_CLIENT_ID)) + _CLIENT_ID
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(header) + len(body)) + header + body)
        size = struct.unpack(">i", _recv_exactly(sock, 4))[0]
        reader = _Reader(_recv_exactly(sock, size))
    if reader.take(">i") != correlation:
        raise KafkaProtocolError(f"api {api_key} v{version}: response for another request (correlation id)")
    return reader


def _metadata(address: tuple[str, int], topics: list[str] | None, timeout: float):
    """Metadata v1: ``(broker node ids, {topic: (error, [(partition, error, leader), ...])})``.

    ``topics=None`` asks for every topic, ``[]`` for none (brokers only).
    """
    body = struct.pack(">i", -1) if topics is None else \
        struct.pack(">i", len(topics)) + b"".join(_string(t) for t in topics)
    r = _call(address, _API_METADATA, 1, body, timeout)

    def broker():
        node = r.take(">i")
        r.string(), r.take(">i"), r.string()  # host, port, rack
        return node

    def partition():
        error, index, leader = r.take(">hii")
        r.array(lambda: r.take(">i")), r.array(lambda: r.take(">i"))  # replicas, isr
        return index, error, leader

    def topic():
        error, name, _internal = r.take(">h"), r.string(), r.take(">b")
        return name, (error, r.array(partition))

    brokers = r.array(broker)
    r.take(">i")  # controller id
    return brokers, dict(r.array(topic))


def _create_topic(address: tuple[str, int], name: str, partitions: int, timeout: float) -> None:
    """CreateTopics v2 for one topic, replication factor 1; raises on any error code."""
    body = (struct.pack(">i", 1) + _string(name) + struct.pack(">ihii", partitions, 1, 0, 0)
            + struct.pack(">ib", int(timeout * 1000), 0))
    r = _call(address, _API_CREATE_TOPICS, 2, body, timeout + 5)
    r.take(">i")  # throttle time
    for topic, error, message in r.array(lambda: (r.string(), r.take(">h"), r.string())):
        if error:
            raise KafkaProtocolError(f"creating topic {topic!r} ({partitions} partitions) failed: "
                                     f"{_ERRORS.get(error, 'error')} ({error}): {message}")


# --------------------------------------------------------------------------- the broker


class KafkaBroker:
    """A running single-node KRaft broker (see the module docstring); start with :func:`kafka_broker`.

    Attributes
    ----------
    bootstrap : str
        ``host:port`` for ``kafka.bootstrap.servers``.
    process : subprocess.Popen
        The broker JVM.
    root : pathlib.Path
        Its directory: ``server.properties``, ``data/``, ``broker.log``.

    Examples
    --------
    >>> with kafka_broker() as broker:                             # doctest: +SKIP
    ...     broker.create_topic("events", partitions=2)
    ...     broker.partition_leaders("events")
    {0: 1, 1: 1}
    """

    NODE_ID = 1

    def __init__(self, settings: BrokerSettings, root: Path, port: int, controller_port: int,
                 process: subprocess.Popen, log_file):
        self.settings, self.root, self.port, self.controller_port = settings, root, port, controller_port
        self.process, self._log_file = process, log_file
        self.bootstrap = f"127.0.0.1:{port}"

    @classmethod
    def start(cls, settings: BrokerSettings = DEFAULT_SETTINGS) -> KafkaBroker:
        """Format a fresh log directory, launch the broker, return once it is ready (or raise, stopped)."""
        jars = sorted(settings.jars_dir.glob("*.jar"))
        if not jars:
            raise FileNotFoundError(f"no Kafka broker jars in {settings.jars_dir}: run `make kafka` "
                                    "(fetches kafka_2.13 and its runtime classpath with mvn)")
        java = shutil.which("java", path=os.path.join(os.environ["JAVA_HOME"], "bin")) \
            if os.environ.get("JAVA_HOME") else shutil.which("java")
        if java is None:
            raise FileNotFoundError("no `java` on the PATH (nor in $JAVA_HOME/bin): the Kafka broker needs a JDK 17")
        classpath = os.pathsep.join(str(p) for p in jars)
        root = Path(tempfile.mkdtemp(prefix="spark-ps-kafka-"))
        port, controller_port = free_port(), free_port()
        props = root / "server.properties"
        props.write_text(_server_properties(cls.NODE_ID, port, controller_port, root / "data"))
        log_file = open(root / "broker.log", "wb")  # closed by stop(), or below if the start fails
        base = [java, f"-Xmx{settings.heap}", "-XX:+UseSerialGC", "-Djava.awt.headless=true",
                "-Dlog4j2.level=INFO", "-cp", classpath]
        broker = None
        try:
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
            # --cluster-id=: a random id may start with "-", which the tool's parser took for an option.
            fmt = subprocess.run([*base, _storage_tool(jars), "format", f"--cluster-id={cluster_id}", "-c", str(props)],
                                 stdout=log_file, stderr=subprocess.STDOUT, timeout=settings.ready_timeout)
            if fmt.returncode != 0:
                raise RuntimeError(f"Kafka StorageTool format exited with {fmt.returncode}:\n{_tail(root)}")
            process = subprocess.Popen([*base, "kafka.Kafka", str(props)], stdout=log_file,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       preexec_fn=_die_with_parent(os.getpid()))
            broker = cls(settings, root, port, controller_port, process, log_file)
            broker._wait_ready()
            return broker
        except BaseException:
            if broker is not None:
                broker.stop(keep_dir=True)
            else:
                log_file.close()
            print(f"Kafka broker did not start; its directory is kept: {root}\n{_tail(root)}")
            raise

    @property
    def address(self) -> tuple[str, int]:
        return "127.0.0.1", self.port

    def _poll(self, what: str, ready) -> None:
        """Call ``ready()`` until it is true; between tries wait on the broker's exit (it must not die)."""
        deadline = time.monotonic() + self.settings.ready_timeout
        last = None
        while True:
            try:
                if ready():
                    return
            except (OSError, struct.error) as exc:  # not listening yet, or a reply cut short while it starts
                last = exc
            if time.monotonic() > deadline:
                raise TimeoutError(f"Kafka broker at {self.bootstrap}: {what} not within "
                                   f"{self.settings.ready_timeout:g} s (last probe error: {last!r})")
            try:
                code = self.process.wait(timeout=self.settings.poll_interval)
            except subprocess.TimeoutExpired:
                continue
            raise RuntimeError(f"Kafka broker exited with {code} while waiting for {what}:\n{_tail(self.root)}")

    def _wait_ready(self) -> None:
        self._poll("the broker listed in its own metadata (registered and unfenced)",
                   lambda: self.NODE_ID in _metadata(self.address, [], timeout=5)[0])

    def create_topic(self, name: str, partitions: int) -> None:
        """Create ``name`` (replication 1) and wait until each of its partitions has a leader.

        Raises
        ------
        KafkaProtocolError
            If the broker refuses the topic (e.g. it exists already).
        """
        _create_topic(self.address, name, partitions, timeout=30)
        self._poll(f"leaders for the {partitions} partitions of topic {name!r}",
                   lambda: len(self.partition_leaders(name)) == partitions)

    def partition_leaders(self, topic: str) -> dict[int, int]:
        """``{partition: leader node}`` of the partitions of ``topic`` that have a leader now."""
        _, topics = _metadata(self.address, [topic], timeout=5)
        error, partitions = topics.get(topic, (3, []))
        if error:
            return {}
        return {index: leader for index, perr, leader in partitions if perr == 0 and leader >= 0}

    def stop(self, *, keep_dir: bool = False) -> int | None:
        """SIGTERM, then SIGKILL after ``stop_timeout``; delete its directory unless ``keep_dir``; its exit code."""
        code = self.process.poll()
        if code is None:
            self.process.terminate()
            try:
                code = self.process.wait(timeout=self.settings.stop_timeout)
            except subprocess.TimeoutExpired:
                print(f"Kafka broker pid {self.process.pid} ignored SIGTERM for {self.settings.stop_timeout:g} s: "
                      "SIGKILL")
                self.process.kill()
                code = self.process.wait()
        self._log_file.close()
        if not keep_dir:
            shutil.rmtree(self.root, ignore_errors=True)
        return code


@contextmanager
def kafka_broker(settings: BrokerSettings = DEFAULT_SETTINGS) -> Iterator[KafkaBroker]:
    """A ready broker for the ``with`` block; stopped and its directory deleted after (kept if the block failed).

    Examples
    --------
    >>> with kafka_broker() as broker:                             # doctest: +SKIP
    ...     broker.bootstrap
    '127.0.0.1:...'
    """
    broker = KafkaBroker.start(settings)
    failed = True
    try:
        yield broker
        failed = False
    finally:
        if failed:
            print(f"Kafka broker log kept in {broker.root / 'broker.log'}")
        broker.stop(keep_dir=failed)


def _storage_tool(jars: list[Path]) -> str:
    for jar in jars:
        with zipfile.ZipFile(jar) as archive:
            for entry in _STORAGE_TOOLS.keys() & set(archive.namelist()):
                return _STORAGE_TOOLS[entry]
    raise FileNotFoundError(f"no Kafka StorageTool class ({', '.join(_STORAGE_TOOLS.values())}) in the "
                            f"broker's jars ({jars[0].parent}): is it a Kafka 3.x/4.x classpath?")


def _server_properties(node: int, port: int, controller_port: int, data: Path) -> str:
    settings = {
        "process.roles": "broker,controller",
        "node.id": node,
        "controller.quorum.voters": f"{node}@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": data,
        "auto.create.topics.enable": "false",
        # One node: every internal topic with one replica, and no rebalance delay.
        "offsets.topic.replication.factor": 1,
        "offsets.topic.num.partitions": 1,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1,
        "group.initial.rebalance.delay.ms": 0,
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def _tail(root: Path, lines: int = 40) -> str:
    path = root / "broker.log"
    if not path.is_file():
        return "(no broker.log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
