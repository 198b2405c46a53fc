"""Training throughput of the probe and ViT recipes per worker count, in process and on Ray.

Run: ``PYTHONPATH=$PWD .venv-train/bin/python bench/training_throughput.py [--rows 20000]
[--images 400] [--work /tmp/deeptrust-training-throughput]``; writes
``bench/results/training_throughput.md``. Everything is measured in one run on one local
Ray head (``LocalRayCluster``, 4 declared CPUs), side by side:

- the probe: a head on ``--rows`` random 712-d rows (the ``mobilenet-blocks`` width) for 3
  epochs, once in this process, then a sweep of 4 learning rates on Ray Tune with 1 and with
  2 trials at once. Rows/s counts every trained row of every trial over the wall time.
- the ViT: one epoch of a ViT-Tiny-shaped classifier (12 layers, width 192, 224 px, random
  weights: throughput does not depend on them) on ``--images`` generated 64x64 JPEGs (the
  processor resizes them to 224), in this process and with 1 and 2 Ray Train workers.
  Images/s is training images over the epoch's own seconds (training and validation), the
  wall time adds Ray's start-up and the checkpoint copies. In process it runs on one torch
  thread (what each Ray worker gets) and on all of them.

The machine's cores bound what more workers can give: the table says how many there were.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from publish import publish
from training_memory import generate

from deeptrust.training.trainer.cluster import RayCluster
from deeptrust.training.trainer.rows import RowFile, write_row_file

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "training_throughput.md"
BLOCK_DIM = 712
PROBE_EPOCHS = 3
SWEEP = [0.003, 0.01, 0.03, 0.1]


def row_files(folder: Path, count: int) -> tuple[RowFile, RowFile]:
    """Training and validation row files of two shifted Gaussian classes."""
    files = []
    for name, rows, seed in (("train", count, 1), ("validation", count // 4, 2)):
        rng = np.random.default_rng(seed)
        labels = (np.arange(rows) % 2).astype(np.float64)
        keys = [f"{name}-{index}" for index in range(rows)]

        def row_of(key: str, rng: np.random.Generator = rng) -> np.ndarray:
            index = int(key.rsplit("-", 1)[1])
            return rng.normal(size=BLOCK_DIM) + 0.2 * (index % 2)

        files.append(write_row_file(folder / f"{name}.f32", keys, labels, row_of, "bench"))
    return files[0], files[1]


def probe_rows(folder: Path, rows: int, cluster: RayCluster) -> list[tuple[str, float, float]]:
    """(setting, rows per second, wall seconds) for the probe in process and on Tune."""
    from deeptrust.training.trainer import TrainConfig, expand_sweep
    from deeptrust.training.trainer.config import SearchConfig
    from deeptrust.training.trainer.loop import train_probe_rows
    from deeptrust.training.trainer.ray_tune import ProbeTrial, ShippedRows, sweep_on_ray

    train, validation = row_files(folder, rows)
    base = TrainConfig(epochs=PROBE_EPOCHS, batch_size=64, device="cpu")
    started = time.perf_counter()
    train_probe_rows(train, validation, base)
    alone = time.perf_counter() - started
    results = [("in process, 1 run", rows * PROBE_EPOCHS / alone, alone)]
    grid = expand_sweep(base.model_copy(update={"sweep": {"learning_rate": SWEEP}}))
    trainer = ProbeTrial(ShippedRows.of(train), ShippedRows.of(validation))
    for concurrent in (1, 2):
        started = time.perf_counter()
        sweep_on_ray(
            grid,
            trainer,
            cluster,
            f"probe-{concurrent}-{time.time_ns()}",
            SearchConfig(concurrent=concurrent),
            folder / f"trials-{concurrent}",
        )
        wall = time.perf_counter() - started
        total = rows * PROBE_EPOCHS * len(grid)
        results.append((f"Ray Tune, {len(grid)} trials, {concurrent} at once", total / wall, wall))
    return results


def vit_images(folder: Path, images: int, cluster: RayCluster) -> list[tuple[str, float, float]]:
    """(setting, images per second of the epoch, wall seconds) for the ViT fine-tune."""
    from dataclasses import replace

    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    from deeptrust.training.datasets.example import read_local
    from deeptrust.training.service.data import folder_sources, prepare
    from deeptrust.training.service.vit_recipe import image_dataset
    from deeptrust.training.trainer import TrainConfig
    from deeptrust.training.trainer.finetune import fine_tune_sets
    from deeptrust.training.trainer.ray_train import fine_tune_on_ray
    from deeptrust.training.trainer.streaming import LoaderOptions

    torch.manual_seed(0)
    model = folder / "vit-tiny"
    labels = {0: "real", 1: "ai_generated"}
    config = ViTConfig(
        hidden_size=192,
        num_hidden_layers=12,
        num_attention_heads=3,
        intermediate_size=768,
        image_size=224,
        patch_size=16,
        num_labels=2,
        id2label=labels,
        label2id={name: index for index, name in labels.items()},
    )
    ViTForImageClassification(config).save_pretrained(model)
    ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(model)
    dataset = generate(folder / f"kaggle-{images}", images)
    data = prepare(folder_sources([dataset]), read_local, folder / "manifests")
    train = image_dataset(data.train, read_local)
    validation = image_dataset(data.validation, read_local)
    settings = TrainConfig(
        backbone="hf-vit", model=str(model), epochs=1, batch_size=16, device="cpu"
    )
    loading = LoaderOptions(workers=1)
    results = []
    threads = torch.get_num_threads()
    for count in sorted({1, threads}):  # a Ray worker gets one thread (OMP_NUM_THREADS=1)
        torch.set_num_threads(count)
        started = time.perf_counter()
        alone = fine_tune_sets(train, validation, settings, folder / "alone", loading=loading)
        wall = time.perf_counter() - started
        seconds = alone.history[0].seconds
        results.append((f"in process, {count} torch thread(s)", len(data.train) / seconds, wall))
    torch.set_num_threads(threads)
    for workers in (1, 2):
        started = time.perf_counter()
        on_ray = fine_tune_on_ray(
            train,
            validation,
            settings,
            folder / f"ray-{workers}",
            replace(cluster, workers=workers),
            f"vit-{workers}-{time.time_ns()}",
            loading,
        )
        wall = time.perf_counter() - started
        seconds = on_ray.history[0].seconds
        results.append((f"Ray Train, {workers} worker(s)", len(data.train) / seconds, wall))
    return results


def main() -> None:
    """Start a head, measure both recipes, publish the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument(
        "--work", type=Path, default=Path(tempfile.gettempdir()) / "deeptrust-training-throughput"
    )
    args = parser.parse_args()
    from deeptrust.devtools.local_broker import free_port
    from deeptrust.devtools.ray_cluster import LocalRayCluster

    args.work.mkdir(parents=True, exist_ok=True)
    head = LocalRayCluster(args.work / "ray", port=free_port(), cpus=4)
    head.start(env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    try:
        cluster = RayCluster(head.address, str(args.work / "storage"), workers=2)
        load_before = os.getloadavg()[0]
        probe = probe_rows(args.work, args.rows, cluster)
        vit = vit_images(args.work, args.images, cluster)
        load_after = os.getloadavg()[0]
    finally:
        import ray

        ray.shutdown()
        head.stop()
    lines = [
        "# Training throughput per worker count",
        "",
        "`PYTHONPATH=$PWD .venv-train/bin/python bench/training_throughput.py "
        f"--rows {args.rows} --images {args.images}`, "
        f"{datetime.now(UTC):%Y-%m-%d}, {os.cpu_count()} cores ({platform.machine()}), "
        f"load {load_before:.1f} before and {load_after:.1f} after.",
        "",
        f"Probe head, {args.rows} rows of {BLOCK_DIM} features, {PROBE_EPOCHS} epochs per run:",
        "",
        "| setting | rows/s | wall s |",
        "| --- | ---: | ---: |",
        *(f"| {name} | {rate:,.0f} | {wall:.1f} |" for name, rate, wall in probe),
        "",
        f"ViT-Tiny shape (12 x 192, 224 px, random weights), one epoch, {args.images} images "
        "before the split:",
        "",
        "| setting | train images/s (epoch) | wall s |",
        "| --- | ---: | ---: |",
        *(f"| {name} | {rate:.1f} | {wall:.1f} |" for name, rate, wall in vit),
        "",
        f"Ratios: Tune 2 at once / 1 at once {probe[2][1] / probe[1][1]:.2f}; "
        f"Ray Train 2 workers / 1 worker {vit[-1][1] / vit[-2][1]:.2f}; "
        f"Ray Train 1 worker / in process on 1 thread {vit[-2][1] / vit[0][1]:.2f}.",
        "",
        "Each Ray worker and trial runs torch on one thread (the head's OMP_NUM_THREADS=1).",
        "A Tune trial's wall time includes starting its actor, copying the rows to it and",
        "persisting a checkpoint each epoch, which on runs this short outweighs the training.",
        "",
    ]
    publish(RESULTS, lines)


if __name__ == "__main__":
    main()
