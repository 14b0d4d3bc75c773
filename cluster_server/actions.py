"""What each task action does: node actions go to the provider, service actions to the automator.

The TaskRunner is the executor's ``runner``. It reads the cluster's frozen spec (the catalog
entries as they were when the cluster was made), records what providers report about each node
as node facts, and turns every failure into a TaskOutcome with a readable output.
"""

import concurrent.futures
import json
import logging
import threading

from cluster_server import macros, plugins
from cluster_server.errors import ShoalError
from cluster_server.executor import NotStarted, TaskOutcome
from cluster_server.managed import records as managed_records
from cluster_server.managed import tasks as managed_tasks
from cluster_server.planner import RESOURCE_PREFIX
from cluster_server.plugins import NodeInfo, NodeSpec, NodeState
from cluster_server.poller import Cancelled, Poller

LOG = logging.getLogger("shoal.actions")

CLEANUP = "CLEANUP"  # rollback's last task: orphans found by label, then per-cluster resources
UNDO_ACTIONS = ("STOP", "REMOVE")
# A node that fails to come up is replaced at most this many times by one CONFIRM: a cloud that
# fails every instance must end the wait, not loop on it.
REPLACEMENTS = 3


class TaskRunner:
    def __init__(self, store, home, poller=None, resources=None):
        self.store = store
        self.home = home
        self.poller = poller or Poller()
        self.resources = resources
        self.lock = threading.Lock()
        self.providers = {}  # (cluster id) -> Provider instance
        self.automators = {}
        # (cluster id, node id) -> {machine's resource id: Transport}, reused across tasks; by
        # machine, so a caller holding a node as it was (the health loop) never hands a task the
        # transport of a machine the node no longer has.
        self.transports = {}
        self.contexts = {}  # cluster id -> (its nodes_version, macros.prepare()d context)
        self.specs = {}  # cluster id -> (its sealed spec, the spec)
        # Replacing a failed node (delete + create) off the polling thread; rare, so few.
        self.replacer = concurrent.futures.ThreadPoolExecutor(
            max_workers=4, thread_name_prefix="shoal-replace")
        self.managed = managed_tasks.ResourceTasks(store, home, self.poller, self.replacer,
                                                   self.database)

    # -- lookups -------------------------------------------------------------------------------

    def cluster(self, cluster_id):
        row = self.store.db.execute(
            "SELECT id, name, tenant, spec, nodes_version FROM clusters WHERE id = ?",
            [cluster_id]).fetchone()
        # The spec is sealed (Fernet) and holds the cluster's whole catalog: opened once per
        # change of it, not by every task (shared, read-only, by every task of the cluster).
        with self.lock:
            cached = self.specs.get(row[0])
        if cached is None or cached[0] != row[3]:
            cached = (row[3], self.store.unseal(row[3]))
            with self.lock:
                self.specs[row[0]] = cached
        return {"id": row[0], "name": row[1], "tenant": row[2], "spec": cached[1],
                "nodes_version": row[4]}

    def forget_cluster(self, cluster_id):
        """The cluster is deleted: its cached spec and macro context can go."""
        with self.lock:
            self.specs.pop(cluster_id, None)
            self.contexts.pop(cluster_id, None)

    def node(self, cluster_id, node_id):
        row = self.store.db.execute(
            "SELECT id, hostname, hardwaretype, imagetype, services, status, facts FROM nodes"
            " WHERE cluster_id = ? AND id = ?", [cluster_id, node_id]).fetchone()
        return {"id": row[0], "hostname": row[1], "hardwaretype": row[2], "imagetype": row[3],
                "services": json.loads(row[4]), "status": row[5], "facts": json.loads(row[6])}

    def provider(self, cluster):
        with self.lock:
            provider = self.providers.get(cluster["id"])
            if provider is None:
                entry = cluster["spec"]["provider"]
                cls = plugins.plugin_class(plugins.PROVIDER_NAMESPACE, entry["providertype"])
                fields = plugins.validate_fields("provider", entry["name"], cls.fields,
                                                 entry.get("provisioner", {}))
                provider = self.providers[cluster["id"]] = cls(entry["name"], fields, self.home)
            return provider

    def automator(self, kind, tenant="default"):
        with self.lock:
            automator = self.automators.get((kind, tenant))
            if automator is None:
                cls = plugins.plugin_class(plugins.AUTOMATOR_NAMESPACE, kind)
                # Each tenant's automators see that tenant's plugin resources only.
                resources = self.resources.for_tenant(tenant) if self.resources else None
                automator = self.automators[(kind, tenant)] = cls(self.home, resources)
            return automator

    def database(self, cluster, entry_type):
        """A new database plugin of ``entry_type`` for the cluster (``self.managed`` keeps it)."""
        return managed_tasks.build(entry_type, cluster["spec"]["provider"], self.home)

    def transport(self, cluster, node, provider):
        resource = node["facts"].get("resource")
        if not resource:
            raise ShoalError(f"node {node['id']} has no machine: its CREATE did not succeed"
                             " ('shoal cluster retry' runs it again)")
        key = (cluster["id"], node["id"])
        with self.lock:
            transport = self.transports.get(key, {}).get(resource["resource_id"])
        if transport is None:
            transport = provider.transport(NodeInfo.from_dict(resource))
            with self.lock:
                transport = self.transports.setdefault(key, {}).setdefault(
                    resource["resource_id"], transport)
        return transport

    def forget_transport(self, cluster_id, node_id):
        with self.lock:
            transports = self.transports.pop((cluster_id, node_id), {})
        for transport in transports.values():
            try:
                transport.close()
            except Exception:  # closing a dead connection is not worth failing a task for
                pass

    def save_facts(self, cluster_id, node_id, status=None, **facts):
        with self.store.write() as db:
            row = db.execute("SELECT facts FROM nodes WHERE cluster_id = ? AND id = ?",
                             [cluster_id, node_id]).fetchone()
            merged = {**json.loads(row[0]), **facts}
            if status:
                db.execute("UPDATE nodes SET facts = ?, status = ? WHERE cluster_id = ? AND id = ?",
                           [json.dumps(merged), status, cluster_id, node_id])
            else:
                db.execute("UPDATE nodes SET facts = ? WHERE cluster_id = ? AND id = ?",
                           [json.dumps(merged), cluster_id, node_id])

    # -- the runner ----------------------------------------------------------------------------

    def run(self, task, operation):
        """The task's outcome (or a Future of it), with every password of the cluster's
        managed resources masked: an action may echo what its macros expanded to."""
        cluster = self.cluster(operation["cluster_id"])
        outcome = self._run(task, operation, cluster)
        # A cluster whose template declares no managed resources has none to look up.
        hidden = managed_records.passwords(self.store, cluster["id"]) \
            if cluster["spec"].get("resources") else []
        if not hidden:
            return outcome
        if isinstance(outcome, concurrent.futures.Future):
            masked = concurrent.futures.Future()

            def copy(done):
                try:
                    result = done.result()
                    result.output = managed_records.mask(result.output, hidden)
                    masked.set_result(result)
                except Exception as exc:  # noqa: BLE001 (the executor settles it as failed)
                    masked.set_exception(exc)

            outcome.add_done_callback(copy)
            return masked
        outcome.output = managed_records.mask(outcome.output, hidden)
        return outcome

    def _run(self, task, operation, cluster):
        try:
            if task["node_id"].startswith(RESOURCE_PREFIX):
                return self.managed.run(task, cluster, task["node_id"][len(RESOURCE_PREFIX):],
                                        operation)
            if task["action"] == CLEANUP:
                return self.cleanup(cluster)
            node = self.node(cluster["id"], task["node_id"])
            handler = getattr(self, "do_" + task["action"].lower(), None)
            if handler is None:
                resource = node["facts"].get("resource") or {}
                if task["action"] in UNDO_ACTIONS and resource.get("state") != "running":
                    # A node never confirmed running (a failed grow being shrunk back) never ran
                    # a service: there is nothing to stop or remove on it.
                    return TaskOutcome(True, f"nothing to do: node {node['id']} never came up")
                return self.service_action(task, cluster, node)
            return handler(task, cluster, node, operation)
        except Cancelled:
            return TaskOutcome(False, "cancelled", retry=False)
        except NotStarted:
            return TaskOutcome(False, "taken back from the queue: the operation was paused",
                               requeue=True)
        except plugins.PluginError as error:
            return TaskOutcome(False, str(error), retry=False)
        except ShoalError as error:
            return TaskOutcome(False, str(error))

    def node_spec(self, cluster, node):
        spec = cluster["spec"]
        provider_name = spec["provider"]["name"]
        hardware = spec["hardwaretypes"][node["hardwaretype"]]["providermap"][provider_name]
        image = spec["imagetypes"][node["imagetype"]]["providermap"][provider_name]
        generation = node["facts"].get("generation", 0)
        return NodeSpec(cluster_id=cluster["id"], node_id=node["id"], hostname=node["hostname"],
                        hardwaretype=node["hardwaretype"], imagetype=node["imagetype"],
                        flavor=hardware, image=image, tenant=cluster["tenant"],
                        token=f"{cluster['id']}-{node['id']}-{generation}")

    def do_create(self, task, cluster, node, operation):
        provider = self.provider(cluster)
        # A node made again (a repair of a missing one) gets a new machine: a transport kept
        # for its old one (the health loop's, an earlier operation's) would reach nothing.
        self.forget_transport(cluster["id"], node["id"])
        info = provider.create(self.node_spec(cluster, node))
        self.save_facts(cluster["id"], node["id"], "CREATING", resource=info.to_dict())
        return TaskOutcome(True, f"created {info.resource_id}")

    def do_confirm(self, task, cluster, node, operation):
        """A Future of the outcome: the node is waited for by the poller, holding no thread."""
        provider = self.provider(cluster)
        cancelled = operation.get("cancelled", lambda: False)
        facts = node["facts"]
        if facts.get("replacing"):
            # A crash came between deciding on a replacement and recording it: the replacement
            # may exist already, and its token (same generation) finds it instead of making a
            # second one that nothing would ever delete.
            info = self._replacement(cluster, node, provider)
        else:
            info = NodeInfo.from_dict(facts["resource"])
        result = concurrent.futures.Future()
        self._confirm_when_up(cluster, node, provider, info, cancelled, result, 0)
        return result

    def _confirm_when_up(self, cluster, node, provider, info, cancelled, result, replaced):
        def settled(watch):
            # Runs on the polling thread: quick store writes only; provider calls (a
            # replacement) go to a worker of their own so the polling never waits on them.
            try:
                info = watch.result()
                if info.state == NodeState.RUNNING:
                    self.save_facts(cluster["id"], node["id"], "ACTIVE", resource=info.to_dict())
                    result.set_result(TaskOutcome(True, f"{info.resource_id} is running "
                                                        f"({info.addresses.get('access_v4', '')})"))
                else:
                    self.replacer.submit(self._replace, cluster, node, provider, info, cancelled,
                                         result, replaced)
            except Cancelled:
                result.set_result(TaskOutcome(False, "cancelled", retry=False))
            except Exception as exc:  # noqa: BLE001 (the task fails with the reason, readable)
                result.set_result(TaskOutcome(False, str(exc)))

        self.poller.watch(provider, info, cancelled).add_done_callback(settled)

    def _replace(self, cluster, node, provider, info, cancelled, result, replaced):
        """The node failed or vanished: answer with DELETE and a fresh CREATE, then wait again.

        At most REPLACEMENTS times per attempt of the CONFIRM (counted here, not in the node's
        facts), so that ``cluster retry`` tries afresh.
        """
        try:
            facts = node["facts"]
            reason = info.error or info.state.value
            LOG.warning("node %s/%s %s: %s; replacing it", cluster["name"], node["id"],
                        info.resource_id, reason)
            if info.state != NodeState.GONE:
                provider.delete(info)
            replaced += 1
            facts["replaced"] = facts.get("replaced", 0) + 1  # over the node's life, to show
            if replaced > REPLACEMENTS:
                self.save_facts(cluster["id"], node["id"], replaced=facts["replaced"])
                result.set_result(TaskOutcome(False, f"node failed {replaced} times: {reason}",
                                              retry=False))
                return
            # The intent (a new generation, hence a new token) is stored before the create call.
            facts["generation"] = facts.get("generation", 0) + 1
            self.save_facts(cluster["id"], node["id"], generation=facts["generation"],
                            replaced=facts["replaced"], replacing=True)
            info = self._replacement(cluster, node, provider)
            self._confirm_when_up(cluster, node, provider, info, cancelled, result, replaced)
        except Exception as exc:  # noqa: BLE001
            result.set_result(TaskOutcome(False, str(exc)))

    def _replacement(self, cluster, node, provider):
        self.forget_transport(cluster["id"], node["id"])
        info = provider.create(self.node_spec(cluster, node))
        self.save_facts(cluster["id"], node["id"], resource=info.to_dict(), replacing=False)
        node["facts"]["resource"] = info.to_dict()
        return info

    def do_bootstrap(self, task, cluster, node, operation):
        provider = self.provider(cluster)
        transport = self.transport(cluster, node, provider)
        result = transport.run(["uname", "-a"])
        if result.exit_code != 0:
            return TaskOutcome(False, result.stdout + result.stderr)
        self.save_facts(cluster["id"], node["id"], uname=result.stdout.strip())
        return TaskOutcome(True, result.stdout)

    def do_delete(self, task, cluster, node, operation):
        resource = node["facts"].get("resource")
        if resource:
            self.forget_transport(cluster["id"], node["id"])
            self.provider(cluster).delete(NodeInfo.from_dict(resource))
        self.save_facts(cluster["id"], node["id"], "DELETED")
        return TaskOutcome(True, f"deleted {resource['resource_id'] if resource else 'nothing'}")

    def cleanup(self, cluster):
        provider = self.provider(cluster)
        found = provider.find(cluster["id"])
        for info in found:
            provider.delete(info)
        provider.cleanup_cluster(cluster["id"])
        return TaskOutcome(True, f"removed {len(found)} leftover node(s) and the cluster's "
                                 "resources")

    def context(self, cluster, node):
        """The macro context: every live node of the cluster's new layout, with its addresses,
        seen from ``node``. Read and prepared once per version of the cluster's nodes (the
        store counts the changes macros can see): each action reading every node made a
        create of 10,000 nodes quadratic."""
        version = cluster["nodes_version"]
        with self.lock:
            cached = self.contexts.get(cluster["id"])
        if cached is None or cached[0] != version:
            rows = self.store.db.execute(
                "SELECT id, hostname, services, facts FROM nodes WHERE cluster_id = ?"
                " AND status NOT IN ('REMOVING', 'DELETED')", [cluster["id"]]).fetchall()
            nodes = []
            for node_id, hostname, services, facts in rows:
                resource = json.loads(facts).get("resource") or {}
                nodes.append({"id": node_id, "hostname": resource.get("hostname") or hostname,
                              "services": json.loads(services),
                              "addresses": resource.get("addresses", {})})
            cached = (version, macros.prepare({"nodes": nodes}))
            with self.lock:
                self.contexts[cluster["id"]] = cached
        spec = cluster["spec"]
        return cached[1].bound({"cluster": {"id": cluster["id"], "name": cluster["name"],
                                            "owner": spec.get("owner", "")},
                                "self": node["id"],
                                "resources": managed_records.macro_context(self.store,
                                                                           cluster["id"])
                                if spec.get("resources") else {}})

    def service_action(self, task, cluster, node):
        service = cluster["spec"]["services"][task["service"]]
        action = service.get("provisioner", {}).get("actions", {}).get(task["action"].lower())
        if action is None:
            return TaskOutcome(True, "nothing to do")
        ctx = self.context(cluster, node)
        missing = []
        fields = macros.expand(action.get("fields", {}), ctx, missing)
        config = macros.expand(cluster["spec"].get("config", {}), ctx, missing)
        automator = self.automator(action["type"], cluster["tenant"])
        provider = self.provider(cluster)
        transport = self.transport(cluster, node, provider)
        result = automator.run(task["action"], task["service"], fields,
                               {"cluster_id": cluster["id"], "cluster_name": cluster["name"],
                                "node_id": node["id"], "config": config,
                                "node": {"id": node["id"], "hostname": node["hostname"]},
                                # The cluster as the macros saw it (automators that hand
                                # cluster facts to their tool, as ansible does).
                                "cluster": ctx.cluster, "nodes": ctx.nodes},
                               transport)
        output = (result.stdout or "") + (result.stderr or "")
        if result.exit_code != 0:
            output += f"\n[exit code {result.exit_code}]"
        return TaskOutcome(result.exit_code == 0, output)
