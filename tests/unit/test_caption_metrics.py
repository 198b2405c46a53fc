"""BLEU-4 and CIDEr-D on cases small enough to compute by hand (the working is in each test)."""

import math

import pytest

from deeptrust.training.evaluation.captions import (
    caption_metrics,
    cider_d,
    cider_d_per_image,
    corpus_bleu,
    tokenize,
)


def test_tokens_are_lower_case_words_without_punctuation():
    assert tokenize("A dog's toy, on the Grass .") == ["a", "dog's", "toy", "on", "the", "grass"]


# --- BLEU -----------------------------------------------------------------------------


def test_modified_unigram_precision_clips_to_the_reference_count():
    # Papineni et al.'s example: "the" occurs at most twice in one reference -> 2/7
    bleu = corpus_bleu(
        {"1": "the the the the the the the"},
        {"1": ["The cat is on the mat.", "There is a cat on the mat."]},
    )
    assert bleu.precisions[0] == pytest.approx(2 / 7)
    assert bleu.score == 0.0  # no bigram matches and no smoothing


def test_an_exact_match_scores_one():
    bleu = corpus_bleu({"1": "a man rides a horse"}, {"1": ["a man rides a horse", "a rider"]})
    assert bleu.score == pytest.approx(1.0)
    assert bleu.brevity_penalty == 1.0


def test_brevity_penalty_for_a_short_candidate():
    # c = 4, r = 6; every n-gram of the candidate is in the reference: BLEU = exp(1 - 6/4)
    bleu = corpus_bleu({"1": "the cat sat on"}, {"1": ["the cat sat on the mat"]})
    assert bleu.precisions == pytest.approx((1.0, 1.0, 1.0, 1.0))
    assert (bleu.candidate_length, bleu.reference_length) == (4, 6)
    assert bleu.score == pytest.approx(math.exp(-0.5))


def test_equally_close_references_count_the_shorter():
    # candidate of 5 words; references of 3 and 7 words are both 2 away: r = 3, so no penalty
    bleu = corpus_bleu(
        {"1": "a b c d e"},
        {"1": ["a b c", "a b c d e f g"]},
    )
    assert bleu.reference_length == 3
    assert bleu.brevity_penalty == 1.0


def test_corpus_bleu_sums_counts_over_images_rather_than_averaging_scores():
    # image 1 matches exactly; image 2 "e f g h" vs "e f x h":
    # p1 = (4 + 3) / 8, p2 = (3 + 1) / 6, p3 = (2 + 0) / 4, p4 = (1 + 0) / 2; BP = 1
    bleu = corpus_bleu(
        {"1": "a b c d", "2": "e f g h"},
        {"1": ["a b c d"], "2": ["e f x h"]},
    )
    assert bleu.precisions == pytest.approx((7 / 8, 4 / 6, 2 / 4, 1 / 2))
    assert bleu.score == pytest.approx((7 / 8 * 4 / 6 * 2 / 4 * 1 / 2) ** 0.25)
    # the mean of sentence scores would be (1 + 0) / 2: a different number
    assert bleu.score != pytest.approx(0.5)


def test_add_one_smoothing_for_n_of_two_and_more():
    # "a b c" vs "a b d": p1 = 2/3 unsmoothed; p2 = (1+1)/(2+1); p3 = (0+1)/(1+1); p4 = 1/1
    candidates, references = {"1": "a b c"}, {"1": ["a b d"]}
    assert corpus_bleu(candidates, references).score == 0.0
    smoothed = corpus_bleu(candidates, references, smoothing="add-one")
    assert smoothed.precisions == pytest.approx((2 / 3, 2 / 3, 1 / 2, 1.0))
    assert smoothed.score == pytest.approx((2 / 3 * 2 / 3 * 1 / 2 * 1.0) ** 0.25)


def test_a_candidate_without_references_is_an_error():
    with pytest.raises(ValueError, match="no reference"):
        corpus_bleu({"1": "a b"}, {"2": ["a b"]})


# --- CIDEr-D --------------------------------------------------------------------------
# With two images whose references share no n-gram, every reference n-gram has
# df = 1 and weight log(2 / 1) = L, and an n-gram no reference holds has weight
# log(2 / max(1, 0)) = L too. L cancels in every cosine below.


