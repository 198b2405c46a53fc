"""Search relevance of the offline captioner and tagger on a judged query set.

Run: ``make bench-search`` (or ``.venv/bin/python bench/search_relevance.py``); writes
``bench/results/search_relevance.md``. The 20 photographs are the repository's samples and
the 12 nature photographs of Debian's ``mate-backgrounds`` (fetched once with apt; licences
in ``bench/data/search-relevance/images.tsv``). Every photograph goes through the real
caption and tag stages (``CaptionStage``, ``TagStage``: model, vocabulary mapper and
broader terms) and into a ``SearchIndex``; each of the 37 judged queries
(``judgments.tsv``, graded by hand from the photographs) is searched, and recall@5 and
nDCG@10 are averaged over the queries, overall and per category.

Configurations (``--config``, repeatable; default: all but the language model's):

- ``statistics+keywords``: the default stages: a caption of the image's measured look, the
  keyword tagger;
- ``labels+caption-labels``: MobileNetV2's ImageNet labels and the look
  (``mobilenet-labels``), the labels read back as tags (``caption-labels``);
- ``labels+faces+caption-labels``: the same with OpenCV's face cascades adding ``person``,
  ``people`` and ``portrait`` (``{"caption": {"faces": "true"}}``);
- ``labels-llm+llm``: the labels worded by Gemma 3 270M (llama.cpp, started here), tags
  from Gemma.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image
from publish import publish

import deeptrust.processors.registry  # noqa: F401 - registers every model backend
from deeptrust.business.relevance import JudgedQuery, load_judgments, ndcg_at, recall_at
from deeptrust.devtools.debian import debian_package
from deeptrust.processors.caption import CaptionStage
from deeptrust.processors.search_index import SearchIndex
from deeptrust.processors.settings import ProcessorSettings
from deeptrust.processors.tag import TagStage
from deeptrust.schemas.events import CaptionedEvent, DetectedEvent, Detection, EnrichedEvent
from deeptrust.streams.objectstore import LocalObjectStore

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data" / "search-relevance"
RESULTS = ROOT / "bench" / "results" / "search_relevance.md"
CONFIGS = {
    "statistics+keywords": ("image-statistics", "keywords", {}),
    "labels+caption-labels": ("mobilenet-labels", "caption-labels", {}),
    "labels+faces+caption-labels": (
        "mobilenet-labels",
        "caption-labels",
        {"caption": {"faces": "true"}},
    ),
    "labels-llm+llm": ("labels-llm", "llm", {}),
}
NEEDS_LLM = {"labels-llm", "llm"}


@dataclass(frozen=True)
class Score:
    """One judged query's recall@5 and nDCG@10, and what search returned for it."""

    judged: JudgedQuery
    recall: float
    ndcg: float
    ranked: list[str]


@dataclass(frozen=True)
class Indexed:
    """What search saw of one photograph."""

    image: str
    caption: str
    tags: list[str]
    broader: list[str]


def photographs() -> dict[str, Path]:
    """Image name -> file, from ``images.tsv``: samples, and Debian's package fetched once."""
    found: dict[str, Path] = {}
    for line in (DATA / "images.tsv").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, source, _licence = line.split("\t")
        if source.startswith("debian:"):
            folder = (
                debian_package(source.removeprefix("debian:")) / "usr/share/backgrounds/mate/nature"
            )
        else:
            folder = ROOT / source
        found[name] = folder / name
    return found


def enrich(
    files: dict[str, Path], caption_backend: str, tag_backend: str, options: dict[str, Any]
) -> list[EnrichedEvent]:
    """Run the real caption and tag stages over ``files``, as the pipeline would."""
    settings = ProcessorSettings(
        caption_backend=caption_backend, tag_backend=tag_backend, model_options=options
    )
    with tempfile.TemporaryDirectory() as scratch:
        store = LocalObjectStore.at(Path(scratch))
        detected = [_detected(store, name, path) for name, path in files.items()]
        caption = CaptionStage(store, settings.model_spec("caption"), settings.max_pixels)
        caption.setup()
        captioned = [
            out.event
            for result in caption.process([caption.prepare(event) for event in detected])
            for out in result
        ]
        caption.close()
    tag = TagStage(settings.model_spec("tag"))
    tag.setup()
    inputs = [event for event in captioned if isinstance(event, CaptionedEvent)]
    enriched = [out.event for result in tag.process(inputs) for out in result]
    tag.close()
    return [event for event in enriched if isinstance(event, EnrichedEvent)]


