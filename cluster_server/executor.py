"""Runs one operation's stored task graph: no stage barriers, retries with backoff, one action at a
time per node, every state change in SQLite so a restarted server carries on.

The executor knows nothing of providers or automators: it hands each ready task to a ``runner``
(``runner.run(task, operation) -> TaskOutcome``, or a Future of one) through a ``dispatch``
interface: ``submit(fn)`` runs ``fn`` somewhere; ``fn`` runs the task, settles its outcome and
goes on with what that made ready. The default dispatch is a pool of threads; the Celery one
(``cluster_server.workers``) runs the executor's work on the same threads and ``bind``s the runner
so that its plugin calls go to Celery workers on other machines. ``make_dispatch`` picks one.
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
# Actions whose intent is committed before they start: they make something a crash could orphan.
INTENT_ACTIONS = ("CREATE",)
OUTPUT_LIMIT = 64 * 1024


@dataclasses.dataclass
class TaskOutcome:
    ok: bool
    output: str = ""
    retry: bool = True  # False: a failure retrying cannot fix (bad config, missing plugin)
    # True: the task never began (its call was taken back from a worker queue on a pause): it
    # is PENDING again and starts when the operation goes on (a new attempt: its calls need new
    # ids), without using up a retry.
    requeue: bool = False


class NotStarted(Exception):
    """Raised by a runner whose task never began: a pause took its call back from the queue
    before any worker had it."""


@dataclasses.dataclass
class Settings:
    workers: int = 16
    retries: int = 2  # attempts after the first
    backoff_base: float = 1.0  # seconds before the first retry; doubles each time
    backoff_max: float = 30.0
    executor: str = "threads"  # "threads" or "celery": where tasks run (make_dispatch)
    broker: str = ""  # the Celery broker's URL (celery only)


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

    def bind(self, runner):
        """The runner the executor calls: on threads, the runner itself (another dispatch may
        give one that sends its plugin calls elsewhere)."""
        return runner

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


EXECUTORS = ("threads", "celery")


def make_dispatch(settings):
    """The dispatch ``settings.executor`` names: threads (the default) or Celery workers."""
    if settings.executor == "celery":
        from cluster_server.workers.dispatch import CeleryDispatch

        return CeleryDispatch(settings.workers, settings.broker)
    return ThreadDispatch(settings.workers)


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
        self.results = []   # (id, status, attempts, output, finished at) not yet in the store
        self.ready = []     # heap of (key, task id)
        self.parked = {}    # node -> ready task ids waiting for that node to be free
        self.busy = set()   # nodes running an action
        self.failed = None
        finished = {t["id"] for t in tasks if t["status"] in (SUCCEEDED, SKIPPED)}
        open_tasks = [t for t in tasks if t["id"] not in finished]
        self.remaining = len(open_tasks)
        self.waiting = {}   # task id -> number of unfinished predecessors
        self.dependents = dependents = {t["id"]: [] for t in open_tasks}
        for task in open_tasks:
            task_id, unmet = task["id"], 0
            for dep in task["depends_on"]:
                if dep not in finished:
                    unmet += 1
                    dependents[dep].append(task_id)
            self.waiting[task_id] = unmet
        # Among ready tasks, the one with the longest chain of work behind it goes first: when
        # tasks compete for a node or a worker, that is what keeps the whole run shortest.
        # Ties go by the plan's order (tasks come sorted by seq).
        work = self._work(reversed(open_tasks))  # the planner's order is topological
        if work is None:
            work = self._work(reversed(self._topological(open_tasks)), strict=False)
        self.key = {t["id"]: (-work.get(t["id"], 0), i) for i, t in enumerate(open_tasks)}
        for task_id in [t["id"] for t in open_tasks if not self.waiting[t["id"]]]:
            self.make_ready(task_id)  # (a JOIN made ready makes its dependents ready at once)

    def _work(self, backwards, strict=True):
        """Task id -> the number of tasks on the longest chain from it (JOINs are free).
        ``strict``: None when ``backwards`` has a task before one that depends on it; else such
        a dependent (on a cycle, left out of the order) counts for nothing."""
        work = {}
        for task in backwards:
            most = 0
            for child in self.dependents[task["id"]]:
                if child not in work:
                    if strict:
                        return None
                    continue
                if work[child] > most:
                    most = work[child]
            work[task["id"]] = most + (task["action"] != JOIN)
        return work

    def _topological(self, tasks):
        """Kahn's algorithm. A task on a cycle is left out: it never becomes ready, and the run
        stops when nothing else can start."""
        order = [t for t in tasks if not self.waiting[t["id"]]]
        unmet = dict(self.waiting)
        for task in order:  # the list grows as tasks become ready
            for child in self.dependents[task["id"]]:
                unmet[child] -= 1
                if not unmet[child]:
                    order.append(self.tasks[child])
        return order

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
        # What to write, as it is now: the task may run again before the write.
        self.results.append((task["id"], status, task["attempts"], outcome.output[-OUTPUT_LIMIT:],
                             time.time()))
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

    def requeue(self, task, outcome, ready=True):
        task["requeued"] = task.get("requeued", 0) + 1
        self._finished(task, PENDING, outcome)
        if ready:
            heapq.heappush(self.ready, (self.key[task["id"]], task["id"]))

    def failed_for_good(self, task, outcome):
        self._finished(task, FAILED, outcome)
        self.failed = self.failed or task["id"]

    def take_results(self):
        results, self.results = self.results, []
        return results


class _Run:
    """One run of an operation's tasks.

    The worker that finishes a task settles it and starts what that made ready: the first such
    task on its own thread, the others through the dispatch. So a node's chain of actions goes
    from one to the next with no hand-off between threads, and no task waits for a central loop
    to notice its predecessor ended. The caller's thread only records in the store what the
    workers did (in batches, off their path), wakes retries whose backoff is over, and waits for
    the end. Everything in ``state`` and the counters below is guarded by ``lock``.
    """

    FLUSH = 0.05  # seconds between writes of results while tasks keep finishing

    def __init__(self, executor, operation, control, tasks):
        self.store = executor.store
        self.executor = executor
        self.runner = executor.runner
        self.settings = executor.settings
        self.dispatch = executor.dispatch
        self.operation = operation
        self.control = control
        self.state = _RunState(tasks)
        self.lock = threading.Lock()
        self.wake = threading.Event()
        control.wakeup = self.wake.set
        self.in_flight = 0  # handed out and not finished
        self.occupying = 0  # of those, the ones holding a worker (not parked on a future)
        self.parked = set()
        self.delayed = []  # heap of (due time, task id): retries waiting out their backoff
        self.started = []  # (task, started at) of tasks whose RUNNING is not yet recorded
        self.idle = False  # the recording thread sleeps until something happens

    # -- under the lock ------------------------------------------------------------------------

    def _stopping(self):
        return self.state.failed is not None or self.control.cancelled

    def _take(self):
        """Claim the ready tasks that may start now.

        No more tasks handed out than there are workers: a task queued inside the dispatch
        could no longer be held back by a pause, a cancel or a failure. (Per operation:
        operations running at once can still queue behind each other in a shared dispatch.)
        """
        if self.control.paused or self._stopping():
            return []
        batch = self.state.take_ready(self.settings.workers - self.occupying)
        if batch:
            self.in_flight += len(batch)
            self.occupying += len(batch)
            # Started now, as far as the store is concerned (a task handed to the dispatch
            # starts as soon as a thread takes it, as the limit above leaves one free).
            now = time.time()
            for task in batch:
                if task["action"] not in INTENT_ACTIONS:
                    self.started.append((task, now))
            self._note()
        return batch

    def _over(self):
        if self.in_flight:
            return False
        # Nothing running: done, stopped, or (not paused, no retry due later) nothing can
        # start, which only a broken graph gets to.
        return not self.state.remaining or self._stopping() or (
            not self.delayed and not self.control.paused)

    def _note(self):
        """Something to record: wake the recording thread if it sleeps with nothing to do (when
        it is busy it comes back for it within FLUSH seconds)."""
        if self.idle:
            self.idle = False
            self.wake.set()

    # -- on the workers ------------------------------------------------------------------------

    def _launch(self, batch, keep=True):
        """Start the tasks of ``batch`` through the dispatch, but with ``keep`` the first one:
        it is returned for the calling worker to run itself.

        A CREATE makes something a crash could orphan: its intent (RUNNING) is committed before
        it starts, one transaction for the batch. Any other task caught by a crash is simply
        run again, so its RUNNING mark goes with the next batch of results.
        """
        if not batch:
            return None
        intents = [(task, time.time()) for task in batch if task["action"] in INTENT_ACTIONS]
        try:
            self.executor._mark_running(intents)
        except Exception as exc:  # it must not start; the attempt fails (and is retried)
            LOG.exception("could not record the start of %d tasks", len(intents))
            for task, _ in intents:
                task["unrecorded"] = f"internal error: could not record its start: {exc}"
        rest = batch[1:] if keep else batch
        if len(rest) > 1 and keep:
            # Handing out many tasks takes a while (each wakes a thread that then competes for
            # the interpreter): let another thread do it while this one starts its own task.
            self.dispatch.submit(lambda: self._hand_out(rest))
        else:
            self._hand_out(rest)
        return batch[0] if keep else None

    def _hand_out(self, batch):
        for task in batch:
            self.dispatch.submit(lambda task=task: self._work(task))

    def _work(self, task):
        while task is not None:
            task = self._run_one(task)

    def _run_one(self, task):
        """Run one task, settle it, and return the next task this worker runs (or None)."""
        error = task.pop("unrecorded", None)
        outcome = TaskOutcome(False, error) if error else None
        if outcome is None:
            try:
                outcome = self.runner.run(task, self.operation)
            except Exception as exc:  # a runner bug must fail the task, not hang the operation
                LOG.exception("task %s crashed", task["id"])
                outcome = TaskOutcome(False, f"internal error: {exc}")
        if isinstance(outcome, concurrent.futures.Future):
            # The task waits for something else (the poller) to finish it: give the worker
            # back, so a thousand nodes coming up do not hold a thousand threads.
            with self.lock:
                self.occupying -= 1
                self.parked.add(task["id"])
                batch = self._take()
            # (Settled on the thread that completes the future: it only hands work out.)
            outcome.add_done_callback(lambda future: self._launch(
                self._settle(task, _settled(future)), keep=False))
        else:
            batch = self._settle(task, outcome)
        return self._launch(batch)

    def _settle(self, task, outcome):
        """Record a finished attempt; return the tasks it lets start, already claimed."""
        with self.lock:
            self.in_flight -= 1
            if task["id"] in self.parked:
                self.parked.discard(task["id"])
            else:
                self.occupying -= 1
            task["attempts"] += 1
            stopping = self._stopping()
            retry = False
            if outcome.ok:
                # Once the run stops, what a finishing task would make ready is not started.
                self.state.succeeded(task, outcome, release=not stopping)
            elif outcome.requeue:
                self.state.requeue(task, outcome, ready=not stopping)
            elif outcome.retry and not stopping and \
                    task["attempts"] - task.get("requeued", 0) <= self.settings.retries:
                self.state.retrying(task, outcome)
                delay = min(self.settings.backoff_max,
                            self.settings.backoff_base * 2 ** (task["attempts"] - 1))
                heapq.heappush(self.delayed, (time.monotonic() + delay, task["id"]))
                retry = True
            else:
                self.state.failed_for_good(task, outcome)
            batch = self._take()
            self._note()
            if retry or self._over():
                self.wake.set()
        return batch

    # -- on the caller's thread ----------------------------------------------------------------

    def wait(self):
        while True:
            self.wake.clear()
            with self.lock:
                # Taken before a retry starts below: the result of the attempt before must be
                # written before the retry's RUNNING mark, not over it.
                results, started = self.state.take_results(), self.started
                self.started = []
                while self.delayed and self.delayed[0][0] <= time.monotonic():
                    self.state.make_ready(heapq.heappop(self.delayed)[1])
                batch = self._take()  # the first tasks, retries now due, or after a resume
                over = self._over()
                # While tasks keep finishing, their results are written every FLUSH seconds;
                # with nothing to write, the thread sleeps until a worker has something.
                self.idle = not (results or started or self.started)
                due = self.delayed[0][0] if self.delayed else None
            self.executor._record(results, started)
            self._launch(batch, keep=False)
            if over:
                break
            timeout = None if self.idle else self.FLUSH
            if due is not None:
                timeout = max(0.0, min(timeout or due, due - time.monotonic()))
            # Woken early by the end of the run, a retry to schedule, or a pause, resume or
            # cancel.
            self.wake.wait(timeout)
        ok = self.state.failed is None and not self.control.cancelled and not \
            self.state.remaining
        if not ok:
            # Nothing of this operation runs any more: a task still RUNNING in the store (left by
            # a crash and not reached again) has not started, as far as anyone can tell.
            self.executor._reset_running(self.operation["id"])
        return ok, self.state.failed


class Executor:
    def __init__(self, store, runner, settings=None, dispatch=None):
        self.store = store
        self.runner = runner
        self.settings = settings or Settings()
        self.dispatch = dispatch or make_dispatch(self.settings)
        self.runner = self.dispatch.bind(runner)

    def run(self, operation, control=None, prefix=""):
        """Run every task of ``operation`` (a dict with at least ``id``) that has not succeeded.

        ``prefix`` limits the run to the tasks whose id starts with it (a rollback runs only
        its own tasks; the operation's failed task keeps its status and output).

        Returns (ok, failed_task_id). Blocks until no task can make progress: all succeeded,
        one failed for good (its dependents are left PENDING), or the operation was cancelled.
        Tasks already running are always let finish; none is left RUNNING in the store.
        """
        control = control or Control()
        run = _Run(self, operation, control, load_tasks(self.store, operation["id"], prefix))
        result = run.wait()
        ended = getattr(self.runner, "run_ended", None)
        if ended:  # every outcome is in the store: a remote runner may drop its copies
            ended(operation["id"])
        return result

    def _mark_running(self, started):
        """``started``: (task, started at) pairs. A RUNNING task is one whose effect may or may
        not have happened: after a crash it is run again (idempotently)."""
        if started:
            with self.store.write() as db:
                db.execute(
                    "UPDATE tasks SET status = ?, started_at = json_extract(r.value, '$[1]')"
                    " FROM json_each(?) AS r WHERE tasks.id = json_extract(r.value, '$[0]')",
                    [RUNNING, json.dumps([(task["id"], at) for task, at in started])])

    def _record(self, results, started=()):
        """Tasks just started (RUNNING) and results, in one transaction."""
        if started:
            with self.store.write():  # the nested writes join this one transaction
                self._mark_running(started)
                self._record(results)
            return
        if results:
            # One statement for the whole batch, not one per task: SQLite lets go of the
            # interpreter at each statement step, and getting it back from 32 busy task threads
            # takes a switch interval (5 ms) each time: 500 results written row by row took
            # seconds, and progress stood still meanwhile.
            with self.store.write() as db:
                db.execute(
                    "UPDATE tasks SET status = json_extract(r.value, '$[1]'),"
                    " attempts = json_extract(r.value, '$[2]'),"
                    " output = json_extract(r.value, '$[3]'),"
                    " finished_at = json_extract(r.value, '$[4]')"
                    " FROM json_each(?) AS r WHERE tasks.id = json_extract(r.value, '$[0]')",
                    [json.dumps(results)])

    def _reset_running(self, operation_id):
        with self.store.write() as db:
            db.execute("UPDATE tasks SET status = ? WHERE operation_id = ? AND status = ?",
                       [PENDING, operation_id, RUNNING])
