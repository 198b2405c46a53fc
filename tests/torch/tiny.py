"""Tiny random-weight models of the production architectures, saved like hub checkpoints.

Only imported by tests that have already skipped without torch and transformers.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    BertTokenizer,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessor,
    BlipProcessor,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessor,
)

IMAGE_SIZE = 32
HIDDEN = 32
LABELS = {0: "real", 1: "ai_generated"}
# The default weight scale (0.02) makes tiny random models nearly ignore the image: ViT
# logits within 0.07 of zero (too small to test an export's tolerance on) and BLIP captioning
# every photo alike. Wider weights give ViT logits of about 2 and verdicts of both kinds on
# the sample photos, and captions that depend on the pixels.
VIT_SPREAD = 0.2
BLIP_SPREAD = 1.0
WORDS = (  # noqa: SIM905 - a vocabulary reads best as words
    "a an the of on in with photo picture image cat dog man woman street sky city "
    "red blue green snow coffee cup rocket space coins camera tripod"
).split()


def tiny_vit(directory: Path, labels: dict[int, str] | None = None, seed: int = 0) -> Path:
    """A 2-layer ViT classifier on 32x32 images (patches of 8) and its processor."""
    torch.manual_seed(seed)
    labels = LABELS if labels is None else labels
    config = ViTConfig(
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=IMAGE_SIZE,
        patch_size=8,
        initializer_range=VIT_SPREAD,
        num_labels=len(labels),
        id2label=labels,
        label2id={name: index for index, name in labels.items()},
    )
    ViTForImageClassification(config).save_pretrained(directory)
    ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(directory)
    return directory


def tiny_blip(directory: Path, seed: int = 0, spread: float = BLIP_SPREAD) -> Path:
    """A 2-layer BLIP captioner with a BERT word-piece tokenizer built from a written vocab.

    ``spread`` is its weights' scale: the wide default makes captions depend on the pixels;
    a fine-tune learns faster from a narrower one.
    """
    torch.manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    vocab_file = directory / "tiny_vocab.txt"
    vocab_file.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tokenizer = BertTokenizer(vocab=str(vocab_file), do_lower_case=True)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})  # what BLIP's decoder starts from
    assert len(tokenizer) == len(WORDS) + 6, "the vocab file was not read"
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": HIDDEN,
        "encoder_hidden_size": HIDDEN,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 64,
        "initializer_range": spread,
        "bos_token_id": tokenizer.bos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "sep_token_id": tokenizer.sep_token_id,
        "eos_token_id": tokenizer.sep_token_id,
    }
    vision = {
        "hidden_size": HIDDEN,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "image_size": IMAGE_SIZE,
        "patch_size": 8,
        "initializer_range": spread,
    }
    config = BlipConfig(text_config=text, vision_config=vision, projection_dim=HIDDEN)
    BlipForConditionalGeneration(config).save_pretrained(directory)
    image_processor = BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    return directory