def _detected(store: LocalObjectStore, name: str, path: Path) -> DetectedEvent:
    stored = store.put(name, path.read_bytes())
    with Image.open(path) as image:
        width, height = image.size
    return DetectedEvent(
        event_id=str(uuid.uuid4()),
        image_id=name,
        uri=stored.uri,
        uploaded_at=datetime.now(UTC),
        width=width,
        height=height,
        detection=Detection(ai_probability=0.0, label="real", model="none", model_version="0"),
    )


def evaluate(events: Sequence[EnrichedEvent], queries: Sequence[JudgedQuery]) -> list[Score]:
    """Index ``events`` and score every judged query on what the index returns."""
    with tempfile.TemporaryDirectory() as scratch:
        index = SearchIndex(Path(scratch) / "search.db")
        index.upsert(list(events))
        scores = []
        for judged in queries:
            ranked = [hit.image_id for hit in index.search(judged.query, limit=10)]
            scores.append(
                Score(
                    judged,
                    recall_at(ranked, judged.grades, 5),
                    ndcg_at(ranked, judged.grades, 10),
                    ranked,
                )
            )
        index.close()
    return scores


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluate each configuration; write and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--config", action="append", choices=sorted(CONFIGS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    configs = args.config or [c for c in CONFIGS if not set(CONFIGS[c][:2]) & NEEDS_LLM]
    files = photographs()
    queries = load_judgments(DATA / "judgments.tsv")
    llm = _start_llm() if any(set(CONFIGS[c][:2]) & NEEDS_LLM for c in configs) else None
    try:
        results = {}
        seen: dict[str, list[Indexed]] = {}
        for config in configs:
            events = enrich(files, *CONFIGS[config])
            seen[config] = [
                Indexed(e.image_id, e.caption.text, e.tags.values, e.tags.broader) for e in events
            ]
            results[config] = evaluate(events, queries)
    except Exception:
        if llm is not None:
            print(f"LLM server log: {llm[1]}", file=sys.stderr)
        raise
    else:
        if llm is not None:
            shutil.rmtree(llm[1], ignore_errors=True)
    finally:
        if llm is not None:
            llm[0].stop()
    publish(args.out, _report(results, seen, queries))
    return 0


def _start_llm() -> tuple[object, Path]:
    from deeptrust.devtools.llm_server import LocalLLMServer
    from deeptrust.devtools.local_broker import free_port

    home = Path(tempfile.mkdtemp(prefix="bench-llm-"))
    server = LocalLLMServer(home, port=free_port())
    server.start()
    os.environ["DEEPTRUST_LLM_BASE_URL"] = server.base_url
    return server, home


def _report(
    results: dict[str, list[Score]], seen: dict[str, list[Indexed]], queries: Sequence[JudgedQuery]
) -> list[str]:
    categories = ["all", *sorted({q.category for q in queries})]
    counts = {c: sum(c in ("all", q.category) for q in queries) for c in categories}
    lines = [
        "# Search relevance on the judged query set",
        "",
        f"`bench/search_relevance.py`, {datetime.now(UTC):%Y-%m-%d}: {len(queries)} queries "
        "over 20 photographs; recall@5 / nDCG@10, mean over the queries of each category "
        "(how many in brackets).",
        "",
        "| configuration | " + " | ".join(f"{c} ({counts[c]})" for c in categories) + " |",
        "|---|" + "---|" * len(categories),
    ]
    for config, scores in results.items():
        cells = []
        for category in categories:
            chosen = [s for s in scores if category in ("all", s.judged.category)]
            recall = statistics.fmean(s.recall for s in chosen)
            ndcg = statistics.fmean(s.ndcg for s in chosen)
            cells.append(f"{recall:.2f} / {ndcg:.2f}")
        lines.append(f"| {config} | " + " | ".join(cells) + " |")
    lines += ["", "Per query, recall@5 / nDCG@10 (top 3 returned):", ""]
    lines.append("| query | category | " + " | ".join(results) + " |")
    lines.append("|---|---|" + "---|" * len(results))
    for i, judged in enumerate(queries):
        cells = [
            f"{r[i].recall:.2f} / {r[i].ndcg:.2f} ({', '.join(r[i].ranked[:3]) or '-'})"
            for r in results.values()
        ]
        lines.append(f"| {judged.query} | {judged.category} | " + " | ".join(cells) + " |")
    for config, indexed in seen.items():
        lines += ["", f"What `{config}` indexed:", "", "| image | caption | tags | broader |"]
        lines.append("|---|---|---|---|")
        for item in sorted(indexed, key=lambda x: x.image.lower()):
            lines.append(
                f"| {item.image} | {item.caption} | {', '.join(item.tags)} | "
                f"{', '.join(item.broader)} |"
            )
    return [*lines, ""]


if __name__ == "__main__":
    sys.exit(main())
