"""EC2 on loopback for tests: moto's server mode, and a proxy in front of it that counts calls
and injects faults.

``moto_server()`` runs ``ThreadedMotoServer`` on 127.0.0.1 and a free port: real HTTP, spoken to
by real boto3 clients. ``EC2Proxy`` forwards every request to it unchanged (EC2 and RDS: moto
serves every service at one address), except where a test asks otherwise: fail the Nth call of
an action, hold its response back (a slow cloud, or a window to kill the Shoal server in), keep
new instances "pending" for some polls, or, for RDS (whose moto databases are available at
once and gone as soon as deleted), show a database "creating" for some polls, "failed", or
still "deleting" for some polls after its delete.
"""

import collections
import contextlib
import http.client
import logging
import re
import threading
import time
import urllib.parse

import boto3

from tests.httpfake import LoopbackHTTP

REGION = "us-east-1"
CREDENTIALS = {"aws_access_key_id": "AKIDSHOALTEST", "aws_secret_access_key": "shoal-test-secret"}

_INSTANCE_STATE = re.compile(
    r"<instanceId>(i-[0-9a-f]+)</instanceId>((?:(?!<instanceId>).)*?)"
    r"<instanceState><code>16</code><name>running</name></instanceState>", re.S)


@contextlib.contextmanager
def moto_server():
    """The URL of a moto server on 127.0.0.1 (its state lives in this process)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def ec2_client(url, region=REGION):
    return boto3.client("ec2", region_name=region, endpoint_url=url, **CREDENTIALS)


def leftovers(url, cluster_id=None, region=REGION):
    """What exists for ``cluster_id`` (or for any Shoal cluster): live instances, security
    groups and key pairs, by listing them in the emulator."""
    ec2 = ec2_client(url, region)
    tag = [{"Name": "tag:shoal:cluster", "Values": [cluster_id]}] if cluster_id else [
        {"Name": "tag-key", "Values": ["shoal:cluster"]}]
    live = ["pending", "running", "shutting-down", "stopping", "stopped"]
    instances = [i["InstanceId"] for r in ec2.describe_instances(
        Filters=tag + [{"Name": "instance-state-name", "Values": live}])["Reservations"]
        for i in r["Instances"]]
    groups = [g["GroupId"] for g in ec2.describe_security_groups(Filters=tag)["SecurityGroups"]]
    keys = [k["KeyName"] for k in ec2.describe_key_pairs(Filters=tag)["KeyPairs"]]
    return {"instances": instances, "security_groups": groups, "key_pairs": keys}


def rds_client(url, region=REGION):
    return boto3.client("rds", region_name=region, endpoint_url=url, **CREDENTIALS)


def databases(url, cluster_id=None, region=REGION):
    """Identifiers of the RDS DB instances Shoal made (for ``cluster_id``, or any)."""
    prefix = f"shoal-{cluster_id}-" if cluster_id else "shoal-"
    return sorted(d["DBInstanceIdentifier"] for d in rds_client(url, region).describe_db_instances()[
        "DBInstances"] if d["DBInstanceIdentifier"].startswith(prefix))


_DB_BLOCK = re.compile(r"<DBInstance>.*?</DBInstance>", re.S)
_DB_ID = re.compile(r"<DBInstanceIdentifier>([^<]+)</DBInstanceIdentifier>")
_DB_STATUS = re.compile(r"<DBInstanceStatus>[^<]*</DBInstanceStatus>")


def error_xml(code, message):
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{code}'
            f"</Code><Message>{message}</Message></Error></Errors>"
            "<RequestID>shoal-fault</RequestID></Response>").encode()


class EC2Proxy(LoopbackHTTP):
    """A loopback HTTP server forwarding to ``upstream`` (moto), with counters and faults."""

    def __init__(self, upstream):
        self.upstream = urllib.parse.urlsplit(upstream)
        self.calls = collections.Counter()  # action -> calls seen
        self.lock = threading.Lock()
        self.failures = {}  # action -> {call number: (code, message)}
        self.delays = {}  # action -> seconds to hold the response after forwarding
        self.pending_polls = 0  # new instances look "pending" in this many DescribeInstances
        self.slow = {}  # instance id -> its own pending_polls
        self.seen = collections.Counter()  # instance id -> DescribeInstances it appeared in
        self.hooks = collections.defaultdict(list)  # action -> fn(params, response body)
        self.log = []  # (action, params) of every call, in order
        self.keys = collections.Counter()  # access key id -> calls signed with it (who called)
        self.db_pending_polls = 0  # new databases look "creating" in this many describes
        self.db_failing = set()  # identifiers ("*": all) that show "failed", not "available"
        self.db_delete_polls = 0  # a deleted database still shows "deleting" this many times
        self.db_seen = collections.Counter()  # identifier -> DescribeDBInstances it was in
        self.db_blocks = {}  # identifier -> its last <DBInstance> block
        self.db_lingering = {}  # identifier -> [deleting block, describes left]
        super().__init__("ec2-proxy")

    # -- what tests set --------------------------------------------------------------------------

    def fail(self, action, nth, code="InstanceLimitExceeded",
             message="Your quota allows for 0 more running instance(s)."):
        """The ``nth`` call of ``action`` (counting from now) fails with an EC2 error."""
        with self.lock:
            self.failures.setdefault(action, {})[self.calls[action] + nth] = (code, message)

    def on(self, action, fn):
        self.hooks[action].append(fn)

    # -- the proxy -------------------------------------------------------------------------------

    def respond(self, method, path, headers, body):
        params = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode()).items()}
        action = params.get("Action", "")
        signed = re.search(r"Credential=([^/]+)/", headers.get("Authorization", ""))
        with self.lock:
            self.calls[action] += 1
            number = self.calls[action]
            self.log.append((action, params))
            self.keys[signed.group(1) if signed else ""] += 1
            fault = self.failures.get(action, {}).pop(number, None)
        if fault:
            return 400, [("Content-Type", "text/xml")], error_xml(*fault)
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=120)
        try:
            headers = {k: v for k, v in headers.items() if k.lower() not in ("host", "connection")}
            conn.request("POST", path, body, headers)
            response = conn.getresponse()
            status, reply = response.status, response.read()
            # These describe moto's connection, not the answer: our server writes its own.
            reply_headers = [(name, value) for name, value in response.getheaders()
                             if name.lower() not in ("content-length", "connection",
                                                     "transfer-encoding", "server", "date")]
        finally:
            conn.close()
        if action == "DescribeInstances" and status == 200:
            reply = self._hold_pending(reply)
        if action == "DescribeDBInstances" and status == 200:
            reply = self._db_states(params, reply)
        if action == "DeleteDBInstance" and status == 200 and self.db_delete_polls:
            identifier = params.get("DBInstanceIdentifier")
            with self.lock:
                block = self.db_blocks.get(identifier)
                if block:
                    self.db_lingering[identifier] = [
                        _DB_STATUS.sub("<DBInstanceStatus>deleting</DBInstanceStatus>", block),
                        self.db_delete_polls]
        for hook in self.hooks.get(action, []):
            hook(params, reply)
        time.sleep(self.delays.get(action, 0))
        return status, reply_headers, reply

    def _db_states(self, params, reply):
        wanted = {v for k, v in params.items() if re.fullmatch(
            r"Filters\.Filter\.\d+\.Values\.Value\.\d+", k)}

        def rewrite(match):
            block = match.group(0)
            identifier = _DB_ID.search(block).group(1)
            with self.lock:
                self.db_blocks[identifier] = block
                self.db_seen[identifier] += 1
                if identifier in self.db_failing or "*" in self.db_failing:
                    status = "failed"
                elif self.db_seen[identifier] <= self.db_pending_polls:
                    status = "creating"
                else:
                    return block
            return _DB_STATUS.sub(f"<DBInstanceStatus>{status}</DBInstanceStatus>", block)

        text = _DB_BLOCK.sub(rewrite, reply.decode())
        extra = []
        with self.lock:
            for identifier, lingering in list(self.db_lingering.items()):
                if wanted and identifier not in wanted:
                    continue
                extra.append(lingering[0])
                lingering[1] -= 1
                if lingering[1] <= 0:
                    del self.db_lingering[identifier]
        if extra:
            if "<DBInstances/>" in text:
                text = text.replace("<DBInstances/>", "<DBInstances></DBInstances>")
            text = text.replace("</DBInstances>", "".join(extra) + "</DBInstances>")
        return text.encode()

    def _hold_pending(self, reply):
        def rewrite(match):
            instance_id = match.group(1)
            with self.lock:
                self.seen[instance_id] += 1
                held = self.seen[instance_id] <= self.slow.get(instance_id, self.pending_polls)
            if not held:
                return match.group(0)
            return (f"<instanceId>{instance_id}</instanceId>{match.group(2)}"
                    "<instanceState><code>0</code><name>pending</name></instanceState>")

        return _INSTANCE_STATE.sub(rewrite, reply.decode()).encode()


def authorize_key_pairs(moto_url, authorized_keys):
    """A RunInstances hook: put the launched key pair's public key in ``authorized_keys`` of a
    local test sshd, as EC2 does on the instance at boot."""

    def hook(params, reply):
        name = params.get("KeyName")
        if not name or b"<instancesSet>" not in reply:
            return
        pairs = ec2_client(moto_url).describe_key_pairs(KeyNames=[name],
                                                        IncludePublicKey=True)["KeyPairs"]
        line = pairs[0]["PublicKey"].strip() + "\n"
        with open(authorized_keys, "a+") as f:
            f.seek(0)
            if line not in f.read():
                f.write(line)

    return hook
