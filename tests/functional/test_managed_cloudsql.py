"""Managed databases on Google Cloud through the real CLI and server: a ``gcp-cloudsql`` resource
beside nodes on the gcp provider, against the fake Compute API (tests/fake_gce.py) and the fake
Cloud SQL Admin API (tests/fake_cloudsql.py), both on loopback with a real service-account key.
"""

import json

import pytest

from tests.cloudkit import kill_server, wait_finished, wait_for
from tests.fake_cloudsql import FakeCloudSQL
from tests.functional.test_gcp_clusters import fake, servers, sshd, start  # noqa: F401

WRITE_CONFIG = ("import json, os, pathlib, sys; pathlib.Path(sys.argv[1], 'db-' + sys.argv[2])"
                ".write_text(json.loads(os.environ['SHOAL_CONFIG'])['db_url'])")


@pytest.fixture
def sql(fake):  # noqa: F811 (the fixture of test_gcp_clusters)
    with FakeCloudSQL(project=fake.project, polls=3, delete_polls=3) as sql:
        yield sql


def start_with_db(tmp_path, fake, sshd, servers, sql, **fields):  # noqa: F811
    shoal = start(tmp_path, fake, sshd, servers, sqladmin_endpoint=sql.url, **fields)
    catalog = tmp_path / "catalog-db"
    (catalog / "services").mkdir(parents=True)
    (catalog / "clustertemplates").mkdir()
    (catalog / "services" / "app.json").write_text(json.dumps({
        "name": "app", "provisioner": {"actions": {
            "configure": {"type": "shell", "fields": {"command": [
                "python3", "-c", WRITE_CONFIG, str(shoal.marks), "%ip.self%"]}},
            "start": {"type": "shell", "fields": {"command": [
                "echo", "password is %resource.db.password%"]}}}}}))
    (catalog / "clustertemplates" / "webdb.json").write_text(json.dumps({
        "name": "webdb", "defaults": {
            "services": ["app"], "provider": "gce", "hardwaretype": "small",
            "imagetype": "debian", "config": {
                "db_url": "postgres://%resource.db.user%@%resource.db.endpoint%:"
                          "%resource.db.port%"}},
        "resources": {"db": {"type": "gcp-cloudsql", "engine": "postgres"}}}))
    shoal.run("catalog", "import", catalog)
    return shoal


def test_a_cloud_sql_database_on_the_cluster_network_only(tmp_path, fake, sshd, servers,  # noqa: F811
                                                           sql):
    shoal = start_with_db(tmp_path, fake, sshd, servers, sql)
    # Someone else's instance in the project: never listed, never touched.
    sql.instance_insert({}, {"name": "billing", "databaseVersion": "MYSQL_8_0",
                             "settings": {"tier": "db-g1-small"}})
    shoal.run("cluster", "create", "shop", "--template", "webdb", "--size", "2", "--wait")
    cluster = shoal.json("cluster", "show", "shop")
    assert cluster["status"] == "ACTIVE"
    [db] = cluster["resources"]
    assert db["status"] == "ACTIVE" and db["endpoint"].startswith("10.20.0.")
    assert db["port"] == 5432 and db["user"] == "postgres"
    written = {p.read_text() for p in shoal.marks.glob("db-*")}
    assert written == {f"postgres://postgres@{db['endpoint']}:5432"}
    [body] = [b for b in sql.inserted if b["name"] != "billing"]
    ip = body["settings"]["ipConfiguration"]
    assert ip["ipv4Enabled"] is False and ip["authorizedNetworks"] == []
    assert ip["privateNetwork"] == f"projects/{fake.project}/global/networks/default"
    assert sql.leftovers() == ["billing", db["resource_id"]]
    assert sql.calls["instances.insert"] == 1
    assert sql.instances["billing"]["_reads"] == 0  # the filter kept it out of every list
    # One list a round for the pending database, not one get per look.
    assert sql.calls["instances.get"] <= 3

    password = body["rootPassword"]
    outputs = [shoal.run("task", "show", t["ID"], "-f", "json").stdout
               for t in shoal.json("task", "list", "shop")]
    assert any("password is ********" in o for o in outputs)
    seen = outputs + [shoal.run("cluster", "show", "shop", "-f", "json").stdout,
                      (shoal.home / "server.log").read_text()]
    assert not [text for text in seen if password in text]

    listed = sql.calls["instances.list"]
    shoal.run("cluster", "delete", "shop", "--wait")
    assert sql.calls["instances.list"] - listed >= 4  # PENDING_DELETE x 3, then gone
    assert sql.leftovers() == ["billing"] and fake.leftovers(cluster["id"]) == {
        "instances": [], "firewalls": []}


def test_a_failed_cloud_sql_database_rolls_back_everything(tmp_path, fake, sshd,  # noqa: F811
                                                           servers, sql):
    shoal = start_with_db(tmp_path, fake, sshd, servers, sql)
    sql.failing.add("*")
    result = shoal.run("cluster", "create", "bad", "--template", "webdb", "--size", "2",
                       "--wait", check=False)
    assert result.returncode != 0
    cluster = shoal.json("cluster", "show", "bad")
    assert cluster["status"] == "FAILED"
    assert "did not become available" in cluster["operation"]["error"]
    assert sql.leftovers() == [] and fake.leftovers(cluster["id"]) == {
        "instances": [], "firewalls": []}


def test_the_server_killed_mid_insert_makes_one_cloud_sql_instance(tmp_path, fake, sshd,  # noqa: F811
                                                                   servers, sql):
    shoal = start_with_db(tmp_path, fake, sshd, servers, sql, retries=1)
    sql.insert_delay = 1.5
    shoal.run("cluster", "create", "kill", "--template", "webdb", "--size", "1")
    wait_for(lambda: sql.leftovers(), "the instance to exist")
    kill_server(shoal)
    sql.insert_delay = 0
    shoal.run("server", "start")
    cluster = wait_finished(shoal, "kill")
    assert cluster["status"] == "ACTIVE", cluster["operation"]
    assert len(sql.leftovers()) == 1 and sql.calls["instances.insert"] == 1
    shoal.run("cluster", "delete", "kill", "--wait")
    assert sql.leftovers() == []
