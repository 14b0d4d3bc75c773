"""What the tasks of a managed resource do (the pseudo-node ``resource.NAME`` of a plan).

CREATE asks the database plugin to make the database (its intent is committed before, like a
node's, and the plugin finds an earlier attempt by its token); CONFIRM waits for it through the
shared poller, holding no thread and with no timeout; DELETE removes it, waits until the cloud
says it is gone, then removes what gave access to it (security group, rule).

The plugin calls themselves go where the runner's ``database`` says: the plugin built here
(``build``) on threads; under Celery a proxy whose calls a worker makes (``RemoteDatabase`` in
cluster_server/workers/dispatch.py), while these tasks and the poller stay on the server.
"""

import concurrent.futures
import dataclasses
import logging
import threading

from cluster_server import plugins
from cluster_server.errors import PluginError, ShoalError
from cluster_server.executor import TaskOutcome
from cluster_server.managed import records
from cluster_server.plugins import DatabaseInfo, DatabaseSpec, NodeState
from cluster_server.poller import Cancelled

LOG = logging.getLogger("shoal.managed")


def plugin_class(entry_type):
    return plugins.plugin_class(plugins.DATABASE_NAMESPACE, entry_type)


def build(entry_type, provider_entry, home):
    """The ``entry_type`` database plugin for clusters on ``provider_entry`` (its provisioner
    fields checked): the server's own, or a worker's from the entry a message carries."""
    cls = plugin_class(entry_type)
    provider_cls = plugins.plugin_class(plugins.PROVIDER_NAMESPACE, provider_entry["providertype"])
    fields = plugins.validate_fields("provider", provider_entry["name"], provider_cls.fields,
                                     provider_entry.get("provisioner", {}))
    return cls(entry_type, {**provider_entry, "provisioner": fields}, home)


def check_entries(resources, provider_entry):
    """Refuse, before anything is made, resource entries that can never work: the plugin is
    not installed, a field breaks its rules, or the cluster's provider cannot reach it."""
    for name, entry in sorted(resources.items()):
        cls = plugin_class(entry["type"])
        fields = {k: v for k, v in entry.items() if k != "type"}
        # A field the plugin does not read is refused, not ignored: a misspelt storage_gb
        # would make a database other than the one asked for.
        plugins.validate_fields("resource", name, cls.fields, fields, allow_unknown=False)
        if cls.providertypes and provider_entry["providertype"] not in cls.providertypes:
            reason = (f"a {entry['type']} database is reachable only from a cluster on "
                      f"{' or '.join(cls.providertypes)} (its network), not "
                      f"{provider_entry['providertype']}")
            raise PluginError(f"resource '{name}': {reason}",
                              {"entity": "resource", "name": name, "field": "type",
                               "reason": reason})


class _UntilGone:
    """The poller's view of a database being deleted: its wait ends only once the cloud no
    longer knows it (whatever state it shows until then). One per plugin, so deletions of one
    cluster still share one describe per round."""

    def __init__(self, plugin):
        self.plugin = plugin
        self.name = f"{plugin.name}-deleting"

    def describe(self, infos):
        states = self.plugin.describe(infos)
        return {key: info if info.state == NodeState.GONE else
                dataclasses.replace(info, state=NodeState.PENDING)
                for key, info in states.items()}


