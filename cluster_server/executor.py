"""Runs one operation's stored task graph: no stage barriers, retries with backoff, one action at a
time per node, every state change in SQLite so a restarted server carries on.

The executor knows nothing of providers or automators: it hands each ready task to a ``runner``
(``runner.run(task, operation) -> TaskOutcome``) through a ``dispatch`` interface (``submit(fn)``
returning a future). The default dispatch is a thread pool; a distributed one can replace it.
"""

import concurrent.futures
import dataclasses
import heapq
import json
import logging
import queue
import threading
import time

LOG = logging.getLogger("shoal.executor")

PENDING, RUNNING, SUCCEEDED, FAILED, SKIPPED = "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "SKIPPED"
JOIN = "JOIN"
OUTPUT_LIMIT = 64 * 1024


@dataclasses.dataclass
class TaskOutcome:
    ok: bool
    output: str = ""
    retry: bool = True  # False: a failure retrying cannot fix (bad config, missing plugin)


@dataclasses.dataclass
class Settings:
    workers: int = 16
    retries: int = 2  # attempts after the first
    backoff_base: float = 1.0  # seconds before the first retry; doubles each time
    backoff_max: float = 30.0


class ThreadDispatch:
    """The default dispatch: a pool of worker threads shared by every running operation."""

    def __init__(self, workers):
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers,
                                                          thread_name_prefix="shoal-task")

    def submit(self, fn):
        return self.pool.submit(fn)

    def shutdown(self):
        self.pool.shutdown(wait=False, cancel_futures=True)


class Control:
    """What the outside world asks of a running operation: pause, resume, cancel."""

    def __init__(self):
        self.paused = False
        self.cancelled = False
        self.wakeup = None  # set by the executor: a callable that wakes its loop

    def poke(self):
        if self.wakeup:
            self.wakeup()


def load_tasks(store, operation_id):
    rows = store.db.execute(
        "SELECT id, node_id, action, service, depends_on, status, attempts FROM tasks"
        " WHERE operation_id = ? ORDER BY seq", [operation_id]).fetchall()
    return [{"id": r[0], "node_id": r[1], "action": r[2], "service": r[3],
             "depends_on": json.loads(r[4]), "status": r[5], "attempts": r[6]} for r in rows]


