#!/usr/bin/env python3
"""The services of Shoal's default catalog, run on a node by the shell automator.

    shoal-demo.py backend  start --address A     web server answering with its node's name
    shoal-demo.py balancer configure --backends "A:P,B:P"
    shoal-demo.py balancer start --address A     round-robin HTTP proxy to the backends
    shoal-demo.py kv-primary start --address A   key-value store over HTTP (GET/PUT /KEY)
    shoal-demo.py kv-replica start --address A --primary A:P   read-only copy of the primary
    shoal-demo.py ROLE stop

Ports come from the cluster config (SHOAL_CONFIG): web.backend_port, web.balancer_port,
kv.port. Daemons write their pid where the node tells (SHOAL_NODE_PIDDIR) so that deleting the
node stops them. Only the standard library: nodes need nothing but python3.
"""

import argparse
import http.client
import http.server
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

DEFAULT_PORTS = {"backend": ("web", "backend_port", 18080),
                 "balancer": ("web", "balancer_port", 18000),
                 "kv-primary": ("kv", "port", 16379),
                 "kv-replica": ("kv", "port", 16379)}


def config():
    try:
        return json.loads(os.environ.get("SHOAL_CONFIG") or "{}")
    except ValueError:
        return {}


def port_of(role):
    section, key, default = DEFAULT_PORTS[role]
    return int(config().get(section, {}).get(key, default))


def state_dir():
    base = os.environ.get("SHOAL_NODE_ROOT") or os.getcwd()
    path = os.path.join(base, "demo-state", os.environ.get("SHOAL_NODE_ID", "node"))
    os.makedirs(path, exist_ok=True)
    return path


def pid_file(role):
    piddir = os.environ.get("SHOAL_NODE_PIDDIR") or state_dir()
    os.makedirs(piddir, exist_ok=True)
    return os.path.join(piddir, f"demo-{role}.pid")


# -- daemons -----------------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    """What the three daemons share: a whole answer in one call, and no access log."""

    def _answer(self, status, body):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass  # a daemon's log is its stderr file: one line per request would only fill it


class BackendHandler(_Handler):
    def do_GET(self):
        body = f"backend {self.server.name} ({self.server.server_address[0]})\n".encode()
        self._answer(200, body)


class BalancerHandler(_Handler):
    def do_GET(self):
        backends = self.server.backends()
        if not backends:
            return self._answer(503, b"no backends\n")
        for _ in range(len(backends)):
            with self.server.lock:
                target = backends[next(self.server.counter) % len(backends)]
            host, _, port = target.rpartition(":")
            try:
                conn = http.client.HTTPConnection(host, int(port), timeout=5)
                conn.request("GET", self.path)
                reply = conn.getresponse()
                return self._answer(reply.status, reply.read())
            except OSError:
                continue  # that backend is down: try the next one
        return self._answer(502, b"every backend failed\n")


class KVHandler(_Handler):
    def do_GET(self):
        if self.path == "/_dump":
            return self._answer(200, json.dumps(self.server.data).encode())
        value = self.server.data.get(self.path.lstrip("/"))
        if value is None:
            return self._answer(404, b"not found\n")
        return self._answer(200, value.encode())

    def do_PUT(self):
        if self.server.primary:
            return self._answer(403, b"read-only replica\n")
        length = int(self.headers.get("Content-Length", 0))
        self.server.data[self.path.lstrip("/")] = self.rfile.read(length).decode()
        return self._answer(204, b"")


def serve(role, address, extra):
    handler = {"backend": BackendHandler, "balancer": BalancerHandler,
               "kv-primary": KVHandler, "kv-replica": KVHandler}[role]
    server = http.server.ThreadingHTTPServer((address, port_of(role)), handler)
    server.name = os.environ.get("SHOAL_NODE_ID", "node")
    if role == "balancer":
        listing = os.path.join(state_dir(), "backends.txt")
        server.lock = threading.Lock()
        server.counter = itertools.count()

        def backends():
            # Read on every request: a reconfigure takes effect without a restart.
            try:
                with open(listing) as f:
                    return [line.strip() for line in f if line.strip()]
            except OSError:
                return []

        server.backends = backends
    if role.startswith("kv"):
        server.data = {}
        server.primary = extra if role == "kv-replica" else None
        if server.primary:
            threading.Thread(target=replicate, args=(server,), daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    server.serve_forever()


def replicate(server):
    while True:
        try:
            with urllib.request.urlopen(f"http://{server.primary}/_dump", timeout=5) as reply:
                server.data = json.loads(reply.read())
        except (OSError, ValueError):
            pass
        time.sleep(0.5)


# -- actions -----------------------------------------------------------------------------------


def running_pid(role):
    try:
        with open(pid_file(role)) as f:
            pid = int(f.read().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def start(role, address, extra=""):
    if running_pid(role):
        print(f"{role} already running")
        return 0
    log = open(os.path.join(state_dir(), f"{role}.log"), "ab")
    process = subprocess.Popen([sys.executable, os.path.abspath(__file__), "_serve", role,
                                address, extra], stdin=subprocess.DEVNULL, stdout=log,
                               stderr=log, start_new_session=True)
    with open(pid_file(role), "w") as f:
        f.write(str(process.pid))
    port = port_of(role)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            print(f"{role} exited at start; see {log.name}", file=sys.stderr)
            return 1
        try:
            socket.create_connection((address, port), timeout=1).close()
            print(f"{role} listening on {address}:{port}")
            return 0
        except OSError:
            time.sleep(0.05)
    print(f"{role} did not listen on {address}:{port} within 15 s", file=sys.stderr)
    return 1


def stop(role):
    pid = running_pid(role)
    if pid is None:
        print(f"{role} not running")
        return 0
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except OSError:
            break
        time.sleep(0.05)
    os.unlink(pid_file(role))
    print(f"{role} stopped")
    return 0


def main(argv):
    if argv and argv[0] == "_serve":
        serve(argv[1], argv[2], argv[3])
        return 0
    parser = argparse.ArgumentParser(prog="shoal-demo.py")
    parser.add_argument("role", choices=sorted(DEFAULT_PORTS))
    parser.add_argument("action", choices=("start", "stop", "configure"))
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--backends", default="")
    parser.add_argument("--primary", default="")
    args = parser.parse_args(argv)
    if args.action == "stop":
        return stop(args.role)
    if args.action == "configure":
        if args.role == "balancer":
            port = port_of("backend")
            hosts = [h for h in args.backends.split(",") if h]
            targets = [h if ":" in h else f"{h}:{port}" for h in hosts]
            tmp = os.path.join(state_dir(), "backends.txt.tmp")
            with open(tmp, "w") as f:
                f.write("".join(t + "\n" for t in targets))
            os.replace(tmp, os.path.join(state_dir(), "backends.txt"))
            print(f"balancer backends: {', '.join(targets) or 'none'}")
        return 0
    extra = ""
    if args.role == "kv-replica":
        extra = args.primary if ":" in args.primary else f"{args.primary}:{port_of('kv-primary')}"
    return start(args.role, args.address, extra)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