class ResourceTasks:
    def __init__(self, store, home, poller, workers, make):
        self.store = store
        self.home = home
        self.poller = poller
        self.workers = workers  # a small pool for provider calls off the polling thread
        # make(cluster, entry type) -> a Database: the TaskRunner's ``database``, so that the
        # Celery runner hands out proxies to workers instead of plugins that call from here.
        self.make = make
        self.lock = threading.Lock()
        self.plugins = {}  # (cluster id, type) -> Database
        self.gone = {}  # id(plugin) -> _UntilGone

    def plugin(self, cluster, entry_type):
        with self.lock:
            key = (cluster["id"], entry_type)
            plugin = self.plugins.get(key)
            if plugin is None:
                plugin = self.plugins[key] = self.make(cluster, entry_type)
            return plugin

    def _until_gone(self, plugin):
        with self.lock:
            return self.gone.setdefault(id(plugin), _UntilGone(plugin))

    def spec(self, cluster, name):
        entry = cluster["spec"]["resources"][name]
        fields = {k: v for k, v in entry.items() if k != "type"}
        fields = plugins.validate_fields("resource", name, plugin_class(entry["type"]).fields,
                                         fields, allow_unknown=False)
        return DatabaseSpec(cluster_id=cluster["id"], name=name, fields=fields,
                            user=str(fields.get("user") or ""),
                            password=records.password(self.store, cluster["id"], name),
                            token=f"{cluster['id']}-{name}", tenant=cluster["tenant"])

    def run(self, task, cluster, name, operation):
        item = records.row(self.store, cluster["id"], name)
        plugin = self.plugin(cluster, item["type"])
        action = task["action"]
        if action == "CREATE":
            return self.create(cluster, item, plugin)
        if action == "CONFIRM":
            return self.confirm(cluster, item, plugin, operation)
        if action == "DELETE":
            return self.delete(cluster, item, plugin)
        return TaskOutcome(False, f"a resource has no action {action}", retry=False)

    def create(self, cluster, item, plugin):
        info = plugin.create(self.spec(cluster, item["name"]))
        records.save(self.store, cluster["id"], item["name"], "CREATING",
                     resource=info.to_dict())
        return TaskOutcome(True, f"creating {item['type']} {info.resource_id}")

    def confirm(self, cluster, item, plugin, operation):
        """A Future of the outcome: the poller completes it when the cloud decides."""
        info = DatabaseInfo.from_dict(item["facts"]["resource"])
        result = concurrent.futures.Future()

        def settled(watch):
            try:
                found = watch.result()
                if found.state == NodeState.RUNNING:
                    records.save(self.store, cluster["id"], item["name"], "ACTIVE",
                                 resource=found.to_dict())
                    result.set_result(TaskOutcome(True, f"{found.resource_id} is available at "
                                                        f"{found.endpoint}:{found.port}"))
                    return
                records.save(self.store, cluster["id"], item["name"], "FAILED",
                             resource=found.to_dict())
                reason = found.error or found.state.value
                # The cloud decided: asking again would wait on the same failed database.
                result.set_result(TaskOutcome(False, f"database {item['name']} "
                                                     f"({found.resource_id}) did not become "
                                                     f"available: {reason}", retry=False))
            except Cancelled:
                result.set_result(TaskOutcome(False, "cancelled", retry=False))
            except Exception as exc:  # noqa: BLE001 (the task fails with the reason, readable)
                result.set_result(TaskOutcome(False, str(exc)))

        cancelled = operation.get("cancelled", lambda: False)
        self.poller.watch(plugin, info, cancelled).add_done_callback(settled)
        return result

    def delete(self, cluster, item, plugin):
        """Start the delete, wait (no thread held) until the cloud says it is gone, then
        remove its network rule. A database never recorded (a crash right after the create
        call) is found by the plugin's tag, label or name."""
        resource = item["facts"].get("resource")
        if resource:
            info = DatabaseInfo.from_dict(resource)
        else:
            found = [i for i in plugin.find(cluster["id"]) if i.extra.get("name") == item["name"]]
            if not found:
                # Its network rule may have been made before the create call failed.
                plugin.release(DatabaseInfo(resource_id="", extra={
                    "cluster_id": cluster["id"], "name": item["name"]}))
                records.save(self.store, cluster["id"], item["name"], "DELETED")
                return TaskOutcome(True, f"nothing to delete: {item['name']} was never made")
            info = found[0]
        plugin.delete(info)
        records.save(self.store, cluster["id"], item["name"], "DELETING")
        result = concurrent.futures.Future()

        def released():
            try:
                plugin.release(info)
                records.save(self.store, cluster["id"], item["name"], "DELETED")
                result.set_result(TaskOutcome(True, f"deleted {info.resource_id} and its "
                                                    "network access"))
            except ShoalError as error:
                result.set_result(TaskOutcome(False, str(error)))
            except Exception as exc:  # noqa: BLE001
                LOG.exception("releasing %s failed", info.resource_id)
                result.set_result(TaskOutcome(False, f"internal error: {exc}"))

        def gone(watch):
            try:
                watch.result()
                # Off the polling thread: releasing calls the cloud and may wait.
                self.workers.submit(released)
            except Exception as exc:  # noqa: BLE001
                result.set_result(TaskOutcome(False, str(exc)))

        self.poller.watch(self._until_gone(plugin), info).add_done_callback(gone)
        return result
