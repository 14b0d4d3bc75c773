"""Waiting for nodes to come up: batched, backing off, and without a timeout.

One polling thread per provider asks about every pending node in a single ``describe`` call,
so the number of calls grows with rounds, not with nodes. The wait ends when the provider says
RUNNING, FAILED or GONE, or when the caller's operation is cancelled: never on a clock (the
cloud, not Shoal, decides when something failed).
"""

import concurrent.futures
import logging
import threading
import time

from cluster_server.plugins import NodeState

LOG = logging.getLogger("shoal.poller")


class Cancelled(Exception):
    pass


class _Waiter:
    def __init__(self, info, cancelled):
        self.info = info
        self.cancelled = cancelled  # a callable: True once the operation is cancelled
        self.future = concurrent.futures.Future()


class ProviderPoller:
    def __init__(self, provider, base=1.0, ceiling=30.0):
        self.provider = provider
        self.base = base
        self.ceiling = ceiling
        self.lock = threading.Lock()
        self.waiters = {}  # resource id -> list of _Waiter
        self.wake = threading.Event()
        # After a wake-up for a new node, wait this long so a burst of new nodes (many CONFIRMs
        # finishing their creates together) shares one call instead of making one each.
        self.gather = min(base, 0.05)
        self.thread = None
        self.calls = 0  # describe calls made (for benchmarks and tests)

    def watch(self, info, cancelled=lambda: False):
        """Wait for the node of ``info`` without blocking: a Future of its final NodeInfo.

        Any number of watches costs no thread each: the one polling thread completes them.
        A watch whose ``cancelled()`` turns true fails with Cancelled.
        """
        return self._add(info, cancelled).future

    def wait(self, info, cancelled=lambda: False):
        """Block until the node of ``info`` is RUNNING, FAILED or GONE; return its NodeInfo."""
        waiter = self._add(info, cancelled)
        while True:
            try:
                return waiter.future.result(0.2)
            except concurrent.futures.TimeoutError:
                if cancelled():
                    self._forget(waiter)
                    raise Cancelled() from None

    def _add(self, info, cancelled):
        waiter = _Waiter(info, cancelled)
        with self.lock:
            self.waiters.setdefault(info.resource_id, []).append(waiter)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._loop, daemon=True,
                                               name=f"shoal-poll-{self.provider.name}")
                self.thread.start()
        self.wake.set()  # a new node: poll soon instead of at the end of a long backoff
        return waiter

    def _forget(self, waiter):
        with self.lock:
            items = self.waiters.get(waiter.info.resource_id, [])
            if waiter in items:
                items.remove(waiter)
            if not items:
                self.waiters.pop(waiter.info.resource_id, None)

    def _loop(self):
        delay = self.base
        while True:
            with self.lock:
                for key, waiters in list(self.waiters.items()):
                    for waiter in [w for w in waiters if w.cancelled()]:
                        waiters.remove(waiter)
                        waiter.future.set_exception(Cancelled())
                    if not waiters:
                        del self.waiters[key]
                if not self.waiters:
                    self.thread = None
                    return
                infos = [ws[0].info for ws in self.waiters.values()]
                # Cleared with the round's snapshot, not after it: a node added while describe
                # runs must start the next round at once, not wait out the backoff.
                self.wake.clear()
            try:
                self.calls += 1
                states = self.provider.describe(infos)
            except Exception as exc:  # a failed poll is not a failed node: try again later
                LOG.warning("polling %s failed: %s", self.provider.name, exc)
                states = {}
            finished = False
            with self.lock:
                for resource_id, info in states.items():
                    if info.state in (NodeState.RUNNING, NodeState.FAILED, NodeState.GONE):
                        for waiter in self.waiters.pop(resource_id, []):
                            waiter.future.set_result(info)
                            finished = True
            if finished:
                delay = self.base
            if self.wake.wait(delay):
                time.sleep(self.gather)
            else:
                delay = min(self.ceiling, delay * 2)


class Poller:
    """One ProviderPoller per provider instance."""

    def __init__(self, base=1.0, ceiling=30.0):
        self.base = base
        self.ceiling = ceiling
        self.lock = threading.Lock()
        self.pollers = {}

    def poller(self, provider):
        with self.lock:
            poller = self.pollers.get(id(provider))
            if poller is None:
                poller = self.pollers[id(provider)] = ProviderPoller(provider, self.base,
                                                                     self.ceiling)
            return poller

    def wait(self, provider, info, cancelled=lambda: False):
        return self.poller(provider).wait(info, cancelled)

    def wake(self):
        """Poll every provider now instead of at the end of its backoff: a cancel is seen at
        the start of a round, and rounds can be 30 s apart."""
        with self.lock:
            pollers = list(self.pollers.values())
        for poller in pollers:
            poller.wake.set()

    def watch(self, provider, info, cancelled=lambda: False):
        return self.poller(provider).watch(info, cancelled)
