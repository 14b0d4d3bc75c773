"""The poller: one describe call a round for every pending node, one thread, no timeout."""

import threading
import time

import pytest

from cluster_server.plugins import NodeInfo, NodeState
from cluster_server.poller import Cancelled, Poller


class Cloud:
    """A provider whose nodes run after ``rounds`` describe calls each."""

    name = "cloud"

    def __init__(self, rounds=3, failing=()):
        self.rounds = rounds
        self.failing = set(failing)
        self.calls = []  # number of nodes asked about, per call
        self.threads = set()
        self.seen = {}

    def describe(self, infos):
        self.calls.append(len(infos))
        self.threads.add(threading.get_ident())
        result = {}
        for info in infos:
            self.seen[info.resource_id] = self.seen.get(info.resource_id, 0) + 1
            state = NodeState.PENDING
            if self.seen[info.resource_id] >= self.rounds:
                state = NodeState.FAILED if info.resource_id in self.failing else \
                    NodeState.RUNNING
            result[info.resource_id] = NodeInfo(resource_id=info.resource_id, state=state)
        return result


def test_many_watches_share_one_call_a_round_and_one_thread():
    cloud = Cloud(rounds=3, failing={"n7"})
    # The first call (about n0 alone) waits until every watch is added: the rounds that follow
    # are then fixed whatever the machine's load, and must ask about all 500 nodes at once.
    added = threading.Event()
    describe = cloud.describe
    cloud.describe = lambda infos: (added.wait(10), describe(infos))[1]
    poller = Poller(base=0.01, ceiling=0.05)
    before = threading.active_count()
    futures = {f"n{i}": poller.watch(cloud, NodeInfo(resource_id=f"n{i}")) for i in range(500)}
    assert threading.active_count() - before <= 1  # the polling thread, nothing per node
    added.set()
    results = {key: future.result(10) for key, future in futures.items()}
    assert results["n7"].state == NodeState.FAILED
    assert {r.state for k, r in results.items() if k != "n7"} == {NodeState.RUNNING}
    # The first call asks about the k nodes added before the thread ran; they are done after the
    # third round, the other 500 - k after the fourth.
    assert cloud.calls[1:3] == [500, 500] and len(cloud.calls) <= 4, cloud.calls
    assert sum(cloud.calls) == 3 * 500
    assert len(cloud.threads) == 1


def test_a_burst_of_new_nodes_shares_one_call():
    # Nodes added one by one, a millisecond apart: a wake-up for each would make a call each;
    # the poller gathers the burst into a round or two instead.
    cloud = Cloud(rounds=1)
    poller = Poller(base=0.2, ceiling=30)
    futures = []
    for i in range(20):
        futures.append(poller.watch(cloud, NodeInfo(resource_id=f"b{i}")))
        time.sleep(0.001)
    for future in futures:
        future.result(5)
    assert len(cloud.calls) <= 6, cloud.calls  # about 20 without the gathering


def test_a_cancelled_wait_stops_waiting():
    cloud = Cloud(rounds=10 ** 9)
    poller = Poller(base=0.01, ceiling=0.02)
    cancelled = threading.Event()
    future = poller.watch(cloud, NodeInfo(resource_id="n1"), cancelled.is_set)
    threading.Timer(0.1, cancelled.set).start()
    with pytest.raises(Cancelled):
        future.result(5)
    with pytest.raises(Cancelled):
        poller.wait(cloud, NodeInfo(resource_id="n2"), lambda: True)


def test_a_failed_poll_is_not_a_failed_node():
    cloud = Cloud(rounds=2)
    real, failures = cloud.describe, []

    def flaky(infos):
        if len(failures) < 2:
            failures.append(1)
            raise OSError("connection reset")
        return real(infos)

    cloud.describe = flaky
    assert Poller(base=0.01).wait(cloud, NodeInfo(resource_id="n1")).state == NodeState.RUNNING


def test_a_node_added_during_a_round_is_polled_at_once():
    cloud = Cloud(rounds=1)
    real, first_round = cloud.describe, threading.Event()

    def slow(infos):
        first_round.set()
        threading.Event().wait(0.2)  # a slow describe call
        return real(infos)

    cloud.describe = slow
    poller = Poller(base=30.0)
    first = poller.watch(cloud, NodeInfo(resource_id="n1"))
    first_round.wait(5)
    second = poller.watch(cloud, NodeInfo(resource_id="n2"))  # arrives during that call
    assert first.result(5).state == NodeState.RUNNING
    assert second.result(5).state == NodeState.RUNNING  # not after a 30 s backoff


def test_a_cancel_is_seen_at_once_when_the_poller_is_woken():
    # After a few rounds the backoff is long (here 10 s); wake() makes the next round now.
    cloud = Cloud(rounds=10 ** 9)
    poller = Poller(base=10, ceiling=10)
    cancelled = threading.Event()
    future = poller.watch(cloud, NodeInfo(resource_id="n1"), cancelled.is_set)
    deadline = time.monotonic() + 5
    while not cloud.calls:  # the first round has been made: the next is 10 s away
        assert time.monotonic() < deadline
        time.sleep(0.01)
    cancelled.set()
    poller.wake()
    with pytest.raises(Cancelled):
        future.result(2)
