"""Benchmark of the web UI: the cluster page of a 1,000-node cluster, and live updates.

Usage: python bench/ui.py [--nodes 1000] [--runs 5] [--weights]

``--weights`` prints only the JavaScript shipped (no server, no browser).

A real server in a temp SHOAL_HOME, the tests' fake provider and automator (shoal-testkit), a
cluster of ``--nodes`` nodes made with ``shoal cluster create --wait``, and Debian's Chromium
headless through Selenium (as the browser tests). Figures:

* time to first byte and whole transfer of ``/ui/clusters/NAME`` (urllib, the session cookie),
  median of ``--runs``;
* full load in Chromium (Navigation Timing: response start, DOMContentLoaded, load; first
  contentful paint when the headless browser reports it), median of ``--runs``;
* page weight: the HTML, CSS and JS, raw and gzipped;
* the client-side alternative: the same nodes table built by script from the API's JSON
  (fetch + DOM), timed in the same browser;
* live update delay: a cluster of 8 nodes whose actions take 0.2 s; for every task, the time
  from its ``finished_at`` in the store to the browser showing it SUCCEEDED (a MutationObserver
  stamps each change), median and 90th percentile;
* total JavaScript shipped, gzipped. Targets: full load under 1 s, live update under 0.5 s,
  JavaScript under 100 KB gzipped.
"""

import argparse
import gzip
import os
import pathlib
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from shoal_testkit import catalog  # noqa: E402

from tests.cloudkit import api  # noqa: E402
from tests.conftest import Shoal  # noqa: E402
from tests.uikit import Browser, login_url  # noqa: E402

STATIC = ROOT / "cluster_server" / "ui" / "static"


