"""CaptionConfig: the shipped file, validation and the digest. No torch: runs everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from deeptrust.training.trainer.caption_config import (
    BLIP_BASE,
    CaptionConfig,
    load_caption_config,
)

SHIPPED = Path(__file__).resolve().parents[2] / "training" / "configs" / "captioner.toml"


def test_the_shipped_config_is_the_defaults_written_out():
    config = load_caption_config(SHIPPED)
    assert config == CaptionConfig()
    assert (config.model, config.adapter, config.lora_targets) == (
        BLIP_BASE,
        "lora",
        ["query", "value"],
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[train]\n", "no \\[caption\\] table"),
        ("[caption]\nbatch_size = 10\naccumulation_steps = 4\n", "not a multiple"),
        ('[caption]\nmodel = " "\n', "model must name"),
        ('[caption]\nadapter = "prefix"\n', "adapter"),
        ("[caption]\nepochs = 0\n", "epochs"),
        ("[caption]\nlr = 0.1\n", "lr"),
    ],
)
def test_invalid_caption_configs_are_refused(tmp_path, text, message):
    path = tmp_path / "captioner.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load_caption_config(path)


def test_the_digest_follows_every_field():
    base = CaptionConfig()
    assert base.digest() == CaptionConfig(epochs=3).digest()
    changed = [
        CaptionConfig(model="/models/blip"),
        CaptionConfig(seed=1),
        CaptionConfig(learning_rate=2e-4),
        CaptionConfig(lora_rank=4),
        CaptionConfig(lora_targets=["query"]),
        CaptionConfig(max_caption_tokens=20),
        CaptionConfig(adapter="none"),
    ]
    digests = {config.digest() for config in changed}
    assert len(digests) == len(changed)
    assert base.digest() not in digests
