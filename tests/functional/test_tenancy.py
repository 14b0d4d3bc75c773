"""Tenants, users, roles, quotas and leases, through the real ``shoal`` binary and a real server:
every role against every command, cross-tenant reads, revoked and expired tokens, quotas under
concurrent creates, and leases the janitor enforces."""

import concurrent.futures
import json
import pathlib
import sqlite3
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import Shoal

# A catalog whose clusters cost nothing to make: local sandboxes with a service that runs no
# action. 'leased' gives an hour, at most two, an hour per extension.
SHIPPED = pathlib.Path(__file__).resolve().parents[2] / "cluster_server" / "catalog_default"
TINY = {
    **{f"{kind}/{name}.json": json.loads((SHIPPED / kind / f"{name}.json").read_text())
       for kind, name in (("providers", "local"), ("hardwaretypes", "sandbox"),
                          ("imagetypes", "host"))},
    "services/noop.json": {"name": "noop", "description": "does nothing"},
    "clustertemplates/tiny.json": {
        "name": "tiny", "description": "one service that does nothing",
        "defaults": {"services": ["noop"], "provider": "local", "hardwaretype": "sandbox",
                     "imagetype": "host"}},
    "clustertemplates/leased.json": {
        "name": "leased", "description": "tiny, on a lease",
        "defaults": {"services": ["noop"], "provider": "local", "hardwaretype": "sandbox",
                     "imagetype": "host"},
        "administration": {"leaseduration": {"initial": "1h", "max": 7200000, "step": "1h"}}},
    "clustertemplates/private.json": {
        "name": "private", "description": "tiny, never shared with users",
        "defaults": {"services": ["noop"], "provider": "local", "hardwaretype": "sandbox",
                     "imagetype": "host"}},
    "partialtemplates/part.json": {"name": "part", "description": "a partial"},
}


# One entity of every kind that only the default tenant has.
ONLY_DEFAULT = {
    "providers/p-default.json": {"name": "p-default", "providertype": "local"},
    "hardwaretypes/hw-default.json": {"name": "hw-default", "providermap": {}},
    "imagetypes/img-default.json": {"name": "img-default", "providermap": {}},
    "services/svc-default.json": {"name": "svc-default"},
    "clustertemplates/tpl-default.json": {"name": "tpl-default"},
    "partialtemplates/part-default.json": {"name": "part-default"},
}


def write_catalog(root, entities=TINY):
    for relative, body in entities.items():
        path = pathlib.Path(root) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(body))
    return root


def as_user(owner, token):
    """The same home and server, with another token (SHOAL_TOKEN wins over the home's)."""
    client = Shoal(owner.home)
    client.env["SHOAL_TOKEN"] = token
    return client


