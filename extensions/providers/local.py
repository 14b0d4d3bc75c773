"""The ``local`` provider: a node is a sandbox directory on this machine, reached by subprocess.

``SHOAL_HOME/nodes/<cluster_id>/<node_id>/`` holds ``home/``, ``tmp/``, ``run/`` (pid files) and
``.shoal/`` (``node.json``: token, hostname, port block; ``pgids``: process groups started there).
Deleting a node stops every process started in it (SIGTERM, then SIGKILL) and removes the
directory. No root, no containers, loopback only.
"""

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import threading
import time
import uuid

from cluster_server.errors import ProviderError, TransportError, ValidationError
from cluster_server.plugins import Field, NodeInfo, NodeState, Provider
from extensions.transports import LocalTransport

ADDRESS = "127.0.0.1"
# Each node also gets its own loopback address (all of 127.0.0.0/8 answers on Linux), so that
# services on different nodes can listen on the same port, as on separate machines.
NODE_NET = "127.77"
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")
_thread_locks = {}
_thread_locks_guard = threading.Lock()


@contextlib.contextmanager
def file_lock(path):
    """Exclusive lock between threads and processes: ``flock`` on ``path`` (created if missing).

    ``flock`` alone does not exclude threads of one process reliably on every platform, so a
    per-path thread lock is held as well.
    """
    path = os.path.abspath(path)
    with _thread_locks_guard:
        thread_lock = _thread_locks.setdefault(path, threading.Lock())
    with thread_lock:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the flock


def write_json(path, data):
    """Replace ``path`` atomically: readers see the old file or the new one, never half."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _boot_ticks():
    """Now, in the clock ticks since boot that ``/proc/<pid>/stat`` uses for start times."""
    try:
        with open("/proc/uptime") as f:
            return int(float(f.read().split()[0]) * os.sysconf("SC_CLK_TCK"))
    except OSError:  # not Linux: start times are not checked
        return 0


def _proc_stat(pid):
    """(state, pgrp, starttime) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()  # the command name may hold spaces and ')'
    return fields[0].decode(), int(fields[2]), int(fields[19])


def _proc_environ(pid):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def node_processes(root, pgids=(), pids=(), since=0):
    """Live processes that belong to the sandbox at ``root``.

    A process belongs to it if its environment carries ``SHOAL_NODE_ROOT=<root>`` (inherited by
    everything a command starts, even daemons that left its session), or if it is in a process
    group that a command of the node led, or is named in a pid file of the node, and started
    after the node was made (so a recycled pid of someone else's process is never matched).
    Zombies are dead already and are skipped.
    """
    marker = b"SHOAL_NODE_ROOT=" + os.fsencode(root)
    pgids, pids, found = set(pgids), set(pids), set()
    if not os.path.isdir("/proc/self"):  # not Linux: trust the records
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, 0)
                found.add(pid)
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        stat = _proc_stat(pid)
        if stat is None or stat[0] == "Z":
            continue
        state, pgrp, started = stat
        if marker in _proc_environ(pid) or (
            (pgrp in pgids or pid in pids) and started >= since
        ):
            found.add(pid)
    return found


def _listening_addresses():
    """IPv4 addresses something listens on (TCP), read from /proc/net/tcp (Linux)."""
    found = set()
    try:
        with open("/proc/net/tcp") as table:
            next(table)
            for line in table:
                fields = line.split()
                if fields[3] == "0A":  # LISTEN
                    raw = bytes.fromhex(fields[1].split(":")[0])
                    found.add(".".join(str(b) for b in reversed(raw)))
    except OSError:
        pass
    return found


