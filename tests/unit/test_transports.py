"""Transports against real parts: local subprocesses and a real sshd on loopback."""

import os
import stat
import threading
import time

import pytest

from cluster_server.errors import TransportError
from extensions.transports import LocalTransport, SSHTransport, fetch_host_key, host_key_line
from tests.sshd import SSHHost, ssh_host  # noqa: F401  (fixture)

# Each word must arrive as one argv element, byte for byte: nothing here may reach a shell.
NASTY = ["a b", "it's", 'say "hi"', "; echo INJECTED", "$(echo INJECTED)", "`id`", "$HOME",
         "*", "a\nb", "\\", "", "-n", "&&", "|", "> /tmp/x"]
PRINT_ARGS = ["python3", "-c", "import json, sys; print(json.dumps(sys.argv[1:]))"]


@pytest.fixture
def local(tmp_path):
    root = tmp_path / "node"
    root.mkdir()
    return LocalTransport(root, {"NODE_VAR": "node value"}, pgid_file=str(tmp_path / "pgids"))


def ssh_transport(host, **kwargs):
    return SSHTransport(host.address, host.port, host.user, host.key_file, host.host_key,
                        workdir=os.path.join(host.home, ".shoal"), **kwargs)


# -- local ----------------------------------------------------------------------------------


def test_local_argv_arrives_literally(local):
    import json

    result = local.run([*PRINT_ARGS, *NASTY])
    assert result.ok, result.stderr
    assert json.loads(result.stdout) == NASTY


def test_local_refuses_a_shell_string(local):
    with pytest.raises(TransportError, match="argv list"):
        local.run("echo hi; rm -rf /")


def test_local_env_cwd_stdin_and_exit_code(local, tmp_path):
    env = local.run(["sh", "-c", 'echo "$NODE_VAR|$CALL_VAR|$PWD"'], env={"CALL_VAR": "x;y"})
    assert env.stdout == f"node value|x;y|{local.root}\n"
    (tmp_path / "node" / "sub").mkdir()
    assert local.run(["pwd"], cwd="sub").stdout.strip() == str(tmp_path / "node" / "sub")
    assert local.run(["cat"], stdin=b"fed in\n").stdout == "fed in\n"
    failed = local.run(["sh", "-c", "echo oops >&2; exit 3"])
    assert (failed.exit_code, failed.stderr, failed.ok) == (3, "oops\n", False)


def test_local_does_not_leak_the_server_environment(local, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak")
    assert "do-not-leak" not in local.run(["env"]).stdout


def test_local_missing_command_is_exit_127(local):
    result = local.run(["no-such-command-shoal"])
    assert result.exit_code == 127 and "not found" in result.stderr


def test_local_daemon_holding_stdout_does_not_hang_run(local, tmp_path):
    started = time.monotonic()
    result = local.run(["sh", "-c", "sleep 30 & echo $! > daemon.pid; echo started"])
    assert result.stdout == "started\n"
    assert time.monotonic() - started < 5
    pid = int((tmp_path / "node" / "daemon.pid").read_text())
    pgids = [int(x) for x in (tmp_path / "pgids").read_text().split()]
    assert os.getpgid(pid) == pgids[-1]  # the daemon stayed in the recorded group
    os.killpg(pgids[-1], 9)


def test_local_put(local, tmp_path, monkeypatch):
    written = local.put("a/b/script.sh", b"#!/bin/sh\necho ok\n", 0o750)
    assert written == str(tmp_path / "node" / "a" / "b" / "script.sh")
    assert stat.S_IMODE(os.stat(written).st_mode) == 0o750
    assert local.run([written]).stdout == "ok\n"
    # A private file is created private (not chmod-ed after its data is in).
    opened = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda path, flags, mode=0o777, **kw: (
        opened.append(mode), real_open(path, flags, mode, **kw))[1])
    secret = local.put("c/config.json", b"{}", 0o600)
    assert opened == [0o600] and stat.S_IMODE(os.stat(secret).st_mode) == 0o600


