"""The janitor: a server thread that deletes clusters whose lease ran out, through an ordinary
delete operation (visible in events, tasks and ``cluster show``), and warns in a cluster's events
a while before (SHOAL_LEASE_WARNING, default 1h). Its first pass runs at start, so a cluster that
expired while the server was down is deleted then."""

import logging
import os
import threading
import time

from cluster_server import operations
from cluster_server.errors import ShoalError
from cluster_server.tenancy.durations import describe, to_ms
from cluster_server.tenancy.leases import iso

LOG = logging.getLogger("shoal.janitor")


def settings_from_env():
    """(seconds between passes, seconds of warning before an expiry)."""
    interval = float(os.environ.get("SHOAL_JANITOR_INTERVAL") or 15)
    warning = to_ms(os.environ.get("SHOAL_LEASE_WARNING") or "1h", "SHOAL_LEASE_WARNING") / 1000
    return interval, warning


class Janitor:
    def __init__(self, store, engine, interval=None, warning=None):
        default_interval, default_warning = settings_from_env()
        self.store = store
        self.engine = engine
        self.interval = default_interval if interval is None else interval
        self.warning = default_warning if warning is None else warning
        self.stopped = threading.Event()
        self.thread = None

    def start(self):
        self.thread = threading.Thread(target=self._loop, daemon=True, name="shoal-janitor")
        self.thread.start()
        return self

    def stop(self):
        self.stopped.set()

    def _loop(self):
        while not self.stopped.is_set():
            try:
                self.sweep()
            except Exception:  # a bad pass must not end the thread; the next one tries again
                LOG.exception("janitor pass failed")
            self.stopped.wait(self.interval)

    def sweep(self, now=None):
        """One pass: delete what expired, warn about what expires soon. Returns the operations
        it started."""
        now = time.time() if now is None else now
        rows = self.store.db.execute(
            "SELECT id, tenant, name, expires_at, lease_warned_at FROM clusters WHERE expires_at"
            " IS NOT NULL AND expires_at <= ? AND status NOT IN ('DELETED', 'DELETING')"
            " ORDER BY expires_at", [now + self.warning]).fetchall()
        started = []
        for cluster_id, tenant, name, expires_at, warned in rows:
            if expires_at <= now:
                op_id = self._expire(cluster_id, tenant, name, expires_at)
                if op_id:
                    started.append(op_id)
            elif warned is None:
                self._event(cluster_id, None, f"lease expires at {iso(expires_at)} (in "
                            f"{describe(int((expires_at - now) * 1000) // 1000 * 1000)}): the "
                            f"cluster will be deleted then; 'shoal cluster extend {name} --by "
                            "...' keeps it longer", warned_at=now)
        return started

    def _expire(self, cluster_id, tenant, name, expires_at):
        if operations.running_operation(self.store, cluster_id):
            return None  # busy: the next pass deletes it once the operation ends
        try:
            result = operations.delete(self.store, tenant, name, {},
                                       reason=f"lease expired at {iso(expires_at)}")
        except ShoalError as error:
            # Started meanwhile (a conflict), or gone: the next pass sees it again if it still
            # needs deleting.
            LOG.info("janitor: not deleting %s/%s now: %s", tenant, name, error.message)
            return None
        LOG.info("janitor: lease of %s/%s expired: operation %s deletes it", tenant, name,
                 result["operation"])
        self.engine.submit(result["operation"])
        return result["operation"]

    def _event(self, cluster_id, op_id, message, warned_at=None):
        with self.store.write() as db:
            db.execute("INSERT INTO events (cluster_id, operation_id, at, message) VALUES"
                       " (?, ?, ?, ?)", [cluster_id, op_id, time.time(), message])
            if warned_at is not None:
                db.execute("UPDATE clusters SET lease_warned_at = ? WHERE id = ?",
                           [warned_at, cluster_id])
