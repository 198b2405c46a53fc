"""A deadline around a blocking client call that may not honour its own timeout.

librdkafka's ``send_offsets_to_transaction`` can block past its timeout, for good, when the
group coordinator it has cached went away (librdkafka #5456, #5511: the coordinator
request's timeout is never checked; seen with librdkafka 2.16.0). A service whose main
thread is inside that call polls nothing, answers no SIGTERM and never recovers. So the
transactional calls run in a thread of their own, and a call that has not returned some
seconds after its own timeout is given up: :class:`StuckCall` is raised, and the clients it
was using must be dropped, not used or closed again (the abandoned thread may still be
inside them). A new producer with the same transactional id fences the old one, so whatever
the stuck call does later cannot commit.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from confluent_kafka import KafkaError, KafkaException

log = logging.getLogger(__name__)

T = TypeVar("T")

GRACE_S = 5.0
"""How long past its own timeout a call may take before it is taken for stuck."""


class StuckCall(KafkaException):
    """A client call did not return in time: its clients are abandoned, never reused."""

    def __init__(self, what: str, limit_s: float) -> None:
        super().__init__(
            KafkaError(
                KafkaError._TIMED_OUT,
                f"{what} did not return within {limit_s:.0f}s; its clients are abandoned",
                fatal=True,
            )
        )
        self.what = what


def within(timeout_s: float, what: str, call: Callable[[], T]) -> T:
    """Run ``call`` (a client call given ``timeout_s``); raise :class:`StuckCall` if it hangs.

    The call runs in a daemon thread, so one that never returns keeps neither the service
    nor the process's exit waiting. Its exception, if it raises, is re-raised here.
    """
    limit_s = timeout_s + GRACE_S
    returned: list[T] = []
    raised: list[BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            returned.append(call())
        except BaseException as error:  # handed to the waiting thread as it is
            raised.append(error)
        finally:
            done.set()

    threading.Thread(target=run, name=f"kafka {what}", daemon=True).start()
    if not done.wait(limit_s):
        log.error("%s did not return within %.0fs: giving its clients up", what, limit_s)
        raise StuckCall(what, limit_s)
    if raised:
        raise raised[0]
    return returned[0]
