"""Per-generator rows of a retrain's evaluation, on scores whose answers are counted by hand."""

import numpy as np
import pytest

from deeptrust.training.evaluation.families import (
    family_metrics,
    family_table,
    generator_of,
    write_family_table,
)


def test_the_generator_tag_names_the_family():
    assert generator_of(("painting", "generator:vae")) == "vae"
    assert generator_of(("painting",)) is None
    assert generator_of(("generator:",)) is None


def test_each_family_is_scored_against_every_real_image():
    # Four reals at 0.1-0.4; dcgan's two images above them all, vae's straddling them.
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.9, 0.8, 0.35, 0.05, 0.99])
    tags = [(), (), (), (), ("generator:dcgan",), ("generator:dcgan",)]
    tags += [("generator:vae",), ("generator:vae",), ()]  # the last AI image names no family
    table = family_table(labels, scores, tags, threshold=0.5)
    assert list(table) == ["dcgan", "vae"]
    assert table["dcgan"].ap == 1.0
    assert table["dcgan"].auroc == 1.0
    assert table["dcgan"].fake_accuracy == 1.0
    # vae: 0.35 beats 3 of 4 reals, 0.05 none: AUROC (3 + 0) / 8.
    assert table["vae"].auroc == pytest.approx(3 / 8)
    assert table["vae"].fake_accuracy == 0.0
    assert table["vae"].real_accuracy == 1.0
    metrics = family_metrics(table)
    assert metrics["family/vae/auroc"] == pytest.approx(3 / 8)
    assert len(metrics) == 2 * 6


def test_the_table_is_written_as_markdown(tmp_path):
    labels = np.array([0, 1])
    table = family_table(labels, np.array([0.2, 0.7]), [(), ("generator:gan",)], 0.5)
    text = write_family_table(table, tmp_path / "families.md").read_text()
    assert "| gan | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 |" in text


def test_without_real_images_there_is_no_table():
    assert family_table(np.array([1]), np.array([0.9]), [("generator:gan",)], 0.5) == {}
