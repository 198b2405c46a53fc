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
        threads = int(spec.options.get("intra_op_threads", DEFAULT_INTRA_OP_THREADS))
        self._threads = min(threads, usable_cpus())
        self._max_tiles = int(spec.options.get("max_tiles", DEFAULT_MAX_TILES))
        if self._threads < 1 or self._max_tiles < 1:
            raise ValueError("intra_op_threads and max_tiles must be at least 1")
        self._provenance = ProvenanceDetector(
            ModelSpec("detect", "provenance", "provenance", spec.version)
        )
        self._head: ProbeHead | None = None
        self._session: ort.InferenceSession | None = None
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
        width = sum(BLOCK_CHANNELS[index] for index in BLOCKS)
        if head.dimensions != width:
            raise ValueError(f"{path} takes {head.dimensions}-d features, not {width}")
        if head.metadata.get("backbone_weights_sha256") != WEIGHTS_SHA256:
            raise ValueError(f"{path} was not trained on these backbone weights")
        if tuple(head.metadata.get("blocks", ())) != BLOCKS:
            raise ValueError(f"{path} was trained on blocks {head.metadata.get('blocks')}")
        self._session = create_session(build_blocks_model(load_weights(), BLOCKS), self._threads)
        self._provenance.load()
        self._head = head
        self._version = f"{self.spec.version}+{head.digest()[:12]}"

    def logits(self, batch: Sequence[FetchedImage]) -> np.ndarray:
        """Each image's mean log-odds over its tiles."""
        head, session = self.head, self._session
        assert session is not None
        pixels = np.concatenate([tiles(image.decoded.image) for image in batch])
        features = []
        for start in range(0, len(pixels), self._max_tiles):
            chunk = normalise_pixels(pixels[start : start + self._max_tiles])
            features.append(session.run(None, {INPUT_NAME: chunk})[0])
        per_tile = head.logits(np.concatenate(features))
        means: np.ndarray = per_tile.reshape(len(batch), TILES_PER_IMAGE).mean(axis=1)
        return means

    def predict(self, batch: Sequence[FetchedImage]) -> list[Detection]:
        """Return one verdict per image."""
        probabilities = sigmoid(self.logits(batch))
        return verdicts(
            self.head, probabilities, batch, self.spec.label, self._version, self._provenance
        )


register("detect", "mobilenet-blocks")(MobileNetBlocksDetector)
