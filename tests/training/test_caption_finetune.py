"""The captioner's LoRA fine-tune learns, resumes exactly, and the caption stage serves it.

Runs in .venv-train only (torch, transformers, peft). The base is the tiny random BLIP of
tests/torch/tiny.py with narrow weights, which learns in seconds; the data is plain colour
fields captioned by their colour and a thing, from its vocabulary, so the captions depend
on the pixels.
"""

from __future__ import annotations

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
from deeptrust.processors.models import ModelSpec, load_model  # noqa: E402
from deeptrust.processors.transformers_backends.common import TRAINING_RECORD  # noqa: E402
from deeptrust.training.trainer.caption_config import CaptionConfig  # noqa: E402
from deeptrust.training.trainer.caption_finetune import (  # noqa: E402
    CaptionedImages,
    fine_tune_captioner,
)
from deeptrust.training.trainer.streaming import InMemoryImages, LoaderOptions  # noqa: E402
from tests.torch.tiny import tiny_blip  # noqa: E402

torch.set_num_threads(2)
COLOURS = {
    "red": ((200, 30, 30), ("a red cup", "the red coffee cup")),
    "blue": ((30, 40, 210), ("a blue sky", "the blue sky in the city")),
    "green": ((30, 180, 40), ("a green street", "a green city street")),
}
IN_PROCESS = LoaderOptions(workers=0)
EPOCHS = 3


def captioned(count: int, seed: int) -> CaptionedImages:
    """``count`` noisy colour fields, the colours in turn, with their two references."""
    rng = np.random.default_rng(seed)
    images, captions = [], []
    for index in range(count):
        rgb, refs = list(COLOURS.values())[index % len(COLOURS)]
        noise = rng.integers(-20, 21, (32, 32, 3))
        pixels = np.clip(np.array(rgb)[None, None, :] + noise, 0, 255).astype(np.uint8)
        images.append(Image.fromarray(pixels))
        captions.append(refs)
    return CaptionedImages(InMemoryImages(images, np.zeros(count)), tuple(captions))


def config(model: Path, **changes: object) -> CaptionConfig:
    fields: dict[str, object] = {
        "model": str(model),
        "epochs": EPOCHS,
        "batch_size": 6,
        "learning_rate": 1e-2,
        "device": "cpu",
        "lora_rank": 4,
    }
    return CaptionConfig.model_validate(fields | changes)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tiny_blip(tmp_path_factory.mktemp("blip"), spread=0.1)


@pytest.fixture(scope="module")
def sets() -> tuple[CaptionedImages, CaptionedImages]:
    return captioned(24, 0), captioned(9, 1)


class Stop(RuntimeError):
    """The run dying after an epoch's numbers, before its checkpoint."""


def test_the_adapter_learns_and_the_caption_backend_serves_it(base, sets, tmp_path):
    train, val = sets
    result = fine_tune_captioner(
        train, val, config(base), tmp_path / "out", tmp_path / "checkpoints", loading=IN_PROCESS
    )

    losses = [stats.val_loss for stats in result.history]
    assert min(losses[1:]) < losses[0] - 0.1  # it learned, beyond noise
    assert (result.output_dir / "adapter_config.json").is_file()
    assert not (result.output_dir / "model.safetensors").exists()  # the adapter alone
    record = json.loads((result.output_dir / TRAINING_RECORD).read_text(encoding="utf-8"))
    assert record["adapter"]["base_model"] == str(base)
    total = sum(t.numel() for t in load_file(base / "model.safetensors").values())
    assert 0 < record["adapter"]["trainable_parameters"] < total / 4

    spec = ModelSpec("caption", "hf-blip", "hf-blip", options={"path": str(result.output_dir)})
    captioner = load_model(spec)
    captioner.load()
    captions = captioner.predict([val.images.image(index) for index in range(3)])
    assert all(isinstance(text, str) and text for text in captions)
    # The served, merged model is the trained one: its loss on validation is the kept epoch's.
    import transformers

    merged = captioner._model
    processor = transformers.BlipProcessor.from_pretrained(result.output_dir)
    bos = merged.config.text_config.bos_token_id
    total_loss = 0.0
    with torch.no_grad():
        for index in range(len(val.images)):
            pixels = processor(images=val.images.image(index), return_tensors="pt")
            tokens = processor.tokenizer([val.reference(index, 0)], return_tensors="pt")
            ids = tokens["input_ids"].clone()
            ids[:, 0] = bos
            output = merged(
                pixel_values=pixels["pixel_values"],
                input_ids=ids,
                attention_mask=tokens["attention_mask"],
                labels=ids,
            )
            total_loss += float(output.loss)
    best = result.history[result.best_epoch - 1].val_loss
    assert total_loss / len(val.images) == pytest.approx(best, abs=1e-4)


def test_a_run_killed_after_an_epoch_resumes_to_the_uninterrupted_adapter(base, sets, tmp_path):
    train, val = sets
    settings = config(base)
    alone = fine_tune_captioner(train, val, settings, tmp_path / "alone", loading=IN_PROCESS)

    def die_in_epoch_two(stats) -> None:
        if stats.epoch == 2:
            raise Stop

    checkpoints = tmp_path / "checkpoints"
    with pytest.raises(Stop):
        fine_tune_captioner(
            train, val, settings, tmp_path / "x", checkpoints, die_in_epoch_two, IN_PROCESS
        )
    resumed = fine_tune_captioner(
        train, val, settings, tmp_path / "resumed", checkpoints, loading=IN_PROCESS
    )

    assert resumed.resumed_from == 1
    assert [s.val_loss for s in resumed.history] == pytest.approx(
        [s.val_loss for s in alone.history], abs=1e-6
    )
    expected = load_file(alone.output_dir / "adapter_model.safetensors")
    weights = load_file(resumed.output_dir / "adapter_model.safetensors")
    assert weights.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(weights[name], tensor, atol=1e-6, rtol=0, msg=name)

    other = config(base, learning_rate=1e-3)
    with pytest.raises(ValueError, match="another config"):
        fine_tune_captioner(train, val, other, tmp_path / "y", checkpoints, loading=IN_PROCESS)