def http(client, method, path, body=None, tenant=None):
    """(status, JSON) of a raw API call with the client's token."""
    headers = {"Authorization": "Bearer " + (client.env.get("SHOAL_TOKEN") or client.token),
               "Content-Type": "application/json"}
    if tenant:
        headers["X-Shoal-Tenant"] = tenant
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(client.url + "/api/v1" + path, data=data, method=method,
                                     headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


class World:
    def __init__(self, owner, tmp):
        self.owner = owner
        self.tmp = tmp
        self.users = {"owner": owner}

    def __getitem__(self, who):
        return self.users[who]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tenancy")
    owner = Shoal(tmp / "home", default_catalog=True, janitor_interval="0.5",
                  lease_warning="3s")
    owner.run("server", "start")
    catalog = write_catalog(tmp / "catalog")
    owner.run("catalog", "import", catalog)
    owner.run("catalog", "import", write_catalog(tmp / "only-default", ONLY_DEFAULT))
    owner.run("tenant", "create", "acme")
    owner.run("catalog", "import", catalog, "--tenant", "acme")
    world = World(owner, tmp)
    for name, role, tenant in (("ada", "admin", "default"), ("bob", "user", "default"),
                               ("cat", "user", "default"), ("eve", "admin", "acme")):
        owner.run("user", "create", name, "--role", role, "--tenant", tenant)
        token = owner.run("user", "token", name, "--tenant", tenant).stdout
        assert token.count("\n") == 1 and token.startswith("shoal_")  # alone on stdout
        world.users[name] = as_user(owner, token.strip())
    for template in ("tiny", "leased"):
        owner.run("template", "share", template)
    for who in ("owner", "ada", "bob"):
        world[who].run("cluster", "create", f"c-{who}", "--template", "leased", "--size", "1",
                       "--wait")
    owner.run("resource", "upload", "scripts", "s-owner", "-", input="echo hi\n")
    yield world
    for tenant in ("default", "acme"):
        for cluster in owner.json("cluster", "list", "--tenant", tenant):
            owner.run("cluster", "delete", cluster["Name"], "--wait", "--tenant", tenant,
                      check=False)
    owner.run("server", "stop")


OK, FORBIDDEN, HIDDEN = "ok", 403, 404
# command -> what the superadmin (the local owner), a tenant admin and a user get.
TABLE = [
    (("whoami",), OK, OK, OK),
    (("tenant", "list"), OK, FORBIDDEN, FORBIDDEN),
    (("tenant", "show", "acme"), OK, FORBIDDEN, FORBIDDEN),
    (("tenant", "create", "t-{who}"), OK, FORBIDDEN, FORBIDDEN),
    (("tenant", "set", "t-owner", "--max-nodes", "3"), OK, FORBIDDEN, FORBIDDEN),
    (("tenant", "delete", "t-{who}"), OK, FORBIDDEN, FORBIDDEN),
    (("user", "list"), OK, FORBIDDEN, FORBIDDEN),
    (("user", "show", "bob"), OK, FORBIDDEN, FORBIDDEN),
    (("user", "create", "u-{who}", "--role", "user"), OK, FORBIDDEN, FORBIDDEN),
    (("user", "set", "u-owner", "--max-clusters", "2"), OK, FORBIDDEN, FORBIDDEN),
    (("user", "token", "u-owner"), OK, FORBIDDEN, FORBIDDEN),
    (("token", "list"), OK, FORBIDDEN, FORBIDDEN),
    (("token", "revoke", "--user", "u-owner"), OK, FORBIDDEN, FORBIDDEN),
    (("user", "delete", "u-{who}"), OK, FORBIDDEN, FORBIDDEN),
    (("template", "list"), OK, OK, OK),
    (("template", "show", "tiny"), OK, OK, OK),
    (("template", "show", "private"), OK, OK, HIDDEN),
    (("template", "create", "{file}"), OK, OK, FORBIDDEN),
    (("template", "share", "x-{who}", "--user", "cat"), OK, OK, FORBIDDEN),
    (("template", "shares",), OK, OK, FORBIDDEN),
    (("template", "unshare", "x-{who}", "--user", "cat"), OK, OK, FORBIDDEN),
    (("template", "delete", "x-{who}"), OK, OK, FORBIDDEN),
    (("service", "list"), OK, OK, OK),
    (("service", "show", "noop"), OK, OK, OK),
    (("service", "update", "noop", "{service}"), OK, OK, FORBIDDEN),
    (("partial", "show", "part"), OK, OK, OK),
    (("provider", "list"), OK, OK, OK),
    (("catalog", "export"), OK, OK, FORBIDDEN),
    (("catalog", "check"), OK, OK, FORBIDDEN),
    (("catalog", "import", "{catalog}"), OK, OK, FORBIDDEN),
    (("resource", "list"), OK, OK, FORBIDDEN),
    (("resource", "show", "scripts", "s-owner"), OK, OK, FORBIDDEN),
    (("resource", "upload", "scripts", "s-{who}", "{script}"), OK, OK, FORBIDDEN),
    (("cluster", "plan", "--template", "tiny", "--size", "2"), OK, OK, OK),
    (("cluster", "plan", "--template", "private", "--size", "2"), OK, OK, HIDDEN),
    (("cluster", "create", "x-{who}", "--template", "private", "--size", "1", "--wait"), OK, OK,
     HIDDEN),
    (("cluster", "list"), OK, OK, OK),
    (("cluster", "show", "c-bob"), OK, OK, OK),
    (("cluster", "show", "c-ada"), OK, OK, HIDDEN),
    (("cluster", "events", "c-owner"), OK, OK, HIDDEN),
    (("cluster", "health", "c-ada"), OK, OK, HIDDEN),
    (("cluster", "health", "c-bob"), OK, OK, OK),
    (("task", "list", "c-ada"), OK, OK, HIDDEN),
    (("task", "list", "c-bob"), OK, OK, OK),
    (("cluster", "plan", "c-ada", "--operation", "resize", "--size", "2"), OK, OK, HIDDEN),
    (("cluster", "plan", "c-bob", "--operation", "delete"), OK, OK, OK),
    (("cluster", "restart", "c-ada", "--wait"), OK, OK, HIDDEN),
    (("cluster", "restart", "c-bob", "--wait"), OK, OK, OK),
    (("cluster", "extend", "c-owner", "--by", "1h"), OK, OK, HIDDEN),
]


def _expand(args, who, world):
    template = world.tmp / f"x-{who}.json"
    template.write_text(json.dumps({**TINY["clustertemplates/tiny.json"], "name": f"x-{who}"}))
    service = world.tmp / "noop.json"
    service.write_text(json.dumps({"name": "noop", "description": f"updated by {who}"}))
    script = world.tmp / "script.sh"
    script.write_text("echo hi\n")
    values = {"who": who, "file": template, "service": service, "script": script,
              "catalog": world.tmp / "catalog"}
    return [str(arg).format(**values) for arg in args]


@pytest.mark.parametrize("args,owner,admin,user", TABLE, ids=[" ".join(row[0]) for row in TABLE])
def test_every_role_against_every_command(world, args, owner, admin, user):
    for who, expected in (("owner", owner), ("ada", admin), ("bob", user)):
        argv = _expand(args, who, world)
        result = world[who].run(*argv, check=False)
        if argv[:2] == ["cluster", "create"] and result.returncode == 0:
            # A plan, not a real create, is what the row is about: undo it at once.
            world[who].run("cluster", "delete", argv[2], "--wait")
        where = f"shoal {' '.join(argv)} as {who}"
        if expected == OK:
            assert result.returncode == 0, f"{where}: {result.stderr}"
            continue
        assert result.returncode != 0, f"{where} was allowed: {result.stdout}"
        lines = result.stderr.strip().splitlines()
        if len(lines) == 2 and " of 1 " in lines[1]:  # a bulk delete's count follows its error
            lines = lines[:1]
        assert len(lines) == 1 and "Traceback" not in result.stderr, f"{where}: {lines}"
        if expected == FORBIDDEN:
            assert "needs the" in lines[0] and "role" in lines[0], f"{where}: {lines}"
        else:
            assert "not found" in lines[0], f"{where}: {lines}"


def test_the_same_refusals_answer_403_and_404_over_http(world):
    assert http(world["bob"], "GET", "/tenants")[0] == 403
    assert http(world["ada"], "POST", "/users", {"name": "zed", "role": "user"})[0] == 403
    assert http(world["bob"], "GET", "/clusters/c-ada")[0] == 404
    status, body = http(world["bob"], "GET", "/catalog/export")
    assert status == 403 and body["error"]["code"] == "forbidden"


def test_a_user_lists_only_their_clusters_and_shared_templates(world):
    assert [c["Name"] for c in world["bob"].json("cluster", "list")] == ["c-bob"]
    assert {c["Name"] for c in world["ada"].json("cluster", "list")} >= {
        "c-owner", "c-ada", "c-bob"}
    assert {t["Name"] for t in world["bob"].json("template", "list")} == {"tiny", "leased"}
    assert {t["Name"] for t in world["ada"].json("template", "list")} >= {"local-kv", "tiny"}
    # A user operates their own cluster, never another user's.
    cat = world["cat"]
    assert "not found" in cat.fails("cluster", "delete", "c-bob").stderr
    assert "not found" in cat.fails("cluster", "resize", "c-bob", "--size", "2").stderr
    assert "not found" in cat.fails("cluster", "check", "c-bob").stderr
    assert "may create clusters only for themself" in http(
        cat, "POST", "/clusters", {"name": "z", "template": "tiny", "size": 1,
                                   "owner": "bob"})[1]["error"]["message"]


def test_cross_tenant_reads_of_every_entity_kind_answer_404(world):
    owner, eve = world.owner, world["eve"]
    show = owner.json("cluster", "show", "c-owner")
    [task] = owner.json("task", "list", "c-owner")[:1]
    op_id = show["operation"]["id"]
    # eve is an admin of acme: default's entities are not there (acme has its own tiny).
    for relative in ONLY_DEFAULT:
        kind = {"clustertemplates": "template", "partialtemplates": "partial"}.get(
            relative.split("/")[0], relative.split("/")[0][:-1])
        name = pathlib.Path(relative).stem
        owner.run(kind, "show", name)
        assert "not found" in eve.fails(kind, "show", name).stderr
    assert "not found" in eve.fails("resource", "show", "scripts", "s-owner").stderr
    for args in (("cluster", "show", "c-owner"), ("cluster", "events", "c-owner"),
                 ("task", "list", "c-owner"), ("task", "show", task["ID"]),
                 ("cluster", "delete", "c-owner")):
        assert "not found" in eve.fails(*args).stderr
    assert http(eve, "GET", f"/operations/{op_id}")[0] == 404
    # An operation of another tenant's cluster named beside one's own cluster: not found either.
    eve.run("cluster", "create", "c-eve", "--template", "tiny", "--size", "1", "--wait")
    status, tasks = http(eve, "GET", f"/clusters/c-eve/tasks?operation={op_id}")
    assert status == 200 and tasks == []
    # Naming the other tenant answers as a tenant that does not exist: 404, nothing leaks.
    for tenant in ("default", "no-such-tenant"):
        result = eve.fails("cluster", "show", "c-owner", "--tenant", tenant)
        assert f"tenant '{tenant}' not found" in result.stderr
    # Users and tokens are per tenant too (the superadmin looks from acme).
    assert "not found" in owner.fails("user", "show", "bob", "--tenant", "acme").stderr
    token_id = owner.json("token", "list", "--user", "bob")[0]["Id"]
    assert "not found" in owner.fails("token", "revoke", token_id, "--tenant", "acme").stderr
    assert "c-owner" not in {c["Name"] for c in eve.json("cluster", "list")}
    eve.run("cluster", "delete", "c-eve", "--wait")


def test_revoked_and_expired_tokens_answer_401(world):
    owner = world.owner
    owner.run("user", "create", "tim", "--role", "user")
    short = as_user(owner, owner.run("user", "token", "tim", "--expires", "10s").stdout.strip())
    revoked = as_user(owner, owner.run("user", "token", "tim").stdout.strip())
    assert short.json("whoami")["user"] == "tim"
    assert revoked.json("whoami")["user"] == "tim"
    [token_id] = [t["Id"] for t in owner.json("token", "list", "--user", "tim")
                  if t["Expires"] == "never"]
    owner.run("token", "revoke", token_id)
    status, body = http(revoked, "GET", "/whoami")
    assert status == 401 and "revoked" in body["error"]["message"]
    assert "revoked" in revoked.fails("cluster", "list").stderr
    deadline = time.time() + 60
    while http(short, "GET", "/whoami")[0] == 200 and time.time() < deadline:
        time.sleep(0.5)
    status, body = http(short, "GET", "/whoami")
    assert status == 401 and "expired" in body["error"]["message"]
    assert http(as_user(owner, "shoal_not-a-token"), "GET", "/whoami")[0] == 401


def test_tokens_are_not_stored_in_clear(world):
    owner = world.owner
    owner.run("user", "create", "kim", "--role", "user")
    token = owner.run("user", "token", "kim").stdout.strip()
    home = owner.home
    raw = b"".join(path.read_bytes() for path in home.iterdir()
                   if path.name.startswith("shoal.db"))
    assert token.encode() not in raw
    db = sqlite3.connect(home / "shoal.db")
    stored = [row[0] for row in db.execute("SELECT hash FROM tokens WHERE user = 'kim'")]
    db.close()
    assert len(stored) == 1 and token not in stored[0] and len(stored[0]) == 64


def test_fifty_concurrent_creates_never_overshoot_the_quotas(world):
    owner = world.owner
    owner.run("tenant", "set", "acme", "--max-clusters", "6", "--max-nodes", "9")

    def create(number):
        return http(owner, "POST", "/clusters", {"name": f"q{number}", "template": "tiny",
                                                 "size": 1 + number % 2}, tenant="acme")

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(create, range(50)))
    accepted = [n for n, (status, _) in enumerate(answers) if status == 202]
    refused = [body for status, body in answers if status != 202]
    assert all(body["error"]["code"] == "quota_exceeded" for body in refused), refused[:3]
    nodes = sum(1 + n % 2 for n in accepted)
    assert len(accepted) <= 6 and nodes <= 9
    assert len(accepted) >= 4  # the quota, not something else, stopped them
    message = refused[0]["error"]["message"]
    assert "quota max_" in message and "of tenant 'acme'" in message and "in use" in message
    shown = owner.json("tenant", "show", "acme")
    assert shown["clusters"] == len(accepted) and shown["nodes"] == nodes
    for number in accepted:
        owner.run("cluster", "delete", f"q{number}", "--wait", "--tenant", "acme")
    owner.run("tenant", "set", "acme", "--max-clusters", "-1", "--max-nodes", "-1")


