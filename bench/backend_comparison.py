"""MobileNetV2 on plain torch against ONNX Runtime fp32 and int8, on the same photographs.

Run: ``.venv-train/bin/python bench/backend_comparison.py [--images 64] [--threads 2]``;
writes ``bench/results/backends.md``. Every variant embeds the same images (the sample
photographs, cycled) end to end, pre-processing included, with the same thread count:

- **naive torch**: ``torch-mobilenet-v2``, one image at a time (the baseline);
- **torch fp32**: the same backend on batches of ``--batch``, NHWC (its default) and NCHW;
- **torch dynamic int8**: ``torch.ao.quantization.quantize_dynamic``, which for this network
  can only touch the classifier's ``Linear`` (see the note it prints);
- **ORT fp32** and **ORT int8**: the default ``mobilenet-v2`` backend's sessions (int8 is
  its static QDQ copy) on batches of ``--batch``;
- with a CUDA GPU: torch float32/float16/bfloat16 on cuda, and ONNX Runtime's CUDA
  execution provider where the installed onnxruntime has it. Without, they are listed as
  skipped.

Each figure is the median of ``--repeats`` rounds after ``--warmup`` untimed ones. A round
runs every variant once, in an order rotated from round to round, so a noisy neighbour on
a shared machine slows all variants alike rather than whichever happened to run then.
Agreement is measured against ORT fp32 on the distinct photographs: the smallest cosine
between embeddings and how many top-1 ImageNet classes are the same.

The helpers of ``embedder_throughput.py`` time one configuration after another; the
interleaving here is the point, so the timing loop is this file's own.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from PIL import Image
from publish import publish

from deeptrust.processors.backbones.mobilenet_v2 import (
    DEFAULT_CALIBRATION_DIR,
    EMBEDDING_OUTPUT,
    INPUT_NAME,
    LOGITS_OUTPUT,
    BackboneOutput,
    build_model,
    compiled_backbone,
    l2_normalise,
    load_weights,
    preprocess,
    session_options,
    usable_cpus,
)
from deeptrust.processors.backbones.torch_mobilenet import TorchMobileNetV2
from deeptrust.processors.models import ModelSpec

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples" / "images"
RESULTS = ROOT / "bench" / "results" / "backends.md"
CUDA_PROVIDER = "CUDAExecutionProvider"
DYNAMIC_INT8_NOTE = (
    "torch's dynamic quantization has no Conv2d: it quantizes the 1280x1000 classifier "
    "alone. The embedding is pooled before the classifier, so it is float32 and unchanged; "
    "only the top-1 column can differ. Not a meaningful int8 for a convolutional network."
)

Infer = Callable[[Sequence[Image.Image]], BackboneOutput]


@dataclass(frozen=True)
class Variant:
    """One way to embed a list of images, and how to describe it in the table."""

    name: str
    device: str
    batch: str
    infer: Infer
    note: str = ""


@dataclass(frozen=True)
class Row:
    """A variant's timings (seconds per round) and its agreement with ORT fp32."""

    variant: Variant
    seconds: list[float]
    min_cosine: float
    top1_same: int
    distinct: int

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def concatenated(outputs: Sequence[BackboneOutput]) -> BackboneOutput:
    """One output for the chunks' outputs, in order."""
    return BackboneOutput(
        np.concatenate([o.features for o in outputs]), np.concatenate([o.logits for o in outputs])
    )


def torch_backend(threads: int, batch: int, **options: str) -> TorchMobileNetV2:
    """A loaded ``torch-mobilenet-v2`` with these options."""
    settings = {"intra_op_threads": str(threads), "max_batch": str(batch), **options}
    model = TorchMobileNetV2(ModelSpec("embed", "torch-mobilenet-v2", "bench", options=settings))
    model.load()
    return model


def one_at_a_time(model: TorchMobileNetV2) -> Infer:
    """The naive loop: pre-process and run each image on its own."""
    return lambda images: concatenated([model.infer([image]) for image in images])


