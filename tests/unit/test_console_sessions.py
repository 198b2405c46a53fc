"""Sessions, CSRF tokens, reviewer tokens and the console's settings (no broker)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from deeptrust.console.db import Database
from deeptrust.console.sessions import SessionStore, csrf_matches, reviewer_for
from deeptrust.console.settings import ConsoleSettings

ALICE = "alice-token-0123456789"
BOB = "bob-token-0123456789ab"


@pytest.fixture
def sessions(tmp_path: Path) -> SessionStore:
    return SessionStore(Database(tmp_path / "console.db"), lifetime_s=3600)


def test_a_session_is_found_by_its_token_until_it_expires(sessions: SessionStore):
    session = sessions.create(now=0.0)
    found = sessions.get(session.token, now=3599.0)
    assert found == session
    assert found.reviewer is None
    assert sessions.get(session.token, now=3601.0) is None
    assert sessions.get("forged", now=1.0) is None
    assert sessions.get(None, now=1.0) is None


def test_signing_in_replaces_the_session(sessions: SessionStore):
    before = sessions.create(now=0.0)
    after = sessions.sign_in(before, "alice", now=1.0)
    assert after.reviewer == "alice"
    assert after.token != before.token
    assert after.csrf != before.csrf
    assert sessions.get(before.token, now=2.0) is None, "a planted token is worthless"
    assert sessions.get(after.token, now=2.0) == after
    sessions.end(after)
    assert sessions.get(after.token, now=3.0) is None


def test_the_file_holds_no_session_token(tmp_path: Path):
    path = tmp_path / "console.db"
    session = SessionStore(Database(path), 3600).create(now=0.0)
    assert session.token.encode() not in path.read_bytes()
    assert session.token.encode() not in (tmp_path / "console.db-wal").read_bytes()


def test_csrf_must_match_the_session(sessions: SessionStore):
    mine = sessions.create(now=0.0)
    other = sessions.create(now=0.0)
    assert csrf_matches(mine, mine.csrf)
    assert not csrf_matches(mine, other.csrf)
    assert not csrf_matches(mine, "")
    assert not csrf_matches(mine, None)
    assert not csrf_matches(None, mine.csrf)


def test_reviewer_tokens():
    tokens = {"alice": ALICE, "bob": BOB}
    assert reviewer_for(ALICE, tokens) == "alice"
    assert reviewer_for(BOB, tokens) == "bob"
    assert reviewer_for(ALICE[:-1], tokens) is None
    assert reviewer_for("", tokens) is None


def test_reviewers_come_from_a_file(tmp_path: Path):
    path = tmp_path / "reviewers"
    path.write_text(f"# name token\nalice {ALICE}\n\nbob {BOB}  # second\n")
    settings = ConsoleSettings(reviewers_file=path)
    assert {n: t.get_secret_value() for n, t in settings.reviewers.items()} == {
        "alice": ALICE,
        "bob": BOB,
    }


@pytest.mark.parametrize(
    ("reviewers", "complaint"),
    [
        ({}, "at least one reviewer"),
        ({"alice": "short"}, "at least 16 characters"),
        ({"alice": ALICE, "bob": ALICE}, "share a token"),
    ],
)
def test_bad_reviewer_settings_are_refused(reviewers: dict[str, str], complaint: str):
    with pytest.raises(ValidationError, match=complaint):
        ConsoleSettings(reviewers=reviewers)  # type: ignore[arg-type]


def test_a_malformed_reviewers_file_is_refused(tmp_path: Path):
    path = tmp_path / "reviewers"
    path.write_text(f"alice {ALICE} extra\n")
    with pytest.raises(ValidationError, match="reviewers:1: expected 'name token'"):
        ConsoleSettings(reviewers_file=path)
