"""The tenancy migration on stores made by earlier releases, and what the store keeps of tokens."""

import pathlib
import shutil
import sqlite3

import pytest

from cluster_server import operations
from cluster_server.app import create_app
from cluster_server.errors import QuotaExceeded
from cluster_server.store import Store
from cluster_server.tenancy import directory, quotas

DATA = pathlib.Path(__file__).parent.parent / "data"


def _home_with(tmp_path, name):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(DATA / f"{name}.db", home / "shoal.db")
    if (DATA / f"{name}.key").exists():
        shutil.copy(DATA / f"{name}.key", home / "store.key")
    return home


@pytest.mark.parametrize("name", ["store-v1", "store-v2"])
def test_a_store_of_an_earlier_release_keeps_its_catalog_and_clusters_in_default(tmp_path, name):
    home = _home_with(tmp_path, name)
    before = sqlite3.connect(home / "shoal.db")
    catalog_before = before.execute("SELECT tenant, kind, name FROM catalog ORDER BY 1, 2, 3"
                                    ).fetchall()
    clusters_before = before.execute("SELECT id, tenant, name, status FROM clusters ORDER BY id"
                                     ).fetchall()
    before.close()
    assert clusters_before and catalog_before
    app = create_app(home=home, token="t", start_engine=False)
    store = app.store
    assert store.db.execute("SELECT tenant, kind, name FROM catalog ORDER BY 1, 2, 3"
                            ).fetchall() == catalog_before
    assert store.db.execute("SELECT id, tenant, name, status FROM clusters ORDER BY id"
                            ).fetchall() == clusters_before
    tenants = [t["name"] for t in directory.list_tenants(store)]
    assert "default" in tenants
    # Every tenant the old rows name became a tenant (store-v2 has a 'side-team' service).
    assert {row[0] for row in catalog_before} <= set(tenants)
    # The old clusters belong to the local owner, never expire, and show through the API.
    client = app.test_client()
    listed = client.get("/api/v1/clusters", headers={"Authorization": "Bearer t"}).get_json()
    assert {c["name"] for c in listed} == {row[2] for row in clusters_before}
    assert {(c["owner"], c["expires_at"]) for c in listed} == {("owner", None)}
    shown = client.get(f"/api/v1/clusters/{listed[0]['name']}",
                       headers={"Authorization": "Bearer t"})
    assert shown.status_code == 200 and shown.get_json()["owner"] == "owner"
    # The old clusters count against a quota set now.
    clusters, nodes = directory.usage(store.db, "default")
    assert clusters == len(clusters_before) and nodes >= clusters


def test_tokens_are_stored_as_hashes_only(tmp_path):
    store = Store(tmp_path / "shoal.db")
    directory.create_user(store, "default", "alice", "user")
    issued = directory.issue_token(store, "default", "alice")
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw = b"".join(path.read_bytes() for path in tmp_path.iterdir() if path.is_file())
    assert issued["token"].encode() not in raw
    assert directory.token_hash(issued["token"]).encode() in raw
    assert directory.principal_for_token(store, issued["token"]).user == "alice"


def test_the_quota_check_names_quota_limit_and_use(tmp_path):
    store = Store(tmp_path / "shoal.db")
    directory.set_quotas(store, "tenants", {"name": "default"}, {"max_nodes": 3})
    with store.write() as db:
        quotas.check(db, "default", "owner", clusters=1, nodes=3)
        with pytest.raises(QuotaExceeded) as caught:
            quotas.check(db, "default", "owner", clusters=1, nodes=4)
    assert caught.value.details == {"quota": "max_nodes", "scope": "tenant", "name": "default",
                                    "limit": 3, "in_use": 0, "requested": 4}
    assert "max_nodes" in caught.value.message and "limit 3" in caught.value.message


def test_a_create_past_the_quota_writes_nothing(tmp_path):
    app = create_app(home=tmp_path, token="t", start_engine=False)
    store = app.store
    directory.set_quotas(store, "tenants", {"name": "default"}, {"max_clusters": 1})
    operations.create(store, "default", {"name": "a", "template": "local-web", "size": 2})
    with pytest.raises(QuotaExceeded, match="max_clusters .* limit 1, in use 1"):
        operations.create(store, "default", {"name": "b", "template": "local-web", "size": 2})
    assert [r[0] for r in store.db.execute("SELECT name FROM clusters")] == ["a"]


