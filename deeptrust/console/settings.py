"""The console's settings (``DEEPTRUST_CONSOLE_*``), read once at start-up.

Reviewer tokens are secrets: they come from the environment or a mounted file, never from
a config file or the command line, like the gateway's API keys. Kafka, the object store and
the search index come from the settings every other command reads.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_TOKEN_LENGTH = 16


class ConsoleSettings(BaseSettings):
    """Who may review, how long a lease lasts, and where the console keeps its state."""

    model_config = SettingsConfigDict(env_prefix="DEEPTRUST_CONSOLE_")

    reviewers: dict[str, SecretStr] = Field(default_factory=dict)
    """Reviewer name to sign-in token, a JSON object (``'{"alice": "…"}'``), or:"""
    reviewers_file: Path | None = None
    """A file of ``name token`` lines (a mounted Secret); ``#`` starts a comment. The name
    is the identity a decision carries on ``feedback.v1``. At least one reviewer is needed."""

    lease_s: float = Field(default=300.0, gt=0)
    """How long an item stays with the reviewer it was shown to; then anyone may take it."""
    session_s: float = Field(default=12 * 3600.0, gt=0)
    """How long a sign-in lasts."""
    secure_cookies: bool = False
    """Mark cookies ``Secure`` (set it when the console is served over HTTPS)."""

    state_db: Path = Path(".deeptrust/console.db")
    """The SQLite file of sessions, leases and decisions (the queue itself is rebuilt from
    ``moderation.v1`` at every start)."""
    delivery_timeout_s: float = Field(default=10.0, gt=0)
    """How long a decision waits for the broker's acknowledgement before answering 503."""
    search_limit: int = Field(default=24, ge=1, le=200)
    """Results per search page."""
    report_refresh_s: float = Field(default=60.0, ge=0)
    """How old the report page's figures may be before a view reads the topics again."""

    @model_validator(mode="after")
    def _some_reviewers(self) -> ConsoleSettings:
        """Read the reviewers file; refuse to start without a reviewer or with a weak token."""
        if self.reviewers_file is not None:
            self.reviewers = {**self.reviewers, **read_reviewers(self.reviewers_file)}
        if not self.reviewers:
            raise ValueError(
                "name at least one reviewer (DEEPTRUST_CONSOLE_REVIEWERS or "
                "DEEPTRUST_CONSOLE_REVIEWERS_FILE): the console takes no anonymous decisions"
            )
        for name, token in self.reviewers.items():
            if not name.strip():
                raise ValueError("a reviewer's name is empty")
            if len(token.get_secret_value()) < MIN_TOKEN_LENGTH:
                raise ValueError(
                    f"reviewer {name!r}: a token needs at least {MIN_TOKEN_LENGTH} characters"
                )
        tokens = [t.get_secret_value() for t in self.reviewers.values()]
        if len(set(tokens)) != len(tokens):
            raise ValueError("two reviewers share a token: a decision would not say who made it")
        return self


def read_reviewers(path: Path) -> dict[str, SecretStr]:
    """Parse a reviewers file: one ``name token`` pair a line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise ValueError(f"cannot read reviewers_file {path}: {error.strerror or error}") from None
    found: dict[str, SecretStr] = {}
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        parts = text.split()
        if len(parts) != 2:
            raise ValueError(f"{path}:{number}: expected 'name token'")
        found[parts[0]] = SecretStr(parts[1])
    return found
