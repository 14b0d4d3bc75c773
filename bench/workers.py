"""Benchmark of the Celery executor beside the threads executor, on the same DAGs.

Usage: python bench/workers.py [--nodes 1000] [--skip a,b,c]

A real redis-server (Debian's, tests/install.d/20-redis.sh) on a free loopback port and four
real ``shoal worker start`` processes (prefork, concurrency 16): worker i serves the queues
``bench.k`` for every k >= i, so a run sent to ``bench.1`` has one worker, ``bench.2`` two and
``bench.4`` all four.

(a) Throughput: the executor (real SQLite store, 64 tasks in flight) runs a create of 100 nodes
    (1,503 tasks) whose every task is one no-op call made by a worker, through the same path
    as the celery executor's calls (WorkerClient: publish, the worker's claim, STARTED and
    result in Redis, the server's subscriber). Beside it, the same DAG on threads with no-op
    tasks. Figure: tasks / wall time. Target: >= 1,000 tasks/s with 4 workers.
(b) Makespan: a 200-node create (db, app runtime-requiring db, lb runtime-requiring app; 1,403
    tasks) whose every task sleeps 200 ms on a worker; 1, 2 and 4 workers x concurrency 16,
    with 64 tasks in flight, and 4 workers with 128 and 256. Figure: wall time / critical
    path. Target <= 1.3 with 4 workers. With 64 in flight the bound is the work itself:
    1,400 x 0.2 s over 64 is twice the critical path.
(c) End to end: ``shoal cluster create --size N --wait`` of the testkit's fake-stack on the fake
    provider, through the CLI, with the server on threads and on celery (the four workers on
    ``shoal.default``). Figures: wall time of the command and the server's peak RSS (VmHWM).
    Targets: under 60 s and under 400 MB at N = 1,000.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from executor import (NoOp, critical_path, nodes, service, store_plan,  # noqa: E402
                      timed_runs)

from cluster_server.executor import (Executor, Settings, TaskOutcome,  # noqa: E402
                                     ThreadDispatch)
from cluster_server.planner import plan_change  # noqa: E402
from cluster_server.store import Store  # noqa: E402
from cluster_server.workers.client import WorkerClient  # noqa: E402
from tests.brokers import Redis, Worker  # noqa: E402
from tests.conftest import SHOAL  # noqa: E402

SLEEP = 0.2
IN_FLIGHT = 64


class CeleryCall:
    """Every task: one call made by a worker of ``queue`` (after ``sleep`` seconds there)."""

    def __init__(self, client, queue, sleep=0.0):
        self.client, self.queue, self.sleep = client, queue, sleep
        self.consumed = []

    def run(self, task, operation):
        pending = self.client.send(f"{task['id']}@{task['attempts'] + 1}.{uuid.uuid4().hex[:6]}",
                                   {"method": "noop", "args": {"sleep": self.sleep}}, self.queue)
        outcome = self.client.wait(pending)
        self.consumed.append(pending.call_id)  # removed at the run's end, as the executor does
        return TaskOutcome(bool(outcome.get("ok")), outcome.get("message", ""))


def celery_runs(specs, client, queue, sleep, runs, in_flight=IN_FLIGHT):
    times = []
    with tempfile.TemporaryDirectory() as home:
        store = Store(Path(home) / "shoal.db")
        runner = CeleryCall(client, queue, sleep)
        executor = Executor(store, runner, Settings(workers=in_flight),
                            dispatch=ThreadDispatch(in_flight))
        for number in range(runs):
            operation = store_plan(store, specs, number)
            started = time.perf_counter()
            ok, failed = executor.run(operation)
            times.append(time.perf_counter() - started)
            assert ok and failed is None, (ok, failed)
            client.consumed(runner.consumed)
            runner.consumed = []
        executor.dispatch.shutdown()
    return times


def throughput_dag():
    catalog = {s["name"]: s for s in (
        service("base", actions=("install", "configure")),
        service("db", install_requires=["base"]),
        service("app", install_requires=["base"], runtime_requires=["db"]),
        service("agent"),
        service("logs", actions=("install", "configure")))}
    return plan_change([], nodes([(3, ["base", "db", "agent", "logs"]),
                                  (97, ["base", "app", "agent", "logs"])]), catalog)


def makespan_dag():
    catalog = {s["name"]: s for s in (
        service("db"), service("app", runtime_requires=["db"]),
        service("lb", runtime_requires=["app"]))}
    return plan_change([], nodes([(10, ["db"]), (170, ["app"]), (20, ["lb"])]), catalog)


def bench_throughput(client):
    specs = throughput_dag()
    threads = len(specs) / statistics.median(timed_runs(specs, NoOp(), workers=32, runs=3))
    print(f"(a) throughput, {len(specs)} no-op tasks on 100 nodes, {IN_FLIGHT} in flight:")
    print(f"    threads executor: {threads:,.0f} tasks/s (median of 3)")
    for count in (1, 2, 4):
        times = celery_runs(specs, client, f"bench.{count}", 0.0, runs=3)
        print(f"    celery, {count} worker(s) x 16: {len(specs) / statistics.median(times):,.0f}"
              f" tasks/s (median of 3; target >= 1,000 with 4)", flush=True)


def bench_makespan(client):
    specs = makespan_dag()
    path = critical_path(specs, SLEEP)
    work = sum(SLEEP for t in specs if t.action != "JOIN")
    print(f"(b) makespan, 200-node create, {len(specs)} tasks of {SLEEP * 1000:.0f} ms, "
          f"critical path {path:.1f} s:")
    # A worker of concurrency 16 makes up to 16 messages at once, each of up to 8 calls side by
    # side; what bounds the run is then the server's tasks in flight (SHOAL_PARALLELISM).
    for count, in_flight in ((1, 64), (2, 64), (4, 64), (4, 128), (4, 256)):
        times = celery_runs(specs, client, f"bench.{count}", SLEEP, runs=1, in_flight=in_flight)
        bound = max(path, work / in_flight)
        print(f"    celery, {count} worker(s) x 16, {in_flight} tasks in flight: {times[0]:.2f} s"
              f" = {times[0] / path:.2f} x the critical path; the work over {in_flight} in flight"
              f" alone takes {work / in_flight:.2f} s ({times[0] / bound:.2f} x the larger; "
              f"target <= 1.3 x the critical path with 4)", flush=True)


def peak_rss(home):
    import json

    pid = json.loads((Path(home) / "server.json").read_text())["pid"]
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def bench_end_to_end(tmp, redis, size):
    from shoal_testkit import catalog

    root = catalog.write(Path(tmp) / "catalog")
    print(f"(c) shoal cluster create --size {size} --wait on the fake provider, through the CLI:")
    for kind in ("threads", "celery"):
        home = Path(tmp) / f"home-{kind}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
        env.update(SHOAL_HOME=str(home), SHOAL_DEFAULT_CATALOG="0", SHOAL_POLL_BASE="0.2",
                   SHOAL_MAX_NODES=str(max(size, 10)))
        if kind == "celery":
            env.update(SHOAL_EXECUTOR="celery", SHOAL_BROKER=redis.url)

        def shoal(*args):
            return subprocess.run([SHOAL, *map(str, args)], env=env, check=True,
                                  capture_output=True, text=True)

        shoal("server", "start")
        try:
            shoal("catalog", "import", root)
            started = time.perf_counter()
            shoal("cluster", "create", "big", "--template", "fake-stack", "--size", size,
                  "--wait")
            wall = time.perf_counter() - started
            rss = peak_rss(home)
        finally:
            shoal("server", "stop")
        print(f"    {kind}: {wall:.1f} s, server peak RSS {rss:.0f} MB "
              f"(targets: < 60 s, < 400 MB at 1,000)", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--skip", default="")
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        redis = Redis(Path(tmp) / "redis")
        cloud = Path(tmp) / "cloud"
        cloud.mkdir()
        workers = []
        try:
            for i in (1, 2, 3, 4):
                queues = ",".join(f"bench.{k}" for k in (1, 2, 4) if k >= i) + ",shoal.default"
                workers.append(Worker(tmp, redis.url, f"bench{i}", queues, 16,
                                      env={"SHOAL_HOME": str(cloud)}))
            client = WorkerClient(redis.url)
            if "a" not in skip:
                bench_throughput(client)
            if "b" not in skip:
                bench_makespan(client)
            if "c" not in skip:
                bench_end_to_end(tmp, redis, args.nodes)
            client.stop()
        finally:
            for worker in workers:
                worker.stop()
            redis.stop()
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
