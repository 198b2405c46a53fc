"""A stage's model that promoted versions replace between batches, without a restart.

A stage with a follower (a :class:`~deeptrust.processors.model_follower.ModelFollower`, on
``models.v1``) serves the latest production version from start-up instead of its configured
model, and swaps each newly loaded one in when :meth:`FollowedModel.swap_in_pending` is
called: stages call it at the start of ``process``, so a batch never mixes two models and
the batch in hand finishes on the model it started with. The follower loads on its own
thread, so the swap costs nothing. Without a follower it is the configured model, loaded once.
"""

from __future__ import annotations

import logging
from typing import Any, Generic, Protocol, TypeVar, cast

from prometheus_client import CollectorRegistry

from deeptrust.processors.model_follower import LoadedModel, ReloadMetrics
from deeptrust.processors.models import BatchModel, ModelSpec, load_model

log = logging.getLogger(__name__)
In = TypeVar("In")
Out = TypeVar("Out")


class ModelSource(Protocol):
    """Where newly promoted versions come from (a :class:`ModelFollower`)."""

    @property
    def metrics(self) -> ReloadMetrics:
        """Reload counts and the serving version, as a Prometheus collector."""
        ...

    def start(self) -> None:
        """Find the current production version (and load it); then follow updates."""
        ...

    def take_pending(self) -> LoadedModel | None:
        """Return a loaded model waiting to be swapped in, once."""
        ...

    def close(self) -> None:
        """Stop following."""
        ...


class FollowedModel(Generic[In, Out]):
    """The model ``spec`` configures, or the production versions ``follower`` supplies."""

    def __init__(self, spec: ModelSpec, follower: ModelSource | None, role: str) -> None:
        self._spec = spec
        self._follower = follower
        self._role = role
        self._model: BatchModel[In, Out] | None = None

    @property
    def follower(self) -> ModelSource | None:
        """Where promoted versions come from; None when the configured model is all there is."""
        return self._follower

    @property
    def model(self) -> BatchModel[In, Out]:
        """The model serving now."""
        if self._model is None:
            raise RuntimeError(f"the {self._role} is not loaded: setup() not called")
        return self._model

    @property
    def version(self) -> str | None:
        """The serving model's version (``None`` before :meth:`load`)."""
        return None if self._model is None else self._model.spec.version

    def register_metrics(self, registry: CollectorRegistry) -> None:
        """Export the follower's reload metrics; without a follower there are none."""
        if self._follower is not None:
            registry.register(self._follower.metrics)

    def load(self) -> None:
        """With a follower, the production version if there is one; else the configured model."""
        promoted: LoadedModel | None = None
        if self._follower is not None:
            self._follower.start()
            promoted = self._follower.take_pending()
        try:
            model: Any = promoted.model if promoted is not None else load_model(self._spec)
        except BaseException:
            self.close()
            raise
        self._model = cast(BatchModel[In, Out], model)
        log.info("%s %s version %s", self._role, self._model.spec.label, self.version)

    def swap_in_pending(self) -> None:
        """Between batches: serve the version the follower loaded since, if any."""
        if self._follower is None or self._model is None:
            return
        loaded = self._follower.take_pending()
        if loaded is None:
            return
        previous = self.version
        self._model = cast(BatchModel[In, Out], loaded.model)
        log.info("%s version %s replaced by %s", self._role, previous, self.version)

    def close(self) -> None:
        """Stop following and drop the model."""
        if self._follower is not None:
            self._follower.close()
        self._model = None
