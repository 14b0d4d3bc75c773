"""What the web UI needs from the API beyond what the CLI uses: one-time login codes for
``shoal ui`` and a server-sent-events stream of a cluster's progress.

The stream holds one of waitress's threads while it is open, so at most ``SHOAL_UI_STREAMS``
(default 4) run at once (503 beyond: the page falls back to polling), and each ends when no
operation runs or after ``?wait`` seconds (the browser's EventSource reconnects on its own).
"""

import json
import os
import threading
import time

from flask import Blueprint, Response, current_app, g, jsonify, request

from cluster_server import operations, tenancy
from cluster_server.api.clusters import CLUSTER, WAIT, operation_summary
from cluster_server.api.common import json_body
from cluster_server.contract.bodies import returns, takes
from cluster_server.contract.params import INTEGER, accepts
from cluster_server.contract.schema import INT, STR, Obj
from cluster_server.errors import Forbidden, ShoalError, Unauthorized
from cluster_server.ui import sessions

bp = Blueprint("live", __name__)

LOGIN = Obj({"cluster": operations.CLUSTER_NAME.described("land on this cluster's page")},
            required=()).described("where the browser lands after logging in")
LOGIN_CODE = Obj({"code": STR, "expires_in": INT, "path": STR}).described(
    "a one-time code and the path that trades it for a browser session")
# One event of the stream, as an SSE parser sees it (the OpenAPI 3.2 way, which schemathesis
# checks): the data of each is a JSON document.
SSE_EVENT = {"type": "object", "properties": {
    "event": {"enum": ["progress", "tasks", "nodes", "log", "end"]},
    "data": {"type": "string", "contentMediaType": "application/json",
             "contentSchema": {"type": ["object", "array"]}},
    "id": {"type": "string", "pattern": "^[0-9]+$"},
    "retry": {"type": "integer"}}}
TICK = 0.1          # seconds between looks at the store while an operation runs
RECHECK = 1.0       # seconds between looks at the token behind an open stream
TAIL = 400          # characters of a task's output the stream carries
FINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
# A server time (seconds since the epoch): the first message lists the tasks changed since.
SINCE = {"type": "string", "pattern": "^[0-9]{1,12}(\\.[0-9]{1,6})?$"}


class TooManyStreams(ShoalError):
    code = "unavailable"
    status = 503


_open_streams = threading.BoundedSemaphore(int(os.environ.get("SHOAL_UI_STREAMS", "4") or 4))


@bp.post("/ui/logins")
@takes(LOGIN, required=False)
@returns(201, LOGIN_CODE)
def new_login():
    """A one-time code for the web UI (``shoal ui``): valid once, for 60 seconds."""
    if not request.headers.get("Authorization"):
        # A browser session may not mint more sessions: only the token's holder.
        raise Forbidden("a login code needs the API token, not a browser session",
                        {"field": "headers.Authorization", "reason": "token required"})
    data = json_body(required=False)
    target = "/ui/templates"
    if data.get("cluster"):
        operations.get_cluster(current_app.store, g.tenant, data["cluster"])  # 404 if none
        target = f"/ui/clusters/{data['cluster']}"
    code, ttl = sessions.of(current_app).issue_code(target, g.principal)
    return jsonify({"code": code, "expires_in": int(ttl), "path": f"/ui/login?code={code}"}), 201


@bp.get("/clusters/<name>/stream")
@accepts(query={"after": INTEGER, "wait": WAIT, "since": SINCE}, path=CLUSTER)
@returns(200, SSE_EVENT, description="server-sent events: progress, tasks, nodes, log, end",
         media="text/event-stream")
def cluster_stream(name):
    """Live progress of a cluster as server-sent events: ``progress`` (the operation's counts
    and running tasks), ``tasks`` and ``nodes`` (rows whose status changed), ``log`` (new
    events, with their id for Last-Event-ID) and ``end`` when no operation runs any more."""
    store = current_app.store
    cluster = operations.get_cluster(store, g.tenant, name)
    after = request.headers.get("Last-Event-ID", "") or request.args.get("after", "0")
    after = int(after) if after.isdigit() else 0
    wait = min(30.0, float(request.args.get("wait", 25)))
    since = float(request.args.get("since", 0))
    if not _open_streams.acquire(blocking=False):
        raise TooManyStreams("too many live streams open; poll /clusters/{name}/events instead",
                             {"reason": "stream limit (SHOAL_UI_STREAMS)"})
    principal = g.principal
    generator = _events(store, cluster["id"], after, since, time.monotonic() + wait,
                        lambda: tenancy.current(store, principal))
    response = Response(generator, mimetype="text/event-stream")
    # The server closes the response when the stream ends or the browser goes, also when it
    # never read a byte of it (a generator that never started runs no finally).
    response.call_on_close(_release_once())
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"
    return response


