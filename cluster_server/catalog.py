"""The catalog: Coopr-compatible schemas, validation, partial templates and dangling references.

Everything here is a pure function of catalog dicts; the store and the API call it before any
write, so bad input never leaves a half-written catalog.
"""

import json
import pathlib
import re

from cluster_server.contract.schema import (BOOL, NUMLIKE, SCALAR, STR, Amount, Anything, Bad,
                                            Choice, Either, ListOf, MapOf, Matching, Obj, Range,
                                            Scalar, Seconds, Tagged)
from cluster_server.errors import NotFound, Unprocessable, ValidationError
from cluster_server.plugins import LOGIN_HELP, LOGIN_NAME

KINDS = ("provider", "hardwaretype", "imagetype", "service", "template", "partial")

# Directory names of a Coopr catalog (and of our export) per kind.
DIRS = {
    "provider": "providers",
    "hardwaretype": "hardwaretypes",
    "imagetype": "imagetypes",
    "service": "services",
    "template": "clustertemplates",
    "partial": "partialtemplates",
}

SERVICE_ACTIONS = ("bootstrap", "install", "configure", "initialize", "start", "stop", "remove")

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # matched whole
NAME_RULE = "letters, digits, '.', '_' or '-' (at most 128)"

# Values stored but never returned in full: plugin-declared sensitive fields, and these by name.
SENSITIVE_RE = re.compile(r"(password|secret|token|api_key|private_key|credential)", re.I)
MASK = "********"


# How a service says it is well (Coopr's style: next to its actions), checked by the server on
# every ACTIVE cluster (cluster_server/health). Each type names what it reaches; all share the
# schedule: every ``interval`` seconds, ``timeout`` for one check, ``retries`` failures in a row
# before the instance counts as failing.
_SCHEDULE = {"interval": Seconds(0, 86400).described("seconds between checks (default 10)"),
             "timeout": Seconds(0, 600).described("seconds one check may take (default 5)"),
             "retries": Range(1, 100).described("failures in a row before failing (default 3)")}
HEALTH = Tagged("type", {
    "command": Obj({**_SCHEDULE, "command": ListOf(STR, min_items=1).described(
        "argv run on the node through the service's transport; exit 0 is healthy")},
        required=("command",)),
    "http": Obj({**_SCHEDULE, "url": STR.described("URL, with macros: http://%ip.self%:8080/"),
                 "status": Range(100, 599).described("expected status (default 200)")},
                required=("url",)),
    "tcp": Obj({**_SCHEDULE, "port": Range(1, 65535), "host": STR.described(
        "address, with macros (default %ip.access_v4.self%)")}, required=("port",)),
})
# Supervision, as supervisord's autorestart: restart a failing instance at most ``max_restarts``
# times within ``window`` seconds, then leave it (the cluster shows DEGRADED and why).
RESTART_FIELDS = {
    "restart": Choice("never", "on-failure").described("restart a failing instance"),
    "max_restarts": Range(0, 1000).described("restarts allowed within window (default 3)"),
    "window": Seconds(0, 7 * 86400).described("seconds over which restarts count (default "
                                              "300)"),
}


# -- the shape of each kind, in the contract's schema language -------------------------------

NAMES = ListOf(STR)
COUNT = Range(0)
REF = Either(STR, Obj({"name": STR}, required=("name",)), label="a name or {\"name\": ...}")
LINK = Obj({"label": STR, "url": STR}, required=("url",))
COMMON = {"name": Matching(NAME_RE, f"a name of {NAME_RULE}"), "description": STR,
          "version": Scalar(int, str, label="a version"), "icon": STR}
PROVIDER_MAP = lambda entry: MapOf(entry)  # noqa: E731  (one entry per provider name)

TEMPLATE_FIELDS = {
    **COMMON,
    "extends": REF,
    "includes": ListOf(REF),
    "defaults": Obj({
        "services": NAMES,
        "provider": STR,
        "hardwaretype": STR,
        "imagetype": STR,
        "dnsSuffix": STR,
        "config": MapOf(Anything()),
    }),
    "compatibility": Obj({"hardwaretypes": NAMES, "imagetypes": NAMES, "services": NAMES}),
    "constraints": Obj({
        "size": Obj({"min": COUNT, "max": COUNT}),
        "layout": Obj({"mustcoexist": ListOf(NAMES), "cantcoexist": ListOf(NAMES)}),
        "services": MapOf(Obj({
            "hardwaretypes": NAMES,
            "imagetypes": NAMES,
            "quantities": Obj({"min": COUNT, "max": COUNT}),
        })),
    }),
    "administration": Obj({
        "leaseduration": Obj({"initial": NUMLIKE, "max": NUMLIKE, "step": NUMLIKE}),
    }),
    "links": ListOf(LINK),
}

