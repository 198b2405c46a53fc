"""Whether a photograph shows a face, for the faces slice: OpenCV's Haar cascade, offline.

``opencv-python-headless`` ships the cascades in ``cv2.data``, so nothing is downloaded at
run time. The frontal-face ``alt2`` cascade is used: on the sample photographs it finds the
two portraits' faces and, unlike the ``default`` cascade, no faces among the coins. It
finds frontal faces of about 24 px and up; profiles and small faces in crowds are missed,
so "no faces" means "no clear frontal face".
"""

from __future__ import annotations

import importlib
from typing import Protocol

import numpy as np
from PIL import Image

CASCADE = "haarcascade_frontalface_alt2.xml"
MAX_SIDE = 1024  # larger images are reduced first: faces stay well above the minimum size
MIN_FACE = 24
SCALE_STEP = 1.1
MIN_NEIGHBOURS = 5


class FaceCounter(Protocol):
    """Counts the faces in an image."""

    def __call__(self, image: Image.Image) -> int:
        """How many faces ``image`` shows."""
        ...


class HaarFaceCounter:
    """OpenCV's frontal-face Haar cascade on the histogram-equalised grey image."""

    def __init__(self) -> None:
        """Load the cascade shipped inside the OpenCV wheel (ImportError without OpenCV)."""
        # Imported here, by name: OpenCV is optional, needed only when the faces slice is wanted.
        cv2 = importlib.import_module("cv2")
        self._cv2 = cv2
        self._cascade = cv2.CascadeClassifier(str(cv2.data.haarcascades) + CASCADE)
        if self._cascade.empty():
            raise RuntimeError(f"OpenCV could not load its {CASCADE}")

    def __call__(self, image: Image.Image) -> int:
        """How many frontal faces the cascade finds in ``image``."""
        grey = image.convert("L")
        grey.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BILINEAR)
        pixels = self._cv2.equalizeHist(np.asarray(grey, np.uint8))
        found = self._cascade.detectMultiScale(
            pixels,
            scaleFactor=SCALE_STEP,
            minNeighbors=MIN_NEIGHBOURS,
            minSize=(MIN_FACE, MIN_FACE),
        )
        return len(found)


def haar_face_counter() -> HaarFaceCounter | None:
    """The Haar counter, or None where OpenCV is not installed (the slice is then left out)."""
    try:
        return HaarFaceCounter()
    except ImportError:
        return None
