"""The server's own figures in Prometheus text format (``GET /api/v1/metrics``), read from the
store at each scrape so they always agree with ``task list``: operations and tasks by status,
task durations, the poller's describe calls, checks run, health and node facts.

A registry of its own per app (not prometheus_client's global one): two apps in one process,
as in the tests, must not mix their figures."""

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

from cluster_server.health.state import FAILING, HEALTHY, UNKNOWN

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ShoalCollector:
    def __init__(self, store, engine=None, monitor=None):
        self.store = store
        self.engine = engine
        self.monitor = monitor

    def collect(self):
        db = self.store.db
        operations = CounterMetricFamily("shoal_operations", "Operations created, by kind",
                                         labels=["kind"])
        by_status = GaugeMetricFamily("shoal_operations_by_status",
                                      "Operations now in each status", labels=["kind", "status"])
        for kind, status, count in db.execute(
                "SELECT kind, status, COUNT(*) FROM operations GROUP BY kind, status"):
            by_status.add_metric([kind, status], count)
        for kind, count in db.execute("SELECT kind, COUNT(*) FROM operations GROUP BY kind"):
            operations.add_metric([kind], count)
        yield operations
        yield by_status

        tasks = GaugeMetricFamily("shoal_tasks", "Tasks in each status (joins left out)",
                                  labels=["status"])
        for status, count in db.execute("SELECT status, COUNT(*) FROM tasks WHERE action !="
                                        " 'JOIN' GROUP BY status"):
            tasks.add_metric([status], count)
        yield tasks

        durations = SummaryMetricFamily("shoal_task_duration_seconds",
                                        "Durations of finished tasks, by action",
                                        labels=["action"])
        for action, count, total in db.execute(
                "SELECT action, COUNT(*), SUM(finished_at - started_at) FROM tasks WHERE"
                " action != 'JOIN' AND started_at IS NOT NULL AND finished_at IS NOT NULL AND"
                " status IN ('SUCCEEDED', 'FAILED') GROUP BY action"):
            durations.add_metric([action], count_value=count, sum_value=total or 0.0)
        yield durations

        polls = CounterMetricFamily("shoal_poll_calls", "Batched describe calls made by the "
                                    "poller since the server started", labels=["provider"])
        poller = getattr(getattr(self.engine, "runner", None), "poller", None)
        if poller is not None:
            with poller.lock:
                pollers = list(poller.pollers.values())
            calls = {}
            for one in pollers:
                calls[one.provider.name] = calls.get(one.provider.name, 0) + one.calls
            for name, count in sorted(calls.items()):
                polls.add_metric([name], count)
        yield polls

        checks = CounterMetricFamily("shoal_health_checks", "Health checks run since the "
                                     "server started, by result", labels=["result"])
        rounds = CounterMetricFamily("shoal_drift_rounds", "Drift rounds of the health loop "
                                     "since the server started")
        if self.monitor is not None:
            counters = dict(self.monitor.counters)
            for result in ("ok", "failed"):
                checks.add_metric([result], counters.get(("check", result), 0))
            rounds.add_metric([], counters.get("drift", 0))
        yield checks
        yield rounds

        states = GaugeMetricFamily("shoal_health_instances", "Service instances of live "
                                   "clusters in each health state", labels=["state"])
        counted = dict(db.execute(
            "SELECT h.state, COUNT(*) FROM health h JOIN nodes n ON n.cluster_id = h.cluster_id"
            " AND n.id = h.node_id WHERE n.status NOT IN ('DELETED', 'REMOVING') GROUP BY"
            " h.state").fetchall())
        for state in (HEALTHY, FAILING, UNKNOWN):
            states.add_metric([state], counted.get(state, 0))
        yield states

        instance = GaugeMetricFamily("shoal_health_up", "1 when a service instance is healthy",
                                     labels=["cluster", "node", "service"])
        for name, node, service, state in db.execute(
                "SELECT c.name, h.node_id, h.service, h.state FROM health h JOIN clusters c ON"
                " c.id = h.cluster_id JOIN nodes n ON n.cluster_id = h.cluster_id AND n.id ="
                " h.node_id WHERE c.status != 'DELETED' AND n.status NOT IN ('DELETED',"
                " 'REMOVING') ORDER BY c.name, h.node_id, h.service"):
            instance.add_metric([name, node, service], 1 if state == HEALTHY else 0)
        yield instance

        yield from self._node_facts(db)

    @staticmethod
    def _node_facts(db):
        import json

        gauges = {key: GaugeMetricFamily(f"shoal_node_{key}", help, labels=["cluster", "node"])
                  for key, help in (("load1", "1-minute load average of a node"),
                                    ("memory_used_bytes", "Memory in use on a node"),
                                    ("disk_used_bytes", "Disk in use in a node's workdir"))}
        sources = {"load1": "load1", "memory_used_bytes": "memory_used",
                   "disk_used_bytes": "disk_used"}
        for name, node, text in db.execute(
                "SELECT c.name, n.id, n.facts FROM nodes n JOIN clusters c ON c.id ="
                " n.cluster_id WHERE n.status = 'ACTIVE' AND c.status != 'DELETED' AND"
                " n.facts LIKE '%\"metrics\"%' ORDER BY c.name, n.id"):
            metrics = json.loads(text).get("metrics") or {}
            for key, source in sources.items():
                if source in metrics:
                    gauges[key].add_metric([name, node], metrics[source])
        yield from gauges.values()


def registry(store, engine=None, monitor=None):
    reg = CollectorRegistry(auto_describe=False)
    reg.register(ShoalCollector(store, engine, monitor))
    return reg


def render(reg):
    return generate_latest(reg)
