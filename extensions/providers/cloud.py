"""What the cloud providers (aws, gcp) share: per-cluster SSH keys, the SSH rule's address
ranges, waiting for SSH on new machines, and the SSH transport to them.

Keys are made here and only their public half goes to the cloud: the private key never leaves
``SHOAL_HOME/keys`` (directory 0700, file 0600) and is never logged or returned.
"""

import concurrent.futures
import ipaddress
import logging
import os
import posixpath
import re
import time

from cluster_server.errors import PluginError, TransportError
from cluster_server.plugins import LOGIN_HELP, LOGIN_NAME, Field, NodeState
from extensions.transports import SSHTransport, fetch_host_key, ssh_keypair

LOG = logging.getLogger(__name__)

#: Fields every cloud provider reads, besides its own.
SSH_FIELDS = {
    "ssh_cidr": Field(help="address ranges allowed to reach the nodes' SSH port, comma-separated "
                           "(e.g. 203.0.113.7/32); required to create nodes, never opened to "
                           "the world by default"),
    "ssh_user": Field(help="login user when the image type names no sshuser",
                      pattern=LOGIN_NAME, pattern_help=LOGIN_HELP),
    "workdir": Field(default=".shoal", help="directory on the node for Shoal's files"),
    "connect_timeout": Field(default=10, help="seconds to wait for a node's SSH port to answer"),
    "wait_for_ssh": Field(default=True, help="a node counts as running only once its SSH port "
                                             "answers (its host key is pinned then)"),
    "ssh_address_override": Field(help="tests only: reach every node's SSH at this address "
                                       "(host or host:port) instead of the cloud's address"),
    "ssh_port_override": Field(help="tests only: the SSH port to use with the override"),
}

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def truthy(value):
    return str(value).strip().lower() not in ("", "0", "false", "no", "off", "none")


def ssh_cidrs(provider):
    """The provider's ``ssh_cidr`` as a list of networks; a clear refusal when it is missing."""
    value = provider.config.get("ssh_cidr")
    items = value if isinstance(value, list) else str(value or "").split(",")
    items = [str(item).strip() for item in items if str(item).strip()]
    if not items:
        raise PluginError(
            f"provider '{provider.name}': field 'ssh_cidr' is required to create nodes: the "
            "address range allowed to reach their SSH port, e.g. 203.0.113.7/32 (Shoal never "
            "opens SSH to the whole internet by default)",
            {"entity": "provider", "name": provider.name, "field": "ssh_cidr"})
    cidrs = []
    for item in items:
        try:
            network = ipaddress.ip_network(item, strict=False)
        except ValueError as exc:
            raise PluginError(f"provider '{provider.name}': ssh_cidr {item!r} is not an "
                              f"address range: {exc}",
                              {"entity": "provider", "name": provider.name,
                               "field": "ssh_cidr"}) from exc
        if network.prefixlen == 0:
            LOG.warning("provider %s: SSH is open to every address (%s) as ssh_cidr asks",
                        provider.name, network)
        cidrs.append(str(network))
    return cidrs


def gib(provider, key):
    """A size field as a whole number of GiB, or None when it is not set."""
    value = provider.config.get(key)
    if value in (None, ""):
        return None
    try:
        size = int(str(value).strip())
    except ValueError:
        size = 0
    if size <= 0:
        raise PluginError(f"provider '{provider.name}': field '{key}' must be a whole number of "
                          f"GiB, not {value!r}",
                          {"entity": "provider", "name": provider.name, "field": key})
    return size


def image_and_flavor(provider, spec):
    """The ``image`` and ``flavor`` a node's providermap entries name; refuses when either is
    missing or ``ssh_cidr`` is, or when a field the provider does not support has a value
    (``provider.unsupported``: {field: why}; Coopr catalogs carry such fields, and a value
    silently ignored would make a node other than the one asked for). So nothing is made in
    the cloud for a node that cannot be."""
    for key, why in getattr(provider, "unsupported", {}).items():
        if provider.config.get(key) not in (None, ""):
            raise PluginError(f"provider '{provider.name}': field '{key}' is not supported: {why}",
                              {"entity": "provider", "name": provider.name, "field": key,
                               "reason": "unsupported"})
    image = (spec.image or {}).get("image")
    flavor = (spec.flavor or {}).get("flavor")
    if not image or not flavor:
        raise PluginError(
            f"provider '{provider.name}': image type {spec.imagetype} needs an 'image' and "
            f"hardware type {spec.hardwaretype} a 'flavor' in their providermap",
            {"provider": provider.name, "imagetype": spec.imagetype,
             "hardwaretype": spec.hardwaretype})
    ssh_cidrs(provider)
    return image, flavor


