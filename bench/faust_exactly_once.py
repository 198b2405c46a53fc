"""faust-streaming's exactly-once agent through the faults the project's stages are tested on.

Run: ``make bench-faust`` (``.venv/bin/python bench/faust_exactly_once.py --faust-python
.venv-faust/bin/python``); writes ``bench/results/faust_exactly_once.md``. On a broker of its
own (the project's local KRaft broker), for each scenario it creates a 3-partition input and
output topic, starts ``bench/faust_relay.py`` (one agent, ``processing_guarantee=
"exactly_once"``, one output per input keyed by its id) in faust's own environment, sends
``--events`` ids at ``--rate`` a second, and meanwhile either SIGKILLs the worker
``--kills`` times (restarting it at once under the same app and instance id, as a supervisor
would) or stops the broker for 10 s or 90 s. Then it waits until the group has committed
every input, reads the output ``read_committed`` and counts lost and duplicated ids, and says
what became of the worker. A worker that exits is restarted by the harness and counted; one
that makes no progress for ``--stall`` seconds is killed, restarted and counted as stalled.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from publish import publish

from deeptrust.devtools.local_broker import LocalBroker, broker_classpath, free_port
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.producer import paced
from deeptrust.streams.tail import TopicTail

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "faust_exactly_once.md"
RELAY = ROOT / "bench" / "faust_relay.py"
PARTITIONS = 3
QUIET = {"log_level": 2}  # librdkafka's connection errors while the broker is down, by design


@dataclass(frozen=True)
class Scenario:
    """One fault pattern (SIGKILLs of the worker, or one broker outage) and one relay."""

    name: str
    kills: int = 0
    outage_s: float = 0.0
    consume_sink: bool = False
    """Run the relay with its second agent on the sink (``bench/faust_relay.py`` says why)."""

    @property
    def relay(self) -> str:
        """The relay, in words."""
        return "sink also consumed" if self.consume_sink else "as written (#177)"


@dataclass
class Worker:
    """The faust worker, (re)started under one app id; it counts what happened to it."""

    python: str
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    exits: list[int] = field(default_factory=list)
    """Exit codes of the times it stopped by itself (not killed by the harness)."""
    stalls: int = 0

    def start(self) -> None:
        """Start a fresh worker process, its output appended to the scenario's log."""
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [self.python, str(RELAY), "worker", "-l", "info", "--without-web"],
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL the worker and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def supervise(self) -> None:
        """Restart the worker if it exited by itself, as Kubernetes restarts a pod."""
        if self.process is not None and (code := self.process.poll()) is not None:
            self.exits.append(code)
            print(f"  worker exited by itself (rc {code}); restarting it", flush=True)
            self.start()

    def stop(self) -> None:
        """Stop the worker (SIGTERM, then SIGKILL after 30 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_lines(self, level: str) -> int:
        """How many lines of the worker's log are at ``level`` (``ERROR``, ``WARNING``)."""
        lines = self.log.read_text(errors="replace").splitlines()
        return sum(f"[{level}]" in line for line in lines)


class Progress:
    """The group's committed input offsets, summed: how many inputs faust says it is done with."""

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        """Ask as the group (without joining it) read_uncommitted, so no pending commit blocks."""
        self._consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": group, **QUIET}
            | {"isolation.level": "read_uncommitted", "enable.auto.commit": False}
        )
        self._partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]

    def done(self) -> int | None:
        """Inputs committed so far, or None while the broker does not answer."""
        try:
            committed = self._consumer.committed(self._partitions, timeout=5)
        except KafkaException:
            return None
        return sum(max(tp.offset, 0) for tp in committed)

    def close(self) -> None:
        """Close the consumer."""
        self._consumer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--faust-python", default=str(ROOT / ".venv-faust" / "bin" / "python"))
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=50.0, help="inputs a second")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--stall", type=float, default=120.0, help="seconds without progress")
    parser.add_argument("--only", default="", help="run the scenarios whose name has this")
    parser.add_argument("--logs", type=Path, help="keep the workers' logs in this folder")
    args = parser.parse_args()
    scenarios = [
        scenario
        for consume_sink in (False, True)
        for scenario in (
            Scenario(f"SIGKILL x{args.kills}", kills=args.kills, consume_sink=consume_sink),
            Scenario("broker down 10 s", outage_s=10.0, consume_sink=consume_sink),
            Scenario("broker down 90 s", outage_s=90.0, consume_sink=consume_sink),
        )
    ]
    scenarios = [s for s in scenarios if args.only in f"{s.name}, {s.relay}"]
    with tempfile.TemporaryDirectory(prefix="faust-eos-") as scratch:
        broker = LocalBroker(Path(scratch) / "kafka", port=free_port(), controller_port=free_port())
        broker.start(timeout_s=180)
        try:
            rows = [run(broker, Path(scratch), s, args) for s in scenarios]
        finally:
            broker.stop()
    lines = report(args, rows)
    if args.only:  # a partial run leaves the full one's page alone
        print("\n".join(lines))
    else:
        publish(RESULTS, lines)


