"""A cluster's managed resources in the store.

One row per entry of the template's ``resources``, written with the cluster: its status, the
facts the cloud reported (endpoint, port, user: no secret) and the generated password, sealed
with the store's key like provider credentials. The password leaves this module only for the
plugin that sets it and for the macro context handed to automators; everything shown (API, task
output, events) goes through ``mask``.
"""

import json
import logging
import secrets
import string
import threading

from cluster_server.catalog import MASK

# RDS takes 8-41 printable characters but not '/', '"', '@' or ' '; letters and digits fit
# every engine and never need quoting in a connection string.
_ALPHABET = string.ascii_letters + string.digits
PASSWORD_LENGTH = 32
# Every password this process has made or unsealed: what the log filter masks.
_KNOWN = set()
_known_lock = threading.Lock()


def _known(value):
    with _known_lock:
        _KNOWN.add(value)
    return value


def hide(value):
    """Mask ``value`` in this process's log from now on (a worker given a password to set)."""
    return _known(value)


def new_password():
    return _known("".join(secrets.choice(_ALPHABET) for _ in range(PASSWORD_LENGTH)))


class LogMask(logging.Filter):
    """A handler filter that masks every password this process knows in a log record, its
    message and its traceback alike: a plugin or library may quote what it was given."""

    def filter(self, record):
        with _known_lock:
            hidden = list(_KNOWN)
        if not hidden:
            return True
        message = record.getMessage()
        masked = mask(message, hidden)
        if masked != message:
            record.msg, record.args = masked, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask(record.exc_text, hidden)
        return True


def insert(db, store, cluster_id, resources, now):
    """Rows for a new cluster's ``resources`` ({name: entry}), each with a fresh password."""
    db.conn.executemany(
        "INSERT INTO cluster_resources (cluster_id, name, type, status, facts, secret,"
        " created_at) VALUES (?, ?, ?, 'PLANNED', '{}', ?, ?)",
        [(cluster_id, name, entry["type"], store.seal({"password": new_password()}), now)
         for name, entry in sorted(resources.items())])


def rows(store, cluster_id, live_only=True):
    query = "SELECT name, type, status, facts FROM cluster_resources WHERE cluster_id = ?"
    if live_only:
        query += " AND status != 'DELETED'"
    return [{"name": r[0], "type": r[1], "status": r[2], "facts": json.loads(r[3])}
            for r in store.db.execute(query + " ORDER BY name", [cluster_id]).fetchall()]


def row(store, cluster_id, name):
    found = store.db.execute("SELECT name, type, status, facts FROM cluster_resources WHERE"
                             " cluster_id = ? AND name = ?", [cluster_id, name]).fetchone()
    return {"name": found[0], "type": found[1], "status": found[2],
            "facts": json.loads(found[3])}


def password(store, cluster_id, name):
    sealed = store.db.execute("SELECT secret FROM cluster_resources WHERE cluster_id = ? AND"
                              " name = ?", [cluster_id, name]).fetchone()[0]
    return _known(store.unseal(sealed)["password"])


def passwords(store, cluster_id):
    """Every password of the cluster's resources, to mask them wherever output is kept."""
    return [_known(store.unseal(r[0])["password"]) for r in store.db.execute(
        "SELECT secret FROM cluster_resources WHERE cluster_id = ?", [cluster_id])]


def save(store, cluster_id, name, status=None, **facts):
    with store.write() as db:
        current = json.loads(db.execute("SELECT facts FROM cluster_resources WHERE cluster_id = ?"
                                        " AND name = ?", [cluster_id, name]).fetchone()[0])
        merged = json.dumps({**current, **facts})
        if status:
            db.execute("UPDATE cluster_resources SET facts = ?, status = ? WHERE cluster_id = ?"
                       " AND name = ?", [merged, status, cluster_id, name])
        else:
            db.execute("UPDATE cluster_resources SET facts = ? WHERE cluster_id = ? AND name = ?",
                       [merged, cluster_id, name])


def mark_deleted(db, cluster_id):
    db.execute("UPDATE cluster_resources SET status = 'DELETED' WHERE cluster_id = ?",
               [cluster_id])


def macro_context(store, cluster_id):
    """``{name: {endpoint, port, user, password, database}}`` of the resources that are up: what
    ``%resource.NAME.FIELD%`` expands to in a service's fields and config."""
    context = {}
    for item in rows(store, cluster_id):
        info = item["facts"].get("resource") or {}
        if item["status"] == "ACTIVE" and info.get("endpoint"):
            context[item["name"]] = {"endpoint": info["endpoint"], "port": info.get("port", ""),
                                     "user": info.get("user", ""),
                                     "database": info.get("database", ""),
                                     "password": password(store, cluster_id, item["name"])}
    return context


def public(store, cluster_id):
    """The resources as the API shows them: what the cloud said, never the password."""
    shown = []
    for item in rows(store, cluster_id):
        info = item["facts"].get("resource") or {}
        shown.append({"name": item["name"], "type": item["type"], "status": item["status"],
                      "resource_id": info.get("resource_id", ""),
                      "endpoint": info.get("endpoint", ""), "port": info.get("port") or None,
                      "user": info.get("user", ""), "database": info.get("database", "")})
    return shown


def mask(text, hidden):
    """``text`` with every one of the ``hidden`` values replaced by MASK."""
    for value in hidden:
        if value and value in text:
            text = text.replace(value, MASK)
    return text
