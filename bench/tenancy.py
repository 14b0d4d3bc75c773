"""What tenancy costs a request, and 50 concurrent creates against a quota.

(a) Requests per second of GET /api/v1/clusters through the Flask app in-process (no HTTP), with
the owner's token, with a user's token (a sha256 and one indexed lookup more, plus the owner
filter) - the difference is what authenticate() and the policy add per request.
(b) 50 creates at once from threads against a real store with max_clusters 10: wall time, how
many got through (must be 10) and the refusals' time. Prints its figures.
"""

import concurrent.futures
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from cluster_server import operations  # noqa: E402
from cluster_server.app import create_app  # noqa: E402
from cluster_server.errors import QuotaExceeded  # noqa: E402
from cluster_server.tenancy import directory  # noqa: E402


def rate(client, headers, seconds=2.0):
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        assert client.get("/api/v1/clusters", headers=headers).status_code == 200
        count += 1
    return count / (time.perf_counter() - start)


def main():
    with tempfile.TemporaryDirectory() as home:
        app = create_app(home=pathlib.Path(home), token="t", start_engine=False)
        store = app.store
        directory.create_user(store, "default", "alice", "user")
        token = directory.issue_token(store, "default", "alice")["token"]
        client = app.test_client()
        owner = [rate(client, {"Authorization": "Bearer t"}) for _ in range(3)]
        user = [rate(client, {"Authorization": "Bearer " + token}) for _ in range(3)]
        print(f"(a) GET /clusters in-process: owner token {statistics.median(owner):.0f} req/s,"
              f" user token {statistics.median(user):.0f} req/s (median of 3 x 2 s)")

        directory.set_quotas(store, "tenants", {"name": "default"}, {"max_clusters": 10})

        def create(number):
            try:
                operations.create(store, "default", {"name": f"b{number}",
                                                     "template": "local-web", "size": 2})
                return True
            except QuotaExceeded:
                return False

        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(50) as pool:
            results = list(pool.map(create, range(50)))
        wall = time.perf_counter() - start
        print(f"(b) 50 concurrent creates (size 2) against max_clusters 10: {sum(results)} "
              f"accepted, {results.count(False)} refused, {wall:.2f} s wall")


if __name__ == "__main__":
    main()
