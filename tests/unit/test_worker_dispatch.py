"""The Celery executor's pieces that need no broker: queues, what a message carries, settings."""

import json

import pytest

from cluster_server.engine import settings_from_env
from cluster_server.errors import ValidationError
from cluster_server.executor import Executor, ThreadDispatch
from cluster_server.plugins import Field
from cluster_server.workers import queue_for
from cluster_server.workers.client import call_name, message_calls
from cluster_server.workers.dispatch import POLLER, _value, public_entry
from cluster_server.workers.worker import Calls


def test_a_tenant_has_its_queue_and_a_listed_provider_one_of_its_own():
    assert queue_for("default") == "shoal.default"
    assert queue_for("acme", "ec2") == "shoal.acme"
    assert queue_for("acme", "lab", ("lab",)) == "shoal.acme.lab"
    assert queue_for(None) == "shoal.default"


def test_a_message_carries_no_sensitive_field():
    class Cloud:
        fields = {"api_user": Field(sensitive=True), "api_password": Field(sensitive=True),
                  "region": Field()}

    entry = {"name": "ec2", "providertype": "aws", "description": "x",
             "provisioner": {"api_user": "AKIA", "api_password": "s3cret", "region": "eu"}}
    public = public_entry(entry, Cloud)
    assert public == {"name": "ec2", "providertype": "aws", "provisioner": {"region": "eu"},
                      "withheld": ["api_password", "api_user"]}
    assert "s3cret" not in str(public) and "AKIA" not in str(public)


def test_a_worker_without_the_credentials_says_so(tmp_path):
    from cluster_server.workers.worker import outcome

    entry = {"name": "ec2", "providertype": "no-such", "provisioner": {},
             "withheld": ["api_password", "api_user"]}
    failed = outcome(Calls(tmp_path), {"provider": entry, "method": "create", "args": {}}, "w9")
    assert "its api_password, api_user stay on the server" in failed["message"]
    assert "own environment" in failed["message"]


def test_a_workers_error_is_raised_again_on_the_server_with_the_workers_name():
    from cluster_server.errors import PluginError, ProviderError

    with pytest.raises(ProviderError, match=r"quota exceeded \(on worker w1@lab\)"):
        _value({"ok": False, "error": "ProviderError", "message": "quota exceeded",
                "worker": "w1@lab"}, "create")
    with pytest.raises(PluginError):  # a missing plugin is not retried, there as here
        _value({"ok": False, "error": "PluginError", "message": "provider x is not installed"},
               "create")
    assert _value({"ok": True, "value": {"a": 1}}, "describe") == {"a": 1}
    assert POLLER == "server (poller)"


def test_a_call_id_names_its_task():
    assert call_name("op-0123456789ab/n1:create@2.0") == "op-0123456789ab/n1:create"
    assert call_name("describe-abc") == "describe-abc"


def test_a_message_in_a_workers_hands_names_its_calls():
    running = {"id": "calls-9f", "args": '["op-0123456789ab/n1:create@1.0", "describe-x"]'}
    assert message_calls(running) == ["op-0123456789ab/n1:create@1.0", "describe-x"]
    assert message_calls({"id": "old-style", "args": "(call)"}) == ["old-style"]


def test_a_worker_makes_the_call_its_message_names(tmp_path):
    from cluster_server.workers.worker import outcome

    calls = Calls(tmp_path)
    entry = {"name": "nowhere", "providertype": "no-such-provider", "provisioner": {}}
    failed = outcome(calls, {"provider": entry, "method": "find",
                             "args": {"cluster_id": "c1"}}, "w1")
    assert failed["ok"] is False and failed["error"] == "PluginError"
    assert "not installed" in failed["message"] and failed["worker"] == "w1"
    assert outcome(calls, {"method": "noop", "args": {}}, "w1") == {
        "ok": True, "value": None, "worker": "w1"}


@pytest.mark.parametrize("env, message", [
    ({"SHOAL_EXECUTOR": "dask"}, "SHOAL_EXECUTOR must be one of threads, celery"),
    ({"SHOAL_EXECUTOR": "celery"}, "the celery executor needs a broker"),
])
def test_executor_settings_are_checked(monkeypatch, env, message):
    for key in ("SHOAL_EXECUTOR", "SHOAL_BROKER"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match=message):
        settings_from_env()


def test_a_broker_that_is_not_redis_is_refused():
    from cluster_server.workers.app import make_app

    with pytest.raises(ValidationError, match="must be a Redis URL"):
        make_app("amqp://guest@localhost//")


def test_the_threads_dispatch_gives_the_runner_itself(tmp_path):
    from cluster_server.store import Store

    runner = object()
    executor = Executor(Store(tmp_path / "s.db"), runner, dispatch=ThreadDispatch(1))
    assert executor.runner is runner


def test_an_uploaded_script_an_action_names_goes_with_its_message(tmp_path):
    import os

    from cluster_server.errors import NotFound
    from cluster_server.resources import FileResourceStore
    from cluster_server.store import Store
    from cluster_server.workers.dispatch import RemoteRunner
    from cluster_server.workers.worker import ShippedScripts

    store = Store(tmp_path / "shoal.db")
    resources = FileResourceStore(store, tmp_path)
    resources.upload("scripts", "hello.sh", b"#!/bin/sh\necho hello\n")
    resources.activate("scripts", "hello.sh", 1)
    runner = RemoteRunner(store, tmp_path, None, resources, client=None)
    shipped = runner.scripts("default", {"script": "hello.sh", "args": "x", "n": 3})
    assert [s["name"] for s in shipped] == ["hello.sh"]  # "x" names no uploaded script

    worker_home = tmp_path / "worker"
    scripts = ShippedScripts(worker_home, shipped)
    path = scripts.path("scripts", "hello.sh")
    assert open(path, "rb").read() == b"#!/bin/sh\necho hello\n"
    assert os.stat(path).st_mode & 0o777 == 0o600
    with pytest.raises(NotFound):
        scripts.path("scripts", "other.sh")


