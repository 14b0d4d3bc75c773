"""A message of several calls, as a worker runs it, on a real redis-server: the calls run side by
side (a long one holds back none of the others' outcomes), a withdrawn call and a call whose
outcome is already stored are skipped, and each outcome is stored once under the call's id."""

import json
import threading
import time

import pytest

from cluster_server.workers import app as celery_app
from cluster_server.workers.client import META, WorkerClient
from cluster_server.workers.worker import CLAIM, build
from tests.brokers import Redis, Worker


@pytest.fixture
def redis(tmp_path):
    server = Redis(tmp_path / "redis")
    try:
        yield server
    finally:
        server.stop()


def noop(sleep=0.0):
    return {"method": "noop", "args": {"sleep": sleep}}


def stored(client, call_id):
    raw = client.get(META + call_id)
    return json.loads(raw) if raw else None


def test_a_messages_calls_run_side_by_side_and_skip_what_is_done_or_withdrawn(redis, tmp_path):
    app = build(redis.url, home=tmp_path)
    client = redis.client()
    client.set(CLAIM + "withdrawn", b"revoked")
    earlier = {"status": "SUCCESS", "result": {"ok": True, "value": "first", "worker": "w0"}}
    client.set(META + "done-before", json.dumps(earlier))
    batch = [{"id": "long", "message": noop(3.0)}, {"id": "short-1", "message": noop()},
             {"id": "withdrawn", "message": noop()}, {"id": "done-before", "message": noop()},
             {"id": "short-2", "message": noop()}]
    runner = threading.Thread(target=lambda: app.tasks[celery_app.TASK].apply(args=[batch]))
    started = time.monotonic()
    runner.start()
    while not (stored(client, "short-1") and stored(client, "short-2")):
        assert time.monotonic() - started < 2.5, "the short calls waited for the long one"
        time.sleep(0.02)
    assert stored(client, "long") is None
    runner.join(10)
    assert stored(client, "long")["result"]["ok"] is True
    for call_id in ("long", "short-1", "short-2"):
        assert stored(client, call_id)["task_id"] == call_id
        assert client.get(CLAIM + call_id)  # each claimed by the worker that made it
    assert stored(client, "withdrawn") is None  # the server took it back: not made
    assert stored(client, "done-before") == earlier  # made before: left as it was


def test_calls_sent_at_once_share_messages_and_each_gets_its_own_outcome(redis, tmp_path,
                                                                        monkeypatch):
    """The server's side, with a real worker process: 40 calls sent from 40 threads go in
    messages of at most SHOAL_CALLS_PER_MESSAGE calls, and each caller gets its own outcome."""
    monkeypatch.setenv("SHOAL_CALLS_PER_MESSAGE", "3")
    server = WorkerClient(redis.url)
    published = []
    publish = server._publish
    server._publish = lambda queue, expires, calls: (published.append(len(calls)),
                                                     publish(queue, expires, calls))
    worker = Worker(tmp_path, redis.url, "m1@test", "shoal.test", 2,
                    env={"SHOAL_HOME": str(tmp_path / "worker")})
    try:
        outcomes = {}

        def call(i):
            pending = server.send(f"call-{i}", noop(0.05), "shoal.test")
            outcomes[i] = server.wait(pending, timeout=60)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(40)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
        assert sorted(outcomes) == list(range(40))
        assert all(o["ok"] and o["worker"] == "m1@test" for o in outcomes.values())
        assert sum(published) == 40 and max(published) <= 3
    finally:
        server.stop()
        worker.stop()


def test_worker_status_names_the_calls_a_worker_runs_and_not_their_inputs(redis, tmp_path):
    server = WorkerClient(redis.url)
    worker = Worker(tmp_path, redis.url, "s1@test", "shoal.test", 1,
                    env={"SHOAL_HOME": str(tmp_path / "worker")})
    try:
        message = noop(3.0)
        message["args"]["secret-looking-input"] = "hunter2"
        pending = server.send("op-0123456789ab/n1:install@1.0", message, "shoal.test")
        deadline = time.monotonic() + 20
        while pending.worker is None:
            assert time.monotonic() < deadline, "no worker took the call"
            time.sleep(0.05)
        (status,) = server.workers()
        assert status["name"] == "s1@test" and status["queues"] == ["shoal.test"]
        assert status["running"] == ["op-0123456789ab/n1:install"]
        assert "hunter2" not in json.dumps(status)
        assert server.wait(pending, timeout=20)["ok"] is True
    finally:
        server.stop()
        worker.stop()


def test_a_call_runs_for_the_message_that_claimed_it_and_no_copy_of_it(redis, tmp_path):
    """After a broker restart the server sends again the calls no worker claimed; a copy of one
    that was not lost must not make it twice. The same message delivered again (its worker
    died) still makes it."""
    app = build(redis.url, home=tmp_path)
    client = redis.client()
    client.set(CLAIM + "copy", b"w9@test calls-first")  # another message holds it
    client.set(CLAIM + "again", b"w9@test calls-this")  # this message, on a worker now gone
    batch = [{"id": "copy", "message": noop()}, {"id": "again", "message": noop()},
             {"id": "new", "message": noop()}]
    app.tasks[celery_app.TASK].apply(args=[batch], task_id="calls-this")
    assert stored(client, "copy") is None  # the first message's worker makes it
    assert stored(client, "again")["result"]["ok"] is True
    assert stored(client, "new")["result"]["ok"] is True
    assert client.get(CLAIM + "new").endswith(b" calls-this")
