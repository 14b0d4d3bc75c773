"""Where Shoal keeps its files, and the per-user API token."""

import os
import pathlib
import secrets

from cluster_server.errors import ValidationError

DEFAULT_PORT = 8517


def home():
    """``SHOAL_HOME`` (default ``~/.shoal``), created private to the user on first use."""
    path = pathlib.Path(os.environ.get("SHOAL_HOME") or pathlib.Path.home() / ".shoal")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def make_private(path):
    """Make an existing home 0700: it holds the database, whose provider fields include
    secrets. mkdir's mode only applies to a directory it creates."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        os.chmod(path, 0o700)
        return mode
    return None


def token_path(base=None):
    return (base or home()) / "token"


def read_token(base=None):
    """The token, or None when the server has never started in this home."""
    try:
        return token_path(base).read_text().strip() or None
    except FileNotFoundError:
        return None


def ensure_token(base=None):
    """Create the token (mode 0600, written atomically) unless it exists; return it."""
    existing = read_token(base)
    if existing:
        return existing
    path = token_path(base)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32))
    os.replace(tmp, path)
    return read_token(base)


def write_private(path, text):
    """Write a file only the user can read (pid, url, credentials), atomically."""
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


DEFAULT_MAX_NODES = 10_000


def max_nodes():
    """The most nodes one cluster may have on this server: SHOAL_MAX_NODES, default 10,000 (what
    bench/ measures one server handling). It is in the API's contract, so read once at start."""
    value = os.environ.get("SHOAL_MAX_NODES", "")
    if not value:
        return DEFAULT_MAX_NODES
    if not value.isdigit() or int(value) < 1:
        raise ValidationError(f"SHOAL_MAX_NODES must be a whole number above 0, not {value!r}",
                              {"field": "SHOAL_MAX_NODES", "reason": "not a count"})
    return int(value)
