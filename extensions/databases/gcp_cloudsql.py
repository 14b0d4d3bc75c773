"""The ``gcp-cloudsql`` database: a Cloud SQL instance beside a cluster on the ``gcp`` provider.

Spoken to over the Cloud SQL Admin REST API (v1) with the provider's credentials and project.
The instance has no public address: only a private one on the cluster's own VPC network (the
provider's ``network``), with no authorized networks and SSL required, so nothing outside the
cluster's network can reach it. Its name derives from the cluster and the resource name and it
carries the token as a label, so an insert repeated after a crash finds the first instance
(409) instead of making a second. Waiting is one ``instances.list`` page per polling round, filtered on Shoal's label.
"""

import logging
import re
import threading

from cluster_server import clouds
from cluster_server.errors import PluginError, ProviderError
from cluster_server.plugins import Database, DatabaseInfo, Field, NodeState
from extensions.providers.gcp import label

LOG = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://sqladmin.googleapis.com"
ENGINES = {"postgres": ("POSTGRES_15", 5432, "postgres"), "mysql": ("MYSQL_8_0", 3306, "root")}
STATE_MAP = {"RUNNABLE": NodeState.RUNNING, "PENDING_CREATE": NodeState.PENDING,
             "MAINTENANCE": NodeState.PENDING, "FAILED": NodeState.FAILED,
             "SUSPENDED": NodeState.FAILED, "PENDING_DELETE": NodeState.FAILED,
             "UNKNOWN_STATE": NodeState.PENDING}
PAGE = 500
# Every instance Shoal makes carries this label; listing filters on it, so a project's other
# instances are never paged through.
MANAGED_LABEL = ("shoal-managed", "true")
LIST_FILTER = f"settings.userLabels.{MANAGED_LABEL[0]}:{MANAGED_LABEL[1]}"


