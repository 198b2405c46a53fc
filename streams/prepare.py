"""Prepare (decode, fetch, decode the image) on a small thread pool, one batch ahead.

A stage's ``prepare`` waits on the object store and the image decoder, both of which let
other threads run; its ``process`` keeps the cores busy with the model. So while batch N is
in the model, the runner hands batch N+1 (read ahead from the consumer) to a
:class:`Preparer`, and takes the prepared items when N+1's turn comes. Nothing here knows
Kafka: a batch is matched by its messages' (topic, partition, offset), and one that is not
the batch read ahead (the clients were re-created, the partitions moved) is prepared anew.

Each message's outcome is its prepared item or the :class:`InvalidInput` that rejects it
alone; any other exception fails the batch's attempt, as it does without a pool.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from deeptrust.streams.errors import InvalidInput

log = logging.getLogger(__name__)

Outcome = Any
"""A prepared item, or the :class:`InvalidInput` that rejects its message."""
Waiter = Callable[[Iterable[Future[Any]]], None]
"""Waits for futures (``Session.wait``: the consumer stays in its group meanwhile)."""


class Located(Protocol):
    """What a message needs for its batch to be recognised: where it was read from."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...


def _place(message: Located) -> tuple[str, int, int]:
    return (message.topic() or "", message.partition() or 0, message.offset() or 0)


class Preparer:
    """Runs ``prepare_one`` over batches: inline without threads, else on a pool."""

    def __init__(self, prepare_one: Callable[[Any], Any], threads: int) -> None:
        self._prepare_one = prepare_one
        self._pool = (
            ThreadPoolExecutor(threads, thread_name_prefix="prepare") if threads > 0 else None
        )
        self._ahead: tuple[list[tuple[str, int, int]], list[Future[Outcome]]] | None = None

    @property
    def pipelined(self) -> bool:
        """Whether the next batch is worth reading ahead: there are threads to prepare it."""
        return self._pool is not None

    def ahead(self, messages: Sequence[Located]) -> None:
        """Start preparing the next batch in the pool, unless it already is."""
        if self._pool is None or not messages:
            return
        places = [_place(message) for message in messages]
        if self._ahead is not None and self._ahead[0] == places:
            return
        self.drop()
        self._ahead = (places, [self._pool.submit(self.outcome, m) for m in messages])

    def take(self, messages: Sequence[Located], wait: Waiter) -> list[Outcome]:
        """The outcomes of ``messages``: those prepared ahead if it is that batch, else now.

        Raises what a ``prepare`` raised other than :class:`InvalidInput`.
        """
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == [_place(message) for message in messages]:
            return self._results(ahead[1], wait)
        if ahead is not None:
            _cancel(ahead[1])
        return self.now(messages, wait)

    def now(self, messages: Sequence[Located], wait: Waiter) -> list[Outcome]:
        """Prepare ``messages`` now (on the pool, if there is one) and return the outcomes."""
        if self._pool is None:
            return [self.outcome(message) for message in messages]
        return self._results([self._pool.submit(self.outcome, m) for m in messages], wait)

    def drop(self) -> None:
        """Forget the batch prepared ahead (fresh clients will read it again)."""
        if self._ahead is not None:
            _cancel(self._ahead[1])
            self._ahead = None

    def close(self) -> None:
        """Drop what is ahead and stop the threads, letting a running ``prepare`` finish."""
        self.drop()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def outcome(self, message: Any) -> Outcome:
        """Prepare one message here and now: its item, or the ``InvalidInput`` rejecting it."""
        try:
            return self._prepare_one(message)
        except InvalidInput as error:
            return error

    @staticmethod
    def _results(futures: list[Future[Outcome]], wait: Waiter) -> list[Outcome]:
        if not all(future.done() for future in futures):
            wait(futures)
        return [future.result() for future in futures]


def _cancel(futures: list[Future[Outcome]]) -> None:
    for future in futures:
        future.cancel()
