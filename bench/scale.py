"""Benchmark of Shoal at 1,000 and 10,000 nodes, end to end, beside the solver alone.

Usage: python bench/scale.py [--sizes 1000,10000] [--repeat 3] [--no-create]

For each size, a fresh server in a temp SHOAL_HOME (default settings) with the testkit catalog
(``tests/testkit``: the ``fake`` provider and automator, whose actions return at once; template
``fake-stack``: base on every node, db on one, app on the others, 11 tasks a node). It prints:

* solve and plan in-process: ``solve_layout`` alone and the planner alone (best of --repeat);
* plan through the API (POST /clusters/plan, the summary; and ?full=1, every task) and through
  the CLI (``shoal cluster plan``; and ``-f json --full``), best of --repeat, with the answer's
  size; the overhead ratio is the CLI's plan time over the solver alone (target: 20x at
  10,000 nodes), and the CLI's plan beyond the same plan for the template's least size (its
  fixed start) over the solver's own growth;
* create and delete (``shoal cluster create|delete --wait``, stderr on a pseudo-terminal as a
  user's): wall time, tasks/s, the time to the first progress line (planning and storing the
  operation), and the longest wait between two updates of the line (target: at most 1 s);
* ``shoal cluster show`` and ``shoal task list`` of the cluster (their defaults: the first 1,000
  rows), best of --repeat, and the API's first page of 100;
* the server's peak RSS (VmHWM of its process, over its whole life: plan, create, show, delete).
"""

import argparse
import http.client
import json
import os
import pathlib
import pty
import re
import subprocess
import sys
import tempfile
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from shoal_testkit import catalog as testkit  # noqa: E402

from cluster_server import catalog, operations, planner  # noqa: E402
from cluster_server.solver import solve_layout  # noqa: E402

SHOAL = str(pathlib.Path(sys.executable).with_name("shoal"))
TEMPLATE = "fake-stack"
SMALLEST = 2  # the template's least size


