"""Lay WordNet 3.0 out for the tag stage, at build time, from Debian's ``wordnet-base``.

Debian ships the database files (``data.noun``, ``index.noun``, ``noun.exc``...) but not
two files NLTK's reader expects: ``lexnames`` and ``index.sense``.

- ``lexnames`` (the 45 lexicographer file names) is written from the table in the same
  package's ``lexnames(5WN)`` manual page, so it comes from the package, not from memory.
- ``index.sense`` is read by NLTK only to map another WordNet version onto the loaded one
  (for the Open Multilingual WordNet); this *is* WordNet 3.0, so the reader skips it.

NLTK opens corpora only below its data roots, and refuses symlinks and hard links that could
point outside them, so the files are copied (28 MB, once) into the layout NLTK wants,
``<root>/corpora/wordnet``. The Debian tree is left untouched. ``deeptrust-dev wordnet``
runs this; ``make`` and the image's build do, so the runtime never shells out to apt.
"""

from __future__ import annotations

import gzip
import re
import shutil
import tempfile
from pathlib import Path

from deeptrust.devtools.debian import debian_package
from deeptrust.processors.vocabulary.wordnet import NLTK_ROOT, wordnet_corpus

DEBIAN_PACKAGE = "wordnet-base"
_DATABASE = Path("usr/share/wordnet")
_LEXNAMES_MANUAL = Path("usr/share/man/man5/lexnames.5WN.gz")
_LEXNAME_ROW = re.compile(r"^(\d\d)\t\s*([a-z]+\.[A-Za-z]+)\s*\t")
_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


def lay_out_wordnet(root: Path = NLTK_ROOT) -> Path:
    """Make sure WordNet is laid out under ``root``; return the corpus folder."""
    corpus = wordnet_corpus(root)
    if not (corpus / "lexnames").exists():
        _lay_out(debian_package(DEBIAN_PACKAGE), corpus)
    return corpus


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
