"""Production backends on transformers/torch (ViT detect and embed, BLIP captions) and ONNX.

Importing the package registers them without importing torch or transformers: those load
in ``load()``, so the runtime image can list the backends and only a stage that selects one
needs the libraries (and, for hub ids, hub access). ``make test-torch`` tests their loading
on tiny random-weight models built in the test.
"""

from deeptrust.processors.transformers_backends import blip, onnx_vit, vit

__all__ = ["blip", "onnx_vit", "vit"]
