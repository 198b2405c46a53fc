"""How a job's examples are read: worker processes, how each starts, what each prefetches.

Torch-free, so the service's settings and the canary's artefact readers can carry the
options without importing torch; :mod:`deeptrust.training.trainer.streaming` turns them
into ``DataLoader`` arguments.
"""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass
from typing import Any, Literal

StartMethod = Literal["fork", "forkserver", "spawn"]
PRELOAD = (
    "deeptrust.training.trainer.streaming",
    "deeptrust.training.trainer.finetune",
    "deeptrust.processors.backbones.mobilenet_v2",
    "transformers.image_processing_utils",
    "transformers.models.vit.image_processing_vit",
    "transformers.models.vit.image_processing_pil_vit",
)
"""What a forkserver imports once, before it forks any worker: torch, transformers and the
ViT image processors the workers run (transformers imports a processor's module lazily, on
unpickling, about 5 s on this machine), the datasets and the MobileNetV2 preprocessing. A
worker forked from it starts in a fraction of a second instead. A model with another
processor class pays its own module's import once per worker."""


@dataclass(frozen=True)
class LoaderOptions:
    """Worker processes per loader (0: read in the training process), start method, prefetch.

    ``forkserver`` is the default because the retrain consumer trains in a thread beside its
    Kafka clients' threads, and forking a threaded process can copy a lock another thread
    holds into the child. Not part of a run's identity: the same data in the same order
    trains the same model whatever the worker count.
    """

    workers: int = 2
    start_method: StartMethod = "forkserver"
    prefetch: int = 2

    def __post_init__(self) -> None:
        """Refuse counts a ``DataLoader`` would refuse later, mid-job."""
        if self.workers < 0 or self.prefetch < 1:
            raise ValueError(f"workers must be >= 0 and prefetch >= 1, not {self}")

    def loader_arguments(self) -> dict[str, Any]:
        """Keyword arguments of ``torch.utils.data.DataLoader`` for these options."""
        if self.workers == 0:
            return {"num_workers": 0}
        context = multiprocessing.get_context(self.start_method)
        if self.start_method == "forkserver":
            context.set_forkserver_preload(list(PRELOAD))
        return {
            "num_workers": self.workers,
            "multiprocessing_context": context,
            "prefetch_factor": self.prefetch,
            "persistent_workers": True,
        }
