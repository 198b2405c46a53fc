"""Train the pixel-based AI-image detector: `python -m training.detector` (see docs/detector.md)."""
