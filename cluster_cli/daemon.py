"""Start, stop and find the local Shoal server process (pid and log under SHOAL_HOME)."""

import fcntl
import json
import os
import signal
import subprocess
import sys
import time

from cluster_cli.client import ClientError, local_server_url, shoal_home


def _state(home):
    try:
        return json.loads((home / "server.json").read_text())
    except (OSError, ValueError):
        return None


def _alive(pid):
    """True for a live process; a zombie (dead, not yet reaped) is not alive."""
    try:
        os.kill(pid, 0)
    except (OSError, TypeError):
        return False
    try:  # a zombie still answers kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return True


def running_pid(home=None):
    """The pid of the live server of this SHOAL_HOME, or None."""
    state = _state(home or shoal_home())
    if not state or not isinstance(state.get("pid"), int):
        return None
    return state["pid"] if _alive(state["pid"]) else None


def log_path(home=None):
    return (home or shoal_home()) / "server.log"


def start(port=None, announce=False, wait=30.0, settings=None):
    """Start the server in the background unless it runs; return its URL.

    ``settings`` (e.g. {"SHOAL_PARALLELISM": "32"}) go into the server's environment.
    """
    home = shoal_home()
    # Several commands may start at once with no server running: one of them starts it, the
    # others wait on this lock and then find it running.
    with open(home / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _start(home, port, announce, wait, settings)


def _start(home, port, announce, wait, settings):
    if running_pid(home):
        return local_server_url(home)
    if announce:
        print(f"Starting the Shoal server (log: {log_path(home)})", file=sys.stderr)
    (home / "server.json").unlink(missing_ok=True)
    port = port if port is not None else os.environ.get("SHOAL_PORT", "0")
    with open(log_path(home), "ab") as log:
        started_at = log.tell()
        process = subprocess.Popen(
            [sys.executable, "-m", "cluster_server.serve", "--port", str(port)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            env={**os.environ, **(settings or {})},
            start_new_session=True,  # survives the shell that started it
        )
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        state = _state(home)
        if state and state.get("pid") == process.pid:
            return state["url"]
        if process.poll() is not None:
            reason = _start_error(log_path(home), started_at)
            raise ClientError(f"the Shoal server exited at start (code {process.returncode})"
                              f"{': ' + reason if reason else ''}; see {log_path(home)}",
                              code="unreachable")
        time.sleep(0.05)
    raise ClientError(f"the Shoal server did not start within {wait:.0f} s; "
                      f"see {log_path(home)}", code="unreachable")


def _start_error(path, offset):
    """The reason the server logged for not starting (its last ERROR line from shoal.server,
    written after ``offset``), or None."""
    marker = " ERROR shoal.server: "
    with open(path, "rb") as log:
        log.seek(offset)
        lines = log.read().decode(errors="replace").splitlines()
    reasons = [line.split(marker, 1)[1] for line in lines if marker in line]
    return reasons[-1] if reasons else None


def stop(wait=30.0):
    """Stop the server (SIGTERM, then SIGKILL after ``wait``); return the pid stopped or None."""
    home = shoal_home()
    pid = running_pid(home)
    if pid is None:
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if not _alive(pid):
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
    (home / "server.json").unlink(missing_ok=True)
    return pid
