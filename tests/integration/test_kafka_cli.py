"""`deeptrust kafka up | status | down` manage a real broker of their own."""

import subprocess
import sys

import pytest

from streams.local_broker import free_port

pytestmark = pytest.mark.integration


def deeptrust(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deeptrust.cli", *args],
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