def run(broker: LocalBroker, scratch: Path, scenario: Scenario, args: argparse.Namespace) -> dict:
    """One scenario on fresh topics and a fresh app id; its row of the table."""
    print(f"{scenario.name}, relay {scenario.relay}:", flush=True)
    app_id = f"relay-{uuid.uuid4().hex[:8]}"
    source, sink = f"{app_id}.in", f"{app_id}.out"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    created = admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in (source, sink)])
    for future in created.values():
        future.result()
    env = {
        "FAUST_RELAY_APP_ID": app_id,
        "FAUST_RELAY_BROKER": broker.bootstrap_servers,
        "FAUST_RELAY_DATADIR": str(scratch / app_id),
        "FAUST_RELAY_SOURCE": source,
        "FAUST_RELAY_SINK": sink,
        "FAUST_RELAY_CONSUME_SINK": "1" if scenario.consume_sink else "0",
    }
    worker = Worker(args.faust_python, env, (args.logs or scratch) / f"{app_id}.log")
    progress = Progress(broker.bootstrap_servers, app_id, source)
    ids = [f"{app_id}-{i}" for i in range(args.events)]
    started = time.monotonic()
    worker.start()
    failed: list[str] = []
    sending = threading.Thread(
        target=produce, args=(broker.bootstrap_servers, source, ids, args.rate, failed)
    )
    sending.start()
    try:
        if scenario.kills:
            kill_repeatedly(worker, progress, scenario.kills, args.events / args.rate, len(ids))
        else:
            cut_off(broker, worker, progress, scenario.outage_s, len(ids))
        sending.join()
        finished = drain(worker, progress, len(ids), args.stall)
        outputs, settled = read_values(broker.bootstrap_servers, sink, "read_committed")
        on_topic, _ = read_values(broker.bootstrap_servers, sink, "read_uncommitted")
        inputs, _ = read_values(broker.bootstrap_servers, source, "read_uncommitted")
    finally:
        worker.stop()
        progress.close()
    counts = Counter(outputs)
    sent = Counter(inputs)
    twice = sorted(i for i, n in counts.items() if n > 1)
    if twice:
        print(f"  duplicated: {', '.join(twice[:20])}{' ...' if len(twice) > 20 else ''}")
    return {
        "scenario": scenario.name,
        "relay": scenario.relay,
        "events": len(ids),
        "inputs": len(sent),
        "input_dups": sum(n - 1 for n in sent.values() if n > 1),
        "unsent": len(failed),
        "outputs": sum(counts.values()),
        "on_topic": len(on_topic),
        "lost": len(set(sent) - set(counts)),
        "duplicated": sum(n - 1 for n in counts.values() if n > 1),
        "worker": fate(worker, scenario, finished, settled),
        "errors": worker.log_lines("ERROR"),
        "warnings": worker.log_lines("WARNING"),
        "wall": time.monotonic() - started,
    }


def produce(bootstrap: str, topic: str, ids: list[str], rate: float, failed: list[str]) -> None:
    """Send each id once at ``rate`` (idempotent, so broker outages add no copies).

    Keys are hashed with murmur2 as faust's aiokafka producer hashes them, so an input and
    its output land on the same partition number: faust's transaction for an output is the
    output partition's, and only then does it carry that input's offset.
    """
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "partitioner": "murmur2_random",
            "message.timeout.ms": 600_000,
            **QUIET,
        }
    )

    def delivered(error: object, message: object) -> None:
        if error is not None:
            failed.append(str(error))

    for key in paced(ids, rate):
        producer.produce(topic, key=key.encode(), value=key.encode(), on_delivery=delivered)
        producer.poll(0)
    producer.flush(600)


def kill_repeatedly(
    worker: Worker, progress: Progress, kills: int, duration_s: float, events: int
) -> None:
    """SIGKILL the worker ``kills`` times over the sending, each after it committed something."""
    gap = duration_s / (kills + 1)
    for kill in range(1, kills + 1):
        time.sleep(gap)  # spreads the kills over the stream; no outcome depends on it
        at_start = progress.done() or 0
        wait_for(lambda at_start=at_start: (progress.done() or 0) > at_start, 120, worker)
        worker.kill()
        print(f"  SIGKILL {kill} at {progress.done()}/{events} committed", flush=True)
        worker.start()


