"""Offline evaluation for the training service: detection, calibration, slices, captions.

Every function returns plain numbers (``name -> float``, ready to log as metrics) or the
paths of the files it wrote, so the caller decides where they go.
"""
