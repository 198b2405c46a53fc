"""A real N-node Kafka cluster (KRaft, combined broker+controller) on loopback ports.

For the fault tests and for seeing a rolling restart: each node is a
:class:`~deeptrust.devtools.local_broker.LocalBroker` with its own home under the cluster's, all of
them
voters of one controller quorum, formatted with one cluster id. With three nodes, the
internal topics and new topics keep three copies with two in sync, so one node at a time
can go down without stopping writes that want ``acks=all``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient, ClusterMetadata  # type: ignore[attr-defined]

from deeptrust.devtools.local_broker import (
    BrokerError,
    LocalBroker,
    NodePorts,
    accepts_connections,
    free_port,
    new_cluster_id,
)

JVM_OPTIONS = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")
"""Quick JIT only and one GC thread: a node restarts about twice as fast on two cores (and
twice again from the shared class archive), and a rolling restart is mostly restarts."""

LAYOUT_FILE = "cluster.json"
"""In the cluster's home: its id and its nodes' ports, so later commands find them."""


@dataclass(frozen=True)
class ClusterHealth:
    """What the cluster's metadata says: who is registered, which partitions lack a copy."""

    brokers: frozenset[int]
    under_replicated: tuple[str, ...]
    """``topic/partition`` for each partition whose in-sync replicas are fewer than its replicas."""