def backoff(base=None, ceiling=30.0):
    """Intervals for waits with no timeout: ``SHOAL_POLL_BASE`` (default 1 s), doubling."""
    delay = float(base or os.environ.get("SHOAL_POLL_BASE") or 1.0)
    while True:
        yield delay
        delay = min(ceiling, delay * 2)


class ClusterKeys:
    """One SSH key pair per cluster under ``SHOAL_HOME/keys/<provider>/``."""

    def __init__(self, home, provider_name):
        self.dir = os.path.join(os.fspath(home), "keys", _SAFE.sub("_", provider_name))

    def path(self, cluster_id):
        return os.path.join(self.dir, _SAFE.sub("_", cluster_id))

    def ensure(self, cluster_id):
        """The cluster's public key line (``ssh-ed25519 AAAA… shoal-<cluster>``), made once."""
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        os.chmod(self.dir, 0o700)
        return ssh_keypair(self.path(cluster_id), f"shoal-{cluster_id}")

    def public(self, cluster_id):
        try:
            with open(self.path(cluster_id) + ".pub") as f:
                return f.read().strip()
        except FileNotFoundError:
            return None

    def remove(self, cluster_id):
        for suffix in (".pub", ""):
            try:
                os.remove(self.path(cluster_id) + suffix)
            except FileNotFoundError:
                pass


class SSHAccess:
    """How Shoal reaches a cloud node over SSH, and the wait for its SSH port at CONFIRM."""

    def __init__(self, provider, keys, default_user="root"):
        config = provider.config
        self.provider = provider
        self.keys = keys
        self.default_user = config.get("ssh_user") or default_user
        self.workdir = config.get("workdir") or ".shoal"
        self.timeout = float(config.get("connect_timeout") or 10)
        self.wait = truthy(config.get("wait_for_ssh", True))
        self.override = None
        override = str(config.get("ssh_address_override") or "").strip()
        if override:
            host, port = override, None
            if override.startswith("["):  # [v6]:port
                host, _, port = override[1:].partition("]")
                port = port.lstrip(":") or None
            elif override.count(":") == 1:
                host, port = override.split(":")
            self.override = (host, int(config.get("ssh_port_override") or port or 22))

    def facts(self, cluster_id, node_id, address, image):
        """The ``ssh`` facts of a node whose cloud address is ``address``."""
        user = (image or {}).get("sshuser") or self.default_user
        workdir = self.workdir
        if self.override:
            host, port = self.override
            # Every node shares the one test host: keep their files apart.
            workdir = posixpath.join(workdir, _SAFE.sub("_", f"{cluster_id}-{node_id}"))
        else:
            host, port = address, 22
        return {"host": host or "", "port": port, "user": user,
                "key_file": self.keys.path(cluster_id), "workdir": workdir}

    def pin(self, infos):
        """For nodes the cloud calls RUNNING: read and pin each host key; a node whose SSH does
        not answer yet stays PENDING (it is still booting). Runs a few at a time."""
        todo = [info for info in infos
                if info.state == NodeState.RUNNING and not info.ssh.get("host_key")]
        if not self.wait or not todo:
            return
        with concurrent.futures.ThreadPoolExecutor(min(8, len(todo)), "ssh-pin") as pool:
            list(pool.map(self._pin_one, todo))

    def _pin_one(self, info):
        if not info.ssh.get("host"):
            info.state, info.extra["waiting"] = NodeState.PENDING, "no address yet"
            return
        try:
            info.ssh["host_key"] = fetch_host_key(info.ssh["host"], info.ssh["port"],
                                                  self.timeout)
            info.extra.pop("waiting", None)
        except TransportError as exc:
            info.state, info.extra["waiting"] = NodeState.PENDING, f"SSH: {exc.message}"

    def transport(self, info):
        ssh = info.ssh
        if not ssh.get("host_key"):
            raise TransportError(f"node {info.resource_id} has no pinned host key; it must be "
                                 "confirmed first")
        return SSHTransport(ssh["host"], ssh["port"], ssh["user"], ssh["key_file"],
                            ssh["host_key"], workdir=ssh.get("workdir") or self.workdir,
                            connect_timeout=self.timeout)


def wait_until(check, what, log=LOG):
    """Call ``check()`` with backoff until it returns true; no timeout (the cloud decides)."""
    started = time.monotonic()
    for delay in backoff():
        if check():
            return
        log.info("waiting for %s (%.0f s so far)", what, time.monotonic() - started)
        time.sleep(delay)
