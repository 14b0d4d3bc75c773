"""The server's side of the broker: send a call, learn which worker took it, collect its outcome.

Calls are sent by one thread (``_send_loop``): the calls that became ready while it published
the previous message go together in the next, up to ``calls_per_message()`` (app.py), so a
burst of ready tasks costs a few messages, not one each, while a lone call still leaves at once.

Outcomes are read from the result backend, not from a reply queue: a result is a Redis key that
stays (``result_expires``) until the server has read it, so a server killed while its workers
finish finds their outcomes when it starts again, by the calls' ids, which it derives from the
store (task id and attempt). One subscriber thread hears every result as it is stored (Redis
pub/sub) and completes the waiting call; a sweep with one MGET of every pending key catches what
was published while the subscription was down (a broker restart).
"""

import json
import logging
import threading
import time
import uuid

from cluster_server.errors import WorkerError
from cluster_server.workers import app as celery_app
from cluster_server.workers.worker import CLAIM, STARTED

LOG = logging.getLogger("shoal.workers")
META = "celery-task-meta-"
SENT = "shoal-sent:"  # + call id: the server published it (so a restart does not again)
SWEEP = 1.0  # seconds between sweeps of the pending results


class Pending:
    """One call in flight: set once its outcome is in."""

    def __init__(self, call_id, on_start=None, sending=None):
        self.call_id = call_id
        self.on_start = on_start  # called with the worker's name when a worker takes it
        self.sending = sending  # its entry of the sender's outbox: to send it again if lost
        self.worker = None
        self.outcome = None
        self.done = threading.Event()

    def started(self, worker):
        if self.worker is None and worker:
            self.worker = worker
            if self.on_start:
                self.on_start(worker)

    def finish(self, outcome):
        if not self.done.is_set():
            self.outcome = outcome
            self.done.set()