class LoopbackClient:
    """The broker's part played in this process: a call sent is made at once by a worker's own
    ``Calls`` (its plugins, its environment's credentials), and the message is kept to look at
    as it travelled (JSON)."""

    def __init__(self, worker_home):
        self.calls = Calls(worker_home)
        self.sent = []  # (queue, message)

    def send(self, call_id, message, queue, on_start=None, expires=None, fresh=False):
        from cluster_server.workers.worker import outcome

        message = json.loads(json.dumps(message))
        self.sent.append((queue, message))
        return outcome(self.calls, message, "loop@test")

    def wait(self, pending, cancelled=None, timeout=None, paused=None):
        return pending

    def forget(self, pending):
        pass


def test_a_managed_databases_calls_go_to_a_worker_and_only_the_create_has_the_password(
        tmp_path, monkeypatch):
    """A database's CREATE, CONFIRM and DELETE under the Celery runner, against moto's RDS:
    every plugin call is a message that a worker makes with its own credentials (the entry's
    are withheld); the poller stays here and sends one describe a round."""
    import time

    from cluster_server.managed import records
    from cluster_server.poller import Poller
    from cluster_server.store import Store
    from cluster_server.workers.dispatch import RemoteDatabase, RemoteRunner
    from tests.aws_fakes import CREDENTIALS, databases, moto_server

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CREDENTIALS["aws_secret_access_key"])
    with moto_server() as url:
        provider = {"name": "ec2", "providertype": "aws", "provisioner": {
            "aws_region": "us-east-1", "endpoint_url": url, "ssh_cidr": "127.0.0.1/32",
            "api_user": "AKIDSERVERONLY", "api_password": "server-only-secret"}}
        spec = {"provider": provider, "resources": {"db": {"type": "aws-rds",
                                                           "engine": "postgres"}}}
        store = Store(tmp_path / "shoal.db")
        now = time.time()
        with store.write() as db:
            db.execute("INSERT INTO clusters (id, tenant, name, template, provider, status, spec,"
                       " created_at, updated_at) VALUES ('c-1', 'default', 'shop', 't', 'ec2',"
                       " 'ACTIVE', ?, ?, ?)", [store.seal(spec), now, now])
            records.insert(db, store, "c-1", spec["resources"], now)
        client = LoopbackClient(tmp_path / "worker")
        runner = RemoteRunner(store, tmp_path / "server", Poller(base=0.05), None, client)
        operation = {"id": "op-1", "cluster_id": "c-1"}

        def run(action):
            outcome = runner.run({"id": f"op-1/resource.db:{action.lower()}", "action": action,
                                  "node_id": "resource.db", "attempts": 0}, operation)
            outcome = outcome.result(60) if hasattr(outcome, "result") else outcome
            assert outcome.ok, outcome.output
            return outcome

        run("CREATE")
        run("CONFIRM")
        assert records.row(store, "c-1", "db")["status"] == "ACTIVE"
        assert databases(url, "c-1") == ["shoal-c-1-db"]
        assert isinstance(runner.managed.plugin(runner.cluster("c-1"), "aws-rds"), RemoteDatabase)
        run("DELETE")
        assert records.row(store, "c-1", "db")["status"] == "DELETED"
        assert databases(url, "c-1") == []

    methods = [message["method"] for _, message in client.sent]
    assert methods[0] == "database.create" and methods[-1] == "database.release"
    assert {"database.describe", "database.delete"} <= set(methods)
    assert all(m.startswith("database.") for m in methods), methods
    assert {queue for queue, _ in client.sent} == {"shoal.default"}
    for _, message in client.sent:
        assert message["args"]["type"] == "aws-rds"
        assert message["provider"]["withheld"] == ["api_password", "api_user"]
        assert "server-only-secret" not in json.dumps(message)
    # The generated password goes in the create's message, to be given to RDS, and no other.
    password = records.password(store, "c-1", "db")
    assert [m["method"] for _, m in client.sent if password in json.dumps(m)] == [
        "database.create"]


def test_a_database_call_a_worker_cannot_make_fails_on_the_server_saying_why(tmp_path):
    from cluster_server.errors import PluginError
    from cluster_server.store import Store
    from cluster_server.workers.dispatch import RemoteDatabase, RemoteProvider, RemoteRunner

    runner = RemoteRunner(Store(tmp_path / "shoal.db"), tmp_path, None, None,
                          LoopbackClient(tmp_path / "worker"))
    entry = {"name": "ec2", "providertype": "no-such", "provisioner": {},
             "withheld": ["api_password"]}
    database = RemoteDatabase(runner, "aws-rds", RemoteProvider(runner, entry, "shoal.default"))
    with pytest.raises(PluginError, match=r"provider no-such is not installed.*api_password "
                                          r"stay on the server.*\(on worker loop@test\)"):
        database.find("c-1")
