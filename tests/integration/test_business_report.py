"""`deeptrust report` on the real broker: the table and the gauges a real Prometheus scrapes.

Seeded by hand, the numbers worked out here:

- flagged: 6 images, 4 reviewed, 3 confirmed AI (f4: alice said AI, then bob said real,
  and the latest decision counts) -> precision 3/4 = 0.75;
- sampled at rate 0.25: 5 images -> 5 / 0.25 = 20 unflagged; 4 reviewed, 1 AI -> share
  0.25, missed = 20 x 0.25 = 5; true positives = 6 x 0.75 = 4.5 -> recall 4.5 / 9.5;
- one pair of reviewers (f4: ai, real): agreement 0;
- search: a page clicked at rank 2, a page not clicked, a page with no results ->
  click-through 1/2, MRR (1/2 + 0) / 2 = 0.25, zero-result rate 1/3;
- detected.v1: 26 images, of which 6 flagged -> 20 unflagged seen, as estimated;
- one record on moderation.v1 that is not an event: skipped, and counted.

Then one more flagged decision (f5: real) arrives while the exporter runs, and the scraped
precision moves to 3/5. With ``DEEPTRUST_SCREENSHOT_DIR`` set, the report's PNGs are saved
there as ``metrics-moderation.png`` and ``metrics-search.png`` (docs/metrics.md shows them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Producer
from pydantic import BaseModel

from deeptrust.business.report import business_rows
from deeptrust.business.topics import current_report
from deeptrust.devtools.debian import debian_package
from deeptrust.devtools.local_broker import LocalBroker, free_port
from deeptrust.schemas.events import (
    DetectedEvent,
    Detection,
    FeedbackEvent,
    ModerationEvent,
    SearchInteractionEvent,
)
from deeptrust.streams.codec import encode
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.topics import Topic, TopicNames
from tests.conftest import run_cli, wait_for

pytestmark = pytest.mark.integration
# Decisions and searches follow the routing (stamped by the producer now), as they would.
T0 = datetime.now(UTC).replace(second=0, microsecond=0)
SCREENSHOTS = os.environ.get("DEEPTRUST_SCREENSHOT_DIR")
RECALL = 4.5 / 9.5


def send(producer: Producer, topic: str, event: BaseModel, key: str) -> None:
    encoded = encode(event, key=key)
    producer.produce(topic, key=encoded.key, value=encoded.value, headers=encoded.headers)


def moderation(image_id: str, reason: str) -> ModerationEvent:
    return ModerationEvent(
        event_id=str(uuid.uuid4()),
        image_id=image_id,
        uri=f"file:///objects/{image_id}.jpg",
        reason=reason,  # type: ignore[arg-type]
        ai_probability=0.9 if reason == "flagged" else 0.1,
        caption="a photo",
        tags=["photo"],
    )


def decision(image_id: str, label: str, reviewer: str, minute: int) -> FeedbackEvent:
    return FeedbackEvent(
        event_id=str(uuid.uuid4()),
        image_id=image_id,
        uri=f"file:///objects/{image_id}.jpg",
        label=label,  # type: ignore[arg-type]
        reviewer=reviewer,
        decided_at=T0 + timedelta(minutes=minute),
    )


def interaction(session: str, query: str, kind: str, minute: int, **fields: object):
    return SearchInteractionEvent.model_validate(
        {
            "event_id": str(uuid.uuid4()),
            "session_id": session,
            "query": query,
            "kind": kind,
            "results": [],
            "occurred_at": T0 + timedelta(minutes=minute),
            **fields,
        }
    )


def detected(image_id: str) -> DetectedEvent:
    return DetectedEvent(
        event_id=str(uuid.uuid4()),
        image_id=image_id,
        uri=f"file:///objects/{image_id}.jpg",
        uploaded_at=T0,
        width=4,
        height=4,
        detection=Detection(ai_probability=0.5, label="real", model="m", model_version="1"),
    )


@pytest.fixture
def seeded(kafka: KafkaSettings, topics: TopicNames) -> KafkaSettings:
    producer = Producer(kafka.client_config())
    for i in range(1, 7):
        send(producer, topics(Topic.MODERATION), moderation(f"f{i}", "flagged"), f"f{i}")
    for i in range(1, 6):
        send(producer, topics(Topic.MODERATION), moderation(f"s{i}", "sampled"), f"s{i}")
    producer.produce(topics(Topic.MODERATION), key=b"junk", value=b"{not json")  # skipped
    for event in [
        decision("f1", "ai_generated", "alice", 10),
        decision("f2", "ai_generated", "alice", 11),
        decision("f3", "ai_generated", "alice", 12),
        decision("f4", "ai_generated", "alice", 13),
        decision("f4", "real", "bob", 14),
        decision("s1", "ai_generated", "alice", 15),
        decision("s2", "real", "alice", 16),
        decision("s3", "real", "alice", 17),
        decision("s4", "real", "alice", 18),
    ]:
        send(producer, topics(Topic.FEEDBACK), event, event.image_id)
    shown = ["f1", "s2", "f3"]
    for event in [
        interaction("A", "cat", "impression", 20, results=shown),
        interaction("A", "cat", "click", 21, results=shown, image_id="s2", rank=2),
        interaction("B", "dog", "impression", 22, results=shown),
        interaction("C", "zebra", "impression", 23),
    ]:
        send(producer, topics(Topic.SEARCH_INTERACTIONS), event, event.session_id)
    for image_id in [f"f{i}" for i in range(1, 7)] + [f"u{i}" for i in range(20)]:
        send(producer, topics(Topic.DETECTED), detected(image_id), image_id)
    assert producer.flush(30) == 0
    return kafka


def test_report_prints_the_hand_computed_numbers_and_writes_plots(
    seeded: KafkaSettings, tmp_path: Path
) -> None:
    out = run_cli(
        seeded, "report", "--sample-rate", "0.25", "--out", str(tmp_path), "--points", "16"
    )
    rows = _rows(out)
    assert rows["flagged images (reviewed / entered)"] == "4 / 6"
    assert rows["flag precision (Wilson 95%)"].startswith("75.0% [")
    assert rows["sampled images at rate 0.25 (reviewed / entered)"] == "4 / 5"
    assert rows["unflagged images, estimated (sampled / rate)"] == "20"
    assert rows["unflagged images seen on detected.v1 (check)"] == "20"
    assert rows["missed AI images, Horvitz-Thompson (95%)"].startswith("5.0 [")
    assert rows["recall (95%, Wilson box)"].startswith(f"{RECALL:.1%} [")
    assert rows["reviewer agreement (pairs, percent, Cohen's kappa)"].startswith("1, 0.0%")
    assert rows["click-through rate (Wilson 95%)"].startswith("50.0% [")
    assert rows["zero-result rate (Wilson 95%)"].startswith("33.3% [")
    assert rows["mean reciprocal rank of the first click"] == "0.250"
    skipped = f"records skipped on {seeded.topic_prefix}moderation.v1 (not decodable)"
    assert rows[skipped] == "1"
    # What the console shows: the same rows, in process, without the detected.v1 check.
    page = dict(business_rows(current_report(seeded, 0.25)))
    check = "unflagged images seen on detected.v1 (check)"
    assert check not in page
    assert page == {name: value for name, value in rows.items() if name != check}
    for name in ("moderation.png", "search.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
        if SCREENSHOTS:
            Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
            shutil.copy(tmp_path / name, Path(SCREENSHOTS) / f"metrics-{name}")


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A real Prometheus scraping one free port each second: (its URL, the port)."""
    binary = debian_package("prometheus") / "usr" / "bin" / "prometheus"
    target, port = free_port(), free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n  - job_name: business\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{target}']}}]\n"
    )
    with (tmp_path / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                str(binary),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    yield f"http://127.0.0.1:{port}", target
    process.terminate()
    process.wait(30)


def test_exporter_gauges_scraped_by_prometheus_follow_new_decisions(
    seeded: KafkaSettings, topics: TopicNames, tmp_path: Path, prometheus: tuple[str, int]
) -> None:
    base, port = prometheus
    log = (tmp_path / "report.log").open("wb")
    command = [sys.executable, "-m", "deeptrust.cli", "report", "--sample-rate", "0.25"]
    command += ["--out", str(tmp_path / "png"), "--serve", str(port), "--interval", "1"]
    exporter = subprocess.Popen(
        command,
        env={
            **os.environ,
            "DEEPTRUST_KAFKA_BOOTSTRAP_SERVERS": seeded.bootstrap_servers,
            "DEEPTRUST_KAFKA_TOPIC_PREFIX": seeded.topic_prefix,
        },
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: _scraped(base, "flag_precision") == pytest.approx(0.75), 90, "0.75")
        assert _scraped(base, "recall") == pytest.approx(RECALL)
        assert _scraped(base, "miss_rate") == pytest.approx(1 - RECALL)
        assert _scraped(base, "missed_images") == pytest.approx(5.0)
        assert _scraped(base, "search_click_through_rate") == pytest.approx(0.5)
        assert _scraped(base, "search_zero_result_rate") == pytest.approx(1 / 3)
        assert _scraped(base, "search_mean_reciprocal_rank", bound=None) == pytest.approx(0.25)
        assert _scraped(base, "reviewer_agreement", bound=None) == pytest.approx(0.0)
        assert _scraped(base, "skipped_records", bound=None) == 1

        producer = Producer(seeded.client_config())
        send(producer, topics(Topic.FEEDBACK), decision("f5", "real", "carol", 30), "f5")
        assert producer.flush(30) == 0
        wait_for(lambda: _scraped(base, "flag_precision") == pytest.approx(0.6), 60, "3/5")
    finally:
        exporter.terminate()
        exporter.wait(30)
        log.close()
    assert exporter.returncode == 0, (tmp_path / "report.log").read_text()


def _scraped(base: str, metric: str, bound: str | None = "estimate") -> float | None:
    selector = "" if bound is None else f'{{bound="{bound}"}}'
    try:
        response = httpx.get(
            f"{base}/api/v1/query",
            params={"query": f"deeptrust_business_{metric}{selector}"},
            timeout=5,
        )
    except httpx.HTTPError:
        return None
    result = response.json()["data"]["result"] if response.status_code == 200 else []
    return float(result[0]["value"][1]) if result else None


def _rows(table: str) -> dict[str, str]:
    """The report table's rows, metric -> value, from rich's box drawing."""
    rows = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip("│ ").split("│")]
        if len(cells) == 2 and cells[0] and cells[0] != "metric":
            rows[cells[0]] = cells[1]
    return rows


def test_report_names_a_missing_topic(broker: LocalBroker) -> None:
    bare = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, topic_prefix="nothing-here.")
    out = run_cli(bare, "report", "--sample-rate", "0.1", "--timeout", "5", fails=True)
    assert "cannot read nothing-here.moderation.v1" in out
    assert "deeptrust topics" in out
    assert "Traceback" not in out
