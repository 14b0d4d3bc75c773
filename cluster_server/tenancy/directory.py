"""Tenants, their users, users' API tokens and the templates users may build from, in the store.

A token is shown once, when it is issued; the store keeps only its sha256 (a token holds 256
random bits, so a fast hash is enough: nothing can be guessed from it offline).
"""

import hashlib
import hmac
import re
import secrets
import time
import uuid

from cluster_server.errors import Conflict, NotFound, Unauthorized, ValidationError
from cluster_server.tenancy.principal import DEFAULT_TENANT, OWNER, ROLES, Principal

NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?")
NAME_RULE = "lower-case letters, digits and '-' (at most 40, not starting or ending with '-')"
TOKEN_PREFIX = "shoal_"
EVERYONE = "*"  # a template granted to every user of the tenant


def check_name(name, what):
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ValidationError(f"{what} name {name!r} must be {NAME_RULE}",
                              {"field": "name", "reason": "bad name"})


MAX_QUOTA = 10**9  # SQLite keeps 64-bit integers; no machine holds more clusters or nodes


def _quota(value, field):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or
                              not 0 <= value <= MAX_QUOTA):
        raise ValidationError(f"{field} must be a whole number from 0 to {MAX_QUOTA} (or null: "
                              "no limit)", {"field": field, "reason": "not a count"})
    return value


# -- tenants -------------------------------------------------------------------------------------

TENANT_COLUMNS = "name, created_at, max_clusters, max_nodes"


def _tenant(store, row):
    name = row[0]
    clusters, nodes = usage(store.db, name)
    users = store.db.execute("SELECT COUNT(*) FROM users WHERE tenant = ?", [name]).fetchone()[0]
    return {"name": name, "created_at": row[1], "max_clusters": row[2], "max_nodes": row[3],
            "clusters": clusters, "nodes": nodes, "users": users}


def tenant_exists(store, name):
    return store.db.execute("SELECT 1 FROM tenants WHERE name = ?", [name]).fetchone() is not None


def require_tenant(store, name):
    if not tenant_exists(store, name):
        raise NotFound(f"tenant '{name}' not found", {"entity": "tenant", "name": name})


def list_tenants(store):
    rows = store.db.execute(f"SELECT {TENANT_COLUMNS} FROM tenants ORDER BY name").fetchall()
    return [_tenant(store, row) for row in rows]


def get_tenant(store, name):
    row = store.db.execute(f"SELECT {TENANT_COLUMNS} FROM tenants WHERE name = ?",
                           [name]).fetchone()
    if row is None:
        raise NotFound(f"tenant '{name}' not found", {"entity": "tenant", "name": name})
    return _tenant(store, row)


def create_tenant(store, name, max_clusters=None, max_nodes=None):
    check_name(name, "tenant")
    with store.write() as db:
        if tenant_exists(store, name):
            raise Conflict(f"tenant '{name}' already exists", {"entity": "tenant", "name": name})
        db.execute("INSERT INTO tenants (name, created_at, max_clusters, max_nodes) VALUES"
                   " (?, ?, ?, ?)", [name, time.time(), _quota(max_clusters, "max_clusters"),
                                     _quota(max_nodes, "max_nodes")])
    return get_tenant(store, name)


def set_quotas(store, table, keys, values):
    """Set max_clusters / max_nodes given in ``values`` (null lifts a limit) on one row."""
    changes = {k: _quota(values[k], k) for k in ("max_clusters", "max_nodes") if k in values}
    if not changes:
        return
    where = " AND ".join(f"{k} = ?" for k in keys)
    with store.write() as db:
        db.execute(f"UPDATE {table} SET {', '.join(f'{k} = ?' for k in changes)} WHERE {where}",
                   [*changes.values(), *keys.values()])


def delete_tenant(store, name, resources_root=None):
    """Delete a tenant and everything it holds; refused while it has a cluster."""
    if name == DEFAULT_TENANT:
        raise Conflict("the default tenant cannot be deleted", {"entity": "tenant", "name": name})
    with store.write() as db:
        require_tenant(store, name)
        clusters, _ = usage(db, name)
        if clusters:
            raise Conflict(f"tenant '{name}' still has {clusters} cluster(s): delete them first",
                           {"entity": "tenant", "name": name, "clusters": clusters})
        for table in ("tokens", "template_grants", "users", "catalog", "resources",
                      "resource_names"):
            db.execute(f"DELETE FROM {table} WHERE tenant = ?", [name])
        db.execute("DELETE FROM tenants WHERE name = ?", [name])


# -- usage (what quotas count) -------------------------------------------------------------------

# A cluster counts until it is deleted; one whose create was rolled back holds nothing.
LIVE_CLUSTER = ("c.status != 'DELETED' AND NOT (c.status = 'FAILED' AND NOT EXISTS (SELECT 1"
                " FROM nodes m WHERE m.cluster_id = c.id AND m.status != 'DELETED'))")
