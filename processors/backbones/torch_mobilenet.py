# mypy: allow-subclassing-any
# (torch is absent where mypy runs, so nn.Module is Any; the modules subclass it all the same.)
"""ImageNet MobileNetV2 on plain torch: the ``embed``/``torch-mobilenet-v2`` backend.

The same network, weights and pre-processing as the ONNX Runtime backend
(:mod:`deeptrust.processors.backbones.mobilenet_v2`), written as torch modules whose parameter names
are torchvision's, so ``load_state_dict`` takes the state dict that ``load_weights()``
reads. It exists for GPUs (``device=cuda``, in float32, float16 or bfloat16) and as the
reference the benchmark ``bench/backend_comparison.py`` measures ONNX Runtime against; on
a CPU the ONNX Runtime backend is the default.

torch is imported in ``load()``, never at import: the runtime environment has no torch, and
importing this module there only registers the backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import numpy as np
from PIL import Image

from deeptrust.processors.backbones.mobilenet_v2 import (
    BATCH_NORM_EPS,
    CROP,
    DEFAULT_INTRA_OP_THREADS,
    DEFAULT_MAX_BATCH,
    EMBEDDING_DIMENSIONS,
    INVERTED_RESIDUAL_SETTING,
    NUM_CLASSES,
    STEM_CHANNELS,
    BackboneOutput,
    LabelScore,
    l2_normalise,
    load_weights,
    preprocess,
    top_k,
    usable_cpus,
)
from deeptrust.processors.models import ModelSpec, register

DEVICES = ("cpu", "cuda")
DTYPES = ("float32", "float16", "bfloat16")
DROPOUT = 0.2  # torchvision's; inactive in eval mode, kept so the module matches its layout


@cache
def network_class() -> Any:
    """Define the torch modules on first use, so that torch is imported only then."""
    import torch
    from torch import nn

    def conv_bn_relu6(
        in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1
    ) -> Any:
        """Convolution, BatchNorm, ReLU6: torchvision's ``Conv2dNormActivation`` layout."""
        return nn.Sequential(
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel,
                stride=stride,
                padding=(kernel - 1) // 2,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels, eps=BATCH_NORM_EPS),
            nn.ReLU6(inplace=True),
        )

    class InvertedResidual(nn.Module):
        """Expand (1x1), depthwise 3x3, project (1x1, linear); add the input if shapes allow."""

        def __init__(self, in_channels: int, out_channels: int, stride: int, t: int) -> None:
            super().__init__()
            hidden = in_channels * t
            layers = [] if t == 1 else [conv_bn_relu6(in_channels, hidden, 1)]
            layers += [
                conv_bn_relu6(hidden, hidden, 3, stride=stride, groups=hidden),
                nn.Conv2d(hidden, out_channels, 1, bias=False),
                nn.BatchNorm2d(out_channels, eps=BATCH_NORM_EPS),
            ]
            self.conv = nn.Sequential(*layers)
            self.residual = stride == 1 and in_channels == out_channels

        def forward(self, x: Any) -> Any:
            y = self.conv(x)
            return x + y if self.residual else y

    class MobileNetV2Network(nn.Module):
        """``features`` then global average pooling (the embedding) then ``classifier``."""

        def __init__(self) -> None:
            super().__init__()
            blocks = [conv_bn_relu6(3, STEM_CHANNELS, 3, stride=2)]
            channels = STEM_CHANNELS
            for t, c, n, s in INVERTED_RESIDUAL_SETTING:
                for repeat in range(n):
                    blocks.append(InvertedResidual(channels, c, s if repeat == 0 else 1, t))
                    channels = c
            blocks.append(conv_bn_relu6(channels, EMBEDDING_DIMENSIONS, 1))
            self.features = nn.Sequential(*blocks)
            self.classifier = nn.Sequential(
                nn.Dropout(DROPOUT), nn.Linear(EMBEDDING_DIMENSIONS, NUM_CLASSES)
            )

        def forward(self, x: Any) -> tuple[Any, Any]:
            """Return the pooled features (N, 1280) and the logits (N, 1000)."""
            pooled = torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1)
            return pooled, self.classifier(pooled)

    return MobileNetV2Network


def build_network(state: Mapping[str, np.ndarray]) -> Any:
    """Return the network with torchvision's ``state`` dict loaded, in eval mode, on the CPU.

    ``strict`` loading: a missing or unexpected parameter name is an error, which is what
    proves the module layout is torchvision's.
    """
    import torch

    network = network_class()()
    # torch.tensor copies: the reader's arrays may be read-only views of the file's bytes.
    network.load_state_dict({name: torch.tensor(array) for name, array in state.items()})
    return network.eval()