class LocalProvider(Provider):
    """Nodes as sandbox directories; each gets a private block of loopback ports."""

    fields = {
        "ports_per_node": Field(default=10, help="size of the port block each node gets"),
        "port_base": Field(default=20000, help="lowest port handed out"),
        "port_limit": Field(default=32767, help="highest port handed out (below the "
                                                "kernel's ephemeral range)"),
    }
    #: Seconds to wait for processes after SIGTERM, then after SIGKILL.
    stop_grace = 5.0

    def __init__(self, name, fields, home):
        super().__init__(name, fields or {}, home)
        self.nodes_dir = os.path.join(os.fspath(home), "nodes")
        try:
            self.block = int(self.config.get("ports_per_node") or 10)
            self.port_base = int(self.config.get("port_base") or 20000)
            self.port_limit = int(self.config.get("port_limit") or 32767)
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"provider '{name}': port fields must be integers: {exc}",
                                  {"entity": "provider", "name": name}) from exc
        if self.block < 1 or not 1024 <= self.port_base <= self.port_limit <= 65535:
            raise ValidationError(f"provider '{name}': invalid port range",
                                  {"entity": "provider", "name": name, "field": "port_base"})

    # -- paths and records --------------------------------------------------------------------

    def _cluster_dir(self, cluster_id):
        if not _SAFE_ID.match(str(cluster_id)):
            raise ProviderError(f"cluster id {cluster_id!r} is not a safe path name")
        return os.path.join(self.nodes_dir, cluster_id)

    def _root(self, resource_id):
        cluster_id, _, node_id = str(resource_id).partition("/")
        if not _SAFE_ID.match(node_id):
            raise ProviderError(f"local node id {resource_id!r} is not a safe path name")
        return os.path.join(self._cluster_dir(cluster_id), node_id)

    @staticmethod
    def _read(root):
        try:
            with open(os.path.join(root, ".shoal", "node.json")) as f:
                return json.load(f)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _info(self, resource_id, record):
        root = self._root(resource_id)
        return NodeInfo(
            resource_id=resource_id,
            state=NodeState.RUNNING,
            hostname=record["hostname"],
            addresses={"bind_v4": record.get("address", ADDRESS),
                       "access_v4": record.get("address", ADDRESS)},
            extra={"root": root, "ports": record["ports"], "piddir": os.path.join(root, "run"),
                   "token": record["token"]},
        )

    def _env(self, root, record):
        first, last = record["ports"]
        return {
            "HOME": os.path.join(root, "home"),
            "TMPDIR": os.path.join(root, "tmp"),
            "SHOAL_NODE_ROOT": root,
            "SHOAL_NODE_PIDDIR": os.path.join(root, "run"),
            "SHOAL_NODE_HOSTNAME": record["hostname"],
            "SHOAL_NODE_ADDRESS": record.get("address", ADDRESS),
            "SHOAL_NODE_PORT_FIRST": str(first),
            "SHOAL_NODE_PORT_LAST": str(last),
        }

    # -- ports --------------------------------------------------------------------------------

    def _ports_in_use(self):
        used = []
        if not os.path.isdir(self.nodes_dir):
            return used
        for cluster in os.listdir(self.nodes_dir):
            cluster_dir = os.path.join(self.nodes_dir, cluster)
            if cluster.startswith(".") or not os.path.isdir(cluster_dir):
                continue
            for node in os.listdir(cluster_dir):  # includes sandboxes still being made
                record = self._read(os.path.join(cluster_dir, node))
                if record:
                    used.append(tuple(record["ports"]))
        return used

    @staticmethod
    def _bindable(port):
        with socket.socket() as s:
            try:
                s.bind((ADDRESS, port))
            except OSError:
                return False
        return True

    def _address(self, first_port):
        """The node's loopback address, derived from its port block (unique like the block)."""
        index = (first_port - self.port_base) // self.block
        return f"{NODE_NET}.{index // 254}.{index % 254 + 1}"

    def _allocate_ports(self):
        """A block no other sandbox holds and no process listens on. Caller holds the lock."""
        used = self._ports_in_use()
        first = self.port_base
        while first + self.block - 1 <= self.port_limit:
            last = first + self.block - 1
            clash = next((u for u in used if u[0] <= last and first <= u[1]), None)
            if clash:
                first = clash[1] + 1
            elif (all(self._bindable(port) for port in range(first, last + 1))
                  and self._address(first) not in _listening_addresses()):
                # The address check matters when another SHOAL_HOME on this machine holds
                # nodes: their block records are not ours to read, but their listeners show.
                return [first, last]
            else:
                first += self.block
        raise ProviderError(
            f"provider '{self.name}': no free block of {self.block} ports left between "
            f"{self.port_base} and {self.port_limit} ({len(used)} nodes hold one)"
        )

    # -- the provider interface ---------------------------------------------------------------

    def create(self, spec):
        resource_id = f"{spec.cluster_id}/{spec.node_id}"
        root = self._root(resource_id)
        with file_lock(os.path.join(self.nodes_dir, ".lock")):
            record = self._read(root)
            if record:
                if record["token"] != spec.token:
                    raise ProviderError(
                        f"local node {resource_id} already exists for another request "
                        f"(token {record['token']}, not {spec.token})",
                        {"resource_id": resource_id},
                    )
                return self._info(resource_id, record)
            self._remove_leftovers(root)
            record = {
                "cluster_id": spec.cluster_id, "node_id": spec.node_id, "tenant": spec.tenant,
                "hostname": spec.hostname, "token": spec.token, "created": time.time(),
                "ports": self._allocate_ports(),
                "since": _boot_ticks() - os.sysconf("SC_CLK_TCK"),  # a second of slack
            }
            record["address"] = self._address(record["ports"][0])
            # Built beside its final place and renamed in: a sandbox exists whole or not at all.
            building = os.path.join(os.path.dirname(root),
                                    f".{spec.node_id}.creating-{uuid.uuid4().hex[:8]}")
            for sub in ("home", "tmp", "run", ".shoal"):
                os.makedirs(os.path.join(building, sub), mode=0o700)
            write_json(os.path.join(building, ".shoal", "node.json"), record)
            os.rename(building, root)
        return self._info(resource_id, record)

    def describe(self, infos):
        result = {}
        for info in infos:
            resource_id = info if isinstance(info, str) else info.resource_id
            record = self._read(self._root(resource_id))
            result[resource_id] = (self._info(resource_id, record) if record
                                   else NodeInfo(resource_id=resource_id, state=NodeState.GONE))
        return result

    def delete(self, info):
        resource_id = info if isinstance(info, str) else info.resource_id
        root = self._root(resource_id)
        record = self._read(root) or {}
        self.stop_processes(root, since=record.get("since", 0))
        if os.path.isdir(root):
            # Renamed away first, so the node reads as gone at once even if removal is cut short.
            doomed = os.path.join(os.path.dirname(root),
                                  f".{os.path.basename(root)}.deleting-{uuid.uuid4().hex[:8]}")
            os.rename(root, doomed)
            shutil.rmtree(doomed)
        self._remove_leftovers(root)
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(root))  # the cluster's directory, once empty

    def _remove_leftovers(self, root):
        """Half-made or half-removed copies of this sandbox from an interrupted call."""
        parent, name = os.path.split(root)
        if os.path.isdir(parent):
            for entry in os.listdir(parent):
                if entry.startswith(f".{name}.creating-") or entry.startswith(f".{name}.deleting-"):
                    shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)

    def stop_processes(self, root, since=0):
        """SIGTERM every process of the sandbox, SIGKILL what is left, and wait until none is."""
        def current():
            return node_processes(root, self._pgids(root), self._pidfile_pids(root), since)

        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = current()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + self.stop_grace
            while time.monotonic() < deadline:
                time.sleep(0.05)
                if not current():  # re-scanned: a dying supervisor may have forked again
                    return
        left = current()
        if left:
            raise ProviderError(f"local node {root}: processes {sorted(left)} survived SIGKILL")

    @staticmethod
    def _pgids(root):
        try:
            with open(os.path.join(root, ".shoal", "pgids")) as f:
                return {int(line) for line in f if line.strip().isdigit()}
        except OSError:
            return set()

    @staticmethod
    def _pidfile_pids(root):
        pids = set()
        piddir = os.path.join(root, "run")
        if os.path.isdir(piddir):
            for name in os.listdir(piddir):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    with open(os.path.join(piddir, name)) as f:
                        pids.add(int(f.read().split()[0]))
        return pids

    def find(self, cluster_id):
        cluster_dir = self._cluster_dir(cluster_id)
        if not os.path.isdir(cluster_dir):
            return []
        infos = []
        for node_id in sorted(os.listdir(cluster_dir)):
            if node_id.startswith("."):
                continue
            record = self._read(os.path.join(cluster_dir, node_id))
            if record:
                infos.append(self._info(f"{cluster_id}/{node_id}", record))
        return infos

    def inventory(self, cluster_ids):
        """The sandboxes of each cluster: a look at its directory (nothing to page through)."""
        result = {}
        for cluster_id in cluster_ids:
            result[cluster_id] = infos = self.find(cluster_id)
            for info in infos:
                info.extra["node"] = info.resource_id.partition("/")[2]
        return result

    def transport(self, info):
        resource_id = info if isinstance(info, str) else info.resource_id
        root = self._root(resource_id)
        record = self._read(root)
        if not record:
            raise TransportError(f"local node {resource_id} is gone ({root} does not exist)")
        return LocalTransport(root, self._env(root, record),
                              pgid_file=os.path.join(root, ".shoal", "pgids"),
                              workdir=os.path.join(root, ".shoal"))

    def cleanup_cluster(self, cluster_id):
        cluster_dir = self._cluster_dir(cluster_id)
        if os.path.isdir(cluster_dir):
            for entry in os.listdir(cluster_dir):
                if ".creating-" in entry or ".deleting-" in entry:
                    shutil.rmtree(os.path.join(cluster_dir, entry), ignore_errors=True)
            with contextlib.suppress(OSError):
                os.rmdir(cluster_dir)
