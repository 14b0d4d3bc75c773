"""The schema language of every JSON body: the server checks a body with a declaration, and the
OpenAPI document publishes the same declaration as JSON Schema (``json_schema()``), so a rule is
written once. Errors name the field path and the reason.

Why a small language of our own rather than pydantic or jsonschema: it was already what checks
Coopr's catalog shapes (Coopr writes costs as "0.175", versions as numbers or strings, unknown
keys inside a provider map are allowed), its messages are the ones users read, and turning it
into JSON Schema is a few lines per class. A second library would mean two sources again.
"""

import copy
import decimal

from cluster_server.errors import ValidationError


class Bad(Exception):
    """A value that does not fit its schema, at ``path`` (dotted, with [i] for list items)."""

    def __init__(self, path, reason):
        super().__init__(reason)
        self.path = path
        self.reason = reason


class Schema:
    description = None
    example = None

    def check(self, value, path):
        raise NotImplementedError

    def json_schema(self):
        raise NotImplementedError

    def described(self, description=None, example=None):
        """A copy of this schema with a description and an example for the published document
        (a copy: the shared ones, STR or NAME, stay bare)."""
        described = copy.copy(self)
        described.description, described.example = description, example
        return described

    def published(self):
        out = self.json_schema()
        if self.description:
            out["description"] = self.description
        if self.example is not None:
            out["examples"] = [self.example]
        return out


_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean",
               type(None): "null"}


class Scalar(Schema):
    def __init__(self, *types, label, non_empty=False):
        self.types = types
        self.label = label
        self.non_empty = non_empty

    def check(self, value, path):
        # bool is an int in Python; a JSON true is never a valid number here.
        if isinstance(value, bool) and bool not in self.types:
            raise Bad(path, f"must be {self.label}, not a boolean")
        if not isinstance(value, self.types):
            raise Bad(path, f"must be {self.label}, not {json_type(value)}")
        if self.non_empty and value == "":
            raise Bad(path, f"must be {self.label}, not empty")

    def json_schema(self):
        types = sorted({_JSON_TYPES[t] for t in self.types})
        if "number" in types and "integer" in types:
            types.remove("integer")
        out = {"type": types[0] if len(types) == 1 else types}
        if self.non_empty:
            out["minLength"] = 1
        return out


class Range(Schema):
    """A whole number within [low, high] (either may be None)."""

    def __init__(self, low=None, high=None):
        self.low, self.high = low, high

    def check(self, value, path):
        INT.check(value, path)
        if (self.low is not None and value < self.low) or \
                (self.high is not None and value > self.high):
            bounds = (f"between {self.low} and {self.high}" if self.high is not None
                      else f"{self.low} or more")
            raise Bad(path, f"must be {bounds}, not {value}")

    def json_schema(self):
        out = {"type": "integer"}
        if self.low is not None:
            out["minimum"] = self.low
        if self.high is not None:
            out["maximum"] = self.high
        return out


STR = Scalar(str, label="a string")
OPTIONAL_STR = Scalar(str, type(None), label="a string or null")
NUMBER = Scalar(int, float, label="a number")
NAME = Scalar(str, label="a non-empty string", non_empty=True)
INT = Scalar(int, label="an integer")  # JSON's 3.0 arrives as 3: see limits.load
BOOL = Scalar(bool, label="a boolean")
NUMLIKE = Scalar(str, int, float, label="a number or a string")  # Coopr writes "0.175"
SCALAR = Scalar(str, int, float, bool, label="a string, number or boolean")


class Seconds(Schema):
    """A duration in seconds: a number above ``low`` and at most ``high`` (a check every 0 s
    would spin; one every week is a typo)."""

    def __init__(self, low=0, high=86400):
        self.low, self.high = low, high

    def check(self, value, path):
        NUMBER.check(value, path)
        if not self.low < value <= self.high:
            raise Bad(path, f"must be more than {self.low} and at most {self.high} seconds, "
                            f"not {value}")

    def json_schema(self):
        return {"type": "number", "exclusiveMinimum": self.low, "maximum": self.high}


class Choice(Schema):
    """One of a fixed set of strings."""

    def __init__(self, *values):
        self.values = values

    def check(self, value, path):
        if value not in self.values or not isinstance(value, str):
            raise Bad(path, f"must be one of: {', '.join(self.values)}")

    def json_schema(self):
        return {"type": "string", "enum": list(self.values)}


class Matching(Schema):
    """A string that matches ``pattern`` whole."""

    def __init__(self, pattern, label, reserved=()):
        self.pattern = pattern
        self.label = label
        self.reserved = reserved

    def check(self, value, path):
        STR.check(value, path)
        if not self.pattern.fullmatch(value):
            raise Bad(path, f"must be {self.label}")
        if value in self.reserved:
            raise Bad(path, f"'{value}' is reserved (it names a route)")

    def json_schema(self):
        # Python's fullmatch is JSON Schema's anchored pattern.
        out = {"type": "string", "pattern": f"^(?:{self.pattern.pattern})$"}
        if self.reserved:
            out["not"] = {"enum": list(self.reserved)}
        return out


