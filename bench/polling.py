"""Polling: 1,000 cloud instances pending at once, waited on through cluster_server/poller.py.

For Compute Engine (tests/fake_gce.py: PROVISIONING, STAGING, then RUNNING; 1,000 instances) and
for EC2 (moto's server mode behind the test proxy, which keeps each instance "pending" for its
first polls; 1,000 instances), it makes the instances (through the provider's create for
Compute Engine; in bulk for EC2, see make_ec2_bulk), then waits on all of them at once and prints, per polling round, how many nodes were asked about and how many API
calls that took, and the threads this process used. The emulators run in a child process, so
every thread counted here is Shoal's. Target: calls per round = ceil(instances / page size), not
one per instance; a handful of threads, not one per instance. Baseline printed beside it: one
call per instance per round (the latency of one single-instance call, measured in the same run,
times the instances).

    .venv/bin/python bench/polling.py [--nodes 1000] [--ec2-nodes 1000]
"""

import argparse
import concurrent.futures
import multiprocessing
import os
import pathlib
import sys
import tempfile
import threading
import time
import types

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PENDING_POLLS = 4  # each EC2 instance looks pending in its first 4 DescribeInstances


def emulators(conn):
    """Child process: moto + the proxy, and the fake Compute API, until told to stop."""
    from tests.aws_fakes import EC2Proxy, ec2_client, moto_server
    from tests.fake_gce import FakeGCE

    with moto_server() as moto, EC2Proxy(moto) as proxy, FakeGCE(polls_per_state=2) as gce:
        ec2_client(moto).describe_images(Owners=["amazon"])  # moto's one-time warm-up
        proxy.pending_polls = PENDING_POLLS
        conn.send({"ec2": proxy.url, "gce": gce.url, "project": gce.project})
        conn.recv()


class Rounds:
    """Wraps a provider's describe: nodes asked, API calls made and threads alive per round."""

    def __init__(self, provider, counted):
        self.provider, self.counted = provider, counted
        self.rounds = []
        self.threads = set()
        self.peak = 0
        self.describe = provider.describe
        provider.describe = self

    def api_calls(self):
        return sum(self.provider.calls[name] for name in self.counted)

    def __call__(self, infos):
        before, start = self.api_calls(), time.perf_counter()
        result = self.describe(infos)
        done = sum(1 for info in result.values() if info.state.value != "pending")
        self.rounds.append((len(infos), self.api_calls() - before, done,
                            time.perf_counter() - start))
        self.threads.add(threading.current_thread().name)
        self.peak = max(self.peak, threading.active_count())
        return result


def make_nodes(provider, cluster, count):
    from cluster_server.plugins import NodeSpec

    def create(i):
        return provider.create(NodeSpec(
            cluster_id=cluster, node_id=f"n{i}", hostname=f"n{i}.bench", hardwaretype="small",
            imagetype="debian", flavor={"flavor": provider.bench_flavor},
            image={"image": provider.bench_image, "sshuser": "bench"},
            token=f"{cluster}-n{i}-0"))

    start = time.perf_counter()
    # As the executor would: a pool of workers (16 by default) running CREATE tasks.
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        infos = list(pool.map(create, range(count)))
    return infos, time.perf_counter() - start


def make_ec2_bulk(provider, cluster, count):
    """EC2 instances tagged as the provider tags a cluster's nodes, one RunInstances call each
    (one reservation each, as create makes them: moto pages by reservation), then taken back through the provider's own find (one DescribeInstances, which the proxy
    counts as their first pending poll). Not through create: its lookup of an earlier attempt's
    token is a tag-filtered describe, which moto answers by scanning every instance it holds
    (1 s at 1,000), so 1,000 creates take moto tens of minutes; the waiting is what is measured
    here, and the create path has its own tests."""
    from extensions.providers.aws import TAG_NODE, TAG_TOKEN

    start = time.perf_counter()
    for i in range(count):
        provider.ec2.run_instances(
            ImageId=provider.bench_image, InstanceType=provider.bench_flavor, MinCount=1,
            MaxCount=1, TagSpecifications=provider._tags(
                "instance", cluster, **{TAG_NODE: f"n{i}", TAG_TOKEN: f"{cluster}-n{i}-0"}))
    infos = provider.find(cluster)
    assert len(infos) == count, (len(infos), count)
    return infos, time.perf_counter() - start


def wait_all(provider, infos, counted):
    from cluster_server.poller import ProviderPoller

    rounds = Rounds(provider, counted)
    poller = ProviderPoller(provider, base=0.05, ceiling=0.5)
    threads_before = threading.active_count()
    start = time.perf_counter()
    futures = [poller.watch(info) for info in infos]
    results = [future.result() for future in futures]
    elapsed = time.perf_counter() - start
    provider.describe = rounds.describe
    return rounds, results, elapsed, threads_before