def test_every_endpoint_has_a_rule_in_the_policy_table(tmp_path):
    """A new route is closed to all but the superadmin until the table says who may use it;
    this names the routes to decide for."""
    from cluster_server.tenancy.policy import RULES

    app = create_app(home=tmp_path, token="t", start_engine=False, seed=False)
    # The web UI's pages (ui.*) are not API routes: what they show and do goes through the API.
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()
                 if rule.endpoint != "static" and not rule.endpoint.startswith("ui.")}
    assert sorted(endpoints - set(RULES)) == []
    assert sorted(set(RULES) - endpoints) == []


@pytest.mark.parametrize("text,ms", [(0, 0), (5000, 5000), ("5000", 5000), ("5s", 5000),
                                     ("4h", 14_400_000), ("2d", 172_800_000),
                                     ("1h30m", 5_400_000)])
def test_durations_as_coopr_writes_them(text, ms):
    from cluster_server.tenancy.durations import to_ms

    assert to_ms(text) == ms


@pytest.mark.parametrize("text", ["", "h", "-1", "5x", "1.5h", True, None])
def test_a_bad_duration_names_the_field(text):
    from cluster_server.errors import ValidationError
    from cluster_server.tenancy.durations import to_ms

    with pytest.raises(ValidationError, match="^lease: .* is not a duration"):
        to_ms(text, "lease")


def test_lease_terms_initial_step_and_max():
    from cluster_server.errors import Unprocessable
    from cluster_server.tenancy import leases

    template = {"name": "t", "administration": {"leaseduration": {
        "initial": "1h", "max": "3h", "step": 3_600_000}}}
    assert leases.initial_expiry(template, None, 100.0) == 3700.0
    assert leases.initial_expiry(template, "30m", 100.0) == 1900.0
    assert leases.initial_expiry({"name": "u"}, None, 100.0) is None  # 0 = unlimited
    with pytest.raises(Unprocessable, match="longer than the 1h"):
        leases.initial_expiry(template, "2h", 100.0)
    cluster = {"name": "c", "spec": {"template": template}, "created_at": 0.0,
               "expires_at": 3600.0}
    assert leases.extended_expiry(cluster, "1h", now=10.0) == 7200.0
    with pytest.raises(Unprocessable, match="at most 1h per extension"):
        leases.extended_expiry(cluster, "2h", now=10.0)
    with pytest.raises(Unprocessable, match="may not go past 3h"):
        leases.extended_expiry(dict(cluster, expires_at=9000.0), "1h", now=10.0)
    assert leases.extended_expiry(dict(cluster, expires_at=9000.0), "1h", beyond_max=True,
                                  now=10.0) == 12600.0


class Submitted:
    """Stands in for the engine: the janitor only hands it operation ids to run."""

    def __init__(self):
        self.ids = []

    def submit(self, op_id):
        self.ids.append(op_id)


def test_the_janitor_warns_then_deletes_through_a_delete_operation(tmp_path):
    from cluster_server.tenancy.janitor import Janitor

    app = create_app(home=tmp_path, token="t", start_engine=False)
    store = app.store
    created = operations.create(store, "default", {"name": "a", "template": "local-web",
                                                   "size": 2, "lease": "2h"})
    expires = store.db.execute("SELECT expires_at FROM clusters WHERE name = 'a'").fetchone()[0]
    engine = Submitted()
    janitor = Janitor(store, engine, interval=60, warning=3600)
    assert janitor.sweep(now=expires - 7200) == []  # not yet within the hour
    assert janitor.sweep(now=expires - 1800) == []
    janitor.sweep(now=expires - 1700)  # warned once only
    # Busy with its create: the janitor waits for it to end.
    assert janitor.sweep(now=expires + 1) == []
    with store.write() as db:
        db.execute("UPDATE operations SET status = 'SUCCEEDED' WHERE id = ?",
                   [created["operation"]])
        db.execute("UPDATE clusters SET status = 'ACTIVE'")
    [op_id] = janitor.sweep(now=expires + 1)
    assert engine.ids == [op_id]
    kind, status = store.db.execute("SELECT kind, status FROM operations WHERE id = ?",
                                    [op_id]).fetchone()
    assert (kind, status) == ("delete", "RUNNING")
    messages = [row[0] for row in store.db.execute("SELECT message FROM events ORDER BY id")]
    assert len([m for m in messages if m.startswith("lease expires at")]) == 1
    assert messages[-1].startswith("lease expired at") and "deleting" in messages[-1]
    assert janitor.sweep(now=expires + 2) == []  # DELETING: not deleted twice


