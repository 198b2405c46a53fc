"""`deeptrust-dev kafka up | status | down` manage a real broker of their own."""

import subprocess
import sys

import pytest

from deeptrust.devtools.local_broker import free_port

pytestmark = pytest.mark.integration


def deeptrust(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deeptrust.devtools.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
    )


def test_up_status_down(tmp_path):
    where = ["--home", str(tmp_path / "kafka"), "--port", str(free_port())]
    up = deeptrust("kafka", "up", *where)
    assert up.returncode == 0, up.stderr
    assert "kafka running at 127.0.0.1:" in up.stdout
    try:
        assert deeptrust("kafka", "status", *where).returncode == 0
        assert deeptrust("kafka", "up", *where).returncode == 0, "up is idempotent"
    finally:
        down = deeptrust("kafka", "down", *where)
    assert down.returncode == 0, down.stderr
    status = deeptrust("kafka", "status", *where)
    assert status.returncode == 1
    assert "not running" in status.stdout


def test_a_rolling_restart_needs_a_cluster(tmp_path):
    restart = deeptrust("kafka", "restart", "--rolling", "--home", str(tmp_path / "kafka"))
    assert restart.returncode != 0
    assert "needs a cluster" in restart.stderr


def test_up_status_down_a_cluster_of_three(tmp_path):
    port = free_port()
    where = ["--home", str(tmp_path / "kafka"), "--port", str(port)]
    up = deeptrust("kafka", "up", "--brokers", "3", *where)
    assert up.returncode == 0, up.stderr
    servers = f"127.0.0.1:{port},127.0.0.1:{port + 2},127.0.0.1:{port + 4}"
    assert f"kafka cluster running at {servers}" in up.stdout
    try:
        status = deeptrust("kafka", "status", *where)
        assert status.returncode == 0, status.stderr
        for node, node_port in ((1, port), (2, port + 2), (3, port + 4)):
            assert f"node {node} at 127.0.0.1:{node_port}: running" in status.stdout
        assert "registered brokers: 1, 2, 3; under-replicated partitions: 0" in status.stdout
        assert deeptrust("kafka", "up", *where).returncode == 0, "up finds the cluster again"
        other = deeptrust("kafka", "up", "--brokers", "2", *where)
        assert other.returncode != 0
        assert "holds a cluster of 3" in other.stderr
    finally:
        down = deeptrust("kafka", "down", *where)
    assert down.returncode == 0, down.stderr
    status = deeptrust("kafka", "status", *where)
    assert status.returncode == 1
    assert f"node 3 at 127.0.0.1:{port + 4}: not running" in status.stdout
