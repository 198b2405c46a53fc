"""Each model stage's throughput: its models alone (batched and naive) and on the broker.

Run: ``.venv/bin/python bench/stage_throughput.py [--images 256]``; writes
``bench/results/stage_throughput.md``. For every stage with a model, on the same inputs
in one run:

- **batched**: the stage's models on batches of ``--batch`` (what the runner hands them),
  input decoding included, in this process: every model the stage runs (tag's language
  model and its vocabulary mapper's MiniLM). It is timed before and after the broker run
  and the better rate kept, so a slow moment of the shared machine does not flatter the
  ratio;
- **naive**: the same models one input at a time (no batching);
- **pipeline**: ``deeptrust stage run NAME`` on a local broker whose input topic already
  holds every event, timed from its first committed batch to its last committed output.

pipeline / batched is the runner's efficiency: 1 means Kafka, transactions and
(de)serialisation cost nothing next to the model. The stages run the demo's real models:
detect (the MobileNetV2-block probe on 5 tiles, and the MobileNetV2 embedding), caption
(MobileNetV2 labels worded by Gemma 3 270M on llama.cpp), tag (Gemma 3 270M, then
all-MiniLM-L6-v2 mapping the tags onto the vocabulary). The machine is shared and noisy:
compare the columns of one run, not runs with each other; the table names the CPU, since
rates move with it (int8 kernels run far faster on CPUs with VNNI).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from publish import cpu_model, publish
from pydantic import BaseModel

import deeptrust.processors.registry  # noqa: F401 - registers the model backends
from deeptrust.devtools.llm_server import MODEL_ALIAS, LocalLLMServer
from deeptrust.devtools.local_broker import LocalBroker, free_port
from deeptrust.devtools.processes import StageProcess
from deeptrust.processors.models import load_model
from deeptrust.processors.settings import ProcessorSettings
from deeptrust.processors.vocabulary.mapper import TagMapper
from deeptrust.schemas.events import CaptionedEvent, DetectedEvent, EnrichedEvent
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.images import fetch_image
from deeptrust.streams.producer import UploadProducer
from deeptrust.streams.reader import read_to_end
from deeptrust.streams.topics import Topic, TopicNames, create_topics

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "stage_throughput.md"


@dataclass(frozen=True)
class Row:
    """One stage's rates, in inputs a second."""

    stage: str
    models: str
    inputs: int
    batched: float
    naive: float
    pipeline: float


def rate(count: int, work: Callable[[], object]) -> float:
    """Inputs a second of one call of ``work`` over ``count`` inputs."""
    started = time.perf_counter()
    work()
    return count / (time.perf_counter() - started)


def batched_rate(
    predict: Callable[[Sequence[Any]], object], inputs: Sequence[Any], batch: int
) -> float:
    """Inputs a second of ``predict`` on batches of ``batch``."""
    return rate(
        len(inputs),
        lambda: [predict(inputs[i : i + batch]) for i in range(0, len(inputs), batch)],
    )


def side_by_side(
    predict: Callable[[Sequence[Any]], object],
    inputs: Sequence[Any],
    batch: int,
    pipeline: Callable[[], float],
) -> tuple[float, float, float]:
    """Batched, naive and pipeline rates; batched is the better of a run before and after."""
    predict(inputs[:batch])  # warm up
    before = batched_rate(predict, inputs, batch)
    naive = rate(len(inputs), lambda: [predict([item]) for item in inputs])
    on_the_broker = pipeline()
    return max(before, batched_rate(predict, inputs, batch)), naive, on_the_broker


def on_broker(
    name: str,
    output: tuple[Topic, type[BaseModel]],
    env: dict[str, str],
    count: int,
    home: Path,
    kafka: KafkaSettings,
) -> float:
    """Inputs a second that ``deeptrust stage run NAME`` turns into committed outputs.

    Timed by the outputs' own timestamps (set as the stage produced them), from its first
    committed batch to its last: joining the consumer group takes seconds that a
    long-running stage pays once, not per message, and the rate is not disturbed by how
    often this process asks the stage how far it got.
    """
    topic, model = output
    stage = StageProcess(name, env, free_port(), home / f"{name}.log")
    stage.start()
    try:
        stage.wait_ready(180)
        first = _wait_committed(stage, topic, 1)
        _wait_committed(stage, topic, count)
    finally:
        stage.terminate()
    records = read_to_end(kafka, TopicNames(kafka.topic_prefix)(topic), model, 60)
    sent = sorted(record.timestamp_ms for record in records)[:count]
    return (count - first) / ((sent[-1] - sent[first - 1]) / 1000)


def _wait_committed(stage: StageProcess, output: Topic, count: int) -> int:
    """Wait until the stage committed ``count`` outputs to ``output``; return how many.

    The count moves a whole batch at a time, so what it returns ends a batch.
    """
    metric = "deeptrust_produced_total"
    while (done := int(stage.metric(metric, topic=output.value))) < count:
        if stage.returncode is not None:
            raise RuntimeError(stage.log_tail())
        time.sleep(0.25)
    return done


