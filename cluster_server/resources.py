"""Plugin resources: scripts, archives and keys that an admin uploads for automators, versioned.

Every upload of a (kind, name) is a new version, numbered 1, 2, 3… and never renumbered. A
version is in one of three states:

- ``inactive``: stored, used by nothing (every upload starts here);
- ``staged``: the candidate that the next ``activate`` without a version makes active
  (at most one per name);
- ``active``: the version automators get from ``path()`` for new tasks (at most one per name).

``stage`` marks a version as the candidate (a version staged before goes back to inactive);
``activate`` makes the staged version, or the one given, active (the version active before
goes back to inactive); ``recall`` sends an active or staged version back to inactive.

``ResourceStore`` is the interface automators and the API use; ``FileResourceStore`` keeps the
bytes under ``SHOAL_HOME/resources/<tenant>/<kind>/<name>/<version>`` and the rest in SQLite.
"""

import abc
import hashlib
import io
import lzma
import os
import re
import stat
import tarfile
import time
import uuid
import zipfile
import zlib

from cluster_server.errors import Conflict, NotFound, TooLarge, Unprocessable, ValidationError

KINDS = ("scripts", "archives", "keys")
INACTIVE, STAGED, ACTIVE = "inactive", "staged", "active"
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
#: Most bytes an archive may unpack to. Checked while reading member headers, so inspecting a
#: compressed bomb stops early instead of inflating gigabytes on the server.
MAX_UNPACKED = 1024 * 1024 * 1024
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+@-]{0,199}")  # matched whole


def max_bytes():
    """The upload limit: SHOAL_RESOURCE_MAX_BYTES, default 16 MiB."""
    value = os.environ.get("SHOAL_RESOURCE_MAX_BYTES")
    return int(value) if value else DEFAULT_MAX_BYTES


def human_size(n):
    if n >= 1024 * 1024 and n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)} MiB"
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024} KiB"
    return f"{n} bytes"


def check_kind(kind):
    if kind not in KINDS:
        raise ValidationError(f"unknown resource kind '{kind}' (kinds: {', '.join(KINDS)})",
                              {"field": "kind", "value": kind, "reason": "unknown kind"})


NAME_RULE = "use letters, digits and _ . + @ - (no '/', no leading '.', at most 200 characters)"


