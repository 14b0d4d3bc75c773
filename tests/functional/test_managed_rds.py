"""Managed databases on AWS through the real CLI and server: a template's ``resources`` entry of
type ``aws-rds`` against moto's server mode (RDS and EC2, in this process), reached through the
fault-injecting proxy of tests/aws_fakes.py. Nodes run their services over SSH on a local test
sshd; the databases are only asked about, never connected to (moto's addresses are not ours).

Each test ends by listing the emulator: the database, its security group and every instance
are there while the cluster lives and gone after a delete or a rolled back create.
"""

import json

import pytest

from tests.aws_fakes import (EC2Proxy, authorize_key_pairs, databases, ec2_client, leftovers,
                             moto_server, rds_client)
from tests.cloudkit import kill_server, wait_finished, wait_for
from tests.functional.test_aws_clusters import start

NOTHING = {"instances": [], "security_groups": [], "key_pairs": []}
# The service's config names the database; its CONFIGURE writes what it read into a file per
# node, and its START echoes the password (which the task output must mask).
WRITE_CONFIG = ("import json, os, pathlib, sys; pathlib.Path(sys.argv[1], 'db-' + sys.argv[2])"
                ".write_text(json.loads(os.environ['SHOAL_CONFIG'])['db_url'])")


@pytest.fixture(scope="module")
def moto():
    with moto_server() as url:
        ec2_client(url).describe_images(Owners=["amazon"])  # moto loads its AMIs once (~5 s)
        yield url


@pytest.fixture(scope="module")
def sshd():
    from tests.sshd import SSHHost

    with SSHHost() as host:
        yield host


@pytest.fixture
def proxy(moto, sshd):
    with EC2Proxy(moto) as proxy:
        proxy.on("RunInstances", authorize_key_pairs(moto, f"{sshd.dir}/authorized_keys"))
        yield proxy


@pytest.fixture
def servers():
    started = []
    yield started
    for shoal in started:
        shoal.run("server", "stop", check=False)


def start_with_db(tmp_path, proxy, sshd, servers, **fields):
    shoal = start(tmp_path, proxy, sshd, **fields)
    servers.append(shoal)
    import_webdb(shoal, tmp_path)
    return shoal


def import_webdb(shoal, tmp_path):
    """The template ``webdb``: nodes of provider ``ec2`` running ``app``, whose CONFIGURE writes
    the database ``db`` (aws-rds) it read from its config into ``shoal.marks``."""
    catalog = tmp_path / "catalog-db"
    (catalog / "services").mkdir(parents=True)
    (catalog / "clustertemplates").mkdir()
    (catalog / "services" / "app.json").write_text(json.dumps({
        "name": "app", "provisioner": {"actions": {
            "configure": {"type": "shell", "fields": {"command": [
                "python3", "-c", WRITE_CONFIG, str(shoal.marks), "%ip.self%"]}},
            "start": {"type": "shell", "fields": {"command": [
                "echo", "connecting as %resource.db.user% with %resource.db.password%"]}}}}}))
    (catalog / "clustertemplates" / "webdb.json").write_text(json.dumps({
        "name": "webdb", "defaults": {
            "services": ["app"], "provider": "ec2", "hardwaretype": "small",
            "imagetype": "debian", "config": {
                "db_url": "postgres://%resource.db.user%@%resource.db.endpoint%:"
                          "%resource.db.port%/%resource.db.database%"}},
        "links": [{"label": "db", "url": "postgres://%resource.db.endpoint%:%resource.db.port%"
                                          "/?password=%resource.db.password%"}],
        "resources": {"db": {"type": "aws-rds", "engine": "postgres", "class": "db.t3.micro",
                             "storage_gb": 20}}}))
    shoal.run("catalog", "import", catalog)


def the_password(proxy):
    """The password Shoal generated, as the cloud received it (the test's one way to know it)."""
    sent = [params["MasterUserPassword"] for action, params in proxy.log
            if action == "CreateDBInstance"]
    assert len(set(sent)) == 1, sent
    return sent[0]


def everything(moto, cluster_id):
    return {**leftovers(moto, cluster_id), "databases": databases(moto, cluster_id)}


