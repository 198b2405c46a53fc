"""One effective batch's gradients of the ViT fine-tune, in this process or under torchrun.

``python -m tests.training.ddp_gradients DATASET MODEL OUT`` (one process) or
``torchrun --nproc-per-node 2 -m tests.training.ddp_gradients ...`` (DDP, gloo): the first
process saves ``{"loss": ..., "grads": {name: tensor}}`` to OUT after the backward of the
first shuffled batch (9 rows: shares of 5 and 4 under two processes). Run by
tests/training/test_ddp.py.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

from deeptrust.training.datasets.example import read_local
from deeptrust.training.datasets.kaggle_ai_vs_human import read_kaggle_ai_vs_human
from deeptrust.training.datasets.quality import check_quality
from deeptrust.training.service.vit_recipe import image_dataset
from deeptrust.training.trainer import TrainConfig
from deeptrust.training.trainer.finetune import _prepare, _Run
from deeptrust.training.trainer.loading import LoaderOptions

BATCH = 9


def main(dataset: Path, model: Path, out: Path) -> None:
    torch.set_num_threads(1)
    accepted = check_quality(read_kaggle_ai_vs_human(dataset).examples, reader=read_local).accepted
    train, val = accepted[4:], accepted[:4]
    config = TrainConfig(
        backbone="hf-vit",
        model=str(model),
        epochs=1,
        batch_size=BATCH,
        accumulation_steps=3,
        learning_rate=1e-3,
        device="cpu",
    )
    device = torch.device("cpu")
    data = _prepare(image_dataset(train, read_local), image_dataset(val, read_local), device)
    with tempfile.TemporaryDirectory() as folder:
        run = _Run(data, config, device, "fp32", Path(folder), LoaderOptions(workers=0))
        pixels, batch = next(iter(run.train_batches))
        loss = run.world.sum(run.backward_batch(pixels, batch))
        if run.world.leader:
            grads = {
                name: parameter.grad.detach().clone()
                for name, parameter in run.model.named_parameters()
                if parameter.grad is not None
            }
            torch.save({"loss": loss, "grads": grads, "world": run.world.size}, out)
        run.world.barrier()
        run.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