def check_name(name, what="resource name"):
    """A name is one path component: it becomes a directory on disk."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValidationError(f"bad {what} {name!r}: {NAME_RULE}",
                              {"field": "name", "value": str(name), "reason": "bad name"})


def check_size(size, limit=None):
    """``size`` in bytes against the upload limit."""
    limit = max_bytes() if limit is None else limit
    if size > limit:
        raise TooLarge(f"resource is {size} bytes, over the limit of {human_size(limit)} "
                       "(SHOAL_RESOURCE_MAX_BYTES)",
                       {"field": "body", "size": size, "limit": limit, "reason": "too large"})


# -- archives --------------------------------------------------------------------------------


def _refuse(member, reason):
    raise Unprocessable(f"archive member '{member}' {reason}: refused",
                          {"field": "body", "member": member, "reason": reason})


def _inside(path, links):
    """The components ``path`` reaches from the archive root, following the archive's own
    symlinks the way an extractor's filesystem would; None when it leads outside (or loops).

    Link targets are resolved physically, not lexically: with ``d -> .``, ``d/..`` is the parent
    of the root, which a plain normpath of ``d/..`` would call the root itself.
    """
    parts, pending, hops = [], path.split("/"), 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return None
            parts.pop()
            continue
        parts.append(part)
        target = links.get("/".join(parts))
        if target is not None:
            hops += 1
            if hops > 40 or target.startswith("/"):
                return None
            parts.pop()  # the link's target is relative to the directory holding the link
            pending = target.split("/") + pending
    return parts


def _check_members(members):
    """``members``: (name, type, link target) with type in file, dir, symlink, hardlink, device.

    Member names may not hold '..' at all (GNU tar skips such members too), and no member may be
    written through a symlink of the archive: then every link sits where its name says, and
    following links while resolving a target is what the node's filesystem will do.
    """
    links = {}
    for name, kind, target in members:
        if kind == "symlink":
            links["/".join(p for p in name.split("/") if p not in ("", "."))] = target
    for name, kind, target in members:
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
            _refuse(name, "has an absolute path")
        if ".." in parts:
            _refuse(name, "escapes the archive's directory ('..' in its path)")
        for end in range(1, len(parts)):
            if "/".join(parts[:end]) in links:
                _refuse(name, f"is written through the symlink '{'/'.join(parts[:end])}'")
        if kind == "device":
            _refuse(name, "is a device file")
        if kind == "symlink" and (target.startswith("/") or
                                  _inside("/".join(parts[:-1] + [target]), links) is None):
            _refuse(name, f"is a symlink pointing outside the archive (-> {target})")
        if kind == "hardlink" and (target.startswith("/") or _inside(target, links) is None):
            _refuse(name, f"is a hard link to outside the archive (-> {target})")


def _too_big(unpacked):
    if unpacked > MAX_UNPACKED:
        raise Unprocessable(f"archive unpacks to more than {human_size(MAX_UNPACKED)}: refused",
                              {"field": "body", "reason": "unpacks too large"})


def _tar_members(data):
    """The members of a tar (plain or compressed); None when ``data`` is not one."""
    try:
        tarfile.open(fileobj=io.BytesIO(data), mode="r:*").close()  # reads the first header
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError):
        return None
    members, unpacked = [], 0
    try:
        # ignore_zeros: read on past end-of-archive blocks and bad headers, as ``tar -i`` and
        # GNU tar's resync after a bad header do, so no member can hide behind them.
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*", ignore_zeros=True) as tar:
            for info in tar:
                unpacked += max(info.size, 0)
                _too_big(unpacked)
                if info.issym():
                    kind = "symlink"
                elif info.islnk():
                    kind = "hardlink"
                elif info.isdev():
                    kind = "device"
                else:
                    kind = "dir" if info.isdir() else "file"
                members.append((info.name, kind, info.linkname))
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
        raise Unprocessable(f"damaged tar archive: {exc}",
                              {"field": "body", "reason": "damaged archive"}) from None
    return members


def _zip_members(data):
    """The members of a zip; None when ``data`` is not one."""
    if not zipfile.is_zipfile(io.BytesIO(data)):
        return None
    members, unpacked = [], 0
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for info in archive.infolist():
                unpacked += info.file_size
                _too_big(unpacked)
                # Opening checks that the entry's local header carries the same name as the
                # central directory, which streaming extractors read instead.
                archive.open(info).close()
                # Windows extractors treat '\' as a separator: check names as they see them.
                name, target, kind = info.filename.replace("\\", "/"), "", "file"
                if stat.S_ISLNK(info.external_attr >> 16):
                    if info.file_size > 4096:
                        _refuse(name, "is a symlink with an overlong target")
                    kind, target = "symlink", archive.read(info).decode("utf-8", "replace")
                elif info.is_dir():
                    kind = "dir"
                members.append((name, kind, target))
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error, NotImplementedError) as exc:
        raise Unprocessable(f"damaged zip archive: {exc}",
                              {"field": "body", "reason": "damaged archive"}) from None
    return members


def check_archive(data):
    """Refuse what is not a tar (plain or compressed) or zip archive, and any member that would
    land outside the directory it is unpacked in.

    Both readings are checked when the bytes parse as both: a file can be a valid tar and a
    valid zip at once, and we do not know which one the node's extractor will see.
    """
    readings = [m for m in (_tar_members(data), _zip_members(data)) if m is not None]
    if not readings:
        raise Unprocessable("an archive must be a tar (.tar, .tar.gz, .tgz, .tar.bz2, .tar.xz) "
                              "or zip file", {"field": "body", "reason": "not an archive"})
    for members in readings:
        _check_members(members)


def check_upload(kind, name, data, limit=None):
    """Every check an upload passes before anything is written."""
    check_kind(kind)
    check_name(name)
    check_size(len(data), limit)
    if kind == "archives":
        check_archive(data)


# -- the interface -----------------------------------------------------------------------------


class ResourceStore(abc.ABC):
    """Versioned plugin resources of one tenant.

    A version is described by a dict: ``version``, ``status``, ``size``, ``sha256``,
    ``created_at``. Unknown names and versions raise NotFound; a state change that does not
    apply (activate with nothing staged, recall of an inactive version) raises Conflict.
    """

    def __init__(self, tenant="default"):
        check_name(tenant, "tenant name")
        self.tenant = tenant

    def upload(self, kind, name, data):
        """Check ``data`` (bytes) and store it as a new inactive version; return its number."""
        check_upload(kind, name, data)
        return self.save(kind, name, data)

    @abc.abstractmethod
    def save(self, kind, name, data):
        """Store checked bytes as the next version, inactive; return the version number."""

    @abc.abstractmethod
    def list(self, kind=None):
        """One dict per name: ``kind``, ``name``, ``active``, ``staged``, ``latest``, ``versions``
        (how many)."""

    @abc.abstractmethod
    def versions(self, kind, name):
        """Every version of a name, oldest first."""

    @abc.abstractmethod
    def stage(self, kind, name, version):
        """Make ``version`` the staged candidate."""

    @abc.abstractmethod
    def activate(self, kind, name, version=None):
        """Make ``version`` (default: the staged one) active; return its number."""

    @abc.abstractmethod
    def recall(self, kind, name, version):
        """Send an active or staged version back to inactive."""

    @abc.abstractmethod
    def delete(self, kind, name, version=None):
        """Delete one inactive or staged version, or with no version the whole name (active
        version included); return the deleted version numbers."""

    @abc.abstractmethod
    def read(self, kind, name, version):
        """The bytes of one version."""

    @abc.abstractmethod
    def path(self, kind, name):
        """A local file holding the active version of a name; NotFound when none is active."""


# -- files and SQLite --------------------------------------------------------------------------


class FileResourceStore(ResourceStore):
    """Bytes in ``<home>/resources/<tenant>/<kind>/<name>/<version>`` (mode 0600), rows in the
    ``resources`` table of the Shoal store."""

    COLUMNS = "version, status, size, sha256, created_at"

    def __init__(self, store, home, tenant="default"):
        super().__init__(tenant)
        self.store = store
        self.home = home
        self.root = os.path.join(str(home), "resources", tenant)

    def for_tenant(self, tenant):
        return FileResourceStore(self.store, self.home, tenant)

    def _dir(self, kind, name):
        check_kind(kind)
        check_name(name)
        return os.path.join(self.root, kind, name)

    def _rows(self, kind, name, db=None):
        rows = (db or self.store.db).execute(
            f"SELECT {self.COLUMNS} FROM resources WHERE tenant = ? AND kind = ? AND name = ?"
            " ORDER BY version", [self.tenant, kind, name]).fetchall()
        return [dict(zip(("version", "status", "size", "sha256", "created_at"), row))
                for row in rows]

    def _existing(self, kind, name, db=None):
        rows = self._rows(kind, name, db)
        if not rows:
            raise NotFound(f"{kind}/{name} not found", {"kind": kind, "name": name})
        return rows

    def _row(self, db, kind, name, version):
        for row in self._existing(kind, name, db):
            if row["version"] == version:
                return row
        raise NotFound(f"{kind}/{name} has no version {version}",
                       {"kind": kind, "name": name, "version": version})

    def _set(self, db, kind, name, version, status):
        db.execute("UPDATE resources SET status = ? WHERE tenant = ? AND kind = ? AND name = ?"
                   " AND version = ?", [status, self.tenant, kind, name, version])

    def _demote(self, db, kind, name, status):
        """The version holding ``status`` (if any) goes back to inactive."""
        db.execute("UPDATE resources SET status = ? WHERE tenant = ? AND kind = ? AND name = ?"
                   " AND status = ?", [INACTIVE, self.tenant, kind, name, status])

    def save(self, kind, name, data):
        folder = self._dir(kind, name)
        # Level by level: makedirs gives its mode only to the last directory it makes.
        for level in (os.path.dirname(self.root), self.root, os.path.dirname(folder), folder):
            os.makedirs(level, mode=0o700, exist_ok=True)
        # Write aside first, so a failed transaction leaves no file under a version's name.
        tmp = os.path.join(folder, f".upload-{uuid.uuid4().hex}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        final = None
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            with self.store.write() as db:
                row = db.execute("SELECT last_version FROM resource_names WHERE tenant = ? AND"
                                 " kind = ? AND name = ?", [self.tenant, kind, name]).fetchone()
                version = (row[0] if row else 0) + 1
                db.execute("INSERT OR REPLACE INTO resource_names (tenant, kind, name,"
                           " last_version) VALUES (?, ?, ?, ?)", [self.tenant, kind, name, version])
                db.execute("INSERT INTO resources (tenant, kind, name, version, status, size,"
                           " sha256, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           [self.tenant, kind, name, version, INACTIVE, len(data),
                            hashlib.sha256(data).hexdigest(), time.time()])
                final = os.path.join(folder, str(version))
                os.replace(tmp, final)
        except BaseException:
            for leftover in (tmp, final):
                if leftover and os.path.exists(leftover):
                    os.unlink(leftover)
            raise
        return version

    def list(self, kind=None):
        if kind is not None:
            check_kind(kind)
        rows = self.store.db.execute(
            "SELECT kind, name, MAX(CASE WHEN status = 'active' THEN version END),"
            " MAX(CASE WHEN status = 'staged' THEN version END), MAX(version), COUNT(*)"
            " FROM resources WHERE tenant = ? AND (? IS NULL OR kind = ?)"
            " GROUP BY kind, name ORDER BY kind, name", [self.tenant, kind, kind]).fetchall()
        return [dict(zip(("kind", "name", "active", "staged", "latest", "versions"), row))
                for row in rows]

    def versions(self, kind, name):
        self._dir(kind, name)
        return self._existing(kind, name)

    def stage(self, kind, name, version):
        self._dir(kind, name)
        with self.store.write() as db:
            row = self._row(db, kind, name, version)
            if row["status"] == ACTIVE:
                raise Conflict(f"{kind}/{name} version {version} is active already",
                               {"kind": kind, "name": name, "version": version,
                                "reason": "active"})
            self._demote(db, kind, name, STAGED)
            self._set(db, kind, name, version, STAGED)

    def activate(self, kind, name, version=None):
        self._dir(kind, name)
        with self.store.write() as db:
            if version is None:
                staged = [r for r in self._existing(kind, name, db) if r["status"] == STAGED]
                if not staged:
                    raise Conflict(f"{kind}/{name} has no staged version: stage one, or give "
                                   "the version to activate",
                                   {"kind": kind, "name": name, "reason": "nothing staged"})
                version = staged[0]["version"]
            row = self._row(db, kind, name, version)
            if row["status"] != ACTIVE:
                self._demote(db, kind, name, ACTIVE)
                self._set(db, kind, name, version, ACTIVE)
        return version

    def recall(self, kind, name, version):
        self._dir(kind, name)
        with self.store.write() as db:
            row = self._row(db, kind, name, version)
            if row["status"] == INACTIVE:
                raise Conflict(f"{kind}/{name} version {version} is neither active nor staged",
                               {"kind": kind, "name": name, "version": version,
                                "reason": "inactive"})
            self._set(db, kind, name, version, INACTIVE)

    def delete(self, kind, name, version=None):
        folder = self._dir(kind, name)
        with self.store.write() as db:
            if version is None:
                gone = [r["version"] for r in self._existing(kind, name, db)]
            else:
                row = self._row(db, kind, name, version)
                if row["status"] == ACTIVE:
                    # New tasks would silently fall back to another script of the same name.
                    raise Conflict(f"{kind}/{name} version {version} is active: recall it or "
                                   "activate another version first",
                                   {"kind": kind, "name": name, "version": version,
                                    "reason": "active"})
                gone = [version]
            db.execute(f"DELETE FROM resources WHERE tenant = ? AND kind = ? AND name = ? AND"
                       f" version IN ({','.join('?' * len(gone))})",
                       [self.tenant, kind, name, *gone])
        # Files go after the commit: a crash in between leaves an unused file, never a row
        # whose bytes are missing.
        for number in gone:
            try:
                os.unlink(os.path.join(folder, str(number)))
            except FileNotFoundError:
                pass
        if version is None:
            try:
                os.rmdir(folder)
            except OSError:  # an upload of the same name may be writing there right now
                pass
        return gone

    def read(self, kind, name, version):
        folder = self._dir(kind, name)
        self._row(self.store.db, kind, name, version)
        with open(os.path.join(folder, str(version)), "rb") as f:
            return f.read()

    def path(self, kind, name):
        folder = self._dir(kind, name)
        row = self.store.db.execute(
            "SELECT version FROM resources WHERE tenant = ? AND kind = ? AND name = ? AND"
            " status = ?", [self.tenant, kind, name, ACTIVE]).fetchone()
        if row is None:
            raise NotFound(f"{kind}/{name} has no active version",
                           {"kind": kind, "name": name, "reason": "none active"})
        return os.path.join(folder, str(row[0]))
