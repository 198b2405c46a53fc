"""Canary by replay: a candidate model on replayed traffic, compared, gated, promoted."""
