"""The fake cloud: one JSON file in SHOAL_HOME, read and written under an exclusive file lock.

Several threads of the server, a restarted server and the tests themselves all touch it, so
every change is a read-modify-write inside ``locked(home)`` and the file is replaced atomically.

Layout of ``fake-cloud.json``::

    {"instances": {id: {...}},      # live instances, labelled with their cluster
     "terminated": {id: {...}},     # deleted ones, kept so a token stays bound to its instance
     "groups": {cluster_id: {...}}, # one "security group" per cluster
     "counters": {...}}             # calls made, per kind and per cluster (fault injection)
"""

import contextlib
import fcntl
import json
import os
import threading

CLOUD_FILE = "fake-cloud.json"
LOG_FILE = "fake-automator.log"
ATTEMPTS_FILE = "fake-automator-attempts.json"

_thread_locks = {}
_guard = threading.Lock()


def _empty():
    return {"instances": {}, "terminated": {}, "groups": {}, "counters": {}}


@contextlib.contextmanager
def file_lock(path):
    """Exclusive between threads (a lock per path) and processes (``flock``)."""
    path = os.path.abspath(os.fspath(path))
    with _guard:
        thread_lock = _thread_locks.setdefault(path, threading.Lock())
    with thread_lock:
        fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _read(path, default):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return default()


def _write(path, data):
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


@contextlib.contextmanager
def locked(home, name=CLOUD_FILE, default=_empty):
    """Yield the state for changing; it is written back when the block ends without error."""
    path = os.path.join(os.fspath(home), name)
    with file_lock(path):
        state = _read(path, default)
        yield state
        _write(path, state)


def load(home):
    """A consistent snapshot of the cloud (for tests)."""
    path = os.path.join(os.fspath(home), CLOUD_FILE)
    with file_lock(path):
        return _read(path, _empty)


def instances(home, cluster_id=None):
    """Live instances, optionally only those labelled with ``cluster_id``."""
    found = load(home)["instances"].values()
    return [i for i in found if cluster_id is None or i["labels"]["cluster"] == cluster_id]


def groups(home):
    return load(home)["groups"]


def bump(state, kind, key):
    """Count one more call of ``kind`` for ``key``; return the new count."""
    counters = state["counters"].setdefault(kind, {})
    counters[key] = counters.get(key, 0) + 1
    return counters[key]


def automator_log(home):
    """The fake automator's log: one dict per line, in the order things happened."""
    path = os.path.join(os.fspath(home), LOG_FILE)
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def nth_matches(spec, n):
    """Does the ``n``-th call match a fault spec? ``3`` / ``"3"``: only the third;
    ``"2,4"``: the second and fourth; ``"3+"``: the third and every later one."""
    if spec in (None, "", 0, "0"):
        return False
    for part in str(spec).split(","):
        part = part.strip()
        if part.endswith("+"):
            if n >= int(part[:-1]):
                return True
        elif part and n == int(part):
            return True
    return False
