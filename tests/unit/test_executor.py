"""The executor: ordering, one action per node, no stage barriers, retries, failure, pause,
cancel, resume, JOINs, and what lands in the store. A runner written here stands in for the
providers and automators: it records when each task ran and fails or sleeps on request."""

import json
import threading
import time

import pytest

from cluster_server.executor import (JOIN, OUTPUT_LIMIT, Control, Executor, Settings,
                                     TaskOutcome, ThreadDispatch)
from cluster_server.planner import TaskSpec, plan_change
from cluster_server.store import Store

OP = "op-1"


def task(task_id, node, *deps, action="INSTALL"):
    return TaskSpec(task_id, node, action, None, tuple(deps))


def join(task_id, *deps):
    return TaskSpec(task_id, None, JOIN, None, tuple(deps))


class Runner:
    """Records start and end of every attempt, and how many tasks ran at once (per node, too).

    ``sleep``: task id -> seconds; ``fail``: task id -> how many attempts fail (-1: all);
    ``outcome``: task id -> a TaskOutcome to return; ``crash``: task ids whose run raises;
    ``on_start``: task id -> a callable run when the task starts.
    """

    def __init__(self, sleep=None, fail=None, outcome=None, crash=(), on_start=None):
        self.sleep = sleep or {}
        self.fail = dict(fail or {})
        self.outcome = outcome or {}
        self.crash = set(crash)
        self.on_start = on_start or {}
        self.lock = threading.Lock()
        self.attempts = {}  # task id -> [(start, end), ...]
        self.node_active = {}
        self.node_max = {}
        self.active = 0
        self.max_active = 0

    def run(self, task, operation):
        task_id = task["id"].split("/", 1)[1]
        node = task["node_id"]
        start = time.monotonic()
        with self.lock:
            self.node_active[node] = self.node_active.get(node, 0) + 1
            self.node_max[node] = max(self.node_max.get(node, 0), self.node_active[node])
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            if task_id in self.on_start:
                self.on_start[task_id]()
            time.sleep(self.sleep.get(task_id, 0))
            if task_id in self.crash:
                raise RuntimeError(f"boom in {task_id}")
            if task_id in self.outcome:
                return self.outcome[task_id]
            if self.fail.get(task_id, 0):
                self.fail[task_id] -= 1
                return TaskOutcome(False, f"{task_id} failed")
            return TaskOutcome(True, f"{task_id} done")
        finally:
            with self.lock:
                self.node_active[node] -= 1
                self.active -= 1
                self.attempts.setdefault(task_id, []).append((start, time.monotonic()))

    def started(self, task_id):
        return self.attempts[task_id][0][0]

    def ended(self, task_id):
        return self.attempts[task_id][-1][1]


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "shoal.db")


@pytest.fixture
def executors():
    made = []

    def make(store, runner, **settings):
        settings = {"workers": 8, "retries": 2, "backoff_base": 0.01, **settings}
        executor = Executor(store, runner, Settings(**settings))
        made.append(executor)
        return executor

    yield make
    for executor in made:
        executor.dispatch.shutdown()


def save_plan(store, specs, status=None, op=OP):
    """Store a plan the way operations.py does; ``status`` presets some tasks (a resumed run)."""
    status = status or {}
    now = time.time()
    cluster = f"c-{op}"
    with store.write() as db:
        db.execute("INSERT INTO clusters (id, tenant, name, template, provider, status, spec,"
                   " created_at, updated_at) VALUES (?, 'default', ?, 't', 'p', 'CREATING',"
                   " '{}', ?, ?)", [cluster, cluster, now, now])
        db.execute("INSERT INTO operations (id, cluster_id, kind, status, params, created_at)"
                   " VALUES (?, ?, 'create', 'RUNNING', '{}', ?)", [op, cluster, now])
        db.conn.executemany(
            "INSERT INTO tasks (id, operation_id, node_id, action, service, depends_on, status,"
            " seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(f"{op}/{t.id}", op, t.node_id or "", t.action, t.service,
              json.dumps([f"{op}/{d}" for d in t.depends_on]), status.get(t.id, "PENDING"), seq)
             for seq, t in enumerate(specs)])
    return {"id": op, "cluster_id": cluster}