def timed_get(url, cookie):
    request = urllib.request.Request(url, headers={"Cookie": f"shoal_session={cookie}"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:
        response.read(1)
        first = time.perf_counter() - start
        body = response.read()
    return first, time.perf_counter() - start, len(body) + 1


def page_load(browser, url):
    browser.driver.get(url)
    browser.wait(lambda: browser.driver.execute_script("return document.readyState") ==
                 "complete" and browser.driver.execute_script(
                     "return performance.getEntriesByType('navigation')[0].loadEventEnd > 0"),
                 "the load")
    return browser.driver.execute_script("""
        const n = performance.getEntriesByType('navigation')[0];
        const fcp = performance.getEntriesByName('first-contentful-paint')[0];
        return {ttfb: n.responseStart, dcl: n.domContentLoadedEventEnd, load: n.loadEventEnd,
                fcp: fcp ? fcp.startTime : null, rows: document.querySelectorAll('#nodes tbody tr').length};
    """)


CLIENT_SIDE = """
const done = arguments[arguments.length - 1];
const t0 = performance.now();
fetch('/api/v1/clusters/' + arguments[0]).then(r => r.json()).then(c => {
  const t1 = performance.now();
  const body = document.createElement('tbody');
  for (const n of c.nodes) {
    const tr = document.createElement('tr');
    for (const v of [n.id, n.hostname, n.address, n.hardwaretype, n.imagetype,
                     n.services.join(', '), n.status]) {
      const td = document.createElement('td'); td.textContent = v; tr.append(td);
    }
    body.append(tr);
  }
  document.querySelector('#nodes').replaceChild(body, document.querySelector('#nodes tbody'));
  requestAnimationFrame(() => setTimeout(() => done({fetch: t1 - t0, total: performance.now() - t0}), 0));
});
"""

WATCH = """
window.seen = {};
new MutationObserver((changes) => {
  const now = Date.now() / 1000;
  for (const tr of document.querySelectorAll('#tasks tbody tr')) {
    const id = tr.dataset.task;
    if (!window.seen[id] && tr.children[1].textContent === 'SUCCEEDED') window.seen[id] = now;
  }
}).observe(document.querySelector('#tasks tbody'), {childList: true, subtree: true,
                                                     characterData: true});
"""


def javascript():
    """Every script the UI ships (its own and the vendored ones), raw and gzipped: the
    catalog editor's page loads js-yaml too, so the total is what the heaviest page loads."""
    files = [STATIC / "shoal.js"] + sorted((STATIC / "vendor").glob("*.js"))
    sizes = {f.relative_to(STATIC).as_posix(): (len(f.read_bytes()),
                                                len(gzip.compress(f.read_bytes())))
             for f in files}
    for name, (raw, zipped) in sizes.items():
        print(f"  {name}: {raw / 1024:.1f} KiB, {zipped / 1024:.1f} KiB gzipped")
    raw, zipped = (sum(s[i] for s in sizes.values()) for i in (0, 1))
    print(f"JavaScript shipped (all pages): {raw / 1024:.1f} KiB, {zipped / 1024:.1f} KiB "
          f"gzipped (target < 100 KB)")


def median(values):
    return statistics.median(values) if values else float("nan")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--weights", action="store_true",
                        help="only the JavaScript shipped; no server, no browser")
    args = parser.parse_args()
    if args.weights:
        javascript()
        return
    print(f"load average: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        shoal = Shoal(tmp / "home")
        shoal.run("server", "start")
        browser = None
        try:
            shoal.run("catalog", "import", catalog.write(tmp / "catalog"))
            start = time.perf_counter()
            shoal.run("cluster", "create", "big", "--template", "fake-stack", "--size",
                      args.nodes, "--wait", timeout=3600)
            print(f"made a {args.nodes}-node cluster in {time.perf_counter() - start:.1f} s")
            browser = Browser()
            browser.test = "bench"
            browser.driver.get(login_url(shoal))
            cookie = browser.cookie()["shoal_session"]
            url = shoal.url + "/ui/clusters/big"

            fetched = [timed_get(url, cookie) for _ in range(args.runs)]
            html = fetched[-1][2]
            print(f"cluster page over HTTP: TTFB median {median([f[0] for f in fetched]) * 1000:.0f}"
                  f" ms, whole {median([f[1] for f in fetched]) * 1000:.0f} ms")

            loads = [page_load(browser, url) for _ in range(args.runs)]
            assert all(load["rows"] == args.nodes for load in loads), loads[-1]["rows"]
            print("cluster page in Chromium (median of {}): TTFB {:.0f} ms, DOMContentLoaded "
                  "{:.0f} ms, load {:.0f} ms".format(args.runs, *(
                      median([l[key] for l in loads]) for key in ("ttfb", "dcl", "load"))))
            paints = [l["fcp"] for l in loads if l["fcp"]]  # headless Chromium may not report it
            if paints:
                print(f"first contentful paint: median {median(paints):.0f} ms")
            browser.shot("cluster-1000")

            raw = {"html": timed_get(url, cookie)[2]}
            zipped = {"html": len(gzip.compress(urllib.request.urlopen(urllib.request.Request(
                url, headers={"Cookie": f"shoal_session={cookie}"})).read()))}
            for name in ("shoal.css", "shoal.js"):
                data = (STATIC / name).read_bytes()
                raw[name], zipped[name] = len(data), len(gzip.compress(data))
            print("page weight: " + ", ".join(f"{k} {raw[k] / 1024:.1f} KiB ({zipped[k] / 1024:.1f}"
                                              " KiB gzipped)" for k in raw) +
                  f"; total {sum(raw.values()) / 1024:.1f} KiB")
            javascript()

            client = [browser.driver.execute_async_script(CLIENT_SIDE, "big")
                      for _ in range(args.runs)]
            print("client-side alternative (fetch the API's JSON, build the rows): fetch "
                  f"{median([c['fetch'] for c in client]):.0f} ms, with the table drawn "
                  f"{median([c['total'] for c in client]):.0f} ms, after the page itself")
            print(f"(HTML {html / 1024:.0f} KiB for {args.nodes} nodes)")

            # Live updates: a small cluster whose actions take 0.2 s, watched from its page.
            shoal.run("catalog", "import", catalog.write(tmp / "slow", fields={"sleep": 0.2}))
            shoal.run("cluster", "create", "live", "--template", "fake-stack", "--size", "8")
            browser.driver.get(shoal.url + "/ui/clusters/live")
            browser.driver.execute_script(WATCH)
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                operation = api(shoal, "/clusters/live")["operation"]
                if operation["status"] in ("SUCCEEDED", "FAILED"):
                    break
                time.sleep(0.2)
            time.sleep(1.5)
            seen = browser.driver.execute_script("return window.seen")
            # The store's own finish times (the bench reads the file; the API gives durations).
            db = sqlite3.connect(str(shoal.home / "shoal.db"))
            delays = []
            for task_id, at in seen.items():
                row = db.execute("SELECT finished_at FROM tasks WHERE id = ?", [task_id]).fetchone()
                if row and row[0]:
                    delays.append(at - row[0])
            db.close()
            delays.sort()
            if delays:
                p90 = delays[int(len(delays) * 0.9) - 1] if len(delays) >= 10 else delays[-1]
                print(f"live update, task finished -> shown in the browser: {len(delays)} tasks, "
                      f"median {median(delays) * 1000:.0f} ms, p90 {p90 * 1000:.0f} ms, "
                      f"max {delays[-1] * 1000:.0f} ms")
            else:
                print("live update: the browser saw no task finish", file=sys.stderr)
        finally:
            if browser is not None:
                browser.quit()
            for name in ("big", "live"):
                shoal.run("cluster", "delete", name, "--wait", check=False, timeout=3600)
            shoal.run("server", "stop")


if __name__ == "__main__":
    main()
