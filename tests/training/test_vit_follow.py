"""A detect stage on hf-vit follows promotions: the archive is checked, unpacked once, served.

The follower's Kafka side is the same for every backend (tests/unit/test_model_follower.py
and the hot-reload integration test cover it); this covers what is particular to a model
that travels as a directory: the tar.gz the training service registers, unpacked into a
folder named by its hash and loaded through the production hf-vit backend. Two tiny random
ViTs (tests/torch/tiny.py) stand in for the shipped and the promoted model.

Runs in .venv-train (torch, transformers); the main environment skips it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import deeptrust.processors.registry  # noqa: F401 - registers the model backends
from deeptrust.processors.artefact_archive import pack_directory
from deeptrust.processors.model_follower import ModelFollower, Outcome
from deeptrust.processors.models import ModelSpec, load_model
from deeptrust.processors.transformers_backends.common import TRAINING_RECORD
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.images import FetchedImage, decode_image
from deeptrust.streams.objectstore import LocalObjectStore
from tests.events import model_update
from tests.images import sample_paths
from tests.torch.tiny import tiny_vit

MODEL = "deeptrust-detector"
# handle() never connects: the broker address is never dialled.
KAFKA = KafkaSettings(bootstrap_servers="127.0.0.1:1", topic_prefix="unit.")


def photos() -> list[FetchedImage]:
    data = [path.read_bytes() for path in sample_paths()]
    return [FetchedImage(d, decode_image(d)) for d in data]


def probabilities(spec: ModelSpec, folder: Path) -> list[float]:
    model = load_model(dataclasses.replace(spec, options={"path": str(folder)}))
    return [d.ai_probability for d in model.predict(photos())]


def test_a_promoted_vit_archive_is_unpacked_once_by_hash_and_served(
    store: LocalObjectStore, tmp_path: Path
) -> None:
    shipped = tiny_vit(tmp_path / "shipped", seed=0)
    promoted = tiny_vit(tmp_path / "promoted", seed=1)
    spec = ModelSpec("detect", "hf-vit", "hf-vit", version="1", options={"path": str(shipped)})
    stored = store.put("models/vit/promoted.tar.gz", pack_directory(promoted))
    event = model_update(stored.uri, stored.sha256, backend="hf-vit")
    cache = tmp_path / "cache"

    follower = ModelFollower(KAFKA, store, MODEL, spec, cache)
    assert follower.handle(event) is Outcome.LOADED, follower.last_failure
    pending = follower.take_pending()
    assert pending is not None
    assert (pending.version, pending.sha256) == ("2", stored.sha256)
    folder = Path(pending.model.spec.options["path"])
    assert folder == cache / f"{stored.sha256}.d"
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in promoted.iterdir())
    assert not [p for p in cache.iterdir() if p.name.startswith(".")], "no staging folder left"

    served = [d.ai_probability for d in pending.model.predict(photos())]
    assert served == pytest.approx(probabilities(spec, promoted), abs=1e-6)
    assert served != pytest.approx(probabilities(spec, shipped), abs=1e-3), "another model"

    # A restarted stage finds the unpacked folder even when the store has lost the object.
    Path(stored.uri.removeprefix("file://")).unlink()
    restarted = ModelFollower(KAFKA, store, MODEL, spec, cache)
    assert restarted.handle(event) is Outcome.LOADED, restarted.last_failure
    again = restarted.take_pending()
    assert again is not None
    assert Path(again.model.spec.options["path"]) == folder


def test_a_followed_vit_decides_with_the_threshold_its_training_recorded(
    store: LocalObjectStore, tmp_path: Path
) -> None:
    shipped = tiny_vit(tmp_path / "shipped", seed=0)
    promoted = tiny_vit(tmp_path / "promoted", seed=1)
    record = {"config": {"threshold": 0.001}}
    (promoted / TRAINING_RECORD).write_text(json.dumps(record), encoding="utf-8")
    spec = ModelSpec("detect", "hf-vit", "hf-vit", version="1", options={"path": str(shipped)})
    stored = store.put("models/vit/low.tar.gz", pack_directory(promoted))
    follower = ModelFollower(KAFKA, store, MODEL, spec, tmp_path / "cache")
    assert follower.handle(model_update(stored.uri, stored.sha256, backend="hf-vit"))
    pending = follower.take_pending()
    assert pending is not None
    verdicts = pending.model.predict(photos())
    assert {v.label for v in verdicts} == {"ai_generated"}, "every p >= 0.001"
    assert any(v.ai_probability < 0.5 for v in verdicts), "0.5 would have said real"


def test_an_announced_archive_that_does_not_unpack_is_refused(
    store: LocalObjectStore, tmp_path: Path
) -> None:
    shipped = tiny_vit(tmp_path / "shipped")
    spec = ModelSpec("detect", "hf-vit", "hf-vit", version="1", options={"path": str(shipped)})
    junk = store.put("models/vit/junk.tar.gz", b"announced with its own hash, but no archive")
    follower = ModelFollower(KAFKA, store, MODEL, spec, tmp_path / "cache")
    event = model_update(junk.uri, junk.sha256, backend="hf-vit", version="3")
    assert follower.handle(event) is Outcome.FAILED
    assert "cannot unpack" in (follower.last_failure or "")
    assert follower.take_pending() is None
    assert not (tmp_path / "cache" / f"{junk.sha256}.d").exists()