def main() -> None:
    """Measure detect, caption and tag side by side and write the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--llm-inputs", type=int, default=48)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as temporary:
        home = Path(temporary)
        broker = LocalBroker(home / "kafka", port=free_port(), controller_port=free_port())
        llm = LocalLLMServer(home / "llm", port=free_port())
        broker.start(timeout_s=180)
        llm.start(timeout_s=180)
        try:
            rows = measure(args, home, broker, llm)
        finally:
            llm.stop()
            broker.stop()
    write(rows, args)


def measure(
    args: argparse.Namespace, home: Path, broker: LocalBroker, llm: LocalLLMServer
) -> list[Row]:
    """Fill the topics stage by stage and time each stage's models and process."""
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, topic_prefix="bench.")
    create_topics(kafka, partitions=3)
    topics = TopicNames(kafka.topic_prefix)
    env_llm = {
        "DEEPTRUST_CAPTION_BACKEND": "labels-llm",
        "DEEPTRUST_TAG_BACKEND": "llm",
        "DEEPTRUST_LLM_BASE_URL": llm.base_url,
        "DEEPTRUST_LLM_MODEL": MODEL_ALIAS,
    }
    os.environ.update(env_llm)
    settings = ProcessorSettings(object_store_root=home / "objects")
    env = {
        "DEEPTRUST_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "DEEPTRUST_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "DEEPTRUST_OBJECT_STORE_ROOT": str(settings.object_store_root),
        "DEEPTRUST_RUNNER_MAX_BATCH": str(args.batch),
        **env_llm,
    }
    photos = sorted((ROOT / "samples" / "images").iterdir())
    producer = UploadProducer(kafka, settings.object_store(), source="bench")
    uploads = [
        producer.upload(photos[i % len(photos)].read_bytes(), photos[i % len(photos)].name)
        for i in range(args.images)
    ]
    producer.flush()
    store = settings.object_store()

    def decoded(uri: str) -> Any:
        return fetch_image(store, uri, settings.max_pixels)

    detector = load_model(settings.model_spec("detect"))
    embedder = load_model(settings.model_spec("embed"))

    def detect(batch: Sequence[str]) -> object:
        images = [decoded(uri) for uri in batch]
        detector.predict(images)
        return embedder.predict([image.decoded.image for image in images])

    uris = [event.uri for event in uploads]
    rows = [
        Row(
            "detect",
            f"{detector.spec.label} + {embedder.spec.label}",
            len(uris),
            *side_by_side(
                detect,
                uris,
                args.batch,
                lambda: on_broker(
                    "detect", (Topic.DETECTED, DetectedEvent), env, len(uris), home, kafka
                ),
            ),
        )
    ]

    detected = read_to_end(kafka, topics(Topic.DETECTED), DetectedEvent, 60)
    captioner = load_model(settings.model_spec("caption"))
    few = [item.event.uri for item in detected[: args.llm_inputs]]

    def caption(batch: Sequence[str]) -> object:
        return captioner.predict([decoded(uri).decoded.image for uri in batch])

    rows.append(
        Row(
            "caption",
            captioner.spec.label,
            len(few),
            *side_by_side(
                caption,
                few,
                args.batch,
                lambda: on_broker(
                    "caption", (Topic.CAPTIONED, CaptionedEvent), env, len(detected), home, kafka
                ),
            ),
        )
    )
    captioned = read_to_end(kafka, topics(Topic.CAPTIONED), CaptionedEvent, 60)
    tagger = load_model(settings.model_spec("tag"))
    mapper = TagMapper(intra_op_threads=1)  # as the tag stage builds it by default
    mapper.load()
    texts = [item.event.caption.text for item in captioned[: args.llm_inputs]]

    def tag(batch: Sequence[str]) -> object:
        return mapper.normalise(tagger.predict(batch))

    rows.append(
        Row(
            "tag",
            f"{tagger.spec.label} + vocabulary mapper",
            len(texts),
            *side_by_side(
                tag,
                texts,
                args.batch,
                lambda: on_broker(
                    "tag", (Topic.ENRICHED, EnrichedEvent), env, len(captioned), home, kafka
                ),
            ),
        )
    )
    return rows


def write(rows: list[Row], args: argparse.Namespace) -> None:
    """Print the table and write it where the README points."""
    lines = [
        "# Stage throughput: models alone, naive, and in the pipeline",
        "",
        f"`.venv/bin/python bench/stage_throughput.py --images {args.images} "
        f"--llm-inputs {args.llm_inputs} --batch {args.batch}` on "
        f"{platform.node() or 'this machine'} ({os.cpu_count()} cores of {cpu_model()}, CPU "
        "only), "
        f"{datetime.now(UTC):%Y-%m-%d}. Inputs: the 8 sample photographs, full size, cycled. "
        "Rates in inputs a second.",
        "",
        "| stage | models | inputs | batched | naive (1 at a time) | pipeline on the broker "
        "| pipeline / batched | batched / naive |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {r.stage} | {r.models} | {r.inputs} | {r.batched:.1f} | {r.naive:.1f} | "
            f"{r.pipeline:.1f} | {r.pipeline / r.batched:.2f} | {r.batched / r.naive:.2f} |"
            for r in rows
        ),
        "",
    ]
    publish(RESULTS, lines)


if __name__ == "__main__":
    main()
