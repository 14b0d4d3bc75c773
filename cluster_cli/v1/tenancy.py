"""``shoal tenant|user|token ...``, ``shoal template share|unshare|shares`` and ``shoal whoami``:
tenants, users, their API tokens and the templates users may build from."""

import time

from cluster_cli.client import ClientError, segment
from cluster_cli.v1.base import ShoalCommand, ShoalLister, ShoalShowOne


def _when(at):
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(at)) if at else ""


def _limit(value):
    return "-" if value is None else value


def add_quota_options(parser):
    parser.add_argument("--max-clusters", type=int, metavar="N",
                        help="the most clusters at once (-1: no limit)")
    parser.add_argument("--max-nodes", type=int, metavar="N",
                        help="the most nodes at once (-1: no limit)")


def quota_body(parsed_args):
    body = {}
    for key in ("max_clusters", "max_nodes"):
        value = getattr(parsed_args, key)
        if value is not None:
            body[key] = None if value < 0 else value
    return body


class WhoAmI(ShoalShowOne):
    """Show the user, tenant and role your token stands for."""

    def take_action(self, parsed_args):
        return self.show_dict(self.client.get("/whoami"), parsed_args)


# -- tenants -------------------------------------------------------------------------------------

TENANT_COLUMNS = ("Name", "Clusters", "Max clusters", "Nodes", "Max nodes", "Users")


def _tenant_row(t):
    return (t["name"], t["clusters"], _limit(t["max_clusters"]), t["nodes"],
            _limit(t["max_nodes"]), t["users"])


class CreateTenant(ShoalShowOne):
    """Create a tenant (superadmin)."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="NAME")
        add_quota_options(parser)
        return parser

    def take_action(self, parsed_args):
        tenant = self.client.post("/tenants", {"name": parsed_args.name,
                                               **quota_body(parsed_args)})
        return self.show_dict(tenant, parsed_args)


class ListTenants(ShoalLister):
    """List tenants with their quotas and use (superadmin)."""

    def take_action(self, parsed_args):
        return TENANT_COLUMNS, [_tenant_row(t) for t in self.client.get("/tenants")]


class ShowTenant(ShoalShowOne):
    """Show a tenant: quotas, clusters and nodes in use, users (superadmin)."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="NAME")
        return parser

    def take_action(self, parsed_args):
        return self.show_dict(self.client.get(f"/tenants/{segment(parsed_args.name)}"),
                              parsed_args)


class SetTenant(ShoalShowOne):
    """Set a tenant's quotas (superadmin)."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="NAME")
        add_quota_options(parser)
        return parser

    def take_action(self, parsed_args):
        tenant = self.client.put(f"/tenants/{segment(parsed_args.name)}",
                                 quota_body(parsed_args))
        return self.show_dict(tenant, parsed_args)


class DeleteTenant(ShoalCommand):
    """Delete a tenant with its catalog, resources and users; refused while it has clusters."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="NAME")
        return parser

    def take_action(self, parsed_args):
        self.client.delete(f"/tenants/{segment(parsed_args.name)}")
        self.warn(f"tenant {parsed_args.name} deleted")


# -- users ---------------------------------------------------------------------------------------

USER_COLUMNS = ("Name", "Role", "Clusters", "Max clusters", "Nodes", "Max nodes", "Tokens")


class CreateUser(ShoalShowOne):
    """Create a user of the tenant (--tenant) with a role (superadmin)."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="NAME")
        parser.add_argument("--role", choices=("admin", "user"), required=True,
                            help="admin: the tenant's catalog, resources and every cluster; "
                                 "user: their own clusters from shared templates")
        add_quota_options(parser)
        return parser

    def take_action(self, parsed_args):
        user = self.client.post("/users", {"name": parsed_args.name, "role": parsed_args.role,
                                           **quota_body(parsed_args)})
        return self.show_dict(user, parsed_args)


class ListUsers(ShoalLister):
    """List the users of the tenant (superadmin)."""

    def take_action(self, parsed_args):
        return USER_COLUMNS, [(u["name"], u["role"], u["clusters"], _limit(u["max_clusters"]),
                               u["nodes"], _limit(u["max_nodes"]), u["tokens"])
                              for u in self.client.get("/users")]


class ShowUser(ShoalShowOne):
    """Show a user: role, quotas, what they use, live tokens (superadmin)."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="NAME")
        return parser

    def take_action(self, parsed_args):
        return self.show_dict(self.client.get(f"/users/{segment(parsed_args.name)}"),
                              parsed_args)


