"""The ``gcp`` provider: Compute Engine instances through google-cloud-compute (REST).

Per cluster: a firewall rule opening SSH to ``ssh_cidr`` only, for instances carrying the
cluster's network tag, and an SSH key made in ``SHOAL_HOME/keys`` whose public half goes into
each instance's ``ssh-keys`` metadata. An instance's name and request id derive from the node's
token, so an insert repeated after a crash is the same insert. Operations are polled here with
our own calls (``operation.result()`` would poll Google's real endpoint whatever
``api_endpoint`` says). Waiting is one filtered ``instances.list`` per page per polling round.
"""

import collections
import hashlib
import logging
import re
import threading
import time
import uuid

from cluster_server import clouds
from cluster_server.errors import PluginError, ProviderError
from cluster_server.plugins import Field, NodeInfo, NodeState, Provider
from extensions.providers.cloud import (SSH_FIELDS, ClusterKeys, SSHAccess, gib,
                                       image_and_flavor, ssh_cidrs, wait_until)

LOG = logging.getLogger(__name__)

STATE_MAP = {"PROVISIONING": NodeState.PENDING, "STAGING": NodeState.PENDING,
             "RUNNING": NodeState.RUNNING, "STOPPING": NodeState.FAILED,
             "STOPPED": NodeState.FAILED, "SUSPENDING": NodeState.FAILED,
             "SUSPENDED": NodeState.FAILED, "TERMINATED": NodeState.FAILED,
             "REPAIRING": NodeState.PENDING}
#: The namespace of the request ids derived from node tokens (uuid5).
REQUEST_IDS = uuid.UUID("6c1f0a52-8f3e-4f0e-9d0c-5f0a6c9b1d2e")


def label(value):
    """A label value: lowercase letters, digits, ``-`` and ``_``, at most 63 characters."""
    return re.sub(r"[^a-z0-9_-]", "-", str(value).lower())[:63]


def request_id(*parts):
    return str(uuid.uuid5(REQUEST_IDS, "/".join(parts)))


