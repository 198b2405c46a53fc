"""The one interface every stage implements, and what it hands back to the runner.

A stage has a lifecycle (``setup`` loads models, ``close`` releases them) and works in
two steps: ``prepare`` turns one input event into a model input (fetching and decoding the
image; an invalid input raises :class:`~deeptrust.streams.errors.InvalidInput` and only that input
is
dead-lettered), and ``process`` runs the model on a whole batch. The runner owns consuming,
batching, transactions and dead letters, so a stage never sees Kafka.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar, runtime_checkable

from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from deeptrust.streams.errors import InvalidInput
from deeptrust.streams.topics import Topic

In = TypeVar("In", bound=BaseModel, contravariant=True)
Item = TypeVar("Item")

_EVENT_NAMESPACE = uuid.UUID("6f1c7d0e-3b7a-4f0c-9a55-8d1f2b3c4d5e")


@dataclass(frozen=True)
class Output:
    """One event a stage emits, and the topic it goes to (keyed by its image id)."""

    topic: Topic
    event: BaseModel


Result = list[Output] | InvalidInput
"""What ``process`` returns per item: the events to emit, or why the item is invalid."""


class Stage(Protocol, Generic[In, Item]):
    """A pipeline step: input event type in, output events out, batch at a time."""

    @property
    def name(self) -> str:
        """The stage's name: its consumer group and metrics label."""
        ...

    @property
    def input_topic(self) -> Topic:
        """The topic the stage consumes."""
        ...

    @property
    def input_model(self) -> type[BaseModel]:
        """The event type of the input topic."""
        ...

    def setup(self) -> None:
        """Load models and open resources; called once before the first batch."""
        ...

    def prepare(self, event: In) -> Item:
        """Turn one event into a model input, or raise ``InvalidInput``."""
        ...

    def process(self, items: Sequence[Item]) -> Sequence[Result]:
        """Run the model on a batch; return one result per item, in order."""
        ...

    def close(self) -> None:
        """Release what ``setup`` acquired."""
        ...


@runtime_checkable
class ReportsMetrics(Protocol):
    """A stage with metrics of its own (e.g. model reloads), exported beside the runner's."""

    def register_metrics(self, registry: CollectorRegistry) -> None:
        """Register the stage's collectors in the runner's registry."""
        ...


def derived_event_id(parent_event_id: str, stage: str, topic: Topic) -> str:
    """Return the id of an event derived from another by a stage.

    Deterministic, so that a reprocessed input yields the same id and any duplicate
    downstream would be recognisable as one.
    """
    return str(uuid.uuid5(_EVENT_NAMESPACE, f"{parent_event_id}/{stage}/{topic.value}"))