class Amount(Schema):
    """A number, or a string of one as Coopr writes costs ("0.175"): finite and not negative
    (an infinite or NaN cost would break every layout of the provider)."""

    def check(self, value, path):
        NUMLIKE.check(value, path)
        if value == "":
            return
        try:
            amount = decimal.Decimal(str(value))
        except decimal.InvalidOperation:
            raise Bad(path, "must be a number") from None
        if not amount.is_finite() or amount < 0:
            raise Bad(path, "must be a finite number, 0 or more")

    def json_schema(self):
        return {"anyOf": [{"type": "number", "minimum": 0},
                          {"type": "string", "pattern": r"^(\d+(\.\d*)?|\.\d+)?$"}]}


class Anything(Schema):
    def check(self, value, path):
        pass

    def json_schema(self):
        return {}


class ListOf(Schema):
    def __init__(self, item, min_items=0):
        self.item = item
        self.min_items = min_items

    def check(self, value, path):
        if not isinstance(value, list):
            raise Bad(path, f"must be a list, not {json_type(value)}")
        if len(value) < self.min_items:
            raise Bad(path, f"must hold at least {self.min_items} item(s)")
        for index, item in enumerate(value):
            self.item.check(item, f"{path}[{index}]")

    def json_schema(self):
        out = {"type": "array", "items": self.item.published()}
        if self.min_items:
            out["minItems"] = self.min_items
        return out


class MapOf(Schema):
    """An object whose keys are names chosen by the user (providers, services, fields)."""

    def __init__(self, value):
        self.value = value

    def check(self, value, path):
        if not isinstance(value, dict):
            raise Bad(path, f"must be an object, not {json_type(value)}")
        for key, item in value.items():
            self.value.check(item, f"{path}.{key}" if path else key)

    def json_schema(self):
        return {"type": "object", "additionalProperties": self.value.published()}


class Obj(Schema):
    """An object with known keys; unknown keys are rejected. ``required`` lists mandatory keys."""

    def __init__(self, fields, required=(), open_keys=False):
        self.fields = fields
        self.required = required
        self.open_keys = open_keys

    def check(self, value, path):
        if not isinstance(value, dict):
            raise Bad(path, f"must be an object, not {json_type(value)}")
        for key in self.required:
            if key not in value:
                raise Bad(join(path, key), "is required")
        for key, item in value.items():
            schema = self.fields.get(key)
            if schema is None:
                if self.open_keys:
                    continue
                known = ", ".join(sorted(self.fields))
                raise Bad(join(path, key), f"is not a known key (known: {known})")
            schema.check(item, join(path, key))

    def json_schema(self):
        out = {"type": "object",
               "properties": {key: schema.published() for key, schema in self.fields.items()}}
        if self.required:
            out["required"] = list(self.required)
        if not self.open_keys:
            out["additionalProperties"] = False
        return out


class Either(Schema):
    def __init__(self, *options, label):
        self.options = options
        self.label = label

    def check(self, value, path):
        for option in self.options:
            try:
                option.check(value, path)
                return
            except Bad:
                continue
        raise Bad(path, f"must be {self.label}")

    def json_schema(self):
        return {"anyOf": [option.published() for option in self.options]}


def join(path, key):
    return f"{path}.{key}" if path else key


def json_type(value):
    return {
        dict: "an object", list: "a list", str: "a string", bool: "a boolean",
        int: "a number", float: "a number", type(None): "null",
    }.get(type(value), type(value).__name__)


def check_body(schema, body, what="request body"):
    """Check a request body; a misfit is a 400 naming the field path and the reason."""
    try:
        schema.check(body, "")
    except Bad as bad:
        where = bad.path or "body"
        raise ValidationError(f"{what}: {where} {bad.reason}",
                              {"field": where, "reason": bad.reason}) from None
    return body


class Tagged(Schema):
    """An object whose shape is chosen by the value of one key (``{"operation": "resize",
    "size": 3}``): published as a oneOf whose branches fix that key with ``const``."""

    def __init__(self, tag, branches):
        self.tag = tag
        self.branches = branches

    def check(self, value, path):
        if not isinstance(value, dict):
            raise Bad(path, f"must be an object, not {json_type(value)}")
        branch = self.branches.get(value.get(self.tag)) if isinstance(
            value.get(self.tag), str) else None
        if branch is None:
            raise Bad(join(path, self.tag), f"must be one of: {', '.join(self.branches)}")
        branch.check({k: v for k, v in value.items() if k != self.tag}, path)

    def json_schema(self):
        options = []
        for name, branch in self.branches.items():
            option = branch.published()
            option["properties"] = {self.tag: {"const": name}, **option.get("properties", {})}
            option["required"] = [self.tag, *option.get("required", [])]
            options.append(option)
        return {"oneOf": options}
