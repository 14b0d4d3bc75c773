"""Who is asking: a user of a tenant with a role. The local owner (the holder of the token in
SHOAL_HOME) is the superadmin and acts in any tenant."""

import dataclasses

USER = "user"
ADMIN = "admin"
SUPERADMIN = "superadmin"
RANKS = {USER: 1, ADMIN: 2, SUPERADMIN: 3}
ROLES = (ADMIN, USER)  # what ``shoal user create --role`` gives; superadmin is the owner alone
OWNER = "owner"  # the local owner's user name, reserved
DEFAULT_TENANT = "default"


@dataclasses.dataclass(frozen=True)
class Principal:
    user: str
    tenant: str
    role: str
    token_id: str = None

    def at_least(self, role):
        return RANKS[self.role] >= RANKS[role]

    @property
    def sees_all_clusters(self):
        """Admins see every cluster of their tenant; users only the clusters they own."""
        return self.at_least(ADMIN)

    def to_dict(self):
        return {"user": self.user, "tenant": self.tenant, "role": self.role}
