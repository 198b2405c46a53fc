"""Flickr30k's captions file (``results.csv``): reference captions grouped per image.

The published file separates ``image_name``, ``comment_number`` and ``comment`` with ``|``
followed by a space (``1000092795.jpg| 0| Two young guys ...``); re-exports use ordinary
comma-separated CSV with quoted comments. Both are read. One published line lacks its
second separator (``2199200615.jpg| 4   A dog runs ...``); a number followed by text in the
second field is read as that number and that comment.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path

from deeptrust.training.datasets.example import Example, Loaded, SkippedLine, inside

SOURCE = "flickr30k"
INDEX_FILE = "results.csv"
IMAGE_FOLDER = "flickr30k_images"
HEADER = ("image_name", "comment_number", "comment")
_NUMBER_THEN_TEXT = re.compile(r"^\s*(\d+)\s+(\S.*)$")


def _rows(csv_path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of every non-blank line after the header, whichever separator."""
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        header = handle.readline()
        if [name.strip() for name in re.split(r"[|,]", header)] != list(HEADER):
            raise ValueError(f"{csv_path}: expected the header {'|'.join(HEADER)}, got {header!r}")
        if "|" in header:
            for number, line in enumerate(handle, start=2):
                if line.strip():
                    yield number, [part.strip() for part in line.rstrip("\r\n").split("|", 2)]
        else:
            reader = csv.reader(handle)
            for row in reader:
                if any(part.strip() for part in row):
                    yield reader.line_num + 1, [part.strip() for part in row]


def _caption(fields: list[str]) -> tuple[str, int, str] | str:
    """The (image, number, comment) of one row, or why it cannot be read."""
    if len(fields) == 2:
        recovered = _NUMBER_THEN_TEXT.match(fields[1])
        if recovered is None:
            return "expected 3 fields"
        fields = [fields[0], recovered.group(1), recovered.group(2)]
    if len(fields) != 3:
        return f"expected 3 fields, got {len(fields)}"
    image, number, comment = fields
    if not image or not comment:
        return "empty image name or comment"
    if not number.isdigit():
        return f"comment number {number!r} is not a number"
    return image, int(number), comment


def read_flickr30k(location: Path, image_folder: Path | None = None) -> Loaded:
    """One example per image, its reference captions in comment-number order.

    ``location`` is the CSV or its folder. Images are looked up in ``image_folder``, by
    default ``flickr30k_images/`` beside the CSV when that exists, else the CSV's folder.
    """
    csv_path = location / INDEX_FILE if location.is_dir() else location
    if image_folder is None:
        nested = csv_path.parent / IMAGE_FOLDER
        image_folder = nested if nested.is_dir() else csv_path.parent
    captions: dict[str, list[tuple[int, str]]] = {}
    skipped: list[SkippedLine] = []
    for line, fields in _rows(csv_path):
        parsed = _caption(fields)
        if isinstance(parsed, str):
            skipped.append(SkippedLine(line, parsed))
            continue
        image, number, comment = parsed
        try:
            inside(image_folder, image)
        except ValueError as error:
            skipped.append(SkippedLine(line, str(error)))
            continue
        captions.setdefault(image, []).append((number, comment))
    examples = tuple(
        Example(
            SOURCE,
            Path(image).as_posix(),
            str(inside(image_folder, image)),
            captions=tuple(comment for _, comment in sorted(numbered, key=lambda item: item[0])),
        )
        for image, numbered in captions.items()
    )
    return Loaded(image_folder, examples, tuple(skipped))
