"""Examples read lazily, in worker processes: the datasets and loaders every recipe trains from.

A job's images stay in the object store until a batch needs them: an :class:`ImageDataset`
holds each example's URI, content hash and label only, and a worker process of a
``torch.utils.data.DataLoader`` reads, decodes (the detect stage's
:func:`~deeptrust.streams.images.decode_image`) and transforms one example at a time. What
is in memory at once is the loader's prefetch (``workers x prefetch`` batches), not the
dataset, so peak memory does not grow with the number of examples.

Workers start by ``forkserver`` by default: the retrain consumer trains in a thread beside
its Kafka clients' threads, and forking a threaded process can copy a lock held by another
thread into the child. The dataset, its reader and its transform are therefore pickled to
each worker; the forkserver preloads this module (and so torch), so a worker starts in
milliseconds rather than re-importing torch.

Only the retrain worker imports this module (torch, ``.venv-train``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from deeptrust.streams.images import decode_image
from deeptrust.training.trainer.loading import LoaderOptions

__all__ = [
    "EpochBatches",
    "ImageDataset",
    "ImageRef",
    "InMemoryImages",
    "InOrder",
    "LabelledImages",
    "LoaderOptions",
    "content_digest",
    "loader",
    "shutdown",
    "unchanged",
]

Transform = Callable[[Image.Image], Any]
Reader = Callable[[str], bytes]


@dataclass(frozen=True)
class ImageRef:
    """What an :class:`ImageDataset` keeps of one example: where, which bytes, which label.

    ``label`` is None where none is needed (features computed for scoring); a set with one
    cannot be trained on (its label reads as NaN and the trainers refuse it).
    """

    uri: str
    sha256: str
    label: int | None = None


def content_digest(keys: Sequence[str], labels: np.ndarray, name: str) -> bytes:
    """What a run's data digest takes from one set: its size, content keys and labels."""
    sha = hashlib.sha256(f"{name}:{len(keys)}\n".encode())
    for key in keys:
        sha.update(key.encode())
    sha.update(np.asarray(labels, np.uint8).tobytes())
    return sha.digest()


class LabelledImages(Dataset[tuple[Any, int]]):
    """A set of labelled images to train on: ``(transformed image, index)`` per item.

    ``keys`` name each image's content (a SHA-256), so a run's identity is known without
    decoding a pixel; ``labels`` are known up front for the class-balanced weights.
    """

    keys: tuple[str, ...]
    labels: np.ndarray
    transform: Transform | None

    def __len__(self) -> int:
        return len(self.keys)

    def with_transform(self, transform: Transform) -> LabelledImages:
        """The same images, each passed through ``transform`` as it is read."""
        raise NotImplementedError

    def image(self, index: int) -> Image.Image:
        """The RGB image at ``index``."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self.image(index)
        return (image if self.transform is None else self.transform(image)), index


class ImageDataset(LabelledImages):
    """Images read through ``read`` (the object store) and decoded when an item is asked for."""

    def __init__(
        self, refs: Sequence[ImageRef], read: Reader, transform: Transform | None = None
    ) -> None:
        self.refs = tuple(refs)
        self.read = read
        self.transform = transform
        self.keys = tuple(ref.sha256 for ref in self.refs)
        self.labels = np.array(
            [np.nan if ref.label is None else ref.label for ref in self.refs], np.float64
        )

    def with_transform(self, transform: Transform) -> ImageDataset:
        """The same references and reader, another transform."""
        return ImageDataset(self.refs, self.read, transform)

    def image(self, index: int) -> Image.Image:
        """Read and decode as the detect stage does an upload, then RGB."""
        image = decode_image(self.read(self.refs[index].uri)).image
        return image if image.mode == "RGB" else image.convert("RGB")


class InMemoryImages(LabelledImages):
    """Images already decoded (tests, small callers): keyed by a hash of their pixels."""

    def __init__(
        self,
        images: Sequence[Image.Image],
        labels: np.ndarray,
        transform: Transform | None = None,
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = [image if image.mode == "RGB" else image.convert("RGB") for image in images]
        self.labels = np.asarray(labels, np.float64)
        self.transform = transform
        self.keys = tuple(_pixel_key(image) for image in self.images)

    def with_transform(self, transform: Transform) -> InMemoryImages:
        """The same images, another transform."""
        clone = InMemoryImages.__new__(InMemoryImages)
        clone.images, clone.labels, clone.keys = self.images, self.labels, self.keys
        clone.transform = transform
        return clone

    def image(self, index: int) -> Image.Image:
        """The image as given (RGB)."""
        return self.images[index]


def _pixel_key(image: Image.Image) -> str:
    sha = hashlib.sha256(repr(image.size).encode())
    sha.update(image.tobytes())
    return sha.hexdigest()


class EpochBatches(Sampler[list[int]]):
    """Each pass: a fresh permutation from ``generator`` cut into batches of ``batch_size``.

    The permutation is drawn in the training process when an epoch's iteration starts, so
    the order depends on the generator's state alone (a resumed run restores it) and not
    on the workers.
    """

    def __init__(self, rows: int, batch_size: int, generator: torch.Generator) -> None:
        self.rows, self.batch_size, self.generator = rows, batch_size, generator

    def __len__(self) -> int:
        return -(-self.rows // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.rows, generator=self.generator).tolist()
        for start in range(0, self.rows, self.batch_size):
            yield order[start : start + self.batch_size]


class InOrder(Sampler[list[int]]):
    """Consecutive batches of ``batch_size`` rows, for scoring and validation."""

    def __init__(self, rows: int, batch_size: int) -> None:
        self.rows, self.batch_size = rows, batch_size

    def __len__(self) -> int:
        return -(-self.rows // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        for start in range(0, self.rows, self.batch_size):
            yield list(range(start, min(start + self.batch_size, self.rows)))


def unchanged(batch: Any) -> Any:
    """A collate function that leaves a batch as it is (a list of PIL images, a ready tensor)."""
    return batch


def loader(
    dataset: Dataset[Any],
    batches: Sampler[list[int]],
    options: LoaderOptions,
    collate: Callable[[list[Any]], Any] | None = None,
) -> DataLoader[Any]:
    """A ``DataLoader`` reading ``dataset`` in ``batches`` with ``options``' workers."""
    return DataLoader(
        dataset,
        batch_sampler=batches,
        collate_fn=collate,
        **options.loader_arguments(),
    )


def shutdown(data_loader: DataLoader[Any]) -> None:
    """Stop a loader's persistent workers now rather than when it is collected."""
    iterator = getattr(data_loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
