"""The local provider with real sandboxes, real processes and real loopback ports."""

import os
import socket
import subprocess
import threading
import time

import pytest

from cluster_server.errors import ProviderError, TransportError
from cluster_server.plugins import NodeSpec, NodeState
from extensions.automators.shell import ShellAutomator
from extensions.providers.local import LocalProvider, node_processes


def spec(node_id="n1", cluster_id="c1", token=None):
    return NodeSpec(cluster_id=cluster_id, node_id=node_id, hostname=f"{node_id}.local",
                    hardwaretype="small", imagetype="any", flavor={}, image={},
                    token=token or f"token-{cluster_id}-{node_id}")


@pytest.fixture
def provider(tmp_path):
    return LocalProvider("local", {}, str(tmp_path / "home"))


def alive(pid):
    """A process that still runs (a zombie has exited; only its parent's wait is missing)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_create_makes_a_sandbox_with_its_own_env(provider):
    info = provider.create(spec())
    assert info.state == NodeState.RUNNING
    assert info.hostname == "n1.local"
    address = info.addresses["bind_v4"]
    assert address.startswith("127.77.") and info.addresses["access_v4"] == address
    # The node's own loopback address really answers: something can listen on it.
    import socket

    with socket.socket() as probe:
        probe.bind((address, 0))
    root = info.extra["root"]
    assert root == os.path.join(provider.home, "nodes", "c1", "n1")
    first, last = info.extra["ports"]
    assert last - first + 1 == 10
    env = dict(line.split("=", 1) for line in
               provider.transport(info).run(["env"]).stdout.splitlines() if "=" in line)
    assert env["HOME"] == os.path.join(root, "home") and os.path.isdir(env["HOME"])
    assert env["TMPDIR"] == os.path.join(root, "tmp")
    assert env["SHOAL_NODE_ROOT"] == root
    assert env["SHOAL_NODE_PIDDIR"] == os.path.join(root, "run")
    assert (env["SHOAL_NODE_PORT_FIRST"], env["SHOAL_NODE_PORT_LAST"]) == (str(first), str(last))
    assert provider.transport(info).run(["pwd"]).stdout.strip() == root


def test_create_is_idempotent_on_the_token(provider):
    first = provider.create(spec())
    again = LocalProvider("local", {}, provider.home).create(spec())  # e.g. after a restart
    assert again.to_dict() == first.to_dict()
    assert os.listdir(os.path.join(provider.home, "nodes", "c1")) == ["n1"]
    with pytest.raises(ProviderError, match="already exists for another request"):
        provider.create(spec(token="another-token"))


def test_nodes_never_share_ports_even_when_created_at_once(tmp_path):
    home = str(tmp_path / "home")
    providers = [LocalProvider("local", {}, home) for _ in range(3)]  # three server threads
    infos, errors = [], []

    def make(i):
        try:
            infos.append(providers[i % 3].create(spec(f"n{i}")))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=make, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    ports = [p for info in infos for p in range(info.extra["ports"][0], info.extra["ports"][1] + 1)]
    assert len(ports) == 24 * 10 == len(set(ports))


def test_ports_in_use_are_skipped(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    busy = listener.getsockname()[1]
    try:
        provider = LocalProvider("local", {"port_base": busy - 3, "port_limit": busy + 40},
                                 str(tmp_path / "home"))
        first, last = provider.create(spec()).extra["ports"]
        assert not first <= busy <= last
    finally:
        listener.close()


def test_an_address_another_home_listens_on_is_skipped(tmp_path):
    # Another SHOAL_HOME's node holds 127.77.0.1 (the first block's address) and serves on it.
    first_home = LocalProvider("local", {}, str(tmp_path / "a"))
    taken = first_home.create(spec()).addresses["bind_v4"]
    listener = socket.socket()
    listener.bind((taken, 0))
    listener.listen()
    try:
        second_home = LocalProvider("local", {}, str(tmp_path / "b"))
        assert second_home.create(spec()).addresses["bind_v4"] != taken
    finally:
        listener.close()


def _free_window(size):
    """The first run of ``size`` bindable ports below the ephemeral range (so that no
    outgoing connection of another process can take one of them meanwhile)."""
    base = 21000
    while not all(LocalProvider._bindable(port) for port in range(base, base + size)):
        base += size
    return base


def test_no_ports_left_is_a_clear_error(tmp_path):
    base = _free_window(20)
    provider = LocalProvider("local", {"port_base": base, "port_limit": base + 19},
                             str(tmp_path / "home"))
    provider.create(spec("n1"))
    provider.create(spec("n2"))
    with pytest.raises(ProviderError, match="no free block of 10 ports"):
        provider.create(spec("n3"))


def test_describe_and_find(provider):
    one, two = provider.create(spec("n1")), provider.create(spec("n2"))
    provider.create(spec("n1", cluster_id="other"))
    states = provider.describe([one, two, "c1/never-made"])
    assert states["c1/n1"].state == states["c1/n2"].state == NodeState.RUNNING
    assert states["c1/never-made"].state == NodeState.GONE
    assert [info.resource_id for info in provider.find("c1")] == ["c1/n1", "c1/n2"]
    provider.delete(two)
    assert provider.describe([two])["c1/n2"].state == NodeState.GONE
    assert [info.resource_id for info in provider.find("c1")] == ["c1/n1"]


DAEMONS = """#!/bin/sh
# A plain background daemon, one that leaves the session, and one that ignores SIGTERM.
nohup sleep 1000 >/dev/null 2>&1 &
echo $! > "$SHOAL_NODE_PIDDIR/sleeper.pid"
setsid sleep 1001 >/dev/null 2>&1 < /dev/null &
echo $! > "$SHOAL_NODE_PIDDIR/escaped.pid"
sh -c 'trap "" TERM; while :; do sleep 1; done' >/dev/null 2>&1 &
echo $! > "$SHOAL_NODE_PIDDIR/stubborn.pid"
echo "daemons up"
"""


def test_delete_leaves_no_process_and_no_file(provider, tmp_path):
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "daemons.sh").write_text(DAEMONS)
    info = provider.create(spec())
    root = info.extra["root"]
    automator = ShellAutomator(str(tmp_path / "home"), script_dirs=[str(scripts)])
    result = automator.run("start", "daemons", {"script": "daemons.sh"},
                           {"cluster_id": "c1", "node_id": "n1"}, provider.transport(info))
    assert result.ok and result.stdout == "daemons up\n", result.stderr
    pids = [int(open(os.path.join(root, "run", name)).read()) for name in
            ("sleeper.pid", "escaped.pid", "stubborn.pid")]
    time.sleep(0.2)  # let setsid and the trap take effect
    assert all(alive(pid) for pid in pids)
    assert os.getsid(pids[1]) == pids[1]  # really left the command's session

    provider.stop_grace = 1.0
    provider.delete(info)

    assert not any(alive(pid) for pid in pids)
    assert not node_processes(root)
    assert not os.path.exists(root)
    assert not os.path.exists(os.path.join(provider.home, "nodes", "c1"))
    assert os.listdir(os.path.join(provider.home, "nodes")) == [".lock"]
    provider.delete(info)  # deleting again is not an error
    with pytest.raises(TransportError, match="is gone"):
        provider.transport(info)


def test_a_pid_file_naming_an_older_process_is_ignored(provider):
    """A stale pid file whose pid now belongs to a process older than the sandbox."""
    older = subprocess.Popen(["sleep", "60"])
    try:
        time.sleep(1.5)  # older than the sandbox by more than the one-second slack
        info = provider.create(spec())
        with open(os.path.join(info.extra["root"], "run", "stale.pid"), "w") as f:
            f.write(f"{older.pid}\n")
        provider.delete(info)
        assert older.poll() is None
    finally:
        older.kill()
        older.wait()


def test_unsafe_ids_are_refused(provider):
    with pytest.raises(ProviderError, match="not a safe path name"):
        provider.create(spec(node_id="../escape"))
