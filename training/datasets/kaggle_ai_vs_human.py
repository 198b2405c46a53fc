"""The Kaggle "AI vs. Human-Generated Images" layout: ``train.csv`` beside ``train_data/``.

``train.csv`` has the columns ``file_name`` (``train_data/<hex>.jpg``, relative to the
CSV's folder) and ``label`` (1 = AI-generated, 0 = human). The published file starts with
an unnamed index column (header ``""``, or ``Unnamed: 0`` once pandas has rewritten it).
An optional ``generator`` column (the project's extension, which its seed dataset writes)
names an AI image's generator: it becomes the tag ``generator:<name>``, by which a
retrain's evaluation reports each family. Any other column is ignored.
"""

from __future__ import annotations

import csv
from pathlib import Path

from deeptrust.training.datasets.example import (
    GENERATOR_TAG,
    LABELS,
    Example,
    Loaded,
    SkippedLine,
    inside,
)

SOURCE = "kaggle-ai-vs-human"
INDEX_FILE = "train.csv"
PATH_COLUMN = "file_name"
LABEL_COLUMN = "label"
GENERATOR_COLUMN = "generator"


def _label(text: str) -> int | None:
    """Parse ``1``, ``0`` (or ``1.0``, as a float-typed export writes them); None if neither."""
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() and int(value) in LABELS else None


def read_kaggle_ai_vs_human(location: Path) -> Loaded:
    """Examples of the dataset at ``location`` (its folder, or its CSV file).

    Rows with no path, a path leaving the folder, or a label other than 0/1 are skipped
    with their line number; a missing image file is not checked here, since the quality
    step reports it with the other unusable files.
    """
    csv_path = location / INDEX_FILE if location.is_dir() else location
    root = csv_path.parent
    examples: list[Example] = []
    skipped: list[SkippedLine] = []
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = {name.strip() for name in reader.fieldnames or ()}
        missing = {PATH_COLUMN, LABEL_COLUMN} - columns
        if missing:
            raise ValueError(f"{csv_path} lacks the column(s) {sorted(missing)}")
        for row in reader:
            line = reader.line_num
            fields = {key.strip(): (value or "").strip() for key, value in row.items() if key}
            relative = fields.get(PATH_COLUMN, "")
            label = _label(fields.get(LABEL_COLUMN, ""))
            if label is None:
                skipped.append(SkippedLine(line, f"label {fields.get(LABEL_COLUMN)!r} is not 0/1"))
                continue
            try:
                path = inside(root, relative)
            except ValueError as error:
                skipped.append(SkippedLine(line, str(error)))
                continue
            generator = fields.get(GENERATOR_COLUMN, "")
            tags = (f"{GENERATOR_TAG}{generator}",) if generator and label == 1 else ()
            examples.append(
                Example(SOURCE, Path(relative).as_posix(), str(path), label=label, tags=tags)
            )
    return Loaded(root, tuple(examples), tuple(skipped))
