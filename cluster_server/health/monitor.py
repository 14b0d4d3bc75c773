"""The health loop of the server: checks every ACTIVE cluster's service instances on their own
interval, a bounded number at a time; records state changes (with a cluster event); asks
supervision to restart what fails; reads node facts; runs the drift check on a longer interval.

One scheduling thread and a small pool of checkers. Between due checks the thread sleeps, and it
reads which clusters are ACTIVE only every ``refresh`` seconds (specs are unsealed again only
when a cluster changed), so an idle server with healthy clusters costs little CPU."""

import collections
import concurrent.futures
import heapq
import json
import logging
import os
import threading
import time

from cluster_server.health import checks, drift, facts, supervision
from cluster_server.health.state import FAILING, HEALTHY, UNKNOWN, add_event, save_drift

LOG = logging.getLogger("shoal.health")
STOPPED = "stopped by an operation; not checked until it starts again"


def _env(name, default):
    return float(os.environ.get(name) or default)


class Target:
    """One thing to do on a schedule: a check of (node, service), or the facts of a node."""

    __slots__ = ("key", "cluster", "node", "service", "health", "interval", "peers")

    def __init__(self, key, cluster, node, service, health, interval, peers):
        self.key, self.cluster, self.node = key, cluster, node
        self.service, self.health, self.interval = service, health, interval
        self.peers = peers  # the cluster's nodes as macros see them, shared by its targets


