"""Benchmark of the executor: dispatch throughput and how close a run comes to its critical path.

Usage: python bench/executor.py

(a) Throughput: a create of 700 nodes (five services; ~10,500 tasks) whose actions do nothing,
    run by the real executor (32 worker threads) on a real SQLite store in a temp dir. Figure:
    tasks (JOINs included) divided by the wall time of ``Executor.run``. Target >= 2,000/s.
(b) Makespan (median of 9 runs): a create of 200 nodes (db, app runtime-requiring db, lb runtime-requiring app; one
    service per node) whose actions each sleep 50 ms, 256 workers. Figure: wall time of
    ``Executor.run`` divided by the critical path (the longest dependency path, each non-JOIN
    task 50 ms). No node has more work than the critical path, so it is a true lower bound.
    Target <= 1.10. For reference it also times the same DAG on the same threads without the
    executor (no store, no bookkeeping): what this machine's Python threads cost by themselves.
Like a server, each benchmark keeps one store and one executor (one thread pool) and runs the
plan several times as new operations; each figure is the median of those runs.
"""

import json
import queue
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cluster_server.executor import (JOIN, Executor, Settings, TaskOutcome,  # noqa: E402
                                     ThreadDispatch)
from cluster_server.planner import plan_change  # noqa: E402
from cluster_server.store import Store  # noqa: E402

ACTIONS = ("install", "configure", "initialize", "start", "stop", "remove")
TASK_TIME = 0.05


def service(name, runtime_requires=(), install_requires=(), actions=ACTIONS):
    return {"name": name,
            "dependencies": {"install": {"requires": list(install_requires)},
                             "runtime": {"requires": list(runtime_requires)}},
            "provisioner": {"actions": {a: {"type": "shell", "fields": {}} for a in actions}}}


def nodes(counts):
    """counts: [(number of nodes, services on each)] -> node layouts n1, n2, ..."""
    result = []
    for number, services in counts:
        for _ in range(number):
            result.append({"id": f"n{len(result) + 1}", "services": list(services),
                           "hardwaretype": "small", "imagetype": "img"})
    return result


def store_plan(store, specs, number):
    """Write a plan as operations.create does: one transaction, ids "<op>/<spec id>"."""
    cluster_id, op_id = f"c{number}", f"op-{number}"
    now = time.time()
    with store.write() as db:
        db.execute("INSERT INTO clusters (id, tenant, name, template, provider, status, spec,"
                   " created_at, updated_at) VALUES (?, 'default', ?, 't', 'p', 'CREATING', '{}',"
                   " ?, ?)", [cluster_id, f"bench-{number}", now, now])
        db.execute("INSERT INTO operations (id, cluster_id, kind, status, params, created_at)"
                   " VALUES (?, ?, 'create', 'RUNNING', '{}', ?)", [op_id, cluster_id, now])
        db.conn.executemany(
            "INSERT INTO tasks (id, operation_id, node_id, action, service, depends_on, status,"
            " seq) VALUES (?, ?, ?, ?, ?, ?, 'PENDING', ?)",
            [(f"{op_id}/{t.id}", op_id, t.node_id or "", t.action, t.service,
              json.dumps([f"{op_id}/{d}" for d in t.depends_on]), seq)
             for seq, t in enumerate(specs)])
    return {"id": op_id, "cluster_id": cluster_id}


def critical_path(specs, cost):
    """Longest path through the DAG (specs are in dependency order), JOINs free."""
    finish = {}
    for t in specs:
        start = max((finish[d] for d in t.depends_on), default=0.0)
        finish[t.id] = start + (0.0 if t.action == JOIN else cost)
    return max(finish.values())


class NoOp:
    def run(self, task, operation):
        return TaskOutcome(True)


class Sleep:
    def run(self, task, operation):
        time.sleep(TASK_TIME)
        return TaskOutcome(True)


