"""Managed databases: many pending at once, waited on through cluster_server/poller.py.

RDS (moto's server mode behind the test proxy, which shows each database "creating" for its
first polls) and Cloud SQL (tests/fake_cloudsql.py: PENDING_CREATE for its first reads), each
with N databases made through the plugin's own create (as CREATE tasks would, 16 at a time),
then waited on together. Prints, per polling round, the databases asked about and the API calls
that took. Target: calls per round = ceil(databases / page size) (RDS: 100 a page; Cloud SQL:
500), not one per database. Baseline printed beside it: one call per database per round.

    .venv/bin/python bench/databases.py [--databases 100]
"""

import argparse
import concurrent.futures
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PENDING = 4  # each database is still being made in its first 4 looks


def spec(cluster, fields, i):
    from cluster_server.plugins import DatabaseSpec

    return DatabaseSpec(cluster_id=cluster, name=f"db{i}", fields=fields, user="",
                        password="Bench0123456789", token=f"{cluster}-db{i}")


def measure(label, plugin, calls, make, count, threads):
    from cluster_server.poller import ProviderPoller

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        infos = list(pool.map(make, range(count)))
    made = time.perf_counter() - start
    rounds = []
    describe = plugin.describe

    def counted(batch):
        before = calls()
        result = describe(batch)
        rounds.append((len(batch), calls() - before,
                       sum(1 for i in result.values() if i.state.value == "running")))
        return result

    plugin.describe = counted
    poller = ProviderPoller(plugin, base=0.05, ceiling=0.2)
    start = time.perf_counter()
    results = [f.result() for f in [poller.watch(info) for info in infos]]
    waited = time.perf_counter() - start
    assert all(r.state.value == "running" for r in results)
    total = sum(r[1] for r in rounds)
    print(f"{label}: {count} databases made in {made:.1f} s; all available after "
          f"{waited:.1f} s, {len(rounds)} rounds, {total} describe calls "
          f"(one per database per round would be {sum(r[0] for r in rounds)})")
    for number, (asked, made_calls, up) in enumerate(rounds, 1):
        print(f"  round {number}: {asked} asked, {made_calls} call(s), {up} available")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--databases", type=int, default=100)
    # moto's RDS is not thread-safe past a few hundred databases (a 500 from "OrderedDict
    # mutated during iteration" at 250 made 16 at a time): fewer creating at once then.
    parser.add_argument("--create-threads", type=int, default=16)
    args = parser.parse_args()
    from extensions.databases.aws_rds import RDSDatabase
    from extensions.databases.gcp_cloudsql import CloudSQLDatabase
    from tests.aws_fakes import CREDENTIALS, EC2Proxy, ec2_client, moto_server
    from tests.fake_cloudsql import FakeCloudSQL
    from tests.fake_gce import FakeGCE, service_account_file

    home = tempfile.mkdtemp(prefix="shoal-bench-db-")
    with moto_server() as moto, EC2Proxy(moto) as proxy:
        ec2_client(moto).describe_images(Owners=["amazon"])
        proxy.db_pending_polls = PENDING
        plugin = RDSDatabase("aws-rds", {"name": "ec2", "providertype": "aws", "provisioner": {
            "aws_region": "us-east-1", "endpoint_url": proxy.url, "ssh_cidr": "127.0.0.1/32",
            "api_user": CREDENTIALS["aws_access_key_id"],
            "api_password": CREDENTIALS["aws_secret_access_key"]}}, home)
        fields = {"engine": "postgres", "class": "db.t3.micro", "storage_gb": 20,
                  "user": "shoal", "database": "app"}
        measure("RDS (moto)", plugin, lambda: plugin.calls["describe_db_instances"],
                lambda i: plugin.create(spec("c-bench", fields, i)), args.databases,
                args.create_threads)
    with FakeGCE() as gce, FakeCloudSQL(project=gce.project, polls=PENDING) as sql:
        key = service_account_file(home, gce)
        plugin = CloudSQLDatabase("gcp-cloudsql", {"name": "gce", "providertype": "gcp",
                                                   "provisioner": {
            "credentials_file": key, "google_project": gce.project,
            "sqladmin_endpoint": sql.url}}, home)
        fields = {"engine": "postgres", "class": "db-f1-micro", "storage_gb": 10}
        measure("Cloud SQL (fake)", plugin, lambda: sql.calls["instances.list"],
                lambda i: plugin.create(spec("c-bench", fields, i)), args.databases,
                args.create_threads)


if __name__ == "__main__":
    main()