def test_a_database_is_made_before_the_services_that_read_it(tmp_path, proxy, sshd, servers,
                                                            moto):
    shoal = start_with_db(tmp_path, proxy, sshd, servers)
    proxy.db_pending_polls = 3  # "creating" for a few rounds, as RDS is for minutes
    shoal.run("cluster", "create", "shop", "--template", "webdb", "--size", "2", "--wait")
    cluster = shoal.json("cluster", "show", "shop")
    assert cluster["status"] == "ACTIVE"
    [db] = cluster["resources"]
    identifier = f"shoal-{cluster['id']}-db"
    assert db["name"] == "db" and db["status"] == "ACTIVE" and db["resource_id"] == identifier
    assert db["port"] == 5432 and db["user"] == "shoal" and db["endpoint"]
    # A link may name the database; its password expands to nothing there.
    assert cluster["links"] == [{"label": "db",
                                 "url": f"postgres://{db['endpoint']}:5432/?password="}]
    # Every node's service read the database's address from its config.
    written = {p.name: p.read_text() for p in shoal.marks.glob("db-*")}
    assert len(written) == 2
    assert set(written.values()) == {f"postgres://shoal@{db['endpoint']}:5432/app"}
    assert databases(moto, cluster["id"]) == [identifier]
    assert proxy.calls["CreateDBInstance"] == 1

    # The database admits its port only from the cluster's own security group.
    ec2 = ec2_client(moto)
    instance = rds_client(moto).describe_db_instances(DBInstanceIdentifier=identifier)[
        "DBInstances"][0]
    assert instance["PubliclyAccessible"] is False
    [group_id] = [g["VpcSecurityGroupId"] for g in instance["VpcSecurityGroups"]]
    group = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
    cluster_group = ec2.describe_security_groups(Filters=[
        {"Name": "group-name", "Values": [f"shoal-{cluster['id']}"]}])["SecurityGroups"][0]
    [rule] = group["IpPermissions"]
    assert (rule["FromPort"], rule["ToPort"]) == (5432, 5432)
    assert rule["IpRanges"] == [] and rule.get("Ipv6Ranges", []) == []
    assert [p["GroupId"] for p in rule["UserIdGroupPairs"]] == [cluster_group["GroupId"]]
    nodes = ec2.describe_instances(Filters=[
        {"Name": "tag:shoal:cluster", "Values": [cluster["id"]]}])["Reservations"]
    assert all(cluster_group["GroupId"] in [g["GroupId"] for g in i["SecurityGroups"]]
               for r in nodes for i in r["Instances"])

    # The generated password: given to the cloud and to the service, shown nowhere.
    password = the_password(proxy)
    tasks = shoal.run("task", "list", "shop", "-f", "json").stdout
    outputs = [shoal.run("task", "show", t["ID"] if "ID" in t else t["id"], "-f", "json").stdout
               for t in json.loads(tasks)]
    start_outputs = [o for o in outputs if '"START"' in o]
    assert start_outputs and all("connecting as shoal with ********" in o
                                 for o in start_outputs)
    seen = [tasks, *outputs, shoal.run("cluster", "show", "shop", "-f", "json").stdout,
            shoal.run("cluster", "events", "shop").stdout,
            shoal.run("template", "show", "webdb", "-f", "json").stdout,
            (shoal.home / "server.log").read_text()]
    assert not [text for text in seen if password in text]
    # At rest the password is sealed: not in the store's file in clear.
    assert password.encode() not in (shoal.home / "shoal.db").read_bytes()

    # Delete waits until RDS says the database is gone, then removes its security group.
    proxy.db_delete_polls = 3
    before = proxy.calls["DescribeDBInstances"]
    shoal.run("cluster", "delete", "shop", "--wait")
    assert proxy.calls["DescribeDBInstances"] - before >= 4  # 3 x "deleting", then gone
    deleting = [i for i, (action, _) in enumerate(proxy.log) if action == "DeleteDBInstance"]
    group_gone = [i for i, (action, params) in enumerate(proxy.log)
                  if action == "DeleteSecurityGroup" and params.get("GroupId") == group_id]
    describes = [i for i, (action, _) in enumerate(proxy.log)
                 if action == "DescribeDBInstances" and i > deleting[0]]
    assert group_gone and len([i for i in describes if i < group_gone[0]]) >= 4
    assert everything(moto, cluster["id"]) == {**NOTHING, "databases": []}


def test_a_database_that_fails_rolls_the_whole_create_back(tmp_path, proxy, sshd, servers,
                                                           moto):
    shoal = start_with_db(tmp_path, proxy, sshd, servers)
    proxy.db_failing.add("*")
    result = shoal.run("cluster", "create", "bad", "--template", "webdb", "--size", "2",
                       "--wait", check=False)
    assert result.returncode != 0
    cluster = shoal.json("cluster", "show", "bad")
    cluster_id = cluster["id"]
    assert cluster["status"] == "FAILED" and cluster["operation"]["status"] == "FAILED"
    assert "did not become available" in cluster["operation"]["error"]
    assert [r["status"] for r in cluster["resources"]] == []  # nothing left to show
    # Listed in the emulator: no database, no security group, no instance, no key pair.
    assert everything(moto, cluster_id) == {**NOTHING, "databases": []}
    assert proxy.calls["DeleteDBInstance"] == 1


