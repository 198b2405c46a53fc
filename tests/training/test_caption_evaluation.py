"""deeptrust evaluate-captions: the configured captioner scored against references, in MLflow.

The dataset is built here in Flickr30k's published layout (``image| n| comment``) from the
sample photographs, with reference captions written for them by hand; one listed image is
corrupt. The captioner is the stage's default (``image-statistics``, weight-free), so the
test needs no language model; the logged scores must equal BLEU and CIDEr-D recomputed
from the captions the same model gives in this process.

Runs in .venv-train (mlflow); the main environment skips it.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow")

import processors.registry  # noqa: E402, F401 - registers the model backends
from processors.models import load_model  # noqa: E402
from processors.settings import ProcessorSettings  # noqa: E402
from streams.images import decode_image  # noqa: E402
from tests.images import sample_paths  # noqa: E402
from training.evaluation.captions import caption_metrics  # noqa: E402

REFERENCES = {
    "astronaut.jpg": [
        "An astronaut in a white suit in front of a flag.",
        "A smiling woman astronaut.",
    ],
    "camera.jpg": [
        "A man with a camera on a tripod in a field.",
        "A black and white photo of a photographer.",
    ],
    "chelsea.png": ["A tabby cat looking to the side.", "A close photo of an orange cat."],
    "coffee.jpg": ["A cup of coffee on a saucer.", "A red cup of espresso seen from above."],
    "coins.jpg": ["Old coins on a dark background.", "Rows of coins in black and white."],
    "grace_hopper.jpg": ["A woman in a navy uniform.", "A portrait of an officer in uniform."],
    "hubble_deep_field.jpg": [
        "Many galaxies in deep space.",
        "A picture of space full of galaxies.",
    ],
    "rocket.jpg": ["A rocket launching into the sky.", "A rocket lifting off with smoke below."],
}


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    folder = tmp_path / "flickr"
    images = folder / "flickr30k_images"
    images.mkdir(parents=True)
    for path in sample_paths():
        (images / path.name).write_bytes(path.read_bytes())
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    lines = ["image_name| comment_number| comment"]
    for name, captions in [*REFERENCES.items(), ("broken.jpg", ["Nothing to see."])]:
        lines += [f"{name}| {number}| {caption}" for number, caption in enumerate(captions)]
    (folder / "results.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_the_stage_captioner_is_scored_against_the_references_and_logged(tracking, dataset):
    experiment = f"captions-{uuid.uuid4().hex[:8]}"
    finished = subprocess.run(
        [sys.executable, "-m", "deeptrust.cli", "evaluate-captions", str(dataset), "--batch", "3"],
        env={
            **os.environ,
            "DEEPTRUST_TRAINING_TRACKING_URI": tracking.tracking_uri,
            "DEEPTRUST_TRAINING_EXPERIMENT": experiment,
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "on 8 images" in finished.stdout

    client = mlflow.MlflowClient(tracking.tracking_uri)
    found = client.get_experiment_by_name(f"{experiment}-captions")
    assert found is not None
    (run,) = client.search_runs([found.experiment_id])
    assert run.data.params["unreadable"] == "1", "the corrupt image is counted, not scored"
    assert run.data.params["images"] == "8"

    table = client.download_artifacts(run.info.run_id, "captions.csv")
    rows = list(csv.DictReader(io.StringIO(Path(table).read_text(encoding="utf-8"))))
    captions = {row["image"]: row["caption"] for row in rows}
    assert captions.keys() == REFERENCES.keys()
    assert all(text.strip() for text in captions.values())

    # The same model in this process writes the same captions, and they score the same.
    spec = ProcessorSettings().model_spec("caption")
    model = load_model(spec)
    again = model.predict([decode_image(path.read_bytes()).image for path in sample_paths()])
    assert dict(zip((p.name for p in sample_paths()), again, strict=True)) == captions
    expected = caption_metrics(captions, REFERENCES)
    for name in ("bleu4", "cider_d", "bleu_precision_1"):
        assert run.data.metrics[name] == pytest.approx(expected[name], rel=1e-9), name
    assert run.data.metrics["bleu_precision_1"] > 0, "some words of any caption are right"
    assert run.data.params["model"] == model.spec.label
