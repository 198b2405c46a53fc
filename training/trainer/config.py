"""The training loop's settings, read from TOML, and the hyper-parameter grid they span.

The retrain service trains one probe per grid point and keeps the best, so a config is both
"how to train" and "what to try": the plain fields are one training run, ``sweep`` lists
alternative values for some of them. Each grid point is a full :class:`TrainConfig` with an
empty sweep, and its :meth:`~TrainConfig.digest` names it, so a checkpoint can prove which
run it belongs to.

No torch here (pydantic and tomllib only): the service validates a config before it starts
a worker that has torch, and the tests run in the main environment.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Fields a sweep may vary, in the order the grid nests them (the last one varies fastest).
# The order is fixed here, not taken from the TOML, so two files that list the same sweep
# in another order give the same grid in the same order.
SWEEPABLE: tuple[str, ...] = (
    "learning_rate",
    "weight_decay",
    "epochs",
    "batch_size",
    "accumulation_steps",
)
_INTEGER_FIELDS = frozenset({"epochs", "batch_size", "accumulation_steps"})
DIGEST_VERSION = "deeptrust-train-config/1"

Precision = Literal["auto", "fp32", "fp16", "bf16"]
Backbone = Literal["mobilenet-blocks", "mobilenet-probe", "hf-vit"]
Adapter = Literal["none", "lora"]
# Fields added after checkpoints existed: left out of the digest while they hold their
# defaults, so a probe config written before them keeps its digest and its checkpoints.
_LATER_FIELDS: dict[str, object] = {
    "backbone": "mobilenet-probe",
    "model": "",
    "freeze_epochs": 0,
    "adapter": "none",
    "lora_rank": 8,
    "lora_alpha": 16.0,
    "lora_dropout": 0.0,
    "lora_targets": ["q_proj", "v_proj"],
}


class SearchConfig(BaseModel):
    """How a sweep run by Ray Tune picks its trials and stops the weak ones early.

    ``samples`` 0 tries every grid point; N > 0 tries N distinct points drawn from the grid
    with the config's seed (a random search). ``scheduler = "asha"`` is asynchronous
    successive halving: a trial whose validation loss ranks in the worst part of those that
    reached the same epoch (after ``grace_epochs``, at rungs ``reduction_factor`` apart) is
    stopped; ``"fifo"`` runs every trial to its last epoch. ``concurrent`` caps trials run at
    once (0: as many as the cluster's CPUs allow). The in-process sweep has no scheduler,
    so it accepts only these defaults.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    samples: int = Field(default=0, ge=0)
    scheduler: Literal["fifo", "asha"] = "fifo"
    grace_epochs: int = Field(default=1, ge=1)
    reduction_factor: int = Field(default=2, ge=2)
    concurrent: int = Field(default=0, ge=0)


class TrainConfig(BaseModel):
    """One training run of the detector, plus the grid of alternatives in ``sweep``.

    ``backbone`` says what is trained: ``mobilenet-blocks``, a logistic head on frozen
    MobileNetV2 block features read by tiles (the detect default), ``mobilenet-probe``, one
    on the pooled features of the 224 px view, or ``hf-vit``, a transformers image
    classifier fine-tuned end to end from ``model`` (a hub id such as
    ``google/vit-base-patch16-224`` or a ``save_pretrained`` directory), whose backbone may
    stay frozen for the first ``freeze_epochs`` epochs while the new head settles. With
    ``adapter = "lora"`` the backbone stays frozen and only low-rank adapters (``peft``'s
    LoRA: ``lora_rank``, ``lora_alpha``, ``lora_dropout`` on the ``lora_targets`` modules)
    and the classification head learn; the artefact is the adapter and a record of its base.

    ``batch_size`` is the *effective* batch: the optimiser steps once per ``batch_size``
    rows. With ``accumulation_steps`` N > 1 those rows go through the model as N
    micro-batches of ``batch_size // N`` rows each, whose gradients add up to the
    effective batch's, so accumulation trades memory for nothing else; ``batch_size`` must
    therefore be a multiple of N. Frozen and strict about unknown keys, because a typo in a
    config should fail loudly rather than train with a default.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = 0
    epochs: int = Field(default=40, ge=1)
    batch_size: int = Field(default=64, ge=1)
    accumulation_steps: int = Field(default=1, ge=1)
    learning_rate: float = Field(default=0.01, gt=0, allow_inf_nan=False)
    weight_decay: float = Field(default=0.001, ge=0, allow_inf_nan=False)
    precision: Precision = "auto"
    device: str = "auto"
    threshold: float = Field(default=0.5, gt=0, lt=1)
    backbone: Backbone = "mobilenet-probe"
    model: str = ""
    freeze_epochs: int = Field(default=0, ge=0)
    adapter: Adapter = "none"
    lora_rank: int = Field(default=8, ge=1)
    lora_alpha: float = Field(default=16.0, gt=0, allow_inf_nan=False)
    lora_dropout: float = Field(default=0.0, ge=0, lt=1)
    lora_targets: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"], min_length=1)
    sweep: dict[str, list[float]] = Field(default_factory=dict)
    search: SearchConfig = Field(default_factory=SearchConfig)

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        """Reject configs that would only fail later, mid-sweep, in a worker."""
        if self.batch_size % self.accumulation_steps:
            raise ValueError(
                f"batch_size {self.batch_size} is not a multiple of accumulation_steps "
                f"{self.accumulation_steps}: micro-batches would differ in size"
            )
        if self.backbone == "hf-vit" and not self.model.strip():
            raise ValueError("backbone hf-vit needs model: a hub id or a model directory")
        if self.backbone != "hf-vit" and (self.model or self.freeze_epochs):
            raise ValueError(
                f"model and freeze_epochs apply to backbone hf-vit; the {self.backbone} "
                "backbone is fixed and always frozen"
            )
        if self.adapter == "lora" and self.backbone != "hf-vit":
            raise ValueError("adapter lora applies to backbone hf-vit")
        if self.adapter == "lora" and self.freeze_epochs:
            raise ValueError(
                "freeze_epochs does not apply with adapter lora: LoRA keeps the backbone frozen"
            )
        if not self.device.strip():
            raise ValueError("device must be 'auto' or a torch device such as 'cpu' or 'cuda:0'")
        for name, values in self.sweep.items():
            if name not in SWEEPABLE:
                raise ValueError(f"sweep over {name!r}: only {', '.join(SWEEPABLE)} may be swept")
            if not values:
                raise ValueError(f"sweep over {name!r} lists no values")
            if len(set(values)) != len(values):
                raise ValueError(f"sweep over {name!r} repeats a value: {values}")
            for value in values:
                if not math.isfinite(value):
                    raise ValueError(f"sweep over {name!r} holds {value}, not a finite number")
                if name in _INTEGER_FIELDS and not float(value).is_integer():
                    raise ValueError(f"sweep over {name!r} holds {value}, not a whole number")
        if self.search.scheduler == "asha" and self.search.grace_epochs > self.epochs:
            raise ValueError(
                f"search.grace_epochs {self.search.grace_epochs} exceeds epochs {self.epochs}: "
                "ASHA could never stop a trial"
            )
        # Building every point validates each combination (e.g. a swept batch_size that a
        # swept accumulation_steps does not divide) now, not hours into the sweep.
        _grid(self)
        return self

    def digest(self) -> str:
        """SHA-256 of every field but ``sweep`` and ``search``: the identity of one training run.

        A checkpoint stores it, so resuming with another config is caught instead of
        silently continuing someone else's run. ``sweep`` and ``search`` are left out because
        they say what else to try, not how this run trains; fields added later count only
        when they differ from their defaults, so the digests of earlier configs (and their
        checkpoints) hold.
        """
        fields = self.model_dump(mode="json", exclude={"sweep", "search"})
        for name, default in _LATER_FIELDS.items():
            if fields[name] == default:
                del fields[name]
        text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(f"{DIGEST_VERSION}\n{text}".encode()).hexdigest()


def _grid(config: TrainConfig) -> list[TrainConfig]:
    """Every combination of the sweep's values, in :data:`SWEEPABLE` order, sweep emptied."""
    if not config.sweep:
        return [config.model_copy(update={"search": SearchConfig()})]
    names = [name for name in SWEEPABLE if name in config.sweep]
    base = config.model_dump(exclude={"sweep", "search"})
    points = []
    for values in itertools.product(*(config.sweep[name] for name in names)):
        update: dict[str, object] = {
            name: int(value) if name in _INTEGER_FIELDS else float(value)
            for name, value in zip(names, values, strict=True)
        }
        try:
            points.append(TrainConfig.model_validate({**base, **update}))
        except ValueError as error:
            raise ValueError(f"sweep point {update} is not a valid config: {error}") from error
    return points


def expand_sweep(config: TrainConfig) -> list[TrainConfig]:
    """The full grid of ``config.sweep`` as configs with an empty sweep; ``[config]`` if none.

    Cartesian product in a fixed order (fields in :data:`SWEEPABLE` order, the last varying
    fastest; each field's values in the order given), so the service can number grid points
    and a restarted sweep meets them in the same order.
    """
    return _grid(config)


def load_config(path: Path, overrides: Mapping[str, object] | None = None) -> TrainConfig:
    """Read the ``[train]`` table (and its ``[train.sweep]``) of a TOML file.

    ``overrides`` replace top-level fields of ``[train]`` (a ``sweep`` override replaces the
    whole sweep), so the service can apply a retrain request's settings on top of the
    shipped defaults. Other tables in the file are ignored: they belong to other parts of
    the service. A file without ``[train]`` is rejected, as a misspelt table name would
    otherwise train on defaults.
    """
    with path.open("rb") as handle:
        document = tomllib.load(handle)
    table = document.get("train")
    if not isinstance(table, dict):
        raise ValueError(f"{path} has no [train] table")
    merged: dict[str, object] = {**table, **dict(overrides or {})}
    try:
        return TrainConfig.model_validate(merged)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
