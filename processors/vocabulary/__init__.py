"""The controlled tag vocabulary: WordNet-anchored terms, and free tags mapped onto them.

``terms.tsv`` is the vocabulary (``build.py`` regenerates it), ``mapper.py`` maps a
tagger's tags onto it and expands them to broader terms, ``wordnet.py`` and ``minilm.py``
load the two resources it rests on, and ``evaluate.py`` measures the mapping
(``docs/tags.md``).
"""
