"""Browser sessions of the web UI: one-time login codes, HttpOnly session cookies, CSRF tokens.

``shoal ui`` asks the API (with the token) for a code; the browser trades it once at
``/ui/login`` for a session cookie. The API token never reaches the browser. Kept in the server's
memory: a restarted server forgets them, and ``shoal ui`` gives a new link in a second.
"""

import dataclasses
import hmac
import secrets
import threading
import time

from cluster_server import tenancy
from cluster_server.errors import Forbidden, Unauthorized
from cluster_server.tenancy.principal import Principal

COOKIE = "shoal_session"
CSRF_HEADER = "X-CSRF-Token"
CODE_TTL = 60.0             # seconds a login link stays usable
SESSION_TTL = 12 * 3600.0   # seconds a browser session lasts without a new link
SAFE = ("GET", "HEAD", "OPTIONS")


@dataclasses.dataclass
class Session:
    id: str
    csrf: str
    principal: Principal  # who asked for the login link: the session acts as them
    expires: float

    @property
    def tenant(self):
        return self.principal.tenant

    @property
    def user(self):
        return self.principal.user


class Sessions:
    """Codes and sessions of one server process (thread-safe)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._codes = {}      # code -> (expires, target path)
        self._sessions = {}   # session id -> Session

    def issue_code(self, target, principal, now=None):
        now = time.time() if now is None else now
        code = secrets.token_urlsafe(32)
        with self._lock:
            self._codes = {c: v for c, v in self._codes.items() if v[0] > now}
            self._codes[code] = (now + CODE_TTL, target, principal)
        return code, CODE_TTL

    def redeem(self, code, now=None):
        """A new session and the page to land on, or None: a code works once, and not late."""
        now = time.time() if now is None else now
        with self._lock:
            found = self._codes.pop(code, None) if isinstance(code, str) else None
            if found is None or found[0] <= now:
                return None, None
            session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), found[2],
                              now + SESSION_TTL)
            self._sessions[session.id] = session
        return session, found[1]

    def get(self, session_id, now=None):
        now = time.time() if now is None else now
        with self._lock:
            session = self._sessions.get(session_id or "")
            if session is not None and session.expires <= now:
                del self._sessions[session.id]
                session = None
        return session

    def end(self, session_id):
        with self._lock:
            self._sessions.pop(session_id or "", None)


def of(app):
    """The app's sessions, made on first use."""
    found = getattr(app, "ui_sessions", None)
    if found is None:
        found = app.ui_sessions = Sessions()
    return found


def session_of(request, app):
    """The session behind the request's cookie (None without one). Checked on every request
    against the store: when the token or user that made it was revoked, expired or deleted,
    the session ends here and the request is refused (401, saying why); a user's new role
    applies at once."""
    found = of(app)
    session = found.get(request.cookies.get(COOKIE))
    if session is None:
        return None
    try:
        principal = tenancy.current(app.store, session.principal)
    except Unauthorized as error:
        found.end(session.id)
        raise Unauthorized("this browser session has ended: " + error.message +
                           " (run `shoal ui` with a valid token for a new link)",
                           dict(error.details, session="ended")) from None
    session.principal = principal
    return session


def check_csrf(session, request):
    """A state-changing request from a browser must carry the session's CSRF token (a header
    from the pages' script, or a form field for the few plain forms)."""
    if request.method in SAFE:
        return
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.mimetype in ("application/x-www-form-urlencoded",
                                             "multipart/form-data"):
        sent = request.form.get("csrf_token")
    sent = sent or ""
    if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
        raise Forbidden("missing or wrong CSRF token (reload the page)",
                        {"field": "headers." + CSRF_HEADER, "reason": "csrf"})


def principal_from_cookie(request):
    """For the API's token check when a request has no Authorization header: the principal
    of the session behind the cookie, or None. A state-changing request without the
    session's CSRF token is refused (403) rather than treated as anonymous."""
    from flask import current_app

    session = session_of(request, current_app)
    if session is None:
        return None
    check_csrf(session, request)
    return session.principal
