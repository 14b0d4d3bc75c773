"""The Celery dispatch: the executor's work stays on the server's threads, its plugin calls go to
workers.

``CeleryDispatch`` is a ThreadDispatch (the executor's own bookkeeping runs on the server) whose
``bind`` gives the executor a ``RemoteRunner``: the same TaskRunner, reading and writing the
store as on threads, whose providers, automators and managed databases (RDS, Cloud SQL) are
proxies that send each call to a worker and wait for its outcome. So planner, executor, engine,
store and API are the same either way.

CONFIRM stays on the server, for nodes and databases alike: its batched poller (one thread per
provider, one ``describe`` per round for every node waiting) asks a worker for that one describe
call per round. Moving the poller into workers would make one poller per worker process, and
with a CONFIRM holding a worker slot per node, one describe per node per round.
"""

import base64
import hashlib
import json
import logging
import threading
import time

from cluster_server import plugins
from cluster_server.actions import TaskRunner
from cluster_server.errors import (AutomatorError, PluginError, ProviderError, ShoalError,
                                   TransportError, WorkerError)
from cluster_server.executor import NotStarted, ThreadDispatch
from cluster_server.managed import tasks as managed_tasks
from cluster_server.plugins import ActionResult, DatabaseInfo, NodeInfo
from cluster_server.poller import Cancelled
from cluster_server.workers import queue_for
from cluster_server.workers.client import WorkerClient

LOG = logging.getLogger("shoal.workers")
ERRORS = {cls.__name__: cls for cls in (ShoalError, PluginError, ProviderError, AutomatorError,
                                        TransportError, WorkerError)}
POLL_EXPIRES = 60  # seconds a describe waits in the queue before it is dropped (a newer comes)
POLL_TIMEOUT = 120  # seconds the poller waits for a describe before it tries again
POLLER = "server (poller)"  # the worker column of a CONFIRM: the server's poller confirmed it
# Calls off any task's thread that are waited for as long as they take (a replacement, a
# database's release once it is gone); any other is a look, dropped when no worker answers.
WAITED = ("create", "delete", "database.create", "database.delete", "database.release")


def provider_queues():
    import os

    return tuple(p.strip() for p in os.environ.get("SHOAL_PROVIDER_QUEUES", "").split(",")
                 if p.strip())


class CeleryDispatch(ThreadDispatch):
    def __init__(self, workers, broker):
        super().__init__(workers)
        self.client = WorkerClient(broker)

    def bind(self, runner):
        return RemoteRunner(runner.store, runner.home, runner.poller, runner.resources,
                            self.client)

    def known_workers(self):
        """The workers the broker knows (``self.workers`` is the thread count)."""
        return self.client.workers()

    def shutdown(self):
        super().shutdown()
        self.client.stop()


class Notes:
    """The queue and worker of each task, written in batches off the tasks' path."""

    def __init__(self, store):
        self.store = store
        self.lock = threading.Lock()
        self.rows = []  # (queue or None, worker or None, task id)
        self.wake = threading.Event()
        threading.Thread(target=self._loop, daemon=True, name="shoal-task-notes").start()

    def queued(self, task_id, queue):
        self._add(("queued", queue, task_id))

    def started(self, task_id, worker):
        self._add(("started", worker, task_id))

    def _add(self, row):
        with self.lock:
            self.rows.append(row)
        self.wake.set()

    def _loop(self):
        while True:
            self.wake.wait()
            time.sleep(0.05)
            self.wake.clear()
            with self.lock:
                rows, self.rows = self.rows, []
            queued = [(value, task_id) for kind, value, task_id in rows if kind == "queued"]
            started = [(value, task_id) for kind, value, task_id in rows if kind == "started"]
            try:
                # Two statements for the batch, not one per row (see Executor._record: each
                # statement step gives the interpreter up to the task threads).
                with self.store.write() as db:
                    if queued:
                        db.execute("UPDATE tasks SET queue = json_extract(r.value, '$[0]'),"
                                   " worker = NULL FROM json_each(?) AS r"
                                   " WHERE tasks.id = json_extract(r.value, '$[1]')",
                                   [json.dumps(queued)])
                    if started:
                        db.execute("UPDATE tasks SET worker = json_extract(r.value, '$[0]')"
                                   " FROM json_each(?) AS r"
                                   " WHERE tasks.id = json_extract(r.value, '$[1]')",
                                   [json.dumps(started)])
            except Exception:  # noqa: BLE001 (a note lost is a column left blank)
                LOG.exception("could not note the workers of %d tasks", len(rows))


class _Current(threading.local):
    task = None  # the task whose call this thread makes
    operation = None
    calls = 0


