"""A Shoal worker: a Celery worker that makes the plugin calls the server sends it.

``python -m cluster_server.workers.worker --broker URL [--queues Q] [--concurrency N]`` (what
``shoal worker start`` runs). A worker loads the same provider, automator and database plugins
(stevedore) as the server, never opens the store and needs no API token: each message holds the
call's inputs, and credentials come from this machine's own environment. The outcome goes back
through the result backend.
"""

import argparse
import base64
import concurrent.futures
import hashlib
import json
import logging
import os
import socket
import sys
import threading
import time

from cluster_server import config, plugins
from cluster_server.errors import NotFound, ShoalError
from cluster_server.managed import records, tasks as managed_tasks
from cluster_server.plugins import DatabaseInfo, DatabaseSpec, NodeInfo, NodeSpec
from cluster_server.workers import QUEUE_RE, app as celery_app

LOG = logging.getLogger("shoal.worker")
CLAIM = "shoal-claim:"  # + call id: who took the call ("revoked" when the server withdrew it)
STARTED = "shoal-started"  # the channel where a worker says which calls it took
META = "celery-task-meta-"  # + call id: the call's outcome (Celery's result key)
DATABASE = "database."  # + create, describe, delete, find or release: a managed database's call


class Calls:
    """The plugin calls of one worker process: plugin instances and transports kept between
    messages (a node's actions reuse one SSH connection), keyed by what the message says."""

    def __init__(self, home):
        self.home = home
        self.lock = threading.Lock()
        self.providers = {}
        self.databases = {}
        self.automators = {}
        self.transports = {}

    def provider(self, entry):
        key = json.dumps(entry, sort_keys=True)
        with self.lock:
            provider = self.providers.get(key)
            if provider is None:
                cls = plugins.plugin_class(plugins.PROVIDER_NAMESPACE, entry["providertype"])
                fields = plugins.validate_fields("provider", entry["name"], cls.fields,
                                                 entry.get("provisioner", {}))
                provider = self.providers[key] = cls(entry["name"], fields, self.home)
            return provider

    def database(self, entry, kind):
        """The ``kind`` database plugin (aws-rds, gcp-cloudsql) for clusters on the provider
        ``entry``, built as the server builds it on threads, from the entry the message holds."""
        key = (json.dumps(entry, sort_keys=True), kind)
        with self.lock:
            database = self.databases.get(key)
            if database is None:
                database = self.databases[key] = managed_tasks.build(kind, entry, self.home)
            return database

    def automator(self, kind, scripts=()):
        cls = plugins.plugin_class(plugins.AUTOMATOR_NAMESPACE, kind)
        if scripts:  # the uploaded scripts this action names came with it
            return cls(self.home, ShippedScripts(self.home, scripts))
        with self.lock:
            automator = self.automators.get(kind)
            if automator is None:
                automator = self.automators[kind] = cls(self.home, None)
            return automator

    def transport(self, provider, info):
        key = (id(provider), info.resource_id)
        with self.lock:
            transport = self.transports.get(key)
        if transport is None:
            transport = provider.transport(info)
            with self.lock:
                transport = self.transports.setdefault(key, transport)
        return transport

    def execute(self, message):
        """Make the call ``message`` names; its value as JSON-ready data."""
        method, args = message["method"], message.get("args", {})
        if method == "noop":  # the cost of a call alone (bench/workers.py), after ``sleep``
            time.sleep(min(float(args.get("sleep") or 0), 60.0))
            return None
        if method.startswith(DATABASE):
            return self.database_call(message["provider"], method[len(DATABASE):], args)
        provider = self.provider(message["provider"])
        if method == "create":
            return provider.create(NodeSpec(**args["spec"])).to_dict()
        if method == "describe":
            infos = [NodeInfo.from_dict(i) for i in args["infos"]]
            return {rid: info.to_dict() for rid, info in provider.describe(infos).items()}
        if method == "delete":
            info = NodeInfo.from_dict(args["info"])
            self.forget(provider, info)
            provider.delete(info)
            return None
        if method == "find":
            return [info.to_dict() for info in provider.find(args["cluster_id"])]
        if method == "inventory":
            return {cid: [info.to_dict() for info in infos]
                    for cid, infos in provider.inventory(args["cluster_ids"]).items()}
        if method == "cleanup_cluster":
            provider.cleanup_cluster(args["cluster_id"])
            return None
        if method in ("run", "action"):
            transport = self.transport(provider, NodeInfo.from_dict(args["info"]))
            if method == "run":
                result = transport.run(args["argv"])
            else:
                result = self.automator(args["kind"], args.get("scripts")).run(
                    args["action"], args["service"], args["fields"], args["context"], transport)
            return {"exit_code": result.exit_code, "stdout": result.stdout or "",
                    "stderr": result.stderr or ""}
        raise ShoalError(f"unknown call {method!r}")

    def database_call(self, entry, method, args):
        database = self.database(entry, args["type"])
        if method == "create":
            spec = DatabaseSpec(**args["spec"])
            records.hide(spec.password)  # masked in this process's log, as on the server
            return database.create(spec).to_dict()
        if method == "describe":
            infos = [DatabaseInfo.from_dict(i) for i in args["infos"]]
            return {rid: info.to_dict() for rid, info in database.describe(infos).items()}
        if method == "delete":
            database.delete(DatabaseInfo.from_dict(args["info"]))
            return None
        if method == "find":
            return [info.to_dict() for info in database.find(args["cluster_id"])]
        if method == "release":
            database.release(DatabaseInfo.from_dict(args["info"]))
            return None
        raise ShoalError(f"unknown call {DATABASE + method!r}")

    def forget(self, provider, info):
        with self.lock:
            transport = self.transports.pop((id(provider), info.resource_id), None)
        if transport is not None:
            try:
                transport.close()
            except Exception:  # a dead connection's close is not worth failing a delete for
                pass