SCHEMAS = {
    "provider": Obj(
        {**COMMON, "providertype": STR, "provisioner": MapOf(SCALAR)},
        required=("name", "providertype"),
    ),
    "hardwaretype": Obj(
        {**COMMON, "providermap": PROVIDER_MAP(Obj(
            {"flavor": STR, "cost": Amount(), "vcpu": NUMLIKE, "ram": NUMLIKE, "disks": STR},
            required=("flavor",), open_keys=True))},
        required=("name", "providermap"),
    ),
    "imagetype": Obj(
        {**COMMON, "providermap": PROVIDER_MAP(Obj(
            {"image": STR, "sshuser": Matching(LOGIN_NAME, LOGIN_HELP)}, required=("image",),
            open_keys=True))},
        required=("name", "providermap"),
    ),
    "service": Obj(
        {
            **COMMON,
            "dependencies": Obj({
                "provides": NAMES,
                "conflicts": NAMES,
                "install": Obj({"requires": NAMES, "uses": NAMES}),
                "runtime": Obj({"requires": NAMES, "uses": NAMES}),
            }),
            "provisioner": Obj({
                "actions": Obj(
                    {action: Obj({"type": STR, "fields": MapOf(Anything())}, required=("type",))
                     for action in SERVICE_ACTIONS}
                ),
                "health": HEALTH,
            }),
            "links": ListOf(LINK),
            **RESTART_FIELDS,
        },
        required=("name",),
    ),
    "template": Obj(TEMPLATE_FIELDS, required=("name",)),
    "partial": Obj({**TEMPLATE_FIELDS, "immutable": BOOL}, required=("name",)),
}


def validate(kind, body):
    """Check one entity's shape; raise ValidationError naming the entity, field path and reason."""
    if kind not in SCHEMAS:
        raise ValidationError(
            f"unknown catalog kind '{kind}' (known: {', '.join(KINDS)})",
            {"entity": kind, "field": "kind", "reason": "unknown kind"},
        )
    name = body.get("name") if isinstance(body, dict) else None
    label = f"{kind} '{name}'" if isinstance(name, str) else kind
    try:
        SCHEMAS[kind].check(body, "")
    except Bad as bad:
        raise ValidationError(
            f"{label}: {bad.path} {bad.reason}",
            {"entity": kind, "name": name, "field": bad.path, "reason": bad.reason},
        ) from None
    _check_macros(kind, name, label, body)
    if kind in ("template", "partial"):
        _check_bounds(label, kind, name, body)
    return body


def _check_macros(kind, name, label, body):
    """A malformed macro (``%host.service.%``) is refused at import, not when a task runs."""
    from cluster_server import macros

    places = []
    if kind == "service":
        for action, spec in body.get("provisioner", {}).get("actions", {}).items():
            places.append((f"provisioner.actions.{action}.fields", spec.get("fields", {})))
        if "health" in body.get("provisioner", {}):
            places.append(("provisioner.health", body["provisioner"]["health"]))
    if kind in ("template", "partial"):
        places.append(("defaults.config", body.get("defaults", {}).get("config", {})))
        places.append(("links", body.get("links", [])))
    for field, value in places:
        try:
            macros.validate(value)
        except ValidationError as error:
            raise ValidationError(
                f"{label}: {field}: {error.message}",
                {"entity": kind, "name": name, "field": field, "reason": error.message},
            ) from None


def validate_all(entities, sources=None):
    """Validate a batch of (kind, body) pairs: shapes, duplicate names within the batch.

    ``sources`` (same order) names where each came from, for the error message.
    """
    seen = {}
    for index, (kind, body) in enumerate(entities):
        where = (sources[index] if sources else None) or f"item {index + 1}"
        try:
            validate(kind, body)
        except ValidationError as error:
            if sources and sources[index]:
                error.message = f"{where}: {error.message}"
                error.args = (error.message,)
                error.details["source"] = where
            raise
        key = (kind, body["name"])
        if key in seen:
            raise ValidationError(
                f"{kind} '{body['name']}' is defined twice ({seen[key]} and {where})",
                {"entity": kind, "name": body["name"], "field": "name", "reason": "duplicate"},
            )
        seen[key] = where


DEFAULT_CATALOG = pathlib.Path(__file__).parent / "catalog_default"


