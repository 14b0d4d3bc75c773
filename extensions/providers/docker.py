"""The ``docker`` provider: a node is a container, made through the docker SDK.

Works against Docker Engine and against Podman's Docker-compatible socket (``DOCKER_HOST``, or
the provider field ``docker_host``). Each cluster gets one network; every container and network
carries labels naming the Shoal home, the cluster, the node and the idempotency token, so a
crash, a rollback or a cleanup finds them by label. When the image has sshd, it runs in the
container with its port published on 127.0.0.1 and its host key pinned at CONFIRM; actions reach
the node by docker exec (default) or over SSH (field ``access``).
"""

import concurrent.futures
import contextlib
import hashlib
import logging
import os
import re
import threading
import time

from cluster_server.errors import ProviderError, TransportError, ValidationError
from cluster_server.plugins import LOGIN_HELP, LOGIN_NAME, Field, NodeInfo, NodeState, Provider
from extensions.transports import DockerExecTransport, SSHTransport, fetch_host_key, ssh_keypair

log = logging.getLogger(__name__)

LABEL = "shoal"  # label prefix: shoal.home, shoal.cluster, shoal.node, shoal.token, ...
DEFAULT_IMAGE = "localhost/shoal-base:bookworm"
NAME_TAKEN_WAIT = 10  # seconds a create that lost its node's name waits to see the winner
#: The container's main process: sshd when the image has it (a fresh host key per container,
#: the cluster's public key authorized), else a process that only keeps the container up.
START = (
    'if [ -x /usr/sbin/sshd ]; then '
    'mkdir -p /run/sshd /root/.ssh && chmod 700 /root/.ssh && '
    'printf "%s\\n" "$SHOAL_AUTHORIZED_KEY" >/root/.ssh/authorized_keys && '
    '{ [ -f /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -q -t ed25519 -N "" '
    '-f /etc/ssh/ssh_host_ed25519_key; } && '
    'exec /usr/sbin/sshd -D -e -o HostKey=/etc/ssh/ssh_host_ed25519_key '
    '-o PasswordAuthentication=no -o UsePAM=no; '
    'else exec sleep infinity; fi'
)
STATE_MAP = {
    "created": NodeState.PENDING, "restarting": NodeState.PENDING, "paused": NodeState.PENDING,
    "running": NodeState.RUNNING, "exited": NodeState.FAILED, "dead": NodeState.FAILED,
    "stopped": NodeState.FAILED, "removing": NodeState.GONE,
}
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def docker_client(base_url=None):
    """A docker SDK client for ``base_url`` (default: ``DOCKER_HOST`` and the usual places)."""
    try:
        import docker
    except ImportError as exc:
        raise ProviderError("the docker provider needs the docker SDK: "
                            "pip install 'shoal[docker]'") from exc
    try:
        if base_url:
            return docker.DockerClient(base_url=base_url)
        return docker.from_env()
    except docker.errors.DockerException as exc:
        where = base_url or os.environ.get("DOCKER_HOST")
        # The server reads DOCKER_HOST once, when it starts: a user who sets it later in their
        # shell needs to know the running server does not see it.
        hint = "" if where else (" (start Docker, or Podman's API service, and set DOCKER_HOST "
                                 "before the Shoal server starts: 'shoal server stop', then "
                                 "retry)")
        raise ProviderError(f"no container engine reachable at {where or 'the default socket'}"
                            f": {exc}{hint}") from exc


def home_label(home):
    """Which Shoal home made a container: two homes on one engine never see each other's."""
    return hashlib.sha256(os.path.realpath(os.fspath(home)).encode()).hexdigest()[:16]


