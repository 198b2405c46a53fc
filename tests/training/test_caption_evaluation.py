"""deeptrust evaluate-captions: the configured captioner scored against references, in MLflow.

The dataset is the shipped ``samples/captions/results.csv`` (Flickr30k's published layout,
three hand-written references per sample photograph) with one more listed image, corrupt.
The captioner is the stage's default (``image-statistics``, weight-free), so the test needs
no language model; the logged scores must equal BLEU and CIDEr-D recomputed from the
captions the same model gives in this process.

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

import deeptrust.processors.registry  # noqa: E402, F401 - registers the model backends
from deeptrust.processors.models import load_model  # noqa: E402
from deeptrust.processors.settings import ProcessorSettings  # noqa: E402
from deeptrust.streams.images import decode_image  # noqa: E402
from deeptrust.training.datasets.flickr30k import read_flickr30k  # noqa: E402
from deeptrust.training.evaluation.captions import caption_metrics  # noqa: E402
from tests.images import sample_paths  # noqa: E402

SHIPPED = Path(__file__).resolve().parents[2] / "samples" / "captions" / "results.csv"


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """The shipped references and photographs, plus one listed image that is corrupt."""
    folder = tmp_path / "flickr"
    images = folder / "flickr30k_images"
    images.mkdir(parents=True)
    for path in sample_paths():
        (images / path.name).write_bytes(path.read_bytes())
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    listed = SHIPPED.read_text(encoding="utf-8") + "broken.jpg| 0| Nothing to see.\n"
    (folder / "results.csv").write_text(listed, encoding="utf-8")
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
    assert all(text.strip() for text in captions.values())

    # The same model in this process writes the same captions, and they score the same.
    spec = ProcessorSettings().model_spec("caption")
    model = load_model(spec)
    again = model.predict([decode_image(path.read_bytes()).image for path in sample_paths()])
    assert dict(zip((p.name for p in sample_paths()), again, strict=True)) == captions
    references = {
        e.name: e.captions for e in read_flickr30k(SHIPPED, sample_paths()[0].parent).examples
    }
    assert captions.keys() == references.keys()
    expected = caption_metrics(captions, references)
    for name in ("bleu4", "cider_d", "bleu_precision_1"):
        assert run.data.metrics[name] == pytest.approx(expected[name], rel=1e-9), name
    assert run.data.metrics["bleu_precision_1"] > 0, "some words of any caption are right"
    assert run.data.params["model"] == model.spec.label
