"""Parameters a route declares with ``@accepts``: the server refuses the others, and the OpenAPI
document lists exactly these (a fuzzer or a client generator sees the real contract).

A declaration is a JSON Schema per parameter name, e.g.
``@accepts(query={"all": BOOLEAN}, path={"verb": {"enum": [...]}})``.
Path parameters not declared are plain strings. A path enum is published from the same constant
the view checks its value with (a wrong one answers the view's own 404 or 400).
"""

from cluster_server.errors import ValidationError

BOOLEAN = {"type": "string", "enum": ["0", "1", "true", "false", "yes", "no"]}
INTEGER = {"type": "string", "pattern": "^[0-9]+$"}
NUMBER = {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$"}


def accepts(query=None, path=None):
    """Declare the query parameters (name -> schema) and path enums of a view."""
    def mark(view):
        view.contract_query = dict(query or {})
        view.contract_path = dict(path or {})
        return view
    return mark


def query_of(view):
    return getattr(view, "contract_query", {})


def path_of(view):
    return getattr(view, "contract_path", {})


def check_query(view, args):
    """Refuse a query parameter the route does not declare, naming it and what is accepted."""
    allowed = query_of(view)
    for name in args:
        if name not in allowed:
            accepted = ", ".join(sorted(allowed)) or "none"
            raise ValidationError(
                f"unknown query parameter '{name}' (this route accepts: {accepted})",
                {"field": f"query.{name}", "reason": "unknown query parameter"})