class Executor:
    def __init__(self, store, runner, settings=None, dispatch=None):
        self.store = store
        self.runner = runner
        self.settings = settings or Settings()
        self.dispatch = dispatch or ThreadDispatch(self.settings.workers)

    def run(self, operation, control=None):
        """Run every task of ``operation`` (a dict with at least ``id``) that has not succeeded.

        Returns (ok, failed_task_id). Blocks until no task can make progress: all succeeded,
        one failed for good (its dependents are left PENDING), or the operation was cancelled.
        """
        control = control or Control()
        tasks = {t["id"]: t for t in load_tasks(self.store, operation["id"])}
        waiting = {}  # task id -> number of unfinished predecessors
        dependents = {task_id: [] for task_id in tasks}
        finished_states = (SUCCEEDED, SKIPPED)
        for task in tasks.values():
            open_deps = [d for d in task["depends_on"] if tasks[d]["status"] not in finished_states]
            waiting[task["id"]] = len(open_deps)
            for dep in task["depends_on"]:
                dependents[dep].append(task["id"])
        done = queue.SimpleQueue()
        control.wakeup = lambda: done.put(None)
        ready = [t for t in tasks.values()
                 if t["status"] not in finished_states and waiting[t["id"]] == 0]
        ready.sort(key=lambda t: t["id"])
        busy_nodes = set()
        delayed = []  # heap of (due time, task id): retries waiting out their backoff
        in_flight = 0
        failed = None
        remaining = sum(1 for t in tasks.values() if t["status"] not in finished_states)

        while remaining and failed is None:
            if control.cancelled:
                break
            now = time.monotonic()
            while delayed and delayed[0][0] <= now:
                ready.append(tasks[heapq.heappop(delayed)[1]])
            if not control.paused:
                batch, later = [], []
                for task in ready:
                    if task["action"] == JOIN:
                        # A join only gathers edges ("every A after every B"): nothing to run.
                        in_flight += 1
                        done.put((task, TaskOutcome(True)))
                    elif task["node_id"] in busy_nodes:
                        later.append(task)
                    else:
                        busy_nodes.add(task["node_id"])
                        batch.append(task)
                ready = later
                if batch:
                    self._mark_running(batch)
                    for task in batch:
                        in_flight += 1
                        self.dispatch.submit(self._worker(task, operation, done))
            if not in_flight and not delayed and (control.paused or not ready):
                if control.paused:
                    done.get()  # sleep until resumed or cancelled
                    continue
                break  # nothing running and nothing can start: stuck (should not happen)
            timeout = max(0.0, delayed[0][0] - time.monotonic()) if delayed else None
            try:
                item = done.get(timeout=timeout)
            except queue.Empty:
                continue
            finished = []
            while item is not None or not done.empty():
                if item is not None:
                    finished.append(item)
                try:
                    item = done.get_nowait()
                except queue.Empty:
                    break
            if not finished:
                continue
            results = []
            for task, outcome in finished:
                in_flight -= 1
                busy_nodes.discard(task["node_id"])
                task["attempts"] += 1
                if outcome.ok:
                    task["status"] = SUCCEEDED
                    remaining -= 1
                    for child in dependents[task["id"]]:
                        waiting[child] -= 1
                        if waiting[child] == 0:
                            ready.append(tasks[child])
                elif outcome.retry and task["attempts"] <= self.settings.retries \
                        and not control.cancelled:
                    task["status"] = PENDING
                    delay = min(self.settings.backoff_max,
                                self.settings.backoff_base * 2 ** (task["attempts"] - 1))
                    heapq.heappush(delayed, (time.monotonic() + delay, task["id"]))
                else:
                    task["status"] = FAILED
                    failed = failed or task["id"]
                results.append((task, outcome))
            self._record(results)

        # Let tasks already running finish, so nothing is left half done behind our back.
        while in_flight:
            task, outcome = done.get() or (None, None)
            if task is None:
                continue
            in_flight -= 1
            task["attempts"] += 1
            task["status"] = SUCCEEDED if outcome.ok else FAILED
            if not outcome.ok:
                failed = failed or task["id"]
            self._record([(task, outcome)])
        if control.cancelled:
            self._reset_unfinished(operation["id"])
        return failed is None and not control.cancelled and remaining == 0, failed

    def _worker(self, task, operation, done):
        def work():
            try:
                outcome = self.runner.run(task, operation)
            except Exception as exc:  # a runner bug must fail the task, not hang the operation
                LOG.exception("task %s crashed", task["id"])
                outcome = TaskOutcome(False, f"internal error: {exc}")
            done.put((task, outcome))
        return work

    def _mark_running(self, batch):
        # The intent, committed before any task of the batch starts: after a crash, a RUNNING
        # task is one whose effect may or may not have happened, and is run again (idempotently).
        now = time.time()
        with self.store.write() as db:
            db.conn.executemany(
                "UPDATE tasks SET status = ?, started_at = ? WHERE id = ?",
                [(RUNNING, now, task["id"]) for task in batch])

    def _record(self, results):
        now = time.time()
        with self.store.write() as db:
            db.conn.executemany(
                "UPDATE tasks SET status = ?, attempts = ?, output = ?, finished_at = ?"
                " WHERE id = ?",
                [(task["status"], task["attempts"], outcome.output[-OUTPUT_LIMIT:], now,
                  task["id"]) for task, outcome in results])

    def _reset_unfinished(self, operation_id):
        with self.store.write() as db:
            db.execute("UPDATE tasks SET status = ? WHERE operation_id = ? AND status = ?",
                       [PENDING, operation_id, RUNNING])
