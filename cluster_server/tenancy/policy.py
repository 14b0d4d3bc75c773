"""Who may call what: the least role each API endpoint needs, and which rows a user sees.

One table, checked before every view, so a rule is read in one place. An endpoint missing from
it needs the superadmin (a new route is closed until someone decides who may use it). Within a
tenant, a user reaches only the clusters they own and the templates an admin shared; any other
cluster, task or operation answers 404 as if it did not exist, as another tenant's do.
"""

from cluster_server.errors import Forbidden, NotFound
from cluster_server.tenancy import directory
from cluster_server.tenancy.principal import ADMIN, SUPERADMIN, USER

_CLUSTER = ("cluster", "name")
_READ = {"list_entities", "show_entity"}
RULES = {
    "meta.server_info": (USER, None),
    "meta.openapi_document": (USER, None),
    **{f"catalog.{view}": (USER if view in _READ else ADMIN, None) for view in (
        "list_entities", "show_entity", "create_entity", "update_entity", "delete_entity",
        "import_catalog", "export_catalog", "check_catalog")},
    **{f"resources.{view}": (ADMIN, None) for view in (
        "list_all", "list_kind", "upload", "show", "content", "stage", "activate_version",
        "activate_staged", "recall", "delete_version", "delete_name")},
    "clusters.plan_new": (USER, None),
    "clusters.create_cluster": (USER, None),
    "clusters.list_clusters": (USER, None),
    "clusters.show_cluster": (USER, _CLUSTER),
    "clusters.delete_cluster": (USER, _CLUSTER),
    "clusters.cluster_operation": (USER, _CLUSTER),
    "clusters.plan_existing": (USER, _CLUSTER),
    "clusters.list_tasks": (USER, _CLUSTER),
    "clusters.cluster_events": (USER, _CLUSTER),
    "clusters.show_task": (USER, ("task", "task_id")),
    "clusters.show_operation": (USER, ("operation", "op_id")),
    "tenancy.extend_lease": (USER, _CLUSTER),
    "live.cluster_stream": (USER, _CLUSTER),
    # A login link for the web UI: its session acts as whoever asked, with their role.
    "live.new_login": (USER, None),
    "catalog.import_archive": (ADMIN, None),
    "health.cluster_health": (USER, _CLUSTER),
    "health.check_cluster": (USER, _CLUSTER),
    # Figures of the whole server, every tenant's: the owner's (Prometheus scrapes with its token).
    "health.server_metrics": (SUPERADMIN, None),
    # The shell container holds the machine's cloud credentials.
    "envshell.prepare_shell": (ADMIN, _CLUSTER),
    "setup.show_setup": (ADMIN, None),
    "setup.setup_aws": (SUPERADMIN, None),
    "setup.setup_gcp": (SUPERADMIN, None),
    # The broker's workers serve every tenant's queue: what they run is the whole server's.
    "workers.list_workers": (SUPERADMIN, None),
    "tenancy.whoami": (USER, None),
    "tenancy.list_grants": (ADMIN, None),
    "tenancy.grant_template": (ADMIN, None),
    "tenancy.ungrant_template": (ADMIN, None),
    **{f"tenancy.{view}": (SUPERADMIN, None) for view in (
        "list_tenants", "create_tenant", "show_tenant", "update_tenant", "delete_tenant",
        "list_users", "create_user", "show_user", "update_user", "delete_user", "issue_token",
        "list_tokens", "revoke_token")},
}


def authorize(principal, store, endpoint, view_args, what="do this"):
    """Refuse the request unless the principal's role allows the endpoint (403), and hide what
    is not theirs (404). ``what`` words the request in the refusal ("GET /api/v1/tenants")."""
    role, scope = RULES.get(endpoint, (SUPERADMIN, None))
    if not principal.at_least(role):
        raise Forbidden(f"{principal.role} '{principal.user}' may not {what}: it needs the "
                        f"{role} role", {"role": principal.role, "needs": role})
    if scope and not principal.sees_all_clusters:
        kind, arg = scope
        value = (view_args or {}).get(arg)
        if value is not None and not owns(principal, store, kind, value):
            raise NotFound(f"{kind} '{value}' not found", {"entity": kind, "name": value})


def owns(principal, store, kind, value):
    """Whether the user owns the cluster named (or the one the operation or task belongs to).
    A name that names nothing is left to the view, which answers its usual 404."""
    if kind == "cluster":
        row = store.db.execute("SELECT owner FROM clusters WHERE tenant = ? AND name = ? AND"
                               " status != 'DELETED'", [principal.tenant, value]).fetchone()
    else:
        op_id = value.split("/", 1)[0]
        row = store.db.execute("SELECT c.owner FROM operations o JOIN clusters c ON c.id ="
                               " o.cluster_id WHERE o.id = ? AND c.tenant = ?",
                               [op_id, principal.tenant]).fetchone()
    return row is None or row[0] == principal.user


def cluster_owner_filter(principal):
    """SQL (and its argument) that narrows a clusters query (alias c) to what the user sees."""
    if principal.sees_all_clusters:
        return "", []
    return " AND c.owner = ?", [principal.user]


def templates_visible(principal, store):
    """The templates the principal may see and build from; None means every one."""
    if principal.at_least(ADMIN):
        return None
    return directory.granted_templates(store, principal.tenant, principal.user)


def check_template(principal, store, name):
    """A user builds only from a template an admin shared with them: any other is 'not found'."""
    visible = templates_visible(principal, store)
    if visible is not None and name not in visible:
        raise NotFound(f"template '{name}' not found", {"entity": "template", "name": name})


def owner_for_create(principal, requested):
    """The owner of a new cluster: the user themself; an admin may create for someone else."""
    if requested and requested != principal.user and not principal.at_least(ADMIN):
        raise Forbidden(f"user '{principal.user}' may create clusters only for themself",
                        {"field": "owner", "reason": "not yourself"})
    return requested or principal.user