class TorchMobileNetV2:
    """The backbone on torch: batches of PIL images in, L2-normalised 1280-d features out.

    Options (``ModelSpec.options``): ``device`` (``cpu``, the default, or ``cuda``/``cuda:N``),
    ``dtype`` (``float32``; ``float16`` and ``bfloat16`` on cuda only, where they have fast
    kernels), ``intra_op_threads`` (default 2, at most the CPUs this process may run on;
    torch has one intra-op pool per process, so this sets it for the whole process) and
    ``max_batch`` (default 32: images per forward pass, bounding activation memory) and
    ``channels_last`` (``true``, the default, or ``false``): activations in NHWC order,
    which oneDNN's and cuDNN's convolutions prefer; on the 2-core development VM it took
    batched float32 from about 35 to 23 ms/image, with the same results to float rounding.
    """

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.device_name = spec.options.get("device", "cpu")
        if self.device_name.split(":")[0] not in DEVICES:
            raise ValueError(f"device must be cpu, cuda or cuda:N, not {self.device_name!r}")
        self.dtype_name = spec.options.get("dtype", "float32")
        if self.dtype_name not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, not {self.dtype_name!r}")
        if self.dtype_name != "float32" and not self.device_name.startswith("cuda"):
            raise ValueError(f"dtype {self.dtype_name} needs a cuda device, not {self.device_name}")
        threads = int(spec.options.get("intra_op_threads", DEFAULT_INTRA_OP_THREADS))
        self.intra_op_threads = min(threads, usable_cpus())
        self.max_batch = int(spec.options.get("max_batch", DEFAULT_MAX_BATCH))
        if self.intra_op_threads < 1 or self.max_batch < 1:
            raise ValueError("intra_op_threads and max_batch must be at least 1")
        channels_last = spec.options.get("channels_last", "true").lower()
        if channels_last not in {"true", "false"}:
            raise ValueError(f"channels_last must be true or false, not {channels_last!r}")
        self.channels_last = channels_last == "true"
        self.network: Any = None  # the torch module, after load()
        self._device: Any = None
        self._dtype: Any = None
        self._memory_format: Any = None

    def load(self) -> None:
        """Build the network from the verified weights, move it to the device, run it once."""
        import torch

        self._device = torch.device(self.device_name)
        if self._device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {self.device_name} requested, but torch sees no CUDA GPU")
        self._dtype = getattr(torch, self.dtype_name)
        self._memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        torch.set_num_threads(self.intra_op_threads)
        network = build_network(load_weights())
        self.network = network.to(
            device=self._device, dtype=self._dtype, memory_format=self._memory_format
        )
        self.run_pixels(np.zeros((1, 3, CROP, CROP), dtype=np.float32))

    def run_pixels(self, pixels: np.ndarray) -> BackboneOutput:
        """Run the network on pre-processed images (N, 3, 224, 224); float32 numpy out."""
        import torch

        if self.network is None:
            raise RuntimeError("load() not called")
        with torch.inference_mode():
            x = torch.from_numpy(pixels).to(
                device=self._device, dtype=self._dtype, memory_format=self._memory_format
            )
            pooled, logits = self.network(x)
            return BackboneOutput(pooled.float().cpu().numpy(), logits.float().cpu().numpy())

    def infer(self, batch: Sequence[Image.Image]) -> BackboneOutput:
        """Pre-process ``batch`` and run it, ``max_batch`` images per forward pass."""
        outputs = []
        for start in range(0, len(batch), self.max_batch):
            chunk = batch[start : start + self.max_batch]
            outputs.append(self.run_pixels(np.stack([preprocess(image) for image in chunk])))
        if not outputs:
            empty = np.zeros((0, EMBEDDING_DIMENSIONS), np.float32)
            return BackboneOutput(empty, np.zeros((0, NUM_CLASSES), np.float32))
        return BackboneOutput(
            np.concatenate([o.features for o in outputs]),
            np.concatenate([o.logits for o in outputs]),
        )

    def predict(self, batch: Sequence[Image.Image]) -> list[list[float]]:
        """Return one L2-normalised 1280-d embedding per image."""
        vectors: list[list[float]] = l2_normalise(self.infer(batch).features).tolist()
        return vectors

    def top_labels(self, batch: Sequence[Image.Image], k: int = 5) -> list[list[LabelScore]]:
        """Return the ``k`` most probable ImageNet classes per image, most probable first."""
        return top_k(self.infer(batch).logits, k)


register("embed", "torch-mobilenet-v2")(TorchMobileNetV2)
