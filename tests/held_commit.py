"""A detect stage whose transaction is held open after its records reached the broker.

Run as ``python -m tests.held_commit stage run detect --metrics-port N`` (what the CLI takes;
``HOLD_FILE`` and ``HOLD_AFTER`` in the environment): the real runtime on the real broker,
with one change to its producer. Once ``HOLD_AFTER`` transactions have committed, the next
one produces its records, flushes them to the broker (where they sit in the open
transaction) and writes their image ids to ``HOLD_FILE``; its commit then never comes. The
test kills the process at that point: the crash between produce and commit that
exactly-once must survive.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from deeptrust.processors.registry import build_stage
from deeptrust.processors.settings import ProcessorSettings
from deeptrust.streams.atomic_file import write_atomically
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.metrics import StageMetrics
from deeptrust.streams.runner import RunnerSettings, StageRunner
from deeptrust.streams.serve import serve_until_signalled
from deeptrust.streams.service import KafkaClients


class HeldProducer(Producer):
    """Commits ``hold_after`` transactions, then holds the next one open for good."""

    def __init__(self, config: dict[str, Any], hold_after: int, hold_file: Path) -> None:
        super().__init__(config)
        self.commits = 0
        self.hold_after = hold_after
        self.hold_file = hold_file
        self.keys: list[str] = []

    def begin_transaction(self, *args: Any) -> None:
        self.keys = []
        super().begin_transaction(*args)

    def produce(self, topic: str, *args: Any, **kwargs: Any) -> None:
        if topic.endswith("detected.v1"):
            self.keys.append(kwargs["key"].decode())
        super().produce(topic, *args, **kwargs)

    def commit_transaction(self, *args: Any) -> None:
        if self.commits < self.hold_after:
            self.commits += 1
            super().commit_transaction(*args)
            return
        self.flush(30)  # the records are on the broker now, in the open transaction
        held = "\n".join(self.keys).encode()
        write_atomically(self.hold_file, lambda file: file.write(held))
        threading.Event().wait()  # the test kills the process here


class HeldClients(KafkaClients):
    def __init__(self, hold_after: int, hold_file: Path) -> None:
        self.hold_after = hold_after
        self.hold_file = hold_file

    def producer(self, config: dict[str, Any]) -> Producer:
        return HeldProducer(config, self.hold_after, self.hold_file)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", nargs="*", help="stage run detect, as the CLI is called")
    parser.add_argument("--metrics-port", type=int, required=True)
    port = parser.parse_args().metrics_port
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = RunnerSettings()
    metrics = StageMetrics("detect")
    clients = HeldClients(int(os.environ["HOLD_AFTER"]), Path(os.environ["HOLD_FILE"]))
    runner = StageRunner(
        build_stage("detect", ProcessorSettings()), KafkaSettings(), settings, metrics, clients
    )
    serve_until_signalled(metrics, port, runner.run, settings.max_wait_s)


if __name__ == "__main__":
    main()