# -- ssh ------------------------------------------------------------------------------------


def test_ssh_argv_arrives_literally(ssh_host):
    import json

    transport = ssh_transport(ssh_host)
    result = transport.run([*PRINT_ARGS, *NASTY], env={"V": "$(echo INJECTED); x"})
    assert result.ok, result.stderr
    assert json.loads(result.stdout) == NASTY
    echoed = transport.run(["sh", "-c", 'printf %s "$V"'], env={"V": "$(echo INJECTED); x"})
    assert echoed.stdout == "$(echo INJECTED); x"
    transport.close()


def test_ssh_cwd_stdin_exit_code_and_put(ssh_host):
    transport = ssh_transport(ssh_host)
    odd_dir = os.path.join(ssh_host.home, "dir with 'quote'")
    os.makedirs(odd_dir)
    assert transport.run(["pwd"], cwd=odd_dir).stdout.strip() == odd_dir
    assert transport.run(["cat"], stdin=b"fed in\n").stdout == "fed in\n"
    failed = transport.run(["sh", "-c", "echo oops >&2; exit 3"])
    assert (failed.exit_code, failed.stderr) == (3, "oops\n")
    path = os.path.join(ssh_host.home, "new", "dir", "s.sh")
    assert transport.put(path, b"#!/bin/sh\necho $1\n", 0o700) == path
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    assert transport.run([path, "a b"]).stdout == "a b\n"
    transport.close()


def test_ssh_reads_both_streams_to_their_end(ssh_host):
    # Both outputs are read on the calling thread: more than a channel window (2 MiB) of each,
    # interleaved, must all arrive (the tail kept) without the command blocking on a full pipe.
    transport = ssh_transport(ssh_host)
    script = ("import sys\n"
              "for i in range(3000):\n"
              "    sys.stdout.write('o%05d' % i + 'x' * 994 + '\\n')\n"
              "    sys.stderr.write('e%05d' % i + 'y' * 994 + '\\n')\n"
              "sys.exit(7)\n")
    result = transport.run(["python3", "-c", script])
    assert result.exit_code == 7
    assert result.stdout.endswith("o02999" + "x" * 994 + "\n")
    assert result.stderr.endswith("e02999" + "y" * 994 + "\n")
    assert len(result.stdout) == len(result.stderr) == 1024 * 1024  # the last MiB of 3 MB
    assert transport.run(["cat"], stdin=b"x" * 300_000).stdout == "x" * 300_000
    transport.close()


def test_ssh_daemon_holding_stdout_does_not_hang_run(ssh_host):
    transport = ssh_transport(ssh_host)
    started = time.monotonic()
    result = transport.run(["sh", "-c", "sleep 30 & echo started"])
    assert (result.exit_code, result.stdout) == (0, "started\n")
    assert time.monotonic() - started < 25  # the eof grace (2 s), not the daemon's 30 s
    transport.close()


def test_ssh_put_is_private_from_its_first_byte(ssh_host, monkeypatch):
    # The cluster's config goes to nodes with mode 0600: no moment where others can read it.
    import paramiko

    modes, write = [], paramiko.SFTPFile.write

    def spy(self, data):
        modes.append(stat.S_IMODE(self.stat().st_mode))
        return write(self, data)

    monkeypatch.setattr(paramiko.SFTPFile, "write", spy)
    transport = ssh_transport(ssh_host)
    path = os.path.join(ssh_host.home, "private", "config.json")
    transport.put(path, b'{"secret": 1}', 0o600)
    assert modes and set(modes) == {0o600}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    transport.close()


def test_ssh_one_connection_for_many_commands_and_threads(ssh_host):
    transport = ssh_transport(ssh_host)
    for i in range(20):
        assert transport.run(["echo", str(i)]).stdout == f"{i}\n"
    results, errors = [], []

    def worker(i):
        try:
            results.append(transport.run(["echo", str(i)]).stdout)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    # More threads than sshd's default MaxSessions (10): the transport must queue them.
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(results) == sorted(f"{i}\n" for i in range(20))
    assert transport.connections == 1
    assert ssh_host.accepted_connections() == 1  # counted by the server, not by us
    transport.close()