def test_cider_d_of_an_exact_match_and_of_a_disjoint_caption():
    # 4 words: cosines 1 for n = 1..4 -> 10 * 4/4 = 10; disjoint: 0; corpus mean 5
    scores = cider_d_per_image(
        {"1": "a man rides horse", "2": "blue sky"},
        {"1": ["a man rides horse"], "2": ["green field today"]},
    )
    assert scores == pytest.approx({"1": 10.0, "2": 0.0})


def test_cider_d_of_a_two_word_match_counts_only_n_up_to_two():
    # "c d" == "c d": cosines 1 for n = 1, 2; no trigrams or 4-grams: 10 * 2/4 = 5
    scores = cider_d_per_image({"1": "a b e f", "2": "c d"}, {"1": ["a b e f"], "2": ["c d"]})
    assert scores["2"] == pytest.approx(5.0)


def test_cider_d_clips_a_repeated_word():
    # image 1: "a a" vs "a b". Unigrams: g(c) = {a: 2L}, g(r) = {a: L, b: L};
    # clipped overlap min(2L, L) * L = L^2; norms 2L and sqrt(2) L -> 1 / (2 sqrt 2).
    # Bigrams: {aa: L} vs {ab: L} -> 0. No trigrams. Lengths equal -> no penalty.
    # CIDEr-D = 10 * (1 / (2 sqrt 2)) / 4. Unclipped, the unigram term would be 1/sqrt 2.
    scores = cider_d_per_image({"1": "a a", "2": "c d"}, {"1": ["a b"], "2": ["c d"]})
    assert scores["1"] == pytest.approx(10 / (8 * math.sqrt(2)))


def test_cider_d_penalises_a_length_gap():
    # image 1: "a b e e e e e e" (8 words) vs "a b" (2): gap 6, penalty exp(-36 / 72).
    # Unigrams: {a: L, b: L, e: 6L} . {a: L, b: L}: overlap 2 L^2, norms sqrt(38) L and
    # sqrt(2) L -> 1/sqrt(19). Bigrams: {ab: L, be: L, ee: 5L} . {ab: L}: overlap L^2,
    # norms sqrt(27) L and L -> 1/sqrt(27). The reference has no trigrams.
    scores = cider_d_per_image({"1": "a b e e e e e e", "2": "c d"}, {"1": ["a b"], "2": ["c d"]})
    expected = 10 / 4 * math.exp(-0.5) * (1 / math.sqrt(19) + 1 / math.sqrt(27))
    assert scores["1"] == pytest.approx(expected)


def test_cider_d_averages_over_the_references():
    # exact match with one of two references (cosines 1 for n = 1..4), disjoint from the
    # other: (10 + 0) / 2
    scores = cider_d_per_image(
        {"1": "a b c d", "2": "e f g h"},
        {"1": ["a b c d", "w x y z"], "2": ["e f g h"]},
    )
    assert scores["1"] == pytest.approx(5.0)
    assert cider_d({"1": "a b c d", "2": "e f g h"}, {"1": ["a b c d"], "2": ["e f g h"]}) == (
        pytest.approx(10.0)
    )


def test_an_ngram_every_image_mentions_carries_no_weight():
    # "a" is in the references of both images: idf log(2/2) = 0, so matching it earns nothing
    scores = cider_d_per_image({"1": "a", "2": "a"}, {"1": ["a b"], "2": ["a c"]})
    assert scores == pytest.approx({"1": 0.0, "2": 0.0})


def test_caption_metrics_are_flat_floats():
    metrics = caption_metrics(
        {"1": "the cat sat on", "2": "a dog runs"},
        {"1": ["the cat sat on the mat"], "2": ["a dog runs on grass"]},
    )
    assert set(metrics) == {
        "bleu4",
        "bleu_brevity_penalty",
        "bleu_precision_1",
        "bleu_precision_2",
        "bleu_precision_3",
        "bleu_precision_4",
        "cider_d",
    }
    # c = 4 + 3 = 7 words against r = 6 + 5 = 11
    assert metrics["bleu_brevity_penalty"] == pytest.approx(math.exp(1 - 11 / 7))
    assert metrics["bleu_precision_1"] == 1.0
    assert all(isinstance(value, float) for value in metrics.values())
