"""Catalog endpoints: CRUD per kind, whole-catalog import, export and check."""

from flask import Blueprint, current_app, g, jsonify, request

from cluster_server import catalog, catalog_archive, plugins
from cluster_server.api.common import flag, json_body
from cluster_server.api import responses
from cluster_server.contract.bodies import returns, takes
from cluster_server.contract.limits import large_body
from cluster_server.contract.params import BOOLEAN, accepts, pattern
from cluster_server.contract.schema import (STR, Anything, Choice, ListOf, MapOf, Obj,
                                            Tagged)
from cluster_server.errors import Conflict, PluginError, ValidationError
from cluster_server.tenancy import policy

bp = Blueprint("catalog", __name__)

PATHS = {catalog.DIRS[kind]: kind for kind in catalog.KINDS}
COLLECTION = {"plural": {"enum": sorted(PATHS)}}
ENTITY = {**COLLECTION, "name": pattern(catalog.NAME_RE, "entity", catalog.NAME_RULE)}
# PUT /<plural>/<name> may leave the name out of the body: it comes from the path.
UPDATES = {plural: Obj(schema.fields, tuple(k for k in schema.required if k != "name"))
           for plural, schema in responses.ENTITY.items()}
# {value} is the collection: each expanded path links to its own show, update and delete.
ENTITY_LINKS = {
    verb: {"operationId": f"catalog_{view}_{{value}}",
           "parameters": {"name": "$response.body#/entity/name"}}
    for verb, view in (("show", "show_entity_get"), ("update", "update_entity_put"),
                       ("delete", "delete_entity_delete"))}
# The import's shape is checked on arrival; each body by catalog.validate_all (with the
# same SCHEMAS objects), which names the file it came from. The document shows both at once.
IMPORT_SHAPE = Obj({"entities": ListOf(Obj({
    "kind": Choice(*catalog.KINDS), "body": MapOf(Anything()), "source": STR},
    required=("kind", "body")))}, required=("entities",))
IMPORT = Obj({"entities": ListOf(Tagged("kind", {
    kind: Obj({"body": catalog.SCHEMAS[kind],
               "source": STR.described("where the entity came from, for messages")},
              required=("body",)) for kind in catalog.KINDS}))}, required=("entities",)).described(
    "entities to write together", example={"entities": [
        {"kind": "service", "body": {"name": "web", "description": "a web server"}}]})


def _kind(plural):
    kind = PATHS.get(plural)
    if kind is None:
        raise ValidationError(f"unknown catalog collection '{plural}'",
                              {"field": "path", "reason": "unknown collection"})
    return kind


def sensitive_fields(body):
    """Fields the provider's plugin marks sensitive (none when the plugin is not installed)."""
    try:
        cls = plugins.plugin_class(plugins.PROVIDER_NAMESPACE, body.get("providertype", ""))
    except PluginError:
        return ()
    return tuple(name for name, field in cls.fields.items() if field.sensitive)


def public(kind, body):
    """What the API returns for an entity: secrets masked."""
    if kind == "provider":
        return catalog.mask_provider(body, sensitive_fields(body))
    return body


def write_entities(entities, replace, sources=None):
    """Validate a batch against the whole catalog, then write it in one transaction.

    ``entities`` is a list of (kind, body). Returns the dangling-reference warnings that
    concern the written entities.
    """
    store = current_app.store
    catalog.validate_all(entities, sources)
    current = store.catalog_all(g.tenant)
    if not replace:
        for kind, body in entities:
            if body["name"] in current.get(kind, {}):
                raise Conflict(f"{kind} '{body['name']}' already exists (use update)",
                               {"entity": kind, "name": body["name"], "reason": "exists"})
    merged = {kind: dict(items) for kind, items in current.items()}
    cleaned = []
    for kind, body in entities:
        if kind == "provider":
            body = catalog.keep_secrets(body, current.get("provider", {}).get(body["name"]))
        merged.setdefault(kind, {})[body["name"]] = body
        cleaned.append((kind, body))
    catalog.check_cycles(merged.get("service", {}))
    catalog.check_extends(merged.get("template", {}))
    written = {(kind, body["name"]) for kind, body in cleaned}
    warnings = [w for w in catalog.dangling(merged) if (w["entity"], w["name"]) in written]
    store.catalog_put(cleaned, g.tenant)
    return warnings


@bp.get("/<plural>")
@accepts(path=COLLECTION, expand="plural")
@returns(200, responses.LISTED)
def list_entities(plural):
    """List the entities of one catalog kind."""
    kind = _kind(plural)
    store = current_app.store
    bodies = store.catalog_list(kind, g.tenant)
    if kind == "template":  # a user sees only the templates shared with them
        visible = policy.templates_visible(g.principal, store)
        bodies = [body for body in bodies if visible is None or body["name"] in visible]
    return jsonify([public(kind, body) for body in bodies])


@bp.post("/<plural>")
@accepts(path=COLLECTION)
# catalog.validate checks with these same objects (a catalog also comes in from files).
@takes(by="plural", schemas=responses.ENTITY, checked_by_view=True)
@returns(201, responses.WRITTEN, links=ENTITY_LINKS)
def create_entity(plural):
    """Create one catalog entity; 409 when the name is taken."""
    kind = _kind(plural)
    body = json_body()
    warnings = write_entities([(kind, body)], replace=False)
    return jsonify({"entity": public(kind, body), "warnings": warnings}), 201