def test_ssh_reconnects_after_close(ssh_host):
    transport = ssh_transport(ssh_host)
    transport.run(["true"])
    transport.close()
    assert transport.run(["echo", "again"]).stdout == "again\n"
    assert ssh_host.accepted_connections() == 2
    transport.close()


def test_ssh_reconnects_after_the_connection_drops(ssh_host):
    transport = ssh_transport(ssh_host)
    transport.run(["true"])
    ssh_host.drop_connections()
    time.sleep(0.2)  # let the close reach the client
    assert transport.run(["echo", "back"]).stdout == "back\n"
    assert transport.connections == ssh_host.accepted_connections() == 2
    transport.close()


def test_fetch_host_key_reads_the_server_key(ssh_host):
    assert fetch_host_key(ssh_host.address, ssh_host.port) == ssh_host.host_key


def test_changed_host_key_is_refused(ssh_host):
    pinned = ssh_host.host_key
    ssh_host.change_host_key()
    transport = SSHTransport(ssh_host.address, ssh_host.port, ssh_host.user, ssh_host.key_file,
                             pinned)
    with pytest.raises(TransportError) as caught:
        transport.run(["touch", os.path.join(ssh_host.home, "must-not-exist")])
    message = caught.value.message
    assert message.startswith(f"host key for 127.0.0.1:{ssh_host.port} changed: expected "
                              "ssh-ed25519 SHA256:")
    assert ", got ssh-ed25519 SHA256:" in message and message.endswith("; refusing to connect")
    assert not os.path.exists(os.path.join(ssh_host.home, "must-not-exist"))
    assert ssh_host.accepted_connections() == 0  # refused before authenticating


def test_wrong_client_key_is_a_clear_error(ssh_host, tmp_path):
    from tests.sshd import keygen

    other = keygen(str(tmp_path / "other_key"))
    transport = SSHTransport(ssh_host.address, ssh_host.port, ssh_host.user, other,
                             ssh_host.host_key)
    with pytest.raises(TransportError, match="authentication failed"):
        transport.run(["true"])


def test_unreachable_host_is_a_clear_error():
    from tests.sshd import free_port

    port = free_port()
    with pytest.raises(TransportError, match=f"cannot connect to .*127.0.0.1:{port}"):
        fetch_host_key("127.0.0.1", port, timeout=2)


def test_ssh_transport_needs_a_pinned_key():
    with pytest.raises(TransportError, match="no pinned host key"):
        SSHTransport("127.0.0.1", 2222, "root", "/nonexistent", None)


def test_trust_first_key_pins_what_the_first_connection_saw(ssh_host):
    transport = SSHTransport(ssh_host.address, ssh_host.port, ssh_host.user, ssh_host.key_file,
                             None, trust_first_key=True)
    assert transport.host_key is None
    assert transport.run(["echo", "first"]).stdout == "first\n"
    assert host_key_line(transport.host_key) == ssh_host.host_key
    transport.close()
    ssh_host.change_host_key()  # a reconnect must meet the key it pinned
    with pytest.raises(TransportError, match="refusing to connect"):
        transport.run(["true"])


def test_ssh_command_line_quotes_every_word():
    line = SSHTransport.command_line(["echo", "a b", "; rm -rf /"], env={"X": "1 2"}, cwd="/d d")
    assert line == ("env 'X=1 2' sh -c 'cd -- \"$1\" && shift && exec \"$@\"' sh '/d d' "
                    "echo 'a b' '; rm -rf /'")


def test_several_hosts_side_by_side():
    with SSHHost() as one, SSHHost() as two:
        assert one.port != two.port and one.host_key != two.host_key
        for host in (one, two):
            transport = ssh_transport(host)
            assert transport.run(["echo", str(host.port)]).stdout == f"{host.port}\n"
            transport.close()
