"""The torch probe trainer: it learns, converts back to ProbeHead exactly, resumes, accumulates.

Runs in .venv-train only (torch); the main suite has no torch and skips this module. The
data is a small synthetic problem (two Gaussian classes in 32 dimensions, offset and
scaled per feature so standardisation matters), so every run takes well under a second.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from deeptrust.processors.detectors.mobilenet_probe import ProbeHead  # noqa: E402
from deeptrust.training.trainer import EpochStats, TrainConfig, train_probe  # noqa: E402
from deeptrust.training.trainer.loop import CHECKPOINT_FILE, _accumulate_gradients  # noqa: E402

DIMENSIONS = 32

torch.set_num_threads(2)


def gaussian_problem(rows: int, seed: int, separation: float = 6.0):
    """Two classes 'separation' standard deviations apart along a fixed direction."""
    rng = np.random.default_rng(seed)
    direction = np.random.default_rng(1234).normal(size=DIMENSIONS)
    direction /= np.linalg.norm(direction)
    labels = (rng.random(rows) < 0.4).astype(np.int64)  # imbalanced on purpose
    features = rng.normal(size=(rows, DIMENSIONS)) + np.outer(labels - 0.5, direction) * separation
    # Feature-wise offsets and scales, as real backbone features have.
    offsets = np.linspace(-5.0, 5.0, DIMENSIONS)
    scales = np.linspace(0.1, 10.0, DIMENSIONS)
    return (features * scales + offsets).astype(np.float32), labels


@pytest.fixture(scope="module")
def problem():
    train_x, train_y = gaussian_problem(400, seed=0)
    val_x, val_y = gaussian_problem(200, seed=1)
    return train_x, train_y, val_x, val_y


def config(**fields) -> TrainConfig:
    defaults = {"epochs": 8, "batch_size": 64, "learning_rate": 0.05, "device": "cpu"}
    return TrainConfig(**{**defaults, **fields})


def weights_of(result) -> np.ndarray:
    return np.r_[result.head.weights, result.head.bias]


def test_learns_a_separable_problem_and_converts_back_to_the_same_head(problem):
    train_x, train_y, val_x, val_y = problem
    seen: list[EpochStats] = []
    result = train_probe(train_x, train_y, val_x, val_y, config(), on_epoch=seen.append)

    assert [stats.epoch for stats in result.history] == list(range(1, 9))
    assert seen == result.history
    assert result.resumed_from is None
    assert result.device == "cpu"
    assert result.precision == "fp32"  # auto on the CPU
    best = min(result.history, key=lambda stats: stats.val_loss)
    assert result.best_epoch == best.epoch

    head = result.head
    assert isinstance(head, ProbeHead)
    assert head.dimensions == DIMENSIONS
    assert head.weights.dtype == np.float64
    probabilities = head.probability(val_x)
    accuracy = np.mean((probabilities >= head.threshold) == val_y.astype(bool))
    assert accuracy > 0.95
    assert accuracy == pytest.approx(best.val_accuracy)
    assert best.val_auc > 0.98

    # Standardisation is the training set's, computed independently here.
    x64 = train_x.astype(np.float64)
    np.testing.assert_allclose(head.mean, x64.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(head.scale, x64.std(axis=0), rtol=1e-12)

    # The float32 torch model with the head's parameters gives the head's logits.
    linear = torch.nn.Linear(DIMENSIONS, 1)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(head.weights).float()[None, :])
        linear.bias.fill_(head.bias)
        standardised = torch.from_numpy(
            ((val_x - x64.mean(axis=0)) / x64.std(axis=0)).astype(np.float32)
        )
        torch_logits = linear(standardised).squeeze(1).double().numpy()
    np.testing.assert_allclose(head.logits(val_x), torch_logits, atol=1e-4)
    # And the best epoch's validation loss is the head's balanced log-loss.
    z = head.logits(val_x)
    losses = np.logaddexp(0.0, z) - val_y * z
    weights = np.where(
        val_y == 1, len(val_y) / (2 * val_y.sum()), len(val_y) / (2 * (1 - val_y).sum())
    )
    assert np.mean(weights * losses) == pytest.approx(best.val_loss, rel=1e-4)

    metadata = head.metadata
    assert metadata["best_epoch"] == result.best_epoch
    assert metadata["config_digest"] == config().digest()
    assert metadata["config"]["learning_rate"] == 0.05
    assert metadata["device"] == "cpu"
    assert metadata["precision"] == "fp32"
    assert metadata["torch_version"] == torch.__version__
    assert len(metadata["data_digest"]) == 64


def test_head_survives_save_and_load(problem, tmp_path):
    result = train_probe(*problem, config(epochs=2))
    path = tmp_path / "head.npz"
    result.head.save(path)
    loaded = ProbeHead.load(path)
    np.testing.assert_allclose(
        loaded.probability(problem[2]), result.head.probability(problem[2]), atol=1e-6
    )
    assert loaded.metadata["config_digest"] == result.head.metadata["config_digest"]


def test_same_seed_same_head_other_seed_other_head_and_caller_rng_untouched(problem):
    before = torch.get_rng_state()
    first = train_probe(*problem, config(epochs=2))
    assert torch.equal(torch.get_rng_state(), before)
    again = train_probe(*problem, config(epochs=2))
    other = train_probe(*problem, config(epochs=2, seed=1))
    np.testing.assert_array_equal(weights_of(first), weights_of(again))
    assert not np.allclose(weights_of(first), weights_of(other))


class Killed(Exception):
    pass


def test_a_killed_run_resumes_to_the_uninterrupted_result(problem, tmp_path):
    settings = config(epochs=6)
    reference = train_probe(*problem, settings)

    def kill_at_epoch_4(stats: EpochStats) -> None:
        if stats.epoch == 4:
            raise Killed

    with pytest.raises(Killed):
        train_probe(*problem, settings, checkpoint_dir=tmp_path, on_epoch=kill_at_epoch_4)
    # on_epoch runs before the checkpoint, so epoch 4 was not saved and is redone.
    assert sorted(path.name for path in tmp_path.iterdir()) == [CHECKPOINT_FILE]
    saved = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    assert saved["epoch"] == 3

    reported: list[int] = []
    resumed = train_probe(
        *problem, settings, checkpoint_dir=tmp_path, on_epoch=lambda s: reported.append(s.epoch)
    )
    assert resumed.resumed_from == 3
    assert reported == [4, 5, 6]
    assert resumed.best_epoch == reference.best_epoch
    np.testing.assert_allclose(weights_of(resumed), weights_of(reference), rtol=0, atol=1e-6)
    assert [s.epoch for s in resumed.history] == [s.epoch for s in reference.history]
    for name in ("train_loss", "val_loss", "val_accuracy", "val_auc"):
        got = [getattr(s, name) for s in resumed.history]
        assert got == pytest.approx([getattr(s, name) for s in reference.history], rel=1e-6)

    # A finished run returns at once with the same head, training nothing.
    def must_not_train(stats: EpochStats) -> None:
        raise AssertionError("a finished run trained again")

    finished = train_probe(*problem, settings, checkpoint_dir=tmp_path, on_epoch=must_not_train)
    assert finished.resumed_from == 6
    np.testing.assert_array_equal(weights_of(finished), weights_of(resumed))
    assert finished.head.metadata == resumed.head.metadata
    assert finished.history == resumed.history


def test_a_checkpoint_of_another_config_or_other_data_is_refused(problem, tmp_path):
    train_probe(*problem, config(epochs=2), checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="another config"):
        train_probe(*problem, config(epochs=2, learning_rate=0.01), checkpoint_dir=tmp_path)
    train_x, train_y, val_x, val_y = problem
    with pytest.raises(ValueError, match="other training or validation data"):
        train_probe(train_x * 2, train_y, val_x, val_y, config(epochs=2), checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="other training or validation data"):
        train_probe(train_x, train_y, val_x, 1 - val_y, config(epochs=2), checkpoint_dir=tmp_path)


def test_one_accumulated_step_equals_one_full_batch_step(problem):
    train_x, train_y, val_x, val_y = problem
    rows = 64  # one effective batch, so exactly one optimiser step
    x, y = train_x[:rows], train_y[:rows]
    full = train_probe(x, y, val_x, val_y, config(epochs=1, batch_size=rows))
    accumulated = train_probe(
        x, y, val_x, val_y, config(epochs=1, batch_size=rows, accumulation_steps=4)
    )
    np.testing.assert_allclose(weights_of(accumulated), weights_of(full), rtol=0, atol=1e-6)
    assert accumulated.history[0].train_loss == pytest.approx(full.history[0].train_loss, rel=1e-6)


def test_accumulation_with_a_short_last_batch_matches_over_several_steps(problem):
    # 100 rows, batches of 64: every epoch ends in a 36-row batch, micro-batches 16+16+4.
    train_x, train_y, val_x, val_y = problem
    x, y = train_x[:100], train_y[:100]
    full = train_probe(x, y, val_x, val_y, config(epochs=3, batch_size=64))
    accumulated = train_probe(
        x, y, val_x, val_y, config(epochs=3, batch_size=64, accumulation_steps=4)
    )
    np.testing.assert_allclose(weights_of(accumulated), weights_of(full), rtol=0, atol=1e-5)


def test_micro_batch_gradients_sum_to_the_effective_batch_mean_gradient():
    # AdamW's step hardly depends on the gradient's scale, so the weight tests above would
    # not notice a loss divided by the wrong count; this checks the gradient itself.
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(10, 5, generator=generator)
    y = (torch.rand(10, generator=generator) > 0.5).float()
    w = torch.rand(10, generator=generator) + 0.5
    model = torch.nn.Linear(5, 1)

    expected_loss = (
        torch.nn.functional.binary_cross_entropy_with_logits(
            model(x).squeeze(1), y, reduction="none"
        )
        * w
    ).mean()
    expected_loss.backward()
    expected = (model.weight.grad.clone(), model.bias.grad.clone())

    for micro_size in (10, 4, 3, 1):  # 4 and 3 leave a short last micro-batch
        model.zero_grad()
        loss = _accumulate_gradients(model, x, y, w, micro_size)
        assert float(loss) == pytest.approx(expected_loss.item(), rel=1e-6)
        torch.testing.assert_close(model.weight.grad, expected[0], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(model.bias.grad, expected[1], rtol=1e-6, atol=1e-7)


def test_bf16_on_the_cpu_still_learns_and_is_recorded(problem):
    result = train_probe(*problem, config(precision="bf16"))
    assert result.precision == "bf16"
    assert result.head.metadata["precision"] == "bf16"
    val_x, val_y = problem[2], problem[3]
    accuracy = np.mean((result.head.probability(val_x) >= 0.5) == val_y.astype(bool))
    assert accuracy > 0.9
    # bf16 really ran: its weights differ from the fp32 run's beyond float32 rounding.
    fp32 = train_probe(*problem, config(precision="fp32"))
    assert not np.allclose(weights_of(result), weights_of(fp32), rtol=0, atol=1e-5)


def test_bad_inputs_are_refused(problem):
    train_x, train_y, val_x, val_y = problem
    with pytest.raises(ValueError, match="expand_sweep"):
        train_probe(*problem, config(sweep={"learning_rate": [0.1, 0.2]}))
    with pytest.raises(ValueError, match="both classes"):
        train_probe(train_x, np.zeros_like(train_y), val_x, val_y, config())
    with pytest.raises(ValueError, match="16-d"):
        train_probe(train_x, train_y, val_x[:, :16], val_y, config())
    with pytest.raises(ValueError, match="labels must be 0"):
        train_probe(train_x, train_y * 2, val_x, val_y, config())


def test_the_gradient_scaler_path_trains_and_resumes(problem, tmp_path, monkeypatch):
    # CUDA's fp16 path (autocast + GradScaler) exercised on the CPU, where torch has a
    # scaler too: scaled steps learn, and the scaler's state survives a resume.
    from deeptrust.training.trainer import loop

    monkeypatch.setattr(loop, "make_scaler", lambda precision, device: torch.amp.GradScaler("cpu"))
    settings = config(epochs=4, precision="fp16")
    reference = train_probe(*problem, settings)
    assert reference.precision == "fp16"
    accuracy = np.mean((reference.head.probability(problem[2]) >= 0.5) == problem[3].astype(bool))
    assert accuracy > 0.95

    def kill_at_epoch_3(stats: EpochStats) -> None:
        if stats.epoch == 3:
            raise Killed

    with pytest.raises(Killed):
        train_probe(*problem, settings, checkpoint_dir=tmp_path, on_epoch=kill_at_epoch_3)
    saved = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    assert saved["scaled"] is True
    assert saved["scaler"]["scale"] > 0
    resumed = train_probe(*problem, settings, checkpoint_dir=tmp_path)
    assert resumed.resumed_from == 2
    np.testing.assert_allclose(weights_of(resumed), weights_of(reference), rtol=0, atol=1e-6)

    # The same checkpoint on a device without a scaler is refused, not half-restored.
    monkeypatch.setattr(loop, "make_scaler", lambda precision, device: None)
    with pytest.raises(ValueError, match="gradient scaler"):
        train_probe(*problem, settings, checkpoint_dir=tmp_path)
