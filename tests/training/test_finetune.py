"""Fine-tuning a ViT detector: it learns, resumes, refuses other runs, and serves as hf-vit.

Runs in .venv-train only (torch, transformers); the main suite skips it. The model is the
tiny random ViT of tests/torch/tiny.py (32x32 inputs, two layers), so nothing is
downloaded, and the data is 32 crops of the sample photographs (real) against 32 draws of
the project's own generators (samples/generated, AI-generated): every fit takes a second.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

import deeptrust.processors.transformers_backends  # noqa: E402, F401 - registers hf-vit
from deeptrust.processors.models import ModelSpec, load_model  # noqa: E402
from deeptrust.training.datasets.example import read_local  # noqa: E402
from deeptrust.training.datasets.kaggle_ai_vs_human import read_kaggle_ai_vs_human  # noqa: E402
from deeptrust.training.evaluation.classification import roc_auc  # noqa: E402
from deeptrust.training.service.seed_dataset import GENERATED  # noqa: E402
from deeptrust.training.trainer import EpochStats, TrainConfig, fine_tune  # noqa: E402
from deeptrust.training.trainer.finetune import TRAINING_RECORD, _binary_logits, load_classifier  # noqa: E402
from deeptrust.training.trainer.runtime import CHECKPOINT_FILE, accumulate_gradients  # noqa: E402
from tests.images import sample_paths, small_photo  # noqa: E402
from tests.torch.tiny import LABELS, tiny_vit  # noqa: E402

torch.set_num_threads(2)
CROPS_PER_PHOTO = 4
SIDE = 64


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
    """A checkpoint with three classes of other names, as a hub model has: it is re-headed."""
    return tiny_vit(tmp_path_factory.mktemp("vit"), labels={0: "cat", 1: "dog", 2: "car"})


@pytest.fixture(scope="module")
def dataset():
    """(train images, labels, validation images, labels): 48 and 16, both classes in each."""
    rng = np.random.default_rng(0)
    real = []
    for path in sample_paths():
        photo = Image.open(io.BytesIO(small_photo(path, 160))).convert("RGB")
        for _ in range(CROPS_PER_PHOTO):
            x = int(rng.integers(0, photo.width - SIDE + 1))
            y = int(rng.integers(0, photo.height - SIDE + 1))
            real.append(photo.crop((x, y, x + SIDE, y + SIDE)))
    examples = read_kaggle_ai_vs_human(GENERATED).examples
    assert {example.label for example in examples} == {1}
    generated = [
        Image.open(io.BytesIO(read_local(example.uri))).convert("RGB")
        for example in examples[:: len(examples) // len(real)][: len(real)]
    ]
    images = real + generated
    labels = np.array([0] * len(real) + [1] * len(generated))
    order = rng.permutation(len(images))
    validation = [i for i in order if i % 4 == 0]  # a quarter of each class
    train = [i for i in order if i % 4 != 0]
    return (
        [images[i] for i in train],
        labels[train],
        [images[i] for i in validation],
        labels[validation],
    )


def config(vit_dir, **fields) -> TrainConfig:
    defaults = {
        "backbone": "hf-vit",
        "model": str(vit_dir),
        "epochs": 3,
        "batch_size": 16,
        "learning_rate": 1e-3,
        "weight_decay": 0.01,
        "device": "cpu",
    }
    return TrainConfig(**{**defaults, **fields})


def weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def assert_same_weights(first, second, atol=1e-6) -> None:
    a, b = weights(first), weights(second)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=atol, msg=name)


def test_fine_tunes_and_the_output_serves_through_the_hf_vit_backend(vit_dir, dataset, tmp_path):
    _, _, val_x, val_y = dataset
    seen: list[EpochStats] = []
    settings = config(vit_dir, epochs=4)
    result = fine_tune(*dataset, settings, tmp_path / "out", on_epoch=seen.append)

    assert [stats.epoch for stats in result.history] == [1, 2, 3, 4]
    assert seen == result.history
    assert result.resumed_from is None
    assert (result.device, result.precision) == ("cpu", "fp32")  # auto on the CPU
    assert result.history[-1].train_loss < result.history[0].train_loss
    best = max(result.history, key=lambda s: (s.val_auc, -s.val_loss))
    assert result.best_epoch == best.epoch

    record = json.loads((tmp_path / "out" / TRAINING_RECORD).read_text())
    assert record == result.metadata
    assert record["best_epoch"] == best.epoch
    assert record["config_digest"] == settings.digest()
    assert record["base_model"] == str(vit_dir)

    # The production backend loads the directory and scores as validation did.
    spec = ModelSpec("detect", "hf-vit", "tuned", options={"path": str(result.output_dir)})
    detector = load_model(spec)
    assert detector.ai_index == 1
    verdicts = detector.predict(val_x)
    assert len(verdicts) == len(val_x)
    scores = np.array([verdict.ai_probability for verdict in verdicts])
    assert roc_auc(val_y, scores) == pytest.approx(best.val_auc, abs=1e-9)
    accuracy = np.mean((scores >= 0.5) == val_y.astype(bool))
    assert accuracy == pytest.approx(best.val_accuracy)
    assert {verdict.label for verdict in verdicts} <= {"real", "ai_generated"}


def test_a_killed_run_resumes_to_the_uninterrupted_result(vit_dir, dataset, tmp_path):
    settings = config(vit_dir)
    reference = fine_tune(*dataset, settings, tmp_path / "reference")

    def kill_at_epoch_2(stats: EpochStats) -> None:
        if stats.epoch == 2:
            raise Killed

    checkpoints = tmp_path / "checkpoints"
    with pytest.raises(Killed):
        fine_tune(*dataset, settings, tmp_path / "out", checkpoints, kill_at_epoch_2)
    saved = torch.load(checkpoints / CHECKPOINT_FILE, weights_only=True)
    assert saved["epoch"] == 1  # on_epoch runs before the checkpoint: epoch 2 is redone

    reported: list[int] = []
    resumed = fine_tune(
        *dataset, settings, tmp_path / "out", checkpoints, lambda s: reported.append(s.epoch)
    )
    assert resumed.resumed_from == 1
    assert reported == [2, 3]
    assert resumed.best_epoch == reference.best_epoch
    for name in ("train_loss", "val_loss", "val_accuracy", "val_auc"):
        got = [getattr(s, name) for s in resumed.history]
        assert got == pytest.approx([getattr(s, name) for s in reference.history], rel=1e-5)
    assert_same_weights(resumed.output_dir, reference.output_dir)
    # Only the best epoch's snapshot is kept beside the checkpoint.
    snapshots = sorted(p.name for p in checkpoints.iterdir() if p.name.startswith("best"))
    assert snapshots == [f"best-epoch-{reference.best_epoch:04d}"]

    def must_not_train(stats: EpochStats) -> None:
        raise AssertionError("a finished run trained again")

    finished = fine_tune(*dataset, settings, tmp_path / "again", checkpoints, must_not_train)
    assert finished.resumed_from == 3
    assert finished.history == resumed.history
    assert_same_weights(finished.output_dir, resumed.output_dir, atol=0)


def test_a_checkpoint_of_another_config_or_other_data_is_refused(vit_dir, dataset, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    fine_tune(*dataset, config(vit_dir, epochs=1), tmp_path / "out", checkpoints)
    with pytest.raises(ValueError, match="another config"):
        fine_tune(*dataset, config(vit_dir, epochs=2), tmp_path / "out", checkpoints)
    train_x, train_y, val_x, val_y = dataset
    flipped = [image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for image in train_x]
    with pytest.raises(ValueError, match="other training or validation data"):
        fine_tune(flipped, train_y, val_x, val_y, config(vit_dir, epochs=1), tmp_path, checkpoints)
    relabelled = (train_x, train_y, val_x, 1 - val_y)
    with pytest.raises(ValueError, match="other training or validation data"):
        fine_tune(*relabelled, config(vit_dir, epochs=1), tmp_path, checkpoints)


def test_accumulated_micro_batches_give_the_full_batch_gradient(vit_dir, dataset):
    import transformers

    images, labels = dataset[0][:16], dataset[1][:16]
    processor = transformers.AutoImageProcessor.from_pretrained(vit_dir)
    y = torch.tensor(labels, dtype=torch.float32)
    w = torch.rand(16, generator=torch.Generator().manual_seed(0)) + 0.5
    gradients = []
    for micro_size in (16, 4, 5):  # 5 leaves a short last micro-batch
        torch.manual_seed(0)
        model = load_classifier(str(vit_dir))

        def forward(start, stop, model=model):
            pixels = processor(images=images[start:stop], return_tensors="pt")["pixel_values"]
            return _binary_logits(model, pixels)

        loss = accumulate_gradients(forward, y, w, micro_size)
        gradients.append((float(loss), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (full_loss, full), *accumulated = gradients
    for loss, grads in accumulated:
        assert loss == pytest.approx(full_loss, rel=1e-5)
        for name, grad in full.items():
            torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_accumulation_is_the_same_run_as_one_batch(vit_dir, dataset, tmp_path):
    one_step = dataset[0][:16], dataset[1][:16], dataset[2], dataset[3]
    full = fine_tune(*one_step, config(vit_dir, epochs=1), tmp_path / "full")
    accumulated = fine_tune(
        *one_step, config(vit_dir, epochs=1, accumulation_steps=4), tmp_path / "accumulated"
    )
    # The epoch's loss is measured before its single step: it must agree closely.
    ours, theirs = accumulated.history[0], full.history[0]
    assert ours.train_loss == pytest.approx(theirs.train_loss, rel=1e-5)
    # Not the weights: the attention keys' bias has an exactly zero gradient (softmax ignores
    # a shift shared by all keys), so Adam's first step turns rounding noise there into
    # +-lr either way. The model after the step, which that bias does not change, agrees.
    assert ours.val_loss == pytest.approx(theirs.val_loss, rel=1e-4)
    assert ours.val_auc == pytest.approx(theirs.val_auc)


def test_bf16_on_the_cpu_runs_and_is_recorded(vit_dir, dataset, tmp_path):
    result = fine_tune(*dataset, config(vit_dir, epochs=1, precision="bf16"), tmp_path / "out")
    assert result.precision == "bf16"
    assert result.metadata["precision"] == "bf16"
    assert np.isfinite(result.history[0].train_loss)
    assert np.isfinite(result.history[0].val_loss)
    # Weights are saved in float32, as the backend's default dtype loads them.
    assert {t.dtype for t in weights(result.output_dir).values()} == {torch.float32}


def test_a_frozen_backbone_leaves_only_the_head_trained(vit_dir, dataset, tmp_path):
    result = fine_tune(*dataset, config(vit_dir, epochs=1, freeze_epochs=1), tmp_path / "out")
    before, after = weights(vit_dir), weights(result.output_dir)
    backbone = [name for name in after if name.startswith("vit.")]
    assert backbone
    for name in backbone:
        torch.testing.assert_close(after[name], before[name], rtol=0, atol=0, msg=name)
    assert after["classifier.weight"].shape == (2, before["classifier.weight"].shape[1])


def test_labels_decide_between_keeping_and_replacing_the_head(vit_dir, tmp_path):
    ours = tiny_vit(tmp_path / "ours", seed=3)  # already real/ai_generated: kept
    kept = load_classifier(str(ours))
    assert kept.config.id2label == LABELS
    torch.testing.assert_close(kept.classifier.weight, weights(ours)["classifier.weight"])

    two_other = tiny_vit(tmp_path / "fake-real", labels={0: "FAKE", 1: "REAL"}, seed=3)
    replaced = load_classifier(str(two_other))
    assert replaced.config.id2label == LABELS
    assert not torch.equal(replaced.classifier.weight, weights(two_other)["classifier.weight"])
    # The backbone is the checkpoint's, untouched by re-heading.
    torch.testing.assert_close(
        replaced.vit.embeddings.patch_embeddings.projection.weight,
        weights(two_other)["vit.embeddings.patch_embeddings.projection.weight"],
    )


def test_bad_inputs_are_refused(vit_dir, dataset, tmp_path):
    train_x, train_y, val_x, val_y = dataset
    with pytest.raises(ValueError, match="expand_sweep"):
        fine_tune(*dataset, config(vit_dir, sweep={"learning_rate": [1e-3, 1e-4]}), tmp_path)
    with pytest.raises(ValueError, match="backbone hf-vit"):
        fine_tune(*dataset, TrainConfig(device="cpu"), tmp_path)
    with pytest.raises(ValueError, match="both classes"):
        fine_tune(train_x, np.zeros_like(train_y), val_x, val_y, config(vit_dir), tmp_path)
    with pytest.raises(ValueError, match="labels"):
        fine_tune(train_x, train_y[:-1], val_x, val_y, config(vit_dir), tmp_path)
