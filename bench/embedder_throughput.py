"""Milliseconds per image of the MobileNetV2 embedder, by precision, threads and batch size.

Run: ``.venv/bin/python bench/embedder_throughput.py [--precisions fp32 int8] [--batches 1 16]``.
The inputs are the sample photographs, cycled. "end-to-end" is ``run_network`` (``predict``
without its last-batch memo): pre-processing (resize, crop, normalise) plus the network;
"network" is one session run on a ready tensor. Each figure is the median of ``--repeats``
timed calls after one untimed call.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from processors.backbones.mobilenet_v2 import INPUT_NAME, MobileNetV2, preprocess
from processors.models import ModelSpec

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "images"


def median_seconds(call: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` calls, after one untimed warm-up call."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    """Print one row per (threads, batch size)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "int8"])
    args = parser.parse_args()

    photos = [Image.open(path).convert("RGB") for path in sorted(SAMPLES.iterdir())]
    header = f"{'precision':>9} {'threads':>7} {'batch':>5}"
    print(f"{header} {'end-to-end ms/image':>20} {'network ms/image':>17}")
    for precision, threads in [(p, t) for p in args.precisions for t in args.threads]:
        options = {"intra_op_threads": str(threads), "precision": precision}
        model = MobileNetV2(ModelSpec("embed", "mobilenet-v2", "mobilenet-v2", options=options))
        model.load()
        session = model.compiled.session  # the network alone, without pre-processing
        assert session is not None
        for size in args.batches:
            batch = [photos[i % len(photos)] for i in range(size)]
            tensor = np.stack([preprocess(image) for image in batch])
            total = median_seconds(partial(model.run_network, batch), args.repeats)
            network = median_seconds(partial(session.run, None, {INPUT_NAME: tensor}), args.repeats)
            end_to_end, network_only = 1000 * total / size, 1000 * network / size
            row = f"{precision:>9} {threads:>7} {size:>5}"
            print(f"{row} {end_to_end:>20.1f} {network_only:>17.1f}")


if __name__ == "__main__":
    main()
