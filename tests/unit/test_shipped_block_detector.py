"""The shipped default detector on the committed samples: within what docs/detector-shipped.md says.

The head is the one `make ship-detector` wrote; the images are the repository's sample
photographs and the draws of the project's own generators, the ones `make demo` uploads.
The bounds are the report's, rounded towards failure: no sample photograph called
AI-generated (the thresholds admit 1% of real calibration crops, and the whole test
photographs scored none), and most generated draws flagged. A refit that loses either
fails here before it ships.
"""

from pathlib import Path

import pytest

import deeptrust.processors.registry  # noqa: F401 - registers the backends
from deeptrust.processors.backbones.mobilenet_v2 import WEIGHTS_SHA256
from deeptrust.processors.detectors.block_probe import BLOCKS, shipped_head_path
from deeptrust.processors.detectors.mobilenet_probe import ProbeHead
from deeptrust.processors.models import ModelSpec, load_model
from deeptrust.processors.settings import ProcessorSettings
from deeptrust.streams.images import FetchedImage, decode_image
from tests.images import sample_paths

GENERATED = Path(__file__).resolve().parents[2] / "samples" / "generated"
MIN_FLAGGED = 0.6
"""Share of each generator's draws called anything but ``real``: the report has 0.69-0.71."""


@pytest.fixture(scope="module")
def detector():
    return load_model(ModelSpec("detect", "mobilenet-blocks", "mobilenet-blocks"))


def fetched(paths: list[Path]) -> list[FetchedImage]:
    return [FetchedImage(p.read_bytes(), decode_image(p.read_bytes())) for p in paths]


def test_it_is_the_default_and_its_head_says_how_it_was_made():
    assert ProcessorSettings().detect_backend == "mobilenet-blocks"
    head = ProbeHead.load(shipped_head_path())
    assert head.metadata["backbone_weights_sha256"] == WEIGHTS_SHA256
    assert tuple(head.metadata["blocks"]) == BLOCKS
    assert head.metadata["fpr_ai_generated"] == 0.01
    assert head.metadata["fpr_inconclusive"] == 0.05
    assert head.inconclusive_threshold is not None
    assert 0.0 < head.inconclusive_threshold < head.threshold < 1.0
    assert set(head.metadata["families"]) == {
        "DCGAN",
        "GAN-nearest",
        "GAN-bilinear",
        "GAN-pixelshuffle",
        "VAE",
        "face-DCGAN",
    }


def test_no_sample_photograph_is_called_ai_generated(detector):
    verdicts = detector.predict(fetched(sample_paths()))
    assert len(verdicts) == 8
    assert [v.label for v in verdicts if v.label == "ai_generated"] == []


@pytest.mark.parametrize("family", ["dcgan", "vae"])
def test_most_draws_of_the_projects_generators_are_flagged(detector, family):
    paths = sorted((GENERATED / family).glob("*.png"))
    verdicts = detector.predict(fetched(paths))
    flagged = [v for v in verdicts if v.label != "real"]
    assert len(flagged) >= MIN_FLAGGED * len(paths), f"{len(flagged)} of {len(paths)} flagged"
    assert {v.model for v in verdicts} == {"mobilenet-blocks"}