def onnx_runtime(session: ort.InferenceSession, batch: int) -> Infer:
    """Pre-process and run ``batch`` images per session run, as the ORT backend does.

    The session is called directly rather than through the backend's ``infer``, whose memo
    would answer repeated rounds on the same images without running the network.
    """

    def infer(images: Sequence[Image.Image]) -> BackboneOutput:
        outputs = []
        for start in range(0, len(images), batch):
            pixels = np.stack([preprocess(image) for image in images[start : start + batch]])
            features, logits = session.run([EMBEDDING_OUTPUT, LOGITS_OUTPUT], {INPUT_NAME: pixels})
            outputs.append(BackboneOutput(features, logits))
        return concatenated(outputs)

    return infer


def dynamic_int8(model: TorchMobileNetV2) -> TorchMobileNetV2:
    """``model`` with its network replaced by torch's dynamically quantized copy."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # the eager quantization API warns that it is deprecated
        warnings.simplefilter("ignore")
        model.network = quantize_dynamic(model.network, {torch.nn.Linear}, dtype=torch.qint8)
    return model


def cpu_variants(threads: int, batch: int) -> list[Variant]:
    """The variants every machine runs: torch and ONNX Runtime on the CPU."""
    batched = f"{batch}"
    sessions = {
        precision: compiled_backbone(precision, threads, DEFAULT_CALIBRATION_DIR).session
        for precision in ("fp32", "int8")
    }
    return [
        Variant("naive torch fp32 (NHWC)", "cpu", "1", one_at_a_time(torch_backend(threads, 1))),
        Variant("torch fp32 (NHWC)", "cpu", batched, torch_backend(threads, batch).infer),
        Variant(
            "torch fp32 (NCHW)",
            "cpu",
            batched,
            torch_backend(threads, batch, channels_last="false").infer,
        ),
        Variant(
            "torch dynamic int8 (NHWC)",
            "cpu",
            batched,
            dynamic_int8(torch_backend(threads, batch)).infer,
            DYNAMIC_INT8_NOTE,
        ),
        Variant("ORT fp32", "cpu", batched, onnx_runtime(sessions["fp32"], batch)),
        Variant(
            "ORT int8 (static QDQ)",
            "cpu",
            batched,
            onnx_runtime(sessions["int8"], batch),
            "calibrated on crops of these same photographs, so agreement here is optimistic",
        ),
    ]


def cuda_variants(threads: int, batch: int) -> tuple[list[Variant], list[str]]:
    """The GPU variants this machine can run, and why the others are skipped."""
    variants: list[Variant] = []
    skipped: list[str] = []
    if torch.cuda.is_available():
        for dtype in ("float32", "float16", "bfloat16"):
            model = torch_backend(threads, batch, device="cuda", dtype=dtype)
            variants.append(Variant(f"torch {dtype} (NHWC)", "cuda", f"{batch}", model.infer))
    else:
        skipped.append("torch float32/float16/bfloat16 on cuda: torch sees no CUDA GPU")
    if CUDA_PROVIDER not in ort.get_available_providers():
        skipped.append(
            f"ORT fp32 on cuda: this onnxruntime ({ort.__version__}) has no {CUDA_PROVIDER} "
            "(the onnxruntime-gpu package has)"
        )
        return variants, skipped
    session = ort.InferenceSession(
        build_model(load_weights()).SerializeToString(),
        sess_options=session_options(threads),
        providers=[CUDA_PROVIDER, "CPUExecutionProvider"],
    )
    if session.get_providers()[0] != CUDA_PROVIDER:  # the provider exists but found no GPU
        skipped.append(f"ORT fp32 on cuda: {CUDA_PROVIDER} is installed but did not start")
    else:
        variants.append(Variant("ORT fp32", "cuda", f"{batch}", onnx_runtime(session, batch)))
    return variants, skipped


def timed(call: Callable[[], object]) -> float:
    """Wall seconds of one call."""
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def interleaved_rounds(
    calls: Sequence[Callable[[], object]], warmup: int, repeats: int
) -> list[list[float]]:
    """Seconds of each call in each timed round; every round runs all calls, rotated."""
    seconds: list[list[float]] = [[] for _ in calls]
    for round_index in range(warmup + repeats):
        shift = round_index % len(calls)
        for index in [*range(shift, len(calls)), *range(shift)]:
            elapsed = timed(calls[index])
            if round_index >= warmup:
                seconds[index].append(elapsed)
    return seconds


def agreement(
    output: BackboneOutput, reference: BackboneOutput, distinct: int
) -> tuple[float, int]:
    """Smallest embedding cosine and number of equal top-1 classes over the first images."""
    a = l2_normalise(output.features[:distinct])
    b = l2_normalise(reference.features[:distinct])
    cosine = float((a * b).sum(axis=1).min())
    same = output.logits[:distinct].argmax(axis=1) == reference.logits[:distinct].argmax(axis=1)
    return cosine, int(same.sum())


def cpu_model() -> str:
    """The CPU's model name as /proc/cpuinfo gives it (what the VM exposes)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    """Measure every variant, interleaved, and write the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    paths = sorted(p for p in SAMPLES.iterdir() if p.suffix.lower() in {".jpg", ".png"})
    photos = [Image.open(path).convert("RGB") for path in paths]
    images = [photos[i % len(photos)] for i in range(args.images)]
    distinct = min(len(photos), len(images))
    threads = min(args.threads, usable_cpus())

    variants = cpu_variants(threads, args.batch)
    gpu, skipped = cuda_variants(threads, args.batch)
    variants += gpu
    reference = next(v for v in variants if v.name == "ORT fp32" and v.device == "cpu")
    expected = reference.infer(images)

    preprocessing = [lambda: [preprocess(image) for image in images]]
    calls: list[Callable[[], object]] = [
        *preprocessing,
        *(lambda v=v: v.infer(images) for v in variants),
    ]
    seconds = interleaved_rounds(calls, args.warmup, args.repeats)
    rows = []
    for variant, times in zip(variants, seconds[1:], strict=True):
        cosine, same = agreement(variant.infer(images), expected, distinct)
        rows.append(Row(variant, times, cosine, same, distinct))
    write(rows, statistics.median(seconds[0]), skipped, args, threads, distinct)


