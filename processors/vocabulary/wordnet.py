"""WordNet 3.0 from Debian's ``wordnet-base`` package, read with NLTK's WordNet reader.

Debian ships the database files (``data.noun``, ``index.noun``, ``noun.exc``...) but not
two files NLTK's reader expects: ``lexnames`` and ``index.sense``.

- ``lexnames`` (the 45 lexicographer file names) is written from the table in the same
  package's ``lexnames(5WN)`` manual page, so it comes from the package, not from memory.
- ``index.sense`` is read by NLTK only to map another WordNet version onto the loaded one
  (for the Open Multilingual WordNet); this *is* WordNet 3.0, so that mapping is skipped.

NLTK opens corpora only below its data roots, and refuses symlinks and hard links that could
point outside them, so the files are copied (28 MB, once) into the layout NLTK wants,
``<root>/corpora/wordnet``, under the user's cache. The Debian tree is left untouched.
"""

from __future__ import annotations

import gzip
import re
import shutil
import tempfile
import warnings
from pathlib import Path

import nltk
from nltk.corpus.reader.wordnet import WordNetCorpusReader

from deeptrust.debian import debian_package
from deeptrust.streams.local_broker import CACHE_DIR

DEBIAN_PACKAGE = "wordnet-base"
NLTK_ROOT = CACHE_DIR / "nltk-wordnet-3.0"
_DATABASE = Path("usr/share/wordnet")
_LEXNAMES_MANUAL = Path("usr/share/man/man5/lexnames.5WN.gz")
_LEXNAME_ROW = re.compile(r"^(\d\d)\t\s*([a-z]+\.[A-Za-z]+)\s*\t")
_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


class _WordNet30Reader(WordNetCorpusReader):  # type: ignore[misc]
    """NLTK's reader, minus the mapping from another WordNet version (this is 3.0)."""

    def map_wn(self, version: str = "wordnet") -> None:
        """No mapping: NLTK would build an identity map from ``index.sense``, absent here."""
        return None


def open_wordnet(root: Path = NLTK_ROOT) -> WordNetCorpusReader:
    """Return a WordNet 3.0 reader, fetching and laying out the Debian files once."""
    corpus = root / "corpora" / "wordnet"
    if not (corpus / "lexnames").exists():
        _lay_out(debian_package(DEBIAN_PACKAGE), corpus)
    if str(root) not in nltk.data.path:
        nltk.data.path.append(str(root))
    with warnings.catch_warnings():  # "multilingual functions are not available": expected
        warnings.simplefilter("ignore", UserWarning)
        return _WordNet30Reader(str(corpus), None)


def lexnames_from_manual(manual: str) -> str:
    """Return the ``lexnames`` file (``NN<TAB>name<TAB>category``) from its manual page."""
    rows = [match.groups() for match in map(_LEXNAME_ROW.match, manual.splitlines()) if match]
    if [int(number) for number, _ in rows] != list(range(45)):
        raise ValueError("the lexnames manual page does not list files 00 to 44")
    return "".join(f"{n}\t{name}\t{_CATEGORY[name.split('.')[0]]}\n" for n, name in rows)


def _lay_out(package: Path, corpus: Path) -> None:
    """Copy the database and write ``lexnames`` into ``corpus``, atomically."""
    corpus.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".wordnet-", dir=corpus.parent))
    try:
        for source in sorted((package / _DATABASE).iterdir()):
            shutil.copyfile(source, staging / source.name)
        manual = gzip.decompress((package / _LEXNAMES_MANUAL).read_bytes()).decode()
        (staging / "lexnames").write_text(lexnames_from_manual(manual))
        try:
            staging.rename(corpus)
        except OSError:  # another process laid it out first
            if not (corpus / "lexnames").exists():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging)