def test_a_refused_database_create_leaves_no_security_group(tmp_path, proxy, sshd, servers,
                                                            moto):
    shoal = start_with_db(tmp_path, proxy, sshd, servers)
    proxy.fail("CreateDBInstance", 1, code="StorageQuotaExceeded",
               message="The request would exceed the storage quota.")
    result = shoal.run("cluster", "create", "quota", "--template", "webdb", "--size", "1",
                       "--wait", check=False)
    assert result.returncode != 0
    cluster = shoal.json("cluster", "show", "quota")
    assert cluster["status"] == "FAILED" and "StorageQuotaExceeded" in cluster["operation"][
        "error"]
    # The database's own group was made before the refused call: removed by the rollback's
    # DELETE of the database (the one with the database's name), not left to chance.
    deletes = {params.get("GroupId") for action, params in proxy.log
               if action == "DeleteSecurityGroup"}
    assert len(deletes) == 2  # the database's group and the cluster's
    assert everything(moto, cluster["id"]) == {**NOTHING, "databases": []}


def test_the_server_killed_mid_create_makes_one_database(tmp_path, proxy, sshd, servers, moto):
    shoal = start_with_db(tmp_path, proxy, sshd, servers, retries=1)
    proxy.delays["CreateDBInstance"] = 1.5  # made in the emulator, the answer held back
    shoal.run("cluster", "create", "kill", "--template", "webdb", "--size", "1")
    cluster_id = shoal.json("cluster", "show", "kill")["id"]
    wait_for(lambda: databases(moto, cluster_id), "the database to exist")
    kill_server(shoal)
    proxy.delays.clear()
    shoal.run("server", "start")
    cluster = wait_finished(shoal, "kill")
    assert cluster["status"] == "ACTIVE", cluster["operation"]
    assert databases(moto, cluster_id) == [f"shoal-{cluster_id}-db"]
    assert proxy.calls["CreateDBInstance"] == 1  # found by its identifier, not made again
    assert "from an earlier attempt" in (shoal.home / "server.log").read_text()
    assert len(list(shoal.marks.glob("db-*"))) == 1
    shoal.run("cluster", "delete", "kill", "--wait")
    assert everything(moto, cluster_id) == {**NOTHING, "databases": []}


def test_a_bad_resource_entry_is_refused_naming_its_field(tmp_path, proxy, sshd, servers):
    shoal = start(tmp_path, proxy, sshd)
    servers.append(shoal)
    bad = {"name": "bad", "defaults": {"services": ["marker"], "provider": "ec2"},
           "resources": {"DB": {"type": "aws-rds"}}}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    result = shoal.fails("template", "create", path)
    assert "resources.DB" in result.stderr and "lower-case" in result.stderr
    bad["resources"] = {"db": {"type": "aws-rds", "engine": "oracle"}}
    path.write_text(json.dumps(bad))
    shoal.run("template", "create", path)
    result = shoal.fails("cluster", "create", "c1", "--template", "bad", "--size", "1")
    assert "resource 'db'" in result.stderr and "engine" in result.stderr
    bad["resources"] = {"db": {"type": "aws-rds", "engine": "postgres", "storage_gib": 5}}
    path.write_text(json.dumps(bad))
    shoal.run("template", "update", "bad", path)
    result = shoal.fails("cluster", "create", "c1", "--template", "bad", "--size", "1")
    assert "unknown field 'storage_gib'" in result.stderr
    assert shoal.json("cluster", "list") == []


def test_a_create_cancelled_while_the_database_is_made_rolls_it_back(tmp_path, proxy, sshd,
                                                                     servers, moto):
    shoal = start_with_db(tmp_path, proxy, sshd, servers)
    proxy.db_pending_polls = 10 ** 6  # RDS takes its time
    shoal.run("cluster", "create", "slow", "--template", "webdb", "--size", "1")
    cluster_id = shoal.json("cluster", "show", "slow")["id"]
    wait_for(lambda: proxy.calls["DescribeDBInstances"] >= 3, "the database to be polled")
    shoal.run("cluster", "cancel", "slow")
    cluster = wait_finished(shoal, "slow")
    assert cluster["status"] == "FAILED" and cluster["operation"]["status"] == "CANCELLED"
    assert everything(moto, cluster_id) == {**NOTHING, "databases": []}


def test_cluster_check_reports_a_database_deleted_out_of_band(tmp_path, proxy, sshd, servers,
                                                              moto):
    shoal = start_with_db(tmp_path, proxy, sshd, servers)
    shoal.run("cluster", "create", "drift", "--template", "webdb", "--size", "1", "--wait")
    cluster_id = shoal.json("cluster", "show", "drift")["id"]
    identifier = f"shoal-{cluster_id}-db"
    result = shoal.run("cluster", "check", "drift")
    assert f"resource db {identifier}: ok" in result.stdout
    rds_client(moto).delete_db_instance(DBInstanceIdentifier=identifier, SkipFinalSnapshot=True)
    before = proxy.calls["DescribeDBInstances"]
    result = shoal.run("cluster", "check", "drift", check=False)
    assert result.returncode != 0 and "drifted" in result.stderr
    assert f"resource db {identifier}: missing (the cloud no longer has it)" in result.stdout
    assert proxy.calls["DescribeDBInstances"] - before == 1
    # Deleting the cluster copes with the database already gone.
    shoal.run("cluster", "delete", "drift", "--wait")
    assert everything(moto, cluster_id) == {**NOTHING, "databases": []}
