"""Expand Coopr macros such as ``%host.service.web%`` in config and action fields, for one node.

Pure: the caller passes the cluster as a plain context; values come back with each macro replaced
by plain text. Nothing here builds a shell string: quoting is the automator's job.

Grammar (Coopr's), inside ``%...%``::

    expression := join(inner,'sep') | inner
    inner      := map(basic,'format') | basic          ('$' in format is each value)
    basic      := host.self | ip.self | ip.bind_v4.self | ip.access_v4.self
                | host.service.X | ip.service.X | ip.bind_v4.service.X | ip.access_v4.service.X
                  (each optionally indexed, 0-based: host.service.X[0])
                | num.service.X | instance.self.service.X
                | cluster.id | cluster.name | cluster.owner
                | resource.R.endpoint | resource.R.port | resource.R.user
                | resource.R.password | resource.R.database

``ip`` alone is the bind address. A service's nodes are taken in natural order of node id (n2
before n10); several values without ``join`` are joined by ",".
"""

import dataclasses
import re

from cluster_server.errors import ValidationError

# What may start a macro. Text between two '%' that starts otherwise ("100% of 5%") is not one.
_HEADS = ("join(", "map(", "host.", "ip.", "num.", "instance.", "cluster.", "resource.")
_BASIC = re.compile(r"([A-Za-z0-9_.-]+)(?:\[(\d+)\])?")
_IP_TYPES = ("bind_v4", "access_v4")
_CLUSTER_FIELDS = ("id", "name", "owner")
RESOURCE_FIELDS = ("endpoint", "port", "user", "password", "database")


def expand(value, ctx, missing=None):
    """Return ``value`` (a str, or dicts/lists/tuples of them) with every macro expanded.

    ``ctx`` is {"cluster": {"id", "name", "owner"}, "self": node id, "nodes": [{"id", "hostname",
    "services", "addresses": {"bind_v4", "access_v4"}}], "resources": {name: {"endpoint", "port",
    "user", "password", "database"}}}. A resource the cluster does not have (or not yet) expands
    to "" and its name goes to ``missing``, as a service does. A macro naming a service that has no
    node on the cluster expands to "" (catalogs name optional services), and the service's name is
    appended to ``missing`` when a list is given, so the caller can log it; so do an index past
    the service's last node and ``instance.self.service.X`` on a node without X. Text that is not a
    macro is left as is; a malformed macro (``%host.service.%``) raises ValidationError.
    """
    context = ctx if isinstance(ctx, _Context) else _Context(ctx)
    return _walk(value, lambda text: _scan(text, lambda macro: context.evaluate(macro, missing)))


def prepare(ctx):
    """``ctx`` made ready for many expansions: its nodes sorted and indexed once. A cluster of
    10,000 nodes runs 80,000 actions, each expanding its fields and the cluster's config; each
    sorting and scanning every node again made an operation quadratic. ``.bound({"cluster",
    "self"})`` gives the same nodes as seen from one node."""
    return _Context(ctx)


def validate(value):
    """Raise ValidationError for any malformed macro in ``value``, without a cluster.

    For checking a catalog entry when it is imported rather than when a task runs.
    """
    _walk(value, lambda text: _scan(text, lambda macro: ""))


def _walk(value, expand_text):
    """Apply ``expand_text`` to every string in ``value``, keeping its shape (keys untouched)."""
    if isinstance(value, str):
        return expand_text(value) if "%" in value else value
    if isinstance(value, dict):
        return {key: _walk(item, expand_text) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_walk(item, expand_text) for item in value)
    return value


