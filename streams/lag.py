"""Consumer lag per partition, sampled every few seconds, for the "falling behind" alert.

Lag is the distance from the consumer's position to the partition's end: messages the
stage has not read yet. The end is the high watermark the consumer's last fetch response
carried (librdkafka's cached value), so sampling asks the broker nothing: a watermark
request per partition would queue behind the consumer's long-poll fetch on the same
connection, and cost the stage up to half a second each (measured on the detect stage).
A partition not fetched from yet has no cached end and is skipped until it has.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaException

from deeptrust.streams.metrics import StageMetrics

log = logging.getLogger(__name__)


@dataclass
class LagProbe:
    """Records ``deeptrust_consumer_lag_messages`` for the consumer's assignment."""

    metrics: StageMetrics
    interval_s: float = 5.0
    clock: Callable[[], float] = time.monotonic
    _last: float = field(default=float("-inf"), init=False)

    def sample(self, consumer: Consumer) -> None:
        """Record the lag of every assigned partition, if the interval has passed."""
        now = self.clock()
        if now - self._last < self.interval_s:
            return
        self._last = now
        try:
            for position in consumer.position(consumer.assignment()):
                if position.offset < 0:  # nothing consumed yet on this partition
                    continue
                _, high = consumer.get_watermark_offsets(position, cached=True)
                if high < 0:
                    continue
                self.metrics.consumer_lag(position.partition, max(0, high - position.offset))
        except KafkaException as error:
            log.debug("lag sample skipped: %s", error)