class CloudSQLDatabase(Database):
    providertypes = ("gcp",)
    fields = {
        "engine": Field(required=True, help="database engine: postgres or mysql",
                        pattern=re.compile("|".join(ENGINES)),
                        pattern_help="one of " + ", ".join(ENGINES)),
        "version": Field(help="databaseVersion (default: POSTGRES_15 or MYSQL_8_0)",
                         pattern=re.compile(r"[A-Z0-9_]{3,40}"),
                         pattern_help="a Cloud SQL databaseVersion like POSTGRES_15"),
        "class": Field(default="db-f1-micro", help="machine tier",
                       pattern=re.compile(r"db-[a-z0-9-]{1,40}"),
                       pattern_help="a tier like db-f1-micro"),
        "storage_gb": Field(default=10, help="data disk size in GB",
                            pattern=re.compile(r"[1-9][0-9]{0,4}"),
                            pattern_help="a whole number of GB"),
        "region": Field(help="region (default: the provider zone's)",
                        pattern=re.compile(r"[a-z]+-[a-z]+[0-9]"),
                        pattern_help="a region like us-central1"),
    }

    def __init__(self, name, provider, home):
        super().__init__(name, provider, home)
        self.config = provider.get("provisioner") or {}
        self.calls = {}
        self._session = None
        self._project = None
        self._lock = threading.Lock()
        # From the provider entry, not the resource's: describe, delete and find after a
        # restart must reach the same API without the template at hand.
        self.endpoint = (self.config.get("sqladmin_endpoint") or clouds.recorded(
            home, "gcp").get("sqladmin_endpoint") or DEFAULT_ENDPOINT).rstrip("/")

    # -- the REST API --------------------------------------------------------------------------

    def _open(self):
        with self._lock:
            if self._session is None:
                from google.auth.transport.requests import AuthorizedSession

                setup = clouds.recorded(self.home, "gcp")
                creds, project, _, _ = clouds.gcp_credentials(
                    self.config.get("credentials_file") or setup.get("credentials_file"))
                self._project = self.config.get("google_project") or setup.get("project") or \
                    project
                if not self._project:
                    raise PluginError(f"provider '{self.provider['name']}': no Google Cloud "
                                      "project: set google_project or run 'shoal setup gcp'",
                                      {"entity": "provider", "field": "google_project"})
                self._session = AuthorizedSession(creds)
            return self._session

    def _call(self, method, path, what, **kwargs):
        """One call; an error becomes ProviderError with the API's status and message (never
        the request's body, which may hold the password)."""
        import google.auth.exceptions
        import requests

        session = self._open()
        self.calls[what] = self.calls.get(what, 0) + 1
        url = f"{self.endpoint}/v1/projects/{self._project}/{path}"
        try:
            response = session.request(method, url, timeout=60, **kwargs)
        except requests.RequestException as exc:
            raise ProviderError(f"gcp sql {what}: {type(exc).__name__}",
                                {"operation": what}) from None
        except google.auth.exceptions.GoogleAuthError as exc:
            # The token could not be had (a refused or unreachable token endpoint).
            raise ProviderError(f"gcp sql {what}: credentials: {type(exc).__name__}",
                                {"operation": what}) from None
        if response.status_code >= 400:
            try:
                error = response.json().get("error", {})
            except ValueError:
                error = {}
            raise ProviderError(f"gcp sql {what}: {response.status_code}: "
                                f"{error.get('message', response.reason)}",
                                {"operation": what, "status": response.status_code})
        return response.json() if response.content else {}

    # -- the plugin ----------------------------------------------------------------------------

    @staticmethod
    def instance_name(cluster_id, name):
        return f"shoal-{label(cluster_id)}-{name}"[:84].rstrip("-")

    def _network(self):
        network = self.config.get("network") or "global/networks/default"
        return f"projects/{self._project}/global/networks/{network.rsplit('/', 1)[-1]}"

    def _instances(self):
        token = None
        while True:
            params = {"maxResults": PAGE, "filter": LIST_FILTER}
            if token:
                params["pageToken"] = token
            page = self._call("GET", "instances", "instances.list", params=params)
            yield from page.get("items", [])
            token = page.get("nextPageToken")
            if not token:
                return

    def _info(self, instance):
        labels = (instance.get("settings") or {}).get("userLabels") or {}
        state = instance.get("state", "PENDING_CREATE")
        version = instance.get("databaseVersion", "")
        engine = "mysql" if version.startswith("MYSQL") else "postgres"
        private = [a["ipAddress"] for a in instance.get("ipAddresses", [])
                   if a.get("type") == "PRIVATE"]
        info = DatabaseInfo(
            resource_id=instance["name"], state=STATE_MAP.get(state, NodeState.PENDING),
            endpoint=private[0] if private else "", port=ENGINES[engine][1],
            user=ENGINES[engine][2], database=ENGINES[engine][2] if engine == "postgres" else "",
            extra={"state": state, "version": version,
                   "connection_name": instance.get("connectionName", ""),
                   "cluster_id": labels.get("shoal-cluster", ""),
                   "name": labels.get("shoal-resource", ""), "token": labels.get("shoal-token", "")})
        if info.state == NodeState.FAILED:
            info.error = f"Cloud SQL instance {state}"
        if info.state == NodeState.RUNNING and not info.endpoint:
            info.state = NodeState.PENDING  # runnable but no private address yet
        return info

    def _get(self, name):
        try:
            return self._call("GET", f"instances/{name}", "instances.get")
        except ProviderError as error:
            if error.details.get("status") == 404:
                return None
            raise

    def create(self, spec):
        self._open()
        name = self.instance_name(spec.cluster_id, spec.name)
        found = self._get(name)
        if found:
            LOG.info("database %s: found %s from an earlier attempt", spec.name, name)
            return self._info(found)
        engine = spec.fields["engine"]
        version, _, _ = ENGINES[engine]
        zone = self.config.get("zone_name") or "us-central1-a"
        body = {
            "name": name, "databaseVersion": spec.fields.get("version") or version,
            "region": spec.fields.get("region") or zone.rsplit("-", 1)[0],
            "rootPassword": spec.password,
            "settings": {
                "tier": spec.fields["class"], "dataDiskSizeGb": str(spec.fields["storage_gb"]),
                "userLabels": {MANAGED_LABEL[0]: MANAGED_LABEL[1],
                               "shoal-cluster": label(spec.cluster_id),
                               "shoal-resource": label(spec.name),
                               "shoal-token": label(spec.token)},
                # The cluster's network only: no public address, no authorized networks.
                "ipConfiguration": {"ipv4Enabled": False, "privateNetwork": self._network(),
                                    "authorizedNetworks": [], "requireSsl": True}}}
        try:
            self._call("POST", "instances", "instances.insert", json=body)
        except ProviderError as error:
            if error.details.get("status") != 409:
                raise
        LOG.info("database %s: creating %s", spec.name, name)
        found = self._get(name)
        if found is None:
            return DatabaseInfo(resource_id=name, extra={"cluster_id": spec.cluster_id,
                                                         "name": spec.name})
        return self._info(found)

    def describe(self, infos):
        wanted = {info.resource_id for info in infos}
        seen = {i["name"]: self._info(i) for i in self._instances() if i["name"] in wanted}
        return {name: seen.get(name) or DatabaseInfo(resource_id=name, state=NodeState.GONE,
                                                     error="no such Cloud SQL instance")
                for name in wanted}

    def delete(self, info):
        try:
            self._call("DELETE", f"instances/{info.resource_id}", "instances.delete")
        except ProviderError as error:
            if error.details.get("status") != 404:
                raise
        LOG.info("deleting database %s", info.resource_id)

    def find(self, cluster_id):
        prefix = f"shoal-{label(cluster_id)}-"
        return [self._info(i) for i in self._instances() if i["name"].startswith(prefix)]
