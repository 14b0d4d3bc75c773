"""Reading catalog files (JSON or YAML) for the CLI, with errors that name file and line."""

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


def load(path):
    """Parse one JSON or YAML file (``-`` is stdin)."""
    if str(path) == "-":
        text, name = sys.stdin.read(), "<stdin>"
    else:
        path = pathlib.Path(path)
        try:
            text, name = path.read_text(), str(path)
        except OSError as exc:
            raise ClientError(f"{path}: cannot read: {exc.strerror}") from None
    if str(path).endswith(".json") or text.lstrip().startswith(("{", "[")):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ClientError(f"{name}: malformed JSON: {exc}") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ClientError(f"{name}: malformed YAML: {exc}".replace("\n", " ")) from None


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