def read_directory(path):
    """(kind, body) pairs from a catalog directory in Coopr layout (JSON files)."""
    entities = []
    for kind, folder in DIRS.items():
        for item in sorted((pathlib.Path(path) / folder).glob("*.json")):
            entities.append((kind, json.loads(item.read_text())))
    return entities


# -- references --------------------------------------------------------------------------------


def ref_name(ref):
    return ref["name"] if isinstance(ref, dict) else ref


def provided_names(services):
    """name -> set of service names that satisfy it (itself, and whoever ``provides`` it)."""
    result = {}
    for name, body in services.items():
        result.setdefault(name, set()).add(name)
        for provided in body.get("dependencies", {}).get("provides", []):
            result.setdefault(provided, set()).add(name)
    return result


def service_requires(body):
    deps = body.get("dependencies", {})
    return deps.get("install", {}).get("requires", []) + deps.get("runtime", {}).get("requires", [])


def check_cycles(services):
    """Reject a cycle among service dependencies (install and runtime graphs, through provides)."""
    providers = provided_names(services)
    for phase in ("install", "runtime"):
        graph = {}
        for name, body in services.items():
            deps = body.get("dependencies", {}).get(phase, {})
            targets = set()
            for dep in deps.get("requires", []) + deps.get("uses", []):
                targets |= providers.get(dep, set()) - {name}
            graph[name] = sorted(targets)
        cycle = _find_cycle(graph)
        if cycle:
            path = " -> ".join(cycle)
            raise Unprocessable(
                f"service '{cycle[0]}': {phase} dependencies form a cycle: {path}",
                {"entity": "service", "name": cycle[0], "field": f"dependencies.{phase}",
                 "reason": "cycle", "cycle": cycle},
            )


def check_extends(templates):
    """Reject a cycle of ``extends`` when it is written (resolving it fails on every read)."""
    graph = {name: [ref_name(body["extends"])] if body.get("extends") else []
             for name, body in templates.items()}
    cycle = _find_cycle(graph)
    if cycle:
        raise Unprocessable(
            f"template '{cycle[0]}': extends forms a cycle: {' -> '.join(cycle)}",
            {"entity": "template", "name": cycle[0], "field": "extends", "reason": "cycle",
             "cycle": cycle})


def _check_bounds(label, kind, name, body):
    """Counts that cannot be met are refused here, not reported by every plan."""
    constraints = body.get("constraints", {})
    pairs = [("constraints.size", constraints.get("size", {}))]
    pairs += [(f"constraints.services.{service}.quantities", rule.get("quantities", {}))
              for service, rule in constraints.get("services", {}).items()]
    for field, bounds in pairs:
        if "min" in bounds and "max" in bounds and bounds["min"] > bounds["max"]:
            raise Unprocessable(
                f"{label}: {field}: min {bounds['min']} is more than max {bounds['max']}",
                {"entity": kind, "name": name, "field": field, "reason": "min > max"})


def _find_cycle(graph):
    state = {}
    for start in sorted(graph):
        if state.get(start):
            continue
        stack = [(start, iter(graph[start]))]
        path = [start]
        state[start] = 1  # on the current path
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                state[node] = 2  # finished
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append((child, iter(graph.get(child, []))))
    return None


def dangling(catalog):
    """Every reference to an entity that is not in the catalog, as readable warnings.

    ``catalog`` is {kind: {name: body}}. Real catalogs are built piece by piece, so these are
    warnings; planning a cluster that needs a missing entity fails then.
    """
    have = {kind: set(catalog.get(kind, {})) for kind in KINDS}
    services = catalog.get("service", {})
    providers = provided_names(services)
    warnings = []

    def missing(kind, owner_kind, owner, field, name):
        # One warning per missing name per entity, listing every field that names it.
        for warning in warnings:
            if (warning["entity"], warning["name"], warning["ref"]) == (owner_kind, owner, name):
                warning["fields"].append(field)
                warning["message"] = _missing_message(warning)
                return
        warning = {"entity": owner_kind, "name": owner, "fields": [field], "missing": kind,
                   "ref": name}
        warning["message"] = _missing_message(warning)
        warnings.append(warning)

    for kind in ("template", "partial"):
        for name, body in sorted(catalog.get(kind, {}).items()):
            for field, ref_kind, refs in _template_refs(body):
                for ref in refs:
                    if ref_kind == "service":
                        if ref not in providers:
                            missing("service", kind, name, field, ref)
                    elif ref not in have[ref_kind]:
                        missing(ref_kind, kind, name, field, ref)
    for name, body in sorted(services.items()):
        for dep in service_requires(body):
            if dep not in providers:
                warnings.append({
                    "entity": "service", "name": name, "fields": ["dependencies"],
                    "missing": "service", "ref": dep,
                    "message": f"service '{name}' requires '{dep}', which no service provides",
                })
    return warnings