def test_a_user_quota_and_a_resize_past_the_quota_are_refused_naming_it(world):
    owner, cat = world.owner, world["cat"]
    owner.run("user", "set", "cat", "--max-clusters", "1", "--max-nodes", "2")
    cat.run("cluster", "create", "c-cat", "--template", "tiny", "--size", "1", "--wait")
    error = cat.fails("cluster", "create", "c-cat2", "--template", "tiny", "--size", "1")
    assert "quota max_clusters of user 'cat' exceeded: limit 1, in use 1" in error.stderr
    error = cat.fails("cluster", "resize", "c-cat", "--size", "3")
    assert "quota max_nodes of user 'cat' exceeded: limit 2, in use 1" in error.stderr
    cat.run("cluster", "resize", "c-cat", "--size", "2", "--wait")
    cat.run("cluster", "delete", "c-cat", "--wait")


def test_a_five_second_lease_is_deleted_on_time_with_a_warning_first(world):
    bob = world["bob"]
    bob.run("cluster", "create", "brief", "--template", "leased", "--size", "1", "--lease", "5s",
            "--wait")
    shown = bob.json("cluster", "show", "brief")
    assert shown["expires_at"] and shown["owner"] == "bob"
    [row] = [c for c in bob.json("cluster", "list") if c["Name"] == "brief"]
    assert row["Expires"] == time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(shown["expires_at"]))
    table = bob.run("cluster", "show", "brief").stdout
    assert row["Expires"] in table
    deadline = time.time() + 120
    while time.time() < deadline:
        if not any(c["Name"] == "brief" for c in bob.json("cluster", "list")):
            break
        time.sleep(0.5)
    gone = [c for c in bob.json("cluster", "list", "--all") if c["Name"] == "brief"]
    assert gone and gone[-1]["Status"] == "DELETED"
    # An ordinary delete, visible in the events: warned first, deleted after the expiry.
    status, body = http(bob, "GET", "/clusters/brief/events")
    assert status == 404  # deleted clusters are not shown
    db = sqlite3.connect(world.owner.home / "shoal.db")
    rows = db.execute("SELECT e.at, e.message, o.kind, c.expires_at FROM events e JOIN clusters c"
                      " ON c.id = e.cluster_id LEFT JOIN operations o ON o.id = e.operation_id"
                      " WHERE c.name = 'brief' ORDER BY e.id").fetchall()
    db.close()
    messages = [r[1] for r in rows]
    warned = [r for r in rows if r[1].startswith("lease expires at")]
    expired = [r for r in rows if r[1].startswith("lease expired at")]
    assert warned and expired and warned[0][0] < expired[0][0], messages
    assert expired[0][0] >= expired[0][3] and expired[0][2] == "delete", messages
    assert "delete succeeded" in messages


