"""The Kafka settings and transaction calls behind read-process-write exactly once.

Shared by the stage runner and the drift service: a consumer in a static group that reads
committed data only and never commits by itself, a transactional producer whose id is
stable per instance (so a restarted instance fences its dead predecessor), and commit and
abort calls that tell retriable errors from fatal ones.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaException, Message, Producer

from streams.config import KafkaSettings

log = logging.getLogger(__name__)


def consumer_config(
    kafka: KafkaSettings, group_id: str, instance_id: str, session_timeout_ms: int
) -> dict[str, Any]:
    """A read_committed consumer in a static group whose offsets go in transactions."""
    return {
        **kafka.client_config(),
        "group.id": group_id,
        "group.instance.id": f"{group_id}-{instance_id}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "session.timeout.ms": session_timeout_ms,
    }


def producer_config(
    kafka: KafkaSettings, group_id: str, instance_id: str, transaction_timeout_ms: int
) -> dict[str, Any]:
    """A transactional producer with an id that is stable across restarts of an instance."""
    return {
        **kafka.client_config(),
        "transactional.id": f"{group_id}-{instance_id}",
        "transaction.timeout.ms": transaction_timeout_ms,
        "linger.ms": 5,
    }


def commit_transaction(producer: Producer, timeout_s: float, max_attempts: int) -> None:
    """Commit, repeating the call while librdkafka says the error is retriable."""
    for attempt in range(1, max_attempts + 1):
        try:
            producer.commit_transaction(timeout_s)
            return
        except KafkaException as exception:
            if not exception.args[0].retriable() or attempt == max_attempts:
                raise
            log.warning("commit attempt %d: %s; retrying", attempt, exception)


def abort_transaction(producer: Producer, timeout_s: float) -> None:
    """Abort the open transaction so its work can be redone from scratch."""
    try:
        producer.abort_transaction(timeout_s)
    except KafkaException as exception:
        if exception.args[0].fatal():
            raise
        log.warning("abort failed: %s", exception)


def usable(message: Message) -> bool:
    """Tell a message from a consumer error: fatal errors raise, others are logged and skipped."""
    error = message.error()
    if error is None:
        return True
    if error.fatal():
        raise KafkaException(error)
    log.warning("consumer error on %s: %s", message.topic(), error)
    return False