def rows(store, op=OP):
    """Task id -> its row in the store."""
    result = {}
    for row in store.db.execute("SELECT id, status, attempts, output, started_at, finished_at"
                                " FROM tasks WHERE operation_id = ?", [op]):
        result[row[0].split("/", 1)[1]] = {"status": row[1], "attempts": row[2],
                                           "output": row[3], "started_at": row[4],
                                           "finished_at": row[5]}
    return result


def statuses(store):
    return {task_id: row["status"] for task_id, row in rows(store).items()}


def run_in_thread(executor, operation, control):
    result = {}
    thread = threading.Thread(target=lambda: result.update(value=executor.run(operation,
                                                                              control)))
    thread.start()
    return thread, result


def wait_for(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


# --- ordering ----------------------------------------------------------------------------------

def service(name, runtime_requires=(), install_requires=()):
    actions = ("install", "configure", "initialize", "start")
    return {"name": name,
            "dependencies": {"install": {"requires": list(install_requires)},
                             "runtime": {"requires": list(runtime_requires)}},
            "provisioner": {"actions": {a: {"type": "shell", "fields": {}} for a in actions}}}


def test_a_planned_create_runs_every_task_after_its_predecessors(store, executors):
    catalog = {"base": service("base"), "db": service("db", install_requires=["base"]),
               "web": service("web", runtime_requires=["db"], install_requires=["base"])}
    nodes = [{"id": f"n{i}", "services": ["base", "db" if i == 1 else "web"]}
             for i in range(1, 7)]
    specs = plan_change([], nodes, catalog)
    assert any(t.action == JOIN for t in specs)
    runner = Runner(sleep={t.id: 0.01 for t in specs})
    ok, failed = executors(store, runner).run(save_plan(store, specs))
    assert (ok, failed) == (True, None)
    # A task's real predecessors are its dependencies, looking through JOINs.
    real_deps = {}
    for t in specs:
        real_deps[t.id] = set()
        for dep in t.depends_on:
            real_deps[t.id] |= real_deps[dep] if dep.startswith("*") else {dep}
    for t in specs:
        if t.action == JOIN:
            assert t.id not in runner.attempts
            continue
        assert len(runner.attempts[t.id]) == 1
        for dep in real_deps[t.id]:
            assert runner.started(t.id) >= runner.ended(dep), f"{t.id} before {dep}"
    assert set(runner.node_max.values()) == {1}
    assert runner.max_active > 1
    table = rows(store)
    assert {row["status"] for row in table.values()} == {"SUCCEEDED"}
    for t in specs:  # the store tells the same story
        for dep in real_deps[t.id] if t.action != JOIN else ():
            assert table[t.id]["started_at"] >= table[dep]["finished_at"]


def test_never_two_actions_on_one_node_at_once(store, executors):
    # Twenty independent tasks over two nodes: the nodes work in parallel, each one at a time.
    specs = [task(f"{node}{i}", node) for node in "ab" for i in range(10)]
    runner = Runner(sleep={t.id: 0.02 for t in specs})
    ok, _ = executors(store, runner, workers=8).run(save_plan(store, specs))
    assert ok
    assert runner.node_max == {"a": 1, "b": 1}
    assert runner.max_active == 2


def test_no_stage_barriers(store, executors):
    # b1 -> b2 -> b3 is a chain beside an unrelated task that lasts until b3 starts (at most
    # 5 s). With stages (every task of one depth before any of the next), b2 would wait for it.
    b3_started = threading.Event()
    specs = [task("slow", "a"), task("b1", "b"), task("b2", "b", "b1"), task("b3", "b", "b2")]
    runner = Runner(on_start={"slow": lambda: b3_started.wait(5), "b3": b3_started.set})
    ok, _ = executors(store, runner).run(save_plan(store, specs))
    assert ok
    assert runner.started("b3") < runner.ended("slow")
    assert runner.ended("slow") - runner.started("slow") < 4


def test_workers_bound_how_many_tasks_run_at_once(store, executors):
    specs = [task(f"t{i}", f"n{i}") for i in range(12)]
    runner = Runner(sleep={t.id: 0.03 for t in specs})
    ok, _ = executors(store, runner, workers=3).run(save_plan(store, specs))
    assert ok
    assert runner.max_active == 3


def test_one_executor_runs_two_operations_at_once(store, executors):
    # The engine shares one executor (and its threads) between every running operation.
    specs = [task("a1", "a"), task("a2", "a", "a1"), task("b1", "b")]
    both = threading.Barrier(2, timeout=5)  # each operation's b1 waits for the other's
    runner = Runner(on_start={"b1": both.wait})
    executor = executors(store, runner)
    first = save_plan(store, specs, op="op-1")
    second = save_plan(store, specs, op="op-2")
    thread, result = run_in_thread(executor, second, Control())
    assert executor.run(first) == (True, None)
    thread.join(5)
    assert result["value"] == (True, None)
    for op in ("op-1", "op-2"):
        assert {r["status"] for r in rows(store, op).values()} == {"SUCCEEDED"}


def test_join_tasks_complete_once_their_predecessors_are_done(store, executors):
    specs = [task("a1", "a"), task("b1", "b"), join("*:up", "a1", "b1"),
             task("a2", "a", "*:up"), task("b2", "b", "*:up")]
    runner = Runner(sleep={"a1": 0.01, "b1": 0.05})
    ok, _ = executors(store, runner).run(save_plan(store, specs))
    assert ok
    assert "*:up" not in runner.attempts
    assert statuses(store)["*:up"] == "SUCCEEDED"
    for then in ("a2", "b2"):
        assert runner.started(then) >= runner.ended("b1")


# --- retries and failure -----------------------------------------------------------------------

def test_a_failing_task_is_retried_with_growing_backoff(store, executors):
    specs = [task("flaky", "a"), task("after", "a", "flaky")]
    runner = Runner(fail={"flaky": 2})
    ok, _ = executors(store, runner, retries=2, backoff_base=0.03).run(save_plan(store, specs))
    assert ok
    attempts = runner.attempts["flaky"]
    assert len(attempts) == 3
    gaps = [attempts[i + 1][0] - attempts[i][1] for i in range(2)]
    assert gaps[0] >= 0.03 and gaps[1] >= 0.06
    row = rows(store)["flaky"]
    assert (row["status"], row["attempts"], row["output"]) == ("SUCCEEDED", 3, "flaky done")


def test_spent_retries_fail_the_run_and_leave_dependents_pending(store, executors):
    specs = [task("bad", "a"), task("child", "a", "bad"), task("grandchild", "c", "child"),
             task("slow", "b"), task("after-slow", "b", "slow")]
    tries = []
    last_try = threading.Event()

    def bad_starts():
        tries.append(1)
        if len(tries) == 3:
            last_try.set()

    # "slow" is still running when "bad" fails for the last time.
    runner = Runner(fail={"bad": -1}, sleep={"slow": 0.2},
                    on_start={"bad": bad_starts, "slow": lambda: last_try.wait(5)})
    ok, failed = executors(store, runner, retries=2).run(save_plan(store, specs))
    assert (ok, failed) == (False, f"{OP}/bad")
    assert len(runner.attempts["bad"]) == 3
    assert "child" not in runner.attempts and "grandchild" not in runner.attempts
    # The independent task already running when "bad" gave up is let finish and recorded; what
    # comes after it is not started.
    assert "after-slow" not in runner.attempts
    table = rows(store)
    assert (table["bad"]["status"], table["bad"]["attempts"]) == ("FAILED", 3)
    assert table["bad"]["output"] == "bad failed"
    assert table["slow"]["status"] == "SUCCEEDED" and table["slow"]["finished_at"]
    for pending in ("child", "grandchild", "after-slow"):
        assert table[pending]["status"] == "PENDING"
        assert table[pending]["attempts"] == 0


def test_an_outcome_that_says_no_retry_is_not_retried(store, executors):
    specs = [task("config", "a")]
    runner = Runner(outcome={"config": TaskOutcome(False, "bad field", retry=False)})
    ok, failed = executors(store, runner, retries=3).run(save_plan(store, specs))
    assert (ok, failed) == (False, f"{OP}/config")
    assert len(runner.attempts["config"]) == 1
    assert rows(store)["config"]["output"] == "bad field"


def test_a_runner_that_raises_fails_the_task_with_the_message(store, executors):
    specs = [task("crash", "a"), task("next", "a", "crash")]
    runner = Runner(crash={"crash"})
    ok, failed = executors(store, runner, retries=1).run(save_plan(store, specs))
    assert (ok, failed) == (False, f"{OP}/crash")
    row = rows(store)["crash"]
    assert row["status"] == "FAILED" and row["attempts"] == 2
    assert "boom in crash" in row["output"]
    assert statuses(store)["next"] == "PENDING"


# --- pause, cancel, resume ---------------------------------------------------------------------

def test_pause_starts_nothing_new_and_resume_carries_on(store, executors):
    control = Control()
    paused = threading.Event()

    def pause():
        control.paused = True
        paused.set()

    # a1 pauses the operation as it starts; b1, started with it, ends only after the pause.
    specs = [task("a1", "a"), task("a2", "a", "a1"), task("b1", "b"), task("b2", "b", "b1")]
    runner = Runner(on_start={"a1": pause, "b1": lambda: paused.wait(5)})
    executor = executors(store, runner)
    thread, result = run_in_thread(executor, save_plan(store, specs), control)
    wait_for(lambda: "b1" in runner.attempts)
    time.sleep(0.1)
    assert set(runner.attempts) == {"a1", "b1"}  # both finished; nothing started since
    assert statuses(store)["a2"] == "PENDING"
    assert thread.is_alive()
    resumed = time.monotonic()
    control.paused = False
    control.poke()
    thread.join(5)
    assert result["value"] == (True, None)
    assert runner.started("a2") >= resumed and runner.started("b2") >= resumed


def test_a_task_taken_back_on_pause_waits_for_resume_and_keeps_its_retries(store, executors):
    """A runner's NotStarted (a Celery call taken back from the queue on a pause): the task is
    PENDING again, starts once the operation resumes, and the attempts it did not make use up
    none of its retries."""
    control = Control()
    runs = []
    answers = [TaskOutcome(False, "taken back", requeue=True)] * 2 + \
        [TaskOutcome(False, "failed once"), TaskOutcome(True, "done")]

    class Requeuing:
        def run(self, task, operation):
            runs.append(time.monotonic())
            answer = answers[len(runs) - 1]
            control.paused = control.paused or answer.requeue  # the pause that took it back
            return answer

    executor = executors(store, Requeuing(), retries=1)
    thread, result = run_in_thread(executor, save_plan(store, [task("a1", "a")]), control)
    for attempt in (1, 2):
        wait_for(lambda: len(runs) == attempt and statuses(store)["a1"] == "PENDING")
        time.sleep(0.1)
        assert len(runs) == attempt and thread.is_alive()  # paused: it waits
        control.paused = False
        control.poke()
    thread.join(5)
    assert result["value"] == (True, None)
    assert len(runs) == 4  # taken back twice, failed once, retried (retries=1) and done
    assert rows(store)["a1"]["attempts"] == 4


def test_cancel_lets_running_tasks_finish_and_leaves_nothing_running(store, executors):
    control = Control()
    specs = [task("slow", "a"), task("after", "a", "slow"),
             task("b1", "b", "stale"), task("stale", "c", "slow")]
    # "stale" was RUNNING when an earlier server died; it is not ready yet when we cancel.
    operation = save_plan(store, specs, status={"stale": "RUNNING"})
    runner = Runner(sleep={"slow": 0.1}, on_start={"slow": lambda: cancel(control)})
    ok, failed = executors(store, runner).run(operation, control)
    assert not ok and failed is None
    assert set(runner.attempts) == {"slow"}
    assert statuses(store) == {"slow": "SUCCEEDED", "after": "PENDING", "b1": "PENDING",
                               "stale": "PENDING"}


def cancel(control):
    control.cancelled = True
    control.poke()


def test_cancel_does_not_start_tasks_queued_behind_busy_workers(store, executors):
    # Ten ready tasks, two workers: a cancel must not run the eight that never got a worker.
    control = Control()
    specs = [task(f"t{i}", f"n{i}") for i in range(10)]
    runner = Runner(sleep={t.id: 0.05 for t in specs}, on_start={"t0": lambda: cancel(control)})
    ok, _ = executors(store, runner, workers=2).run(save_plan(store, specs), control)
    assert not ok
    assert len(runner.attempts) <= 2
    table = rows(store)
    assert sum(row["status"] == "SUCCEEDED" for row in table.values()) == len(runner.attempts)
    assert {row["status"] for row in table.values()} <= {"SUCCEEDED", "PENDING"}


def test_cancel_does_not_wait_out_a_retry_backoff(store, executors):
    control = Control()
    specs = [task("flaky", "a"), task("after", "a", "flaky")]
    runner = Runner(fail={"flaky": 1})
    executor = executors(store, runner, backoff_base=10.0)
    thread, result = run_in_thread(executor, save_plan(store, specs), control)
    wait_for(lambda: rows(store)["flaky"]["attempts"] == 1)
    cancel(control)
    thread.join(2)
    assert not thread.is_alive()
    assert result["value"][0] is False
    assert rows(store)["flaky"]["status"] == "PENDING"


def test_resume_skips_succeeded_tasks_and_reruns_running_ones(store, executors):
    specs = [task("a1", "a"), task("a2", "a", "a1"), task("b1", "b"), join("*:j", "a1", "b1"),
             task("a3", "a", "a2", "*:j"), task("b2", "b", "*:j")]
    # A server died while a2 was running: a1, b1 and the join were done.
    operation = save_plan(store, specs, status={"a1": "SUCCEEDED", "b1": "SUCCEEDED",
                                                "*:j": "SUCCEEDED", "a2": "RUNNING"})
    runner = Runner()
    ok, _ = executors(store, runner).run(operation)
    assert ok
    assert set(runner.attempts) == {"a2", "a3", "b2"}
    assert runner.started("a3") >= runner.ended("a2")
    assert set(statuses(store).values()) == {"SUCCEEDED"}


def test_a_join_whose_predecessors_were_already_done_completes(store, executors):
    specs = [task("a1", "a"), task("b1", "b"), join("*:j", "a1", "b1"), task("c1", "c", "*:j")]
    operation = save_plan(store, specs, status={"a1": "SUCCEEDED", "b1": "SUCCEEDED"})
    runner = Runner()
    ok, _ = executors(store, runner).run(operation)
    assert ok
    assert set(runner.attempts) == {"c1"}
    assert statuses(store)["*:j"] == "SUCCEEDED"


# --- what lands in the store -------------------------------------------------------------------

def test_status_attempts_output_and_times_are_stored(store, executors):
    specs = [task("one", "a"), task("two", "a", "one"), task("long", "b")]
    long_output = "x" * (OUTPUT_LIMIT + 10) + "tail"
    runner = Runner(sleep={"one": 0.02}, fail={"two": 1},
                    outcome={"long": TaskOutcome(True, long_output)})
    before = time.time()
    ok, _ = executors(store, runner).run(save_plan(store, specs))
    after = time.time()
    assert ok
    table = rows(store)
    assert {r["status"] for r in table.values()} == {"SUCCEEDED"}
    assert (table["one"]["attempts"], table["two"]["attempts"]) == (1, 2)
    assert table["one"]["output"] == "one done"
    assert len(table["long"]["output"]) == OUTPUT_LIMIT and table["long"]["output"].endswith(
        "tail")
    for row in table.values():
        assert before <= row["started_at"] <= row["finished_at"] <= after
    assert table["one"]["finished_at"] - table["one"]["started_at"] >= 0.02
    assert table["two"]["started_at"] >= table["one"]["finished_at"]


def test_intent_is_committed_before_a_create_runs(store, executors):
    # Only CREATE makes something a crash could orphan: its RUNNING mark must be in the store
    # before it starts (other tasks are marked off the critical path and simply re-run).
    seen = {}

    def look():
        # Another connection (another thread) sees the task RUNNING with its start time.
        seen.update(rows(store)["a1"])

    runner = Runner(on_start={"a1": look})
    ok, _ = executors(store, runner).run(save_plan(store, [task("a1", "a", action="CREATE")]))
    assert ok
    assert seen["status"] == "RUNNING" and seen["started_at"]


# --- the thread dispatch -----------------------------------------------------------------------

def test_dispatch_survives_work_that_raises_and_shutdown_drops_what_has_not_started():
    dispatch = ThreadDispatch(1)
    ran = []
    gate = threading.Event()

    def crash():
        raise RuntimeError("boom")

    dispatch.submit(crash)
    dispatch.submit(lambda: (ran.append("after crash"), gate.wait(5)))
    wait_for(lambda: ran == ["after crash"])  # the one thread lived through the crash
    dispatch.submit(lambda: ran.append("never"))
    dispatch.shutdown()
    gate.set()
    time.sleep(0.05)
    assert ran == ["after crash"]


def test_parked_tasks_give_their_worker_back(store, executors):
    """A task whose runner returns a Future (a node coming up, finished by the poller) does not
    hold a worker: with 2 workers, 20 such tasks are all waiting at once."""
    import concurrent.futures

    specs = [task(f"t{i}", f"n{i}", action="CONFIRM") for i in range(20)]
    futures = {}
    all_parked = threading.Event()

    class ParkingRunner:
        def run(self, task, operation):
            future = concurrent.futures.Future()
            futures[task["id"]] = future
            if len(futures) == len(specs):
                all_parked.set()
            return future

    executor = executors(store, ParkingRunner(), workers=2)
    result = {}
    thread = threading.Thread(target=lambda: result.update(
        zip(("ok", "failed"), executor.run(save_plan(store, specs)))))
    thread.start()
    assert all_parked.wait(5), f"only {len(futures)} of 20 tasks started with 2 workers"
    for task_id, future in list(futures.items()):
        future.set_result(TaskOutcome(True, "up") if task_id != f"{OP}/t3" else
                          TaskOutcome(False, "failed", retry=False))
    thread.join(5)
    assert result["failed"] == f"{OP}/t3" and not result["ok"]
    assert list(statuses(store).values()).count("SUCCEEDED") == 19


def test_a_stored_cycle_runs_what_it_can_and_stops(store, executors):
    # The planner refuses cycles; a store edited by hand (or a bug) must not hang or crash the
    # executor: what does not depend on the cycle runs, the cycle stays PENDING.
    specs = [task("a", "n1"), task("c", "n1", "a", "d"), task("d", "n2", "c"), task("b", "n3", "a")]
    runner = Runner()
    ok, failed = executors(store, runner).run(save_plan(store, specs))
    assert (ok, failed) == (False, None)
    assert set(runner.attempts) == {"a", "b"}
    assert statuses(store) == {"a": "SUCCEEDED", "b": "SUCCEEDED", "c": "PENDING",
                               "d": "PENDING"}


def test_by_default_thirty_nodes_step_at_once_not_eight(store, executors):
    # The idle gap between a node's steps was the wait for a free worker: with 8 threads on two
    # cores, 22 of 30 nodes waited ~75 ms between INSTALL and CONFIGURE (bench/gap.py).
    from cluster_server.engine import default_workers

    catalog = {"web": service("web")}
    nodes = [{"id": f"n{i}", "services": ["web"]} for i in range(1, 31)]
    specs = plan_change([], nodes, catalog)
    installs = [t.id for t in specs if t.action == "INSTALL"]
    runner = Runner(sleep={task_id: 0.2 for task_id in installs})
    ok, failed = executors(store, runner, workers=default_workers()).run(save_plan(store, specs))
    assert ok and failed is None
    assert default_workers() >= 30
    assert runner.max_active == 30  # every node's INSTALL ran at the same time
