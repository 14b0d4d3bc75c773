"""Runs one operation's stored task graph: no stage barriers, retries with backoff, one action at a
time per node, every state change in SQLite so a restarted server carries on.

The executor knows nothing of providers or automators: it hands each ready task to a ``runner``
(``runner.run(task, operation) -> TaskOutcome``) through a ``dispatch`` interface: ``submit(fn)``
runs ``fn`` somewhere and ``fn`` hands the outcome back to the executor. The default dispatch is
a pool of threads; a distributed one can replace it.
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
# A worker's message that its task now waits on a future (a node coming up) without a thread.
PARKED = "PARKED"
# Actions whose intent is committed before they start: they make something a crash could orphan.
INTENT_ACTIONS = ("CREATE",)
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


def _settled(future):
    """The TaskOutcome a parked task's future came to."""
    try:
        outcome = future.result()
    except Exception as exc:
        LOG.exception("a parked task failed")
        return TaskOutcome(False, f"internal error: {exc}")
    if not isinstance(outcome, TaskOutcome):
        return TaskOutcome(False, f"internal error: a parked task gave {outcome!r}")
    return outcome


class ThreadDispatch:
    """The default dispatch: worker threads shared by every running operation.

    Plain threads reading one queue. A ThreadPoolExecutor costs a future, two locks and a
    semaphore per task, more than the executor's own work on it (bench/executor.py). The
    threads are daemons: a server that exits leaves the tasks it was running RUNNING in the
    store, and its next start runs them again, as after a crash.
    """

    def __init__(self, workers):
        self.workers = workers
        self.queue = queue.SimpleQueue()
        self.threads = 0
        self.lock = threading.Lock()

    def submit(self, fn):
        """Run ``fn`` on a worker thread; ``fn`` hands back its result itself."""
        self.queue.put(fn)
        # One more thread per task until there are ``workers``: an operation has at most
        # ``workers`` tasks in flight, so a lone operation never waits for a thread.
        if self.threads < self.workers:
            with self.lock:
                if self.threads < self.workers:
                    self.threads += 1
                    threading.Thread(target=self._work, daemon=True,
                                     name=f"shoal-task-{self.threads}").start()

    def _work(self):
        while True:
            fn = self.queue.get()
            if fn is None:
                return
            try:
                fn()
            except Exception:  # keep the thread: the pool must not shrink
                LOG.exception("dispatched work crashed")

    def shutdown(self):
        """Drop what has not started and stop the threads once their current task ends."""
        with self.lock:
            while True:
                try:
                    self.queue.get_nowait()
                except queue.Empty:
                    break
            for _ in range(self.threads):
                self.queue.put(None)
            self.threads = self.workers  # start no new thread after this


class Control:
    """What the outside world asks of a running operation: pause, resume, cancel."""

    def __init__(self):
        self.paused = False
        self.cancelled = False
        self.wakeup = None  # set by the executor: a callable that wakes its loop

    def poke(self):
        if self.wakeup:
            self.wakeup()


def load_tasks(store, operation_id, prefix=""):
    rows = store.db.execute(
        "SELECT id, node_id, action, service, depends_on, status, attempts FROM tasks"
        " WHERE operation_id = ? AND substr(id, 1, ?) = ? ORDER BY seq",
        [operation_id, len(prefix), prefix]).fetchall()
    # One parse for every row's list: a json.loads call per row costs more than the query.
    depends_on = json.loads("[" + ",".join(r[4] for r in rows) + "]")
    return [{"id": r[0], "node_id": r[1], "action": r[2], "service": r[3], "depends_on": deps,
             "status": r[5], "attempts": r[6]} for r, deps in zip(rows, depends_on)]


