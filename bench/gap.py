"""Benchmark of the idle gap between a node's steps: how long a node's CONFIGURE waits after its
INSTALL ended, and its START after its CONFIGURE, with the real executor on a real SQLite store.

Usage: python bench/gap.py

A create of 30 nodes, one service each (as bench/fanout.py at 30 hosts), every action sleeping
25 ms (what an INSTALL, CONFIGURE or START over a warm SSH connection took there). Figures, from
the task table's own timestamps (started_at, finished_at): the median and 90th percentile gap
per step, for the old default of worker threads on this machine (max(8, 4 per core)), and the
new default (SHOAL_PARALLELISM unset). Target: median at most 10 ms. No containers: this isolates
the executor's part of the gap that bench/fanout.py measured end to end (81 ms median).
"""

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from executor import nodes, service, store_plan  # noqa: E402  (bench/executor.py's helpers)

from cluster_server.engine import settings_from_env  # noqa: E402
from cluster_server.executor import Executor, Settings, TaskOutcome  # noqa: E402
from cluster_server.planner import plan_change  # noqa: E402
from cluster_server.store import Store  # noqa: E402

HOSTS = 30
ACTION_TIME = 0.025
STEPS = (("INSTALL", "CONFIGURE"), ("CONFIGURE", "START"))


class Sleep:
    def run(self, task, operation):
        time.sleep(ACTION_TIME)
        return TaskOutcome(True)


def gaps(store, op_id):
    """Per step, the gaps (seconds) between a node's first action ending and its next starting."""
    rows = store.db.execute("SELECT node_id, action, started_at, finished_at FROM tasks"
                            " WHERE operation_id = ? AND service IS NOT NULL", [op_id]).fetchall()
    at = {(node, action): (started, finished) for node, action, started, finished in rows}
    found = {step: [] for step in STEPS}
    for (first, then) in STEPS:
        for node in {n for n, _ in at}:
            if (node, first) in at and (node, then) in at:
                found[(first, then)].append(at[(node, then)][0] - at[(node, first)][1])
    return found


def measure(workers, runs=5):
    catalog = {"web": service("web", actions=("install", "configure", "start"))}
    specs = plan_change([], nodes([(HOSTS, ["web"])]), catalog)
    found = {step: [] for step in STEPS}
    with tempfile.TemporaryDirectory() as home:
        store = Store(Path(home) / "shoal.db")
        executor = Executor(store, Sleep(), Settings(workers=workers))
        for number in range(runs):
            operation = store_plan(store, specs, number)
            ok, failed = executor.run(operation)
            assert ok and failed is None
            for step, values in gaps(store, operation["id"]).items():
                found[step] += values
        executor.dispatch.shutdown()
    return found


def main():
    os.environ.pop("SHOAL_PARALLELISM", None)
    old = max(8, 4 * (os.cpu_count() or 2))
    new = settings_from_env().workers
    print(f"{HOSTS} nodes, one service, actions of {ACTION_TIME * 1000:.0f} ms, "
          f"{os.cpu_count()} cores; gap = next step's start - this step's end (task table)")
    print(f"{'workers':>8} {'step':<22} {'median ms':>10} {'p90 ms':>8}")
    for label, workers in ((f"{old} (old)", old), (f"{new} (new)", new)):
        for step, values in measure(workers).items():
            values.sort()
            p90 = values[int(len(values) * 0.9)]
            print(f"{label:>8} {' -> '.join(step):<22} {statistics.median(values) * 1000:>10.1f}"
                  f" {p90 * 1000:>8.1f}")


if __name__ == "__main__":
    main()