def natural_key(text):
    """Sort key that puts n2 before n10."""
    return tuple(int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", text)))


def _scan(text, evaluate):
    """Replace each ``%macro%`` in ``text`` by ``evaluate(parsed macro)``."""
    out = []
    pos = 0
    while True:
        start = text.find("%", pos)
        if start < 0:
            out.append(text[pos:])
            return "".join(out)
        if not text.startswith(_HEADS, start + 1):
            out.append(text[pos:start + 1])
            pos = start + 1
            continue
        macro, end = _Parser(text, start + 1).parse()
        out.append(text[pos:start])
        out.append(evaluate(macro))
        pos = end


@dataclasses.dataclass
class _Macro:
    """A parsed macro: what to look up, then an optional map format and join separator."""

    kind: str                   # self | service | num | instance | cluster
    field: str | None = None    # hostname | bind_v4 | access_v4 | a cluster field
    service: str | None = None  # a service, or for a resource macro the resource's name
    index: int | None = None
    fmt: str | None = None
    sep: str = ","


class _Parser:
    """Recursive descent over the grammar in the module docstring, starting after a '%'."""

    def __init__(self, text, pos):
        self.text = text
        self.start = pos
        self.pos = pos

    def fail(self, reason):
        end = self.text.find("%", self.start)
        shown = self.text[self.start:end if end >= 0 else len(self.text)]
        raise ValidationError(f"Malformed macro '%{shown}%': {reason}",
                              {"macro": shown, "reason": reason})

    def parse(self):
        """Return the macro and the position just after its closing '%'."""
        joined = self.take("join(")
        fmt, (name, index) = self.inner()
        macro = self.interpret(name, index)
        macro.fmt = fmt
        if joined:
            self.expect(",")
            macro.sep = self.literal()
            self.expect(")")
        self.expect("%")
        return macro, self.pos

    def inner(self):
        if self.take("map("):
            basic = self.basic()
            self.expect(",")
            fmt = self.literal()
            self.expect(")")
            return fmt, basic
        return None, self.basic()

    def basic(self):
        match = _BASIC.match(self.text, self.pos)
        if not match:
            self.fail("a macro name is expected")
        self.pos = match.end()
        return match.group(1), match.group(2)

    def literal(self):
        quote = self.text[self.pos:self.pos + 1]
        if quote not in ("'", '"'):
            self.fail("a quoted string is expected")
        end = self.text.find(quote, self.pos + 1)
        if end < 0:
            self.fail("the quoted string is not closed")
        value = self.text[self.pos + 1:end]
        self.pos = end + 1
        return value

    def take(self, token):
        if self.text.startswith(token, self.pos):
            self.pos += len(token)
            return True
        return False

    def expect(self, token):
        if not self.take(token):
            self.fail(f"'{token}' is expected")

    def interpret(self, name, index):
        """Turn a dotted name like ``ip.bind_v4.service.web`` into a _Macro."""
        parts = name.split(".")
        if "" in parts:
            self.fail(f"'{name}' has an empty part")
        head, rest = parts[0], parts[1:]
        macro = None
        if head in ("host", "ip"):
            field = "hostname" if head == "host" else "bind_v4"
            if head == "ip" and rest and rest[0] in _IP_TYPES:
                field, rest = rest[0], rest[1:]
            if rest == ["self"]:
                macro = _Macro("self", field)
            elif len(rest) > 1 and rest[0] == "service":
                # Only a service's list of nodes can be indexed.
                macro = _Macro("service", field, ".".join(rest[1:]),
                               None if index is None else int(index))
                index = None
        elif head == "num" and len(rest) > 1 and rest[0] == "service":
            macro = _Macro("num", service=".".join(rest[1:]))
        elif head == "instance" and len(rest) > 2 and rest[:2] == ["self", "service"]:
            macro = _Macro("instance", service=".".join(rest[2:]))
        elif head == "cluster" and len(rest) == 1 and rest[0] in _CLUSTER_FIELDS:
            macro = _Macro("cluster", rest[0])
        elif head == "resource" and len(rest) == 2 and rest[1] in RESOURCE_FIELDS:
            macro = _Macro("resource", rest[1], rest[0])
        if macro is None:
            self.fail(f"unknown macro '{name}'")
        if index is not None:
            self.fail(f"'{name}' cannot be indexed")
        return macro


class _Context:
    """The cluster as the macros see it, with each service's nodes in natural id order."""

    def __init__(self, ctx, shared=None):
        self.cluster = ctx.get("cluster") or {}
        self.resources = ctx.get("resources") or {}
        self.self_id = ctx.get("self")
        if shared is None:
            nodes = sorted(ctx.get("nodes") or (), key=lambda node: natural_key(node["id"]))
            shared = (nodes, {}, {node["id"]: node for node in nodes})
        # The nodes, each service's nodes (filled as macros ask), the nodes by id: read-only
        # once made, so contexts bound to different nodes share them across threads.
        self.shared = shared
        self.nodes, self.by_service, self.by_id = shared

    def bound(self, ctx):
        """This context's nodes, seen from ``ctx["self"]`` with ``ctx["cluster"]``."""
        return _Context(ctx, self.shared)

    def nodes_with(self, service):
        found = self.by_service.get(service)
        if found is None:
            found = self.by_service[service] = [
                node for node in self.nodes if service in (node.get("services") or ())]
        return found

    def self_node(self):
        node = self.by_id.get(self.self_id)
        if node is not None:
            return node
        raise ValidationError(f"Node '{self.self_id}' is not in the cluster",
                              {"node": self.self_id})

    @staticmethod
    def field(node, field):
        if field == "hostname":
            return node.get("hostname") or ""
        return (node.get("addresses") or {}).get(field) or ""

    def evaluate(self, macro, missing):
        values = self.values(macro)
        if values is None:
            if missing is not None and macro.service not in missing:
                missing.append(macro.service)
            return ""
        if macro.fmt is not None:
            values = [macro.fmt.replace("$", value) for value in values]
        return macro.sep.join(values)

    def values(self, macro):
        """The list of values a macro stands for, or None when its service has no node."""
        if macro.kind == "cluster":
            return [str(self.cluster.get(macro.field, ""))]
        if macro.kind == "resource":
            value = (self.resources.get(macro.service) or {}).get(macro.field)
            return None if value in (None, "") else [str(value)]
        if macro.kind == "self":
            return [self.field(self.self_node(), macro.field)]
        nodes = self.nodes_with(macro.service)
        if macro.kind == "num":
            return [str(len(nodes))]
        if macro.kind == "instance":
            ids = [node["id"] for node in nodes]
            return [str(ids.index(self.self_id) + 1)] if self.self_id in ids else None
        if macro.index is not None:
            nodes = nodes[macro.index:macro.index + 1]
        return [self.field(node, macro.field) for node in nodes] or None