class RemoteRunner(TaskRunner):
    """A TaskRunner whose plugin calls run on Celery workers."""

    def __init__(self, store, home, poller, resources, client):
        super().__init__(store, home, poller, resources)
        self.client = client
        self.current = _Current()
        self.notes = Notes(store)
        self.queues = provider_queues()
        self.consumed = {}  # operation id -> call ids read (removed from Redis at the end)
        self.consumed_lock = threading.Lock()

    def run(self, task, operation):
        current = self.current
        current.task, current.operation, current.calls = task, operation, 0
        try:
            outcome = super().run(task, operation)
        finally:
            current.task = current.operation = None
        if task["action"] == "CONFIRM":
            self.notes.started(task["id"], POLLER)
        return outcome

    def run_ended(self, operation_id):
        """The executor recorded every outcome of the run: its calls' results can go."""
        with self.consumed_lock:
            calls = self.consumed.pop(operation_id, [])
        self.client.consumed(calls)

    def provider(self, cluster):
        with self.lock:
            provider = self.providers.get(cluster["id"])
            if provider is None:
                entry = cluster["spec"]["provider"]
                cls = plugins.plugin_class(plugins.PROVIDER_NAMESPACE, entry["providertype"])
                # Checked here as on threads: a bad entry fails before anything is sent.
                plugins.validate_fields("provider", entry["name"], cls.fields,
                                        entry.get("provisioner", {}))
                queue = queue_for(cluster.get("tenant"), entry["name"], self.queues)
                provider = self.providers[cluster["id"]] = RemoteProvider(
                    self, public_entry(entry, cls), queue)
            return provider

    def automator(self, kind, tenant="default"):
        cls = plugins.plugin_class(plugins.AUTOMATOR_NAMESPACE, kind)  # missing: same error
        return RemoteAutomator(self, kind, tenant, cls.needs_nodes)

    def database(self, cluster, entry_type):
        # Not installed here: the same error as on threads, before anything is sent. Its calls
        # go where the provider's do: the same queue, the same entry without its secrets.
        managed_tasks.plugin_class(entry_type)
        return RemoteDatabase(self, entry_type, self.provider(cluster))

    def scripts(self, tenant, fields):
        """The active plugin-resource scripts that the action's fields name (a shell action's
        ``script``), to go with the message: a worker has no store to read them from."""
        if self.resources is None:
            return []
        resources = self.resources.for_tenant(tenant)
        shipped = []
        for value in fields.values():
            if not isinstance(value, str) or not value or "/" in value or \
                    any(s["name"] == value for s in shipped):
                continue
            try:
                with open(resources.path("scripts", value), "rb") as f:
                    data = f.read()
            except (ShoalError, LookupError, OSError):
                continue  # not an uploaded script: the worker looks where threads would
            shipped.append({"name": value, "sha256": hashlib.sha256(data).hexdigest(),
                            "data": base64.b64encode(data).decode()})
        return shipped

    def forget_transport(self, cluster_id, node_id):
        with self.lock:
            self.transports.pop((cluster_id, node_id), None)

    # -- one call ------------------------------------------------------------------------------

    def call(self, provider, method, args):
        """Send ``method`` to a worker of the provider's queue and wait for its value."""
        current = self.current
        task = current.task
        if task is None:
            # Off any task's thread: a poll, a replacement, a database's release, a health
            # check or a drift look-up. No store row to note, a fresh id. A look (describe,
            # find, a check's command) that no worker answers is dropped and asked again at its
            # next round; a replacement's create or delete and a release are waited for, as on
            # threads.
            import uuid

            call_id = f"{method}-{uuid.uuid4().hex}"
            look = method not in WAITED
            pending = self.client.send(call_id, _message(provider, method, args), provider.queue,
                                       expires=POLL_EXPIRES if look else None, fresh=True)
            outcome = self.client.wait(pending, timeout=POLL_TIMEOUT if look else None)
            self.client.forget(pending)
            return _value(outcome, method)
        # The call's id is fixed by the task and its attempt: a restarted server finds the
        # outcome that came while it was down, or waits for the call that is still running.
        call_id = f"{task['id']}@{task['attempts'] + 1}.{current.calls}"
        current.calls += 1
        operation = current.operation
        self.notes.queued(task["id"], provider.queue)
        pending = self.client.send(call_id, _message(provider, method, args), provider.queue,
                                   on_start=lambda worker: self.notes.started(task["id"], worker))
        # A cancel or a pause withdraws what no worker took yet; never during a rollback (whose
        # tasks run while the operation counts as cancelled) and never a call a worker has
        # begun. A paused task's call is sent again, with a new id, when the operation resumes.
        rollback = "/rollback:" in task["id"]
        cancelled = None if rollback else operation.get("cancelled")
        paused = None if rollback else operation.get("paused")
        outcome = self.client.wait(pending, cancelled=cancelled, paused=paused)
        if outcome is None:
            if cancelled is not None and cancelled():
                raise Cancelled()
            raise NotStarted()
        with self.consumed_lock:
            self.consumed.setdefault(operation["id"], []).append(call_id)
        return _value(outcome, method)


