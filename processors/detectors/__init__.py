"""Learned detectors: heads trained by the project on top of the backbones.

Importing the package registers them (``detect``: ``mobilenet-blocks``, the default, and
``mobilenet-probe``); the heads and the backbone load in ``load()``, never at import.
"""

from deeptrust.processors.detectors import block_probe, mobilenet_probe

__all__ = ["block_probe", "mobilenet_probe"]
