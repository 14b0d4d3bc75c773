"""The ``fake`` provider: instances in a JSON file under SHOAL_HOME, with faults on request.

It behaves like a small cloud API: ``create`` is idempotent on the client token (a token stays
bound to its instance even after the instance is deleted, as with EC2's ClientToken); every
instance is labelled with its cluster and node; a per-cluster "security group" is made on the
first create and can only be removed once no instance of the cluster is left.

Faults, from the provider entry's ``provisioner`` fields (counted per cluster):

* ``fail_create_nth``: the Nth ``create`` call raises ProviderError ("3", "2,4" or "3+").
* ``lose_create_nth``: the Nth ``create`` call makes the instance, then raises (as a call that
  times out after the cloud accepted it): only the token or the label can find it again.
* ``fail_state_nth``: the Nth instance made goes to FAILED instead of RUNNING.
* ``polls_to_running``: describe calls that must see an instance before it runs.
* ``create_delay``: seconds each create call takes, *after* the instance exists in the cloud
  (the window in which a crash leaves an instance that Shoal has not recorded).
* ``delete_delay``: seconds each delete call takes before the instance goes.
"""

import os
import time
import uuid

from cluster_server.errors import ProviderError, TransportError
from cluster_server.plugins import Field, NodeInfo, NodeState, Provider
from extensions.transports import LocalTransport

from shoal_testkit import cloud