def test_an_extension_within_step_and_max_and_past_them(world):
    bob, ada = world["bob"], world["ada"]
    bob.run("cluster", "create", "longer", "--template", "leased", "--size", "1", "--wait")
    error = bob.fails("cluster", "extend", "longer", "--by", "2h")
    assert "at most 1h per extension" in error.stderr
    bob.run("cluster", "extend", "longer", "--by", "1h")
    error = bob.fails("cluster", "extend", "longer", "--by", "1m")
    assert "may not go past 2h from its creation" in error.stderr
    before = bob.json("cluster", "show", "longer")["expires_at"]
    ada.run("cluster", "extend", "longer", "--by", "1h")  # an admin may pass max
    after = bob.json("cluster", "show", "longer")["expires_at"]
    assert after > before
    error = bob.fails("cluster", "create", "greedy", "--template", "leased", "--size", "1",
                      "--lease", "3h")
    assert "longer than the 1h template 'leased' gives" in error.stderr
    bob.run("cluster", "delete", "longer", "--wait")


def test_a_lease_that_ran_out_while_the_server_was_down_is_handled_at_start(tmp_path):
    owner = Shoal(tmp_path / "home", janitor_interval="0.5")
    owner.run("server", "start")
    try:
        owner.run("catalog", "import", write_catalog(tmp_path / "catalog"))
        owner.run("cluster", "create", "sleeper", "--template", "leased", "--size", "1",
                  "--wait")
        owner.run("server", "stop")
        # Time passes while the server is down: the lease ran out an hour ago.
        db = sqlite3.connect(tmp_path / "home" / "shoal.db")
        with db:
            db.execute("UPDATE clusters SET expires_at = ? WHERE name = 'sleeper'",
                       [time.time() - 3600])
        db.close()
        owner.run("server", "start")
        deadline = time.time() + 120
        while time.time() < deadline and owner.json("cluster", "list"):
            time.sleep(0.5)
        [gone] = owner.json("cluster", "list", "--all")
        assert gone["Status"] == "DELETED"
        db = sqlite3.connect(tmp_path / "home" / "shoal.db")
        kinds = [row[0] for row in db.execute(
            "SELECT o.kind FROM events e JOIN operations o ON o.id = e.operation_id"
            " WHERE e.message LIKE 'lease expired at %: deleting the cluster'")]
        db.close()
        assert kinds == ["delete"]
    finally:
        owner.run("server", "stop", check=False)
