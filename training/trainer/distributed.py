"""Data-parallel training across processes (DDP): which process this is, and its share of a batch.

Under ``torchrun`` (or any launcher that sets ``WORLD_SIZE``, ``RANK`` and the rendezvous
variables) the fine-tune joins a process group, gloo on the CPU and NCCL on CUDA; under Ray
Train (:mod:`deeptrust.training.trainer.ray_train`) it takes the group Ray started. It wraps its
model in ``DistributedDataParallel``, and each process reads and trains on its share of
every effective batch. The effective batch stays the config's ``batch_size`` over all
processes, and each share's loss is scaled so that the averaged gradient is the gradient of
the whole batch's mean loss, the single-process run's (``tests/training/test_ddp.py``).
Without those variables the world is one process and nothing changes.

Only the retrain worker imports this module (torch, ``.venv-train``).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class World:
    """This process's rank among ``size`` training processes."""

    rank: int = 0
    size: int = 1

    @property
    def leader(self) -> bool:
        """The process that writes checkpoints, snapshots and the output."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every process (a no-op alone)."""
        if self.size > 1:
            dist.barrier()

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` summed over every process."""
        if self.size == 1:
            return value
        total = value.detach().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total


def join(device: torch.device) -> World:
    """The world the launcher's variables describe, its process group started if need be.

    A launcher that starts the group itself (Ray Train's workers) is taken as it is.
    """
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size())


class Shards(Sampler[list[int]]):
    """Each process's share of each batch of ``batches``: rows ``rank``, ``rank + size``, ...

    Every process must run a backward for every batch (DDP's all-reduce waits for each), so
    a process whose share of a short last batch would be empty gets the batch's first row
    with weight zero. ``plan`` says, in order, each yielded share's batch size and whether it
    is such a stand-in; the training loop takes one entry per batch it receives.
    """

    def __init__(self, batches: Sampler[list[int]], world: World) -> None:
        self.batches, self.world = batches, world
        self.plan: deque[tuple[int, bool]] = deque()

    def __len__(self) -> int:
        count: int = len(self.batches)
        return count

    def __iter__(self) -> Iterator[list[int]]:
        self.plan.clear()
        for batch in self.batches:
            share = batch[self.world.rank :: self.world.size]
            self.plan.append((len(batch), not share))
            yield share or batch[:1]