def timed_runs(specs, runner, workers, runs):
    """Run the plan ``runs`` times, each as a new operation, like a server would: one store and
    one executor (so one thread pool, started by the first run) for all of them."""
    times = []
    with tempfile.TemporaryDirectory() as home:
        store = Store(Path(home) / "shoal.db")
        executor = Executor(store, runner, Settings(workers=workers))
        for number in range(runs):
            operation = store_plan(store, specs, number)
            started = time.perf_counter()
            ok, failed = executor.run(operation)
            times.append(time.perf_counter() - started)
            left = store.db.execute("SELECT COUNT(*) FROM tasks WHERE operation_id = ? AND"
                                    " status != 'SUCCEEDED'", [operation["id"]]).fetchone()[0]
            assert ok and failed is None and left == 0, (ok, failed, left)
        executor.dispatch.shutdown()
    return times


def bare_runs(specs, workers, runs):
    """The same DAG on the executor's threads (ThreadDispatch) with none of the executor: no
    store, no per-node rule, no retries. What this machine's threads cost by themselves, to read
    the executor's figure against."""
    dependents = {t.id: [] for t in specs}
    for t in specs:
        for dep in t.depends_on:
            dependents[dep].append(t.id)
    joins = {t.id for t in specs if t.action == JOIN}
    dispatch = ThreadDispatch(workers)
    times = []
    for _ in range(runs):
        done = queue.SimpleQueue()
        waiting = {t.id: len(t.depends_on) for t in specs}
        ready = [t.id for t in specs if not t.depends_on]
        remaining = len(specs)
        started = time.perf_counter()
        while remaining:
            while ready:
                task_id = ready.pop()
                if task_id in joins:
                    done.put(task_id)
                else:
                    dispatch.submit(lambda task_id=task_id: (time.sleep(TASK_TIME),
                                                             done.put(task_id)))
            finished = [done.get()]
            while not done.empty():
                finished.append(done.get())
            for task_id in finished:
                remaining -= 1
                for child in dependents[task_id]:
                    waiting[child] -= 1
                    if waiting[child] == 0:
                        ready.append(child)
        times.append(time.perf_counter() - started)
    dispatch.shutdown()
    return times


def throughput(runs=5):
    catalog = {s["name"]: s for s in (
        service("base", actions=("install", "configure")),
        service("db", install_requires=["base"]),
        service("app", install_requires=["base"], runtime_requires=["db"]),
        service("agent"),
        service("logs", actions=("install", "configure")))}
    specs = plan_change([], nodes([(20, ["base", "db", "agent", "logs"]),
                                   (680, ["base", "app", "agent", "logs"])]), catalog)
    times = timed_runs(specs, NoOp(), workers=32, runs=runs)
    rate = len(specs) / statistics.median(times)
    print(f"(a) throughput: {len(specs)} no-op tasks on 700 nodes, 32 workers: "
          f"{rate:,.0f} tasks/s (median of {runs}; target >= 2,000/s)")
    return rate


def makespan(runs=9):
    catalog = {s["name"]: s for s in (
        service("db"), service("app", runtime_requires=["db"]),
        service("lb", runtime_requires=["app"]))}
    specs = plan_change([], nodes([(10, ["db"]), (170, ["app"]), (20, ["lb"])]), catalog)
    path = critical_path(specs, TASK_TIME)
    per_node = {}
    for t in specs:
        if t.action != JOIN:
            per_node[t.node_id] = per_node.get(t.node_id, 0) + TASK_TIME
    assert max(per_node.values()) <= path
    times = timed_runs(specs, Sleep(), workers=256, runs=runs)
    bare = bare_runs(specs, workers=256, runs=runs)
    ratio = statistics.median(times) / path
    print(f"(b) makespan: 200-node create, {len(specs)} tasks of 50 ms, 256 workers: "
          f"{statistics.median(times):.3f} s over a critical path of {path:.3f} s = "
          f"{ratio:.3f} (median of {runs}; target <= 1.10); first run, threads not yet "
          f"started: {times[0] / path:.3f}")
    print(f"    the same DAG on the same threads, without the executor and its store: "
          f"{statistics.median(bare) / path:.3f}")
    return ratio


if __name__ == "__main__":
    throughput()
    makespan()
