"""Real OpenSSH servers on loopback for tests: ``SSHHost`` and the ``ssh_host`` fixture.

Each host is ``/usr/sbin/sshd -D`` with a private config, a fresh ed25519 host key and client key
in a temp directory, listening on 127.0.0.1 and a free port. It logs in the user running the
tests (root in CI). Needs Debian's ``openssh-server`` (``/run/sshd`` is created if missing).
"""

import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

SSHD = "/usr/sbin/sshd"  # sshd re-execs itself, so it must be started by absolute path


def free_port(address="127.0.0.1"):
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def keygen(path, comment="shoal-test"):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path],
                   check=True, stdout=subprocess.DEVNULL)
    return path


def _children(pid):
    """Pids whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat[stat.rindex(b")") + 2 :].split()[1]) == pid:
                found.append(int(entry))
    return found


class SSHHost:
    """One sshd on ``address``:``port``. ``with SSHHost() as host: ...`` starts and stops it.

    ``host_key`` is the server's public key line (``ssh-ed25519 AAAA…``), ``key_file`` the
    client's private key, ``home`` a private directory for things a test "installs" on this host.
    """

    def __init__(self, address="127.0.0.1", port=None, directory=None):
        if not os.path.exists(SSHD):
            raise RuntimeError(f"{SSHD} not found: apt-get install -y openssh-server")
        self.address = address
        self.port = port or free_port(address)
        self.user = getpass.getuser()
        self._own_dir = directory is None
        self.dir = directory or tempfile.mkdtemp(prefix="shoal-sshd-")
        self.home = os.path.join(self.dir, "home")
        os.makedirs(self.home, exist_ok=True)
        self.key_file = keygen(os.path.join(self.dir, "client_key"))
        self.host_key_file = os.path.join(self.dir, "host_ed25519")
        keygen(self.host_key_file, "shoal-test-host")
        self.config = os.path.join(self.dir, "sshd_config")
        self.log = os.path.join(self.dir, "sshd.log")
        self.proc = None
        with open(os.path.join(self.dir, "authorized_keys"), "w") as f, \
                open(self.key_file + ".pub") as pub:
            f.write(pub.read())
        self._write_config()

    def _write_config(self):
        with open(self.config, "w") as f:
            f.write(
                f"Port {self.port}\n"
                f"ListenAddress {self.address}\n"
                f"HostKey {self.host_key_file}\n"
                f"PidFile {os.path.join(self.dir, 'sshd.pid')}\n"
                f"AuthorizedKeysFile {os.path.join(self.dir, 'authorized_keys')}\n"
                "StrictModes no\n"
                "PasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\n"
                "UsePAM no\n"
                "PermitRootLogin prohibit-password\n"
                "Subsystem sftp internal-sftp\n"
                "LogLevel INFO\n"
            )

    @property
    def host_key(self):
        with open(self.host_key_file + ".pub") as f:
            return " ".join(f.read().split()[:2])

    @property
    def host_entry(self):
        """This host as an entry of the ssh provider's ``hosts`` field."""
        return {"address": self.address, "port": self.port, "user": self.user,
                "key_file": self.key_file, "workdir": os.path.join(self.home, ".shoal")}

    def start(self, timeout=10.0):
        os.makedirs("/run/sshd", exist_ok=True)  # privilege separation directory
        self.proc = subprocess.Popen([SSHD, "-D", "-f", self.config, "-E", self.log],
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.proc.returncode}: {self.read_log()}")
            try:
                with socket.create_connection((self.address, self.port), timeout=1) as s:
                    if s.recv(4).startswith(b"SSH-"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd did not answer on {self.address}:{self.port}: {self.read_log()}")

    def stop(self):
        """Stop the listener and every connection it forked (which would otherwise outlive it,
        as OpenSSH keeps established sessions across a restart): the machine goes away."""
        if self.proc and self.proc.poll() is None:
            connections = _children(self.proc.pid)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            for pid in connections:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        self.proc = None

    def drop_connections(self):
        """Cut every established connection (a network blip); the listener stays up."""
        for pid in _children(self.proc.pid):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def change_host_key(self):
        """Restart on the same port with a new host key (a reinstalled or impostor machine)."""
        self.stop()
        for path in (self.host_key_file, self.host_key_file + ".pub"):
            os.remove(path)
        keygen(self.host_key_file, "shoal-test-host")
        self.start()

    def read_log(self):
        try:
            with open(self.log) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def accepted_connections(self):
        """How many SSH connections the server has authenticated (one log line each)."""
        return self.read_log().count("Accepted publickey for ")

    def close(self):
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc):
        self.close()


@pytest.fixture
def ssh_host():
    """A running SSHHost, stopped and removed after the test."""
    with SSHHost() as host:
        yield host


@pytest.fixture
def ssh_hosts():
    """A factory: ``ssh_hosts(3)`` gives three running hosts, all stopped after the test."""
    started = []

    def make(count=1):
        hosts = []
        for _ in range(count):
            host = SSHHost()
            started.append(host)
            hosts.append(host.start())
        return hosts

    yield make
    for host in started:
        host.close()
