"""What every console page shares: templates, the session cookie, CSRF, security headers.

Templates are Jinja2 with autoescaping on, so a caption or tag can never become markup.
The cookie is ``HttpOnly`` and ``SameSite=Lax`` (another site's form posts go without it);
every POST must carry its session's CSRF token as well (:func:`checked_form`), which a page
of another site cannot read.
The content security policy lets a page load only the console's own script, styles and
images.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import FormData

from deeptrust.console.sessions import Session, SessionStore, csrf_matches

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
COOKIE = "deeptrust_console"
FORM_LIMIT = 64 * 1024
"""Largest form body accepted: a search's result ids are the longest field."""
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    auto_reload=False,
)


class Csrf(HTTPException):
    """A POST without its session's CSRF token (or without a session)."""

    def __init__(self) -> None:
        super().__init__(403, "missing or wrong CSRF token: reload the page and try again")


def page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    """Render a template into a response."""
    return HTMLResponse(templates.get_template(name).render(**context), status_code=status)


def message(heading: str, text: str, status: int, back: str | None = None) -> HTMLResponse:
    """A page that says why something did not happen."""
    return page("message.html", status, heading=heading, message=text, back=back, session=None)


def current(request: Request, sessions: SessionStore, now: float) -> Session | None:
    """The live session the request's cookie names, or None."""
    return sessions.get(request.cookies.get(COOKIE), now)


def set_cookie(response: Response, session: Session, secure: bool, max_age_s: float) -> None:
    """Hand the browser its session token."""
    response.set_cookie(
        COOKIE,
        session.token,
        max_age=int(max_age_s),
        httponly=True,
        samesite="lax",
        secure=secure,
        path="/",
    )


async def checked_form(
    request: Request, sessions: SessionStore, now: float
) -> tuple[Session, FormData]:
    """The POST's form and session, or 403 when the CSRF token does not match."""
    length = int(request.headers.get("content-length") or 0)
    if length > FORM_LIMIT:
        raise HTTPException(413, "form too large")
    form = await request.form(max_files=0, max_fields=20)
    session = current(request, sessions, now)
    token = form.get("csrf")
    if session is None or not csrf_matches(session, token if isinstance(token, str) else None):
        raise Csrf()
    return session, form


def field(form: FormData, name: str, limit: int = 200) -> str:
    """A text field of a form, or 400 when it is missing or too long."""
    value = form.get(name)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise HTTPException(400, f"the form's {name!r} field is missing or too long")
    return value


Call = Callable[[Request], Awaitable[Response]]


async def secure_headers(request: Request, call_next: Call) -> Response:
    """Add the security headers to every answer."""
    response = await call_next(request)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response