@bp.get("/<plural>/<name>")
@accepts(query={"raw": BOOLEAN}, path=ENTITY, expand="plural")
@returns(200, responses.ENTITY)
def show_entity(plural, name):
    """One entity; templates come resolved (extends/includes merged) unless ?raw=1."""
    kind = _kind(plural)
    store = current_app.store
    if kind == "template":
        policy.check_template(g.principal, store, name)
    if kind == "template" and not flag("raw"):
        store.catalog_get(kind, name, g.tenant)  # 404 first, before resolving
        return jsonify(catalog.resolve_template(name, store.catalog_all(g.tenant)))
    return jsonify(public(kind, store.catalog_get(kind, name, g.tenant)))


@bp.put("/<plural>/<name>")
@accepts(path=ENTITY)
@takes(by="plural", schemas=UPDATES, checked_by_view=True)
@returns(200, responses.WRITTEN)
def update_entity(plural, name):
    """Replace one entity (it must exist)."""
    kind = _kind(plural)
    current_app.store.catalog_get(kind, name, g.tenant)
    body = json_body()
    body.setdefault("name", name)
    if body["name"] != name:
        # RFC 9110: a PUT whose representation contradicts its target is a 409.
        raise Conflict(f"{kind} '{name}': name cannot change (body says '{body['name']}')",
                              {"entity": kind, "name": name, "field": "name",
                               "reason": "rename not allowed"})
    warnings = write_entities([(kind, body)], replace=True)
    return jsonify({"entity": public(kind, body), "warnings": warnings})


@bp.delete("/<plural>/<name>")
@accepts(path=ENTITY, expand="plural")
@returns(200, responses.DELETED)
def delete_entity(plural, name):
    """Delete one entity."""
    kind = _kind(plural)
    store = current_app.store
    before = store.catalog_all(g.tenant)
    store.catalog_delete(kind, name, g.tenant)
    # Allowed (catalogs are rebuilt piece by piece), but what now names a missing entity is
    # said at once, as an import would, rather than found by the next plan.
    after = {k: {n: b for n, b in items.items() if (k, n) != (kind, name)}
             for k, items in before.items()}
    known = catalog.dangling(before)
    warnings = [w for w in catalog.dangling(after)
                if (w["missing"], w["ref"]) == (kind, name) and w not in known]
    return jsonify({"deleted": name, "warnings": warnings})


@bp.post("/catalog/import")
@takes(IMPORT_SHAPE, published=IMPORT)
@returns(200, responses.IMPORTED)
def import_catalog():
    """Import many entities at once: all are written or none ({"entities": [{kind, body}]})."""
    items = json_body()["entities"]
    entities = [(item["kind"], item["body"]) for item in items]
    sources = [item.get("source") for item in items]
    warnings = write_entities(entities, replace=True, sources=sources)
    return jsonify({"imported": len(entities), "warnings": warnings})


@bp.post("/catalog/import/archive")
@large_body
@takes(media="application/octet-stream")
@returns(200, responses.IMPORTED)
def import_archive():
    """Import a catalog directory packed as .zip or .tar.gz (Coopr layout: providers/,
    services/, clustertemplates/, ... at any depth): all entities are written or none."""
    data = request.get_data(cache=False)
    found = catalog_archive.read_archive(data)
    warnings = write_entities([(kind, body) for kind, body, _ in found], replace=True,
                              sources=[source for _, _, source in found])
    return jsonify({"imported": len(found), "warnings": warnings})


@bp.get("/catalog/export")
@returns(200, responses.EXPORT)
def export_catalog():
    """Every entity as stored (templates unresolved, secrets masked)."""
    everything = current_app.store.catalog_all(g.tenant)
    entities = [{"kind": kind, "body": public(kind, body)}
                for kind in catalog.KINDS for body in everything.get(kind, {}).values()]
    return jsonify({"entities": entities})


@bp.get("/catalog/check")
@returns(200, responses.CHECKED)
def check_catalog():
    """Every dangling reference in the catalog, and every plugin type it names that is not
    installed (a cluster that needs one is refused when it is created)."""
    everything = current_app.store.catalog_all(g.tenant)
    return jsonify({"warnings": catalog.dangling(everything) + _missing_plugins(everything)})


def _missing_plugins(everything):
    have = {namespace: set(plugins.installed(namespace))
            for namespace in (plugins.PROVIDER_NAMESPACE, plugins.AUTOMATOR_NAMESPACE,
                              plugins.DATABASE_NAMESPACE)}
    warnings = []
    for name, body in sorted(everything.get("provider", {}).items()):
        if body["providertype"] not in have[plugins.PROVIDER_NAMESPACE]:
            warnings.append({
                "entity": "provider", "name": name, "fields": ["providertype"],
                "missing": "provider plugin", "ref": body["providertype"],
                "message": f"provider '{name}': provider plugin '{body['providertype']}' is not "
                           "installed"})
    for name, body in sorted(everything.get("service", {}).items()):
        kinds = {}
        for action, spec in sorted(body.get("provisioner", {}).get("actions", {}).items()):
            if spec["type"] not in have[plugins.AUTOMATOR_NAMESPACE]:
                kinds.setdefault(spec["type"], []).append(f"provisioner.actions.{action}.type")
        for kind, fields in kinds.items():
            warnings.append({
                "entity": "service", "name": name, "fields": fields,
                "missing": "automator plugin", "ref": kind,
                "message": f"service '{name}': automator plugin '{kind}' is not installed"})
    for kind in ("template", "partial"):
        for name, body in sorted(everything.get(kind, {}).items()):
            for resource, entry in sorted((body.get("resources") or {}).items()):
                if entry["type"] not in have[plugins.DATABASE_NAMESPACE]:
                    warnings.append({
                        "entity": kind, "name": name, "fields": [f"resources.{resource}.type"],
                        "missing": "database plugin", "ref": entry["type"],
                        "message": f"{kind} '{name}': database plugin '{entry['type']}' is not "
                                   "installed"})
    return warnings
