from deeptrust.processors.llm.prompts import (
    LABEL_FLOOR,
    caption_prompt,
    parse_sentence,
    parse_tags,
    tag_prompt,
)


def test_tag_prompt_ends_where_the_model_continues():
    prompt = tag_prompt("A cup of espresso on a saucer.")
    assert prompt.endswith("Caption: A cup of espresso on a saucer.\nTags:")
    assert prompt.count("Tags:") == 4, "three worked examples and the question"


def test_tags_are_cleaned_deduplicated_and_capped():
    assert parse_tags(" Cat, sofa , couch, cat, Cat Sitting.\nCaption: more") == [
        "cat",
        "sofa",
        "couch",
        "cat sitting",
    ]
    assert parse_tags("a, " + ", ".join(f"t{i}" for i in range(20)))[:2] == ["a", "t0"]
    assert len(parse_tags(", ".join(f"t{i}" for i in range(20)))) == 10
    assert parse_tags("!!!, https://x.y/z, a very long phrase of many words") == []


def test_caption_prompt_shows_confident_labels_without_scores():
    prompt = caption_prompt([("tiger cat", 0.15), ("tabby", 0.72), ("lynx", 0.01)], "a photo")
    question = prompt.rsplit("\n\n", 1)[1]
    assert question == "Classifier: tabby; tiger cat\nLook: a photo\nCaption:"
    assert "0.72" not in prompt


def test_caption_prompt_keeps_the_best_label_even_when_unsure():
    prompt = caption_prompt([("bobsled", LABEL_FLOOR / 2), ("drum", LABEL_FLOOR / 4)], "a photo")
    assert "Classifier: bobsled\n" in prompt.rsplit("\n\n", 1)[1]


def test_sentence_is_the_first_line_capitalised_and_closed():
    assert parse_sentence(" a tabby cat by a window\nClassifier: x") == "A tabby cat by a window."
    assert parse_sentence("A cup of espresso!") == "A cup of espresso!"
    assert parse_sentence("  \n") == ""
