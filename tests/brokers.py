"""A real Redis broker and real Shoal (Celery) workers for tests: each a process of its own on
loopback, started and stopped by the test.

Redis is Debian's redis-server (tests/install.d/20-redis.sh), on a free 127.0.0.1 port with its
files in a temp dir and the append-only file on (fsynced every second, as in production; an
fsync per write costs 6 ms a message here), so a restart of the broker (SIGTERM: Redis writes
out before it exits; start again on the same dir) keeps every queued message and stored result.
"""

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time

from tests.conftest import SHOAL

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Redis:
    def __init__(self, root):
        self.root = pathlib.Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process = None
        self.start()

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        log = open(self.root / "redis.log", "ab")
        self.process = subprocess.Popen(
            [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.root),
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
             "--protected-mode", "yes"], stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"redis-server did not start: {(self.root / 'redis.log').read_text()}")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: Redis writes out and exits
            self.process.wait(30)

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port)


class Worker:
    """``shoal worker start`` in the foreground (the process is the Celery worker itself)."""

    def __init__(self, root, broker, name, queues="shoal.default", concurrency=2, env=None,
                 pool="prefork"):
        self.name = name
        self.log_path = pathlib.Path(root) / f"worker-{name.split('@')[0]}.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
        self.env.update(env or {})
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [SHOAL, "worker", "start", "--broker", broker, "--name", name, "--queues", queues,
             "--concurrency", str(concurrency), "--pool", pool],
            env=self.env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if f"{name} ready." in self.log_path.read_text(errors="replace"):
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"worker {name} did not start: {self.log_path.read_text()}")

    @property
    def pid(self):
        return self.process.pid

    def children(self):
        """The pool's processes (prefork): the ones that run the tasks."""
        try:
            text = pathlib.Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
