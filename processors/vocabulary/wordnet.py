"""WordNet 3.0, read with NLTK's WordNet reader from a layout made at build time.

The tag stage reads WordNet from ``NLTK_ROOT`` (``<cache>/nltk-wordnet-3.0``) and never
fetches it: ``deeptrust-dev wordnet`` (``make`` runs it; the image bakes it) lays Debian's
``wordnet-base`` out there, as ``deeptrust/devtools/wordnet.py`` says. A missing layout is
a configuration error with the command that fixes it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import nltk
from nltk.corpus.reader.wordnet import WordNetCorpusReader

from deeptrust.cache import CACHE_DIR

NLTK_ROOT = CACHE_DIR / "nltk-wordnet-3.0"
LAY_OUT_COMMAND = "deeptrust-dev wordnet"


class WordNetMissing(RuntimeError):
    """WordNet was not laid out at build time where the tag stage reads it."""


class _WordNet30Reader(WordNetCorpusReader):  # type: ignore[misc]
    """NLTK's reader, minus the mapping from another WordNet version (this is 3.0)."""

    def map_wn(self, version: str = "wordnet") -> None:
        """No mapping: NLTK would build an identity map from ``index.sense``, absent here."""
        return None


def wordnet_corpus(root: Path = NLTK_ROOT) -> Path:
    """The folder NLTK's reader opens: ``<root>/corpora/wordnet``."""
    return root / "corpora" / "wordnet"


def open_wordnet(root: Path = NLTK_ROOT) -> WordNetCorpusReader:
    """Return a WordNet 3.0 reader over the layout under ``root``."""
    corpus = wordnet_corpus(root)
    if not (corpus / "lexnames").exists():
        raise WordNetMissing(
            f"WordNet 3.0 is not laid out in {corpus}: run `{LAY_OUT_COMMAND}` at build time "
            "(with XDG_CACHE_HOME set as the stage will see it)"
        )
    if str(root) not in nltk.data.path:
        nltk.data.path.append(str(root))
    with warnings.catch_warnings():  # "multilingual functions are not available": expected
        warnings.simplefilter("ignore", UserWarning)
        return _WordNet30Reader(str(corpus), None)
