"""Tenants, users, roles, quotas and leases.

Every API request is made by a principal (user, tenant, role) that ``authenticate`` resolves;
``policy`` says what each role may call and see; ``quotas`` bound what a tenant or a user holds;
``leases`` give clusters an expiry, which the ``janitor`` enforces.
"""

import hmac

from flask import current_app

from cluster_server.errors import NotFound, Unauthorized
from cluster_server.tenancy import directory
from cluster_server.tenancy.principal import (ADMIN, DEFAULT_TENANT, OWNER, SUPERADMIN, USER,
                                              Principal)

TENANT_HEADER = "X-Shoal-Tenant"

__all__ = ["authenticate", "current", "Principal", "ADMIN", "SUPERADMIN", "USER", "TENANT_HEADER"]


def authenticate(request):
    """The principal making ``request``: from its bearer token (401 without a valid one).

    The token in SHOAL_HOME is the local owner's: the superadmin, acting in the tenant the
    X-Shoal-Tenant header names (default 'default'). A user's token acts in the user's own tenant;
    naming another tenant answers 404, as for a tenant that does not exist, so tenants' names do
    not leak.
    """
    store = current_app.store
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme != "Bearer" or not token:
        raise Unauthorized("missing or wrong API token (the CLI reads it from SHOAL_TOKEN, "
                           "else SHOAL_HOME/token)")
    wanted = request.headers.get(TENANT_HEADER) or None
    if hmac.compare_digest(token.encode(), current_app.config["SHOAL_TOKEN"].encode()):
        tenant = wanted or DEFAULT_TENANT
        if tenant != DEFAULT_TENANT:
            directory.require_tenant(store, tenant)
        return Principal(user=OWNER, tenant=tenant, role=SUPERADMIN)
    principal = directory.principal_for_token(store, token)
    if wanted and wanted != principal.tenant:
        # The same 404 as a tenant that does not exist.
        raise NotFound(f"tenant '{wanted}' not found", {"entity": "tenant", "name": wanted})
    return principal


def current(store, principal):
    """``principal`` as it stands now, for a browser session made by it earlier: a user's
    token revoked, expired or deleted (with its user), or the tenant gone, ends it (401); a
    changed role applies at once. The local owner's token is the server's own and lasts."""
    if principal.token_id is not None:
        return directory.principal_for_token_id(store, principal.token_id)
    if principal.tenant != DEFAULT_TENANT and not directory.tenant_exists(store,
                                                                          principal.tenant):
        raise Unauthorized(f"tenant '{principal.tenant}' was deleted",
                           {"tenant": principal.tenant, "reason": "deleted"})
    return principal