class _RunState:
    """The in-memory side of one run: what each task still waits for, which tasks are ready,
    which nodes are busy, and the results not yet saved."""

    def __init__(self, tasks):
        self.tasks = {t["id"]: t for t in tasks}
        self.results = []   # (task, outcome, finished at) not yet in the store
        self.ready = []     # heap of (key, task id)
        self.parked = {}    # node -> ready task ids waiting for that node to be free
        self.busy = set()   # nodes running an action
        self.failed = None
        open_tasks = [t for t in tasks if t["status"] not in (SUCCEEDED, SKIPPED)]
        self.remaining = len(open_tasks)
        self.waiting = {}   # task id -> number of unfinished predecessors
        self.dependents = {t["id"]: [] for t in open_tasks}
        for task in open_tasks:
            deps = [d for d in task["depends_on"]
                    if self.tasks[d]["status"] not in (SUCCEEDED, SKIPPED)]
            self.waiting[task["id"]] = len(deps)
            for dep in deps:
                self.dependents[dep].append(task["id"])
        # Among ready tasks, the one with the longest chain of work behind it goes first: when
        # tasks compete for a node or a worker, that is what keeps the whole run shortest.
        # Ties go by the plan's order (tasks come sorted by seq).
        first = [t["id"] for t in open_tasks if self.waiting[t["id"]] == 0]
        order, unmet = list(first), dict(self.waiting)
        for task_id in order:  # Kahn's algorithm: the list grows as tasks become ready
            for child in self.dependents[task_id]:
                unmet[child] -= 1
                if unmet[child] == 0:
                    order.append(child)
        work = {}
        for task_id in reversed(order):
            own = 0 if self.tasks[task_id]["action"] == JOIN else 1
            work[task_id] = own + max((work[c] for c in self.dependents[task_id]), default=0)
        # (A task on a cycle never becomes ready; the run stops when nothing else can start.)
        self.key = {t["id"]: (-work.get(t["id"], 0), i) for i, t in enumerate(open_tasks)}
        for task_id in first:
            self.make_ready(task_id)

    def make_ready(self, task_id):
        task = self.tasks[task_id]
        if task["action"] == JOIN:
            # A join only gathers edges ("every A after every B"): nothing to run.
            task["attempts"] += 1
            self.succeeded(task, TaskOutcome(True))
        else:
            heapq.heappush(self.ready, (self.key[task_id], task_id))

    def take_ready(self, limit):
        """Up to ``limit`` ready tasks, at most one per node and none on a busy node."""
        batch = []
        while self.ready and len(batch) < limit:
            task = self.tasks[heapq.heappop(self.ready)[1]]
            if task["node_id"] in self.busy:
                self.parked.setdefault(task["node_id"], []).append(task["id"])
                continue
            self.busy.add(task["node_id"])
            task["status"] = RUNNING
            batch.append(task)
        return batch

    def _finished(self, task, status, outcome):
        task["status"] = status
        self.results.append((task, outcome, time.time()))
        if task["action"] != JOIN:
            self.busy.discard(task["node_id"])
            for task_id in self.parked.pop(task["node_id"], ()):
                heapq.heappush(self.ready, (self.key[task_id], task_id))

    def succeeded(self, task, outcome, release=True):
        self._finished(task, SUCCEEDED, outcome)
        self.remaining -= 1
        if release:
            for child in self.dependents[task["id"]]:
                self.waiting[child] -= 1
                if self.waiting[child] == 0:
                    self.make_ready(child)

    def retrying(self, task, outcome):
        self._finished(task, PENDING, outcome)

    def failed_for_good(self, task, outcome):
        self._finished(task, FAILED, outcome)
        self.failed = self.failed or task["id"]

    def take_results(self):
        results, self.results = self.results, []
        return results