def versions() -> str:
    """The library versions the figures depend on."""
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return (
        f"Python {platform.python_version()}, torch {torch.__version__}, onnxruntime "
        f"{ort.__version__}, numpy {np.__version__}{gpu}"
    )


def table(rows: Sequence[Row], images: int) -> list[str]:
    """The markdown table, one line per variant."""
    naive = rows[0].median
    lines = [
        "| variant | device | batch | images/s | ms/image | min-max ms/image | speed-up vs naive "
        "| min cosine vs ORT fp32 | top-1 = ORT fp32 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        v, per_image = row.variant, 1000 / images
        marker = " *" if v.note else ""
        lines.append(
            f"| {v.name}{marker} | {v.device} | {v.batch} | {images / row.median:.1f} "
            f"| {row.median * per_image:.2f} "
            f"| {min(row.seconds) * per_image:.2f}-{max(row.seconds) * per_image:.2f} "
            f"| {naive / row.median:.2f} | {row.min_cosine:.6f} | {row.top1_same}/{row.distinct} |"
        )
    return lines


def write(
    rows: Sequence[Row],
    preprocessing: float,
    skipped: Sequence[str],
    args: argparse.Namespace,
    threads: int,
    distinct: int,
) -> None:
    """Print the report and write it where the backbone README points."""
    command = " ".join(["bench/backend_comparison.py", *sys.argv[1:]])
    notes = [f"- *{row.variant.name}*: {row.variant.note}" for row in rows if row.variant.note]
    lines = [
        "# MobileNetV2 backends: plain torch, ONNX Runtime fp32 and int8",
        "",
        f"`.venv-train/bin/python {command}`, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "",
        f"Machine: {cpu_model()}, {usable_cpus()} usable CPUs, {threads} intra-op threads "
        f"for every variant. {versions()}.",
        "",
        f"Inputs: {args.images} images (the {distinct} sample photographs, full size, "
        "cycled), end to end: pre-processing (resize, crop, normalise: "
        f"{1000 * preprocessing / args.images:.2f} ms/image on its own) plus the network. "
        f"Each figure is the median of {args.repeats} interleaved rounds after {args.warmup} "
        "untimed ones; the speed-up is over one image at a time on torch. Agreement is over "
        "the distinct photographs.",
        "",
        *table(rows, args.images),
        "",
        *notes,
        *(["", "Skipped:", *(f"- {reason}" for reason in skipped)] if skipped else []),
        "",
    ]
    publish(RESULTS, lines)


if __name__ == "__main__":
    main()