class DockerProvider(Provider):
    """Nodes as containers on one network per cluster, found again by their labels."""

    fields = {
        "docker_host": Field(help="engine URL (default: DOCKER_HOST), e.g. "
                                  "unix:///run/podman/podman.sock"),
        "access": Field(default="exec", help="how actions reach a node: 'exec' (docker exec) "
                                             "or 'ssh' (the published sshd port)"),
        "ssh_user": Field(default="root", help="user for SSH when the image type names none",
                          pattern=LOGIN_NAME, pattern_help=LOGIN_HELP),
        "ssh_key_file": Field(help="private key authorized in every container (default: a key "
                                   "made per cluster under SHOAL_HOME/keys/)"),
        "pull": Field(default=False, help="pull a missing image instead of failing at once"),
    }

    def __init__(self, name, fields, home):
        super().__init__(name, fields or {}, home)
        self.access = str(self.config.get("access") or "exec")
        if self.access not in ("exec", "ssh"):
            raise ValidationError(f"provider '{name}': access must be 'exec' or 'ssh', not "
                                  f"{self.access!r}", {"entity": "provider", "name": name,
                                                       "field": "access"})
        self.home_id = home_label(home)
        self._client = None
        self._client_lock = threading.Lock()
        self._lock = threading.Lock()  # the network check-and-create, the transports
        self._transports = {}

    @property
    def client(self):
        with self._client_lock:
            if self._client is None:
                self._client = docker_client(self.config.get("docker_host"))
            return self._client

    def _errors(self):
        import docker.errors

        return docker.errors

    # -- names and labels -----------------------------------------------------------------------

    def network_name(self, cluster_id):
        return f"shoal-{self.home_id[:8]}-{_UNSAFE.sub('_', cluster_id)}"

    def _labels(self, cluster_id, **more):
        labels = {f"{LABEL}.home": self.home_id, f"{LABEL}.provider": self.name,
                  f"{LABEL}.cluster": cluster_id}
        labels.update({f"{LABEL}.{key}": str(value) for key, value in more.items()})
        return labels

    def _list(self, **labels):
        """Node containers of this home with the given labels: one list call, summaries only.
        (Shell and docker-cli containers carry other roles.)"""
        labels.setdefault("role", "node")
        wanted = [f"{LABEL}.home={self.home_id}"]
        wanted += [f"{LABEL}.{key}={value}" for key, value in labels.items() if value is not None]
        try:
            return self.client.containers.list(all=True, sparse=True,
                                               filters={"label": wanted})
        except self._errors().DockerException as exc:
            raise ProviderError(f"provider '{self.name}': cannot list containers: {exc}") from exc

    def key_file(self, cluster_id):
        """The private key every container of the cluster authorizes (made on first use)."""
        if self.config.get("ssh_key_file"):
            return os.path.expanduser(self.config["ssh_key_file"])
        folder = os.path.join(os.fspath(self.home), "keys", self.name)
        os.makedirs(folder, mode=0o700, exist_ok=True)
        return os.path.join(folder, f"{_UNSAFE.sub('_', cluster_id)}_ed25519")

    def _public_key(self, cluster_id):
        path = self.key_file(cluster_id)
        if self.config.get("ssh_key_file"):
            try:
                with open(path + ".pub") as f:
                    return f.read().strip()
            except OSError as exc:
                raise ProviderError(f"provider '{self.name}': cannot read {path}.pub: {exc}") \
                    from exc
        return ssh_keypair(path)

    # -- the cluster network --------------------------------------------------------------------

    def _networks(self, cluster_id):
        try:
            return self.client.networks.list(filters={"label": [
                f"{LABEL}.home={self.home_id}", f"{LABEL}.cluster={cluster_id}"]})
        except self._errors().DockerException as exc:
            raise ProviderError(f"provider '{self.name}': cannot list networks: {exc}") from exc

    def _ensure_network(self, cluster_id):
        name = self.network_name(cluster_id)
        with self._lock:
            if any(n.name == name for n in self._networks(cluster_id)):
                return name
            try:
                self.client.networks.create(name, labels=self._labels(cluster_id))
            except self._errors().APIError as exc:
                # Made meanwhile by another process (Docker answers 409, Podman 500).
                if not any(n.name == name for n in self._networks(cluster_id)):
                    raise ProviderError(f"provider '{self.name}': cannot create network "
                                        f"{name}: {exc}") from exc
        return name

    # -- the provider interface -----------------------------------------------------------------

    def create(self, spec):
        found = self._list(token=spec.token)
        if found:  # made before a crash; started too, unless the crash came in between
            if found[0].attrs.get("State") == "created":
                with contextlib.suppress(self._errors().DockerException):
                    self.client.api.start(found[0].attrs["Id"])
            return self._info(found[0])
        image = (spec.image or {}).get("image") or DEFAULT_IMAGE
        self._ensure_image(image)
        network = self._ensure_network(spec.cluster_id)
        user = (spec.image or {}).get("sshuser") or self.config.get("ssh_user") or "root"
        labels = self._labels(spec.cluster_id, role="node", node=spec.node_id, token=spec.token,
                              tenant=spec.tenant, user=user, access=self.access,
                              hostname=spec.hostname)
        name = f"shoal-{self.home_id[:8]}-{_UNSAFE.sub('_', spec.token)}"
        kwargs = {"name": name, "hostname": spec.hostname[:63],
                  "labels": labels, "network": network, "command": ["sh", "-c", START],
                  "environment": {"SHOAL_AUTHORIZED_KEY": self._public_key(spec.cluster_id)},
                  "ports": {"22/tcp": ("127.0.0.1", None)}, "detach": True}
        flavor = spec.flavor or {}
        if flavor.get("memory"):
            kwargs["mem_limit"] = flavor["memory"]
        if flavor.get("cpus"):
            kwargs["nano_cpus"] = int(float(flavor["cpus"]) * 1e9)
        errors = self._errors()
        try:
            container = self.client.containers.create(image, **kwargs)
        except errors.APIError as exc:
            found = self._list(token=spec.token)  # a concurrent create of the same node won
            # The name is taken, yet no container shows: Podman holds the name of a container
            # it is still making before it lists it. Look again for a little while.
            deadline = time.monotonic() + NAME_TAKEN_WAIT
            while not found and "already in use" in str(exc) and time.monotonic() < deadline:
                time.sleep(0.1)
                found = self._list(token=spec.token)
            if found:
                return self._info(found[0])
            raise ProviderError(f"provider '{self.name}': cannot create container for node "
                                f"{spec.node_id}: {exc.explanation or exc}",
                                {"node": spec.node_id, "image": image}) from exc
        try:
            container.start()
        except errors.DockerException as exc:
            # A container that cannot start is removed at once: a failed create leaves nothing.
            with contextlib.suppress(errors.DockerException):
                container.remove(force=True, v=True)
            raise ProviderError(f"provider '{self.name}': container for node {spec.node_id} "
                                f"does not start: {exc}", {"node": spec.node_id}) from exc
        found = self._list(token=spec.token)
        if not found:
            raise ProviderError(f"provider '{self.name}': container {container.id[:12]} "
                                "vanished right after it started")
        info = self._info(found[0])
        if info.state == NodeState.RUNNING:
            info.state = NodeState.PENDING  # running, but sshd is confirmed by describe
        return info

    def _ensure_image(self, image):
        errors = self._errors()
        try:
            self.client.images.get(image)
            return
        except errors.ImageNotFound:
            if not self.config.get("pull") or str(self.config.get("pull")).lower() == "false":
                raise ProviderError(f"provider '{self.name}': image {image} is not on the engine "
                                    "(build it, or set the provider field pull)",
                                    {"image": image}) from None
        except errors.DockerException as exc:
            raise ProviderError(f"provider '{self.name}': cannot inspect image {image}: {exc}") \
                from exc
        try:
            self.client.images.pull(image)
        except errors.DockerException as exc:
            raise ProviderError(f"provider '{self.name}': cannot pull {image}: {exc}") from exc

    def _info(self, container, previous=None):
        """A NodeInfo from a container summary (as ``containers.list(sparse=True)`` gives)."""
        attrs = container.attrs
        labels = attrs.get("Labels") or {}
        state = STATE_MAP.get(str(attrs.get("State", "")).lower(), NodeState.PENDING)
        networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
        network = self.network_name(labels.get(f"{LABEL}.cluster", ""))
        address = (networks.get(network) or {}).get("IPAddress") or ""
        port = next((p.get("PublicPort") for p in attrs.get("Ports") or []
                     if p.get("PrivatePort") == 22 and p.get("PublicPort")), None)
        info = NodeInfo(
            resource_id=attrs["Id"], state=state,
            hostname=labels.get(f"{LABEL}.hostname", ""),
            addresses={"bind_v4": address, "access_v4": address} if address else {},
            ssh={"host": "127.0.0.1", "port": port, "user": labels.get(f"{LABEL}.user", "root"),
                 "key_file": self.key_file(labels.get(f"{LABEL}.cluster", ""))} if port else {},
            extra={"token": labels.get(f"{LABEL}.token", ""), "network": network,
                   "node": labels.get(f"{LABEL}.node", ""), "address": address,
                   "container": (attrs.get("Names") or [""])[0].lstrip("/"),
                   "access": labels.get(f"{LABEL}.access", self.access)},
        )
        if previous is not None:
            if previous.ssh.get("host_key"):
                info.ssh["host_key"] = previous.ssh["host_key"]
            if "sshd" in previous.extra:
                info.extra["sshd"] = previous.extra["sshd"]
        if state == NodeState.FAILED:
            info.error = f"container {info.extra['container']} {attrs.get('Status', 'stopped')}"
        return info

    def describe(self, infos):
        """One list call for every node asked about; a RUNNING node has its host key pinned."""
        infos = [info if isinstance(info, NodeInfo) else NodeInfo(resource_id=info)
                 for info in infos]
        if not infos:
            return {}
        current = {c.attrs["Id"]: c for c in self._list()}
        result, confirming = {}, []
        for info in infos:
            container = current.get(info.resource_id)
            token = info.extra.get("token")
            labels = (container.attrs.get("Labels") or {}) if container else {}
            if container is None or (token and labels.get(f"{LABEL}.token") != token):
                result[info.resource_id] = NodeInfo(resource_id=info.resource_id,
                                                    state=NodeState.GONE)
                continue
            result[info.resource_id] = now = self._info(container, info)
            if now.state == NodeState.RUNNING and (
                    "sshd" not in now.extra or (now.extra["sshd"] and not now.ssh.get("host_key"))):
                confirming.append(now)
        if confirming:
            with concurrent.futures.ThreadPoolExecutor(min(8, len(confirming))) as pool:
                list(pool.map(self._confirm, confirming))
        return result

    def _confirm(self, info):
        """First sight of a running node: does it have sshd? If so, pin its host key."""
        if "sshd" not in info.extra:
            code, _ = self._exec(info.resource_id, ["test", "-x", "/usr/sbin/sshd"])
            info.extra["sshd"] = code == 0
        if not info.extra["sshd"]:
            if self.access == "ssh":
                info.state, info.error = NodeState.FAILED, "the image has no sshd (access: ssh)"
            return
        try:
            info.ssh["host_key"] = fetch_host_key("127.0.0.1", info.ssh["port"], timeout=5)
        except (TransportError, KeyError) as exc:
            # sshd is still making its key or starting: pending until the next poll.
            log.debug("node %s: sshd not ready: %s", info.resource_id[:12], exc)
            info.state = NodeState.PENDING

    def _exec(self, container_id, argv):
        try:
            code, out = self.client.containers.get(container_id).exec_run(argv)
            return code, out
        except self._errors().DockerException as exc:
            return -1, str(exc).encode()

    def delete(self, info):
        container_id = info if isinstance(info, str) else info.resource_id
        errors = self._errors()
        with self._lock:
            transport = self._transports.pop(container_id, None)
        if transport:
            transport.close()
        try:
            self.client.api.remove_container(container_id, v=True, force=True)
        except errors.NotFound:
            pass
        except errors.APIError as exc:
            if exc.status_code != 404 and "no such container" not in str(exc).lower():
                raise ProviderError(f"provider '{self.name}': cannot remove container "
                                    f"{container_id[:12]}: {exc}") from exc

    def find(self, cluster_id):
        return [self._info(c) for c in self._list(cluster=cluster_id)]

    def inventory(self, cluster_ids):
        """Every node container of this home, running or not, in one list call (the engine does
        not page), grouped by their cluster label."""
        result = {cluster_id: [] for cluster_id in cluster_ids}
        for container in self._list():
            cluster_id = (container.attrs.get("Labels") or {}).get(f"{LABEL}.cluster")
            if cluster_id in result:
                result[cluster_id].append(self._info(container))
        return result

    def cleanup_cluster(self, cluster_id):
        """Remove the cluster's network (by name: Podman removes a network by id even while
        containers use it) once no container of the cluster is left."""
        left = self._list(cluster=cluster_id)
        if left:
            raise ProviderError(f"provider '{self.name}': {len(left)} container(s) of cluster "
                                f"{cluster_id} still exist; not removing its network")
        errors = self._errors()
        # Shell or docker-cli containers of the cluster that outlived their caller (a killed
        # terminal) may still sit on the network.
        for other in self._list(cluster=cluster_id, role=None):
            with contextlib.suppress(errors.NotFound):
                self.client.api.remove_container(other.attrs["Id"], v=True, force=True)
        for network in self._networks(cluster_id):
            try:
                self.client.api.remove_network(network.name)
            except errors.NotFound:
                pass
            except errors.APIError as exc:
                raise ProviderError(f"provider '{self.name}': cannot remove network "
                                    f"{network.name}: {exc}") from exc
        with contextlib.suppress(OSError):
            if not self.config.get("ssh_key_file"):
                for suffix in ("", ".pub", ".lock"):
                    os.remove(self.key_file(cluster_id) + suffix)

    def transport(self, info):
        access = info.extra.get("access", self.access)
        client = self.client if access != "ssh" else None
        with self._lock:
            transport = self._transports.get(info.resource_id)
            if transport is None:
                if access == "ssh":
                    if not info.ssh.get("host_key"):
                        raise TransportError(f"container {info.resource_id[:12]} has no pinned "
                                             "host key; it must be confirmed first")
                    transport = SSHTransport(info.ssh["host"], info.ssh["port"],
                                             info.ssh.get("user"), info.ssh.get("key_file"),
                                             info.ssh["host_key"], workdir=".shoal")
                else:
                    transport = DockerExecTransport(client, info.resource_id)
                self._transports[info.resource_id] = transport
            return transport