class Executor:
    def __init__(self, store, runner, settings=None, dispatch=None):
        self.store = store
        self.runner = runner
        self.settings = settings or Settings()
        self.dispatch = dispatch or ThreadDispatch(self.settings.workers)

    def run(self, operation, control=None, prefix=""):
        """Run every task of ``operation`` (a dict with at least ``id``) that has not succeeded.

        ``prefix`` limits the run to the tasks whose id starts with it (a rollback runs only
        its own tasks; the operation's failed task keeps its status and output).

        Returns (ok, failed_task_id). Blocks until no task can make progress: all succeeded,
        one failed for good (its dependents are left PENDING), or the operation was cancelled.
        Tasks already running are always let finish; none is left RUNNING in the store.
        """
        control = control or Control()
        done = queue.SimpleQueue()  # (task, outcome) from the workers; None is a poke
        control.wakeup = lambda: done.put(None)
        state = _RunState(load_tasks(self.store, operation["id"], prefix))
        in_flight = 0  # handed out and not finished
        occupying = 0  # of those, the ones holding a worker (not parked on a future)
        parked = set()
        delayed = []  # heap of (due time, task id): retries waiting out their backoff

        while state.remaining and state.failed is None and not control.cancelled:
            while delayed and delayed[0][0] <= time.monotonic():
                state.make_ready(heapq.heappop(delayed)[1])
            batch = []
            if not control.paused:
                # No more tasks handed out than there are workers: a task queued inside the
                # dispatch could no longer be held back by a pause, a cancel or a failure, and
                # its started_at would be wrong. (Per operation: operations running at once
                # can still queue behind each other in a shared dispatch.)
                batch = state.take_ready(self.settings.workers - occupying)
            # The intent (RUNNING) of every task about to start is committed before any of them
            # starts; the results that made them ready are committed right after, off the path
            # from one task to the next. (A crash in between leaves those finished tasks
            # RUNNING too: they are run again, like any task caught running by a crash.)
            # Only a task that makes something (CREATE) needs its intent committed before it
            # starts: any other task caught by a crash is simply run again, RUNNING or not. So
            # the rest are marked together with the latest results, off the path from one task
            # to the next.
            intents = [task for task in batch if task["action"] in INTENT_ACTIONS]
            started_at = time.time()
            self._mark_running(intents, started_at)
            for task in batch:
                in_flight += 1
                occupying += 1
                self.dispatch.submit(self._worker(task, operation, done))
            self._record(state.take_results(),
                         [task for task in batch if task["action"] not in INTENT_ACTIONS],
                         started_at)
            if not in_flight and not delayed and not control.paused:
                break  # nothing running and nothing can start: only a broken graph gets here
            timeout = max(0.0, delayed[0][0] - time.monotonic()) if delayed else None
            try:
                finished = [done.get(timeout=timeout)]
            except queue.Empty:
                continue
            while not done.empty():
                finished.append(done.get())
            for item in finished:
                if item is None:
                    continue
                task, outcome = item
                if outcome is PARKED:
                    occupying -= 1
                    parked.add(task["id"])
                    continue
                in_flight -= 1
                if task["id"] in parked:
                    parked.discard(task["id"])
                else:
                    occupying -= 1
                task["attempts"] += 1
                if outcome.ok:
                    state.succeeded(task, outcome)
                elif outcome.retry and task["attempts"] <= self.settings.retries \
                        and not control.cancelled:
                    state.retrying(task, outcome)
                    delay = min(self.settings.backoff_max,
                                self.settings.backoff_base * 2 ** (task["attempts"] - 1))
                    heapq.heappush(delayed, (time.monotonic() + delay, task["id"]))
                else:
                    state.failed_for_good(task, outcome)

        # Let tasks already running finish, so nothing is left half done behind our back; what
        # they would make ready is not started.
        self._record(state.take_results())
        while in_flight:
            item = done.get()
            if item is None:
                continue
            task, outcome = item
            if outcome is PARKED:
                continue
            in_flight -= 1
            task["attempts"] += 1
            if outcome.ok:
                state.succeeded(task, outcome, release=False)
            else:
                state.failed_for_good(task, outcome)
            self._record(state.take_results())
        ok = state.failed is None and not control.cancelled and not state.remaining
        if not ok:
            # Nothing of this operation runs any more: a task still RUNNING in the store (left by
            # a crash and not reached again) has not started, as far as anyone can tell.
            self._reset_running(operation["id"])
        return ok, state.failed

    def _worker(self, task, operation, done):
        def work():
            try:
                outcome = self.runner.run(task, operation)
            except Exception as exc:  # a runner bug must fail the task, not hang the operation
                LOG.exception("task %s crashed", task["id"])
                outcome = TaskOutcome(False, f"internal error: {exc}")
            if isinstance(outcome, concurrent.futures.Future):
                # The task waits for something else (the poller) to finish it: give the worker
                # back, so a thousand nodes coming up do not hold a thousand threads.
                done.put((task, PARKED))
                outcome.add_done_callback(lambda future: done.put((task, _settled(future))))
                return
            done.put((task, outcome))
        return work

    def _mark_running(self, batch, at):
        # A RUNNING task is one whose effect may or may not have happened: after a crash it is
        # run again (idempotently).
        if batch:
            with self.store.write() as db:
                db.conn.executemany("UPDATE tasks SET status = ?, started_at = ? WHERE id = ?",
                                    [(RUNNING, at, task["id"]) for task in batch])

    def _record(self, results, started=(), started_at=None):
        """Results, and tasks just started (RUNNING), in one transaction."""
        if started:
            with self.store.write():  # the nested writes join this one transaction
                self._mark_running(started, started_at)
                self._record(results)
            return
        if results:
            with self.store.write() as db:
                db.conn.executemany(
                    "UPDATE tasks SET status = ?, attempts = ?, output = ?, finished_at = ?"
                    " WHERE id = ?",
                    [(task["status"], task["attempts"], outcome.output[-OUTPUT_LIMIT:], at,
                      task["id"]) for task, outcome, at in results])

    def _reset_running(self, operation_id):
        with self.store.write() as db:
            db.execute("UPDATE tasks SET status = ? WHERE operation_id = ? AND status = ?",
                       [PENDING, operation_id, RUNNING])
