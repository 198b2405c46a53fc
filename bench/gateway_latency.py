"""The ingest gateway's latency at fixed request rates, against the 200 ms budget.

Run: ``.venv/bin/python bench/gateway_latency.py [--rates 20 50 100] [--seconds 15]``;
writes ``bench/results/gateway_latency.md``. A local broker and ``python -m
deeptrust.gateway_cli`` (the real server: uvicorn, one worker) run as their own processes;
this process is the client. Each rate is driven **open-loop**: request i is sent at
start + i/rate whether or not earlier ones have answered, and its latency counts from that
scheduled moment, so a stalled gateway shows up as latency instead of silently slowing the
client down (no coordinated omission). Every request uploads one of the sample photographs
as multipart; a 202 is only sent after the broker acknowledged the event (``acks=all``),
which the bench checks at the end by counting the upload events on the topic.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
from publish import publish

from deeptrust.devtools.local_broker import LocalBroker, free_port
from deeptrust.schemas.events import UploadEvent
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.reader import read_to_end
from deeptrust.streams.topics import Topic, TopicNames, create_topics

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "gateway_latency.md"
SAMPLES = ROOT / "samples" / "images"
BUDGET_MS = 200.0
KEY = "bench-key"


@dataclass(frozen=True)
class Row:
    """One rate's outcome; latencies in milliseconds."""

    rate: float
    sent: int
    accepted: int
    errors: int
    achieved: float
    p50: float
    p95: float
    p99: float
    worst: float
    within_budget: float


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0-1) by the nearest-rank method."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


async def drive(
    client: httpx.AsyncClient, photos: list[tuple[str, bytes]], rate: float, seconds: float
) -> Row:
    """Send ``rate`` uploads a second for ``seconds``, open-loop; measure each."""
    count = int(rate * seconds)
    latencies: list[float] = []
    errors = 0
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.1

    async def one(index: int) -> None:
        nonlocal errors
        due = start + index / rate
        await asyncio.sleep(max(0.0, due - loop.time()))
        name, data = photos[index % len(photos)]
        try:
            response = await client.post("/v1/uploads", files={"file": (name, data)})
            ok = response.status_code == 202
        except httpx.HTTPError:
            ok = False
        latencies.append((loop.time() - due) * 1000)
        errors += not ok

    await asyncio.gather(*(one(i) for i in range(count)))
    elapsed = loop.time() - start
    return Row(
        rate=rate,
        sent=count,
        accepted=count - errors,
        errors=errors,
        achieved=count / elapsed,
        p50=statistics.median(latencies),
        p95=percentile(latencies, 0.95),
        p99=percentile(latencies, 0.99),
        worst=max(latencies),
        within_budget=sum(x <= BUDGET_MS for x in latencies) / len(latencies),
    )


async def measure(url: str, rates: list[float], seconds: float) -> tuple[Row, list[Row]]:
    """Warm up, then drive each rate in turn."""
    photos = [(p.name, p.read_bytes()) for p in sorted(SAMPLES.iterdir()) if p.is_file()]
    limits = httpx.Limits(max_connections=500, max_keepalive_connections=500)
    async with httpx.AsyncClient(
        base_url=url, headers={"X-API-Key": KEY}, limits=limits, timeout=30
    ) as client:
        warm = await drive(client, photos, 10, 2)  # connections, caches, the first batch
        return warm, [await drive(client, photos, rate, seconds) for rate in rates]