def _release_once():
    released = []

    def release():
        if not released:
            released.append(True)
            _open_streams.release()
    return release


def _message(event, data, event_id=None):
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _events(store, cluster_id, after, since, deadline, allowed=lambda: None):
    """The stream's messages: a first picture, then what changed, tick by tick. ``allowed``
    raises Unauthorized once the token (or user) the stream was opened with is revoked, expired
    or deleted: looked at every RECHECK seconds, it ends the stream (reopened, it is refused)."""
    yield b"retry: 1000\n\n"
    seen_tasks, seen_nodes, last = {}, None, None
    first = True
    recheck = time.monotonic() + RECHECK
    while True:
        if time.monotonic() >= recheck:
            recheck = time.monotonic() + RECHECK
            try:
                allowed()
            except Unauthorized:
                return
        at = time.time()  # before the reads: a later look misses nothing changed after it
        with store.snapshot() as db:
            op = db.execute("SELECT id FROM operations WHERE cluster_id = ? ORDER BY created_at"
                            " DESC LIMIT 1", [cluster_id]).fetchone()
            summary = operation_summary(store, op[0]) if op else None
            status = db.execute("SELECT status FROM clusters WHERE id = ?",
                                [cluster_id]).fetchone()[0]
            events = db.execute("SELECT id, at, message, operation_id FROM events WHERE"
                                " cluster_id = ? AND id > ? ORDER BY id LIMIT 500",
                                [cluster_id, after]).fetchall()
            now = (status, summary and (summary["id"], summary["status"],
                                        tuple(sorted(summary["counts"].items()))))
            changed_tasks = changed_nodes = []
            if now != last:
                if summary:
                    if summary["id"] != (last and last[1] and last[1][0]):
                        seen_tasks = {}
                    changed_tasks = _changed_tasks(db, summary["id"], seen_tasks, since if first else None)
                nodes = dict(db.execute("SELECT id, status FROM nodes WHERE cluster_id = ?",
                                        [cluster_id]).fetchall())
                changed_nodes = [{"id": n, "status": s} for n, s in nodes.items()
                                 if seen_nodes is None or seen_nodes.get(n) != s]
                changed_nodes += [{"id": n, "status": "DELETED"} for n in (seen_nodes or {})
                                  if n not in nodes]
                seen_nodes = nodes
        if now != last:
            yield _message("progress", {"cluster_status": status, "operation": summary,
                                        "at": at})
            if changed_tasks:
                yield _message("tasks", changed_tasks)
            if changed_nodes:
                yield _message("nodes", changed_nodes)
            last = now
        if events:
            after = events[-1][0]
            yield _message("log", [{"id": r[0], "at": r[1], "message": r[2], "operation": r[3]}
                                   for r in events], after)
        first = False
        running = summary is not None and summary["status"] not in FINAL
        if not running or time.monotonic() >= deadline:
            if not running:
                yield _message("end", {"cluster_status": status})
            return
        time.sleep(TICK)


def _changed_tasks(db, op_id, seen, since):
    """Rows of the operation's tasks whose status or attempts changed since the last look; on
    the first look (``since`` given), those started or finished after the page was made."""
    rows = db.execute("SELECT id, node_id, action, service, status, attempts, substr(output,"
                      f" -{TAIL}), started_at, finished_at FROM tasks WHERE operation_id = ?"
                      " AND action != 'JOIN' ORDER BY seq", [op_id]).fetchall()
    changed = []
    for r in rows:
        key = (r[4], r[5])
        if seen.get(r[0]) != key:
            seen[r[0]] = key
            if since is None or max(r[7] or 0, r[8] or 0) >= since:
                changed.append({"id": r[0], "node": r[1], "action": r[2], "service": r[3],
                                "status": r[4], "attempts": r[5], "tail": r[6],
                                "duration": round(r[8] - r[7], 3) if r[7] and r[8] else None})
    return changed
