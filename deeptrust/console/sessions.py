"""Sessions and their CSRF tokens, kept server-side.

The cookie holds a random token; the file holds only its SHA-256, so a copy of the file
signs nobody in. Every session, signed in or not, has its own CSRF token, which every form
carries and every POST must present (:meth:`SessionStore.csrf_matches`). Signing in replaces
the session (a new token and CSRF token), so a token planted before sign-in is worthless.
A separate random ``public_id`` names the session in events (the search interactions),
never the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from deeptrust.console.db import Database


@dataclass(frozen=True)
class Session:
    """One browser's session: who (None before sign-in), its CSRF token, its public id."""

    token: str
    public_id: str
    reviewer: str | None
    csrf: str


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionStore:
    """Sessions in the console's file, each valid for ``lifetime_s``."""

    def __init__(self, db: Database, lifetime_s: float) -> None:
        self._db = db
        self._lifetime_s = lifetime_s

    def create(self, now: float, reviewer: str | None = None) -> Session:
        """Start a session (anonymous unless ``reviewer`` is given)."""
        session = Session(
            token=secrets.token_urlsafe(32),
            public_id=secrets.token_hex(16),
            reviewer=reviewer,
            csrf=secrets.token_urlsafe(32),
        )
        with self._db.write() as db:
            db.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
            db.execute(
                "INSERT INTO sessions VALUES (?, ?, ?, ?, ?)",
                (
                    _hash(session.token),
                    session.public_id,
                    reviewer,
                    session.csrf,
                    now + self._lifetime_s,
                ),
            )
        return session

    def get(self, token: str | None, now: float) -> Session | None:
        """The live session behind a cookie's token, or None."""
        if not token:
            return None
        with self._db.read() as db:
            row = db.execute(
                "SELECT public_id, reviewer, csrf FROM sessions "
                "WHERE token_hash = ? AND expires_at > ?",
                (_hash(token), now),
            ).fetchone()
        return None if row is None else Session(token, row[0], row[1], row[2])

    def sign_in(self, previous: Session | None, reviewer: str, now: float) -> Session:
        """End ``previous`` and start a signed-in session in its place."""
        if previous is not None:
            self.end(previous)
        return self.create(now, reviewer)

    def end(self, session: Session) -> None:
        """Forget a session (sign-out)."""
        with self._db.write() as db:
            db.execute("DELETE FROM sessions WHERE token_hash = ?", (_hash(session.token),))


def csrf_matches(session: Session | None, presented: str | None) -> bool:
    """Whether a POST carries its session's CSRF token (compared in constant time)."""
    if session is None or not presented:
        return False
    return hmac.compare_digest(session.csrf.encode(), presented.encode())


def reviewer_for(token: str, reviewers: dict[str, str]) -> str | None:
    """The reviewer whose sign-in token this is, checking every token (constant time)."""
    found: str | None = None
    candidate = token.encode()
    for name, expected in reviewers.items():  # no early exit: timing tells nothing
        if hmac.compare_digest(candidate, expected.encode()):
            found = name
    return found
