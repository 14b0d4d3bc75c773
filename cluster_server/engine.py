"""The engine: runs operations on threads, finishes or rolls them back, resumes them after a crash.

An operation's tasks are already in the store when it is submitted. The engine drives the
executor, then settles the cluster: ACTIVE when all went well; for a failed or cancelled create,
a rollback that deletes everything the operation made (cluster FAILED); for other failures,
INCONSISTENT with the failing task shown, until ``cluster retry``.
"""

import json
import logging
import os
import threading
import time

from cluster_server.actions import CLEANUP, TaskRunner
from cluster_server.errors import ValidationError
from cluster_server.executor import EXECUTORS, PENDING, Control, Executor, Settings
from cluster_server.managed import records as managed_records
from cluster_server.planner import resource_node
from cluster_server.poller import Poller
from cluster_server.resources import FileResourceStore

LOG = logging.getLogger("shoal.engine")

LIVE = ("RUNNING", "PAUSED", "CANCELLING", "ROLLING_BACK")
CANCELLED_REASON = "cancelled"  # the error of an operation that was cancelled


def default_workers():
    """Worker threads when SHOAL_PARALLELISM is unset. Actions wait on the network (SSH, docker
    exec, cloud APIs), not on the CPU, so the count is set by how many nodes run at once, not by
    cores: with 8 on 2 cores, 22 of 30 nodes idled ~75 ms between their steps (bench/gap.py).
    Threads start only as tasks need them, so an idle server holds none of them."""
    return max(32, 4 * (os.cpu_count() or 2))


def settings_from_env():
    """Tunables, with defaults sensible for one machine; tests shorten the waits."""
    env = os.environ
    kind = (env.get("SHOAL_EXECUTOR") or "threads").strip().lower()
    if kind not in EXECUTORS:
        raise ValidationError(f"SHOAL_EXECUTOR must be one of {', '.join(EXECUTORS)}, not "
                              f"{kind!r}", {"field": "SHOAL_EXECUTOR", "reason": "unknown"})
    broker = (env.get("SHOAL_BROKER") or "").strip()
    if kind == "celery" and not broker:
        raise ValidationError("the celery executor needs a broker: --broker URL or SHOAL_BROKER "
                              "(e.g. redis://127.0.0.1:6379/0)",
                              {"field": "SHOAL_BROKER", "reason": "required"})
    workers = env.get("SHOAL_PARALLELISM")
    return Settings(
        # With Celery, the tasks in flight per operation: as many as the workers can run at
        # once (each waits on one server thread that holds no CPU).
        workers=int(workers or (64 if kind == "celery" else default_workers())),
        retries=int(env.get("SHOAL_RETRIES") or 2),
        backoff_base=float(env.get("SHOAL_RETRY_BACKOFF") or 1.0),
        executor=kind, broker=broker,
    )


