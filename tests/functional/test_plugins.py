"""Plugins through the real binary: a third-party package found by its entry points alone, and
clear errors for plugin types that are not installed."""

import json
import pathlib
import re

import pytest
from shoal_testkit import catalog, cloud

from tests.conftest import ROOT, Shoal


@pytest.fixture
def shoal(tmp_path):
    client = Shoal(tmp_path / "home", retries=1, retry_backoff=0.05, poll_base=0.05)
    client.run("server", "start")
    yield client
    client.run("server", "stop")


def _installed(message, kind):
    """The names listed after '<kind> X is not installed (installed: ...)'."""
    found = re.search(rf"{kind} \S+ is not installed \(installed: ([^)]*)\)", message)
    assert found, message
    return [name.strip() for name in found.group(1).split(",")]


def test_testkit_is_found_through_its_entry_points_alone(shoal, tmp_path):
    # Nothing in Shoal names the package: it is found only because it is installed.
    for path in [ROOT / "setup.py", *(ROOT / "cluster_server").rglob("*.py"),
                 *(ROOT / "extensions").rglob("*.py")]:
        assert "testkit" not in path.read_text(), path
    shoal.run("catalog", "import", catalog.write(tmp_path / "cat"))
    shoal.run("cluster", "create", "kit", "--template", "fake-stack", "--size", "2", "--wait")
    cluster = shoal.json("cluster", "show", "kit")
    assert cluster["status"] == "ACTIVE" and cluster["provider"] == "fake"
    assert len(cloud.instances(shoal.home, cluster["id"])) == 2
    assert {e["service"] for e in cloud.automator_log(shoal.home)} == {"base", "db", "app"}


def _import_with_provider(shoal, tmp_path, provider):
    """The testkit catalog plus ``provider``, mapped to the fake provider's hardware and image."""
    root = catalog.write(tmp_path / "cat")
    (root / "providers" / f"{provider['name']}.json").write_text(json.dumps(provider))
    for folder in ("hardwaretypes", "imagetypes"):
        path = next((root / folder).glob("*.json"))
        body = json.loads(path.read_text())
        body["providermap"][provider["name"]] = dict(body["providermap"]["fake"])
        path.write_text(json.dumps(body))
    shoal.run("catalog", "import", root)


def test_unknown_provider_type_fails_before_anything_is_made(shoal, tmp_path):
    _import_with_provider(shoal, tmp_path, {
        "name": "nimbus", "description": "a cloud nobody installed", "providertype": "nimbus",
        "provisioner": {}})
    failed = shoal.fails("cluster", "create", "c1", "--template", "fake-stack", "--size", "2",
                         "--provider", "nimbus")
    assert "provider nimbus is not installed" in failed.stderr
    installed = _installed(failed.stderr, "provider")
    assert {"fake", "local"} <= set(installed) and installed == sorted(installed)
    assert "nimbus" not in installed
    # Validated before anything is written: no cluster, no instance, no task.
    assert shoal.json("cluster", "list") == []
    assert cloud.load(shoal.home)["instances"] == {}


def test_a_provider_field_its_plugin_refuses_fails_before_anything_is_made(shoal, tmp_path):
    _import_with_provider(shoal, tmp_path, {
        "name": "boxes", "providertype": "docker", "provisioner": {
            "ssh_user": "root\n    ProxyCommand id"}})
    failed = shoal.fails("cluster", "create", "c1", "--template", "fake-stack", "--size", "2",
                         "--provider", "boxes")
    assert "provider 'boxes': field 'ssh_user' must be a login name" in failed.stderr
    assert shoal.json("cluster", "list") == []


@pytest.mark.parametrize("fields, message", [
    ({}, "needs exactly one of the fields 'script' and 'command'"),
    ({"script": "../../bin/true"}, "must be a relative path without '..'"),
])
def test_an_action_field_its_automator_refuses_fails_before_anything_is_made(
        shoal, tmp_path, fields, message):
    # It used to be found at the action's task, after every node was made (and rolled back).
    root = catalog.write(tmp_path / "cat")
    path = root / "services" / "app.json"
    body = json.loads(path.read_text())
    body["provisioner"]["actions"]["start"] = {"type": "shell", "fields": fields}
    path.write_text(json.dumps(body))
    shoal.run("catalog", "import", root)
    failed = shoal.fails("cluster", "create", "c1", "--template", "fake-stack", "--size", "2")
    assert "service 'app' action start" in failed.stderr and message in failed.stderr
    assert shoal.json("cluster", "list") == []
    assert cloud.load(shoal.home)["instances"] == {}


def test_unknown_automator_type_names_the_services_that_need_it(shoal, tmp_path):
    root = catalog.write(tmp_path / "cat")
    path = root / "services" / "app.json"
    body = json.loads(path.read_text())
    body["provisioner"]["actions"]["start"]["type"] = "puppet"
    path.write_text(json.dumps(body))
    shoal.run("catalog", "import", root)
    failed = shoal.fails("cluster", "create", "c1", "--template", "fake-stack", "--size", "3")
    assert "automator puppet is not installed" in failed.stderr
    assert "needed by app" in failed.stderr
    assert {"fake", "shell"} <= set(_installed(failed.stderr, "automator"))
    assert shoal.json("cluster", "list") == []
    assert not (shoal.home / cloud.LOG_FILE).exists()


def test_coopr_catalog_plans_but_cannot_run_without_its_plugins(shoal, coopr_catalog):
    shoal.run("catalog", "import", coopr_catalog)
    plan = shoal.json("cluster", "plan", "--template", "hadoop-distributed", "--size", "5", "--full")
    nodes = plan["layout"]["nodes"]
    assert len(nodes) == 5 and plan["layout"]["provider"] == "rackspace"
    placed = [service for node in nodes for service in node["services"]]
    for master in ("hadoop-hdfs-namenode", "hadoop-yarn-resourcemanager", "hbase-master"):
        assert placed.count(master) == 1, master
    assert placed.count("hadoop-hdfs-datanode") >= 1
    assert all("base" in node["services"] for node in nodes)
    assert plan["tasks"], "the plan lists the tasks a create would run"

    failed = shoal.fails("cluster", "create", "hadoop", "--template", "hadoop-distributed",
                         "--size", "5")
    # One message names everything missing: the provider type and the automator type.
    assert "provider rackspace is not installed" in failed.stderr
    assert "automator chef-solo is not installed" in failed.stderr
    assert re.search(r"chef-solo is not installed \(installed: [^)]*\), needed by [^;]*"
                     r"hadoop-hdfs-namenode", failed.stderr), failed.stderr
    assert shoal.json("cluster", "list") == []


def test_unknown_database_type_is_named_by_catalog_check_and_refused(shoal, tmp_path):
    shoal.run("catalog", "import", catalog.write(tmp_path / "cat"))
    template = tmp_path / "with-db.json"
    template.write_text(json.dumps({"name": "with-db", "extends": "fake-stack",
                                    "resources": {"db": {"type": "nimbus-sql"}}}))
    shoal.run("template", "create", template)
    rows = shoal.json("catalog", "check")
    assert any(r["Name"] == "with-db" and "nimbus-sql" in r.values() and
               "resources.db.type" in r.values() for r in rows), rows
    failed = shoal.fails("cluster", "create", "c1", "--template", "with-db", "--size", "2")
    assert "database type nimbus-sql is not installed" in failed.stderr
    assert "needed by resource db" in failed.stderr
    assert {"aws-rds", "gcp-cloudsql"} <= set(_installed(failed.stderr, "database type"))
    assert shoal.json("cluster", "list") == []
