"""Export a transformers ViT classifier to one self-contained ONNX file.

``python -m deeptrust.processors.transformers_backends.onnx_export SRC_DIR OUT.onnx`` (or
:func:`export_vit`) writes a graph with a dynamic batch axis, input ``pixel_values`` (N, 3,
H, W) and two outputs: ``logits`` (N, classes) and ``embedding`` (N, hidden), the CLS token
the classifier head reads, so one file serves both ``detect`` and ``embed``
(:mod:`deeptrust.processors.transformers_backends.onnx_vit`). The image processor's settings and the
model's ``id2label`` go into the file's metadata, so the runtime needs neither torch nor
transformers nor the source directory. Needs the ``train`` extra (torch, transformers,
onnxscript).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import onnx

OPSET = 18
INPUT_NAME, LOGITS_OUTPUT, EMBEDDING_OUTPUT = "pixel_values", "logits", "embedding"
PREPROCESSOR_KEY = "deeptrust.preprocessor"
ID2LABEL_KEY = "deeptrust.id2label"
SOURCE_KEY = "deeptrust.source"
# How far the wrapper's logits may drift from the model's own forward before export refuses.
SELF_CHECK_ATOL = 1e-5


def _wrapper(model: Any) -> Any:
    """A module returning (logits, CLS embedding) from one pass of a ViT-style classifier."""
    import torch

    class LogitsAndEmbedding(torch.nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values: Any) -> tuple[Any, Any]:
            hidden = self.model.base_model(pixel_values=pixel_values).last_hidden_state
            cls = hidden[:, 0]
            return self.model.classifier(cls), cls

    return LogitsAndEmbedding().eval()


def export_vit(src: str | Path, out: str | Path, opset: int = OPSET) -> Path:
    """Export the classifier saved at ``src`` (directory or hub id) to ``out``; return ``out``."""
    import torch
    import transformers

    processor = transformers.AutoImageProcessor.from_pretrained(str(src))
    model = transformers.AutoModelForImageClassification.from_pretrained(
        str(src), dtype=torch.float32
    ).eval()
    if not hasattr(model, "classifier") or not hasattr(model.base_model, "forward"):
        raise ValueError(f"{src} is not a ViT-style classifier (base model + classifier head)")
    size = getattr(model.config, "image_size", 224)
    example = torch.randn(2, 3, size, size)
    wrapper = _wrapper(model)
    with torch.inference_mode():
        expected = model(pixel_values=example).logits
        got, _ = wrapper(example)
    if not torch.allclose(expected, got, atol=SELF_CHECK_ATOL):
        raise ValueError(f"{src}: head on the CLS token is not what the model computes")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(
        wrapper,
        (example,),
        str(out),
        input_names=[INPUT_NAME],
        output_names=[LOGITS_OUTPUT, EMBEDDING_OUTPUT],
        dynamic_shapes={"pixel_values": {0: batch}},
        opset_version=opset,
        dynamo=True,
        external_data=False,
    )
    graph = onnx.load(str(out), load_external_data=False)
    metadata = {
        PREPROCESSOR_KEY: json.dumps(processor.to_dict()),
        ID2LABEL_KEY: json.dumps({str(k): v for k, v in model.config.id2label.items()}),
        SOURCE_KEY: str(src),
    }
    for key, value in metadata.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(graph)
    onnx.save(graph, str(out))
    return out


def main(argv: list[str] | None = None) -> None:
    """The command line: SRC_DIR OUT.onnx [--opset N]."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("src", help="a save_pretrained directory or hub id")
    parser.add_argument("out", type=Path, help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=OPSET)
    args = parser.parse_args(argv)
    print(export_vit(args.src, args.out, args.opset))


if __name__ == "__main__":
    main()