def _missing_message(warning):
    return (f"{warning['entity']} '{warning['name']}' names {warning['missing']} "
            f"'{warning['ref']}' ({', '.join(warning['fields'])}), which is not in the catalog")


def _template_refs(body):
    defaults = body.get("defaults", {})
    compat = body.get("compatibility", {})
    constraints = body.get("constraints", {})
    layout = constraints.get("layout", {})
    yield "defaults.services", "service", defaults.get("services", [])
    yield "compatibility.services", "service", compat.get("services", [])
    yield "constraints.services", "service", list(constraints.get("services", {}))
    for group_kind in ("mustcoexist", "cantcoexist"):
        for group in layout.get(group_kind, []):
            yield f"constraints.layout.{group_kind}", "service", group
    for key, kind in (("hardwaretype", "hardwaretype"), ("imagetype", "imagetype"),
                      ("provider", "provider")):
        if defaults.get(key):
            yield f"defaults.{key}", kind, [defaults[key]]
    yield "compatibility.hardwaretypes", "hardwaretype", compat.get("hardwaretypes", [])
    yield "compatibility.imagetypes", "imagetype", compat.get("imagetypes", [])
    if body.get("extends"):
        yield "extends", "template", [ref_name(body["extends"])]
    yield "includes", "partial", [ref_name(ref) for ref in body.get("includes", [])]


# -- partial templates -------------------------------------------------------------------------


def resolve_template(name, catalog):
    """The template with its ``extends`` parent and ``includes`` partials merged in.

    The parent comes first, then each included partial, then the template itself: later wins
    for single values, lists are unioned (order kept), config objects are merged deeply.
    A missing parent or partial is an error naming it; so is a cycle of ``extends``.
    """
    return _resolve(name, catalog, ())


def _resolve(name, catalog, chain):
    templates = catalog.get("template", {})
    if name in chain:
        raise ValidationError(
            f"template '{name}': extends forms a cycle: {' -> '.join(chain + (name,))}",
            {"entity": "template", "name": name, "field": "extends", "reason": "cycle"},
        )
    if name not in templates:
        if chain:
            raise NotFound(
                f"template '{chain[-1]}' extends template '{name}', which is not in the catalog",
                {"entity": "template", "name": chain[-1], "field": "extends", "missing": name},
            )
        raise NotFound(f"template '{name}' not found", {"entity": "template", "name": name})
    body = templates[name]
    merged = {}
    if body.get("extends"):
        merged = _resolve(ref_name(body["extends"]), catalog, chain + (name,))
    for ref in body.get("includes", []):
        partial = catalog.get("partial", {}).get(ref_name(ref))
        if partial is None:
            raise NotFound(
                f"template '{name}' includes partial '{ref_name(ref)}', which is not in the catalog",
                {"entity": "template", "name": name, "field": "includes", "missing": ref_name(ref)},
            )
        merged = merge(merged, {k: v for k, v in partial.items() if k not in _OWN_KEYS})
    merged = merge(merged, {k: v for k, v in body.items() if k not in ("extends", "includes")})
    merged["name"] = name
    return merged


_OWN_KEYS = ("name", "description", "immutable", "extends", "includes", "version", "icon")


def merge(base, over):
    """Deep merge used for partial templates: dicts merge, lists union, scalars are replaced."""
    result = dict(base)
    for key, value in over.items():
        old = result.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            result[key] = merge(old, value)
        elif isinstance(old, list) and isinstance(value, list):
            result[key] = old + [item for item in value if item not in old]
        else:
            result[key] = value
    return result


# -- sensitive fields --------------------------------------------------------------------------


def mask_provider(body, sensitive=()):
    """A copy of a provider with secret fields replaced by MASK (when they hold a value)."""
    fields = body.get("provisioner")
    if not fields:
        return body
    masked = dict(fields)
    for key, value in fields.items():
        if value not in ("", None) and (key in sensitive or SENSITIVE_RE.search(key)):
            masked[key] = MASK
    return {**body, "provisioner": masked}


def keep_secrets(new, old, sensitive=()):
    """On update or re-import, a field sent back as MASK keeps the stored secret."""
    fields = new.get("provisioner")
    if not fields:
        return new
    stored = (old or {}).get("provisioner", {})
    kept = dict(fields)
    for key, value in fields.items():
        if value == MASK:
            # An export never carries secrets: with nothing stored, the field stays empty.
            kept[key] = stored.get(key, "")
    return {**new, "provisioner": kept}