LIVE_NODE = "n.status NOT IN ('DELETED', 'REMOVING')"


def usage(db, tenant, owner=None):
    """(clusters, nodes) in use by a tenant, or by one owner in it."""
    where, args = "c.tenant = ?", [tenant]
    if owner is not None:
        where, args = where + " AND c.owner = ?", [tenant, owner]
    clusters = db.execute(f"SELECT COUNT(*) FROM clusters c WHERE {where} AND {LIVE_CLUSTER}",
                          args).fetchone()[0]
    nodes = db.execute(f"SELECT COUNT(*) FROM nodes n JOIN clusters c ON c.id = n.cluster_id"
                       f" WHERE {where} AND {LIVE_NODE}", args).fetchone()[0]
    return clusters, nodes


# -- users ---------------------------------------------------------------------------------------

USER_COLUMNS = "name, role, created_at, max_clusters, max_nodes"


def _user(store, tenant, row):
    clusters, nodes = usage(store.db, tenant, row[0])
    tokens = store.db.execute("SELECT COUNT(*) FROM tokens WHERE tenant = ? AND user = ? AND"
                              " revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)",
                              [tenant, row[0], time.time()]).fetchone()[0]
    return {"name": row[0], "tenant": tenant, "role": row[1], "created_at": row[2],
            "max_clusters": row[3], "max_nodes": row[4], "clusters": clusters, "nodes": nodes,
            "tokens": tokens}


def list_users(store, tenant):
    rows = store.db.execute(f"SELECT {USER_COLUMNS} FROM users WHERE tenant = ? ORDER BY name",
                            [tenant]).fetchall()
    return [_user(store, tenant, row) for row in rows]


def get_user(store, tenant, name):
    row = store.db.execute(f"SELECT {USER_COLUMNS} FROM users WHERE tenant = ? AND name = ?",
                           [tenant, name]).fetchone()
    if row is None:
        raise NotFound(f"user '{name}' not found in tenant '{tenant}'",
                       {"entity": "user", "name": name})
    return _user(store, tenant, row)


def create_user(store, tenant, name, role, max_clusters=None, max_nodes=None):
    check_name(name, "user")
    if name == OWNER:
        raise Conflict(f"'{OWNER}' is the local owner's name; choose another",
                       {"entity": "user", "name": name, "reason": "reserved"})
    if role not in ROLES:
        raise ValidationError(f"role must be one of: {', '.join(ROLES)}",
                              {"field": "role", "reason": "unknown role"})
    with store.write() as db:
        require_tenant(store, tenant)
        if db.execute("SELECT 1 FROM users WHERE tenant = ? AND name = ?",
                      [tenant, name]).fetchone():
            raise Conflict(f"user '{name}' already exists in tenant '{tenant}'",
                           {"entity": "user", "name": name})
        db.execute("INSERT INTO users (tenant, name, role, created_at, max_clusters, max_nodes)"
                   " VALUES (?, ?, ?, ?, ?, ?)",
                   [tenant, name, role, time.time(), _quota(max_clusters, "max_clusters"),
                    _quota(max_nodes, "max_nodes")])
    return get_user(store, tenant, name)


def update_user(store, tenant, name, values):
    get_user(store, tenant, name)
    if "role" in values:
        if values["role"] not in ROLES:
            raise ValidationError(f"role must be one of: {', '.join(ROLES)}",
                                  {"field": "role", "reason": "unknown role"})
        with store.write() as db:
            db.execute("UPDATE users SET role = ? WHERE tenant = ? AND name = ?",
                       [values["role"], tenant, name])
    set_quotas(store, "users", {"tenant": tenant, "name": name}, values)
    return get_user(store, tenant, name)


def delete_user(store, tenant, name):
    """Delete a user and their tokens (their clusters stay, for an admin to handle)."""
    with store.write() as db:
        get_user(store, tenant, name)
        db.execute("DELETE FROM tokens WHERE tenant = ? AND user = ?", [tenant, name])
        db.execute("DELETE FROM template_grants WHERE tenant = ? AND user = ?", [tenant, name])
        db.execute("DELETE FROM users WHERE tenant = ? AND name = ?", [tenant, name])


# -- tokens --------------------------------------------------------------------------------------


def token_hash(token):
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(store, tenant, user, expires_in_ms=None):
    """A new token for a user: returned once, stored as its hash."""
    get_user(store, tenant, user)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token_id = f"tok-{uuid.uuid4().hex[:12]}"
    now = time.time()
    expires_at = now + expires_in_ms / 1000 if expires_in_ms else None
    with store.write() as db:
        db.execute("INSERT INTO tokens (id, tenant, user, hash, created_at, expires_at) VALUES"
                   " (?, ?, ?, ?, ?, ?)", [token_id, tenant, user, token_hash(token), now,
                                           expires_at])
    return {"id": token_id, "user": user, "tenant": tenant, "token": token,
            "created_at": now, "expires_at": expires_at}