def _number(value, default, kind=float):
    try:
        return kind(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        raise ProviderError(f"fake provider: {value!r} is not a number") from None


class FakeProvider(Provider):
    """Instances that exist only in ``SHOAL_HOME/fake-cloud.json``."""

    fields = {
        "polls_to_running": Field(default=1, help="describe calls before an instance runs"),
        "fail_create_nth": Field(help="the Nth create call (per cluster) raises: 3, 2,4 or 3+"),
        "lose_create_nth": Field(help="the Nth create call makes the instance, then raises"),
        "fail_state_nth": Field(help="the Nth instance made (per cluster) goes to FAILED"),
        "create_delay": Field(default=0, help="seconds a create call takes, after the "
                                              "instance exists"),
        "delete_delay": Field(default=0, help="seconds a delete call takes"),
        "page_size": Field(default=100, help="instances per page of an inventory listing"),
    }

    def __init__(self, name, fields, home):
        super().__init__(name, fields or {}, home)
        self.polls_to_running = _number(self.config.get("polls_to_running"), 1, int)
        self.create_delay = _number(self.config.get("create_delay"), 0.0)
        self.delete_delay = _number(self.config.get("delete_delay"), 0.0)

    # -- the API -------------------------------------------------------------------------------

    def create(self, spec):
        failure = None
        with cloud.locked(self.home) as state:
            calls = cloud.bump(state, "create_calls", spec.cluster_id)
            if cloud.nth_matches(self.config.get("fail_create_nth"), calls):
                failure = f"injected failure of create call {calls} for {spec.node_id}"
            else:
                record = self._by_token(state, spec.token)
                if record is None:
                    record = self._make(state, spec)
                if cloud.nth_matches(self.config.get("lose_create_nth"), calls):
                    failure = f"create call {calls} for {spec.node_id} timed out (injected)"
        if failure:
            raise ProviderError(f"fake provider: {failure}", {"node": spec.node_id})
        if self.create_delay:
            time.sleep(self.create_delay)
        return self._info(record)

    def describe(self, infos):
        result = {}
        with cloud.locked(self.home) as state:
            cloud.bump(state, "describe_calls", "all")
            sizes = state["counters"].setdefault("describe_batch_max", {})
            sizes["all"] = max(sizes.get("all", 0), len(infos))
            for info in infos:
                record = state["instances"].get(info.resource_id)
                if record is None:
                    result[info.resource_id] = NodeInfo(resource_id=info.resource_id,
                                                        state=NodeState.GONE)
                    continue
                record["polls"] += 1
                if record["state"] == "pending" and record["polls"] >= self.polls_to_running:
                    record["state"] = "failed" if record["doomed"] else "running"
                result[info.resource_id] = self._info(record)
        return result

    def delete(self, info):
        if self.delete_delay:
            time.sleep(self.delete_delay)
        with cloud.locked(self.home) as state:
            cloud.bump(state, "delete_calls", "all")
            record = state["instances"].pop(info.resource_id, None)
            if record is not None:
                record["state"] = "gone"
                state["terminated"][record["id"]] = record

    def find(self, cluster_id):
        with cloud.locked(self.home) as state:
            return [self._info(r) for r in state["instances"].values()
                    if r["labels"]["cluster"] == cluster_id]

    def inventory(self, cluster_ids):
        """As a cloud's filtered list: one call per page of ``page_size`` instances of the
        clusters asked about (counted in ``inventory_calls``), at least one."""
        page = max(1, _number(self.config.get("page_size"), 100, int))
        wanted = set(cluster_ids)
        result = {cluster_id: [] for cluster_id in cluster_ids}
        with cloud.locked(self.home) as state:
            found = sorted((r for r in state["instances"].values()
                            if r["labels"]["cluster"] in wanted), key=lambda r: r["id"])
            for start in range(0, max(1, len(found)), page):
                cloud.bump(state, "inventory_calls", "all")
                for record in found[start:start + page]:
                    info = self._info(record)
                    info.extra["node"] = record["labels"]["node"]
                    result[record["labels"]["cluster"]].append(info)
        return result

    def cleanup_cluster(self, cluster_id):
        with cloud.locked(self.home) as state:
            users = [r["id"] for r in state["instances"].values()
                     if r["labels"]["cluster"] == cluster_id]
            if users:  # as a real cloud: a group in use cannot be deleted
                raise ProviderError(f"fake provider: security group of {cluster_id} is in use "
                                    f"by {', '.join(sorted(users))}")
            state["groups"].pop(cluster_id, None)

    def transport(self, info):
        with cloud.locked(self.home) as state:
            record = state["instances"].get(info.resource_id)
        if record is None or record["state"] != "running":
            raise TransportError(f"fake provider: instance {info.resource_id} is not running")
        root = os.path.join(os.fspath(self.home), "fake-nodes", info.resource_id)
        os.makedirs(root, exist_ok=True)
        return LocalTransport(root, env={"FAKE_INSTANCE": info.resource_id})

    # -- records -------------------------------------------------------------------------------

    @staticmethod
    def _by_token(state, token):
        for records in (state["instances"], state["terminated"]):
            for record in records.values():
                if record["token"] == token:
                    return record
        return None

    def _make(self, state, spec):
        state["groups"].setdefault(spec.cluster_id, {"id": f"sg-{uuid.uuid4().hex[:8]}",
                                                     "cluster": spec.cluster_id})
        made = cloud.bump(state, "instances_made", spec.cluster_id)
        number = cloud.bump(state, "instances_made", "all")
        record = {
            "id": f"i-{uuid.uuid4().hex[:10]}",
            "token": spec.token,
            "labels": {"cluster": spec.cluster_id, "node": spec.node_id},
            "hostname": spec.hostname,
            "flavor": spec.flavor,
            "image": spec.image,
            "address": f"127.88.{number // 250}.{number % 250 + 1}",
            "state": "pending",
            "polls": 0,
            "doomed": cloud.nth_matches(self.config.get("fail_state_nth"), made),
            "created_at": time.time(),
        }
        state["instances"][record["id"]] = record
        return record

    @staticmethod
    def _info(record):
        states = {"pending": NodeState.PENDING, "running": NodeState.RUNNING,
                  "failed": NodeState.FAILED, "gone": NodeState.GONE}
        return NodeInfo(
            resource_id=record["id"], state=states[record["state"]],
            hostname=record["hostname"],
            addresses={"bind_v4": record["address"], "access_v4": record["address"]},
            extra={"token": record["token"], "labels": record["labels"]},
            error="injected instance failure" if record["state"] == "failed" else "")
