"""The ``ssh`` provider: a pool of existing machines reached over SSH.

``create`` lends a free host of the pool to a node, ``delete`` gives it back. Which host is lent
to which node is kept in ``SHOAL_HOME/ssh-pool.json`` under a lock, so threads (and processes)
never lend one host twice. At CONFIRM, ``describe`` reads the host's key and pins it (trust on
first confirm); every later connection must present that key.
"""

import concurrent.futures
import json
import logging
import os
import posixpath
import threading
import time

from cluster_server.errors import ProviderError, TransportError, ValidationError
from cluster_server.plugins import (HOST_NAME, LOGIN_HELP, LOGIN_NAME, Field, NodeInfo,
                                    NodeState, Provider)
from extensions.providers.local import file_lock, write_json
from extensions.transports import SSHTransport, host_key_line, parse_host_key

POOL_FILE = "ssh-pool.json"
log = logging.getLogger(__name__)


def _host_id(address, port):
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


class SSHProvider(Provider):
    """Lends machines from ``hosts``; nothing is made or destroyed, only lent and returned."""

    fields = {
        "hosts": Field(required=True, help="the pool: a list (or JSON string of a list) of "
                                           "{address, port, user, key_file, workdir}"),
        "ssh_user": Field(default="root", help="user when a host names none",
                          pattern=LOGIN_NAME, pattern_help=LOGIN_HELP),
        "ssh_key_file": Field(help="private key file when a host names none"),
        "ssh_port": Field(default=22, help="port when a host names none"),
        "workdir": Field(default=".shoal", help="directory on the host for Shoal's files "
                                                "(relative to the user's home)"),
        "connect_timeout": Field(default=10, help="seconds to wait for a host to answer"),
    }

    def __init__(self, name, fields, home):
        super().__init__(name, fields or {}, home)
        self.pool_file = os.path.join(os.fspath(home), POOL_FILE)
        self.timeout = float(self.config.get("connect_timeout") or 10)
        self.hosts = self._parse_hosts(self.config.get("hosts"))
        self._transports = {}
        self._transports_lock = threading.Lock()

    def _invalid(self, message):
        return ValidationError(f"provider '{self.name}': {message}",
                               {"entity": "provider", "name": self.name, "field": "hosts"})

    def _parse_hosts(self, hosts):
        if isinstance(hosts, str):
            try:
                hosts = json.loads(hosts)
            except ValueError as exc:
                raise self._invalid(f"hosts is not valid JSON: {exc}") from exc
        if not isinstance(hosts, list) or not hosts:
            raise self._invalid("hosts must be a non-empty list of {address, port, user, key_file}")
        parsed = {}
        for entry in hosts:
            if isinstance(entry, str):
                entry = {"address": entry}
            if not isinstance(entry, dict) or not entry.get("address"):
                raise self._invalid(f"each host needs an address, got {entry!r}")
            try:
                port = int(entry.get("port") or self.config.get("ssh_port") or 22)
            except (TypeError, ValueError) as exc:
                raise self._invalid(f"bad port in {entry!r}") from exc
            host = {
                "address": entry["address"], "port": port,
                "user": entry.get("user") or self.config.get("ssh_user") or "root",
                "key_file": entry.get("key_file") or self.config.get("ssh_key_file"),
                "workdir": entry.get("workdir") or self.config.get("workdir") or ".shoal",
            }
            if not LOGIN_NAME.fullmatch(str(host["user"])):
                raise self._invalid(f"host {entry['address']}: user must be {LOGIN_HELP}")
            if not isinstance(host["address"], str) or not HOST_NAME.fullmatch(host["address"]):
                raise self._invalid(f"host {entry['address']!r}: address must be a host name or "
                                    "an IP address")
            if not host["key_file"]:
                raise self._invalid(f"host {entry['address']} has no key_file and no ssh_key_file "
                                    "default is set")
            host_id = _host_id(host["address"], port)
            if host_id in parsed:
                raise self._invalid(f"host {host_id} is listed twice")
            parsed[host_id] = host
        return parsed

    # -- the pool -----------------------------------------------------------------------------

    def _lock(self):
        return file_lock(self.pool_file + ".lock")

    def _load(self):
        try:
            with open(self.pool_file) as f:
                return json.load(f)
        except FileNotFoundError:
            return {"version": 1, "leases": {}}

    def _save(self, pool):
        os.makedirs(os.path.dirname(self.pool_file), exist_ok=True)
        write_json(self.pool_file, pool)

    def _info(self, host_id, lease):
        host = self.hosts.get(host_id) or lease["host"]
        ssh = {"host": host["address"], "port": host["port"], "user": host["user"],
               "key_file": host["key_file"]}
        if lease.get("host_key"):
            ssh["host_key"] = lease["host_key"]
        return NodeInfo(
            resource_id=host_id, state=NodeState.PENDING, hostname=lease["hostname"],
            addresses={"bind_v4": host["address"], "access_v4": host["address"]},
            ssh=ssh,
            extra={"token": lease["token"], "workdir": host["workdir"]},
        )

    def create(self, spec):
        with self._lock():
            pool = self._load()
            leases = pool["leases"]
            for host_id, lease in leases.items():
                if lease["token"] == spec.token:
                    return self._info(host_id, lease)
            free = [host_id for host_id in self.hosts if host_id not in leases]
            if not free:
                holders = sorted({lease["cluster_id"] for lease in leases.values()
                                  if lease["host_id"] in self.hosts})
                raise ProviderError(
                    f"provider '{self.name}': no free host in the pool (all {len(self.hosts)} "
                    f"lent, to clusters {', '.join(holders)})",
                    {"provider": self.name, "hosts": len(self.hosts), "clusters": holders},
                )
            host_id = free[0]
            lease = {"host_id": host_id, "host": self.hosts[host_id], "token": spec.token,
                     "provider": self.name, "cluster_id": spec.cluster_id,
                     "node_id": spec.node_id, "hostname": spec.hostname, "tenant": spec.tenant,
                     "lent_at": time.time()}
            leases[host_id] = lease
            self._save(pool)
        return self._info(host_id, lease)

    def describe(self, infos):
        """Reach each node's host in parallel; pin its host key the first time (CONFIRM)."""
        infos = [info if isinstance(info, NodeInfo) else NodeInfo(resource_id=info)
                 for info in infos]
        if not infos:
            return {}
        workers = min(16, len(infos))
        with concurrent.futures.ThreadPoolExecutor(workers, "ssh-describe") as pool:
            return dict(zip([info.resource_id for info in infos],
                            pool.map(self._describe_one, infos)))

    def _describe_one(self, info):
        lease = self._load()["leases"].get(info.resource_id)
        token = info.extra.get("token")
        if lease is None or (token and lease["token"] != token):
            return NodeInfo(resource_id=info.resource_id, state=NodeState.GONE)
        current = self._info(info.resource_id, lease)
        host = self.hosts.get(info.resource_id) or lease["host"]
        pinned = info.ssh.get("host_key") or lease.get("host_key")
        try:
            # Not pinned yet: the connection that reads the key is kept for the node's tasks
            # (one handshake per node, not one to read the key and another to work).
            transport = self._transport_for(info.resource_id, host, pinned)
            result = transport.run(["uname", "-n"])
        except TransportError as exc:
            current.state, current.error = NodeState.FAILED, exc.message
            return current
        if not pinned:
            pinned = host_key_line(transport.host_key)
        if not lease.get("host_key"):
            self._pin(info.resource_id, lease["token"], pinned)
        current.ssh["host_key"] = pinned
        current.extra["remote_hostname"] = result.stdout.strip()
        current.state = NodeState.RUNNING
        return current

    def _pin(self, host_id, token, host_key):
        with self._lock():
            pool = self._load()
            lease = pool["leases"].get(host_id)
            if lease and lease["token"] == token and not lease.get("host_key"):
                lease["host_key"] = host_key_line(parse_host_key(host_key))
                self._save(pool)

    def delete(self, info):
        """Give the host back to the pool.

        The REMOVE actions have cleaned the services already; what Shoal itself copied there
        (scripts, configs under ``workdir``) is removed here if the host can be reached, but an
        unreachable host is given back all the same: it was only lent.
        """
        host_id = info if isinstance(info, str) else info.resource_id
        token = None if isinstance(info, str) else info.extra.get("token")
        lease = self._load()["leases"].get(host_id)
        if lease and not isinstance(info, str) and info.ssh.get("host_key") and (
                token is None or lease["token"] == token):
            self._remove_workdir(info)
        with self._lock():
            pool = self._load()
            lease = pool["leases"].get(host_id)
            if lease and (token is None or lease["token"] == token):
                del pool["leases"][host_id]
                self._save(pool)
        with self._transports_lock:
            transport = self._transports.pop(host_id, None)
        if transport:
            transport.close()

    def _remove_workdir(self, info):
        try:
            transport = self.transport(info)
            workdir = transport.workdir
            transport.run(["rm", "-rf", "--", posixpath.join(workdir, "scripts"),
                           posixpath.join(workdir, "config")])
            transport.run(["rmdir", "--", workdir])  # only if nothing else is in it
        except TransportError as exc:
            log.warning("giving back %s without cleaning %s: %s", info.resource_id,
                        info.extra.get("workdir"), exc.message)

    def find(self, cluster_id):
        leases = self._load()["leases"]
        return [self._info(host_id, lease) for host_id, lease in sorted(leases.items())
                if lease["cluster_id"] == cluster_id and lease.get("provider") == self.name]

    def inventory(self, cluster_ids):
        """The hosts lent to each cluster: one read of the pool file. A lent host counts as
        running (it is not reached here: its checks say whether it answers)."""
        wanted = set(cluster_ids)
        result = {cluster_id: [] for cluster_id in cluster_ids}
        for host_id, lease in sorted(self._load()["leases"].items()):
            if lease["cluster_id"] in wanted and lease.get("provider") == self.name:
                info = self._info(host_id, lease)
                info.state = NodeState.RUNNING
                info.extra["node"] = lease["node_id"]
                result[lease["cluster_id"]].append(info)
        return result

    def _transport_for(self, host_id, host, host_key):
        """One transport (one connection) per node, shared by every task on it.

        ``host_key`` None: first contact (CONFIRM), a new transport that pins what it sees."""
        with self._transports_lock:
            transport = self._transports.get(host_id)
            if transport and (host_key is None or transport.host_key is None or host_key_line(
                    transport.host_key) != host_key_line(parse_host_key(host_key))):
                transport.close()  # pinned again after the host was lent anew
                transport = None
            if transport is None:
                transport = SSHTransport(host["address"], host["port"], host["user"],
                                         host["key_file"], host_key, workdir=host["workdir"],
                                         connect_timeout=self.timeout,
                                         trust_first_key=host_key is None)
                self._transports[host_id] = transport
            return transport

    def transport(self, info):
        host_key = info.ssh.get("host_key")
        if not host_key:
            raise TransportError(f"node {info.resource_id} has no pinned host key; "
                                 "it must be confirmed first")
        lease = self._load()["leases"].get(info.resource_id) or {}
        host = self.hosts.get(info.resource_id) or lease.get("host")
        if host is None:
            raise TransportError(f"host {info.resource_id} is not in provider '{self.name}'")
        return self._transport_for(info.resource_id, host, host_key)