TOKEN_COLUMNS = "id, user, created_at, expires_at, revoked_at"


def _token_row(tenant, row):
    now = time.time()
    state = ("revoked" if row[4] else "expired" if row[3] and row[3] <= now else "active")
    return {"id": row[0], "user": row[1], "tenant": tenant, "created_at": row[2],
            "expires_at": row[3], "revoked_at": row[4], "state": state}


def list_tokens(store, tenant, user=None):
    rows = store.db.execute(f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE tenant = ? AND"
                            " (? IS NULL OR user = ?) ORDER BY created_at",
                            [tenant, user, user]).fetchall()
    return [_token_row(tenant, row) for row in rows]


def revoke_token(store, tenant, token_id):
    with store.write() as db:
        row = db.execute(f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE tenant = ? AND id = ?",
                         [tenant, token_id]).fetchone()
        if row is None:
            raise NotFound(f"token '{token_id}' not found", {"entity": "token", "name": token_id})
        if not row[4]:
            db.execute("UPDATE tokens SET revoked_at = ? WHERE id = ?", [time.time(), token_id])
    return _token_row(tenant, db.execute(f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = ?",
                                         [token_id]).fetchone())


def principal_for_token(store, token):
    """The user a token belongs to; 401 when it is unknown, revoked or expired."""
    digest = token_hash(token)
    row = store.db.execute(
        "SELECT t.id, t.tenant, t.user, t.hash, t.expires_at, t.revoked_at, u.role FROM tokens t"
        " JOIN users u ON u.tenant = t.tenant AND u.name = t.user WHERE t.hash = ?",
        [digest]).fetchone()
    if row is None or not hmac.compare_digest(row[3], digest):
        raise Unauthorized("missing or wrong API token (the CLI reads it from SHOAL_TOKEN, "
                           "else SHOAL_HOME/token)")
    if row[5]:
        raise Unauthorized(f"API token {row[0]} was revoked", {"token": row[0],
                                                               "reason": "revoked"})
    if row[4] is not None and row[4] <= time.time():
        raise Unauthorized(f"API token {row[0]} has expired", {"token": row[0],
                                                               "reason": "expired"})
    return Principal(user=row[2], tenant=row[1], role=row[6], token_id=row[0])


def principal_for_token_id(store, token_id):
    """The user a token (by its id) stands for now; 401 when the token was revoked, has
    expired or is gone with its user. One read by primary key: cheap enough for every request
    of a browser session made with that token."""
    row = store.db.execute(
        "SELECT t.tenant, t.user, t.expires_at, t.revoked_at, u.role FROM tokens t"
        " JOIN users u ON u.tenant = t.tenant AND u.name = t.user WHERE t.id = ?",
        [token_id]).fetchone()
    if row is None:
        raise Unauthorized(f"API token {token_id} is gone (its user was deleted)",
                           {"token": token_id, "reason": "deleted"})
    if row[3]:
        raise Unauthorized(f"API token {token_id} was revoked", {"token": token_id,
                                                                 "reason": "revoked"})
    if row[2] is not None and row[2] <= time.time():
        raise Unauthorized(f"API token {token_id} has expired", {"token": token_id,
                                                                 "reason": "expired"})
    return Principal(user=row[1], tenant=row[0], role=row[4], token_id=token_id)


# -- templates users may build from ---------------------------------------------------------------


def list_grants(store, tenant):
    rows = store.db.execute("SELECT template, user FROM template_grants WHERE tenant = ?"
                            " ORDER BY template, user", [tenant]).fetchall()
    return [{"template": r[0], "user": None if r[1] == EVERYONE else r[1]} for r in rows]


def grant(store, tenant, template, user=None):
    if not store.catalog_exists("template", template, tenant):
        raise NotFound(f"template '{template}' not found", {"entity": "template",
                                                            "name": template})
    if user is not None:
        get_user(store, tenant, user)
    with store.write() as db:
        db.execute("INSERT OR IGNORE INTO template_grants (tenant, template, user) VALUES"
                   " (?, ?, ?)", [tenant, template, user or EVERYONE])
    return {"template": template, "user": user}


def ungrant(store, tenant, template, user=None):
    with store.write() as db:
        gone = db.execute("DELETE FROM template_grants WHERE tenant = ? AND template = ? AND"
                          " user = ?", [tenant, template, user or EVERYONE]).rowcount
    if not gone:
        who = f"user '{user}'" if user else "every user"
        raise NotFound(f"template '{template}' was not shared with {who}",
                       {"entity": "grant", "name": template})
    return {"template": template, "user": user}


def granted_templates(store, tenant, user):
    return {r[0] for r in store.db.execute(
        "SELECT template FROM template_grants WHERE tenant = ? AND user IN (?, ?)",
        [tenant, user, EVERYONE])}
