"""A catalog packed as an archive (a Coopr catalog directory as .zip or .tar.gz): its entities,
read in memory, never unpacked to disk. Used by ``POST /catalog/import/archive`` (the web UI's
import; the CLI reads directories itself)."""

import io
import json
import tarfile
import zipfile
import zlib

from cluster_server import catalog
from cluster_server.errors import Unprocessable

SUFFIXES = (".json", ".yaml", ".yml")
MAX_UNPACKED = 64 * 1024 * 1024   # bytes the catalog files of one archive may hold in all
MAX_FILES = 10_000
KIND_OF = {folder: kind for kind, folder in catalog.DIRS.items()}


def _refuse(reason, member=None):
    details = {"field": "body", "reason": reason}
    if member:
        details["member"] = member
    raise Unprocessable(f"catalog archive: {member + ': ' if member else ''}{reason}", details)


def _wanted(name):
    """The kind of a member by its folder (``*/services/x.json``), or None."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if len(parts) < 2 or ".." in parts or not parts[-1].endswith(SUFFIXES):
        return None
    return KIND_OF.get(parts[-2])


def _members(data):
    """(name, bytes) of the catalog files in a zip or tar (plain or compressed)."""
    total, found = 0, []
    if zipfile.is_zipfile(io.BytesIO(data)):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                for info in archive.infolist():
                    if info.is_dir() or _wanted(info.filename) is None:
                        continue
                    total += info.file_size
                    if total > MAX_UNPACKED or len(found) >= MAX_FILES:
                        _refuse("unpacks too large")
                    found.append((info.filename, archive.read(info)))
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
            _refuse(f"damaged zip archive: {exc}")
        return found
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            seen = 0
            for info in tar:
                seen += max(info.size, 0)  # skipped members are decompressed too: bound them
                if seen > 4 * MAX_UNPACKED:
                    _refuse("unpacks too large")
                if not info.isfile() or _wanted(info.name) is None:
                    continue
                total += info.size
                if total > MAX_UNPACKED or len(found) >= MAX_FILES:
                    _refuse("unpacks too large")
                found.append((info.name, tar.extractfile(info).read()))
    except (tarfile.TarError, zlib.error, EOFError, OSError) as exc:
        _refuse("not a zip or tar archive" if isinstance(exc, tarfile.ReadError) and
                "could not be opened" in str(exc) else f"damaged tar archive: {exc}")
    return found


def read_archive(data):
    """[(kind, body, source)] of every catalog file in the archive, in name order."""
    entities = []
    for name, raw in sorted(_members(data)):
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            _refuse("not UTF-8 text", name)
        try:
            if name.endswith(".json"):
                body = json.loads(text)
            else:
                import yaml

                body = yaml.safe_load(text)
        except ValueError as exc:
            _refuse(f"malformed JSON: {exc}", name)
        except Exception as exc:  # yaml.YAMLError, without importing yaml for JSON archives
            _refuse(f"malformed YAML: {str(exc).splitlines()[0]}", name)
        if not isinstance(body, dict):
            _refuse("not a JSON object", name)
        entities.append((_wanted(name), body, name))
    if not entities:
        _refuse("no catalog files in it (expected providers/, services/, clustertemplates/ ...)")
    return entities
