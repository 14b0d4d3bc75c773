"""Health at scale, on the fake provider (tests/testkit), through a real server process.

(a) 1,000 service instances (10 clusters of 100 nodes, the ``base`` service on every node with
    a TCP check of a listener on 127.0.0.1, every second): health checks run per second, read
    from the server's own /api/v1/metrics over a measured stretch.
(b) The health loop's drift round over those 1,000 nodes: calls to the provider per round (the
    fake cloud counts each page of its inventory listing), against ceil(nodes / page).
(c) 100 healthy clusters of 2 nodes (checks every 10 s, node facts every 60 s, the defaults
    otherwise): the server's CPU while nothing else happens, from /proc/<pid>/stat.

    .venv/bin/python bench/health.py [--clusters 10] [--nodes 100] [--idle-clusters 100]
"""

import argparse
import json
import math
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHOAL = str(pathlib.Path(sys.executable).with_name("shoal"))
PAGE = 100


def listener():
    """A TCP listener on loopback that accepts and closes: what every check reaches."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(512)

    def serve():
        while True:
            conn, _ = server.accept()
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname()[1]


class Server:
    def __init__(self, home, **settings):
        self.home = pathlib.Path(home)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
        self.env.update(SHOAL_HOME=str(self.home), SHOAL_DEFAULT_CATALOG="0",
                        SHOAL_POLL_BASE="0.05", SHOAL_RETRIES="0")
        self.env.update({f"SHOAL_{k.upper()}": str(v) for k, v in settings.items()})

    def shoal(self, *args):
        subprocess.run([SHOAL, *map(str, args)], env=self.env, check=True,
                       capture_output=True, text=True)

    def start(self):
        self.shoal("server", "start")
        state = json.loads((self.home / "server.json").read_text())
        self.url, self.pid = state["url"], state["pid"]
        self.token = (self.home / "token").read_text().strip()

    def stop(self):
        self.shoal("server", "stop")

    def api(self, method, path, body=None):
        request = urllib.request.Request(
            self.url + "/api/v1" + path, method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.token}",
                     "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as reply:
            data = reply.read()
            return json.loads(data) if reply.headers["Content-Type"].startswith(
                "application/json") else data.decode()

    def metrics(self):
        from prometheus_client.parser import text_string_to_metric_families

        found = {}
        for family in text_string_to_metric_families(self.api("GET", "/metrics")):
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                found[key] = sample.value
        return found

    def cpu_seconds(self):
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def catalog(root, port, interval):
    from shoal_testkit import catalog as testkit

    testkit.write(root, providers={"fake": {"page_size": PAGE}})
    path = root / "services" / "base.json"
    body = json.loads(path.read_text())
    body["provisioner"]["health"] = {"type": "tcp", "host": "127.0.0.1", "port": port,
                                     "interval": interval, "timeout": 2, "retries": 2}
    path.write_text(json.dumps(body))
    return root


def make_clusters(server, count, size):
    for i in range(count):
        server.api("POST", "/clusters", {"name": f"c{i}", "template": "fake-stack",
                                         "size": size})
    while True:
        rows = server.api("GET", "/clusters")
        if all(r["status"] == "ACTIVE" for r in rows):
            return rows
        bad = [r for r in rows if r["status"] in ("FAILED", "INCONSISTENT")]
        if bad:
            raise SystemExit(f"create failed: {bad}")
        time.sleep(1)


def healthy(server, expected, timeout=600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        count = server.metrics().get(("shoal_health_instances", (("state", "healthy"),)), 0)
        if count >= expected:
            return
        time.sleep(1)
    raise SystemExit(f"only {count} of {expected} instances healthy after {timeout} s")


def load():
    return os.getloadavg()[0]


def bare_connects(port, count=2000):
    """Baseline: TCP connections a second to the same listener from one thread of this
    process, with nothing recorded: what one checker could do if checks cost nothing else."""
    started = time.perf_counter()
    for _ in range(count):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    return count / (time.perf_counter() - started)


def part_checks(args, port):
    nodes = args.clusters * args.nodes
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(pathlib.Path(tmp) / "home", health_refresh=2, drift_interval=5,
                        facts_interval=3600)
        server.start()
        try:
            server.shoal("catalog", "import", catalog(pathlib.Path(tmp) / "cat", port, 1))
            started = time.monotonic()
            make_clusters(server, args.clusters, args.nodes)
            print(f"made {args.clusters} clusters of {args.nodes} fake nodes in "
                  f"{time.monotonic() - started:.1f} s")
            healthy(server, nodes)
            before, t0, cpu0 = server.metrics(), time.monotonic(), server.cpu_seconds()
            time.sleep(args.seconds)
            after, t1, cpu1 = server.metrics(), time.monotonic(), server.cpu_seconds()
            key = ("shoal_health_checks_total", (("result", "ok"),))
            failed = ("shoal_health_checks_total", (("result", "failed"),))
            rate = (after[key] - before[key]) / (t1 - t0)
            print(f"(a) {nodes} instances checked every 1 s: {rate:.0f} checks/s "
                  f"({after.get(failed, 0) - before.get(failed, 0):.0f} failed), server CPU "
                  f"{100 * (cpu1 - cpu0) / (t1 - t0):.0f}% of a core, load {load():.1f}; "
                  f"baseline: bare connects from one thread {bare_connects(port):.0f}/s")
            cloud = pathlib.Path(tmp) / "home" / "fake-cloud.json"

            def calls():
                return json.loads(cloud.read_text())["counters"].get(
                    "inventory_calls", {}).get("all", 0)

            def rounds():
                return server.metrics().get(("shoal_drift_rounds_total", ()), 0)

            def next_round(after):
                # Read the calls right after a round ends: rounds are seconds apart, so the
                # next one has not begun (each round counts its calls as it makes them).
                while rounds() <= after:
                    time.sleep(0.1)
                return rounds(), calls()

            rounds0, calls0 = next_round(rounds())
            rounds1, calls1 = next_round(rounds0 + 2)
            per_round = (calls1 - calls0) / (rounds1 - rounds0)
            print(f"(b) drift over {nodes} nodes in {args.clusters} clusters, page {PAGE}: "
                  f"{per_round:g} provider calls per round (ceil(nodes / page) = "
                  f"{math.ceil(nodes / PAGE)}; one per node would be {nodes})")
        finally:
            server.stop()


def part_idle(args, port):
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(pathlib.Path(tmp) / "home")
        server.start()
        try:
            server.shoal("catalog", "import", catalog(pathlib.Path(tmp) / "cat", port, 10))
            make_clusters(server, args.idle_clusters, 2)
            healthy(server, args.idle_clusters * 2)
            time.sleep(15)  # the first rounds of facts and checks are done
            before, t0, cpu0 = server.metrics(), time.monotonic(), server.cpu_seconds()
            time.sleep(args.idle_seconds)
            after, t1, cpu1 = server.metrics(), time.monotonic(), server.cpu_seconds()
            key = ("shoal_health_checks_total", (("result", "ok"),))
            print(f"(c) {args.idle_clusters} healthy clusters ({args.idle_clusters * 2} checks "
                  f"every 10 s, facts of {args.idle_clusters * 2} nodes every 60 s), idle "
                  f"{t1 - t0:.0f} s: server CPU {100 * (cpu1 - cpu0) / (t1 - t0):.2f}% of a "
                  f"core ({(after[key] - before[key]) / (t1 - t0):.1f} checks/s), load "
                  f"{load():.1f}")
        finally:
            server.stop()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--clusters", type=int, default=10)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--idle-clusters", type=int, default=100)
    parser.add_argument("--idle-seconds", type=float, default=120)
    parser.add_argument("--skip", choices=("checks", "idle"))
    args = parser.parse_args()
    port = listener()
    print(f"load {load():.1f} at the start")
    if args.skip != "checks":
        part_checks(args, port)
    if args.skip != "idle":
        part_idle(args, port)


if __name__ == "__main__":
    main()
