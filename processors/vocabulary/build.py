"""Regenerates ``terms.tsv``, the tag vocabulary.

Run ``python -m deeptrust.processors.vocabulary.build``.

The vocabulary is derived, not hand-written, so it can be rebuilt and reviewed:

1. ``curated.tsv``: scene, people and photo words with their WordNet sense (the keyword
   tagger's tags among them); these names win any clash.
2. The 1000 ImageNet classes of ``processors/backbones/imagenet_labels.txt``, whose ids are
   WordNet 3.0 noun offsets: what the captioner's classifier can name. A class is named by
   its label's first name if WordNet reads that name first as this class (``ladybug``),
   else another name that WordNet reads first as this class and that is familiar (see 3;
   not a Latin binomial): ``computer mouse``, not ``mouse``, the animal. Failing that, a
   name that WordNet does not read first as another possible term (a curated word, a
   class or a hypernym): ``tiger`` (first a person, in WordNet), not ``Panthera tigris``;
   but ``plane`` is the aeroplane, so the tool is ``carpenter's plane``. Names are never
   reused: the second ``maillot`` becomes ``tank suit``, the second ``crane`` ``crane
   (lifting device)``.
3. Every hypernym of those synsets that makes a useful search word: concrete (its WordNet
   lexicographer file holds animals, plants, foods, people, artefacts, natural objects,
   substances, phenomena or places), not on the list of over-general categories below,
   unambiguous (WordNet reads its name as this sense first), shared by two seeds or named
   in one word, and familiar: each word of its name is a whole token of MiniLM's WordPiece
   vocabulary (30,522 pieces learnt from frequent English words), which keeps ``insect``,
   ``beetle`` and ``hunting dog`` and drops ``arthropod``, ``chordate`` and ``diapsid``.

Walking up from ``ladybug`` therefore gives ``beetle``, ``insect`` and ``animal``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from nltk.corpus.reader.wordnet import Synset, WordNetCorpusReader
from tokenizers import Tokenizer

from deeptrust.processors.backbones.mobilenet_v2 import imagenet_classes
from deeptrust.processors.vocabulary.minilm import MiniLMEncoder
from deeptrust.processors.vocabulary.terms import TERMS_FILE, Source, VocabularyTerm, write_terms
from deeptrust.processors.vocabulary.wordnet import open_wordnet

CURATED_FILE = Path(__file__).with_name("curated.tsv")
CONCRETE_LEXNAMES = frozenset(
    {
        "noun.animal",
        "noun.artifact",
        "noun.food",
        "noun.location",
        "noun.object",
        "noun.person",
        "noun.phenomenon",
        "noun.plant",
        "noun.substance",
    }
)
# Hypernyms too broad, too abstract or too technical to help a search, though concrete,
# familiar and unambiguous: reviewed by hand from the generated list.
OVER_GENERAL = frozenset(
    {
        "accessory.n.01",
        "apparatus.n.01",
        "area.n.01",
        "artifact.n.01",
        "associate.n.01",
        "boundary.n.01",
        "brace.n.01",
        "causal_agent.n.01",
        "chemical.n.01",
        "cloth_covering.n.01",
        "commodity.n.01",
        "connection.n.03",
        "consumer_goods.n.01",
        "covering.n.01",
        "covering.n.02",
        "decoration.n.01",
        "device.n.01",
        "drug.n.01",
        "drug_of_abuse.n.01",
        "durables.n.01",
        "electromagnetic_radiation.n.01",
        "energy.n.01",
        "entity.n.01",
        "feed.n.01",
        "filter.n.01",
        "fluid.n.01",
        "geographic_point.n.01",
        "geographical_area.n.01",
        "implement.n.01",
        "instrument.n.01",
        "instrumentality.n.03",
        "juvenile.n.01",
        "land.n.04",
        "living_thing.n.01",
        "material.n.01",
        "matter.n.03",
        "mechanical_device.n.01",
        "natural_elevation.n.01",
        "natural_phenomenon.n.01",
        "object.n.01",
        "obstruction.n.01",
        "offspring.n.01",
        "organism.n.01",
        "outline.n.01",
        "participant.n.01",
        "partition.n.01",
        "peer.n.01",
        "physical_entity.n.01",
        "physical_phenomenon.n.01",
        "piece.n.01",
        "piece_of_cloth.n.01",
        "plant.n.01",
        "plant_organ.n.01",
        "plant_part.n.01",
        "platform.n.01",
        "port.n.01",
        "protective_covering.n.01",
        "rack.n.01",
        "radiation.n.01",
        "region.n.01",
        "relative.n.01",
        "reproductive_structure.n.01",
        "rig.n.01",
        "rod.n.01",
        "screen.n.04",
        "sheath.n.01",
        "sheet.n.06",
        "solid.n.01",
        "source_of_illumination.n.01",
        "spermatophyte.n.01",
        "structure.n.01",
        "supporting_structure.n.01",
        "surface.n.01",
        "system.n.01",
        "tract.n.01",
        "trap.n.01",
        "universe.n.01",
        "vascular_plant.n.01",
        "vicinity.n.01",
        "ware.n.01",
        "white_goods.n.01",
        "whole.n.02",
        "wrapping.n.01",
    }
)
HEADER = """\
The controlled tag vocabulary: term<TAB>WordNet 3.0 noun synset<TAB>source.
Generated by `python -m deeptrust.processors.vocabulary.build` (see docs/tags.md); do not edit.
Sources: curated (curated.tsv), imagenet (the classifier's classes), hypernym (their
broader terms that make useful search words)."""


def build_vocabulary(wordnet: WordNetCorpusReader, tokenizer: Tokenizer) -> list[VocabularyTerm]:
    """Return the vocabulary: curated words, ImageNet classes, then their useful hypernyms."""
    curated = [(wordnet.synset(synset), term) for term, synset in _curated()]
    classes = [
        (wordnet.synset_from_pos_and_offset("n", o), names) for o, names in _imagenet_classes()
    ]
    seeds = {synset for synset, _ in curated} | {synset for synset, _ in classes}
    covered = Counter(a for seed in seeds for a in set(seed.closure(_up)))
    candidates = seeds | covered.keys()
    chosen: dict[str, VocabularyTerm] = {}  # by synset name
    taken: set[str] = set()

    def first_meaning(name: str) -> Synset | None:
        """What WordNet reads ``name`` as first (its most frequent noun sense)."""
        senses = wordnet.synsets(name.replace(" ", "_"), "n")
        return senses[0] if senses else None

    def add(synset: Synset, names: list[str], source: Source) -> None:
        free = [name for name in names if name not in taken]
        own = [name for name in free if first_meaning(name) == synset]
        preferred = [
            own[:1] if own[:1] == names[:1] else [],  # the usual name, if it means this
            [name for name in own if _familiar(name, tokenizer)],  # not a Latin binomial
            [n for n in free if first_meaning(n) not in candidates - {synset}],  # nor another term
            free,
        ]
        name = next((group[0] for group in preferred if group), "")
        if not name:
            parent = _names(synset.hypernyms()[0])[0]
            name = f"{names[0]} ({parent})"
        chosen[synset.name()] = VocabularyTerm(name, synset.name(), source)
        taken.add(name)

    for synset, term in curated:
        if term in taken:
            raise ValueError(f"{CURATED_FILE}: {term!r} twice")
        add(synset, [term], "curated")
    for synset, names in classes:
        if synset.name() not in chosen:
            add(synset, names, "imagenet")
    for synset in sorted(covered.keys() - seeds, key=lambda s: s.name()):
        names = [
            name
            for name in _names(synset)
            if name not in taken and _familiar(name, tokenizer) and first_meaning(name) == synset
        ]
        shared = covered[synset] >= 2 or (names and " " not in names[0])
        if names and shared and _useful(synset):
            add(synset, names, "hypernym")
    return list(chosen.values())


def _up(synset: Synset) -> list[Synset]:
    return list(synset.hypernyms() + synset.instance_hypernyms())


def _names(synset: Synset) -> list[str]:
    """The synset's lemmas as search words: lower case, spaces for underscores."""
    return list(dict.fromkeys(lemma.replace("_", " ").lower() for lemma in synset.lemma_names()))