def start_gateway(kafka: KafkaSettings, home: Path, port: int) -> subprocess.Popen[bytes]:
    """``python -m deeptrust.gateway_cli`` on ``port``, logging to a file in ``home``."""
    env = {
        **os.environ,
        "DEEPTRUST_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "DEEPTRUST_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "DEEPTRUST_OBJECT_STORE_ROOT": str(home / "objects"),
        "DEEPTRUST_GATEWAY_API_KEYS": json.dumps([KEY]),
        "DEEPTRUST_GATEWAY_STATUS_DB": str(home / "gateway-status.db"),
    }
    log = (home / "gateway.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "deeptrust.gateway_cli", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )


def wait_ready(url: str, gateway: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Poll /readyz until it answers 200 (or fail when the process dies or time runs out)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if gateway.poll() is not None:
            raise RuntimeError(f"the gateway exited with {gateway.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError("the gateway did not become ready")


def main() -> None:
    """Start a broker and the gateway, drive each rate, check the topic, write the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", type=float, nargs="+", default=[20, 50, 100])
    parser.add_argument("--seconds", type=float, default=15)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory() as temporary:
        home = Path(temporary)
        broker = LocalBroker(home / "kafka", port=free_port(), controller_port=free_port())
        broker.start(timeout_s=180)
        gateway: subprocess.Popen[bytes] | None = None
        try:
            kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, topic_prefix="b.")
            create_topics(kafka, partitions=3)
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            gateway = start_gateway(kafka, home, port)
            wait_ready(url, gateway, 120)
            warm, rows = asyncio.run(measure(url, args.rates, args.seconds))
            server = server_means(httpx.get(f"{url}/metrics", timeout=10).text)
            topic = TopicNames(kafka.topic_prefix)(Topic.UPLOADS)
            events = len(read_to_end(kafka, topic, UploadEvent, 60))
        finally:
            if gateway is not None:
                gateway.terminate()
                gateway.wait(30)
            broker.stop()
    write(rows, args, events, warm.accepted + sum(r.accepted for r in rows), load_before, server)


def server_means(metrics: str) -> tuple[float, float]:
    """Mean milliseconds, all runs together, of a POST in the gateway and of its store + ack."""
    values: dict[str, float] = {}
    for line in metrics.splitlines():
        name, _, value = line.rpartition(" ")
        if name.startswith("deeptrust_gateway_delivery_seconds_") or 'route="/v1/uploads"' in name:
            values[name.split("{")[0]] = float(value)
    request = values["deeptrust_gateway_request_seconds_sum"]
    request /= values["deeptrust_gateway_request_seconds_count"]
    delivery = values["deeptrust_gateway_delivery_seconds_sum"]
    delivery /= values["deeptrust_gateway_delivery_seconds_count"]
    return request * 1000, delivery * 1000


def write(
    rows: list[Row],
    args: argparse.Namespace,
    events: int,
    accepted: int,
    load: float,
    server: tuple[float, float],
) -> None:
    """Print the table and write it where the docs point."""
    sizes = [p.stat().st_size for p in SAMPLES.iterdir() if p.is_file()]
    rates = " ".join(f"{r:g}" for r in args.rates)
    lines = [
        "# Gateway latency: upload to 202, against the 200 ms budget",
        "",
        f"`.venv/bin/python bench/gateway_latency.py --rates {rates} --seconds {args.seconds:g}` "
        f"on {platform.node() or 'this machine'} "
        f"({os.cpu_count()} cores, load average {load:.2f} at the start), "
        f"{datetime.now(UTC):%Y-%m-%d}.",
        "",
        "One gateway process (`python -m deeptrust.gateway_cli`, uvicorn, 1 worker), a local "
        "single-node broker and this client all share the machine. Each request uploads one "
        f"of the {len(sizes)} sample photographs as multipart ({min(sizes) // 1024}-"
        f"{max(sizes) // 1024} KiB, mean {statistics.mean(sizes) / 1024:.0f} KiB), cycled, "
        "open-loop: latency counts from the moment a request was due, to its 202, which "
        "comes after the object is stored and the broker has acknowledged the upload "
        "event (`acks=all`, idempotent producer).",
        "",
        "| rate (req/s) | sent | 202 | errors | achieved (req/s) | p50 ms | p95 ms | p99 ms "
        "| max ms | within 200 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {r.rate:g} | {r.sent} | {r.accepted} | {r.errors} | {r.achieved:.1f} | "
            f"{r.p50:.1f} | {r.p95:.1f} | {r.p99:.1f} | {r.worst:.1f} | "
            f"{100 * r.within_budget:.1f}% |"
            for r in rows
        ),
        "",
        f"Upload events on the topic afterwards: {events}; 202 answers (warm-up "
        f"included): {accepted}" + (" — every 202 is durable." if events == accepted else "."),
        "",
        f"Inside the gateway (its own histograms, all rates together): a POST took "
        f"{server[0]:.1f} ms on average, of which {server[1]:.1f} ms storing the object and "
        "waiting for the broker's acknowledgement (the producer lingers up to 10 ms to batch).",
        "",
    ]
    publish(RESULTS, lines)


if __name__ == "__main__":
    main()
