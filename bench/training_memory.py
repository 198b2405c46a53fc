"""Peak memory of the training recipes against dataset size: streaming, shown by measurement.

Run: ``PYTHONPATH=$PWD .venv-train/bin/python bench/training_memory.py [--images 2000 20000]
[--workers 2] [--work /tmp/deeptrust-training-memory]``; writes
``bench/results/training_memory.md``. For each size it generates a Kaggle-layout dataset
(``train.csv`` beside ``train_data/<hex>.jpg``: 64x64 JPEGs, half "AI" with a pattern the
other half lacks), then, in a fresh process, runs what a retrain job runs on it: the
quality checks and content-hash split (``prepare``), the probe recipe (MobileNetV2
features through the loader's workers into the cache, the rows packed, one grid point
trained, the test split scored), and one epoch of the tiny random ViT of
``tests/torch/tiny.py`` fine-tuned through the ``hf-vit`` recipe and scoring the test split.
A sampler in this process reads ``/proc`` every 50 ms and keeps the peak, over the run,
of the summed RSS and of the summed PSS (shared pages divided among their sharers) of that
process and every process under it (the forkserver and the loader's workers).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image
from publish import publish

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "training_memory.md"
SIDE = 64


def generate(folder: Path, count: int, seed: int = 0) -> Path:
    """``count`` 64x64 JPEGs in the Kaggle layout (reused if already complete)."""
    done = folder / ".complete"
    if done.exists() and done.read_text() == str(count):
        return folder
    (folder / "train_data").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = ["file_name,label"]
    for index in range(count):
        label = index % 2
        pixels = rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
        if label:  # a stripe pattern the probe and the ViT can pick up
            pixels[::4] = pixels[::4] // 4
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
        name = f"train_data/{index:08x}.jpg"
        (folder / name).write_bytes(buffer.getvalue())
        rows.append(f"{name},{label}")
    (folder / "train.csv").write_text("\n".join(rows) + "\n")
    done.write_text(str(count))
    return folder


def run_job(dataset: Path, work: Path, workers: int) -> dict[str, float]:
    """In this process: what a job runs on ``dataset``; returns seconds per phase."""
    import torch

    from deeptrust.streams.objectstore import LocalObjectStore
    from deeptrust.training.service.data import byte_reader, folder_sources, prepare
    from deeptrust.training.service.features import FeatureCache, PooledMobileNet
    from deeptrust.training.service.probe_recipe import ProbeFeatures, ProbeRecipe
    from deeptrust.training.service.vit_recipe import ViTRecipe
    from deeptrust.training.trainer import TrainConfig
    from deeptrust.training.trainer.loading import LoaderOptions
    from tests.torch.tiny import tiny_vit

    torch.set_num_threads(2)
    loading = LoaderOptions(workers=workers)
    read = byte_reader(LocalObjectStore.at(work))
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    data = prepare(folder_sources([dataset]), read, work / "manifests")
    seconds["prepare"] = time.perf_counter() - started

    started = time.perf_counter()
    features = ProbeFeatures(FeatureCache(work / "features", PooledMobileNet(2), loading), read)
    probe = ProbeRecipe(data, features, work / "rows")
    config = TrainConfig(epochs=3, device="cpu")
    _, head = probe.fit(config, work / "probe-checkpoints", lambda stats: None, work / "probe")
    head.probabilities(data.test)
    seconds["probe"] = time.perf_counter() - started

    started = time.perf_counter()
    model = tiny_vit(work / "tiny-vit")
    vit = ViTRecipe(data, read, loading)
    vit_config = TrainConfig(
        backbone="hf-vit",
        model=str(model),
        epochs=1,
        batch_size=64,
        learning_rate=1e-3,
        device="cpu",
    )
    _, candidate = vit.fit(vit_config, work / "vit-checkpoints", lambda stats: None, work / "vit")
    candidate.probabilities(data.test)
    seconds["vit"] = time.perf_counter() - started
    seconds["train_rows"] = len(data.train)
    return seconds


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process under it, from ``/proc/<pid>/task/*/children``."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    queue += [int(child) for child in handle.read().split()]
        except OSError:
            continue
    return found


def _memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in KiB, from ``smaps_rollup``; zeros once it is gone."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


@dataclass
class Peak:
    """The largest summed RSS and PSS seen, and the most processes seen at once."""

    rss_kib: int = 0
    pss_kib: int = 0
    processes: int = 0


def measure(command: list[str]) -> tuple[Peak, dict[str, float]]:
    """Run ``command``, sampling its process tree; its stdout's last line is its JSON result."""
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    peak = Peak()
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            pids = _descendants(child.pid)
            sizes = [_memory_kib(pid) for pid in pids]
            peak.rss_kib = max(peak.rss_kib, sum(rss for rss, _ in sizes))
            peak.pss_kib = max(peak.pss_kib, sum(pss for _, pss in sizes))
            peak.processes = max(peak.processes, len(pids))
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = child.communicate()
    stop.set()
    sampler.join()
    if child.returncode:
        raise SystemExit(f"{command} failed with {child.returncode}")
    return peak, json.loads(output.strip().splitlines()[-1])


def main() -> None:
    """Generate, measure each size in a fresh process, publish the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/deeptrust-training-memory"))
    parser.add_argument("--run", type=Path, help=argparse.SUPPRESS)  # the measured child
    args = parser.parse_args()
    if args.run is not None:
        result = run_job(args.run, args.work, args.workers)
        print(json.dumps(result))
        return
    load_before = os.getloadavg()[0]
    rows = []
    for count in args.images:
        dataset = generate(args.work / f"kaggle-{count}", count)
        work = args.work / f"job-{count}-{time.time_ns()}"
        command = [sys.executable, __file__, "--run", str(dataset), "--work", str(work)]
        peak, seconds = measure([*command, "--workers", str(args.workers)])
        rows.append((count, peak, seconds))
    load_after = os.getloadavg()[0]
    first = rows[0][1]
    lines = [
        "# Training memory against dataset size",
        "",
        f"`PYTHONPATH=$PWD .venv-train/bin/python bench/training_memory.py --images "
        f"{' '.join(map(str, args.images))} --workers {args.workers}` on {platform.node()} "
        f"({os.cpu_count()} cores, CPU only), {datetime.now(UTC):%Y-%m-%d}; load average "
        f"{load_before:.1f} before, {load_after:.1f} after. Each size runs in a fresh process: "
        "quality checks and split, the probe recipe (features through the loader's workers, "
        "3 epochs of one grid point, the test split scored), one epoch of the tiny ViT "
        "(`tests/torch/tiny.py`) and its test-split scoring. Peaks are of the sum over the "
        "process and everything under it (forkserver, workers), sampled every 50 ms.",
        "",
        "| images | train rows | processes | peak RSS (MiB) | vs first | peak PSS (MiB) "
        "| vs first | prepare s | probe s | ViT s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for count, peak, seconds in rows:
        lines.append(
            f"| {count} | {int(seconds['train_rows'])} | {peak.processes} "
            f"| {peak.rss_kib / 1024:.0f} | {peak.rss_kib / first.rss_kib:.2f} "
            f"| {peak.pss_kib / 1024:.0f} | {peak.pss_kib / first.pss_kib:.2f} "
            f"| {seconds['prepare']:.0f} | {seconds['probe']:.0f} | {seconds['vit']:.0f} |"
        )
    publish(RESULTS, [*lines, ""])


if __name__ == "__main__":
    main()