class GCPProvider(Provider):
    """Compute Engine instances in one zone, one firewall rule per cluster."""

    fields = {
        "google_project": Field(help="project id (default: the one 'shoal setup gcp' recorded, "
                                     "else the credentials')"),
        "zone_name": Field(default="us-central1-a", help="zone of the instances"),
        "credentials_file": Field(help="service-account key file (default: the one 'shoal setup "
                                       "gcp' recorded, else application default credentials)"),
        "api_endpoint": Field(help="Compute API endpoint (tests: a fake on loopback)"),
        "network": Field(default="global/networks/default", help="VPC network"),
        "subnetwork": Field(help="subnetwork (regions/R/subnetworks/S)"),
        "boot_disk_size_gb": Field(help="boot disk size in GB (default: the image's)"),
        "google_data_disk_size_gb": Field(help="size in GB of a second, empty persistent disk "
                                               "made with each instance and deleted with it "
                                               "(default: none)"),
        "service_account": Field(help="email of the service account the instances run as"),
        "external_ip": Field(default=True, help="give instances an external address"),
        "list_page_size": Field(default=500, help="instances per instances.list page"),
        **SSH_FIELDS,
    }
    #: Fields of Coopr's Google provider that Shoal does not read: a value is refused at create
    #: (``image_and_flavor``), never silently ignored.
    unsupported = {
        "google_client_email": "give the service-account key file in credentials_file, or run "
                               "'shoal setup gcp'",
        "api_key_resource": "give the service-account key file in credentials_file, or run "
                            "'shoal setup gcp'",
        "ssh_key_resource": "Shoal makes and keeps an SSH key per cluster (under "
                            "SHOAL_HOME/keys); leave it empty",
    }

    def __init__(self, name, fields, home):
        super().__init__(name, fields or {}, home)
        self.zone = self.config.get("zone_name") or "us-central1-a"
        self.keys = ClusterKeys(home, name)
        self.ssh = SSHAccess(self, self.keys, default_user="shoal")
        self.page_size = max(1, min(500, int(self.config.get("list_page_size") or 500)))
        self.calls = collections.Counter()  # Compute API calls by method (tests, benchmarks)
        self._clients = None
        self._project = None
        self._lock = threading.Lock()
        self._cluster_locks = collections.defaultdict(threading.Lock)
        self._firewalls = set()  # clusters whose firewall rule is known to exist

    # -- clients ---------------------------------------------------------------------------------

    def _client(self, kind):
        with self._lock:
            if self._clients is None:
                self._clients = self._make_clients()
            return self._clients[kind]

    @property
    def project(self):
        self._client("instances")
        return self._project

    def _make_clients(self):
        from google.cloud import compute_v1

        setup = clouds.recorded(self.home, "gcp")
        credentials_file = self.config.get("credentials_file") or setup.get("credentials_file")
        creds, project, _, _ = clouds.gcp_credentials(credentials_file)
        self._project = self.config.get("google_project") or setup.get("project") or project
        if not self._project:
            raise PluginError(f"provider '{self.name}': no Google Cloud project: set "
                              "google_project or run 'shoal setup gcp --project P'",
                              {"entity": "provider", "name": self.name,
                               "field": "google_project"})
        endpoint = self.config.get("api_endpoint") or setup.get("api_endpoint")
        options = {"api_endpoint": endpoint} if endpoint else None
        kinds = {"instances": compute_v1.InstancesClient,
                 "firewalls": compute_v1.FirewallsClient,
                 "zone_operations": compute_v1.ZoneOperationsClient,
                 "global_operations": compute_v1.GlobalOperationsClient}
        return {kind: cls(credentials=creds, client_options=options, transport="rest")
                for kind, cls in kinds.items()}

    def _call(self, kind, method, **params):
        """One Compute call; its errors become ProviderError with the API's reason."""
        from google.api_core import exceptions as gexc

        client = self._client(kind)
        self.calls[f"{kind}.{method}"] += 1
        try:
            return getattr(client, method)(**params, timeout=60)
        except gexc.GoogleAPICallError as exc:
            raise ProviderError(f"gcp {kind}.{method}: {exc.code}: {exc.message}",
                                {"provider": self.name, "operation": f"{kind}.{method}",
                                 "status": int(exc.code or 0)}) from None

    @staticmethod
    def _status(error):
        return error.details.get("status", 0)

    def _wait_operation(self, operation, what):
        """Poll a zone or global operation until DONE (no timeout); its error is raised."""
        def done():
            nonlocal operation
            if _is_done(operation):
                return True
            if operation.zone:
                operation = self._call("zone_operations", "get", project=self.project,
                                       zone=operation.zone.rsplit("/", 1)[-1],
                                       operation=operation.name)
            else:
                operation = self._call("global_operations", "get", project=self.project,
                                       operation=operation.name)
            return _is_done(operation)

        wait_until(done, what, LOG)
        message = _operation_error(operation)
        if message:
            raise ProviderError(f"gcp: {what} failed: {message}", {"provider": self.name})
        return operation

    # -- per-cluster resources -------------------------------------------------------------------

    @staticmethod
    def firewall_name(cluster_id):
        return f"shoal-{label(cluster_id)}-ssh"[:63].rstrip("-")

    @staticmethod
    def network_tag(cluster_id):
        return f"shoal-{label(cluster_id)}"[:63].rstrip("-")

    def _cluster(self, cluster_id):
        """The cluster's key and firewall rule, made on first use (an insert repeated after a
        crash carries the same request id; a rule that exists already is ours)."""
        from google.cloud import compute_v1

        with self._cluster_locks[cluster_id]:
            public = self.keys.ensure(cluster_id)
            if cluster_id in self._firewalls:
                return public
            cidrs = ssh_cidrs(self)
            name = self.firewall_name(cluster_id)
            rule = compute_v1.Firewall(
                name=name, network=self.config.get("network") or "global/networks/default",
                direction="INGRESS", priority=1000, source_ranges=cidrs,
                target_tags=[self.network_tag(cluster_id)],
                allowed=[compute_v1.Allowed(I_p_protocol="tcp", ports=["22"])],
                description=f"Shoal cluster {cluster_id}: SSH from {', '.join(cidrs)}")
            try:
                operation = self._call("firewalls", "insert_unary", request={
                    "project": self.project, "firewall_resource": rule,
                    "request_id": request_id(cluster_id, "firewall")})
                self._wait_operation(operation, f"firewall rule {name}")
            except ProviderError as error:
                if self._status(error) != 409:
                    raise
            self._firewalls.add(cluster_id)
            return public

    # -- nodes -----------------------------------------------------------------------------------

    @staticmethod
    def instance_name(spec):
        digest = hashlib.sha256(spec.token.encode()).hexdigest()[:10]
        base = re.sub(r"[^a-z0-9-]", "-", f"shoal-{spec.node_id}".lower())[:50].rstrip("-")
        return f"{base}-{digest}"

    def _image(self, image):
        if "/" in image:
            return image
        return f"projects/{self.project}/global/images/{image}"

    def create(self, spec):
        from google.cloud import compute_v1

        image, machine_type = image_and_flavor(self, spec)  # refuse before anything is made
        boot_size = gib(self, "boot_disk_size_gb")
        data_size = gib(self, "google_data_disk_size_gb")
        public = self._cluster(spec.cluster_id)
        name = self.instance_name(spec)
        user = (spec.image or {}).get("sshuser") or self.ssh.default_user
        token_label = hashlib.sha256(spec.token.encode()).hexdigest()[:32]
        boot = compute_v1.AttachedDiskInitializeParams(source_image=self._image(image))
        if boot_size is not None:
            boot.disk_size_gb = boot_size
        disks = [compute_v1.AttachedDisk(boot=True, auto_delete=True, initialize_params=boot)]
        if data_size is not None:  # made with the instance, in the same insert
            disks.append(compute_v1.AttachedDisk(
                boot=False, auto_delete=True,
                initialize_params=compute_v1.AttachedDiskInitializeParams(
                    disk_size_gb=data_size)))
        interface = compute_v1.NetworkInterface(
            network=self.config.get("network") or "global/networks/default")
        if self.config.get("subnetwork"):
            interface.subnetwork = self.config["subnetwork"]
        if str(self.config.get("external_ip", True)).lower() not in ("0", "false", "no"):
            interface.access_configs = [compute_v1.AccessConfig(name="External NAT",
                                                                type_="ONE_TO_ONE_NAT")]
        instance = compute_v1.Instance(
            name=name, machine_type=f"zones/{self.zone}/machineTypes/{machine_type}",
            labels={"shoal-cluster": label(spec.cluster_id), "shoal-node": label(spec.node_id),
                    "shoal-token": token_label, "shoal-provider": label(self.name)},
            tags=compute_v1.Tags(items=[self.network_tag(spec.cluster_id)]),
            disks=disks,
            network_interfaces=[interface],
            metadata=compute_v1.Metadata(items=[
                compute_v1.Items(key="ssh-keys", value=f"{user}:{public}"),
                compute_v1.Items(key="shoal-cluster", value=spec.cluster_id),
                compute_v1.Items(key="shoal-node", value=spec.node_id),
                compute_v1.Items(key="hostname-alias", value=spec.hostname)]))
        if self.config.get("service_account"):
            instance.service_accounts = [compute_v1.ServiceAccount(
                email=self.config["service_account"], scopes=clouds.GCP_SCOPES)]
        info = NodeInfo(resource_id=name, state=NodeState.PENDING, hostname=spec.hostname,
                        ssh=self.ssh.facts(spec.cluster_id, spec.node_id, "", spec.image),
                        extra={"cluster_id": spec.cluster_id, "node_id": spec.node_id,
                               "token": spec.token, "zone": self.zone,
                               "created_at": time.time()})
        try:
            operation = self._call("instances", "insert_unary", request={
                "project": self.project, "zone": self.zone, "instance_resource": instance,
                "request_id": request_id(spec.token)})
        except ProviderError as error:
            if self._status(error) != 409:
                raise
            # Made before a crash, and the request id forgotten since: it must be ours.
            existing = self._call("instances", "get", project=self.project, zone=self.zone,
                                  instance=name)
            if existing.labels.get("shoal-token") != token_label:
                raise ProviderError(f"gcp: instance {name} exists and is not node "
                                    f"{spec.node_id}'s", {"provider": self.name}) from None
            return self._info(existing, info)
        info.extra["operation"] = operation.name
        error = _operation_error(operation)
        if error:
            info.state, info.error = NodeState.FAILED, error
        LOG.info("node %s: inserting %s (%s)", spec.node_id, name, operation.name)
        return info

    def _info(self, instance, previous):
        interface = instance.network_interfaces[0] if instance.network_interfaces else None
        private = interface.network_i_p if interface else ""
        public = (interface.access_configs[0].nat_i_p
                  if interface and interface.access_configs else "")
        status = instance.status
        info = NodeInfo(resource_id=instance.name,
                        state=STATE_MAP.get(status, NodeState.PENDING),
                        hostname=previous.hostname,
                        addresses={"bind_v4": private, "access_v4": public or private},
                        ssh={**previous.ssh, **self.ssh.facts(
                            previous.extra.get("cluster_id", ""),
                            previous.extra.get("node_id", ""), public or private,
                            {"sshuser": previous.ssh.get("user")})},
                        extra={**previous.extra, "status": status,
                               "machine_type": instance.machine_type.rsplit("/", 1)[-1]})
        if info.state == NodeState.FAILED:
            info.error = f"instance {status}" + (
                f": {instance.status_message}" if instance.status_message else "")
        return info

    def _list(self, filter_text):
        """Instances of the zone matching ``filter_text``; one call per page."""
        request = {"project": self.project, "zone": self.zone, "filter": filter_text,
                   "max_results": self.page_size}
        token = None
        while True:
            # One page per call (the pager would fetch the next pages itself, uncounted).
            page = self._call("instances", "list", request={**request, "page_token": token}
                              if token else request)
            yield from page.items
            token = page.next_page_token
            if not token:
                return

    def describe(self, infos):
        """One filtered ``instances.list`` per page of each pending cluster's instances; only
        an instance missing from the list costs a look at its insert operation."""
        wanted = {info.resource_id: info for info in infos}
        seen = {}
        for cluster_id in sorted({info.extra.get("cluster_id", "") for info in infos}):
            for instance in self._list(f'labels.shoal-cluster = "{label(cluster_id)}"'):
                previous = wanted.get(instance.name)
                if previous is not None:
                    seen[instance.name] = self._info(instance, previous)
        result = dict(seen)
        for name, info in wanted.items():
            if name in seen:
                continue
            missing = self._missing(info)
            if missing is not None:
                result[name] = missing
        self.ssh.pin(list(seen.values()))
        return result

    def _missing(self, info):
        """A node not in the list: still being inserted (None), failed, or gone."""
        operation_name = info.extra.get("operation")
        if not operation_name:
            return NodeInfo(resource_id=info.resource_id, state=NodeState.GONE,
                            extra=dict(info.extra))
        operation = self._call("zone_operations", "get", project=self.project,
                               zone=info.extra.get("zone", self.zone), operation=operation_name)
        if not _is_done(operation):
            return None
        error = _operation_error(operation)
        state = NodeState.FAILED if error else NodeState.GONE
        return NodeInfo(resource_id=info.resource_id, state=state, extra=dict(info.extra),
                        error=error or "")

    def delete(self, info):
        """Delete the instance (its disks go with it: all are auto-delete); CLEANUP waits for it
        to be gone."""
        try:
            self._call("instances", "delete_unary", request={
                "project": self.project, "zone": info.extra.get("zone", self.zone),
                "instance": info.resource_id,
                "request_id": request_id(info.extra.get("token") or info.resource_id, "delete")})
        except ProviderError as error:
            if self._status(error) != 404:
                raise
        LOG.info("deleting %s", info.resource_id)

    def find(self, cluster_id):
        return [self._info(instance, NodeInfo(resource_id=instance.name, extra={
                    "cluster_id": cluster_id, "zone": self.zone,
                    "node_id": instance.labels.get("shoal-node", "")}))
                for instance in self._list(f'labels.shoal-cluster = "{label(cluster_id)}"')]

    def inventory(self, cluster_ids):
        """Every instance of this provider in the zone, by its provider label: one filtered
        ``instances.list`` per page (500) whatever the number of clusters, grouped by their
        cluster label."""
        by_label = {label(cluster_id): cluster_id for cluster_id in cluster_ids}
        result = {cluster_id: [] for cluster_id in cluster_ids}
        for instance in self._list(f'labels.shoal-provider = "{label(self.name)}"'):
            cluster_id = by_label.get(instance.labels.get("shoal-cluster", ""))
            if cluster_id is not None:
                result[cluster_id].append(self._info(instance, NodeInfo(
                    resource_id=instance.name, extra={
                        "cluster_id": cluster_id, "zone": self.zone,
                        "node_id": instance.labels.get("shoal-node", "")})))
        return result

    def cleanup_cluster(self, cluster_id):
        """Wait until the cluster has no instance left, then delete its firewall rule."""

        def gone():
            left = list(self._list(f'labels.shoal-cluster = "{label(cluster_id)}"'))
            for instance in left:
                if instance.status != "STOPPING":
                    self.delete(NodeInfo(resource_id=instance.name, extra={"zone": self.zone}))
            return not left

        wait_until(gone, f"the instances of cluster {cluster_id} to be deleted", LOG)
        name = self.firewall_name(cluster_id)
        try:
            operation = self._call("firewalls", "delete_unary", request={
                "project": self.project, "firewall": name,
                "request_id": request_id(cluster_id, "firewall-delete")})
            self._wait_operation(operation, f"deleting firewall rule {name}")
        except ProviderError as error:
            if self._status(error) != 404:
                raise
        self._firewalls.discard(cluster_id)
        self.keys.remove(cluster_id)

    def transport(self, info):
        return self.ssh.transport(info)


def _is_done(operation):
    status = operation.status
    return (status.name if hasattr(status, "name") else str(status)) == "DONE"


def _operation_error(operation):
    errors = operation.error.errors if operation.error else []
    return "; ".join(f"{e.code}: {e.message}" for e in errors)
