"""One small interface for every model: load a spec, predict a batch.

A :class:`ModelSpec` names the task, the backend and the weights; :func:`load_model` finds
the backend registered for the task and returns a loaded model. Stages only see
``predict(batch)``; batching, devices and backends change behind it. Weights load in
``load()`` (called from a stage's ``setup``), never at import or in a constructor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

Task = Literal["detect", "embed", "caption", "tag"]
I = TypeVar("I", contravariant=True)  # noqa: E741 - the input type of a model
O = TypeVar("O")  # noqa: E741 - the output type of a model


@dataclass(frozen=True)
class ModelSpec:
    """Which model a stage runs: task, backend, a name, a version and backend options."""

    task: Task
    backend: str
    name: str
    version: str = "1"
    options: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The name events carry in their ``model`` field."""
        return self.backend if self.name == self.backend else f"{self.backend}/{self.name}"


class BatchModel(Protocol, Generic[I, O]):
    """A loaded model that maps a batch of inputs to one output each."""

    spec: ModelSpec

    def load(self) -> None:
        """Load weights and warm up."""
        ...

    def predict(self, batch: Sequence[I]) -> list[O]:
        """Return one output per input, in order."""
        ...


Factory = Callable[[ModelSpec], BatchModel[Any, Any]]
_BACKENDS: dict[tuple[Task, str], Factory] = {}


def register(task: Task, backend: str) -> Callable[[Factory], Factory]:
    """Register a factory for ``backend`` on ``task`` (used as a decorator)."""

    def decorator(factory: Factory) -> Factory:
        _BACKENDS[(task, backend)] = factory
        return factory

    return decorator


def load_model(spec: ModelSpec) -> BatchModel[Any, Any]:
    """Build the model ``spec`` names and load it."""
    try:
        factory = _BACKENDS[(spec.task, spec.backend)]
    except KeyError:
        known = sorted(backend for task, backend in _BACKENDS if task == spec.task)
        raise ValueError(f"no {spec.backend!r} backend for {spec.task}; known: {known}") from None
    model = factory(spec)
    model.load()
    return model
