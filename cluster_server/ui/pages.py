"""The pages of the web UI. Each reads what it shows from the REST API (``apicall.get``) and
renders it; every change is made by the pages' script through the same API."""

import json
import time

from urllib.parse import quote

from flask import current_app, redirect, render_template, request

from cluster_server import catalog
from cluster_server.ui import apicall, bp, sessions

KINDS = [(catalog.DIRS[kind], kind) for kind in catalog.KINDS]  # (plural, kind)
PLURALS = dict(KINDS)
STATUSES = ("ACTIVE", "CREATING", "UPDATING", "DELETING", "FAILED", "INCONSISTENT", "DELETED")
TASK_ROWS = 300   # the task table shows this many (running and failed first); the CLI has all


def q(name):
    """A name from a page's path as one segment of an API path ('?' or '#' stay in the name)."""
    return quote(name, safe="")


@bp.get("/login")
def login():
    """Trade a one-time code from ``shoal ui`` for a session cookie, then land on the page."""
    session, target = sessions.of(current_app).redeem(request.args.get("code"))
    if session is None:
        return render_template("logged_out.html", reason="bad code"), 403
    response = redirect(target)
    # HttpOnly: no script reads it; SameSite=Strict: no other site's page sends it.
    response.set_cookie(sessions.COOKIE, session.id, httponly=True, samesite="Strict",
                        path="/", max_age=int(sessions.SESSION_TTL))
    return response


@bp.post("/logout")
def logout():
    sessions.of(current_app).end(request.cookies.get(sessions.COOKIE))
    response = current_app.make_response(render_template("logged_out.html", reason="logout"))
    response.delete_cookie(sessions.COOKIE, path="/", httponly=True, samesite="Strict")
    return response


@bp.get("/logged-out")
def logged_out():
    return render_template("logged_out.html", reason="logout")


@bp.get("/")
def home():
    return redirect("/ui/templates")


@bp.errorhandler(apicall.ApiError)
def api_error(error):
    return render_template("error.html", error=error), error.status


# -- user view --------------------------------------------------------------------------------


@bp.get("/templates")
def templates():
    rows = [apicall.get(f"/clustertemplates/{t['name']}") for t in apicall.get("/clustertemplates")]
    return render_template("templates.html", templates=rows, page="templates")


@bp.get("/templates/<name>")
def template(name):
    resolved = apicall.get(f"/clustertemplates/{q(name)}")
    compat = resolved.get("compatibility", {})
    choices = {
        "services": compat.get("services") or [s["name"] for s in apicall.get("/services")],
        "hardwaretypes": compat.get("hardwaretypes") or [
            h["name"] for h in apicall.get("/hardwaretypes")],
        "imagetypes": compat.get("imagetypes") or [i["name"] for i in apicall.get("/imagetypes")],
    }
    return render_template("template.html", t=resolved, choices=choices, page="templates",
                           body=json.dumps(resolved, indent=2, sort_keys=True))


@bp.get("/clusters")
def clusters():
    status = request.args.get("status", "")
    rows = apicall.get("/clusters")
    if status:
        rows = [r for r in rows if r["status"] == status]
    return render_template("clusters.html", clusters=rows, status=status, statuses=STATUSES,
                           now=time.time(), page="clusters")


@bp.get("/clusters/<name>")
def cluster(name):
    rendered_at = time.time()  # the stream sends what changed after this
    view = apicall.get(f"/clusters/{q(name)}")
    op = apicall.get(f"/operations/{view['operation']['id']}") if view["operation"] else None
    # Failed and running tasks first, then the operation's first ones in plan order: a page of
    # a 1,000-node cluster shows a few hundred of its ~10,000 (the CLI lists them all). JOIN
    # tasks are the planner's own barriers, not work anyone waits on.
    tasks, seen = [], set()
    for query in ("?status=FAILED", "?status=RUNNING", f"?limit={TASK_ROWS}"):
        for task in apicall.get(f"/clusters/{q(name)}/tasks{query}"):
            if task["id"] not in seen and task["action"] != "JOIN" and len(tasks) < TASK_ROWS:
                seen.add(task["id"])
                tasks.append(task)
    events = apicall.get(f"/clusters/{q(name)}/events")["events"][-200:]
    health = apicall.get(f"/clusters/{q(name)}/health")
    return render_template("cluster.html", c=view, op=op, tasks=tasks, health=health,
                           task_total=op["total"] if op else 0,
                           events=events, rendered_at=rendered_at, page="clusters",
                           all_services=sorted(set(_addable(view)) | set(view["services"])),
                           last_event=events[-1]["id"] if events else 0)


def _addable(view):
    """Services the add form offers: the template's compatible ones (every service when it
    names none, or when the template has gone from the catalog since)."""
    try:
        template = apicall.get(f"/clustertemplates/{q(view['template'])}")
    except apicall.ApiError:
        template = {}
    return (template.get("compatibility", {}).get("services") or
            [s["name"] for s in apicall.get("/services")])


# -- admin view -------------------------------------------------------------------------------


@bp.get("/admin")
def admin():
    kinds = [(plural, kind, apicall.get(f"/{plural}")) for plural, kind in KINDS]
    # After a delete: what now names the deleted entity (the API's warnings, passed along).
    notes = [n for n in request.args.get("deleted", "").split(" | ") if n]
    return render_template("admin.html", kinds=kinds, page="admin", notes=notes)


@bp.get("/admin/<plural>/new")
def new_entity(plural):
    kind = _kind(plural)
    return render_template("entity.html", plural=plural, kind=kind, name=None, page="admin",
                           body=json.dumps({"name": "", "description": ""}, indent=2))


@bp.get("/admin/<plural>/<name>")
def entity(plural, name):
    kind = _kind(plural)
    raw = "?raw=1" if kind == "template" else ""
    body = apicall.get(f"/{plural}/{q(name)}{raw}")
    return render_template("entity.html", plural=plural, kind=kind, name=name, page="admin",
                           body=json.dumps(body, indent=2, sort_keys=True))


@bp.get("/admin/import")
def import_page():
    return render_template("import.html", page="admin")


@bp.get("/admin/check")
def check():
    return render_template("check.html", warnings=apicall.get("/catalog/check")["warnings"],
                           page="admin")


@bp.get("/admin/resources")
def resources():
    rows = [apicall.get(f"/resources/{r['kind']}/{r['name']}") for r in apicall.get("/resources")]
    return render_template("resources.html", resources=rows, page="admin")


@bp.get("/admin/people")
def people():
    """Tenants (a superadmin's), the users of this tenant with their tokens, and which
    templates they may build from: all from the API, which refuses a user's session (403)."""
    me = apicall.get("/whoami")
    tenants = apicall.get("/tenants") if me["role"] == "superadmin" else None
    users = apicall.get("/users")
    return render_template("people.html", me=me, tenants=tenants, users=users,
                           tokens=apicall.get("/tokens"), grants=apicall.get("/grants"),
                           templates=[t["name"] for t in apicall.get("/clustertemplates")],
                           now=time.time(), page="people")


def _kind(plural):
    if plural not in PLURALS:
        raise apicall.ApiError(404, {"code": "not_found",
                                     "message": f"no catalog collection '{plural}'"})
    return PLURALS[plural]