class Monitor:
    def __init__(self, store, engine):
        self.store = store
        self.engine = engine
        self.runner = engine.runner
        self.parallel = int(_env("SHOAL_HEALTH_PARALLEL", 8))
        self.refresh = _env("SHOAL_HEALTH_REFRESH", 5)
        self.facts_interval = _env("SHOAL_FACTS_INTERVAL", 60)
        self.drift_interval = _env("SHOAL_DRIFT_INTERVAL", 600)
        self.pool = concurrent.futures.ThreadPoolExecutor(self.parallel, "shoal-health")
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.thread = None
        self.targets = {}  # key -> Target
        self.due = []  # heap of (monotonic due time, key)
        self.running = set()
        self.specs = {}  # cluster id -> (updated_at, cluster dict)
        self.counters = collections.Counter()  # ("check", result) / ("facts",) / ("drift",)
        # key -> (state, failures, written at): a healthy instance that stays healthy is
        # written again only every ``rewrite`` seconds, not at every check (the store's write
        # lock is what an idle server with many clusters would otherwise spend its time on).
        self.last = {}
        self.rewrite = _env("SHOAL_HEALTH_REWRITE", 60)
        self.next_drift = time.monotonic() + self.drift_interval

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self):
        self.thread = threading.Thread(target=self._loop, daemon=True, name="shoal-health")
        self.thread.start()

    def stop(self):
        self.stopping.set()
        self.wake.set()
        self.pool.shutdown(wait=False, cancel_futures=True)

    # -- what to check -----------------------------------------------------------------------

    def _load(self):
        """The targets of every ACTIVE cluster: a check per (node, service with a health
        declaration), and the facts of each node."""
        rows = self.store.db.execute(
            "SELECT id, tenant, name, spec, updated_at FROM clusters WHERE status = 'ACTIVE'"
        ).fetchall()
        clusters, changed = {}, set()
        for cluster_id, tenant, name, spec, updated in rows:
            known = self.specs.get(cluster_id)
            if known is None or known[0] != updated:
                changed.add(cluster_id)
                known = self.specs[cluster_id] = (updated, {
                    "id": cluster_id, "tenant": tenant, "name": name,
                    "spec": self.store.unseal(spec),
                    "stopped": self._stopped(cluster_id)})
            clusters[cluster_id] = known[1]
        for cluster_id in set(self.specs) - set(clusters):
            del self.specs[cluster_id]
        # A cluster that changed (an operation ran, however short) is written afresh: its rows
        # may have been changed meanwhile.
        self.last = {key: value for key, value in self.last.items()
                     if key[0] in clusters and key[0] not in changed}
        targets = {}
        if clusters:
            nodes = self.store.db.execute(
                "SELECT cluster_id, id, hostname, services, facts FROM nodes WHERE status ="
                " 'ACTIVE'").fetchall()
            # The macro context of a cluster, built once per refresh rather than read from
            # the store at every check (what TaskRunner.context gives a task).
            peers = {}
            for cluster_id, node_id, hostname, services, node_facts in nodes:
                cluster = clusters.get(cluster_id)
                if cluster is None:
                    continue
                node = {"id": node_id, "hostname": hostname, "services": json.loads(services),
                        "facts": json.loads(node_facts)}
                resource = node["facts"].get("resource") or {}
                peers.setdefault(cluster_id, []).append({
                    "id": node_id, "hostname": resource.get("hostname") or hostname,
                    "services": node["services"], "addresses": resource.get("addresses", {})})
                for service in node["services"]:
                    if (node_id, service) in cluster["stopped"]:
                        continue  # stopped on purpose: not checked, never restarted
                    body = cluster["spec"]["services"].get(service) or {}
                    health = (body.get("provisioner") or {}).get("health")
                    if health:
                        key = (cluster_id, node_id, service)
                        targets[key] = Target(key, cluster, node, service, health,
                                              checks.schedule(health)[0], peers[cluster_id])
                key = (cluster_id, node_id, None)
                targets[key] = Target(key, cluster, node, None, None, self.facts_interval,
                                      peers[cluster_id])
        return targets

    def _stopped(self, cluster_id):
        """(node, service) pairs whose last START or STOP that ran was a STOP: a user stopped
        them (``cluster stop``). Read when the cluster changes, not at every refresh; their
        rows say so instead of keeping their last state."""
        last = {}
        for node_id, service, action in self.store.db.execute(
                "SELECT t.node_id, t.service, t.action FROM tasks t JOIN operations o ON"
                " o.id = t.operation_id WHERE o.cluster_id = ? AND t.status = 'SUCCEEDED' AND"
                " t.action IN ('START', 'STOP') ORDER BY t.finished_at", [cluster_id]):
            last[node_id, service] = action
        stopped = {pair for pair, action in last.items() if action == "STOP"}
        if stopped:
            with self.store.write() as db:
                db.conn.executemany(
                    "UPDATE health SET state = ?, since = ?, failures = 0, output = ? WHERE"
                    " cluster_id = ? AND node_id = ? AND service = ? AND output != ?",
                    [(UNKNOWN, time.time(), STOPPED, cluster_id, node, service, STOPPED)
                     for node, service in stopped])
        return stopped

    def clusters(self):
        """The ACTIVE clusters as the last refresh saw them."""
        return [cluster for _, cluster in self.specs.values()]

    # -- the loop ----------------------------------------------------------------------------

    def _loop(self):
        next_refresh = 0.0
        while not self.stopping.is_set():
            now = time.monotonic()
            try:
                if now >= next_refresh:
                    self._refresh(now)
                    next_refresh = now + self.refresh
                self._dispatch(now)
                if now >= self.next_drift:
                    self.next_drift = now + self.drift_interval
                    self.pool.submit(self._drift_round)
            except Exception:  # noqa: BLE001 (the loop must outlive a bad row)
                LOG.exception("health loop")
            with self.lock:
                due = self.due[0][0] if self.due else next_refresh
            self.wake.wait(max(0.01, min(due, next_refresh, self.next_drift) -
                               time.monotonic()))
            self.wake.clear()

    def _refresh(self, now):
        targets = self._load()
        with self.lock:
            old = self.targets
            self.targets = targets
            for key, target in targets.items():
                if key not in old:
                    # New: checked soon, spread over its interval so a hundred clusters made
                    # at once do not all check in the same instant.
                    spread = (hash(key) % 1000) / 1000.0 * min(target.interval, 5.0)
                    heapq.heappush(self.due, (now + spread, key))

    def _dispatch(self, now):
        with self.lock:
            while self.due and self.due[0][0] <= now and len(self.running) < self.parallel:
                _, key = heapq.heappop(self.due)
                target = self.targets.get(key)
                if target is None or key in self.running:
                    continue  # gone since (its cluster is busy or deleted)
                self.running.add(key)
                self.pool.submit(self._run, target)

    def _run(self, target):
        try:
            if target.service is None:
                self._facts(target)
            else:
                self._check(target)
        except Exception:  # noqa: BLE001
            LOG.exception("health target %s", target.key)
        finally:
            with self.lock:
                self.running.discard(target.key)
                if target.key in self.targets:
                    heapq.heappush(self.due, (time.monotonic() + target.interval, target.key))
            self.wake.set()

    # -- one check ---------------------------------------------------------------------------

    @staticmethod
    def _context(target):
        cluster = target.cluster
        return {"cluster": {"id": cluster["id"], "name": cluster["name"],
                            "owner": cluster["spec"].get("owner", "")},
                "self": target.node["id"], "nodes": target.peers}

    def _transport(self, target):
        provider = self.runner.provider(target.cluster)
        return self.runner.transport(target.cluster, target.node, provider)

    def check_now(self, target):
        """Run one check and record it (also for tests and the benchmark)."""
        self._check(target)

    def _check(self, target):
        ok, output = checks.run(target.health, self._context(target),
                                lambda: self._transport(target))
        self.counters["check", "ok" if ok else "failed"] += 1
        failures = self.record(target, ok, output)
        retries = checks.schedule(target.health)[2]
        if failures is not None and failures >= retries:
            body = target.cluster["spec"]["services"].get(target.service) or {}
            supervision.consider(self.store, self.engine, target.cluster["id"], target.node["id"],
                                 target.service, body, output)

    def record(self, target, ok, output):
        """Write the result; an event when the state changes. Returns the failures in a row
        (None when the cluster is no longer ACTIVE: its result means nothing now)."""
        cluster_id, node_id, service = target.key
        retries = checks.schedule(target.health)[2]
        now = time.time()
        last = self.last.get(target.key)
        if ok and last and last[:2] == (HEALTHY, 0) and now - last[2] < self.rewrite:
            return 0
        with self.store.write() as db:
            status = db.execute("SELECT status FROM clusters WHERE id = ?",
                                [cluster_id]).fetchone()
            if status is None or status[0] != "ACTIVE":
                return None
            row = db.execute("SELECT state, failures FROM health WHERE cluster_id = ? AND"
                             " node_id = ? AND service = ?", [cluster_id, node_id, service]
                             ).fetchone()
            before, failures = row if row else (UNKNOWN, 0)
            failures = 0 if ok else failures + 1
            state = HEALTHY if ok else (FAILING if failures >= retries else before)
            if row is None:
                db.execute("INSERT INTO health (cluster_id, node_id, service, state, since,"
                           " checked_at, failures, output) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           [cluster_id, node_id, service, state, now, now, failures, output])
            elif state != before:
                db.execute("UPDATE health SET state = ?, since = ?, checked_at = ?, failures = ?,"
                           " output = ?, gave_up = CASE WHEN ? THEN 0 ELSE gave_up END WHERE"
                           " cluster_id = ? AND node_id = ? AND service = ?",
                           [state, now, now, failures, output, ok, cluster_id, node_id, service])
            else:
                db.execute("UPDATE health SET checked_at = ?, failures = ?, output = ? WHERE"
                           " cluster_id = ? AND node_id = ? AND service = ?",
                           [now, failures, output, cluster_id, node_id, service])
            if state != before:
                tail = output.strip().splitlines()[-1:] or [""]
                add_event(db, cluster_id, f"health: {service} on {node_id} is {state} (was "
                          f"{before}): {tail[0][:200]}")
        self.last[target.key] = (state, failures, now)
        return failures

    # -- node facts --------------------------------------------------------------------------

    def _facts(self, target):
        found = facts.collect(self._transport(target))
        self.counters["facts"] += 1
        with self.store.write() as db:
            row = db.execute("SELECT facts, status FROM nodes WHERE cluster_id = ? AND id = ?",
                             [target.cluster["id"], target.node["id"]]).fetchone()
            if row is None or row[1] != "ACTIVE":
                return
            merged = {**json.loads(row[0]), "metrics": found}
            db.execute("UPDATE nodes SET facts = ? WHERE cluster_id = ? AND id = ?",
                       [json.dumps(merged), target.cluster["id"], target.node["id"]])

    # -- drift -------------------------------------------------------------------------------

    def drift_round(self, clusters=None):
        """Check every ACTIVE cluster (or ``clusters``) against its provider; record each report
        and an event when a cluster starts or stops drifting. Returns {cluster id: report}."""
        clusters = self.clusters() if clusters is None else clusters
        reports = drift.check(self.store, self.runner, clusters) if clusters else {}
        self.counters["drift"] += 1
        for cluster_id, report in reports.items():
            self.save(cluster_id, report)
        return reports

    def save(self, cluster_id, report):
        from cluster_server.health.state import drift as last

        before = last(self.store, cluster_id)
        event = None
        if report["drifted"] and not (before and before["drifted"]):
            event = "drift: " + describe(report)
        elif not report["drifted"] and before and before["drifted"]:
            event = "drift: the provider matches the store again"
        save_drift(self.store, cluster_id, report, event)

    def _drift_round(self):
        try:
            self.drift_round()
        except Exception:  # noqa: BLE001 (a provider that cannot answer now may later)
            LOG.exception("drift round")


def describe(report):
    """One line for an event or a show: what drifted."""
    parts = [f"{n['node']} {n['state']}" + (f" ({n['detail']})" if n["detail"] else "")
             for n in report["nodes"] if n["state"] != "ok"]
    if report["orphans"]:
        parts.append(f"{len(report['orphans'])} orphan(s): " +
                     ", ".join(o["resource_id"] for o in report["orphans"]))
    return "; ".join(parts) or "no drift"
