"""The subscriptions file: who wants which alerts, where, and how they are signed.

A TOML file, read once at start-up and checked strictly (unknown keys, bad URLs, duplicate
names and unset secrets are errors naming the subscription), because a typo found at
start-up costs nothing and one found when an alert is due costs the alert::

    [retry]                         # optional; these are the defaults
    max_attempts = 5
    initial_backoff_s = 1.0
    max_backoff_s = 30.0

    [[subscription]]
    name = "oncall"                 # in headers, metrics and dead letters
    url = "https://hooks.example.com/deeptrust"
    kinds = ["drift"]               # empty or absent: every kind
    min_severity = "warning"        # info < warning < critical
    secret_env = "ONCALL_SECRET"    # or secret_file = "/run/secrets/oncall"; signs the body
    timeout_s = 10                  # per connect, send and read

Secrets are named, never written here: an environment variable (``secret_env``) or a file
(``secret_file``, a mounted Secret), so the file can live in a ConfigMap and be logged or
shown without leaking anything. An inline ``secret`` is refused.

A URL is checked the way it will be used (``httpx.URL`` builds it, its port must be
1-65535), and each subscription's worst-case delivery time under the retry policy
(:meth:`RetryPolicy.worst_case_s`) must fit :data:`DELIVERY_BUDGET_S`, so a file that
would crash the notifier or outlast the consumer's poll interval is refused at start-up.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import httpx
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from deeptrust.alerts import AlertFilter
from deeptrust.webhooks.retry import DELIVERY_BUDGET_S, RetryPolicy

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
"""Names go into HTTP headers and Prometheus labels: keep them plain."""


class SubscriptionError(ValueError):
    """The subscriptions file cannot be used; the message says where and why."""


class Subscription(BaseModel):
    """One receiver: the alerts it wants and how to reach it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    url: str
    kinds: tuple[str, ...] = ()
    min_severity: Literal["info", "warning", "critical"] = "info"
    secret: SecretStr | None = Field(default=None, exclude=True)
    """The resolved secret, filled in by :func:`parse_subscriptions`; never from the file."""
    secret_env: str | None = Field(default=None, min_length=1)
    secret_file: Path | None = None
    timeout_s: float = Field(default=10.0, gt=0, le=60)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        # The messages never quote the URL: its query or user part may hold a token.
        try:
            parts = urlsplit(url)
            port = parts.port  # raises for a port that is not a number or out of range
        except ValueError as error:
            raise ValueError(f"not a usable URL: {error}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if port == 0:
            raise ValueError("not a usable URL: port 0")
        try:
            httpx.URL(url)  # what every delivery does; it must not fail then instead
        except httpx.InvalidURL as error:
            raise ValueError(f"not a usable URL: {error}") from None
        return url

    @field_validator("kinds")
    @classmethod
    def _named_kinds(cls, kinds: tuple[str, ...]) -> tuple[str, ...]:
        if any(not kind.strip() for kind in kinds):
            raise ValueError("kinds must be non-empty strings")
        return kinds

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secret(cls, data: object) -> object:
        if isinstance(data, Mapping) and "secret" in data:
            raise ValueError(
                "inline secrets are not accepted: name an environment variable (secret_env) "
                "or a file (secret_file)"
            )
        return data

    @model_validator(mode="after")
    def _one_secret_source(self) -> Subscription:
        if self.secret_file is not None and self.secret_env is not None:
            raise ValueError("give secret_env or secret_file, not both")
        return self

    @property
    def filter(self) -> AlertFilter:
        """The alerts this subscriber wants, as ``deeptrust alerts tail`` would pick them."""
        return AlertFilter(self.kinds, self.min_severity)

    @property
    def display_url(self) -> str:
        """The URL without credentials or query (which may hold tokens), for logs and DLQs."""
        try:  # never raises: it is what logs and dead letters show when delivery failed
            parts = urlsplit(self.url)
            number = parts.port
        except ValueError:
            return "(unusable URL)"
        host = parts.hostname or ""
        port = f":{number}" if number else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"

    def signing_secret(self) -> str | None:
        """The secret that signs bodies for this receiver, if it has one."""
        return self.secret.get_secret_value() if self.secret else None


class SubscriptionFile(BaseModel):
    """The whole file: a retry policy and at least one subscription, names unique."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    retry: RetryPolicy = RetryPolicy()
    subscriptions: tuple[Subscription, ...] = Field(alias="subscription")

    @model_validator(mode="after")
    def _some_unique_names(self) -> SubscriptionFile:
        if not self.subscriptions:
            raise ValueError("at least one [[subscription]] is needed")
        names = [subscription.name for subscription in self.subscriptions]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"subscription names must be unique: {', '.join(duplicates)}")
        too_slow = [
            f"{s.name} ({self.retry.worst_case_s(s.timeout_s):.0f}s)"
            for s in self.subscriptions
            if self.retry.worst_case_s(s.timeout_s) > DELIVERY_BUDGET_S
        ]
        if too_slow:
            raise ValueError(
                f"delivering one alert could take longer than {DELIVERY_BUDGET_S:.0f}s "
                f"(max_attempts x 3 x timeout_s + (max_attempts - 1) x max_backoff_s) for "
                f"subscription {', '.join(too_slow)}: lower timeout_s, retry.max_attempts "
                "or retry.max_backoff_s"
            )
        return self

    @property
    def worst_case_s(self) -> float:
        """The longest one alert can take to settle: its subscriptions are tried at once."""
        return max(self.retry.worst_case_s(s.timeout_s) for s in self.subscriptions)


def load_subscriptions(path: Path, environ: Mapping[str, str] | None = None) -> SubscriptionFile:
    """Read and check ``path``; secrets named by ``secret_env`` are resolved from ``environ``."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise SubscriptionError(f"{path}: cannot read: {error.strerror or error}") from error
    except tomllib.TOMLDecodeError as error:
        raise SubscriptionError(f"{path}: not valid TOML: {error}") from error
    environ = os.environ if environ is None else environ
    return parse_subscriptions(raw, str(path), environ, base=path.parent)


def parse_subscriptions(
    raw: Mapping[str, object],
    source: str,
    environ: Mapping[str, str],
    base: Path = Path(),
) -> SubscriptionFile:
    """Check parsed TOML; every problem is reported, each with the subscription it is in.

    A relative ``secret_file`` is read from ``base``, the subscriptions file's folder.
    """
    try:
        parsed = SubscriptionFile.model_validate(raw)
    except ValidationError as error:
        problems = "\n".join(f"  {_where(item, raw)}: {item['msg']}" for item in error.errors())
        raise SubscriptionError(f"{source}: invalid subscriptions:\n{problems}") from error
    resolved = []
    for subscription in parsed.subscriptions:
        value = _secret_of(subscription, source, environ, base)
        if value is not None:
            subscription = subscription.model_copy(update={"secret": SecretStr(value)})
        resolved.append(subscription)
    return parsed.model_copy(update={"subscriptions": tuple(resolved)})


def _secret_of(
    subscription: Subscription, source: str, environ: Mapping[str, str], base: Path
) -> str | None:
    """The subscription's secret from its variable or file; an error if named but absent."""
    where = f"{source}: subscription {subscription.name!r}"
    if subscription.secret_env is not None:
        value = environ.get(subscription.secret_env)
        if not value:
            raise SubscriptionError(
                f"{where}: secret_env {subscription.secret_env} is not set in the environment"
            )
        return value
    if subscription.secret_file is not None:
        try:
            value = (base / subscription.secret_file).read_text(encoding="utf-8").strip()
        except OSError as error:
            raise SubscriptionError(
                f"{where}: cannot read secret_file {subscription.secret_file}: "
                f"{error.strerror or error}"
            ) from error
        if not value:
            raise SubscriptionError(f"{where}: secret_file {subscription.secret_file} is empty")
        return value
    return None


def _where(item: ErrorDetails, raw: Mapping[str, object]) -> str:
    """Turn an error location into words: ``subscription 2 ('pager') url``."""
    loc = list(item["loc"])
    if len(loc) >= 2 and loc[0] == "subscription" and isinstance(loc[1], int):
        index = loc[1]
        entries = raw.get("subscription")
        entry = entries[index] if isinstance(entries, list) and index < len(entries) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        label = f"subscription {index + 1}" + (f" ({name!r})" if isinstance(name, str) else "")
        rest = [str(part) for part in loc[2:]]
        return " ".join([label, ".".join(rest)]) if rest else label
    return ".".join(str(part) for part in loc) or "file"
