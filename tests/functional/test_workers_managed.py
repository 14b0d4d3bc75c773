"""A managed database under the Celery executor: a real Redis, a real server started with the
celery executor and a real ``shoal worker start`` process, against moto's RDS and EC2 behind the
proxy of tests/aws_fakes.py (nodes run their services over SSH on a local test sshd).

The server's provider entry holds credentials of its own, which a message never carries (they
are sensitive); the worker has other ones in its environment. The proxy sees which key signed
every call: a call the server made itself would be signed with the server's.
"""

import getpass

from tests.aws_fakes import CREDENTIALS
from tests.brokers import Worker
from tests.cloudkit import cloud_env, isolate, write_catalog
from tests.conftest import Shoal
from tests.functional.test_managed_rds import (  # noqa: F401 (fixtures)
    NOTHING, everything, import_webdb, moto, proxy, sshd, the_password)
from tests.functional.test_workers import setup  # noqa: F401

SERVER_KEY = {"api_user": "AKIDSERVERONLY", "api_password": "server-only-secret"}


def start(setup, proxy, sshd):  # noqa: F811
    shoal = Shoal(setup.tmp / "home", retries=1, retry_backoff=0.05, poll_base=0.05,
                  executor="celery", broker=setup.redis.url)
    isolate(shoal, setup.tmp)
    shoal.run("server", "start")
    setup.servers.append(shoal)
    shoal.marks = setup.tmp / "marks"
    shoal.marks.mkdir()
    provider = {"aws_region": "us-east-1", "endpoint_url": proxy.url,
                "ssh_cidr": "127.0.0.1/32", "ssh_address_override": f"{sshd.address}:{sshd.port}",
                "workdir": str(setup.tmp / "work"), **SERVER_KEY}
    write_catalog(setup.tmp / "catalog", "ec2", "aws", provider,
                  {"flavor": "t3.micro", "cost": "0.01"},
                  {"image": "ami-12345678", "sshuser": getpass.getuser()}, shoal.marks)
    shoal.run("catalog", "import", setup.tmp / "catalog")
    import_webdb(shoal, setup.tmp)
    return shoal


def test_a_database_is_made_and_deleted_by_a_worker_with_its_own_credentials(
        setup, proxy, sshd, moto):  # noqa: F811
    shoal = start(setup, proxy, sshd)
    worker = Worker(setup.tmp, setup.redis.url, "w1@test", env={
        "SHOAL_HOME": str(setup.cloud), **cloud_env(setup.tmp / "worker-env"),
        "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"]})
    setup.workers.append(worker)
    proxy.db_pending_polls = 3  # "creating" for a few polling rounds
    shoal.run("cluster", "create", "shop", "--template", "webdb", "--size", "2", "--wait")
    cluster = shoal.json("cluster", "show", "shop")
    assert cluster["status"] == "ACTIVE"
    [db] = cluster["resources"]
    assert (db["status"], db["resource_id"]) == ("ACTIVE", f"shoal-{cluster['id']}-db")
    written = {p.read_text() for p in shoal.marks.glob("db-*")}
    assert written == {f"postgres://shoal@{db['endpoint']}:5432/app"}

    # The database's CREATE ran on the worker; its CONFIRM on the server's poller, whose
    # describes (one a round, all "creating" but the last) went to the worker too.
    ran = {(t["Node"], t["Action"]): t["Worker"] for t in shoal.json("task", "list", "shop")}
    assert ran[("resource.db", "CREATE")] == worker.name
    assert ran[("resource.db", "CONFIRM")] == "server (poller)"
    assert proxy.calls["CreateDBInstance"] == 1 and proxy.calls["DescribeDBInstances"] >= 4

    # The delete: the worker deletes it, the poller waits until it is gone, then the worker
    # removes its security group.
    proxy.db_delete_polls = 2
    op_id = shoal.run("cluster", "delete", "shop", "--wait").stdout.strip()
    assert everything(moto, cluster["id"]) == {**NOTHING, "databases": []}
    deleted = shoal.json("task", "show", f"{op_id}/resource.db:delete")
    assert (deleted["status"], deleted["worker"]) == ("SUCCEEDED", worker.name)
    assert proxy.calls["DeleteDBInstance"] == 1

    # Every call the cloud saw, nodes' and database's alike, was signed with the worker's key:
    # the server, which has a working key of its own, made none.
    assert set(proxy.keys) == {CREDENTIALS["aws_access_key_id"]}, proxy.keys
    # The password went to the worker in the create's message, and to RDS; no log has it.
    password = the_password(proxy)
    assert password not in (shoal.home / "server.log").read_text()
    assert password not in worker.log_path.read_text()
    assert SERVER_KEY["api_password"] not in worker.log_path.read_text()
