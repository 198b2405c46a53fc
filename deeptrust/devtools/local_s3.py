"""A real S3 API server on loopback for tests and the demo: moto's standalone server.

moto (Apache-2.0, from PyPI) serves the S3 REST API over HTTP, signatures and all, so the
code under test talks to it through boto3 exactly as it would to AWS or Ceph. It keeps its
objects in memory: one server per test session or demo run.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deeptrust.devtools.local_broker import accepts_connections, free_port

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "deeptrust-local",
    "AWS_SECRET_ACCESS_KEY": "deeptrust-local-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
"""What the server accepts and what clients of it need in their environment."""


class LocalS3Error(RuntimeError):
    """The server did not start."""


@dataclass
class LocalS3:
    """One moto server process on a free loopback port, with its log in ``home``."""

    home: Path
    port: int = field(default_factory=free_port)
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def endpoint_url(self) -> str:
        """Where clients send S3 requests."""
        return f"http://127.0.0.1:{self.port}"

    def environment(self, bucket: str) -> dict[str, str]:
        """The variables that point a DeepTrust process at ``bucket`` on this server."""
        return {
            **CREDENTIALS,
            "DEEPTRUST_S3_BUCKET": bucket,
            "DEEPTRUST_S3_ENDPOINT_URL": self.endpoint_url,
        }

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the server and wait until it answers."""
        self.home.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        with (self.home / "moto.log").open("ab") as log:
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **CREDENTIALS},
            )
        deadline = time.monotonic() + timeout_s
        while not accepts_connections(self.port):
            if self._process.poll() is not None:
                raise LocalS3Error(f"moto exited ({self._process.returncode}): {self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise LocalS3Error(f"moto not answering after {timeout_s}s: {self.log_tail()}")
            time.sleep(0.1)

    def client(self) -> Any:
        """A boto3 S3 client for this server (for setting buckets up, and for checks)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
        )

    def create_bucket(self, bucket: str) -> None:
        """Create ``bucket`` (an existing one is fine)."""
        client = self.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=bucket)

    def stop(self) -> None:
        """Stop the server; its objects are gone."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def log_tail(self, lines: int = 20) -> str:
        """The end of the server's log."""
        path = self.home / "moto.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