class WorkerClient:
    def __init__(self, broker):
        self.broker = broker
        self.app = celery_app.make_app(broker)
        self.app.conf.broker_pool_limit = 64  # a connection per sending thread, not 10 shared
        self.redis = self.app.backend.client
        self.expires = int(celery_app.result_expires())
        self.per_message = celery_app.calls_per_message()
        self.lock = threading.Lock()
        self.pending = {}  # call id -> Pending
        # Call ids that may have been published already: by an earlier server (their SENT
        # marks, read once) or by this one. Only these are looked up before sending; any other
        # call is new, and the look-up would be a round trip for nothing.
        self.earlier = None
        self.sent = set()
        self.outbox = []  # (queue, expires, fresh, call id, message) waiting for the sender
        self.wake = threading.Event()
        self.stopped = False
        self.thread = threading.Thread(target=self._listen, daemon=True, name="shoal-results")
        self.thread.start()
        threading.Thread(target=self._send_loop, daemon=True, name="shoal-sender").start()

    # -- sending -------------------------------------------------------------------------------

    def send(self, call_id, message, queue, on_start=None, expires=None, fresh=False):
        """Have the call sent (unless a previous server already did) and return its Pending.

        ``fresh``: a call nobody waits for after a restart (a poll): always sent anew.
        """
        sending = (queue, expires, fresh, call_id, message)
        pending = Pending(call_id, on_start, sending)
        with self.lock:
            self.pending[call_id] = pending
        if not fresh and self._maybe_sent(call_id):
            raw, sent = self._retrying(lambda: self.redis.pipeline(transaction=False).get(
                META + call_id).exists(SENT + call_id).execute())
            if raw:
                self._settle(pending, json.loads(raw))
                if pending.done.is_set():
                    return pending  # the outcome came while no server waited for it
            if sent:
                return pending  # queued or running since before a restart: wait for it
        with self.lock:
            self.outbox.append(sending)
            if not fresh:
                self.sent.add(call_id)
        self.wake.set()
        return pending

    def _send_loop(self):
        while not self.stopped:
            self.wake.wait()
            self.wake.clear()
            with self.lock:
                calls, self.outbox = self.outbox, []
            groups = {}  # (queue, expires) -> calls, in the order they came
            for queue, expires, fresh, call_id, message in calls:
                groups.setdefault((queue, expires), []).append((fresh, call_id, message))
            for (queue, expires), group in groups.items():
                for start in range(0, len(group), self.per_message):
                    self._publish(queue, expires, group[start:start + self.per_message])

    def _publish(self, queue, expires, calls):
        batch = [{"id": call_id, "message": message} for _, call_id, message in calls]
        ids = [call_id for _, call_id, _ in calls]
        self._retrying(lambda: self.app.send_task(
            celery_app.TASK, args=[batch], task_id=f"calls-{uuid.uuid4().hex}", queue=queue,
            expires=expires, retry=False,
            # Celery would put a repr of the message in its headers (for monitors): time spent
            # on every message, and the inputs of actions shown where no one asked. The call
            # ids are what ``shoal worker status`` shows.
            argsrepr=json.dumps(ids), kwargsrepr="{}"))
        marks = [SENT + call_id for fresh, call_id, _ in calls if not fresh]
        if marks:
            def mark():
                pipe = self.redis.pipeline(transaction=False)
                for key in marks:
                    pipe.set(key, b"1", ex=self.expires)
                pipe.execute()

            self._retrying(mark)

    def _maybe_sent(self, call_id):
        if self.earlier is None:
            found = self._retrying(lambda: {
                key[len(SENT):].decode() for key in self.redis.scan_iter(SENT + "*", 1000)})
            with self.lock:
                if self.earlier is None:
                    self.earlier = found
        with self.lock:
            return call_id in self.earlier or call_id in self.sent

    def consumed(self, call_ids):
        """The server recorded these calls' outcomes: their results and marks can go."""
        with self.lock:
            self.sent.difference_update(call_ids)
            if self.earlier:
                self.earlier.difference_update(call_ids)
        for start in range(0, len(call_ids), 500):
            keys = [k for c in call_ids[start:start + 500] for k in (META + c, SENT + c)]
            try:
                self.redis.delete(*keys)
            except Exception:  # noqa: BLE001 (they expire anyway)
                LOG.warning("could not remove %d results from the broker", len(keys) // 2)

    def _retrying(self, fn):
        return celery_app.retrying(fn, self.where(), lambda: self.stopped)

    def where(self):
        return celery_app.where(self.broker)

    def withdraw(self, pending):
        """Take back a call no worker has taken (its operation was cancelled). True when taken
        back; False when a worker has it (it runs to its end)."""
        if self._retrying(lambda: self.redis.set(CLAIM + pending.call_id, b"revoked", nx=True,
                                                 ex=self.expires)):
            self.forget(pending)
            return True
        return False

    def forget(self, pending):
        with self.lock:
            self.pending.pop(pending.call_id, None)
            self.sent.discard(pending.call_id)
        try:
            self.redis.delete(META + pending.call_id, SENT + pending.call_id)
        except Exception:  # noqa: BLE001 (it expires anyway)
            pass

    def wait(self, pending, timeout=None, cancelled=None, paused=None):
        """The outcome of ``pending``; None when ``cancelled()`` or ``paused()`` turned true
        first and the call was withdrawn, WorkerError when ``timeout`` passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        stop = [check for check in (cancelled, paused) if check is not None]
        while not pending.done.wait(0.5):  # the outcome wakes it at once; 0.5 s: a cancel
            if stop and pending.worker is None and any(check() for check in stop):
                if self.withdraw(pending):
                    return None
                stop = []  # a worker has it: wait for its end
            if deadline is not None and time.monotonic() > deadline:
                self.forget(pending)
                raise WorkerError(f"no worker answered on the queue within {timeout:.0f} s")
        with self.lock:
            self.pending.pop(pending.call_id, None)
        return pending.outcome

    # -- collecting ----------------------------------------------------------------------------

    def _settle(self, pending, meta):
        # Workers store every call's outcome as SUCCESS (a failed call is an outcome too).
        if meta.get("status") == "SUCCESS":
            outcome = meta.get("result") or {}
            pending.started(outcome.get("worker"))
            pending.finish(outcome)

    def _heard(self, channel, data):
        if channel == STARTED:  # a worker took a message's calls: {"worker": W, "calls": [..]}
            notice = json.loads(data)
            with self.lock:
                taken = [self.pending.get(call_id) for call_id in notice.get("calls", ())]
            for pending in taken:
                if pending is not None:
                    pending.started(notice.get("worker"))
            return
        call_id = channel[len(META):]
        with self.lock:
            pending = self.pending.get(call_id)
        if pending is not None:
            self._settle(pending, json.loads(data))

    def _sweep(self):
        with self.lock:
            waiting = [p for p in self.pending.values() if not p.done.is_set()]
        for start in range(0, len(waiting), 500):
            chunk = waiting[start:start + 500]
            values = self.redis.mget([META + p.call_id for p in chunk])
            for pending, raw in zip(chunk, values):
                if raw:
                    self._settle(pending, json.loads(raw))

    def _resend_unclaimed(self):
        """Send again every call that no worker has claimed, after the broker was down.

        Celery on Redis can lose a message in a broker restart: a worker had taken it off the
        queue and not yet recorded it as unacknowledged, or died while reconnecting with it
        reserved (Kombu's channel close raising in Celery's consumer). Nothing would ever
        deliver it again, and the operation would wait forever. A copy of a call that was not
        lost (still queued) is harmless: a worker makes a call only for the message that
        claimed it first (worker.py)."""
        with self.lock:
            waiting = [p for p in self.pending.values() if not p.done.is_set()]
        lost = []
        for start in range(0, len(waiting), 500):
            chunk = waiting[start:start + 500]
            pipe = self.redis.pipeline(transaction=False)
            for pending in chunk:
                pipe.exists(CLAIM + pending.call_id, META + pending.call_id)
            lost += [p for p, found in zip(chunk, pipe.execute()) if not found]
        if lost:
            LOG.warning("the broker %s was down: sending again %d calls no worker has taken "
                        "(a copy of one still queued is skipped by the worker that gets it)",
                        self.where(), len(lost))
            with self.lock:
                self.outbox += [pending.sending for pending in lost]
            self.wake.set()

    def _listen(self):
        delay, down = 0.1, False
        while not self.stopped:
            pubsub = None
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                pubsub.psubscribe(META + "*")
                pubsub.subscribe(STARTED)
                self._sweep()  # what was stored before the subscription began
                if down:
                    self._resend_unclaimed()
                    down = False
                delay, swept = 0.1, time.monotonic()
                while not self.stopped:
                    message = pubsub.get_message(timeout=SWEEP)
                    if message and message["type"] in ("pmessage", "message"):
                        channel = message["channel"]
                        self._heard(channel.decode() if isinstance(channel, bytes) else channel,
                                    message["data"])
                    if time.monotonic() - swept >= SWEEP:
                        self._sweep()
                        swept = time.monotonic()
            except Exception as exc:  # noqa: BLE001 (a broker restart: listen again)
                if self.stopped:
                    return
                down = True
                LOG.warning("listening for results on %s failed (%s); again in %.1f s",
                            self.where(), exc, delay)
                time.sleep(delay)
                delay = min(5.0, delay * 2)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:  # noqa: BLE001
                        pass

    def stop(self):
        self.stopped = True
        self.wake.set()

    # -- the workers ---------------------------------------------------------------------------

    def workers(self, timeout=1.0):
        """The workers the broker knows: name, queues, concurrency, the calls they run."""
        import concurrent.futures

        inspect = self.app.control.inspect(timeout=timeout)
        try:
            # Each asks every worker and waits ``timeout`` for the answers: the three at once.
            with concurrent.futures.ThreadPoolExecutor(3) as pool:
                queues, active, stats = (f.result() or {} for f in [
                    pool.submit(inspect.active_queues),
                    # safe: the calls' ids (argsrepr), not their inputs
                    pool.submit(inspect.active, True),
                    pool.submit(inspect.stats)])
        except Exception as exc:  # noqa: BLE001
            raise WorkerError(f"broker {self.where()} unreachable: {exc}") from None
        result = []
        for name in sorted(set(queues) | set(active) | set(stats)):
            pool = (stats.get(name) or {}).get("pool") or {}
            result.append({
                "name": name,
                "queues": sorted(q["name"] for q in queues.get(name, [])),
                "concurrency": pool.get("max-concurrency") or 0,
                "running": sorted(call_name(c) for t in active.get(name, [])
                                  for c in message_calls(t)),
            })
        return result


def message_calls(request):
    """The call ids of a message a worker runs (its argsrepr is their list)."""
    try:
        calls = json.loads(request.get("args") or "[]")
    except (TypeError, ValueError):
        return [request.get("id", "")]
    return [c for c in calls if isinstance(c, str)] if isinstance(calls, list) else []


def call_name(call_id):
    """The task id in a call id (``<task id>@<attempt>.<call>``), or the call id itself."""
    return call_id.rpartition("@")[0] or call_id
