"""Plugin interfaces (providers, automators, transports) and the one place that loads plugins.

The core owns the stevedore namespaces ``shoal.providers``, ``shoal.automators`` and
``shoal.databases`` (managed cloud databases a template asks for beside its nodes). Plugins
return the plain value objects defined here and know nothing of the store.
"""

import abc
import dataclasses
import enum
import functools
import re

from cluster_server.errors import PluginError, ValidationError

PROVIDER_NAMESPACE = "shoal.providers"
AUTOMATOR_NAMESPACE = "shoal.automators"
DATABASE_NAMESPACE = "shoal.databases"
_KINDS = {PROVIDER_NAMESPACE: "provider", AUTOMATOR_NAMESPACE: "automator",
          DATABASE_NAMESPACE: "database type"}

# A login name as SSH configs, GCE's ssh-keys metadata and sshd take it: no whitespace, quotes
# or line breaks, which would let a catalog entry add lines to a generated file.
LOGIN_NAME = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.@-]{0,63}")
LOGIN_HELP = "a login name (letters, digits, '_', '.', '@', '-'; at most 64)"
HOST_NAME = re.compile(r"[A-Za-z0-9_.:%-]{1,253}")  # a name, IPv4 or IPv6 address; no spaces


@dataclasses.dataclass(frozen=True)
class Field:
    """A field a plugin reads from its catalog entry (provider ``provisioner`` or action fields)."""

    required: bool = False
    sensitive: bool = False
    default: object = None
    help: str = ""
    pattern: re.Pattern = None  # a value given must match it whole
    pattern_help: str = ""


class NodeState(enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    FAILED = "failed"
    GONE = "gone"


@dataclasses.dataclass
class NodeSpec:
    """What a provider is asked to make: one node of a cluster."""

    cluster_id: str
    node_id: str
    hostname: str
    hardwaretype: str
    imagetype: str
    flavor: dict  # the hardware type's providermap entry for this provider
    image: dict  # the image type's providermap entry for this provider
    token: str  # idempotency token: the same spec always carries the same token
    tenant: str = "default"


class _Stated:
    """What a provider reports, as JSON the store keeps (the state as its value) and back."""

    def to_dict(self):
        data = dataclasses.asdict(self)
        data["state"] = self.state.value
        return data

    @classmethod
    def from_dict(cls, data):
        data = dict(data)
        data["state"] = NodeState(data.get("state", "pending"))
        return cls(**data)


@dataclasses.dataclass
class NodeInfo(_Stated):
    """What a provider knows of a node it made. ``resource_id`` is the provider's own id."""

    resource_id: str
    state: NodeState = NodeState.PENDING
    hostname: str = ""
    addresses: dict = dataclasses.field(default_factory=dict)  # bind_v4, access_v4
    ssh: dict = dataclasses.field(default_factory=dict)  # host, port, user, host_key
    extra: dict = dataclasses.field(default_factory=dict)  # provider-only facts
    error: str = ""  # the provider's own reason when state is FAILED


@dataclasses.dataclass
class ActionResult:
    exit_code: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self):
        return self.exit_code == 0


class Transport(abc.ABC):
    """How an automator reaches a node: run a command given as argv, copy a file in."""

    @abc.abstractmethod
    def run(self, argv, env=None, stdin=None, cwd=None):
        """Run ``argv`` (a list, never a shell string) on the node; return an ActionResult."""

    @abc.abstractmethod
    def put(self, path, data, mode=0o644):
        """Write ``data`` (bytes) to ``path`` on the node."""

    def close(self):
        """Release connections held for this node."""


class Provider(abc.ABC):
    """Makes and removes nodes. One instance per provider catalog entry, shared by threads."""

    #: name -> Field; validated against the provider entry's ``provisioner`` fields.
    fields = {}

    def __init__(self, name, fields, home):
        self.name = name
        self.config = fields
        self.home = home

    @abc.abstractmethod
    def create(self, spec):
        """Start making the node for ``spec``; return its NodeInfo (often PENDING).

        Must be idempotent on ``spec.token``: a second call after a crash finds the first node.
        """

    @abc.abstractmethod
    def describe(self, infos):
        """Current state of many nodes in one call: ``{resource_id: NodeInfo}``.

        Used by the poller; a node the provider no longer knows comes back GONE.
        """

    @abc.abstractmethod
    def delete(self, info):
        """Remove the node. Deleting a node that is already gone is not an error."""

    @abc.abstractmethod
    def find(self, cluster_id):
        """Every node this provider holds for ``cluster_id`` (orphan checks, crash recovery)."""

    def inventory(self, cluster_ids):
        """Every resource this provider holds labelled with any of ``cluster_ids``, running or
        stopped: ``{cluster_id: [NodeInfo]}`` (drift checks). Batched: one request per page of
        resources for all the clusters, never one per node or per cluster. Each NodeInfo's
        ``extra`` names its node (``node`` or ``node_id``) when the label says it.

        This default asks ``find`` once per cluster; every shipped provider does better."""
        return {cluster_id: self.find(cluster_id) for cluster_id in cluster_ids}

    @abc.abstractmethod
    def transport(self, info):
        """A Transport to the node described by ``info``."""

    def cleanup_cluster(self, cluster_id):
        """Remove per-cluster resources (networks, security groups) once no node is left."""


@dataclasses.dataclass
class DatabaseSpec:
    """What a database plugin is asked to make: one entry of a template's ``resources``."""

    cluster_id: str
    name: str  # the entry's name in the template (``db`` of %resource.db.endpoint%)
    fields: dict  # the entry's fields, checked against the plugin's ``fields``
    user: str
    password: str  # generated by Shoal, sealed at rest; never logged, never returned
    token: str  # idempotency token: the same entry of the same cluster, the same token
    tenant: str = "default"