class SetUser(ShoalShowOne):
    """Change a user's role or quotas (superadmin)."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="NAME")
        parser.add_argument("--role", choices=("admin", "user"))
        add_quota_options(parser)
        return parser

    def take_action(self, parsed_args):
        body = quota_body(parsed_args)
        if parsed_args.role:
            body["role"] = parsed_args.role
        return self.show_dict(self.client.put(f"/users/{segment(parsed_args.name)}", body),
                              parsed_args)


class DeleteUser(ShoalCommand):
    """Delete a user and their tokens; their clusters stay (superadmin)."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="NAME")
        return parser

    def take_action(self, parsed_args):
        self.client.delete(f"/users/{segment(parsed_args.name)}")
        self.warn(f"user {parsed_args.name} deleted")


class IssueToken(ShoalCommand):
    """Issue an API token for a user and print it alone on stdout (shown this once)."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="NAME")
        parser.add_argument("--expires", metavar="DURATION",
                            help="the token stops working after this (e.g. 30d, 12h); "
                                 "default: never")
        return parser

    def take_action(self, parsed_args):
        body = {"expires_in": parsed_args.expires} if parsed_args.expires else {}
        issued = self.client.post(f"/users/{segment(parsed_args.name)}/tokens", body)
        self.app.stdout.write(issued["token"] + "\n")
        until = f", expires {_when(issued['expires_at'])}" if issued["expires_at"] else ""
        self.warn(f"token {issued['id']} for {issued['user']} in tenant {issued['tenant']}"
                  f"{until}; it is not shown again (use it as SHOAL_TOKEN)")


# -- tokens --------------------------------------------------------------------------------------


class ListTokens(ShoalLister):
    """List the tenant's API tokens (never their values) (superadmin)."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("--user", metavar="NAME", help="only this user's")
        return parser

    def take_action(self, parsed_args):
        rows = self.client.get("/tokens", user=parsed_args.user)
        return (("Id", "User", "State", "Created", "Expires"),
                [(t["id"], t["user"], t["state"], _when(t["created_at"]),
                  _when(t["expires_at"]) or "never") for t in rows])


class RevokeToken(ShoalCommand):
    """Revoke API tokens by id, or every token of a user (--user) (superadmin)."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("ids", metavar="ID", nargs="*")
        parser.add_argument("--user", metavar="NAME", help="revoke every token of this user")
        return parser

    def take_action(self, parsed_args):
        ids = list(parsed_args.ids)
        if parsed_args.user:
            ids += [t["id"] for t in self.client.get("/tokens", user=parsed_args.user)
                    if t["state"] == "active"]
        if not ids and not parsed_args.user:
            raise ClientError("name token ids, or --user NAME")
        failed = 0
        for token_id in ids:
            try:
                self.client.delete(f"/tokens/{segment(token_id)}")
                self.warn(f"token {token_id} revoked")
            except ClientError as error:
                failed += 1
                self.warn(f"token {token_id}: {error}")
        if failed:
            raise ClientError(f"{failed} of {len(ids)} tokens could not be revoked")


# -- templates shared with users -----------------------------------------------------------------


class ShareTemplate(ShoalCommand):
    """Let the tenant's users (or one, --user) see and build from a template (admin)."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="TEMPLATE")
        parser.add_argument("--user", metavar="NAME", help="only this user (default: every user)")
        return parser

    def take_action(self, parsed_args):
        body = {"template": parsed_args.name}
        if parsed_args.user:
            body["user"] = parsed_args.user
        self.client.post("/grants", body)
        self.warn(f"template {parsed_args.name} shared with "
                  f"{parsed_args.user or 'every user of the tenant'}")


class UnshareTemplate(ShoalCommand):
    """Stop sharing a template with the tenant's users (or one, --user) (admin)."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="TEMPLATE")
        parser.add_argument("--user", metavar="NAME")
        return parser

    def take_action(self, parsed_args):
        self.client.request("DELETE", f"/grants/{segment(parsed_args.name)}",
                            params={"user": parsed_args.user})
        self.warn(f"template {parsed_args.name} no longer shared with "
                  f"{parsed_args.user or 'every user of the tenant'}")


class ListShares(ShoalLister):
    """List which templates are shared with which users (admin)."""

    def take_action(self, parsed_args):
        return (("Template", "User"), [(g["template"], g["user"] or "*")
                                       for g in self.client.get("/grants")])
