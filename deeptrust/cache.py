"""Where DeepTrust keeps what it builds or fetches once: ``$XDG_CACHE_HOME/deeptrust``.

Runtime data laid out at build time (WordNet, the vocabulary's embeddings) and the
developer tools' downloads (Kafka's jars, Debian packages) share this root, so an image
bakes it by setting ``XDG_CACHE_HOME`` and a laptop keeps it in ``~/.cache``.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "deeptrust"
