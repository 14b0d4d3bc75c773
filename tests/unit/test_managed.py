"""Managed resources: the template section, the plan, the macros, the sealed password, and the
drift check (against moto's RDS, in this process)."""

import io
import json
import logging
import time

import pytest

from cluster_server import catalog, macros, planner
from cluster_server.errors import ValidationError
from cluster_server.managed import drift, records
from cluster_server.store import Store

SERVICES = {"web": {"provisioner": {"actions": {"install": {"type": "shell"},
                                                "configure": {"type": "shell"},
                                                "remove": {"type": "shell"}}}}}
NODES = [{"id": "n1", "services": ["web"]}, {"id": "n2", "services": ["web"]}]


def test_every_service_waits_for_the_database_and_machines_do_not():
    tasks = {t.id: t for t in planner.plan_change([], NODES, SERVICES, new_resources=["db"])}
    assert tasks["resource.db:create"].depends_on == ()
    assert tasks["resource.db:confirm"].depends_on == ("resource.db:create",)
    assert tasks["n1:create"].depends_on == () and tasks["n1:bootstrap"].depends_on == (
        "n1:confirm",)
    assert "resource.db:confirm" in tasks["*:confirmed"].depends_on
    for node in ("n1", "n2"):
        assert "*:confirmed" in tasks[f"{node}:install:web"].depends_on


def test_a_deleted_database_goes_after_every_service_is_removed():
    tasks = {t.id: t for t in planner.plan_change(NODES, [], SERVICES, old_resources=["db"])}
    assert set(tasks["resource.db:delete"].depends_on) == {"n1:remove:web", "n2:remove:web"}


def test_a_resize_leaves_the_database_alone():
    tasks = planner.plan_change(NODES[:1], NODES, SERVICES, old_resources=["db"],
                                new_resources=["db"])
    assert not [t for t in tasks if t.node_id and t.node_id.startswith("resource.")]


def test_resource_macros_expand_and_a_missing_one_is_named():
    ctx = {"resources": {"db": {"endpoint": "db.example", "port": 5432, "user": "shoal",
                                "password": "pw", "database": "app"}}}
    missing = []
    text = macros.expand("%resource.db.user%@%resource.db.endpoint%:%resource.db.port%/"
                         "%resource.db.database% %resource.cache.endpoint%", ctx, missing)
    assert text == "shoal@db.example:5432/app " and missing == ["cache"]
    with pytest.raises(ValidationError, match="unknown macro 'resource.db.host'"):
        macros.validate("%resource.db.host%")


@pytest.mark.parametrize("resources, field, reason", [
    ({"Db": {"type": "aws-rds"}}, "resources.Db", "lower-case"),
    ({"db": {}}, "resources.db.type", "is required"),
    ({"db": {"type": ""}}, "resources.db.type", "database type"),
    ({"db": {"type": "aws-rds", "engine": ["postgres"]}}, "resources.db.engine", "string"),
    ({"db": "aws-rds"}, "resources.db", "object"),
])
def test_bad_resource_entries_name_their_field(resources, field, reason):
    with pytest.raises(ValidationError) as error:
        catalog.validate("template", {"name": "t", "resources": resources})
    assert error.value.details["field"] == field and reason in error.value.message


def test_the_password_is_sealed_and_masked(tmp_path):
    store = Store(tmp_path / "shoal.db")
    now = time.time()
    with store.write() as db:
        db.execute("INSERT INTO clusters (id, tenant, name, template, provider, status, spec,"
                   " created_at, updated_at) VALUES ('c1', 'default', 'x', 't', 'p', 'ACTIVE',"
                   " ?, ?, ?)", [store.seal({}), now, now])
        records.insert(db, store, "c1", {"db": {"type": "aws-rds"}}, now)
    password = records.password(store, "c1", "db")
    assert len(password) == records.PASSWORD_LENGTH and password.isalnum()
    assert password.encode() not in (tmp_path / "shoal.db").read_bytes()
    assert records.macro_context(store, "c1") == {}  # not up yet: nothing to expand
    records.save(store, "c1", "db", "ACTIVE", resource={"resource_id": "r", "endpoint": "e",
                                                        "port": 5432, "user": "u"})
    assert records.macro_context(store, "c1")["db"]["password"] == password
    assert password not in json.dumps(records.public(store, "c1"))
    assert records.mask(f"pw={password}!", [password]) == "pw=********!"


def test_the_log_masks_every_password_the_process_knows(caplog):
    password = records.new_password()
    logger = logging.getLogger("shoal.test")
    handler = logging.StreamHandler(io.StringIO())
    handler.addFilter(records.LogMask())
    logger.addHandler(handler)
    try:
        logger.warning("connecting with %s", password)
        try:
            raise RuntimeError(f"refused: {password}")
        except RuntimeError:
            logger.exception("it failed")
    finally:
        logger.removeHandler(handler)
    text = handler.stream.getvalue()
    assert password not in text and text.count("********") == 2 and "RuntimeError" in text


def test_drift_reports_a_database_deleted_out_of_band(tmp_path):
    from cluster_server.actions import TaskRunner
    from cluster_server.plugins import DatabaseSpec
    from tests.aws_fakes import CREDENTIALS, moto_server, rds_client

    with moto_server() as url:
        provider = {"name": "ec2", "providertype": "aws", "provisioner": {
            "aws_region": "us-east-1", "endpoint_url": url, "ssh_cidr": "127.0.0.1/32",
            "api_user": CREDENTIALS["aws_access_key_id"],
            "api_password": CREDENTIALS["aws_secret_access_key"]}}
        store = Store(tmp_path / "shoal.db")
        now = time.time()
        clusters = []
        for cluster_id in ("c-1", "c-2"):
            with store.write() as db:
                db.execute("INSERT INTO clusters (id, tenant, name, template, provider, status,"
                           " spec, created_at, updated_at) VALUES (?, 'default', ?, 't', 'ec2',"
                           " 'ACTIVE', ?, ?, ?)", [cluster_id, cluster_id,
                                                   store.seal({"provider": provider}), now, now])
                records.insert(db, store, cluster_id, {"db": {"type": "aws-rds"}}, now)
            clusters.append({"id": cluster_id, "spec": {"provider": provider}})
        runner = TaskRunner(store, tmp_path)
        plugin = runner.managed.plugin(clusters[0], "aws-rds")
        for cluster in clusters:
            info = plugin.create(DatabaseSpec(
                cluster_id=cluster["id"], name="db", user="", password="Secret0123456789",
                token=f"{cluster['id']}-db", fields={"engine": "postgres", "class": "db.t3.micro",
                                                    "storage_gb": 20, "user": "shoal",
                                                    "database": "app"}))
            records.save(store, cluster["id"], "db", "ACTIVE", resource=info.to_dict())
        rds_client(url).delete_db_instance(DBInstanceIdentifier="shoal-c-1-db",
                                           SkipFinalSnapshot=True)
        before = plugin.calls["describe_db_instances"]
        report = drift.check(store, runner, clusters)
        assert plugin.calls["describe_db_instances"] - before == 1  # both clusters, one call
        assert [(r["resource"], r["state"]) for r in report["c-1"]] == [("db", "missing")]
        assert [(r["resource"], r["state"]) for r in report["c-2"]] == [("db", "ok")]
