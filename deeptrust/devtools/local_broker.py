"""A real single-node Apache Kafka broker (KRaft) for development, tests and the demo.

Kafka's jars come from Maven Central through Maven (``docker/kafka/pom.xml`` lists them)
and are cached under ``~/.cache/deeptrust``; Maven's own cache (``~/.m2``) makes the second
fetch offline. The broker runs detached from the command that started it, with its state,
log and pid file in one home directory, so ``deeptrust-dev kafka up`` and ``down`` can be
separate commands.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient

from deeptrust.cache import CACHE_DIR
from deeptrust.devtools.detached import DetachedProcess
from deeptrust.devtools.secured_kafka import BrokerSecurity

REPO_ROOT = Path(__file__).resolve().parents[2]
KAFKA_DIR = Path(os.environ.get("DEEPTRUST_KAFKA_BUILD_DIR", REPO_ROOT / "docker" / "kafka"))
MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
CLASS_ARCHIVE = "kafka-server.jsa"


class BrokerError(RuntimeError):
    """The broker could not be fetched, started or stopped."""


def _libs_dir(pom: Path = KAFKA_DIR / "pom.xml") -> Path:
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
    return CACHE_DIR / f"kafka-{digest}" / "libs"


def broker_classpath(pom: Path = KAFKA_DIR / "pom.xml") -> Path:
    """Return a directory holding the broker's jars, fetching them with Maven if needed."""
    libs = _libs_dir(pom)
    if (libs / ".complete").exists():
        return libs
    if libs.exists():
        shutil.rmtree(libs)
    command = [
        "mvn",
        "-q",
        "-B",
        "-f",
        str(pom),
        f"{MAVEN_DEPENDENCY_PLUGIN}:copy-dependencies",
        f"-DoutputDirectory={libs}",
        "-DincludeScope=runtime",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BrokerError(f"Maven could not fetch Kafka's jars:\n{result.stdout}{result.stderr}")
    (libs / ".complete").touch()
    return libs


def free_port() -> int:
    """Return a TCP port on the loopback interface that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class NodePorts:
    """The two loopback ports of one KRaft node: clients', and the controller quorum's."""

    port: int
    controller_port: int


def replication_for(nodes: int) -> tuple[int, int]:
    """Return (replication factor, min in-sync replicas) for a cluster of ``nodes``.

    Three copies with two in sync (a write survives one node down) once there are three
    nodes; a single node keeps one copy, which is all it has.
    """
    replication = min(3, nodes)
    return replication, max(1, replication - 1)


def server_properties(data_dir: Path, node_id: int, quorum: Sequence[NodePorts]) -> dict[str, str]:
    """The settings of node ``node_id`` (1-based) of a combined broker+controller quorum.

    ``quorum[i]`` holds node ``i + 1``'s ports; every node is a voter. A one-node quorum is
    the single development broker; for more nodes the internal topics and new topics get
    :func:`replication_for`'s replication and minimum ISR.
    """
    own = quorum[node_id - 1]
    replication, min_isr = (str(n) for n in replication_for(len(quorum)))
    voters = ",".join(
        f"{voter}@127.0.0.1:{ports.controller_port}" for voter, ports in enumerate(quorum, 1)
    )
    return {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "listeners": f"PLAINTEXT://127.0.0.1:{own.port},CONTROLLER://127.0.0.1:{own.controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{own.port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.quorum.voters": voters,
        "log.dirs": str(data_dir),
        "num.partitions": "6",
        "default.replication.factor": replication,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": replication,
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": replication,
        "transaction.state.log.min.isr": min_isr,
        "transaction.state.log.num.partitions": "1",
        "share.coordinator.state.topic.replication.factor": replication,
        "share.coordinator.state.topic.min.isr": min_isr,
        "group.initial.rebalance.delay.ms": "0",
        "log.cleaner.enable": "true",
    }


def _properties_file(settings: dict[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in settings.items())


@dataclass(frozen=True)
class LocalBroker:
    """One broker process whose state lives in ``home``.

    Alone by default; as node ``node_id`` of a
    :class:`deeptrust.devtools.local_cluster.LocalCluster`
    it is given the whole ``quorum`` and the cluster's shared ``cluster_id``.
    """

    home: Path
    port: int = 9092
    controller_port: int = 9093
    heap: str = "512m"
    node_id: int = 1
    quorum: tuple[NodePorts, ...] = ()
    cluster_id: str | None = None
    jvm_options: tuple[str, ...] = ()
    share_classes: bool = False
    """Start from a class-data archive of the server's classes, recorded by the first run
    that finds none: a restart takes about half as long."""
    security: BrokerSecurity | None = None
    """Clients on SASL_SSL only (SCRAM, TLS, ACLs) instead of PLAINTEXT; one node only."""

    def __post_init__(self) -> None:
        if self.quorum and self.quorum[self.node_id - 1] != self.ports:
            raise ValueError(f"node {self.node_id}'s ports are not its place in the quorum")

    @property
    def ports(self) -> NodePorts:
        """This node's client and controller ports."""
        return NodePorts(self.port, self.controller_port)

    @property
    def bootstrap_servers(self) -> str:
        """The address clients connect to."""
        return f"127.0.0.1:{self.port}"

    @property
    def _process(self) -> DetachedProcess:
        return DetachedProcess(self.home, "broker")

    @property
    def log_file(self) -> Path:
        """Where the broker writes its log."""
        return self._process.log_file

    def pid(self) -> int | None:
        """Return the broker's pid if it is running."""
        return self._process.pid()

    def start(self, timeout_s: float = 90.0) -> None:
        """Start the broker (formatting its storage the first time) and wait until it answers."""
        self.launch()
        self.wait_ready(timeout_s)

    def launch(self) -> None:
        """Start the process (formatting its storage the first time) without waiting.

        The nodes of a quorum are launched together: none answers before a majority runs.
        """
        if self.pid() is not None:
            return
        libs = broker_classpath()
        self.home.mkdir(parents=True, exist_ok=True)
        config = self.home / "server.properties"
        quorum = self.quorum or (self.ports,)
        properties = server_properties(self.data_dir, self.node_id, quorum)
        format_extra: list[str] = []
        if self.security is not None:
            if len(quorum) > 1:
                raise BrokerError("a secured broker runs alone, not in a quorum")
            self.security.prepare()
            properties |= self.security.listener_properties(self.port, self.controller_port)
            format_extra = self.security.format_arguments()
        config.write_text(_properties_file(properties))
        java = [
            "java",
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            *self.jvm_options,
            "-cp",
            f"{libs}/*",
            f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2.properties'}",
        ]
        if not (self.data_dir / "meta.properties").exists():
            cluster_id = self.cluster_id or new_cluster_id()
            subprocess.run(
                [
                    *java,
                    *("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config)),
                    *format_extra,
                ],
                capture_output=True,
                check=True,
            )
        self._process.spawn([*java, *self._class_sharing(libs), "kafka.Kafka", str(config)])

    def _class_sharing(self, libs: Path) -> list[str]:
        if not self.share_classes:
            return []
        archive = libs.parent / CLASS_ARCHIVE
        if archive.exists():
            return [f"-XX:SharedArchiveFile={archive}"]
        return [f"-XX:ArchiveClassesAtExit={self.home / CLASS_ARCHIVE}"]

    @property
    def data_dir(self) -> Path:
        """The broker's log directory (its partitions and metadata log)."""
        return self.home / "data"

    def wait_ready(self, timeout_s: float) -> None:
        """Block until the broker serves metadata, or raise with the log's tail."""
        deadline = time.monotonic() + timeout_s
        while not accepts_connections(self.port):
            if self.pid() is None:
                raise BrokerError(f"broker exited during start-up:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise BrokerError(f"broker not listening after {timeout_s}s:\n{self.log_tail()}")
            time.sleep(0.2)
        admin = AdminClient(self.admin_config())
        while time.monotonic() < deadline:
            if self.pid() is None:
                raise BrokerError(f"broker exited during start-up:\n{self.log_tail()}")
            try:
                if admin.list_topics(timeout=2).brokers:
                    return
            except Exception:  # noqa: S112 - not answering yet is the expected state here
                continue
        raise BrokerError(f"broker not ready after {timeout_s}s:\n{self.log_tail()}")

    def admin_config(self) -> dict[str, str | int | float | bool]:
        """A super user's client settings for this broker."""
        if self.security is None:
            return {"bootstrap.servers": self.bootstrap_servers}
        return self.security.admin_settings(self.bootstrap_servers).client_config()

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stop the broker gracefully (SIGTERM), killing it if it does not exit in time."""
        self._process.stop(timeout_s)
        if self.share_classes:
            _publish_archive(self.home / CLASS_ARCHIVE, _libs_dir().parent / CLASS_ARCHIVE)

    def log_tail(self, lines: int = 40) -> str:
        """The end of the broker's log, for error messages."""
        return self._process.log_tail(lines)


def _publish_archive(recorded: Path, archive: Path) -> None:
    """Move the archive a server wrote at exit into the cache, unless one is there already."""
    if not recorded.exists():
        return
    if not archive.exists():
        partial = archive.with_name(f"{archive.name}.{os.getpid()}.partial")
        shutil.copyfile(recorded, partial)
        os.replace(partial, archive)
    recorded.unlink()


def new_cluster_id() -> str:
    """A fresh id for ``kafka-storage format`` (22 characters, like Kafka's own)."""
    return uuid.uuid4().bytes.hex()[:22]


def accepts_connections(port: int) -> bool:
    """Tell whether something listens on ``port`` of the loopback interface."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
