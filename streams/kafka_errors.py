"""What a Kafka error means for a service: stop, start its clients afresh, or try again.

Production clusters restart brokers, move leaders and coordinators and abort transactions
that outlive their timeout; all of that is survivable in process. A fenced or otherwise
fatally failed producer cannot be used again, but a new one (same transactional id) can:
the service drops what it had in hand, re-creates its clients and resumes from its
committed offsets, as Kafka Streams does with a migrated task. Only a configuration that
cannot work (bad settings, wrong credentials, no permission) stops the process, since no
retry fixes it and a restart loop would only hide it.
"""

from __future__ import annotations

from enum import StrEnum

from confluent_kafka import KafkaError, KafkaException

STOP_CODES = frozenset(
    {
        KafkaError._INVALID_ARG,
        KafkaError._AUTHENTICATION,
        KafkaError._SSL,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    }
)
"""Errors no retry can fix: the settings, the credentials or the ACLs are wrong."""

COLLISION_CODES = frozenset({KafkaError.FENCED_INSTANCE_ID})
"""Another live member joined with this instance's static id: two replicas share an id, and
taking it back would only fence the other one in turn, forever."""

_COLLISION_TEXT = KafkaError(KafkaError.FENCED_INSTANCE_ID).str()
"""A consumer reports its fatal errors as ``_FATAL`` with the cause only in the text."""

CUT_OFF_CODES = frozenset({KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT})
"""Consumer errors that say the cluster cannot be reached right now."""


class Action(StrEnum):
    """What a service does about a Kafka error."""

    STOP = "stop"
    """Exit: a configuration or permission error."""
    RECREATE = "recreate"
    """Drop the work in hand, re-create the clients, resume from the committed offsets."""
    RETRY = "retry"
    """Abort the transaction (if any) and try the same work again with the same clients."""


class ServiceStopped(RuntimeError):
    """A Kafka error that no retry or new client can fix; the process must stop."""


def is_collision(error: KafkaError) -> bool:
    """Whether ``error`` says another live member uses this instance's static id."""
    return error.code() in COLLISION_CODES or (
        error.code() == KafkaError._FATAL and _COLLISION_TEXT in error.str()
    )


def action_for(error: KafkaError) -> Action:
    """Classify one error: stop on configuration and permissions, else survive it."""
    if error.code() in STOP_CODES or is_collision(error):
        return Action.STOP
    if error.fatal() or error.code() == KafkaError._FATAL:
        return Action.RECREATE  # a fenced producer, say: a new instance can go on
    if error.txn_requires_abort() or error.retriable():
        return Action.RETRY
    return Action.RECREATE  # unknown state: the clients are not to be trusted


def error_of(exception: BaseException) -> KafkaError | None:
    """The Kafka error inside ``exception``, if it is a Kafka exception."""
    if isinstance(exception, KafkaException) and exception.args:
        error = exception.args[0]
        if isinstance(error, KafkaError):
            return error
    return None


def why_stopped(error: KafkaError) -> str:
    """What the operator must fix for an error that stops the process."""
    if is_collision(error):
        return (
            "another running instance uses the same DEEPTRUST_RUNNER_INSTANCE_ID; "
            "give every replica its own"
        )
    return "not retried: fix the settings, credentials or permissions"


def describe(error: KafkaError) -> str:
    """A short label for metrics: the error's name, lower-cased, without librdkafka's ``_``."""
    return str(error.name()).lstrip("_").lower()