class Engine:
    def __init__(self, store, home, settings=None, runner=None, poll_base=None):
        self.store = store
        self.home = home
        self.settings = settings or settings_from_env()
        base = poll_base if poll_base is not None else float(
            os.environ.get("SHOAL_POLL_BASE") or 1.0)
        # Automators find uploaded scripts here (the default tenant's plugin resources).
        self.runner = runner or TaskRunner(store, home, Poller(base=base),
                                           resources=FileResourceStore(store, home))
        self.executor = Executor(store, self.runner, self.settings)
        # What the executor calls: the runner itself on threads; with Celery, one that sends
        # its plugin calls to workers.
        self.runner = self.executor.runner
        self.controls = {}
        self.threads = {}
        self.lock = threading.Lock()
        self.stopping = False

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self):
        """Resume every operation a previous server left unfinished."""
        rows = self.store.db.execute(
            f"SELECT id, status FROM operations WHERE status IN ({','.join('?' * len(LIVE))})"
            " ORDER BY created_at", list(LIVE)).fetchall()
        for op_id, status in rows:
            LOG.info("resuming operation %s (%s)", op_id, status)
            self.event(self.operation(op_id), "server restarted: resuming")
            self.submit(op_id, paused=status == "PAUSED", cancelled=status == "CANCELLING")

    def stop(self):
        self.stopping = True

    def submit(self, op_id, paused=False, cancelled=False):
        control = Control()
        control.paused = paused
        control.cancelled = cancelled
        thread = threading.Thread(target=self._drive, args=(op_id, control), daemon=True,
                                  name=f"shoal-op-{op_id}")
        with self.lock:
            self.controls[op_id] = control
            self.threads[op_id] = thread
        thread.start()
        return thread

    def wait(self, op_id, timeout=None):
        thread = self.threads.get(op_id)
        if thread:
            thread.join(timeout)

    # -- control -------------------------------------------------------------------------------

    def control(self, op_id):
        with self.lock:
            return self.controls.get(op_id)

    # The status changes only from the states named: a pause or cancel that comes as the
    # operation ends must not turn SUCCEEDED back into PAUSED, and one that comes during a
    # rollback must not turn ROLLING_BACK into something a restart would resume as a forward
    # run (a rollback is never paused or cancelled).

    def pause(self, op_id):
        return self._control(op_id, ("RUNNING",), "PAUSED", paused=True)

    def resume(self, op_id):
        return self._control(op_id, ("PAUSED",), "RUNNING", paused=False)

    def cancel(self, op_id):
        changed = self._control(op_id, ("RUNNING", "PAUSED"), "CANCELLING", cancelled=True)
        poller = getattr(self.runner, "poller", None)
        if changed and poller:
            poller.wake()  # nodes still coming up see the cancel now, not after a long backoff
        return changed

    def _control(self, op_id, before, after, **flags):
        control = self.control(op_id)
        if control is None:
            return False
        with self.store.write() as db:
            changed = db.execute(
                f"UPDATE operations SET status = ? WHERE id = ? AND status IN"
                f" ({','.join('?' * len(before))})", [after, op_id, *before]).rowcount
        if changed:
            for name, value in flags.items():
                setattr(control, name, value)
            control.poke()
        return bool(changed)

    # -- store helpers -------------------------------------------------------------------------

    def operation(self, op_id):
        row = self.store.db.execute(
            "SELECT id, cluster_id, kind, status, params FROM operations WHERE id = ?",
            [op_id]).fetchone()
        return {"id": row[0], "cluster_id": row[1], "kind": row[2], "status": row[3],
                "params": json.loads(row[4])}

    def set_operation(self, op_id, status, error=None, finished=False):
        with self.store.write() as db:
            db.execute("UPDATE operations SET status = ?, error = COALESCE(?, error),"
                       " finished_at = ? WHERE id = ?",
                       [status, error, time.time() if finished else None, op_id])

    def set_cluster(self, cluster_id, status):
        with self.store.write() as db:
            db.execute("UPDATE clusters SET status = ?, updated_at = ? WHERE id = ?",
                       [status, time.time(), cluster_id])

    def event(self, operation, message):
        with self.store.write() as db:
            db.execute("INSERT INTO events (cluster_id, operation_id, at, message)"
                       " VALUES (?, ?, ?, ?)",
                       [operation["cluster_id"], operation["id"], time.time(), message])

    # -- driving an operation ------------------------------------------------------------------

    def _drive(self, op_id, control):
        try:
            self._run(op_id, control)
        except Exception:
            LOG.exception("operation %s crashed", op_id)
            op = self.operation(op_id)
            self.set_operation(op_id, "FAILED", "internal error (see server log)", finished=True)
            self.set_cluster(op["cluster_id"], "INCONSISTENT")
        finally:
            with self.lock:
                # Only our own: a retry may already have started the operation again, on a new
                # thread with a new control that pause and cancel must still reach.
                if self.controls.get(op_id) is control:
                    del self.controls[op_id]

    def _run(self, op_id, control):
        op = self.operation(op_id)
        op["cancelled"] = lambda: control.cancelled
        op["paused"] = lambda: control.paused
        if op["status"] == "ROLLING_BACK":
            # The reason the rollback began is stored with it: a cancelled create that a
            # restart finds half rolled back still ends CANCELLED, not FAILED.
            reason = self.store.db.execute("SELECT error FROM operations WHERE id = ?",
                                           [op_id]).fetchone()[0] or "resumed rollback"
            control.cancelled = control.cancelled or reason == CANCELLED_REASON
            return self._rollback(op, control, reason)
        self.event(op, f"{op['kind']} started")
        ok, failed = self.executor.run(op, control)
        if self.stopping:
            return  # the server is going down: the next start resumes from the store
        if ok:
            self._succeed(op)
            return
        reason = CANCELLED_REASON if control.cancelled else self._failure(failed)
        self.event(op, f"{op['kind']} failed: {reason}")
        if op["kind"] == "create" and not op["params"].get("keep_on_failure"):
            self._rollback(op, control, reason)
        else:
            self.set_operation(op_id, "CANCELLED" if control.cancelled else "FAILED", reason,
                               finished=True)
            status = "FAILED" if op["kind"] == "create" else "INCONSISTENT"
            self.set_cluster(op["cluster_id"], status)

    def _failure(self, task_id):
        if task_id is None:
            return "unknown failure"
        row = self.store.db.execute(
            "SELECT action, service, node_id, output FROM tasks WHERE id = ?", [task_id]).fetchone()
        what = f"{row[0]} {row[1] + ' ' if row[1] else ''}on {row[2]}"
        tail = (row[3] or "").strip().splitlines()[-5:]
        return f"{what} failed: " + " | ".join(tail)

    def _succeed(self, op):
        cluster_id = op["cluster_id"]
        with self.store.write() as db:
            if op["kind"] == "delete":
                db.execute("UPDATE nodes SET status = 'DELETED' WHERE cluster_id = ?", [cluster_id])
                managed_records.mark_deleted(db, cluster_id)
                db.execute("UPDATE clusters SET status = 'DELETED', updated_at = ? WHERE id = ?",
                           [time.time(), cluster_id])
                self.runner.forget_cluster(cluster_id)
            else:
                db.execute("DELETE FROM nodes WHERE cluster_id = ? AND status IN"
                           " ('REMOVING', 'DELETED')", [cluster_id])
                # A change keeps the definitions of removed services in the spec while it runs
                # (their STOP and REMOVE need them); once done, the cluster's services are the
                # ones its nodes hold, or a later resize would bring removed services back.
                on_nodes = {service for (services,) in db.execute(
                    "SELECT services FROM nodes WHERE cluster_id = ?", [cluster_id])
                    for service in json.loads(services)}
                spec = self.store.unseal(db.execute("SELECT spec FROM clusters WHERE id = ?",
                                                    [cluster_id]).fetchone()[0])
                spec["services"] = {name: body for name, body in spec["services"].items()
                                    if name in on_nodes}
                db.execute("UPDATE clusters SET status = 'ACTIVE', spec = ?, updated_at = ?"
                           " WHERE id = ?", [self.store.seal(spec), time.time(), cluster_id])
            db.execute("UPDATE operations SET status = 'SUCCEEDED', finished_at = ? WHERE id = ?",
                       [time.time(), op["id"]])
        self.event(op, f"{op['kind']} succeeded")

    def _rollback(self, op, control, reason):
        """Delete everything the create made: every node and managed resource, then leftovers
        (the cluster's security group last: a database's group may name it)."""
        self.set_operation(op["id"], "ROLLING_BACK", reason)
        self.event(op, "rolling back: deleting every node this operation created")
        cluster_id = op["cluster_id"]
        with self.store.write() as db:
            exists = db.execute("SELECT 1 FROM tasks WHERE id = ?",
                                [f"{op['id']}/rollback:cleanup"]).fetchone()
            if not exists:
                seq = db.execute("SELECT COALESCE(MAX(seq), 0) FROM tasks WHERE operation_id = ?",
                                 [op["id"]]).fetchone()[0]
                # Tasks that never ran will not run now; the failed one keeps FAILED and its
                # output, so 'shoal task list' shows what went wrong.
                db.execute("UPDATE tasks SET status = 'SKIPPED' WHERE operation_id = ?"
                           " AND status IN ('PENDING', 'RUNNING')", [op["id"]])
                nodes = [r[0] for r in db.execute(
                    "SELECT id FROM nodes WHERE cluster_id = ? ORDER BY created_at DESC, id DESC",
                    [cluster_id])]
                deletes = []
                # Managed resources first: each DELETE waits until its database is gone.
                resources = [resource_node(r[0]) for r in db.execute(
                    "SELECT name FROM cluster_resources WHERE cluster_id = ? AND status !="
                    " 'DELETED' ORDER BY name", [cluster_id])]
                for node_id in resources + nodes:
                    seq += 1
                    task_id = f"{op['id']}/rollback:{node_id}:delete"
                    deletes.append(task_id)
                    db.execute("INSERT INTO tasks (id, operation_id, node_id, action, service,"
                               " depends_on, status, seq) VALUES (?, ?, ?, 'DELETE', NULL, '[]',"
                               " ?, ?)", [task_id, op["id"], node_id, PENDING, seq])
                db.execute("INSERT INTO tasks (id, operation_id, node_id, action, service,"
                           " depends_on, status, seq) VALUES (?, ?, '', ?, NULL, ?, ?, ?)",
                           [f"{op['id']}/rollback:cleanup", op["id"], CLEANUP,
                            json.dumps(deletes), PENDING, seq + 1])
        rollback_control = Control()  # a cancel must not stop the rollback itself
        ok, failed = self.executor.run(op, rollback_control, prefix=f"{op['id']}/rollback:")
        if self.stopping:
            return
        if ok:
            with self.store.write() as db:
                db.execute("UPDATE nodes SET status = 'DELETED' WHERE cluster_id = ?",
                           [cluster_id])
                managed_records.mark_deleted(db, cluster_id)
            self.set_operation(op["id"], "CANCELLED" if control.cancelled else "FAILED",
                               finished=True)
            self.set_cluster(cluster_id, "FAILED")
            self.event(op, "rolled back: nothing is left")
        else:
            self.set_operation(op["id"], "FAILED", f"{reason}; rollback failed too: "
                               f"{self._failure(failed)}", finished=True)
            self.set_cluster(cluster_id, "INCONSISTENT")
            self.event(op, "rollback failed: see 'shoal task list'")
