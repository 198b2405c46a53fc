"""Free tags onto the controlled vocabulary, then up WordNet to the broader terms.

A tag is resolved by the first of these that answers:

1. **exact**: it is a vocabulary term (case and spacing aside), e.g. ``Golden  Retriever``.
2. **wordnet**: its WordNet base form (``morphy``: ``puppies`` → ``puppy``) has a noun
   sense in the vocabulary that is either the word's first (most frequent) sense or one
   the SemCor-tagged corpus has seen it used in (``ladybird`` → ``ladybug``,
   ``automobile`` → ``car``; ``machine`` is not ``car``, a rare sense); failing that, the
   first sense's direct hypernym is in the vocabulary (``puppy`` → ``dog``,
   ``cappuccino`` → ``coffee``).
   A phrase that neither route knows is tried again by its last word, its head noun in
   English (``snowy mountain`` → ``mountain``; not across ``of``: ``crowd of people``).
3. **embedding**: the nearest vocabulary term by all-MiniLM-L6-v2 cosine, if at least
   ``threshold`` (``kitten`` → ``cat``, ``smartphone`` → ``cellular telephone``); the tags
   left in a batch go through the model together.

Anything else is dropped and counted. The broader terms are the WordNet hypernyms of the
resolved terms (instance hypernyms too) that are themselves vocabulary terms, nearest
first: ``ladybug`` → ``beetle``, ``insect``, ``animal``. Everything is deterministic: a
tag always resolves the same way, and ties go to the alphabetically first term.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from nltk.corpus.reader.wordnet import Synset, WordNetCorpusReader

from deeptrust.cache import CACHE_DIR
from deeptrust.processors.vocabulary.minilm import MiniLMEncoder
from deeptrust.processors.vocabulary.terms import TERMS_FILE, read_terms
from deeptrust.processors.vocabulary.wordnet import open_wordnet

DEFAULT_THRESHOLD = 0.65
"""Lowest cosine for an embedding match; measured in ``docs/tags.md``."""
EMBEDDINGS_CACHE = CACHE_DIR / "vocabulary"
"""Where the vocabulary's embeddings are kept between starts (a few seconds to compute)."""
_CACHE_LIMIT = 100_000
_SPACES = re.compile(r"[\s_]+")
Route = Literal["exact", "wordnet", "embedding"]


@dataclass(frozen=True)
class Match:
    """The vocabulary term a tag resolved to, how, and the cosine if by embedding."""

    term: str
    route: Route
    score: float = 1.0


@dataclass(frozen=True)
class NormalisedTags:
    """One caption's tags on the vocabulary: its terms, their broader terms, the rest."""

    values: list[str]
    broader: list[str]
    dropped: list[str]