class ShippedScripts:
    """Plugin resources as a worker has them: the active scripts the server sent with an
    action, kept by content (sha256) under SHOAL_HOME/worker-scripts, mode 0600."""

    def __init__(self, home, scripts):
        self.folder = os.path.join(os.fspath(home), "worker-scripts")
        self.scripts = {s["name"]: s for s in scripts}

    def path(self, kind, name):
        script = self.scripts.get(name) if kind == "scripts" else None
        if script is None:
            raise NotFound(f"{kind}/{name} has no active version",
                           {"kind": kind, "name": name, "reason": "none active"})
        data = base64.b64decode(script["data"])
        if hashlib.sha256(data).hexdigest() != script["sha256"]:
            raise ShoalError(f"script {name} arrived damaged (sha256 differs)")
        os.makedirs(self.folder, mode=0o700, exist_ok=True)
        path = os.path.join(self.folder, script["sha256"])
        if not os.path.exists(path):
            _write_bytes(path, data)
        return path


def _write_bytes(path, data):
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def outcome(calls, message, worker):
    """What goes back to the server: the value, or the error as the server raises it again."""
    try:
        return {"ok": True, "value": calls.execute(message), "worker": worker}
    except ShoalError as error:
        text = error.message
        withheld = (message.get("provider") or {}).get("withheld")
        if withheld and message.get("method") != "action":
            text += (f" (provider {message['provider']['name']}: its {', '.join(withheld)} "
                     "stay on the server; this worker uses the credentials of its own "
                     "environment)")
        return {"ok": False, "error": type(error).__name__, "message": text,
                "details": error.details, "worker": worker}
    except Exception as exc:  # noqa: BLE001 (a plugin bug fails the call, readable)
        LOG.exception("call %s failed", message.get("method"))
        return {"ok": False, "error": "ShoalError", "message": f"{type(exc).__name__}: {exc}",
                "details": {}, "worker": worker}


