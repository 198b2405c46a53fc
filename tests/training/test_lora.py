"""LoRA fine-tunes: only the adapter and the head learn, and stages serve the adapter on its base.

Runs in .venv-train only (torch, transformers, peft). The base is the tiny random ViT of
tests/torch/tiny.py with three classes of other names, so it is re-headed; the data is
sample-photo crops against the project's generated images.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from PIL import Image  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

import deeptrust.processors.registry  # noqa: E402, F401 - registers the model backends
from deeptrust.processors.artefact_archive import pack_directory  # noqa: E402
from deeptrust.processors.model_follower import ModelFollower, Outcome  # noqa: E402
from deeptrust.processors.models import ModelSpec, load_model  # noqa: E402
from deeptrust.processors.transformers_backends.common import TRAINING_RECORD  # noqa: E402
from deeptrust.streams.config import KafkaSettings  # noqa: E402
from deeptrust.training.datasets.example import read_local  # noqa: E402
from deeptrust.training.datasets.kaggle_ai_vs_human import read_kaggle_ai_vs_human  # noqa: E402
from deeptrust.training.detector.probe import balanced_weights  # noqa: E402
from deeptrust.training.service.seed_dataset import GENERATED  # noqa: E402
from deeptrust.training.trainer import TrainConfig, fine_tune  # noqa: E402
from tests.events import model_update  # noqa: E402
from tests.images import sample_paths, small_photo  # noqa: E402
from tests.torch.tiny import tiny_vit  # noqa: E402

torch.set_num_threads(2)
KAFKA = KafkaSettings(bootstrap_servers="127.0.0.1:1", topic_prefix="unit.")  # never dialled
SIDE = 64


def dataset() -> tuple[list[Image.Image], np.ndarray, list[Image.Image], np.ndarray]:
    """32 real crops and 32 generated images; a quarter of each in validation."""
    rng = np.random.default_rng(0)
    real = []
    for path in sample_paths():
        photo = Image.open(io.BytesIO(small_photo(path, 160))).convert("RGB")
        for _ in range(4):
            x = int(rng.integers(0, photo.width - SIDE + 1))
            y = int(rng.integers(0, photo.height - SIDE + 1))
            real.append(photo.crop((x, y, x + SIDE, y + SIDE)))
    examples = read_kaggle_ai_vs_human(GENERATED).examples
    generated = [
        Image.open(io.BytesIO(read_local(example.uri))).convert("RGB")
        for example in examples[:: len(examples) // len(real)][: len(real)]
    ]
    images, labels = real + generated, np.array([0] * len(real) + [1] * len(generated))
    val = [i for i in range(len(images)) if i % 4 == 0]
    train = [i for i in range(len(images)) if i % 4]
    return [images[i] for i in train], labels[train], [images[i] for i in val], labels[val]


def balanced_log_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    z = logits[:, 1].astype(np.float64) - logits[:, 0]
    per_row = np.logaddexp(0.0, z) - labels * z
    return float(np.mean(per_row * balanced_weights(labels)))


def test_a_lora_fine_tune_saves_its_adapter_and_base_and_the_follower_serves_it(
    store, tmp_path: Path
) -> None:
    base = tiny_vit(tmp_path / "base", labels={0: "cat", 1: "dog", 2: "car"})
    train_x, train_y, val_x, val_y = dataset()
    config = TrainConfig(
        backbone="hf-vit",
        model=str(base),
        adapter="lora",
        lora_rank=4,
        epochs=3,
        batch_size=8,
        learning_rate=1e-2,
        device="cpu",
    )
    result = fine_tune(train_x, train_y, val_x, val_y, config, tmp_path / "out")
    out = result.output_dir

    # The artefact: the adapter (LoRA and the re-trained head), never the base's weights.
    names = {path.name for path in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", TRAINING_RECORD} <= names
    assert "model.safetensors" not in names
    adapter = json.loads((out / "adapter_config.json").read_text(encoding="utf-8"))
    assert adapter["base_model_name_or_path"] == str(base)
    assert adapter["r"] == 4
    weights = load_file(out / "adapter_model.safetensors")
    assert any("lora_A" in key for key in weights)
    assert any("classifier" in key for key in weights)
    assert not any("k_proj.lora" in key for key in weights)  # not a target
    record = json.loads((out / TRAINING_RECORD).read_text(encoding="utf-8"))
    assert record["adapter"]["base_model"] == str(base)
    assert len(record["adapter"]["base_weights_sha256"]) == 64
    base_params = sum(t.numel() for t in load_file(base / "model.safetensors").values())
    assert 0 < record["adapter"]["trainable_parameters"] < base_params / 4

    # Served through the hf-vit backend, it is the model training validated: same val loss.
    spec = ModelSpec("detect", "hf-vit", "hf-vit", version="1", options={"path": str(out)})
    served = load_model(spec)
    best = next(s for s in result.history if s.epoch == result.best_epoch)
    assert balanced_log_loss(served.logits(val_x), val_y) == pytest.approx(best.val_loss, abs=1e-5)
    untrained = load_model(
        ModelSpec("detect", "hf-vit", "hf-vit", options={"path": str(base), "ai_label": "dog"})
    )
    assert not np.allclose(served.logits(val_x)[:, :2], untrained.logits(val_x)[:, :2])

    # Hot reload: the follower fetches the archive, checks, unpacks and loads the adapter.
    stored = store.put("models/vit/lora.tar.gz", pack_directory(out))
    event = model_update(stored.uri, stored.sha256, backend="hf-vit")
    follower = ModelFollower(KAFKA, store, "deeptrust-detector", spec, tmp_path / "cache")
    assert follower.handle(event) is Outcome.LOADED, follower.last_failure
    pending = follower.take_pending()
    assert pending is not None
    np.testing.assert_allclose(pending.model.logits(val_x), served.logits(val_x), atol=1e-5, rtol=0)

    # A base whose weights changed since training is refused, not served with the adapter.
    tiny_vit(base, labels={0: "cat", 1: "dog", 2: "car"}, seed=1)
    again = ModelFollower(KAFKA, store, "deeptrust-detector", spec, tmp_path / "cache-2")
    assert again.handle(event) is Outcome.FAILED
    assert "was trained on" in str(again.last_failure)