def best(fn, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def in_process(size, repeat):
    """The solver alone and the planner alone, on the testkit catalog."""
    entities = testkit.entities()
    everything = {}
    for folder, bodies in entities.items():
        kind = {v: k for k, v in catalog.DIRS.items()}[folder]
        everything[kind] = {body["name"]: body for body in bodies}
    template = catalog.resolve_template(TEMPLATE, everything)
    view = operations.CatalogView(everything)
    solve, layout = best(lambda: solve_layout(template, view, size, provider="fake"), repeat)
    solve_1, _ = best(lambda: solve_layout(template, view, SMALLEST, provider="fake"), repeat)
    nodes = [dict(node, id=f"n{i}") for i, node in enumerate(layout.nodes, start=1)]
    plan, tasks = best(lambda: planner.plan_change([], nodes, view.services), repeat)
    return solve, solve_1, plan, sum(1 for t in tasks if t.action != "JOIN")


class Server:
    def __init__(self, home):
        self.home = pathlib.Path(home)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
        self.env.update(SHOAL_HOME=str(self.home), SHOAL_DEFAULT_CATALOG="0")

    def run(self, *args, check=True):
        """Run the CLI; its stdout."""
        proc = subprocess.Popen([SHOAL, *map(str, args)], env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        errors = []

        def read_errors():
            for line in proc.stderr:
                errors.append(line.decode())

        reader = threading.Thread(target=read_errors)
        reader.start()
        out = proc.stdout.read()
        proc.wait()
        reader.join()
        if check and proc.returncode:
            raise SystemExit(f"shoal {' '.join(map(str, args))} failed:\n{''.join(errors)}")
        return out

    def timed(self, *args):
        start = time.perf_counter()
        out = self.run(*args)
        return time.perf_counter() - start, out

    def api(self, method, path, body=None):
        state = json.loads((self.home / "server.json").read_text())
        host, port = state["url"].split("//")[1].split(":")
        token = (self.home / "token").read_text().strip()
        conn = http.client.HTTPConnection(host, int(port))
        start = time.perf_counter()
        conn.request(method, "/api/v1" + path, body=json.dumps(body) if body else None,
                     headers={"Authorization": "Bearer " + token,
                              "Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        elapsed = time.perf_counter() - start
        conn.close()
        if response.status >= 400:
            raise SystemExit(f"{method} {path}: {response.status} {data[:300]!r}")
        return elapsed, data

    def peak_rss(self):
        pid = json.loads((self.home / "server.json").read_text())["pid"]
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return 0


def operation(server, *args):
    """Run an operation with --wait, its stderr on a terminal (as a user sees it: the line is
    rewritten at each poll, and every 0.5 s with the time elapsed): wall time, time to the first
    progress line (the request that plans and stores the operation), the number of rewrites, the
    longest wait between two rewrites, and the longest wait between two changes of what the
    line says besides the time (the server's answers)."""
    main, child = pty.openpty()
    start = time.perf_counter()
    proc = subprocess.Popen([SHOAL, *map(str, args), "--wait"], env=server.env,
                            stdout=subprocess.DEVNULL, stderr=child)
    os.close(child)
    stream, stamps = b"", []  # every byte written, and when each rewrite (a CR) came
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the terminal closed: the command ended
            break
        if not chunk:
            break
        stamps += [time.perf_counter()] * chunk.count(b"\r")
        stream += chunk
    os.close(main)
    proc.wait()
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"shoal {' '.join(map(str, args))} failed: "
                         f"{stream[-4000:].decode(errors='replace')}")
    texts = [re.sub(rb"\s*\[\d+ s\]\s*$", b"", text) for text in stream.split(b"\r")[1:]]
    writes = list(zip(stamps, texts))
    stamps = [at for at, _ in writes]
    # The operation's own figures: what comes after the "planning" line the CLI shows while
    # the request plans and stores the operation.
    figures = [(at, text) for at, text in writes if b"tasks done" in text]
    changes = [at for i, (at, text) in enumerate(figures) if i == 0 or text != figures[i - 1][1]]
    longest = lambda times: max((b - a for a, b in zip(times, times[1:])), default=0.0)  # noqa
    return {"wall": wall, "line": stamps[0] - start if stamps else wall,
            "first": figures[0][0] - start if figures else wall,
            "updates": len(stamps), "gap": longest(stamps), "data_gap": longest(changes)}


def measure(size, repeat, create):
    solve, solve_1, plan_alone, task_count = in_process(size, repeat)
    row = {"size": size, "solve": solve, "solve_1": solve_1, "planner": plan_alone,
           "tasks": task_count}
    with tempfile.TemporaryDirectory(prefix="shoal-scale-") as tmp:
        server = Server(pathlib.Path(tmp) / "home")
        server.run("server", "start")
        try:
            server.run("catalog", "import", testkit.write(pathlib.Path(tmp) / "catalog"))
            request = {"template": TEMPLATE, "size": size}
            row["api_plan"], body = best(lambda: server.api("POST", "/clusters/plan", request)[0],
                                         repeat)
            _, body = server.api("POST", "/clusters/plan", request)
            row["api_plan_bytes"] = len(body)
            row["api_full"], _ = best(
                lambda: server.api("POST", "/clusters/plan?full=1", request)[0], repeat)
            row["api_full_bytes"] = len(server.api("POST", "/clusters/plan?full=1", request)[1])
            plan = ("cluster", "plan", "--template", TEMPLATE, "--size", size)
            row["cli_plan"], _ = best(lambda: server.timed(*plan)[0], repeat)
            # The same command for the smallest size: what any plan costs the CLI whatever its size
            # (Python, cliff and the table's modules starting, one request).
            row["cli_plan_1"], _ = best(lambda: server.timed(*plan[:-1], SMALLEST)[0], repeat)

            row["cli_full"], _ = best(lambda: server.timed(*plan, "-f", "json", "--full")[0],
                                      repeat)
            if create:
                made = operation(server, "cluster", "create", "big", "--template", TEMPLATE,
                                 "--size", size)
                total = json.loads(server.api("GET", "/clusters/big/tasks?limit=1")[1])
                op = json.loads(server.api("GET", f"/operations/{total[0]['operation']}")[1])
                row.update({f"create_{k}": v for k, v in made.items()}, create_tasks=op["total"])
                row["cli_show"], _ = best(lambda: server.timed("cluster", "show", "big")[0],
                                          repeat)
                row["cli_tasks"], _ = best(lambda: server.timed("task", "list", "big")[0],
                                           repeat)
                row["api_show"], _ = best(
                    lambda: server.api("GET", "/clusters/big?limit=100")[0], repeat)
                row["api_tasks"], _ = best(
                    lambda: server.api("GET", "/clusters/big/tasks?limit=100")[0], repeat)
                row["api_show_all"], _ = best(lambda: server.api("GET", "/clusters/big")[0], 1)
                row["api_tasks_all"], _ = best(
                    lambda: server.api("GET", "/clusters/big/tasks")[0], 1)
                gone = operation(server, "cluster", "delete", "big")
                row.update({f"delete_{k}": v for k, v in gone.items()})
                row["delete_tasks"] = delete_task_count(server)
            row["rss"] = server.peak_rss()
        finally:
            server.run("server", "stop", check=False)
    return row


def delete_task_count(server):
    """Tasks of the cluster's delete (the latest operation of the deleted cluster)."""
    import sqlite3

    db = sqlite3.connect(server.home / "shoal.db")
    try:
        return db.execute("SELECT COUNT(*) FROM tasks WHERE action != 'JOIN' AND operation_id ="
                          " (SELECT id FROM operations WHERE kind = 'delete' ORDER BY created_at"
                          " DESC LIMIT 1)").fetchone()[0]
    finally:
        db.close()


def report(row):
    n = f"{row['size']:,} nodes"
    ms = lambda s: f"{s * 1000:.0f} ms"  # noqa: E731
    print(f"\n== {n} ({row['tasks']:,} tasks) ==")
    print(f"solve_layout alone            {ms(row['solve'])}")
    print(f"planner alone                 {ms(row['planner'])}")
    print(f"plan, API summary             {ms(row['api_plan'])} ({row['api_plan_bytes']:,} B)")
    print(f"plan, API ?full=1             {ms(row['api_full'])} ({row['api_full_bytes']:,} B)")
    # The target is for 10,000 nodes: at 1,000 the solver takes a millisecond, less than the
    # interpreter needs to start, and the ratio is the CLI's start alone (the next line).
    target = " (target 20x)" if row["size"] >= 10_000 else ""
    print(f"plan, CLI (default)           {ms(row['cli_plan'])}  = "
          f"{row['cli_plan'] / row['solve']:.0f}x the solver alone{target}")
    grown, solver_grown = row["cli_plan"] - row["cli_plan_1"], row["solve"] - row["solve_1"]
    print(f"plan, CLI, beyond {SMALLEST} nodes     {ms(grown)} "
          f"({SMALLEST} nodes: {ms(row['cli_plan_1'])}) = "
          f"{grown / solver_grown:.1f}x the solver's own growth ({ms(solver_grown)})")
    print(f"plan, CLI -f json --full      {ms(row['cli_full'])}")
    if "create_wall" in row:
        for kind in ("create", "delete"):
            tasks, wall = row[f"{kind}_tasks"], row[f"{kind}_wall"]
            print(f"{kind:<6} --wait                {wall:.1f} s, {tasks:,} tasks, "
                  f"{tasks / wall:,.0f} tasks/s; a line after {row[f'{kind}_line']:.2f} s, "
                  f"the first figures after {row[f'{kind}_first']:.1f} s; "
                  f"{row[f'{kind}_updates']} rewrites, "
                  f"longest wait {row[f'{kind}_gap']:.2f} s (between new figures "
                  f"{row[f'{kind}_data_gap']:.2f} s)")
        print(f"cluster show, CLI (default)   {ms(row['cli_show'])}")
        print(f"task list, CLI (default)      {ms(row['cli_tasks'])}")
        print(f"API first page of 100         show {ms(row['api_show'])}, "
              f"tasks {ms(row['api_tasks'])}")
        print(f"API without a limit           show {ms(row['api_show_all'])}, "
              f"tasks {ms(row['api_tasks_all'])}")
    print(f"server peak RSS               {row['rss'] / 2 ** 20:.0f} MiB")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-create", action="store_true", help="plans only")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores")
    for size in [int(s) for s in args.sizes.split(",")]:
        report(measure(size, args.repeat, not args.no_create))
    print(f"\nload average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