def cut_off(
    broker: LocalBroker, worker: Worker, progress: Progress, outage_s: float, events: int
) -> None:
    """Stop the broker once a third is committed, keep it down ``outage_s``, start it again."""
    wait_for(lambda: (progress.done() or 0) >= events // 3, 300, worker)
    print(f"  broker stopped at {progress.done()}/{events} committed", flush=True)
    broker.stop()
    down_until = time.monotonic() + outage_s
    while time.monotonic() < down_until:  # the outage itself: it lasts this long regardless
        worker.supervise()
        time.sleep(1)
    broker.start(timeout_s=180)
    print("  broker started again", flush=True)


def drain(worker: Worker, progress: Progress, events: int, stall_s: float) -> bool:
    """Wait until every input is committed; a worker stalled ``stall_s`` is restarted once."""
    last, since = -1, time.monotonic()
    while (done := progress.done() or 0) < events:
        worker.supervise()
        if done != last:
            last, since = done, time.monotonic()
        elif time.monotonic() - since > stall_s:
            if worker.stalls:
                print(f"  stalled again at {done}/{events}; giving up", flush=True)
                return False
            worker.stalls += 1
            print(f"  no progress for {stall_s:g} s at {done}/{events}; restarting", flush=True)
            worker.kill()
            worker.start()
            since = time.monotonic()
        time.sleep(1)
    return True


def wait_for(condition: Callable[[], bool], timeout_s: float, worker: Worker) -> None:
    """Poll ``condition`` until it holds, restarting the worker if it exits meanwhile."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no progress in {timeout_s:g} s; see {worker.log}")
        worker.supervise()
        time.sleep(0.5)


def read_values(bootstrap: str, topic: str, isolation: str) -> tuple[list[str], bool]:
    """Every value on ``topic`` as ``isolation`` sees it, and whether it was read to the end."""
    tail = TopicTail(KafkaSettings(bootstrap_servers=bootstrap), [topic], isolation=isolation)
    tail.open()
    values: list[str] = []
    deadline = time.monotonic() + 60
    try:
        while not tail.caught_up and time.monotonic() < deadline:
            values += [m.value().decode() for m in tail.poll(0.5)]
        return values, tail.caught_up
    finally:
        tail.close()


def fate(worker: Worker, scenario: Scenario, finished: bool, settled: bool) -> str:
    """What became of the worker, in words."""
    parts = [f"restarted after each of {scenario.kills} kills"] if scenario.kills else []
    if worker.exits:
        codes = ", ".join(str(c) for c in worker.exits)
        parts.append(f"exited by itself {len(worker.exits)}x (rc {codes})")
    if worker.stalls:
        parts.append(f"stalled (no progress {worker.stalls}x), killed and restarted")
    if not finished:
        parts.append("never committed every input")
    if not settled:
        parts.append("output not readable to its end read_committed")
    if not parts:
        parts.append("stayed up, resumed in process")
    return "; ".join(parts)


def versions(faust_python: str) -> dict[str, str]:
    """faust-streaming's, aiokafka's and that Python's versions, and the broker's."""
    asked = subprocess.run(
        [
            faust_python,
            "-c",
            "from importlib.metadata import version; import platform; "
            "print(*(version(p) for p in ('faust-streaming', 'aiokafka', 'mode-streaming')), "
            "platform.python_version())",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    jar = next(broker_classpath().glob("kafka_2.13-*.jar")).name
    return {
        "faust-streaming": asked[0],
        "aiokafka": asked[1],
        "mode-streaming": asked[2],
        "Python": asked[3],
        "Kafka broker": jar.removeprefix("kafka_2.13-").removesuffix(".jar") + " (KRaft)",
    }


def report(args: argparse.Namespace, rows: list[dict]) -> list[str]:
    """The result page: versions, the command, the table."""
    found = versions(args.faust_python)
    lines = [
        "# faust-streaming exactly-once under SIGKILL and broker outages",
        "",
        f"`make bench-faust` (`.venv/bin/python bench/faust_exactly_once.py --events "
        f"{args.events} --rate {args.rate:g} --kills {args.kills} --stall {args.stall:g}`) on "
        f"{platform.node()} ({platform.machine()}), {datetime.now(UTC):%Y-%m-%d}. "
        + ", ".join(f"{name} {version}" for name, version in found.items())
        + f"; {PARTITIONS} partitions, one broker, one worker.",
        "",
        "| fault | relay | inputs (dup., unsent) | outputs read_committed | "
        "records read_uncommitted | lost | duplicated | worker | ERROR / WARNING log lines | "
        "wall time (s) |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    lines += [
        "| {scenario} | {relay} | {inputs} ({input_dups}, {unsent}) | {outputs} | {on_topic} | "
        "{lost} | {duplicated} | {worker} | {errors} / {warnings} | {wall:.0f} |".format(**row)
        for row in rows
    ]
    return lines


if __name__ == "__main__":
    main()
