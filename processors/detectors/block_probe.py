"""The fast profile's detector: a linear probe on MobileNetV2's intermediate blocks, by tiles.

The leave-one-family-out benchmark (``docs/detector.md``) chose it as the detector that
reaches 30 uploads/s: average-pooled outputs of seven blocks (712 dimensions) of the frozen
ImageNet MobileNetV2, read from 64 px tiles at their own size (``tiles.py``), because the
traces of upsampling sit in early blocks and vanish when an upload is squashed to 224. An
image's log-odds are the mean over its tiles. The head carries two thresholds fixed on real
photographs' crops: ``ai_generated`` from the stricter, ``inconclusive`` between the two.
The provenance detector's findings go to ``signals``, as with the pooled probe.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from deeptrust.processors.backbones.mobilenet_v2 import (
    BLOCK_CHANNELS,
    DEFAULT_INTRA_OP_THREADS,
    INPUT_NAME,
    WEIGHTS_SHA256,
    build_blocks_model,
    create_session,
    load_weights,
    normalise_pixels,
    usable_cpus,
)
from deeptrust.processors.detectors.mobilenet_probe import ProbeHead, sigmoid, verdicts
from deeptrust.processors.detectors.tiles import TILES_PER_IMAGE, tiles
from deeptrust.processors.heuristics.provenance import ProvenanceDetector
from deeptrust.processors.models import ModelSpec, register
from deeptrust.schemas.events import Detection
from deeptrust.streams.images import FetchedImage

HEAD_FILE = "mobilenet_blocks_probe.npz"
BLOCKS = (1, 3, 6, 10, 13, 16, 17)
"""torchvision's ``features`` indices the probe reads (the trainer's ``MobileNetBlocks``)."""
DEFAULT_MAX_TILES = 8 * TILES_PER_IMAGE


def shipped_head_path() -> Path:
    """The head file that ships with the package."""
    return Path(str(resources.files("deeptrust.processors.detectors").joinpath(HEAD_FILE)))


def check_block_head(head: ProbeHead, path: Path) -> None:
    """Refuse a head trained on other features than these blocks of these weights."""
    if head.dimensions != BlockFeatures.dimensions:
        width = BlockFeatures.dimensions
        raise ValueError(f"{path} takes {head.dimensions}-d features, not {width}")
    if head.metadata.get("backbone_weights_sha256") != WEIGHTS_SHA256:
        raise ValueError(f"{path} was not trained on these backbone weights")
    if tuple(head.metadata.get("blocks", ())) != BLOCKS:
        raise ValueError(f"{path} was trained on blocks {head.metadata.get('blocks')}")


class BlockFeatures:
    """An image's block features: the mean over its tiles of the pooled block outputs (712-d).

    The head is linear, so its log-odds on this mean equal the mean of its log-odds over the
    tiles: the training service caches these rows and scores them exactly as the stage does.
    """

    dimensions = sum(BLOCK_CHANNELS[index] for index in BLOCKS)

    def __init__(
        self, threads: int = DEFAULT_INTRA_OP_THREADS, max_tiles: int = DEFAULT_MAX_TILES
    ) -> None:
        if threads < 1 or max_tiles < 1:
            raise ValueError("intra_op_threads and max_tiles must be at least 1")
        self._threads = min(threads, usable_cpus())
        self._max_tiles = max_tiles
        self._session: ort.InferenceSession | None = None

    def load(self) -> None:
        """Build and compile the blocks graph (once)."""
        if self._session is None:
            model = build_blocks_model(load_weights(), BLOCKS)
            self._session = create_session(model, self._threads)

    def of_tiles(self, per_image: np.ndarray) -> np.ndarray:
        """(N, tiles, 64, 64, 3) uint8 tiles (``tiles.tiles`` per image) to (N, 712) float32."""
        self.load()
        assert self._session is not None
        count, per = per_image.shape[:2]
        flat = per_image.reshape(count * per, *per_image.shape[2:])
        features = []
        for start in range(0, len(flat), self._max_tiles):
            chunk = normalise_pixels(flat[start : start + self._max_tiles])
            features.append(self._session.run(None, {INPUT_NAME: chunk})[0])
        rows: np.ndarray = np.concatenate(features).reshape(count, per, -1).mean(axis=1)
        return rows.astype(np.float32)

    def of_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(N, 712) features of whole images, read by tiles."""
        return self.of_tiles(np.stack([tiles(image) for image in images]))


class MobileNetBlocksDetector:
    """Tiles → MobileNetV2 block features → probe log-odds, averaged per image.

    Options (``ModelSpec.options``): ``head`` (a head file instead of the shipped one),
    ``intra_op_threads`` (default 2, at most the CPUs this process may use) and
    ``max_tiles`` (tiles per network run, bounding memory; default 112).
    """

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        head = spec.options.get("head")
        self._head_path = Path(head) if head else shipped_head_path()
        self._features = BlockFeatures(
            int(spec.options.get("intra_op_threads", DEFAULT_INTRA_OP_THREADS)),
            int(spec.options.get("max_tiles", DEFAULT_MAX_TILES)),
        )
        self._provenance = ProvenanceDetector(
            ModelSpec("detect", "provenance", "provenance", spec.version)
        )
        self._head: ProbeHead | None = None
        self._version = spec.version

    @property
    def head(self) -> ProbeHead:
        """The loaded head (after :meth:`load`)."""
        if self._head is None:
            raise RuntimeError("load() not called")
        return self._head

    def load(self) -> None:
        """Load the head, check it was trained on these blocks of these weights, compile."""
        path = self._head_path
        head = ProbeHead.load(path)
        check_block_head(head, path)
        self._features.load()
        self._provenance.load()
        self._head = head
        self._version = f"{self.spec.version}+{head.digest()[:12]}"

    def logits(self, batch: Sequence[FetchedImage]) -> np.ndarray:
        """Each image's mean log-odds over its tiles."""
        features = self._features.of_images([image.decoded.image for image in batch])
        return self.head.logits(features)

    def predict(self, batch: Sequence[FetchedImage]) -> list[Detection]:
        """Return one verdict per image."""
        probabilities = sigmoid(self.logits(batch))
        return verdicts(
            self.head, probabilities, batch, self.spec.label, self._version, self._provenance
        )


register("detect", "mobilenet-blocks")(MobileNetBlocksDetector)