@dataclasses.dataclass
class DatabaseInfo(_Stated):
    """What a database plugin knows of a database it made. ``state`` is a NodeState so that
    the poller waits on databases as it does on nodes. Never holds the password."""

    resource_id: str
    state: NodeState = NodeState.PENDING
    endpoint: str = ""
    port: int = 0
    user: str = ""
    database: str = ""
    extra: dict = dataclasses.field(default_factory=dict)  # plugin-only facts
    error: str = ""


class Database(abc.ABC):
    """Makes and removes managed databases (RDS, Cloud SQL) for a cluster, reachable only from
    the cluster's own machines. One instance per (cluster provider, database type), shared by
    threads. Same rules as a Provider: creates idempotent on the token, one batched
    ``describe`` per polling round, deletes that tolerate what is already gone."""

    #: name -> Field; the template's resource entry (besides ``type``).
    fields = {}
    #: the cluster provider types this database type can be reached from (its network).
    providertypes = ()

    def __init__(self, name, provider, home):
        """``provider``: the cluster's provider entry (name, providertype, provisioner fields
        already checked), whose credentials, region and network the database shares."""
        self.name = name
        self.provider = provider
        self.home = home

    @abc.abstractmethod
    def create(self, spec):
        """Start making the database (and its network rule); return its DatabaseInfo.

        Must be idempotent on ``spec.token``: a call after a crash finds the first database.
        """

    @abc.abstractmethod
    def describe(self, infos):
        """Current state of many databases in one call: ``{resource_id: DatabaseInfo}``; one
        the cloud no longer knows comes back GONE. Also what drift checks call."""

    @abc.abstractmethod
    def delete(self, info):
        """Start removing the database; removing one already gone is not an error."""

    @abc.abstractmethod
    def find(self, cluster_id):
        """Every database this plugin holds for ``cluster_id`` (found by tag/label/name)."""

    def release(self, info):
        """Once the database is gone: remove what gave access to it (security group, rule)."""


class Automator(abc.ABC):
    """Runs one service action on one node through a transport."""

    #: name -> Field; the action's ``fields`` in the service definition.
    fields = {}
    #: True when ``run`` reads every node of the cluster from ``context["nodes"]`` (its tool
    #: is handed the whole cluster, as Ansible's inventory is). Others get the node and the
    #: cluster's ids and config only when the call travels (to a Celery worker): every node in
    #: every message makes a create of N nodes send N x N nodes.
    needs_nodes = False

    def __init__(self, home, resources=None):
        self.home = home
        self.resources = resources

    @classmethod
    def check_fields(cls, service, action, fields):
        """Refuse an action's fields that can never work, when an operation is created and
        before any node is made (fields may still hold macros). By default: the declared
        fields' rules."""
        validate_fields("service", service, cls.fields, fields, where=f"action {action}")

    @abc.abstractmethod
    def run(self, action, service, fields, context, transport):
        """Run ``action`` of ``service``; ``fields`` are already macro-expanded.

        ``context`` holds the node and cluster facts (ids, config, addresses). Returns an
        ActionResult; a non-zero exit code is a failed task, not an exception.
        """


def validate_fields(kind, name, declared, given, allow_unknown=True, where=""):
    """Check ``given`` fields against the plugin's declared ones; return them with defaults."""
    label = f"{kind} '{name}'" + (f" {where}" if where else "")
    result = {}
    for key, field in declared.items():
        value = given.get(key)
        if value in (None, "") and field.default is not None:
            value = field.default
        if field.required and value in (None, ""):
            raise ValidationError(
                f"{label}: field '{key}' is required",
                {"entity": kind, "name": name, "field": key, "reason": "required"},
            )
        if value not in (None, "") and field.pattern and not field.pattern.fullmatch(str(value)):
            raise ValidationError(
                f"{label}: field '{key}' must be {field.pattern_help}",
                {"entity": kind, "name": name, "field": key, "reason": "pattern"},
            )
        if value is not None:
            result[key] = value
    for key, value in given.items():
        if key not in declared and not allow_unknown:
            raise ValidationError(
                f"{label}: unknown field '{key}'",
                {"entity": kind, "name": name, "field": key, "reason": "unknown"},
            )
        result.setdefault(key, value)
    return result


@functools.lru_cache(maxsize=None)
def _entry_points(namespace):
    import importlib.metadata

    return {ep.name: ep for ep in importlib.metadata.entry_points(group=namespace)}


def installed(namespace):
    """Names of the plugins installed in ``namespace``, sorted."""
    return sorted(_entry_points(namespace))


def plugin_class(namespace, name):
    """The plugin class registered as ``name``; a clear PluginError listing what is installed."""
    from stevedore import driver  # only the server loads plugins; keep the CLI's start fast

    kind = _KINDS.get(namespace, "plugin")
    if name not in _entry_points(namespace):
        _entry_points.cache_clear()  # a package may have been installed since the last look
    if name not in _entry_points(namespace):
        have = ", ".join(installed(namespace)) or "none"
        raise PluginError(
            f"{kind} {name} is not installed (installed: {have})",
            {"kind": kind, "name": name, "installed": installed(namespace)},
        )
    try:
        return driver.DriverManager(namespace, name, invoke_on_load=False).driver
    except Exception as exc:  # a broken third-party package must not take the server down
        raise PluginError(f"{kind} {name} failed to load: {exc}", {"kind": kind, "name": name})


def reload_plugins():
    """Forget cached entry points (a package was installed while the server runs)."""
    _entry_points.cache_clear()
