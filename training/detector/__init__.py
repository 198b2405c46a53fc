"""Train the pixel-based AI-image detector: `python -m deeptrust.training.detector`.

See docs/detector.md.
"""
