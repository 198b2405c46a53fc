"""The controlled tag vocabulary on real WordNet 3.0 (Debian) and real all-MiniLM-L6-v2."""

import gzip
import sqlite3
from datetime import UTC, datetime

import numpy as np
import pytest

import deeptrust.processors.heuristics  # noqa: F401 - registers the keyword tagger
from deeptrust.devtools.debian import debian_package
from deeptrust.devtools.wordnet import DEBIAN_PACKAGE, lay_out_wordnet, lexnames_from_manual
from deeptrust.processors.models import ModelSpec
from deeptrust.processors.search_index import SearchIndex
from deeptrust.processors.tag import TagStage
from deeptrust.processors.vocabulary.build import OVER_GENERAL, build_vocabulary
from deeptrust.processors.vocabulary.mapper import DEFAULT_THRESHOLD, TagMapper
from deeptrust.processors.vocabulary.minilm import MiniLMEncoder
from deeptrust.processors.vocabulary.terms import read_terms
from deeptrust.processors.vocabulary.wordnet import WordNetMissing, open_wordnet
from deeptrust.schemas.events import Caption, CaptionedEvent, Detection, EnrichedEvent, Tags


@pytest.fixture(scope="module")
def mapper():
    loaded = TagMapper()
    loaded.load()
    return loaded


@pytest.fixture(scope="module")
def encoder():
    loaded = MiniLMEncoder()
    loaded.load()
    return loaded


def test_lexnames_come_from_the_packages_manual_page():
    package = debian_package(DEBIAN_PACKAGE)
    manual = gzip.decompress((package / "usr/share/man/man5/lexnames.5WN.gz").read_bytes())
    rows = [line.split("\t") for line in lexnames_from_manual(manual.decode()).splitlines()]
    assert len(rows) == 45
    assert rows[3] == ["03", "noun.Tops", "1"]
    assert rows[5] == ["05", "noun.animal", "1"]
    assert rows[44] == ["44", "adj.ppl", "3"]
    assert not (package / "usr/share/wordnet/lexnames").exists(), "the Debian tree is untouched"


def test_the_runtime_never_fetches_wordnet_and_says_how_to_lay_it_out(tmp_path):
    with pytest.raises(WordNetMissing, match="deeptrust-dev wordnet"):
        open_wordnet(tmp_path / "nltk")
    assert not (tmp_path / "nltk").exists(), "open_wordnet wrote nothing"


def test_wordnet_reads_debians_database_in_nltks_layout(tmp_path):
    corpus = lay_out_wordnet(tmp_path / "nltk")
    assert corpus == tmp_path / "nltk/corpora/wordnet"
    assert (corpus / "lexnames").exists()
    wordnet = open_wordnet(tmp_path / "nltk")
    assert wordnet.get_version() == "3.0"
    (ladybug,) = wordnet.synsets("ladybugs", "n")
    assert ladybug.lexname() == "noun.animal"
    assert ladybug.hypernyms() == [wordnet.synset("beetle.n.01")]
    # ImageNet's class ids are WordNet 3.0 noun offsets: n02165456 is the ladybug.
    assert wordnet.synset_from_pos_and_offset("n", 2165456) == ladybug


def test_minilm_embeddings_are_unit_vectors_that_put_synonyms_closer(encoder):
    dog, puppy, car, automobile = encoder.encode(["dog", "puppy", "car", "automobile"])
    assert np.allclose(np.linalg.norm([dog, puppy, car], axis=1), 1.0, atol=1e-5)
    assert dog @ puppy > dog @ car + 0.2
    assert car @ automobile > car @ puppy + 0.2


def test_minilm_gives_a_text_the_same_vector_in_any_batch(encoder):
    texts = ["a ladybug on a leaf", "dog", "golden retriever puppy on the beach at sunset"]
    together = encoder.encode(texts)
    alone = np.stack([encoder.encode([text])[0] for text in texts])
    assert np.allclose(together, alone, atol=1e-5)


def test_the_shipped_vocabulary_is_what_the_build_regenerates(encoder):
    shipped = read_terms()
    rebuilt = build_vocabulary(open_wordnet(), encoder.tokenizer)
    assert sorted(rebuilt, key=lambda t: t.term) == shipped
    assert 1000 < len(shipped) < 2000
    assert not OVER_GENERAL & {t.synset for t in shipped}
    assert not {"entity", "physical entity", "object", "whole", "artifact"} & {
        t.term for t in shipped
    }


def test_ladybug_expands_to_beetle_insect_and_animal_nearest_first(mapper):
    (tags,) = mapper.normalise([["ladybug"]])
    assert tags.values == ["ladybug"]
    assert [t for t in tags.broader if t in {"beetle", "insect", "animal"}] == [
        "beetle",
        "insect",
        "animal",
    ]
    assert tags.dropped == []


def test_words_resolve_through_wordnet(mapper):
    ladybird, puppies, cappuccino, machine = mapper.match(
        ["Ladybird", "puppies", "cappuccino", "machine"]
    )
    assert (ladybird.term, ladybird.route) == ("ladybug", "wordnet")
    assert (puppies.term, puppies.route) == ("dog", "wordnet")  # puppy: a kind of dog
    assert (cappuccino.term, cappuccino.route) == ("coffee", "wordnet")
    assert machine.term == "machine"  # not car, a rare sense of "machine"


