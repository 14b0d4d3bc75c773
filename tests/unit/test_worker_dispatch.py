"""The Celery executor's pieces that need no broker: queues, what a message carries, settings."""

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
