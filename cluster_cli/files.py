"""Reading catalog files (JSON or YAML) for the CLI, with errors that name file and line."""

import functools
import json
import pathlib
import sys

from cluster_cli.client import ClientError

DIRS = {
    "providers": "provider",
    "hardwaretypes": "hardwaretype",
    "imagetypes": "imagetype",
    "services": "service",
    "clustertemplates": "template",
    "partialtemplates": "partial",
}
SUFFIXES = (".json", ".yaml", ".yml")


class _Refused(Exception):
    """Something in a file the API cannot take; load() puts the file name in front."""


def load(path):
    """Parse one JSON or YAML file (``-`` is stdin)."""
    if str(path) == "-":
        data, name = sys.stdin.buffer.read(), "<stdin>"
    else:
        path = pathlib.Path(path)
        try:
            data, name = path.read_bytes(), str(path)
        except OSError as exc:
            raise ClientError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        text = data.decode("utf-8-sig")  # a leading byte-order mark is not part of the JSON
    except UnicodeDecodeError as exc:
        raise ClientError(f"{name}: not UTF-8 text (byte {exc.start} is "
                          f"0x{data[exc.start]:02x})") from None
    try:
        return _parse(text, name)
    except _Refused as exc:
        raise ClientError(f"{name}: {exc}") from None


def _parse(text, name):
    if name.endswith(".json") or text.lstrip().startswith(("{", "[")):
        try:
            return json.loads(text, object_pairs_hook=_unique_keys)
        except ValueError as exc:
            raise ClientError(f"{name}: malformed JSON: {exc}") from None
    import yaml

    try:
        data = yaml.load(text, Loader=_yaml_loader())
    except yaml.YAMLError as exc:
        raise ClientError(f"{name}: malformed YAML: {exc}".replace("\n", " ")) from None
    _check_json_types(data, "")
    return data


def _unique_keys(pairs):
    """json's object_pairs_hook: a key given twice is a mistake, not "the last one wins"."""
    result = {}
    for key, value in pairs:
        if key in result:
            raise _Refused(f"key '{key}' is given twice")
        result[key] = value
    return result


@functools.cache
def _yaml_loader():
    """yaml's SafeLoader with two changes: an unquoted date stays the string it was written as
    (JSON has no dates), and a key given twice in one mapping is refused."""
    import yaml

    class Loader(yaml.SafeLoader):
        yaml_implicit_resolvers = {
            first: [(tag, regexp) for tag, regexp in resolvers
                    if tag != "tag:yaml.org,2002:timestamp"]
            for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
        }

        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                # '<<' merge keys may repeat, and a key may override a merged one
                if (isinstance(key_node, yaml.ScalarNode)
                        and key_node.tag != "tag:yaml.org,2002:merge"):
                    if key_node.value in seen:
                        raise _Refused(f"line {key_node.start_mark.line + 1}: key "
                                       f"'{key_node.value}' is given twice")
                    seen.add(key_node.value)
            return super().construct_mapping(node, deep=deep)

    return Loader


def _check_json_types(value, where):
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{where}.{key}" if where else str(key)
            _check_json_types(key, here)
            _check_json_types(item, here)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_json_types(item, f"{where}[{index}]")
    elif not isinstance(value, (str, int, float, bool, type(None))):
        import datetime  # here, not at CLI start: only a refused value needs it

        # What YAML can hold but JSON cannot (explicit tags: !!timestamp, !!binary, !!set).
        not_json = (
            (datetime.date, "a date", "quote it as a string"),
            (bytes, "binary data", "write it as a string, without !!binary"),
            (set, "a set", "write it as a list"),
        )
        what, hint = f"a {type(value).__name__}", "write it as JSON data"
        for kind, kind_what, kind_hint in not_json:
            if isinstance(value, kind):
                what, hint = kind_what, kind_hint
                break
        raise _Refused(f"{where or 'the top level'}: {what} is not allowed here; {hint}")


def catalog_entities(path):
    """[{kind, body, source}] from a Coopr catalog directory, an export file or one entity file."""
    path = pathlib.Path(path)
    if path.is_dir():
        entities = []
        subdirs = [path / d for d in DIRS if (path / d).is_dir()]
        if not subdirs:
            raise ClientError(f"{path}: not a catalog directory (expected subdirectories "
                              f"{', '.join(DIRS)})")
        for sub in subdirs:
            for item in sorted(sub.iterdir()):
                if item.suffix in SUFFIXES:
                    entities.append(_entity(DIRS[sub.name], load(item), item))
        return entities
    data = load(path)
    if isinstance(data, dict) and set(data) and set(data) <= set(DIRS):
        return [_entity(DIRS[key], body, f"{path}:{key}[{index}]")
                for key, bodies in data.items() for index, body in enumerate(bodies or [])]
    kind = DIRS.get(path.parent.name)
    if kind is None:
        raise ClientError(f"{path}: cannot tell which kind of entity this is; put it in a "
                          f"directory named {'/'.join(DIRS)} or use 'shoal <noun> create'")
    return [_entity(kind, data, path)]


def _entity(kind, body, source):
    if not isinstance(body, dict):
        raise ClientError(f"{source}: a {kind} must be a JSON/YAML object")
    return {"kind": kind, "body": body, "source": str(source)}
