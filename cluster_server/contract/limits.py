"""Hard limits on what a request may send: body size per route (refused with 413 before the body
is read past the limit) and the shape of JSON bodies (nesting depth, string and array lengths,
refused with 400). Without them a 300 MB body is read whole and 100,000 nested arrays exhaust
the parser's recursion (a 500)."""

import json
import os

from cluster_server import resources
from cluster_server.errors import TooLarge, ValidationError

DEFAULT_MAX_JSON_BYTES = 2 * 1024 * 1024  # the whole Coopr reference catalog is 121 KB
MAX_DEPTH = 32  # the deepest entity of the Coopr catalog nests 7 levels
MAX_STRING = 256 * 1024
MAX_ITEMS = 10_000


def max_json_bytes():
    """The limit for JSON bodies: SHOAL_MAX_JSON_BYTES, default 2 MiB."""
    value = os.environ.get("SHOAL_MAX_JSON_BYTES")
    return int(value) if value else DEFAULT_MAX_JSON_BYTES


def largest_body():
    """The largest body any route takes: what the HTTP server reads at most."""
    return max(max_json_bytes(), resources.max_bytes())


def large_body(view):
    """Mark a view that reads a raw upload (its own, larger limit) instead of a JSON body."""
    view.contract_large_body = True
    return view


def body_limit(view):
    """The byte limit of a view's body and the setting that changes it."""
    if getattr(view, "contract_large_body", False):
        return resources.max_bytes(), "SHOAL_RESOURCE_MAX_BYTES"
    return max_json_bytes(), "SHOAL_MAX_JSON_BYTES"


def check_length(size, limit, setting):
    if size is not None and size > limit:
        raise TooLarge(f"request body is {size} bytes, over the limit of "
                       f"{resources.human_size(limit)} ({setting})",
                       {"field": "body", "size": size, "limit": limit, "reason": "too large"})


def _bad(message, field, reason):
    return ValidationError(message, {"field": field, "reason": reason})


def load(raw):
    """Parse a JSON body and check its shape; every refusal is a 400 naming where and why."""
    try:
        data = json.loads(raw, parse_float=_number, parse_constant=_not_json)
    except RecursionError:
        raise _bad(f"request body nests deeper than {MAX_DEPTH} levels", "body",
                   "too deeply nested") from None
    except ValueError as error:  # UnicodeDecodeError is a ValueError too
        raise _bad(f"request body is not valid JSON: {error}", "body", "not JSON") from None
    check_shape(data)
    return data


def _number(text):
    """A JSON number with a fraction or exponent: an integer when it is one (JSON Schema counts
    3.0 as an integer, so a client may send it for a count), else a float."""
    value = float(text)
    if value.is_integer() and abs(value) < 2 ** 53:
        return int(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text} is out of range")
    return value


def _not_json(text):
    raise ValueError(f"{text} is not JSON (JSON has no NaN or Infinity)")


def check_shape(data):
    """Walk the parsed body without recursion, so the check itself cannot overflow."""
    stack = [(data, "body", 1)]
    while stack:
        value, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _bad(f"{where}: nests deeper than {MAX_DEPTH} levels", where,
                       "too deeply nested")
        if isinstance(value, str):
            if len(value) > MAX_STRING:
                raise _bad(f"{where}: string of {len(value)} characters, over {MAX_STRING}",
                           where, "string too long")
        elif isinstance(value, list):
            if len(value) > MAX_ITEMS:
                raise _bad(f"{where}: {len(value)} items, over {MAX_ITEMS}", where,
                           "too many items")
            stack.extend((item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value))
        elif isinstance(value, dict):
            if len(value) > MAX_ITEMS:
                raise _bad(f"{where}: {len(value)} keys, over {MAX_ITEMS}", where,
                           "too many keys")
            for key, item in value.items():
                if len(key) > MAX_STRING:
                    raise _bad(f"{where}: a key over {MAX_STRING} characters", where,
                               "key too long")
                stack.append((item, f"{where}.{key}", depth + 1))