SAMPLES = {"version": "1", "op_id": "op-000000000000", "task_id": "op-000000000000/n1:CREATE",
           "token_id": "tok-000000000000"}


def test_every_route_refuses_the_roles_below_its_rule_with_403(tmp_path):
    """Every route of the API, not just those the CLI calls: a role below the route's rule
    gets 403 in the one error shape, a role at or above it never does."""
    from cluster_server.contract import params
    from cluster_server.tenancy.policy import RULES
    from cluster_server.tenancy.principal import RANKS

    app = create_app(home=tmp_path, token="t", start_engine=False, seed=False)
    store = app.store
    tokens = {"superadmin": "t"}
    for role in ("admin", "user"):
        directory.create_user(store, "default", f"a-{role}", role)
        tokens[role] = directory.issue_token(store, "default", f"a-{role}")["token"]
    client = app.test_client()
    checked = 0
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.startswith("ui."):
            continue  # the web UI's pages: their data comes through these same routes
        declared = params.path_of(app.view_functions[rule.endpoint])
        values = {arg: (declared.get(arg, {}).get("enum") or [SAMPLES.get(arg, "x")])[0]
                  for arg in rule.arguments}
        path = rule.build(values, append_unknown=False)[1]
        needed = RULES[rule.endpoint][0]
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            for role, token in tokens.items():
                reply = client.open(path, method=method, json={},
                                    headers={"Authorization": f"Bearer {token}"})
                refused = reply.status_code == 403 and \
                    reply.get_json()["error"]["code"] == "forbidden"
                expected = RANKS[role] < RANKS[needed]
                assert refused == expected, (method, path, role, reply.status_code,
                                             reply.get_json())
                checked += 1
    assert checked > 100


def test_quotas_and_durations_past_what_the_store_holds_are_refused(tmp_path):
    app = create_app(home=tmp_path, token="t", start_engine=False, seed=False)
    client = app.test_client()
    headers = {"Authorization": "Bearer t"}
    huge = 367432340772556045462512368353280  # found by the fuzzer: a 500 before
    reply = client.put("/api/v1/tenants/default", json={"max_clusters": huge}, headers=headers)
    assert reply.status_code == 400 and reply.get_json()["error"]["details"]["field"] == \
        "max_clusters"
    directory.create_user(app.store, "default", "alice", "user")
    reply = client.post("/api/v1/users/alice/tokens", json={"expires_in": "99999999999999d"},
                        headers=headers)
    assert reply.status_code == 422 and "century" in reply.get_json()["error"]["message"]


def test_a_principal_is_read_again_by_its_token_id(tmp_path):
    """What a UI session checks on each request: the token behind it, by id."""
    import time

    from cluster_server import tenancy
    from cluster_server.errors import Unauthorized
    from cluster_server.tenancy.principal import Principal

    store = Store(tmp_path / "shoal.db")
    directory.create_user(store, "default", "ann", "admin")
    issued = directory.issue_token(store, "default", "ann")
    first = directory.principal_for_token(store, issued["token"])
    assert tenancy.current(store, first) == first
    directory.update_user(store, "default", "ann", {"role": "user"})
    assert tenancy.current(store, first).role == "user"
    directory.revoke_token(store, "default", issued["id"])
    with pytest.raises(Unauthorized, match="revoked"):
        tenancy.current(store, first)
    brief = directory.issue_token(store, "default", "ann", expires_in_ms=1)
    time.sleep(0.01)
    with pytest.raises(Unauthorized, match="expired"):
        directory.principal_for_token_id(store, brief["id"])
    kept = directory.issue_token(store, "default", "ann")
    directory.delete_user(store, "default", "ann")
    with pytest.raises(Unauthorized, match="gone"):
        directory.principal_for_token_id(store, kept["id"])
    # The owner's session: its tenant must still be there.
    directory.create_tenant(store, "gone-soon")
    owner = Principal(user="owner", tenant="gone-soon", role="superadmin")
    assert tenancy.current(store, owner) == owner
    directory.delete_tenant(store, "gone-soon")
    with pytest.raises(Unauthorized, match="deleted"):
        tenancy.current(store, owner)
