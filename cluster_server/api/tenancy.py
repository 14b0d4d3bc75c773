"""Tenancy endpoints: who am I, tenants and their quotas, users and their tokens, the templates
users may build from, and extending a cluster's lease."""

import re
import shutil

from flask import Blueprint, current_app, g, jsonify, request

from cluster_server import catalog, operations
from cluster_server.api import responses
from cluster_server.api.clusters import CLUSTER
from cluster_server.api.common import json_body
from cluster_server.contract.bodies import returns, takes
from cluster_server.contract.params import accepts, pattern
from cluster_server.contract.schema import (Choice, Either, ListOf, Matching, Obj, Range,
                                            Scalar)
from cluster_server.tenancy import ADMIN, directory, durations, leases
from cluster_server.tenancy.principal import ROLES

bp = Blueprint("tenancy", __name__)

TENANT = {"tenant": pattern(directory.NAME_RE, "tenant", directory.NAME_RULE)}
USER = {"user": pattern(directory.NAME_RE, "user", directory.NAME_RULE)}
TOKEN_ID = re.compile(r"tok-[0-9a-f]{12}")
TOKEN = {"token_id": pattern(TOKEN_ID, "token", "tok- and 12 hex digits")}
TEMPLATE = {"template": pattern(catalog.NAME_RE, "template", catalog.NAME_RULE)}

NAME = Matching(directory.NAME_RE, f"a name of {directory.NAME_RULE}")
QUOTA = Either(Range(0, directory.MAX_QUOTA), Scalar(type(None), label="null"),
               label=f"a whole number from 0 to {directory.MAX_QUOTA}, or null (no limit)")
QUOTAS = {"max_clusters": QUOTA.described("the most clusters at once (null: no limit)"),
          "max_nodes": QUOTA.described("the most nodes at once (null: no limit)")}
DURATION = Either(Range(0, durations.MAX_MS), Matching(durations.WHOLE, durations.RULE),
                  label=f"a duration: {durations.RULE}")
NEW_TENANT = Obj({"name": NAME, **QUOTAS}, required=("name",)).described(
    "a tenant", example={"name": "team-a", "max_clusters": 10, "max_nodes": 40})
NEW_USER = Obj({"name": NAME, "role": Choice(*ROLES), **QUOTAS},
               required=("name", "role")).described(
    "a user of the tenant", example={"name": "alice", "role": "user"})
USER_CHANGE = Obj({"role": Choice(*ROLES), **QUOTAS})
NEW_TOKEN = Obj({"expires_in": DURATION.described("the token stops working after this (none: "
                                                  "it never expires)")})
NEW_GRANT = Obj({"template": Matching(catalog.NAME_RE, catalog.NAME_RULE),
                 "user": NAME.described("one user (none: every user of the tenant)")},
                required=("template",)).described("a template shared with users",
                                                  example={"template": "local-web"})
EXTEND = Obj({"by": DURATION.described("time to add to the lease")}, required=("by",)).described(
    "a lease extension", example={"by": "2h"})


def _store():
    return current_app.store


@bp.get("/whoami")
@returns(200, responses.PRINCIPAL)
def whoami():
    """The user, tenant and role the request's token stands for."""
    return jsonify(g.principal.to_dict())


# -- tenants -------------------------------------------------------------------------------------

@bp.get("/tenants")
@returns(200, ListOf(responses.TENANT))
def list_tenants():
    """Every tenant with its quotas and what it uses."""
    return jsonify(directory.list_tenants(_store()))


@bp.post("/tenants")
@takes(NEW_TENANT)
@returns(201, responses.TENANT)
def create_tenant():
    """Create a tenant (empty: its admin imports its catalog)."""
    data = json_body()
    return jsonify(directory.create_tenant(_store(), data["name"], data.get("max_clusters"),
                                           data.get("max_nodes"))), 201


@bp.get("/tenants/<tenant>")
@accepts(path=TENANT)
@returns(200, responses.TENANT)
def show_tenant(tenant):
    """One tenant: quotas, clusters and nodes in use, users."""
    return jsonify(directory.get_tenant(_store(), tenant))


@bp.put("/tenants/<tenant>")
@accepts(path=TENANT)
@takes(Obj(QUOTAS))
@returns(200, responses.TENANT)
def update_tenant(tenant):
    """Set a tenant's quotas (null lifts one)."""
    directory.get_tenant(_store(), tenant)
    directory.set_quotas(_store(), "tenants", {"name": tenant}, json_body())
    return jsonify(directory.get_tenant(_store(), tenant))


