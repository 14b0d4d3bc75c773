"""The fake cloud: one JSON file in SHOAL_HOME and its journal, under an exclusive file lock.

Several threads of the server, a restarted server and the tests themselves all touch it, so
every change is a read-modify-write inside ``locked(home)``. A change appends the entries it
touched to a journal (``fake-cloud.json.log``, one JSON line each, written with one ``write``)
instead of rewriting the whole file: at 10,000 instances a rewrite per call made a create or
delete of the cluster quadratic (25 calls a second at 1,000 nodes). The journal is folded into
the file once it holds more entries than the file (so each entry is rewritten a bounded number of
times), and the state read last is kept in memory while neither file changed.

Layout of ``fake-cloud.json``::

    {"generation": N,               # the journal's entries apply to this generation only
     "state": {"instances": {id: {...}},      # live instances, labelled with their cluster
               "terminated": {id: {...}},     # deleted ones, kept so a token stays bound
               "groups": {cluster_id: {...}}, # one "security group" per cluster
               "counters": {...}}}            # calls made, per kind and per cluster (faults)

The journal's first line is ``{"generation": N}``; each other line sets (``"v"``) or removes
an entry at a path of one or two keys (``"p"``): ``["instances", "i-12ab"]``.
"""

import contextlib
import fcntl
import json
import os
import threading

CLOUD_FILE = "fake-cloud.json"
LOG_FILE = "fake-automator.log"
ATTEMPTS_FILE = "fake-automator-attempts.json"
JOURNAL = ".log"  # suffix of a state file's journal

_thread_locks = {}
_guard = threading.Lock()
_cache = {}  # state file -> (stamp of its files, Tracked state, journal entries)


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


class Tracked(dict):
    """A state, or one of its sections, that notes which entries a change may have touched:
    at the top, the keys written; in a section, every key looked up (the value read may be
    changed in place, as a record's poll count)."""

    def __init__(self, data, touched, section=None):
        super().__init__(data)
        self.touched, self.section = touched, section

    def _note(self, key):
        self.touched.add((self.section, key) if self.section is not None else (key,))

    def _read(self, key):
        if self.section is not None:
            self._note(key)

    def __getitem__(self, key):
        self._read(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self._read(key)
        return super().get(key, default)

    def setdefault(self, key, default=None):
        if self.section is not None or key not in self:
            self._note(key)
        if self.section is None and isinstance(default, dict):
            default = Tracked(default, self.touched, key)
        return super().setdefault(key, default)

    def __setitem__(self, key, value):
        self._note(key)
        if self.section is None and isinstance(value, dict):
            value = Tracked(value, self.touched, key)
        super().__setitem__(key, value)

    def pop(self, key, *default):
        self._note(key)
        return super().pop(key, *default)

    def __delitem__(self, key):
        self._note(key)
        super().__delitem__(key)


def _tracked(state):
    touched = set()
    return Tracked({key: Tracked(value, touched, key) if isinstance(value, dict) else value
                    for key, value in state.items()}, touched)


def _stamp(path):
    stamps = []
    for name in (path, path + JOURNAL):
        try:
            info = os.stat(name)
            stamps.append((info.st_ino, info.st_mtime_ns, info.st_size))
        except FileNotFoundError:
            stamps.append(None)
    return tuple(stamps)


def _load_files(path, default):
    """(generation, state, journal entries applied) from the file and its journal."""
    try:
        with open(path) as f:
            saved = json.load(f)
    except FileNotFoundError:
        saved = {"generation": 0, "state": default()}
    if "generation" not in saved:  # a file from before the journal: the state itself
        saved = {"generation": 0, "state": saved}
    state, applied = saved["state"], 0
    try:
        with open(path + JOURNAL) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        lines = []
    # A journal left by a fold that stopped before truncating it belongs to the older
    # generation: its entries are in the file already.
    if lines and json.loads(lines[0]).get("generation") == saved["generation"]:
        for line in lines[1:]:
            if not line.strip():
                continue
            entry = json.loads(line)
            *parents, key = entry["p"]
            target = state
            for parent in parents:
                target = target.setdefault(parent, {})
            if "v" in entry:
                target[key] = entry["v"]
            else:
                target.pop(key, None)
            applied += 1
    return saved["generation"], state, applied


def _read(path, default):
    return _load_files(path, default)[1]


def _write(path, data):
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _size(state):
    return sum(len(value) if isinstance(value, dict) else 1 for value in state.values())


def _fold(path, generation, state):
    """Write the whole state as the next generation and start its journal empty."""
    _write(path, {"generation": generation + 1, "state": state})
    with open(path + JOURNAL, "w") as f:
        f.write(json.dumps({"generation": generation + 1}) + "\n")


@contextlib.contextmanager
def locked(home, name=CLOUD_FILE, default=_empty, write=True):
    """Yield the state for changing; what the block touched is written when it ends without
    error. ``write=False``: only to read it (nothing is written; do not change it)."""
    path = os.path.abspath(os.path.join(os.fspath(home), name))
    with file_lock(path):
        stamp = _stamp(path)
        cached = _cache.get(path)
        if cached is None or cached[0] != stamp:
            generation, plain, applied = _load_files(path, default)
            if stamp[1] is None:
                _fold(path, generation - 1, plain)  # the journal's first line names the file
                generation, plain, applied = _load_files(path, default)
            cached = _cache[path] = [_stamp(path), _tracked(plain), applied, generation]
        state = cached[1]
        state.touched.clear()
        try:
            yield state
        except BaseException:
            _cache.pop(path, None)  # the block may have changed the state half way
            raise
        entries = []
        if not write:
            state.touched.clear()
        for where in sorted(state.touched, key=repr):
            target = state if len(where) == 1 else dict.get(state, where[0], {})
            if where[-1] in target:
                entries.append(json.dumps({"p": list(where), "v": dict.get(target, where[-1])}))
            else:
                entries.append(json.dumps({"p": list(where)}))
        state.touched.clear()
        if not entries:
            return
        fd = os.open(path + JOURNAL, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, ("\n".join(entries) + "\n").encode())
        finally:
            os.close(fd)
        cached[2] += len(entries)
        if cached[2] > max(1000, _size(state)):
            _fold(path, cached[3], state)
            cached[2], cached[3] = 0, cached[3] + 1
        cached[0] = _stamp(path)


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
