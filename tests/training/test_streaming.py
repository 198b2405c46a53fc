"""Training reads its examples lazily: loader workers read the object store, and nothing changes.

Runs in .venv-train only. The ViT fine-tune whose images worker processes read from an S3
bucket (moto's server) one batch at a time ends with the weights of the same fine-tune on
the same images decoded up front in memory; the probe head trained from a packed row file
is the head trained from the arrays. What the streaming buys (peak memory flat in the
dataset's size) is measured by bench/training_memory.py, whose figures are in
docs/training.md.
"""

from __future__ import annotations

import multiprocessing.forkserver
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from safetensors.torch import load_file  # noqa: E402

from deeptrust.streams.images import decode_image  # noqa: E402
from deeptrust.streams.objectstore import FetchPolicy, S3ObjectStore  # noqa: E402
from deeptrust.training.datasets.example import Example  # noqa: E402
from deeptrust.training.datasets.kaggle_ai_vs_human import INDEX_FILE  # noqa: E402
from deeptrust.training.datasets.quality import check_quality  # noqa: E402
from deeptrust.training.service.data import StoreReader  # noqa: E402
from deeptrust.training.service.seed_dataset import build_seed_dataset  # noqa: E402
from deeptrust.training.service.vit_recipe import image_dataset  # noqa: E402
from deeptrust.training.trainer import TrainConfig, fine_tune, train_probe  # noqa: E402
from deeptrust.training.trainer import rows as rows_module  # noqa: E402
from deeptrust.training.trainer.finetune import fine_tune_sets  # noqa: E402
from deeptrust.training.trainer.loading import LoaderOptions  # noqa: E402
from deeptrust.training.trainer.loop import train_probe_rows  # noqa: E402
from deeptrust.training.trainer.rows import write_row_file  # noqa: E402
from tests.torch.tiny import tiny_vit  # noqa: E402

torch.set_num_threads(2)
PER_CLASS = 20


@dataclass(frozen=True)
class PidRecordingReader:
    """A reader that notes which process read each object (one empty file per process)."""

    inner: StoreReader
    folder: Path

    def __call__(self, uri: str) -> bytes:
        (self.folder / str(os.getpid())).touch()
        return self.inner(uri)


def restart_forkserver() -> None:
    """Workers inherit the environment the forkserver started with; start it again in ours.

    (A service sets its S3 credentials before its first loader; a test sets them late.)
    """
    multiprocessing.forkserver._forkserver._stop()  # type: ignore[attr-defined]


def test_a_fine_tune_read_from_s3_by_workers_matches_one_on_images_in_memory(
    s3_server, tmp_path, monkeypatch
):
    bucket = "streaming-fine-tune"
    s3_server.create_bucket(bucket)
    for name, value in s3_server.environment(bucket).items():
        monkeypatch.setenv(name, value)
    restart_forkserver()
    store = S3ObjectStore(bucket, s3_server.endpoint_url, FetchPolicy(buckets=(bucket,)))
    seed = build_seed_dataset(tmp_path / "seed", real_count=PER_CLASS)
    rows = (seed / INDEX_FILE).read_text(encoding="utf-8").splitlines()[1:]
    chosen = [r for r in rows if r.split(",")[1] == "0"][:PER_CLASS]
    chosen += [r for r in rows if r.split(",")[1] == "1"][:PER_CLASS]
    examples = []
    for row in chosen:
        relative, label = row.split(",")[:2]
        stored = store.put(f"seed/{relative}", (seed / relative).read_bytes())
        examples.append(Example("seed", relative, stored.uri, label=int(label)))
    reader = StoreReader(store)
    accepted = check_quality(examples, reader=reader).accepted  # the client is made here
    assert len(accepted) == 2 * PER_CLASS
    validation = accepted[::4]
    train = [item for index, item in enumerate(accepted) if index % 4]
    model = tiny_vit(tmp_path / "vit")
    config = TrainConfig(
        backbone="hf-vit",
        model=str(model),
        epochs=2,
        batch_size=8,
        accumulation_steps=2,
        learning_rate=1e-3,
        device="cpu",
    )

    readers = tmp_path / "readers"
    readers.mkdir()
    recording = PidRecordingReader(reader, readers)
    streamed = fine_tune_sets(
        image_dataset(train, recording),
        image_dataset(validation, recording),
        config,
        tmp_path / "streamed",
        loading=LoaderOptions(workers=2, start_method="forkserver"),
    )
    pids = {int(path.name) for path in readers.iterdir()}
    assert os.getpid() not in pids, "the images were read in this process"
    assert len(pids) == 2 * 2  # two workers for training, two for validation

    def decoded(items):
        images = [decode_image(store.get(item.example.uri)).image for item in items]
        return images, np.array([item.example.label for item in items])

    in_memory = fine_tune(*decoded(train), *decoded(validation), config, tmp_path / "memory")
    assert [s.val_loss for s in streamed.history] == pytest.approx(
        [s.val_loss for s in in_memory.history], abs=1e-6
    )
    ours = load_file(streamed.output_dir / "model.safetensors")
    theirs = load_file(in_memory.output_dir / "model.safetensors")
    assert ours.keys() == theirs.keys()
    for name, tensor in ours.items():
        torch.testing.assert_close(tensor, theirs[name], atol=1e-6, rtol=0)


def test_a_probe_trained_from_a_packed_row_file_is_the_probe_trained_from_arrays(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(rows_module, "CHUNK_ROWS", 37)  # statistics merged over many chunks
    rng = np.random.default_rng(0)
    y = np.arange(300) % 2
    x = (rng.normal(size=(300, 24)) * 3 + y[:, None] * 0.5 + 7).astype(np.float32)
    keys = [f"{index:064x}" for index in range(300)]
    train = write_row_file(
        tmp_path / "train.f32", keys[:240], y[:240], lambda key: x[int(key, 16)], "toy"
    )
    val = write_row_file(
        tmp_path / "val.f32", keys[240:], y[240:], lambda key: x[int(key, 16)], "toy"
    )
    mean, std = train.statistics()
    np.testing.assert_allclose(mean, x[:240].astype(np.float64).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std, x[:240].astype(np.float64).std(axis=0), rtol=1e-12)
    assert train.take([5, 0])[0] == pytest.approx(x[5].astype(np.float64))

    config = TrainConfig(epochs=4, batch_size=32, learning_rate=0.03, device="cpu")
    from_file = train_probe_rows(train, val, config)
    from_arrays = train_probe(x[:240], y[:240], x[240:], y[240:], config)
    assert from_file.best_epoch == from_arrays.best_epoch
    np.testing.assert_allclose(from_file.head.weights, from_arrays.head.weights, atol=1e-6)
    assert from_file.head.bias == pytest.approx(from_arrays.head.bias, abs=1e-6)