@bp.delete("/tenants/<tenant>")
@accepts(path=TENANT)
@returns(200, responses.GONE)
def delete_tenant(tenant):
    """Delete a tenant with its catalog, resources and users; refused while it has clusters."""
    directory.delete_tenant(_store(), tenant)
    _remove_resource_files(tenant)
    return jsonify({"deleted": tenant})


def _remove_resource_files(tenant):
    root = current_app.config["SHOAL_HOME"] / "resources" / tenant
    shutil.rmtree(root, ignore_errors=True)


# -- users and tokens ----------------------------------------------------------------------------

@bp.get("/users")
@returns(200, ListOf(responses.USER))
def list_users():
    """The users of the tenant."""
    return jsonify(directory.list_users(_store(), g.tenant))


@bp.post("/users")
@takes(NEW_USER)
@returns(201, responses.USER)
def create_user():
    """Create a user of the tenant with a role (admin or user)."""
    data = json_body()
    return jsonify(directory.create_user(_store(), g.tenant, data["name"], data["role"],
                                         data.get("max_clusters"), data.get("max_nodes"))), 201


@bp.get("/users/<user>")
@accepts(path=USER)
@returns(200, responses.USER)
def show_user(user):
    """One user: role, quotas, what they use, live tokens."""
    return jsonify(directory.get_user(_store(), g.tenant, user))


@bp.put("/users/<user>")
@accepts(path=USER)
@takes(USER_CHANGE)
@returns(200, responses.USER)
def update_user(user):
    """Change a user's role or quotas."""
    return jsonify(directory.update_user(_store(), g.tenant, user, json_body()))


@bp.delete("/users/<user>")
@accepts(path=USER)
@returns(200, responses.GONE)
def delete_user(user):
    """Delete a user and their tokens (their clusters stay)."""
    directory.delete_user(_store(), g.tenant, user)
    return jsonify({"deleted": user})


@bp.post("/users/<user>/tokens")
@accepts(path=USER)
@takes(NEW_TOKEN, required=False)
@returns(201, responses.ISSUED)
def issue_token(user):
    """Issue an API token for a user: the answer is the only time it is shown."""
    data = json_body(required=False)
    expires = data.get("expires_in")
    ms = durations.to_ms(expires, "expires_in") if expires is not None else None
    return jsonify(directory.issue_token(_store(), g.tenant, user, ms)), 201


@bp.get("/tokens")
@accepts(query={"user": USER["user"]})
@returns(200, ListOf(responses.TOKEN))
def list_tokens():
    """The tenant's tokens (of ?user= only), never their values."""
    return jsonify(directory.list_tokens(_store(), g.tenant, request.args.get("user")))


@bp.delete("/tokens/<token_id>")
@accepts(path=TOKEN)
@returns(200, responses.TOKEN)
def revoke_token(token_id):
    """Revoke a token: it answers 401 from now on."""
    return jsonify(directory.revoke_token(_store(), g.tenant, token_id))


# -- templates shared with users -----------------------------------------------------------------

@bp.get("/grants")
@returns(200, ListOf(responses.GRANT))
def list_grants():
    """Which templates the tenant's users may see and build from (user null: every user)."""
    return jsonify(directory.list_grants(_store(), g.tenant))


@bp.post("/grants")
@takes(NEW_GRANT)
@returns(201, responses.GRANT)
def grant_template():
    """Share a template with one user of the tenant, or with all of them."""
    data = json_body()
    return jsonify(directory.grant(_store(), g.tenant, data["template"], data.get("user"))), 201


@bp.delete("/grants/<template>")
@accepts(path=TEMPLATE, query={"user": USER["user"]})
@returns(200, responses.GRANT)
def ungrant_template(template):
    """Stop sharing a template with one user (?user=), or with every user."""
    return jsonify(directory.ungrant(_store(), g.tenant, template, request.args.get("user")))


# -- leases --------------------------------------------------------------------------------------

@bp.post("/clusters/<name>/extend")
@accepts(path=CLUSTER)
@takes(EXTEND)
@returns(200, responses.LEASE)
def extend_lease(name):
    """Extend a cluster's lease, within its template's step and max (admins may pass max)."""
    store = _store()
    cluster = operations.get_cluster(store, g.tenant, name)
    expires = leases.extend(store, cluster, json_body()["by"],
                            beyond_max=g.principal.at_least(ADMIN))
    return jsonify({"name": name, "expires_at": expires, "expires": leases.iso(expires)})