def single_call_latency(call, times=20):
    start = time.perf_counter()
    for _ in range(times):
        call()
    return (time.perf_counter() - start) / times


def report(title, count, created, rounds, results, elapsed, threads_before, page, single):
    states = {}
    for info in results:
        states[info.state.value] = states.get(info.state.value, 0) + 1
    calls = [r[1] for r in rounds.rounds]
    print(f"\n{title}: {count} instances made in {created:.1f} s, then waited on at once")
    print(f"  {'round':>5}  {'nodes asked':>11}  {'API calls':>9}  {'done':>5}  {'seconds':>7}")
    for i, (asked, api, done, seconds) in enumerate(rounds.rounds, 1):
        print(f"  {i:>5}  {asked:>11}  {api:>9}  {done:>5}  {seconds:>7.2f}")
    print(f"  {len(calls)} rounds, {sum(calls)} API calls in all, {max(calls)} at most per round "
          f"(page size {page}: ceil({count}/{page}) = {-(-count // page)}); "
          f"all {states} after {elapsed:.1f} s")
    print(f"  threads in this process: {threads_before} before waiting, at most "
          f"{rounds.peak} while {count} were pending; describe ran on "
          f"{len(rounds.threads)} thread ({', '.join(sorted(rounds.threads))})")
    print(f"  baseline, one call per instance per round: {count} calls a round, "
          f"{count * len(calls)} in all; at the {single * 1000:.0f} ms a single-instance call "
          f"took here, {count * single:.0f} s per round")


def bench_ec2(urls, count, home):
    from extensions.providers.aws import AWSProvider
    from tests.aws_fakes import CREDENTIALS

    fields = {"aws_region": "us-east-1", "endpoint_url": urls["ec2"], "ssh_cidr": "127.0.0.1/32",
              "api_user": CREDENTIALS["aws_access_key_id"], "wait_for_ssh": False,
              "api_password": CREDENTIALS["aws_secret_access_key"]}
    provider = AWSProvider("bench-ec2", fields, home)
    provider.bench_flavor, provider.bench_image = "t3.micro", "ami-12345678"
    infos, created = make_ec2_bulk(provider, "c-benchec2", count)
    # A probe instance of another cluster: asking about it alone is the per-instance baseline.
    probe = make_nodes(provider, "c-probe", 1)[0][0].resource_id
    single = single_call_latency(lambda: provider.ec2.describe_instances(InstanceIds=[probe]))
    rounds, results, elapsed, before = wait_all(provider, infos, ["describe_instances"])
    report("EC2 (moto server mode)", count, created, rounds, results, elapsed, before,
           provider.page_size, single)
    small = AWSProvider("bench-ec2", {**fields, "describe_page_size": 50}, home)
    small.describe(infos)
    print(f"  with describe_page_size 50: {small.calls['describe_instances']} calls for one "
          f"round of {count}")


def bench_gce(urls, count, home):
    from extensions.providers.gcp import GCPProvider
    from tests.fake_gce import UNIVERSE, service_account_file

    os.environ["GOOGLE_CLOUD_UNIVERSE_DOMAIN"] = UNIVERSE
    fake = types.SimpleNamespace(url=urls["gce"], project=urls["project"])  # for the key file
    fields = {"google_project": urls["project"], "zone_name": "us-central1-a",
              "api_endpoint": urls["gce"], "ssh_cidr": "127.0.0.1/32", "wait_for_ssh": False,
              "credentials_file": service_account_file(home, fake)}
    provider = GCPProvider("bench-gce", fields, home)
    provider.bench_flavor, provider.bench_image = "e2-small", "debian-12"
    infos, created = make_nodes(provider, "c-benchgce", count)
    probe = make_nodes(provider, "c-probe", 1)[0][0].resource_id
    single = single_call_latency(lambda: provider._call(
        "instances", "get", project=urls["project"], zone="us-central1-a", instance=probe))
    rounds, results, elapsed, before = wait_all(provider, infos, ["instances.list"])
    report("Compute Engine (tests/fake_gce.py)", count, created, rounds, results, elapsed,
           before, provider.page_size, single)
    small = GCPProvider("bench-gce", {**fields, "list_page_size": 100}, home)
    small.describe(infos)
    print(f"  with list_page_size 100: {small.calls['instances.list']} calls for one round "
          f"of {count}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000, help="Compute Engine instances")
    parser.add_argument("--ec2-nodes", type=int, default=1000, help="EC2 instances (moto)")
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=emulators, args=(child,), daemon=True)
    process.start()
    urls = parent.recv()
    try:
        with tempfile.TemporaryDirectory() as home:
            bench_gce(urls, args.nodes, home)
            bench_ec2(urls, args.ec2_nodes, home)
    finally:
        parent.send("stop")
        process.join(30)


if __name__ == "__main__":
    main()