@dataclass(frozen=True)
class LocalCluster:
    """``len(nodes)`` broker+controller nodes; node ids are 1-based, ``nodes[i]`` is node i+1."""

    home: Path
    nodes: tuple[NodePorts, ...]
    heap: str = "256m"

    @classmethod
    def on_ports(cls, home: Path, first_port: int, brokers: int) -> LocalCluster:
        """Node ``i`` (1-based) listens on ``first_port + 2(i-1)``, its controller on the next."""
        first = [first_port + 2 * i for i in range(brokers)]
        return cls(home, tuple(NodePorts(port, port + 1) for port in first))

    @classmethod
    def on_free_ports(cls, home: Path, brokers: int = 3) -> LocalCluster:
        """A cluster on ports free right now (for tests)."""
        return cls(home, tuple(NodePorts(free_port(), free_port()) for _ in range(brokers)))

    @classmethod
    def load(cls, home: Path) -> LocalCluster | None:
        """The cluster recorded in ``home`` by an earlier start, or None if there is none."""
        layout = home / LAYOUT_FILE
        if not layout.exists():
            return None
        recorded = json.loads(layout.read_text())
        return cls(home, tuple(NodePorts(*ports) for ports in recorded["nodes"]))

    @property
    def node_ids(self) -> range:
        """The nodes' ids, 1 to N: what Kafka's metadata calls them (leader, replicas, ISR)."""
        return range(1, len(self.nodes) + 1)

    @property
    def bootstrap_servers(self) -> str:
        """Every node's client address, comma-separated."""
        return ",".join(f"127.0.0.1:{ports.port}" for ports in self.nodes)

    def node(self, node_id: int) -> LocalBroker:
        """The broker process of node ``node_id``."""
        if node_id not in self.node_ids:
            raise ValueError(f"no node {node_id} in a cluster of {len(self.nodes)}")
        ports = self.nodes[node_id - 1]
        return LocalBroker(
            self.home / f"node-{node_id}",
            port=ports.port,
            controller_port=ports.controller_port,
            heap=self.heap,
            node_id=node_id,
            quorum=self.nodes,
            cluster_id=self._cluster_id(),
            jvm_options=JVM_OPTIONS,
            share_classes=True,
        )

    def start(self, timeout_s: float = 180.0) -> None:
        """Start every node that is not running; return once :meth:`wait_ready` holds."""
        self._record_layout()
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda node_id: self.node(node_id).launch(), self.node_ids))
        self.wait_ready(timeout_s)

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stop every node at once (stopped one by one, the last would wait for a quorum)."""
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda node_id: self.node(node_id).stop(timeout_s), self.node_ids))

    def stop_node(self, node_id: int, timeout_s: float = 60.0) -> None:
        """Stop one node gracefully: it hands its leaderships over before it exits."""
        self.node(node_id).stop(timeout_s)

    def start_node(self, node_id: int, timeout_s: float = 90.0) -> None:
        """Start one node and wait until it answers on its port; not until it has caught up."""
        self._record_layout()
        self.node(node_id).start(timeout_s)

    def restart_rolling(
        self, timeout_s: float = 120.0, while_down: Callable[[int], None] | None = None
    ) -> None:
        """Restart the nodes one at a time, waiting for full ISRs before the next goes down.

        ``while_down(node_id)`` runs while that node is stopped (a test checks that writes
        still commit then).
        """
        self.wait_ready(timeout_s)
        for node_id in self.node_ids:
            self.stop_node(node_id)
            if while_down is not None:
                while_down(node_id)
            self.start_node(node_id, timeout_s)
            self.wait_ready(timeout_s)

    def health(self, timeout_s: float = 5.0) -> ClusterHealth:
        """Ask the cluster (any node that answers) for its brokers and partitions."""
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
        return _health(admin.list_topics(timeout=timeout_s))

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Block until all N brokers are registered and no partition is under-replicated.

        Raises :class:`BrokerError` if a node's process exits or the deadline passes.
        """
        deadline = time.monotonic() + timeout_s
        # Every node listening first: a client sent to a closed port only logs refusals.
        while not all(accepts_connections(ports.port) for ports in self.nodes):
            self._check_alive()
            if time.monotonic() > deadline:
                raise BrokerError(f"not every node listens after {timeout_s}s")
            time.sleep(0.2)
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
        health = ClusterHealth(frozenset(), ())
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                health = _health(admin.list_topics(timeout=2))
            except Exception:  # noqa: S112 - not answering yet is the expected state here
                continue
            if health.brokers == set(self.node_ids) and not health.under_replicated:
                return
            time.sleep(0.2)
        raise BrokerError(
            f"cluster not ready after {timeout_s}s: brokers {sorted(health.brokers)} of "
            f"{list(self.node_ids)}, under-replicated {list(health.under_replicated)}"
        )

    def _check_alive(self) -> None:
        for node_id in self.node_ids:
            node = self.node(node_id)
            if node.pid() is None:
                raise BrokerError(f"node {node_id} is not running:\n{node.log_tail()}")

    def _record_layout(self) -> None:
        layout = self.home / LAYOUT_FILE
        nodes = [[ports.port, ports.controller_port] for ports in self.nodes]
        if layout.exists():
            recorded = json.loads(layout.read_text())["nodes"]
            if recorded != nodes:
                raise BrokerError(f"{self.home} holds a cluster on other ports: {recorded}")
            return
        self.home.mkdir(parents=True, exist_ok=True)
        layout.write_text(json.dumps({"cluster_id": new_cluster_id(), "nodes": nodes}) + "\n")

    def _cluster_id(self) -> str | None:
        layout = self.home / LAYOUT_FILE
        return str(json.loads(layout.read_text())["cluster_id"]) if layout.exists() else None


def _health(metadata: ClusterMetadata) -> ClusterHealth:
    """Read who is registered and which partitions lack an in-sync copy.

    A partition is under-replicated when its ISR is not all of its replicas (an offline one
    has an empty ISR); a topic whose metadata is an error counts as all of it.
    """
    under = [f"{topic.topic}/*" for topic in metadata.topics.values() if topic.error is not None]
    under += [
        f"{topic.topic}/{partition.id}"
        for topic in metadata.topics.values()
        for partition in topic.partitions.values()
        if set(partition.isrs) != set(partition.replicas)
    ]
    return ClusterHealth(frozenset(metadata.brokers), tuple(sorted(under)))