def test_puppy_maps_to_dog(mapper):
    (tags,) = mapper.normalise([["puppy"]])
    assert tags.values == ["dog"]
    assert {"domestic animal", "mammal", "animal"} <= set(tags.broader)


def test_words_wordnet_lacks_resolve_by_embedding_above_the_threshold(mapper):
    kitten, smartphone, doggo = mapper.match(["kitten", "smartphone", "doggo"])
    assert (kitten.term, kitten.route) == ("cat", "embedding")
    assert smartphone.term in {"phone", "cellular telephone"}
    assert doggo.term == "dog"
    assert min(kitten.score, smartphone.score, doggo.score) >= DEFAULT_THRESHOLD


def test_nonsense_is_dropped_and_counted(mapper):
    before = mapper.counts["dropped"]
    (tags,) = mapper.normalise([["asdfgh", "dog", "lorem ipsum", "xyzzy"]])
    assert tags.values == ["dog"]
    assert tags.dropped == ["asdfgh", "lorem ipsum", "xyzzy"]
    assert mapper.counts["dropped"] == before + 3


def test_a_phrase_falls_back_to_its_head_noun(mapper):
    snowy, crowd = mapper.match(["snowy mountain", "crowd of people"])
    assert snowy.term == "mountain"
    assert crowd.term == "crowd"


def test_mapping_is_deterministic_whatever_the_batch_and_the_process(mapper):
    tags = ["kitten", "ladybird", "sunny", "asdfgh", "golden retriever", "tv screen", "woods"]
    first = mapper.match(tags)
    assert mapper.match(list(reversed(tags))) == list(reversed(first))
    fresh = TagMapper()  # another instance: embeddings from the cache, matches from scratch
    fresh.load()
    assert fresh.match(tags) == first
    assert [t.values for t in fresh.normalise([tags])] == [
        t.values for t in mapper.normalise([tags])
    ]


def captioned(image_id, text):
    return CaptionedEvent(
        event_id=f"e-{image_id}",
        image_id=image_id,
        uri=f"file:///{image_id}.jpg",
        uploaded_at=datetime(2026, 1, 1, tzinfo=UTC),
        width=10,
        height=10,
        detection=Detection(ai_probability=0.1, label="real", model="m", model_version="1"),
        caption=Caption(text=text, model="c"),
    )


def test_the_tag_stage_indexes_broader_terms_so_a_category_finds_its_members(tmp_path):
    # The keyword tagger with an alias (ladybird=ladybug) stands in for any tagger's output.
    spec = ModelSpec("tag", "keywords", "keywords", options={"aliases": "ladybird=ladybug"})
    stage = TagStage(spec)
    stage.setup()
    try:
        results = stage.process(
            [
                captioned("ladybug", "a red ladybird on a leaf"),
                captioned("tabby", "a cat asleep in a bright room"),
            ]
        )
    finally:
        stage.close()
    ladybug, tabby = (result[0].event for result in results)
    assert ladybug.tags.values == ["red", "ladybug"]
    assert {"beetle", "insect", "animal", "colour"} <= set(ladybug.tags.broader)
    assert tabby.tags.values == ["cat", "brightness"]

    index = SearchIndex(tmp_path / "search.db")
    index.upsert([ladybug, tabby])
    assert [hit.image_id for hit in index.search("insect")] == ["ladybug"]
    assert {hit.image_id for hit in index.search("animal")} == {"ladybug", "tabby"}
    (hit,) = index.search("beetle")
    assert hit.tags == ["red", "ladybug"]
    assert "insect" in hit.broader
    index.close()


def test_an_index_made_before_broader_terms_is_upgraded_in_place(tmp_path):
    path = tmp_path / "search.db"
    with sqlite3.connect(path) as old:
        old.executescript(
            "CREATE TABLE images (image_id TEXT PRIMARY KEY, uri TEXT NOT NULL, "
            "caption TEXT NOT NULL, tags TEXT NOT NULL, ai_probability REAL NOT NULL, "
            "label TEXT NOT NULL, uploaded_at TEXT NOT NULL);"
            "CREATE VIRTUAL TABLE images_fts USING fts5(image_id UNINDEXED, caption, tags);"
            "INSERT INTO images VALUES ('old', 'file:///old.jpg', 'a cat on a sofa', 'cat', "
            "0.1, 'real', '2026-01-01T00:00:00+00:00');"
            "INSERT INTO images_fts VALUES ('old', 'a cat on a sofa', 'cat');"
        )
    old.close()  # the context manager commits; it does not close
    index = SearchIndex(path)
    assert [hit.image_id for hit in index.search("sofa")] == ["old"]
    assert index.search("animal") == []
    ladybug = EnrichedEvent(
        **captioned("ladybug", "a ladybug on a leaf").model_dump(),
        tags=Tags(values=["ladybug", "leaf"], broader=["beetle", "insect", "animal"], model="t"),
    )
    index.upsert([ladybug])
    (hit,) = index.search("animal")
    assert (hit.image_id, hit.tags, hit.broader) == (
        "ladybug",
        ["ladybug", "leaf"],
        ladybug.tags.broader,
    )
    assert index.count() == 2
    index.close()