def _familiar(name: str, tokenizer: Tokenizer) -> bool:
    """True when no word of ``name`` is split into WordPiece sub-words."""
    pieces = tokenizer.encode(name, add_special_tokens=False).tokens
    return not any(piece.startswith("##") for piece in pieces)


def _useful(synset: Synset) -> bool:
    lexname: str = synset.lexname()
    allowed_top = {"animal.n.01", "food.n.01", "person.n.01", "plant.n.02"}
    concrete = lexname in CONCRETE_LEXNAMES or synset.name() in allowed_top
    return concrete and synset.name() not in OVER_GENERAL


def _curated() -> list[tuple[str, str]]:
    rows = []
    for line in CURATED_FILE.read_text().splitlines():
        if line and not line.startswith("#"):
            term, synset = line.split("\t")
            rows.append((term, synset))
    return rows


def _imagenet_classes() -> list[tuple[int, list[str]]]:
    """ImageNet's (WordNet noun offset, lower-case names) in class order."""
    return [
        (int(c.wnid[1:]), list(dict.fromkeys(lemma.lower() for lemma in c.lemmas)))
        for c in imagenet_classes()
    ]


def main(path: Path = TERMS_FILE) -> None:
    """Rebuild the vocabulary file from WordNet, ImageNet's classes and ``curated.tsv``."""
    encoder = MiniLMEncoder()
    encoder.load()
    terms = build_vocabulary(open_wordnet(), encoder.tokenizer)
    write_terms(terms, path, HEADER)
    counts = {s: sum(t.source == s for t in terms) for s in ("curated", "imagenet", "hypernym")}
    print(f"{path}: {len(terms)} terms {counts}")


if __name__ == "__main__":
    main()
