"""``--wait``: follow an operation until it ends, with a live progress line on stderr."""

import contextlib
import sys
import threading
import time

from cluster_cli.client import ClientError, segment

FINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
TICK = 0.5  # seconds between rewrites of the line on a terminal, whatever the server's pace


def describe(op):
    counts = op["counts"]
    done = counts.get("SUCCEEDED", 0) + counts.get("SKIPPED", 0)
    line = (f"{op['kind']} {op['cluster']}: {op['status'].lower()}, {done}/{op['total']} tasks "
            f"done, {counts.get('RUNNING', 0)} running, {counts.get('FAILED', 0)} failed")
    if op["running"] and op["status"] not in FINAL:
        line += " — " + "; ".join(op["running"][:3])
    return line


class _Ticker:
    """Rewrites the line on a terminal every TICK seconds with the time elapsed, so it keeps
    moving while a poll waits on a busy server (a create of 10,000 nodes)."""

    def __init__(self, stream):
        self.stream, self.line, self.start = stream, "", time.monotonic()
        self.lock, self.done = threading.Lock(), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def show(self, line):
        with self.lock:
            self.line = line
            self._write()

    def _write(self):
        elapsed = f" [{time.monotonic() - self.start:.0f} s]"
        self.stream.write("\r\033[K" + self.line[:160 - len(elapsed)] + elapsed)
        self.stream.flush()

    def _run(self):
        while not self.done.wait(TICK):
            with self.lock:
                if self.line:
                    self._write()

    def stop(self, erase=False):
        self.done.set()
        self.thread.join()
        self.stream.write("\r\033[K" if erase else "\n")
        self.stream.flush()


@contextlib.contextmanager
def preparing(line, stream=None):
    """While the request that plans and stores an operation runs (seconds at 10,000 nodes),
    a line on a terminal that keeps moving; erased when the answer comes."""
    stream = stream or sys.stderr
    if not stream.isatty():
        yield
        return
    ticker = _Ticker(stream)
    ticker.show(line)
    try:
        yield
    finally:
        ticker.stop(erase=True)


def wait(client, op_id, stream=None, interval=0.3):
    """Block until the operation ends; raise ClientError when it did not succeed."""
    stream = stream or sys.stderr
    ticker = _Ticker(stream) if stream.isatty() else None
    last = None
    try:
        while True:
            op = client.get(f"/operations/{segment(op_id)}")
            line = describe(op)
            if ticker:
                ticker.show(line)
            elif line != last:
                stream.write(line + "\n")
                stream.flush()
            last = line
            if op["status"] in FINAL:
                break
            time.sleep(interval)
    finally:
        if ticker:
            ticker.stop()
    if op["status"] != "SUCCEEDED":
        raise ClientError(f"{op['kind']} of cluster {op['cluster']} {op['status'].lower()}: "
                          f"{op['error'] or 'see shoal task list ' + op['cluster']} "
                          f"(cluster is {op['cluster_status']})")
    return op
