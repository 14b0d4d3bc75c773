"""Plugin resource endpoints: upload versions of scripts, archives and keys; stage, activate,
recall and delete them. The contents of keys never leave the server."""

import re

from flask import Blueprint, Response, current_app, g, jsonify, request

from cluster_server import resources
from cluster_server.api import responses as answers
from cluster_server.contract.bodies import returns, takes
from cluster_server.contract.limits import large_body
from cluster_server.contract.schema import ListOf
from cluster_server.contract.params import accepts, pattern
from cluster_server.errors import Forbidden, ValidationError

bp = Blueprint("resources", __name__)
KIND = {"kind": {"enum": list(resources.KINDS)}}
NAMED = {**KIND, "name": pattern(resources.NAME, "resource", resources.NAME_RULE)}
VERSION = {**NAMED, "version": pattern(re.compile(r"[1-9][0-9]{0,8}"), "version",
                                       "versions are numbers from 1")}


def _store():
    return resources.FileResourceStore(current_app.store, current_app.config["SHOAL_HOME"],
                                       g.tenant)


def _number(version):
    """A version from the path: a positive whole number (the 404 of a non-number would hide
    what was wrong)."""
    if not version.isdigit() or int(version) < 1:
        raise ValidationError(f"bad version '{version}': versions are numbers from 1",
                              {"field": "version", "value": version, "reason": "not a number"})
    return int(version)


def _show(store, kind, name):
    versions = store.versions(kind, name)
    pick = {v["status"]: v["version"] for v in versions}
    return {"kind": kind, "name": name, "active": pick.get(resources.ACTIVE),
            "staged": pick.get(resources.STAGED), "versions": versions}


@bp.get("/resources")
@accepts(query={"kind": {"type": "string", "enum": list(resources.KINDS)}})
@returns(200, ListOf(answers.RESOURCE_ROW))
def list_all():
    """Every resource name (of ``?kind=`` only, when given) with its active and staged version."""
    return jsonify(_store().list(request.args.get("kind") or None))


@bp.get("/resources/<kind>")
@accepts(path=KIND)
@returns(200, ListOf(answers.RESOURCE_ROW))
def list_kind(kind):
    """Every resource name of one kind."""
    return jsonify(_store().list(kind))


@bp.put("/resources/<kind>/<path:name>")
@accepts(path=NAMED)
@large_body
@takes(media="application/octet-stream", required=False)  # an empty script is a script
@returns(201, answers.RESOURCE)
def upload(kind, name):
    """Store the raw request body as the next version (inactive)."""
    # <path:name>: a name holding '/' reaches the name check and its clear error, not a 404.
    store = _store()
    limit = resources.max_bytes()
    # Refuse on the declared length before reading; read at most one byte past the limit.
    resources.check_size(request.content_length or 0, limit)
    data = request.stream.read(limit + 1)
    version = store.upload(kind, name, data)
    return jsonify({"uploaded": version, **_show(store, kind, name)}), 201


@bp.get("/resources/<kind>/<name>")
@accepts(path=NAMED)
@returns(200, answers.RESOURCE)
def show(kind, name):
    """Every version of a name, with which one is active and which staged."""
    store = _store()
    return jsonify(_show(store, kind, name))


@bp.get("/resources/<kind>/<name>/versions/<version>/content")
@accepts(path=VERSION)
@returns(200, description="the bytes of that version", media="application/octet-stream")
def content(kind, name, version):
    """The bytes of one version; never for keys."""
    version = _number(version)
    if kind == "keys":
        raise Forbidden("the contents of keys are never returned",
                              {"kind": kind, "name": name, "reason": "secret"})
    data = _store().read(kind, name, version)
    return Response(data, mimetype="application/octet-stream")


@bp.post("/resources/<kind>/<name>/versions/<version>/stage")
@accepts(path=VERSION)
@returns(200, answers.RESOURCE)
def stage(kind, name, version):
    """Make a version the staged candidate for the next activate."""
    version = _number(version)
    store = _store()
    store.stage(kind, name, version)
    return jsonify(_show(store, kind, name))


@bp.post("/resources/<kind>/<name>/versions/<version>/activate")
@accepts(path=VERSION)
@returns(200, answers.RESOURCE)
def activate_version(kind, name, version):
    """Make a version active."""
    version = _number(version)
    store = _store()
    store.activate(kind, name, version)
    return jsonify(_show(store, kind, name))


@bp.post("/resources/<kind>/<name>/activate")
@accepts(path=NAMED)
@returns(200, answers.RESOURCE)
def activate_staged(kind, name):
    """Make the staged version active."""
    store = _store()
    store.activate(kind, name)
    return jsonify(_show(store, kind, name))


@bp.post("/resources/<kind>/<name>/versions/<version>/recall")
@accepts(path=VERSION)
@returns(200, answers.RESOURCE)
def recall(kind, name, version):
    """Send an active or staged version back to inactive."""
    version = _number(version)
    store = _store()
    store.recall(kind, name, version)
    return jsonify(_show(store, kind, name))


@bp.delete("/resources/<kind>/<name>/versions/<version>")
@accepts(path=VERSION)
@returns(200, answers.RESOURCE_DELETED)
def delete_version(kind, name, version):
    """Delete one version that is not active."""
    version = _number(version)
    return jsonify({"kind": kind, "name": name, "deleted": _store().delete(kind, name, version)})


@bp.delete("/resources/<kind>/<name>")
@accepts(path=NAMED)
@returns(200, answers.RESOURCE_DELETED)
def delete_name(kind, name):
    """Delete every version of a name, the active one included."""
    return jsonify({"kind": kind, "name": name, "deleted": _store().delete(kind, name)})
