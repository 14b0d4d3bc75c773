"""The web UI: server-rendered pages under /ui/ (a user view and an admin view) with a little
plain JavaScript that calls the same REST API as the CLI, with the session cookie and a CSRF
header. Templates and static assets ship in this package; nothing is loaded from elsewhere."""

import time

from flask import Blueprint, current_app, render_template, request

from cluster_server.errors import Unauthorized
from cluster_server.tenancy import leases
from cluster_server.ui import sessions

bp = Blueprint("ui", __name__, url_prefix="/ui", template_folder="templates",
               static_folder="static", static_url_path="/static")

# No inline script or style, nothing from another origin, no framing, forms post only here.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
OPEN = ("ui.login", "ui.static", "ui.logged_out")


@bp.before_request
def need_session():
    if request.endpoint in OPEN:
        return None
    try:
        session = sessions.session_of(request, current_app)
    except Unauthorized as error:  # the token or user behind the session is gone
        return render_template("logged_out.html", reason="ended", message=error.message), 401
    if session is None:
        return render_template("logged_out.html", reason="no session"), 401
    sessions.check_csrf(session, request)
    request.ui_session = session
    return None


@bp.after_request
def headers(response):
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    if request.endpoint != "ui.static":
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.app_template_global()
def csrf_token():
    session = getattr(request, "ui_session", None)
    return session.csrf if session else ""


@bp.app_template_filter("age")
def age(seconds):
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


@bp.app_template_global()
def whoami():
    """Who this session acts as, from the API (GET /whoami); None on a page without one."""
    if getattr(request, "ui_session", None) is None:
        return None
    if not hasattr(request, "ui_whoami"):
        from cluster_server.ui import apicall

        try:
            request.ui_whoami = apicall.get("/whoami")
        except apicall.ApiError:
            request.ui_whoami = None  # an error page still renders, without the name
    return request.ui_whoami


@bp.app_template_filter("expiry")
def expiry(at, now):
    """A lease's end as the API gives it (UTC) and how far off it is; 'never' without one."""
    if at is None:
        return "never"
    left = at - now
    return f"{leases.iso(at)} ({'in ' + age(left) if left > 0 else 'expired'})"


@bp.app_template_filter("clock")
def clock(at):
    return time.strftime("%H:%M:%S", time.localtime(at))


from cluster_server.ui import pages  # noqa: E402,F401  (registers the views on bp)

__all__ = ["bp", "sessions"]