def register(app, calls):
    """The one Celery task: a message of calls (``[{"id", "message"}]``, the calls that became
    ready together on the server); claim them, make them side by side, store each outcome as it
    is known."""
    where = celery_app.where(app.conf.broker_url)
    side_by_side = Lanes()

    # shared=False: the task belongs to this app alone (its closure holds this app's broker and
    # plugins); a second app built in one process (tests) must not answer with the first one's.
    @app.task(name=celery_app.TASK, bind=True, ignore_result=True, shared=False)
    def run_calls(self, batch):
        worker = self.request.hostname or socket.gethostname()
        message = self.request.id
        client = app.backend.client
        expires = int(celery_app.result_expires())

        # One round trip claims every call for this message and says who took them. A call is
        # made only for the message whose claim it holds: this one, or this same message
        # delivered before to a worker that died (calls are idempotent: make it again). A
        # claim of another message means another copy of the call runs or ran (the server
        # sent it again after a broker restart, when Redis may have lost it), and "revoked"
        # that the server withdrew it (its operation was cancelled or paused before any
        # worker took it). A call whose outcome is stored already is skipped too.
        def claim():
            pipe = client.pipeline(transaction=False)
            for call in batch:
                pipe.set(CLAIM + call["id"], f"{worker} {message}", nx=True, ex=expires)
                pipe.get(CLAIM + call["id"])
                pipe.exists(META + call["id"])
            pipe.publish(STARTED, json.dumps({"worker": worker,
                                              "calls": [c["id"] for c in batch]}))
            return pipe.execute()

        replies = celery_app.retrying(claim, where)
        todo = [call for i, call in enumerate(batch)
                if (replies[3 * i + 1] or b"").decode().rpartition(" ")[2] == message
                and not replies[3 * i + 2]]
        stored = set()
        try:
            for done in side_by_side.run(todo,
                                         lambda call: outcome(calls, call["message"], worker)):
                celery_app.retrying(lambda: app.backend.store_outcomes(done), where)
                stored.update(call_id for call_id, _ in done)
        except Exception as exc:  # noqa: BLE001 (a fault of this code: every call says so)
            LOG.exception("a message of %d calls failed", len(todo))
            failed = [(c["id"], {"ok": False, "error": "WorkerError", "worker": worker,
                                 "message": f"worker failed: {type(exc).__name__}: {exc}",
                                 "details": {}}) for c in todo if c["id"] not in stored]
            celery_app.retrying(lambda: app.backend.store_outcomes(failed), where)

    return run_calls


class Lanes:
    """Threads of one worker process that make a message's calls side by side (a message of
    one call is made on the pool's own thread)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.pool = None  # made on first use: after the prefork pool forked this process

    def run(self, calls, make):
        """Yield lists of (call id, outcome) as they are known: all that ended together."""
        if len(calls) == 1:
            yield [(calls[0]["id"], make(calls[0]))]
            return
        with self.lock:
            if self.pool is None:
                self.pool = concurrent.futures.ThreadPoolExecutor(
                    256, thread_name_prefix="shoal-call")
        futures = {self.pool.submit(make, call): call["id"] for call in calls}
        while futures:
            done, _ = concurrent.futures.wait(futures, return_when="FIRST_COMPLETED")
            yield [(futures.pop(f), f.result()) for f in done]


def build(broker, home=None):
    app = celery_app.make_app(broker)
    # Celery's consumer, made to survive a fault of its own after a broker restart.
    app.conf.worker_consumer = "cluster_server.workers.consumer:Consumer"
    register(app, Calls(home or config.home()))
    return app



def main(argv=None):
    parser = argparse.ArgumentParser(prog="shoal-worker")
    parser.add_argument("--broker", default=os.environ.get("SHOAL_BROKER", ""))
    parser.add_argument("--queues", default="shoal.default")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--name", default="")
    parser.add_argument("--pool", default="prefork", choices=("prefork", "threads", "solo"))
    # Celery's own default: INFO logs two lines a call, each with the whole message.
    parser.add_argument("--loglevel", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(records.LogMask())  # a database's password, given to set, never logged
    if not args.broker:
        print("shoal worker: no broker: --broker URL or SHOAL_BROKER", file=sys.stderr)
        return 2
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    bad = [q for q in queues if not QUEUE_RE.fullmatch(q)]
    if bad or not queues:
        print(f"shoal worker: bad queue name(s): {', '.join(bad) or '(none)'}", file=sys.stderr)
        return 2
    try:
        app = build(args.broker)
    except ShoalError as error:
        print(f"shoal worker: {error.message}", file=sys.stderr)
        return 2
    name = args.name or f"shoal-{os.getpid()}@{socket.gethostname()}"
    from celery.signals import worker_ready

    @worker_ready.connect(weak=False)
    def ready(sender=None, **_):
        # Said at any log level (Celery's own "ready." line is INFO, below the default).
        print(f"shoal worker {sender.hostname} ready.", file=sys.stderr, flush=True)

    app.worker_main(["worker", "-Q", ",".join(queues), "-c", str(args.concurrency), "-n", name,
                     "-P", args.pool, f"--loglevel={args.loglevel}", "--without-gossip",
                     "--without-mingle"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
