"""Images for the browser: fetched through the store's policy, re-encoded as JPEG.

The console never serves a file path or the stored bytes as they are: the image is fetched
by its event's URI through the object store (whose fetch policy refuses anything outside
its roots or buckets), decoded within the pixel limit, and re-encoded. So every accepted
format (HEIC included) shows in any browser, and nothing a browser might run (an SVG, a
polyglot file) ever reaches it. Thumbnails are cached in memory, a few hundred at most.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict

from deeptrust.streams.images import DEFAULT_MAX_PIXELS, fetch_image
from deeptrust.streams.objectstore import ObjectStore

CACHE_SIZE = 512


class Thumbnails:
    """JPEG renderings of stored images, at most ``size`` pixels on their longer side."""

    def __init__(self, store: ObjectStore, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self._store = store
        self._max_pixels = max_pixels
        self._cache: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def jpeg(self, uri: str, size: int) -> bytes:
        """The image behind ``uri`` as a JPEG; raises ``InvalidInput`` when it cannot be."""
        key = (uri, size)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        image = fetch_image(self._store, uri, self._max_pixels).decoded.image
        image.thumbnail((size, size))
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=85)
        data = out.getvalue()
        with self._lock:
            self._cache[key] = data
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return data
