"""The nodes' server properties: one function for the single broker and a cluster member."""

from pathlib import Path

import pytest

from deeptrust.devtools.local_broker import (
    LocalBroker,
    NodePorts,
    replication_for,
    server_properties,
)
from deeptrust.devtools.local_cluster import LocalCluster

QUORUM = (NodePorts(9092, 9093), NodePorts(9094, 9095), NodePorts(9096, 9097))


def test_node_2_of_3_names_every_voter_its_own_ports_and_three_copies_two_in_sync():
    settings = server_properties(Path("/c/node-2/data"), 2, QUORUM)

    assert settings["node.id"] == "2"
    assert settings["process.roles"] == "broker,controller"
    assert settings["controller.quorum.voters"] == (
        "1@127.0.0.1:9093,2@127.0.0.1:9095,3@127.0.0.1:9097"
    )
    assert settings["listeners"] == "PLAINTEXT://127.0.0.1:9094,CONTROLLER://127.0.0.1:9095"
    assert settings["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9094"
    assert settings["log.dirs"] == "/c/node-2/data"
    assert settings["default.replication.factor"] == "3"
    assert settings["min.insync.replicas"] == "2"
    assert settings["offsets.topic.replication.factor"] == "3"
    assert settings["transaction.state.log.replication.factor"] == "3"
    assert settings["transaction.state.log.min.isr"] == "2"
    assert settings["share.coordinator.state.topic.replication.factor"] == "3"
    assert settings["share.coordinator.state.topic.min.isr"] == "2"


def test_a_quorum_of_one_is_the_single_development_broker():
    settings = server_properties(Path("/b/data"), 1, (NodePorts(9092, 9093),))

    assert settings["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert settings["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert settings["default.replication.factor"] == "1"
    assert settings["min.insync.replicas"] == "1"
    assert settings["offsets.topic.replication.factor"] == "1"
    assert settings["transaction.state.log.min.isr"] == "1"


@pytest.mark.parametrize(
    ("nodes", "expected"), [(1, (1, 1)), (2, (2, 1)), (3, (3, 2)), (5, (3, 2))]
)
def test_replication_is_three_copies_two_in_sync_once_there_are_three_nodes(nodes, expected):
    assert replication_for(nodes) == expected


def test_a_cluster_on_consecutive_ports_gives_each_node_a_pair_and_its_own_home():
    cluster = LocalCluster.on_ports(Path("/c"), 9092, 3)

    assert cluster.nodes == QUORUM
    assert cluster.bootstrap_servers == "127.0.0.1:9092,127.0.0.1:9094,127.0.0.1:9096"
    node = cluster.node(3)
    assert (node.home, node.port, node.controller_port, node.node_id) == (
        Path("/c/node-3"),
        9096,
        9097,
        3,
    )
    assert node.quorum == QUORUM
    with pytest.raises(ValueError, match="no node 4"):
        cluster.node(4)


def test_a_broker_whose_ports_are_not_its_place_in_the_quorum_is_refused():
    with pytest.raises(ValueError, match="node 2"):
        LocalBroker(Path("/c/node-2"), port=9096, controller_port=9097, node_id=2, quorum=QUORUM)
