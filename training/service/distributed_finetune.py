"""The ViT fine-tune of one config on Kaggle-layout folders, one process or many (``torchrun``).

``torchrun --nproc-per-node 2 -m deeptrust.training.service.distributed_finetune --dataset
DIR --config training/configs/detector-vit.toml --output OUT`` runs it data-parallel (gloo on
the CPU, NCCL on CUDA; :mod:`deeptrust.training.trainer.distributed`); without ``torchrun``
it is the single-process run. Every process runs the same quality checks and content-hash
split (deterministic), reads its share of each batch through its own loader workers, and
the first writes the checkpoints and the ``save_pretrained`` output, which the ``hf-vit``
detect backend loads. For a job outside the retrain service (no MLflow, no registry): the
service's own jobs train in one process.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

from deeptrust.streams.objectstore import LocalObjectStore
from deeptrust.training.service.data import byte_reader, folder_sources, prepare
from deeptrust.training.service.vit_recipe import image_dataset
from deeptrust.training.trainer.config import expand_sweep, load_config
from deeptrust.training.trainer.loading import LoaderOptions


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the arguments, split the data, fine-tune the config's first grid point."""
    from deeptrust.training.trainer.finetune import fine_tune_sets

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path, action="append", required=True)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--checkpoints", type=Path)
    parser.add_argument("--workers", type=int, default=2, help="loader workers per process")
    args = parser.parse_args(argv)
    config = expand_sweep(load_config(args.config))[0]
    read = byte_reader(LocalObjectStore.at(Path.cwd()))  # the folders are read directly
    with tempfile.TemporaryDirectory() as manifests:
        data = prepare(folder_sources(args.dataset), read, Path(manifests))
    result = fine_tune_sets(
        image_dataset(data.train, read),
        image_dataset(data.validation, read),
        config,
        args.output,
        args.checkpoints,
        loading=LoaderOptions(workers=args.workers),
    )
    print(json.dumps({"output": str(result.output_dir), "best_epoch": result.best_epoch}))


if __name__ == "__main__":
    main()