def public_entry(entry, cls):
    """The provider entry a message carries: its sensitive fields left out (a worker has its
    own credentials, from its environment or the cloud's standard places)."""
    secret = {name for name, field in cls.fields.items() if field.sensitive}
    given = entry.get("provisioner") or {}
    fields = {k: v for k, v in given.items() if k not in secret}
    # Named, not sent: a worker that fails says which credentials it had to find itself.
    withheld = sorted(k for k in given if k in secret and given[k] not in (None, ""))
    return {"name": entry["name"], "providertype": entry["providertype"],
            "provisioner": fields, "withheld": withheld}


def _message(provider, method, args):
    return {"provider": provider.entry, "method": method, "args": args}


def _value(outcome, method):
    if outcome.get("ok"):
        return outcome.get("value")
    cls = ERRORS.get(outcome.get("error"), ShoalError)
    where = f" (on worker {outcome['worker']})" if outcome.get("worker") else ""
    raise cls(f"{outcome.get('message', 'failed')}{where}", outcome.get("details") or {})


class RemoteProvider:
    """A provider whose every call is made by a worker serving ``queue``."""

    def __init__(self, runner, entry, queue):
        self.runner = runner
        self.entry = entry
        self.name = entry["name"]
        self.queue = queue

    def create(self, spec):
        import dataclasses

        return NodeInfo.from_dict(self.runner.call(self, "create",
                                                   {"spec": dataclasses.asdict(spec)}))

    def describe(self, infos):
        found = self.runner.call(self, "describe", {"infos": [i.to_dict() for i in infos]})
        return {rid: NodeInfo.from_dict(info) for rid, info in found.items()}

    def delete(self, info):
        self.runner.call(self, "delete", {"info": info.to_dict()})

    def find(self, cluster_id):
        return [NodeInfo.from_dict(i) for i in self.runner.call(self, "find",
                                                                {"cluster_id": cluster_id})]

    def inventory(self, cluster_ids):
        found = self.runner.call(self, "inventory", {"cluster_ids": list(cluster_ids)})
        return {cid: [NodeInfo.from_dict(i) for i in infos] for cid, infos in found.items()}

    def cleanup_cluster(self, cluster_id):
        self.runner.call(self, "cleanup_cluster", {"cluster_id": cluster_id})

    def transport(self, info):
        return RemoteTransport(self, info)


class RemoteDatabase:
    """A managed database plugin whose every call is made by a worker of its cluster's
    provider (``provider``, a RemoteProvider: its queue and public entry), which builds the
    plugin named ``name`` from that entry. Only a create carries the generated password: the
    cloud is given it then; a DatabaseInfo never holds it."""

    def __init__(self, runner, name, provider):
        self.runner = runner
        self.name = name
        self.provider = provider

    def _call(self, method, **args):
        return self.runner.call(self.provider, f"database.{method}", {"type": self.name, **args})

    def create(self, spec):
        import dataclasses

        return DatabaseInfo.from_dict(self._call("create", spec=dataclasses.asdict(spec)))

    def describe(self, infos):
        found = self._call("describe", infos=[i.to_dict() for i in infos])
        return {rid: DatabaseInfo.from_dict(info) for rid, info in found.items()}

    def delete(self, info):
        self._call("delete", info=info.to_dict())

    def find(self, cluster_id):
        return [DatabaseInfo.from_dict(i) for i in self._call("find", cluster_id=cluster_id)]

    def release(self, info):
        self._call("release", info=info.to_dict())


class RemoteTransport:
    """A node as a worker reaches it: commands run there, through the provider's transport."""

    def __init__(self, provider, info):
        self.provider = provider
        self.info = info

    def run(self, argv, env=None, stdin=None, cwd=None):
        result = self.provider.runner.call(self.provider, "run", {
            "info": self.info.to_dict(), "argv": list(argv)})
        return ActionResult(**result)

    def close(self):
        pass


class RemoteAutomator:
    def __init__(self, runner, kind, tenant, needs_nodes):
        self.runner = runner
        self.kind = kind
        self.tenant = tenant
        self.needs_nodes = needs_nodes

    def run(self, action, service, fields, context, transport):
        if not self.needs_nodes:
            context = {k: v for k, v in context.items() if k != "nodes"}
        result = self.runner.call(transport.provider, "action", {
            "info": transport.info.to_dict(), "kind": self.kind, "action": action,
            "service": service, "fields": json.loads(json.dumps(fields)),
            "context": json.loads(json.dumps(context)),
            "scripts": self.runner.scripts(self.tenant, fields)})
        return ActionResult(**result)
