"""Training data on the way in: loaders, quality checks, manifests and the split.

Every dataset is built in tmp_path from the real sample photographs (crops, greyscale
copies, JPEGs at several qualities) plus the broken files a real dump contains (a corrupt
file, a truncated JPEG, a duplicate, a thumbnail, a GIF, a row whose file is missing), in
the two published layouts. Labels are the tests' own: every picture here is a photograph.
"""

import hashlib
import io
import random
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image

from deeptrust.training.datasets.example import (
    LABEL_AI,
    LABEL_HUMAN,
    Example,
    read_local,
    reviewed_example,
)
from deeptrust.training.datasets.flickr30k import read_flickr30k
from deeptrust.training.datasets.kaggle_ai_vs_human import read_kaggle_ai_vs_human
from deeptrust.training.datasets.manifest import (
    build_manifest,
    read_manifest,
    verify_manifest,
    write_manifest,
)
from deeptrust.training.datasets.quality import QualityPolicy, Rejection, check_quality
from deeptrust.training.datasets.split import TEST_FRACTION, is_test, split_by_content
from tests.images import SAMPLES, corrupt_bytes, truncated_jpeg


def encode(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def photo(name: str) -> Image.Image:
    return Image.open(SAMPLES / name).convert("RGB")


def hex_name(text: str) -> str:
    """A file name like the Kaggle dump's: 32 hex digits."""
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


# name -> (bytes, label, what the quality check must say: None = accepted)
def kaggle_files() -> dict[str, tuple[bytes, int, Rejection | None]]:
    astronaut = photo("astronaut.jpg")
    coffee = photo("coffee.jpg")
    crop = encode(astronaut.crop((100, 50, 400, 350)), quality=90)
    files = {
        "astronaut_crop": (crop, LABEL_HUMAN, None),
        "coffee_grey": (encode(coffee.convert("L"), quality=75), LABEL_AI, None),
        "coffee_q30": (encode(coffee, quality=30), LABEL_AI, None),
        "coffee_q95": (encode(coffee, quality=95), LABEL_HUMAN, None),
        "chelsea_png": ((SAMPLES / "chelsea.png").read_bytes(), LABEL_AI, None),
        "rocket_crop": (encode(photo("rocket.jpg").crop((0, 0, 200, 150))), LABEL_HUMAN, None),
        "duplicate_of_crop": (crop, LABEL_AI, Rejection.DUPLICATE),
        "corrupt": (corrupt_bytes(), LABEL_AI, Rejection.UNDECODABLE),
        "truncated": (truncated_jpeg(), LABEL_HUMAN, Rejection.UNDECODABLE),
        "thumbnail": (encode(coffee.resize((48, 32))), LABEL_HUMAN, Rejection.TOO_SMALL),
        "gif": (encode(coffee.resize((120, 80)), "GIF"), LABEL_AI, Rejection.FORMAT_NOT_ALLOWED),
    }
    return files


def write_kaggle(root: Path, header: str = ",file_name,label") -> dict[str, str]:
    """The Kaggle layout; returns {relative path: case name}, plus one row without a file."""
    (root / "train_data").mkdir(parents=True)
    paths = {}
    lines = [header]
    indexed = header.count(",") == 2
    for index, (case, (data, label, _)) in enumerate(kaggle_files().items()):
        relative = f"train_data/{hex_name(case)}.jpg"
        (root / relative).write_bytes(data)
        paths[relative] = case
        row = f"{relative},{label}"
        lines.append(f"{index},{row}" if indexed else row)
    missing = f"train_data/{hex_name('missing')}.jpg"
    paths[missing] = "missing"
    lines.append(f"99,{missing},0" if indexed else f"{missing},0")
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    return paths


@pytest.fixture
def kaggle(tmp_path) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "ai-vs-human"
    return root, write_kaggle(root)


def by_case(examples, paths) -> dict[str, Example]:
    return {paths[example.name]: example for example in examples}


# --- loaders --------------------------------------------------------------------------


def test_kaggle_loader_reads_paths_and_labels_beside_the_csv(kaggle):
    root, paths = kaggle
    loaded = read_kaggle_ai_vs_human(root)
    assert loaded.root == root
    assert loaded.skipped == ()
    assert [example.name for example in loaded.examples] == list(paths)
    cases = kaggle_files()
    for case, example in by_case(loaded.examples, paths).items():
        assert example.uri == str(root / example.name)
        assert example.source == "kaggle-ai-vs-human"
        assert example.label == (cases[case][1] if case != "missing" else 0)


@pytest.mark.parametrize("header", ["file_name,label", "Unnamed: 0,file_name,label"])
def test_kaggle_loader_reads_the_layout_with_or_without_an_index_column(tmp_path, header):
    write_kaggle(tmp_path / "a")
    write_kaggle(tmp_path / "b", header)
    published = read_kaggle_ai_vs_human(tmp_path / "a" / "train.csv")  # the CSV path works too
    other = read_kaggle_ai_vs_human(tmp_path / "b")
    assert [(e.name, e.label) for e in other.examples] == [
        (e.name, e.label) for e in published.examples
    ]
    assert len(other.examples) == len(kaggle_files()) + 1


def test_kaggle_loader_skips_bad_rows_with_their_line_numbers(tmp_path):
    (tmp_path / "train.csv").write_text(
        ",file_name,label\n"
        "0,train_data/a.jpg,1\n"
        "1,train_data/b.jpg,2\n"
        "2,../outside.jpg,0\n"
        "3,train_data/c.jpg,\n"
        "4,/etc/passwd,1\n"
        "5,train_data/d.jpg,0.0\n"
    )
    loaded = read_kaggle_ai_vs_human(tmp_path)
    assert [(e.name, e.label) for e in loaded.examples] == [
        ("train_data/a.jpg", 1),
        ("train_data/d.jpg", 0),
    ]
    assert [skip.line for skip in loaded.skipped] == [3, 4, 5, 6]
    assert "not 0/1" in loaded.skipped[0].reason
    assert "relative path" in loaded.skipped[1].reason


def test_kaggle_loader_tags_ai_images_with_the_optional_generator_column(tmp_path):
    (tmp_path / "train.csv").write_text(
        "file_name,label,generator\n"
        "train_data/a.jpg,1,dcgan\n"
        "train_data/b.jpg,1,\n"
        "train_data/c.jpg,0,vae\n"  # a real image names no generator, whatever the column says
    )
    loaded = read_kaggle_ai_vs_human(tmp_path)
    assert [(e.name, e.tags) for e in loaded.examples] == [
        ("train_data/a.jpg", ("generator:dcgan",)),
        ("train_data/b.jpg", ()),
        ("train_data/c.jpg", ()),
    ]


def test_kaggle_loader_refuses_a_csv_without_its_columns(tmp_path):
    (tmp_path / "train.csv").write_text("id\nabc.jpg\n")  # the unlabelled test.csv
    with pytest.raises(ValueError, match="file_name"):
        read_kaggle_ai_vs_human(tmp_path)


FLICKR_CAPTIONS = {
    "1000092795.jpg": [
        "Two young guys with shaggy hair look at their hands while hanging out in the yard .",
        "Two young , White males are outside near many bushes .",
        "Two men in green shirts are standing in a yard .",
    ],
    "10002456.jpg": [
        "Several men in hard hats are operating a giant pulley system .",
        "Workers look down from up above on a piece of equipment .",
    ],
}


def write_flickr_pipe(folder: Path) -> None:
    """The published file: '|' plus a space, rows of one image not in order, one bad line."""
    rows = [
        "image_name| comment_number| comment",
        f"10002456.jpg| 1| {FLICKR_CAPTIONS['10002456.jpg'][1]}",
        f"1000092795.jpg| 0| {FLICKR_CAPTIONS['1000092795.jpg'][0]}",
        f"1000092795.jpg| 2| {FLICKR_CAPTIONS['1000092795.jpg'][2]}",
        f"1000092795.jpg| 1| {FLICKR_CAPTIONS['1000092795.jpg'][1]}",
        # the published file's line without its second separator
        f"10002456.jpg| 0   {FLICKR_CAPTIONS['10002456.jpg'][0]}",
        "",
        "broken line without separators",
    ]
    (folder / "results.csv").write_text("\n".join(rows) + "\n")


def write_flickr_comma(folder: Path) -> None:
    rows = ["image_name,comment_number,comment"]
    for image, captions in FLICKR_CAPTIONS.items():
        rows += [f'{image},{number},"{caption}"' for number, caption in enumerate(captions)]
    (folder / "results.csv").write_text("\n".join(rows) + "\n")


def test_flickr30k_groups_captions_per_image_in_comment_order(tmp_path):
    (tmp_path / "flickr30k_images").mkdir()
    write_flickr_pipe(tmp_path)
    loaded = read_flickr30k(tmp_path)
    assert loaded.root == tmp_path / "flickr30k_images"
    captions = {example.name: list(example.captions) for example in loaded.examples}
    assert captions == FLICKR_CAPTIONS
    assert all(example.label is None for example in loaded.examples)
    assert loaded.examples[0].uri == str(tmp_path / "flickr30k_images" / "10002456.jpg")
    assert [(skip.line, skip.reason) for skip in loaded.skipped] == [
        (8, "expected 3 fields, got 1")
    ]


def test_flickr30k_reads_the_comma_separated_export_alike(tmp_path):
    write_flickr_comma(tmp_path)
    loaded = read_flickr30k(tmp_path / "results.csv")
    assert loaded.root == tmp_path  # no flickr30k_images folder: images beside the CSV
    # the comma inside a quoted comment stays in the comment
    assert {e.name: list(e.captions) for e in loaded.examples} == FLICKR_CAPTIONS
    assert loaded.skipped == ()


def test_flickr30k_refuses_another_file(tmp_path):
    (tmp_path / "results.csv").write_text("file_name,label\na.jpg,1\n")
    with pytest.raises(ValueError, match="header"):
        read_flickr30k(tmp_path)


# --- the example type -----------------------------------------------------------------


def test_a_moderation_decision_becomes_an_example_that_passes_the_same_checks():
    data = encode(photo("grace_hopper.jpg"))
    store = {"s3://uploads/img-1": data}
    decided = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    example = reviewed_example("img-1", "s3://uploads/img-1", LABEL_AI, "reviewer-7", decided)
    assert example.name == "img-1"
    assert example.source == "feedback"
    assert dict(example.origin) == {
        "reviewer": "reviewer-7",
        "decided_at": "2026-03-01T12:30:00+00:00",
    }
    report = check_quality([example], reader=store.__getitem__)
    assert [item.sha256 for item in report.accepted] == [hashlib.sha256(data).hexdigest()]
    with pytest.raises(ValueError, match="label"):
        reviewed_example("img-2", "s3://uploads/img-2", 2, "reviewer-7", decided)


def test_read_local_takes_paths_and_file_uris_only(tmp_path):
    path = tmp_path / "a b.jpg"
    path.write_bytes(b"abc")
    assert read_local(str(path)) == b"abc"
    assert read_local(path.as_uri()) == b"abc"  # the space is percent-encoded in the URI
    with pytest.raises(ValueError, match="local"):
        read_local("s3://bucket/key")


# --- quality --------------------------------------------------------------------------


def test_quality_keeps_good_images_and_rejects_the_rest_with_reasons(kaggle):
    root, paths = kaggle
    report = check_quality(read_kaggle_ai_vs_human(root).examples)
    expected = {case: outcome for case, (_, _, outcome) in kaggle_files().items()}
    expected["missing"] = Rejection.UNREADABLE
    accepted = {paths[item.example.name]: item for item in report.accepted}
    rejected = {paths[item.example.name]: item.reason for item in report.rejected}
    assert set(accepted) == {case for case, outcome in expected.items() if outcome is None}
    assert rejected == {case: outcome for case, outcome in expected.items() if outcome}

    grey = accepted["coffee_grey"]
    assert (grey.width, grey.height, grey.format) == (600, 400, "JPEG")
    assert accepted["chelsea_png"].format == "PNG"
    data = (SAMPLES / "chelsea.png").read_bytes()
    assert accepted["chelsea_png"].sha256 == hashlib.sha256(data).hexdigest()

    details = {paths[item.example.name]: item.detail for item in report.rejected}
    assert details["thumbnail"] == "48x32 below 64x64"
    crop_path = next(path for path, case in paths.items() if case == "astronaut_crop")
    assert details["duplicate_of_crop"] == f"same bytes as {crop_path} (labelled 0 there, 1 here)"
    assert details["gif"].startswith("GIF not in")

    counts = report.counts()
    assert counts == {
        "accepted": 6,
        "unreadable": 1,
        "undecodable": 2,
        "too_many_pixels": 0,
        "format_not_allowed": 1,
        "too_small": 1,
        "duplicate": 1,
    }
    assert report.metrics()["quality/undecodable"] == 2.0


def test_quality_policy_sets_the_limits(kaggle):
    root, paths = kaggle
    examples = read_kaggle_ai_vs_human(root).examples
    policy = QualityPolicy(
        allowed_formats=frozenset({"JPEG"}), min_width=250, min_height=250, max_pixels=200_000
    )
    rejected = {paths[r.example.name]: r.reason for r in check_quality(examples, policy).rejected}
    assert rejected["chelsea_png"] is Rejection.FORMAT_NOT_ALLOWED
    assert rejected["rocket_crop"] is Rejection.TOO_SMALL  # 200x150
    assert rejected["coffee_q30"] is Rejection.TOO_MANY_PIXELS  # 600x400 = 240,000 pixels
    assert "astronaut_crop" not in rejected  # 300x300 = 90,000 pixels, JPEG: kept


# --- manifest -------------------------------------------------------------------------


def accepted_items(root: Path):
    return check_quality(read_kaggle_ai_vs_human(root).examples).accepted


def test_manifest_rows_hold_each_file_and_label(kaggle):
    root, paths = kaggle
    manifest = build_manifest("ai-vs-human", accepted_items(root))
    rows = {paths[row.path]: row for row in manifest.rows}
    assert [row.path for row in manifest.rows] == sorted(row.path for row in manifest.rows)
    cases = kaggle_files()
    for case, row in rows.items():
        assert row.sha256 == hashlib.sha256((root / row.path).read_bytes()).hexdigest()
        assert row.label == cases[case][1]
    assert (rows["rocket_crop"].width, rows["rocket_crop"].height) == (200, 150)


def test_the_same_files_give_the_same_version_whatever_the_order(kaggle, tmp_path):
    root, _ = kaggle
    items = list(accepted_items(root))
    first = build_manifest("ai-vs-human", items)
    shuffled = items[:]
    random.Random(3).shuffle(shuffled)
    second = build_manifest("ai-vs-human", shuffled)
    assert second.content() == first.content()
    assert second.version == first.version
    assert first.version == hashlib.sha256(first.content()).hexdigest()[:12]

    copy = tmp_path / "copy"
    write_kaggle(copy)  # the same files written again elsewhere
    assert build_manifest("ai-vs-human", accepted_items(copy)).version == first.version

    flipped = replace(items[0].example, label=1 - items[0].example.label)
    relabelled = [replace(items[0], example=flipped), *items[1:]]
    assert build_manifest("ai-vs-human", relabelled).version != first.version


def test_manifest_round_trips_and_refuses_an_edited_file(kaggle, tmp_path):
    root, _ = kaggle
    manifest = build_manifest("ai-vs-human", accepted_items(root))
    path = write_manifest(manifest, tmp_path / "manifests")
    assert path.name == f"ai-vs-human-{manifest.version}.manifest.jsonl"
    assert len(path.read_text().splitlines()) == len(manifest.rows)
    assert read_manifest(path) == manifest

    path.write_text(path.read_text().replace('"label":1', '"label":0', 1))
    with pytest.raises(ValueError, match="version"):
        read_manifest(path)


def test_verification_finds_changed_and_missing_files(kaggle):
    root, paths = kaggle
    manifest = build_manifest("ai-vs-human", accepted_items(root))
    assert verify_manifest(manifest, root).ok

    by_case = {case: path for path, case in paths.items()}
    changed = root / by_case["coffee_q95"]
    changed.write_bytes(encode(photo("coffee.jpg"), quality=94))
    (root / by_case["rocket_crop"]).unlink()
    result = verify_manifest(manifest, root)
    assert not result.ok
    assert result.changed == (by_case["coffee_q95"],)
    assert result.missing == (by_case["rocket_crop"],)
    assert result.checked == 6


def test_manifest_refuses_two_rows_for_one_path(kaggle):
    root, _ = kaggle
    items = list(accepted_items(root))
    with pytest.raises(ValueError, match="more than once"):
        build_manifest("ai-vs-human", [*items, items[0]])


# --- split ----------------------------------------------------------------------------


def digests(count: int, start: int = 0) -> list[str]:
    return [hashlib.sha256(str(i).encode()).hexdigest() for i in range(start, start + count)]


def test_split_takes_a_fifth_for_testing():
    split = split_by_content(digests(5000), lambda digest: digest)
    # binomial(5000, 0.2): standard deviation 28, so +-150 is over five of them
    assert abs(len(split.test) - TEST_FRACTION * 5000) < 150
    assert len(split.train) + len(split.test) == 5000


def test_split_is_stable_when_examples_are_added_or_reordered():
    original = digests(300)
    before = split_by_content(original, lambda digest: digest)
    grown = digests(200, start=1000) + original[::-1]
    after = split_by_content(grown, lambda digest: digest)
    assert set(before.test) <= set(after.test)
    assert set(before.train) <= set(after.train)
    assert set(after.test) - set(before.test) == {d for d in grown[:200] if is_test(d)}


def test_duplicates_land_on_one_side(kaggle):
    root, paths = kaggle
    examples = read_kaggle_ai_vs_human(root).examples
    sha = {
        e.name: hashlib.sha256((root / e.name).read_bytes()).hexdigest()
        for e in examples
        if paths[e.name] != "missing"
    }
    split = split_by_content(sha.items(), lambda item: item[1])
    side = {paths[name]: "test" if (name, d) in split.test else "train" for name, d in sha.items()}
    assert side["duplicate_of_crop"] == side["astronaut_crop"]
    assert len(split.train) + len(split.test) == len(sha)
