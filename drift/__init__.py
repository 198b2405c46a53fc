"""Drift monitoring over image embeddings: detectors first, the stream processor on top."""
