"""The poller: one describe call a round for every pending node, one thread, no timeout."""

import threading

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
    poller = Poller(base=0.01, ceiling=0.05)
    before = threading.active_count()
    futures = {f"n{i}": poller.watch(cloud, NodeInfo(resource_id=f"n{i}")) for i in range(500)}
    assert threading.active_count() - before <= 1  # the polling thread, nothing per node
    results = {key: future.result(10) for key, future in futures.items()}
    assert results["n7"].state == NodeState.FAILED
    assert {r.state for k, r in results.items() if k != "n7"} == {NodeState.RUNNING}
    # Nodes added while it polls join the next round: some rounds more (how many depends on
    # how the adding interleaves with the polling on a busy machine), never a call per node.
    assert len(cloud.calls) < 50 and sum(cloud.calls) == 3 * 500  # each node in 3 rounds
    assert len(cloud.threads) == 1


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