class TagMapper:
    """Maps free tags onto the vocabulary and expands them; load once, then reuse."""

    def __init__(
        self,
        threshold: float = DEFAULT_THRESHOLD,
        intra_op_threads: int = 1,
        terms_file: Path = TERMS_FILE,
        cache_dir: Path = EMBEDDINGS_CACHE,
    ) -> None:
        self.threshold = threshold
        self.counts: Counter[str] = Counter()
        """How many tags resolved by each route, and how many were ``dropped``."""
        self._terms_file = terms_file
        self._cache_dir = cache_dir
        self._encoder = MiniLMEncoder(intra_op_threads)
        self._wordnet: WordNetCorpusReader | None = None
        self._terms: list[str] = []
        self._term_by_synset: dict[str, str] = {}
        self._broader: dict[str, list[str]] = {}
        self._embeddings = np.zeros((0, 0), np.float32)
        self._cache: dict[str, Match | None] = {}

    def load(self) -> None:
        """Read WordNet and the vocabulary, embed every term, precompute the expansions."""
        self._wordnet = open_wordnet()
        vocabulary = read_terms(self._terms_file)
        self._terms = [entry.term for entry in vocabulary]
        self._term_by_synset = {entry.synset: entry.term for entry in vocabulary}
        self._broader = {
            entry.term: self._vocabulary_ancestors(self._wordnet.synset(entry.synset))
            for entry in vocabulary
        }
        self._encoder.load()
        self._embeddings = self._term_embeddings()

    def _term_embeddings(self) -> np.ndarray:
        """The vocabulary's embeddings, kept in the cache under a digest of what made them."""
        digest = hashlib.sha256(
            "\n".join([self._encoder.fingerprint, *self._terms]).encode()
        ).hexdigest()
        path = self._cache_dir / f"minilm-{digest[:24]}.npy"
        if path.exists():
            cached: np.ndarray = np.load(path)
            return cached
        embeddings = self._encoder.encode(self._terms)
        self._cache_dir.mkdir(parents=True, exist_ok=True)
        staging = path.with_suffix(f".{os.getpid()}.tmp")
        with staging.open("wb") as file:
            np.save(file, embeddings)
        staging.replace(path)
        return embeddings

    @property
    def terms(self) -> list[str]:
        """Every vocabulary term."""
        return list(self._terms)

    def broader(self, term: str) -> list[str]:
        """The vocabulary terms above ``term`` in WordNet, nearest first."""
        return list(self._broader[term])

    def match(self, tags: Sequence[str]) -> list[Match | None]:
        """Resolve each tag (``None``: no term close enough), embedding the rest in one batch."""
        if len(self._cache) > _CACHE_LIMIT:
            self._cache.clear()
        keys = [_key(tag) for tag in tags]
        unseen = [key for key in dict.fromkeys(keys) if key and key not in self._cache]
        for key in unseen:
            self._cache[key] = self._lexical_match(key)
        left = [key for key in unseen if self._cache[key] is None]
        for key, nearest in zip(left, self._nearest_terms(left), strict=True):
            self._cache[key] = nearest
        return [self._accepted(self._cache[key]) if key else None for key in keys]

    def _accepted(self, found: Match | None) -> Match | None:
        """Apply the threshold (kept out of the cache, so it may change)."""
        if found is not None and found.route == "embedding" and found.score < self.threshold:
            return None
        return found

    def normalise(self, batch: Sequence[Sequence[str]]) -> list[NormalisedTags]:
        """Map and expand each caption's tags; all captions' tags share one model call."""
        flat = [tag for tags in batch for tag in tags]
        matches = iter(self.match(flat))
        results = []
        for tags in batch:
            values: list[str] = []
            dropped: list[str] = []
            for tag in tags:
                found = next(matches)
                self.counts[found.route if found else "dropped"] += 1
                if found is None:
                    dropped.append(tag)
                elif found.term not in values:
                    values.append(found.term)
            above = (b for term in values for b in self._broader[term] if b not in values)
            results.append(NormalisedTags(values, list(dict.fromkeys(above)), dropped))
        return results

    def _lexical_match(self, key: str) -> Match | None:
        """The exact and WordNet routes, for the tag and then for its head noun."""
        found = self._word_match(key)
        words = key.split(" ")
        if found is None and len(words) > 1 and "of" not in words:
            found = self._word_match(words[-1])  # English noun phrases end in their head
        return found

    def _word_match(self, key: str) -> Match | None:
        if key in self._broader:
            return Match(key, "exact")
        base = self._base_form(key)
        if base is None:
            return None
        assert self._wordnet is not None
        # Proper names ("Nice", "Grey") are not what a lower-case tag means.
        lemmas = [x for x in self._wordnet.lemmas(base, "n") if not x.synset().instance_hypernyms()]
        if not lemmas:
            return None
        for rank, lemma in enumerate(lemmas):
            term = self._term_by_synset.get(lemma.synset().name())
            if term is not None and (rank == 0 or lemma.count() > 0):
                return Match(term, "wordnet")
        for parent in sorted(lemmas[0].synset().hypernyms()):
            if parent.name() in self._term_by_synset:
                return Match(self._term_by_synset[parent.name()], "wordnet")
        return None

    def _base_form(self, key: str) -> str | None:
        """The WordNet noun lemma of ``key`` (``puppies`` → ``puppy``), if it has one."""
        assert self._wordnet is not None, "load() not called"
        for form in dict.fromkeys([key, key.replace("-", " ")]):
            base: str | None = self._wordnet.morphy(form.replace(" ", "_"), "n")
            if base is not None and self._wordnet.lemmas(base, "n"):
                return base
        return None

    def _nearest_terms(self, keys: list[str]) -> list[Match]:
        """The embedding route, for all of ``keys`` in one batch: each key's nearest term."""
        if not keys:
            return []
        texts = [(self._base_form(key) or key).replace("_", " ") for key in keys]
        scores = self._encoder.encode(texts) @ self._embeddings.T
        best = scores.argmax(axis=1)
        return [
            Match(self._terms[index], "embedding", float(row[index]))
            for row, index in zip(scores, best, strict=True)
        ]

    def _vocabulary_ancestors(self, synset: Synset) -> list[str]:
        """Breadth-first up the hypernyms, keeping vocabulary terms by distance, then name."""
        distance: dict[str, int] = {}
        frontier, depth = [synset], 0
        while frontier:
            depth += 1
            parents = {p for s in frontier for p in s.hypernyms() + s.instance_hypernyms()}
            frontier = [p for p in parents if p.name() not in distance]
            for parent in frontier:
                distance[parent.name()] = depth
        found = [
            (d, self._term_by_synset[n]) for n, d in distance.items() if n in self._term_by_synset
        ]
        return [term for _, term in sorted(found)]


def _key(tag: str) -> str:
    """A tag as the vocabulary spells terms: lower case, single spaces."""
    return _SPACES.sub(" ", tag.strip().lower())
