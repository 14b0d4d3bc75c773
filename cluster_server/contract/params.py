"""Parameters a route declares with ``@accepts``: the server refuses the others, and the OpenAPI
document lists exactly these (a fuzzer or a client generator sees the real contract).

A declaration is a JSON Schema per parameter name, e.g.
``@accepts(query={"all": BOOLEAN}, path={"verb": {"enum": [...]}})``, using only ``enum`` and
``pattern`` on strings, which the server checks itself (``fits``). Path parameters not declared
are plain strings. A path value outside its declaration names no resource this route serves: the
request is answered as routing would (404, or 405 with ``Allow`` when another route serves the
path with other methods).
"""

import re

from cluster_server.errors import NotFound, ValidationError

BOOLEAN = {"type": "string", "enum": ["0", "1", "true", "false", "yes", "no"]}
INTEGER = {"type": "string", "pattern": "^[0-9]{1,15}$"}


def pattern(regex, what, rule, reserved=()):
    """The declaration of a string that matches ``regex`` whole (a compiled re without anchors
    of its own, the one the code checks with): published with anchors, checked with fullmatch,
    so a trailing newline never slips past ``$``. ``what`` and ``rule`` word the refusal."""
    out = {"type": "string", "pattern": f"^(?:{regex.pattern})$", "title": what,
           "description": rule}
    if reserved:
        out["not"] = {"enum": list(reserved)}
    return out


def accepts(query=None, path=None, expand=None):
    """Declare the query parameters (name -> schema) and path parameters of a view; ``expand``
    names an enum path parameter the document lists value by value (each its own path)."""
    def mark(view):
        view.contract_query = dict(query or {})
        view.contract_path = dict(path or {})
        if expand:
            view.contract_expand = expand
        return view
    return mark


def query_of(view):
    return getattr(view, "contract_query", {})


def path_of(view):
    return getattr(view, "contract_path", {})


def fits(schema, value):
    if "enum" in schema and value not in schema["enum"]:
        return False
    if "not" in schema and fits(schema["not"], value):
        return False
    if "pattern" in schema:
        inner = schema["pattern"]
        if inner.startswith("^(?:") and inner.endswith(")$"):
            return re.fullmatch(inner[4:-2], value) is not None
        return re.search(inner, value) is not None and "\n" not in value
    return True


def describe(schema):
    if "enum" in schema:
        return "one of " + ", ".join(schema["enum"])
    return f"matching {schema['pattern']}"


def check_query(view, args):
    """Refuse a query parameter the route does not declare, or given twice, or a value outside
    its declaration, naming it and what is accepted."""
    allowed = query_of(view)
    for name in args:
        if name not in allowed:
            accepted = ", ".join(sorted(allowed)) or "none"
            raise ValidationError(
                f"unknown query parameter '{name}' (this route accepts: {accepted})",
                {"field": f"query.{name}", "reason": "unknown query parameter"})
        values = args.getlist(name)
        if len(values) > 1:
            raise ValidationError(f"query parameter '{name}' given {len(values)} times",
                                  {"field": f"query.{name}", "reason": "repeated"})
        if not fits(allowed[name], values[0]):
            raise ValidationError(
                f"query parameter '{name}': '{values[0]}' is not {describe(allowed[name])}",
                {"field": f"query.{name}", "reason": "invalid value"})


def path_misfit(view, values):
    """"route" when a path value is outside its declared set (the path names no resource this
    route serves), "value" when a name breaks its pattern, else None."""
    checks = sorted(path_of(view).items(), key=lambda item: "enum" not in item[1])
    for name, schema in checks:
        value = (values or {}).get(name)
        if value is not None and not fits(schema, value):
            return "route" if "enum" in schema else "value"
    return None


def check_path(view, values, method):
    """A path name that breaks its pattern names nothing that can exist: 404 for a read or an
    operation on it; 400 naming the rule for a PUT, which would make it."""
    for name, schema in path_of(view).items():
        value = (values or {}).get(name)
        if "pattern" in schema and value is not None and not fits(schema, value):
            what = schema.get("title", name)
            if method != "PUT":
                raise NotFound(f"{what} '{value}' not found", {"entity": what, "name": value})
            raise ValidationError(f"bad {what} name '{value}': "
                                  f"{schema.get('description', describe(schema))}",
                                  {"field": name, "value": value, "reason": "bad name"})
