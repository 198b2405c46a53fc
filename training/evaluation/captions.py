"""Caption metrics from their papers: corpus BLEU-4 and CIDEr-D.

Both compare each generated caption with its image's reference captions, on the same
tokens: lower-cased words (letters, digits and inner apostrophes); punctuation dropped.

BLEU (Papineni et al., 2002): for n = 1..4, candidate n-gram counts are clipped to the
most any single reference holds, summed over the corpus, and divided by the candidate
n-gram total; BLEU-4 = BP exp(mean log p_n). The brevity penalty BP = exp(1 - r/c) when
the corpus candidate length c is at most r, the sum of each candidate's closest reference
length (ties go to the shorter reference), else 1. Smoothing: none by default (a zero
p_n makes BLEU 0, correct at corpus level); ``smoothing="add-one"`` adds one to numerator
and denominator for n >= 2 (Lin and Och, 2004), for a handful of captions.

CIDEr-D (Vedantam et al., 2015): each sentence becomes, per n, a TF-IDF vector: the
n-gram's count in the sentence times log(|I| / df), with |I| the number of images and df
the number of images whose references contain the n-gram (at least 1). Per reference,
CIDEr-D_n = exp(-(l_c - l_r)^2 / (2 sigma^2)) * sum_k min(g_k(c), g_k(r)) g_k(r) /
(|g(c)| |g(r)|), with sigma = 6 and lengths in words: the candidate's vector is clipped
by the reference's (no gain from repeating a word), and a length gap is penalised. The
image's score is 10 times the mean over its references and over n = 1..4, and the
corpus score the mean over images. A zero vector (a caption shorter than n) contributes 0.
Counts rather than length-normalised frequencies make the clipping a clipping of counts,
as the paper describes it and as published CIDEr-D scores are computed.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

MAX_N = 4
CIDER_SIGMA = 6.0
CIDER_SCALE = 10.0
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")

Ngram = tuple[str, ...]


def tokenize(text: str) -> list[str]:
    """Lower-cased words; punctuation is not a token."""
    return _WORD.findall(text.lower())


def ngrams(tokens: Sequence[str], n: int) -> Counter[Ngram]:
    """Counts of the n-grams of ``tokens``."""
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _paired(
    candidates: Mapping[str, str], references: Mapping[str, Sequence[str]]
) -> list[tuple[list[str], list[list[str]]]]:
    """Tokenised (candidate, references) per image; every candidate needs references."""
    pairs = []
    for image, candidate in candidates.items():
        refs = references.get(image)
        if not refs:
            raise ValueError(f"no reference captions for {image!r}")
        pairs.append((tokenize(candidate), [tokenize(ref) for ref in refs]))
    if not pairs:
        raise ValueError("no captions to score")
    return pairs


@dataclass(frozen=True)
class Bleu:
    """Corpus BLEU-4 with what it is made of."""

    score: float
    precisions: tuple[float, ...]
    brevity_penalty: float
    candidate_length: int
    reference_length: int


def _closest_length(length: int, references: Sequence[Sequence[str]]) -> int:
    """The reference length nearest ``length``; the shorter of two equally near."""
    return min((abs(len(ref) - length), len(ref)) for ref in references)[1]


def corpus_bleu(
    candidates: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    smoothing: Literal["none", "add-one"] = "none",
) -> Bleu:
    """BLEU-4 over the corpus: ``candidates`` by image id, ``references`` by the same ids."""
    matched = [0] * MAX_N
    total = [0] * MAX_N
    candidate_length = reference_length = 0
    for candidate, refs in _paired(candidates, references):
        candidate_length += len(candidate)
        reference_length += _closest_length(len(candidate), refs)
        for n in range(1, MAX_N + 1):
            counts = ngrams(candidate, n)
            most: Counter[Ngram] = Counter()
            for ref in refs:
                most |= ngrams(ref, n)  # | keeps the larger count of each n-gram
            matched[n - 1] += sum(min(count, most[gram]) for gram, count in counts.items())
            total[n - 1] += sum(counts.values())
    precisions = []
    for n in range(MAX_N):
        extra = 1 if smoothing == "add-one" and n >= 1 else 0
        denominator = total[n] + extra
        precisions.append((matched[n] + extra) / denominator if denominator else 0.0)
    if candidate_length == 0:
        penalty = 0.0
    elif candidate_length > reference_length:
        penalty = 1.0
    else:
        penalty = math.exp(1 - reference_length / candidate_length)
    if min(precisions) > 0:
        score = penalty * math.exp(sum(math.log(p) for p in precisions) / MAX_N)
    else:
        score = 0.0
    return Bleu(score, tuple(precisions), penalty, candidate_length, reference_length)


@dataclass(frozen=True)
class _Vector:
    """One sentence's TF-IDF vector for one n, its norm, and the sentence's length in words."""

    weights: dict[Ngram, float]
    norm: float
    length: int


def _tfidf(tokens: Sequence[str], n: int, log_images: float, df: Counter[Ngram]) -> _Vector:
    """Count x log(|I| / max(1, df)) per n-gram."""
    weights = {
        gram: count * (log_images - math.log(max(1, df[gram])))
        for gram, count in ngrams(tokens, n).items()
    }
    norm = math.sqrt(sum(value * value for value in weights.values()))
    return _Vector(weights, norm, len(tokens))


def _cider_d_n(candidate: _Vector, reference: _Vector) -> float:
    """One n's clipped, length-penalised cosine between a candidate and one reference."""
    if candidate.norm == 0 or reference.norm == 0:
        return 0.0
    overlap = sum(
        min(weight, reference.weights[gram]) * reference.weights[gram]
        for gram, weight in candidate.weights.items()
        if gram in reference.weights
    )
    gap = candidate.length - reference.length
    penalty = math.exp(-(gap * gap) / (2 * CIDER_SIGMA**2))
    return penalty * overlap / (candidate.norm * reference.norm)


def cider_d_per_image(
    candidates: Mapping[str, str], references: Mapping[str, Sequence[str]]
) -> dict[str, float]:
    """Each image's CIDEr-D, with document frequencies from the references of all images."""
    pairs = _paired(candidates, references)
    log_images = math.log(len(pairs))
    df = [Counter[Ngram]() for _ in range(MAX_N)]
    for _, refs in pairs:
        for n in range(1, MAX_N + 1):
            df[n - 1].update({gram for ref in refs for gram in ngrams(ref, n)})
    scores = {}
    for image, (candidate, refs) in zip(candidates, pairs, strict=True):
        per_n = []
        for n in range(1, MAX_N + 1):
            vector = _tfidf(candidate, n, log_images, df[n - 1])
            per_ref = [_cider_d_n(vector, _tfidf(ref, n, log_images, df[n - 1])) for ref in refs]
            per_n.append(sum(per_ref) / len(per_ref))
        scores[image] = CIDER_SCALE * sum(per_n) / MAX_N
    return scores


def cider_d(candidates: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> float:
    """Corpus CIDEr-D: the mean of the images' scores."""
    scores = cider_d_per_image(candidates, references)
    return sum(scores.values()) / len(scores)


def caption_metrics(
    candidates: Mapping[str, str], references: Mapping[str, Sequence[str]]
) -> dict[str, float]:
    """``bleu4``, its parts, and ``cider_d``, as flat metrics."""
    bleu = corpus_bleu(candidates, references)
    metrics = {"bleu4": bleu.score, "bleu_brevity_penalty": bleu.brevity_penalty}
    metrics |= {f"bleu_precision_{n}": p for n, p in enumerate(bleu.precisions, start=1)}
    metrics["cider_d"] = cider_d(candidates, references)
    return metrics
