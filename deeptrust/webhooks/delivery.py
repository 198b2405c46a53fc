"""Posting one alert to one subscriber, with retries: the HTTP half of webhook delivery.

The body is the alert's JSON; headers carry the event id (receivers deduplicate by it:
delivery is at least once), the subscription's name, the attempt number and, when the
subscription has a secret, the body's signature. Redirects are not followed: a receiver that
moved must be reconfigured, not silently chased. Only the first bytes of an answer are read,
for the error message, so a receiver cannot make the service buffer a large reply.

An attempt that fails in any way other than an HTTP error (an exception httpx does not
class as one, or a bug here) is a final failure of that subscription for that alert: it
is dead-lettered like any undeliverable alert, and the other subscriptions carry on.
Raising instead would stop the notifier, which would restart on the same alert forever.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from deeptrust.schemas.events import AlertEvent
from deeptrust.webhooks.metrics import WebhookMetrics
from deeptrust.webhooks.retry import AttemptResult, RetryPolicy, parse_retry_after
from deeptrust.webhooks.signing import SIGNATURE_HEADER, sign
from deeptrust.webhooks.subscriptions import Subscription

log = logging.getLogger(__name__)

EVENT_ID_HEADER = "X-DeepTrust-Event-Id"
SUBSCRIPTION_HEADER = "X-DeepTrust-Subscription"
ATTEMPT_HEADER = "X-DeepTrust-Attempt"
USER_AGENT = "deeptrust-webhooks/1"
_ERROR_BODY_BYTES = 200


@dataclass(frozen=True)
class Delivery:
    """How delivering one alert to one subscription ended."""

    subscription: Subscription
    delivered: bool
    attempts: int
    last_error: str = ""


class WebhookSender:
    """Delivers alerts over one shared HTTP client (thread-safe: a pool calls it)."""

    def __init__(
        self,
        policy: RetryPolicy,
        metrics: WebhookMetrics,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._policy = policy
        self._metrics = metrics
        self._client = client or httpx.Client(follow_redirects=False)
        self._sleep = sleep

    def close(self) -> None:
        """Release the client's connections."""
        self._client.close()

    def deliver(self, subscription: Subscription, alert: AlertEvent) -> Delivery:
        """Post ``alert`` until it is accepted, refused for good, or out of attempts."""
        body = alert.model_dump_json().encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            EVENT_ID_HEADER: alert.event_id,
            SUBSCRIPTION_HEADER: subscription.name,
        }
        secret = subscription.signing_secret()
        if secret is not None:
            headers[SIGNATURE_HEADER] = sign(secret, body)
        attempt = 0
        while True:
            attempt += 1
            try:
                result = self._attempt(
                    subscription, body, {**headers, ATTEMPT_HEADER: str(attempt)}
                )
            except Exception as error:  # not a receiver's answer: retrying would repeat it
                log.exception(
                    "alert %s to %s: attempt %d failed", alert.event_id, subscription.name, attempt
                )
                result = AttemptResult(None, f"{type(error).__name__}: {error}", final=True)
            if result.delivered:
                self._metrics.delivered(subscription.name)
                return Delivery(subscription, True, attempt)
            delay = self._policy.next_delay(attempt, result)
            if delay is None:
                log.warning(
                    "alert %s to %s (%s): giving up after %d attempt(s): %s",
                    *(alert.event_id, subscription.name, subscription.display_url, attempt),
                    result.error,
                )
                return Delivery(subscription, False, attempt, result.error)
            self._metrics.retried(subscription.name)
            log.info(
                "alert %s to %s: attempt %d failed (%s); retrying in %.2fs",
                *(alert.event_id, subscription.name, attempt, result.error, delay),
            )
            self._sleep(delay)

    def _attempt(
        self, subscription: Subscription, body: bytes, headers: dict[str, str]
    ) -> AttemptResult:
        started = time.perf_counter()
        try:
            with self._client.stream(
                "POST",
                subscription.url,
                content=body,
                headers=headers,
                timeout=subscription.timeout_s,
            ) as response:
                if 200 <= response.status_code < 300:
                    return AttemptResult(response.status_code)
                snippet = _first_bytes(response, _ERROR_BODY_BYTES)
                return AttemptResult(
                    response.status_code,
                    f"HTTP {response.status_code}" + (f": {snippet}" if snippet else ""),
                    parse_retry_after(response.headers.get("Retry-After")),
                )
        except httpx.TimeoutException as error:
            return AttemptResult(
                None, f"timeout ({type(error).__name__}, {subscription.timeout_s}s)"
            )
        except httpx.HTTPError as error:
            return AttemptResult(None, f"{type(error).__name__}: {error}")
        finally:
            self._metrics.request(subscription.name, time.perf_counter() - started)


def _first_bytes(response: httpx.Response, limit: int) -> str:
    """At most ``limit`` bytes of the answer, as one line of text."""
    taken = b""
    try:
        for chunk in response.iter_bytes():
            taken += chunk
            if len(taken) >= limit:
                break
    except httpx.HTTPError:
        pass  # the status says enough; a broken body must not hide it
    return " ".join(taken[:limit].decode("utf-8", "replace").split())
