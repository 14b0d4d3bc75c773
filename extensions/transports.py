"""How automators reach a node: a local subprocess in a sandbox, or one pinned SSH connection.

Commands are always argv lists. Locally they go to ``execve`` unchanged; over SSH the remote side
is a shell, so the argv is quoted once with ``shlex.join`` right here and nowhere else.
"""

import base64
import collections
import errno
import fcntl
import getpass
import os
import posixpath
import re
import select
import shlex
import socket
import subprocess
import tempfile
import threading
import time
import uuid

import paramiko

from cluster_server.errors import TransportError
from cluster_server.plugins import ActionResult, Transport

#: Most output a transport keeps per stream (the tail); automators store less.
OUTPUT_LIMIT = 1024 * 1024

#: Variables a local node inherits from the server; everything else comes from the node.
PASSTHROUGH_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "USER", "LOGNAME", "SHELL", "TERM")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_argv(argv):
    """``argv`` as a list of str; a shell string is refused, not split."""
    if isinstance(argv, (str, bytes)) or not argv:
        raise TransportError(f"a command must be a non-empty argv list, not {argv!r}")
    return [os.fspath(arg) if isinstance(arg, os.PathLike) else str(arg) for arg in argv]


def check_env(env):
    env = dict(env or {})
    for name, value in env.items():
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise TransportError(f"invalid environment variable name {name!r}")
        if not isinstance(value, str):
            raise TransportError(f"environment variable {name} must be a string, not {value!r}")
        if "\0" in value:
            raise TransportError(f"environment variable {name} contains a NUL byte")
    return env


class _Tail:
    """The last ``limit`` bytes written to it."""

    def __init__(self, limit=OUTPUT_LIMIT):
        self.limit = limit
        self.chunks = collections.deque()
        self.size = 0

    def add(self, data):
        self.chunks.append(data)
        self.size += len(data)
        while self.size - len(self.chunks[0]) >= self.limit:
            self.size -= len(self.chunks.popleft())

    def text(self):
        return b"".join(self.chunks)[-self.limit :].decode("utf-8", errors="replace")


def _file_tail(f, limit=OUTPUT_LIMIT):
    size = f.seek(0, os.SEEK_END)
    f.seek(max(0, size - limit))
    return f.read().decode("utf-8", errors="replace")


class LocalTransport(Transport):
    """Runs commands as local subprocesses inside a node's sandbox directory.

    Each command starts in its own session (so its process group id is its pid) and that id is
    appended to ``pgid_file``: whoever deletes the node can find daemons the command left behind.
    Output goes to unlinked temp files rather than pipes, so a daemon that keeps the command's
    stdout open cannot make ``run`` hang.
    """

    def __init__(self, root, env=None, pgid_file=None, workdir=None):
        self.root = os.path.abspath(root)
        self.env = check_env(env)
        self.pgid_file = pgid_file
        self.workdir = workdir or os.path.join(self.root, ".shoal")

    def _path(self, path):
        return os.path.join(self.root, os.fspath(path))  # an absolute path stays as it is

    def _environ(self, env):
        base = {name: os.environ[name] for name in PASSTHROUGH_ENV if name in os.environ}
        base.setdefault("PATH", DEFAULT_PATH)
        base.update(self.env)
        base.update(check_env(env))
        return base

    def run(self, argv, env=None, stdin=None, cwd=None):
        argv = check_argv(argv)
        environ = self._environ(env)
        workdir = self._path(cwd) if cwd is not None else self.root
        if not os.path.isdir(workdir):
            raise TransportError(f"working directory {workdir} does not exist")
        if isinstance(stdin, str):
            stdin = stdin.encode()
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
                tempfile.TemporaryFile() as inp:
            if stdin:
                inp.write(stdin)
                inp.seek(0)
            try:
                proc = subprocess.Popen(
                    argv, stdin=inp if stdin else subprocess.DEVNULL, stdout=out, stderr=err,
                    cwd=workdir, env=environ, start_new_session=True, close_fds=True,
                )
            except FileNotFoundError:
                return ActionResult(127, "", f"{argv[0]}: command not found\n")
            except OSError as exc:  # permission denied, exec format error
                return ActionResult(126, "", f"{argv[0]}: {exc.strerror or exc}\n")
            self._record(proc.pid)
            code = proc.wait()
            return ActionResult(128 - code if code < 0 else code, _file_tail(out), _file_tail(err))

    def _record(self, pgid):
        if self.pgid_file:
            # One short O_APPEND write per command: atomic, so no lock is needed between threads.
            fd = os.open(self.pgid_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, f"{pgid}\n".encode())
            finally:
                os.close(fd)

    def put(self, path, data, mode=0o644):
        target = self._path(path)
        os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
        tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
        # Created with its mode (a 0600 file is never readable by others, not even while it is
        # written); chmod as well, since the umask may have taken bits off.
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
        os.replace(tmp, target)
        return target


def parse_host_key(host_key):
    """A ``"<type> <base64>"`` public key line (as in known_hosts) as a paramiko PKey."""
    try:
        key_type, blob = host_key.split()[:2]
        return paramiko.PKey.from_type_string(key_type, base64.b64decode(blob))
    except Exception as exc:
        raise TransportError(f"invalid host key {host_key!r}: {exc}") from exc


def host_key_line(key):
    return f"{key.get_name()} {key.get_base64()}"


def fingerprint(key):
    """``ssh-ed25519 SHA256:…`` as OpenSSH prints it."""
    return f"{key.get_name()} {key.fingerprint}"


def _why(exc):
    return str(exc) or type(exc).__name__


def _hostport(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def fetch_host_key(host, port=22, timeout=10.0):
    """Read the host key a server presents, as ``"<type> <base64>"``. Used once, to pin it.

    The key type is the one paramiko prefers, which is also the type a later connection pinned
    to this key asks for first.
    """
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise TransportError(f"cannot connect to {_hostport(host, port)}: {exc}") from exc
    transport = paramiko.Transport(sock)
    try:
        transport.banner_timeout = timeout
        transport.start_client(timeout=timeout)
        return host_key_line(transport.get_remote_server_key())
    except (OSError, EOFError, paramiko.SSHException) as exc:
        raise TransportError(
            f"cannot read the host key of {_hostport(host, port)}: {_why(exc)}"
        ) from exc
    finally:
        transport.close()


class _TrustFirstKey(paramiko.MissingHostKeyPolicy):
    """Accepts the key a server presents when none is pinned yet, and keeps it."""

    def __init__(self):
        self.key = None

    def missing_host_key(self, client, hostname, key):
        self.key = key


class SSHTransport(Transport):
    """One SSH connection per node, shared by threads; one channel per command.

    The server must present ``host_key`` (pinned at CONFIRM); anything else is refused. With
    ``trust_first_key`` and no ``host_key`` (CONFIRM's first contact), the key the first
    connection sees is taken and pinned: every later connection must present it, and the
    connection that read it is the one commands use, so pinning costs no handshake of its own.
    At most
    ``max_sessions`` channels are open at once, below OpenSSH's default ``MaxSessions 10``, so
    many threads queue here instead of being refused by the server.
    """

    #: After a command exits, how long to wait for the rest of its output (a daemon it started
    #: may hold the channel open; its output is then cut off, as with ``ssh host cmd``).
    eof_grace = 2.0

    def __init__(self, host, port=22, user=None, key_file=None, host_key=None, workdir=".shoal",
                 connect_timeout=10.0, max_sessions=8, trust_first_key=False):
        if not host_key and not trust_first_key:
            raise TransportError(
                f"no pinned host key for {_hostport(host, port)}; the node must be confirmed first"
            )
        self.host = host
        self.port = int(port)
        self.user = user or getpass.getuser()
        self.key_file = key_file
        self.host_key = parse_host_key(host_key) if host_key else None  # None: not seen yet
        self.workdir = workdir
        self.connect_timeout = connect_timeout
        self.connections = 0  # how many TCP connections this transport has opened
        self._client = None
        self._lock = threading.Lock()
        self._sessions = threading.BoundedSemaphore(max_sessions)

    @property
    def address(self):
        return _hostport(self.host, self.port)

    def _connect(self):
        client = paramiko.SSHClient()
        first_contact = None
        if self.host_key is None:
            first_contact = _TrustFirstKey()
            client.set_missing_host_key_policy(first_contact)
        else:
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            name = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
            client.get_host_keys().add(name, self.host_key.get_name(), self.host_key)
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
            # Without it, small channel requests wait on delayed ACKs (~40 ms per command).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.connect(
                self.host, self.port, username=self.user, key_filename=self.key_file, sock=sock,
                look_for_keys=False, allow_agent=False, timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout, auth_timeout=self.connect_timeout,
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise TransportError(
                f"host key for {self.address} changed: expected {fingerprint(exc.expected_key)}, "
                f"got {fingerprint(exc.key)}; refusing to connect",
                {"host": self.host, "port": self.port, "expected": host_key_line(exc.expected_key),
                 "got": host_key_line(exc.key)},
            ) from exc
        except paramiko.AuthenticationException as exc:
            client.close()
            raise TransportError(
                f"SSH authentication failed for {self.user}@{self.address} "
                f"with key {self.key_file}: {exc}"
            ) from exc
        except (OSError, EOFError, paramiko.SSHException) as exc:
            client.close()
            raise TransportError(
                f"cannot connect to {self.user}@{self.address}: {_why(exc)}"
            ) from exc
        client.get_transport().set_keepalive(30)
        if first_contact is not None:
            self.host_key = first_contact.key  # pinned from now on, for every reconnect
        self.connections += 1
        return client

    def _transport(self):
        """The live connection, made (again) if there is none or it was dropped."""
        with self._lock:
            current = self._client.get_transport() if self._client else None
            if current is None or not current.is_active():
                if self._client:
                    self._client.close()
                self._client = None
                self._client = self._connect()
            return self._client.get_transport()

    def _open(self, what, opener):
        """Open a channel with ``opener(transport)``. If the connection turns out to be dead,
        reconnect once: nothing ran on the channel yet, so trying again is safe. A refusal on
        a live connection is reported as it is (reconnecting would cut other threads off)."""
        transport = self._transport()
        try:
            return opener(transport)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            if transport.is_active():
                raise TransportError(f"cannot open {what} on {self.address}: {_why(exc)}") from exc
        try:
            return opener(self._transport())
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise TransportError(f"cannot open {what} on {self.address}: {_why(exc)}") from exc

    def _channel(self):
        return self._open("a session", lambda t: t.open_session(timeout=self.connect_timeout))

    def _sftp(self):
        return self._open("SFTP", paramiko.SFTPClient.from_transport)

    @staticmethod
    def command_line(argv, env=None, cwd=None):
        """The one shell string sent to the server: every word quoted by ``shlex.join``."""
        argv = check_argv(argv)
        words = []
        env = check_env(env)
        if env:
            if "=" in argv[0]:
                raise TransportError(f"command name {argv[0]!r} contains '='")
            words += ["env", *(f"{name}={value}" for name, value in env.items())]
        if cwd is not None:
            words += ["sh", "-c", 'cd -- "$1" && shift && exec "$@"', "sh", os.fspath(cwd)]
        return shlex.join(words + argv)

    def run(self, argv, env=None, stdin=None, cwd=None):
        command = self.command_line(argv, env, cwd)
        if isinstance(stdin, str):
            stdin = stdin.encode()
        with self._sessions:
            chan = self._channel()
            try:
                return self._exec(chan, command, stdin)
            finally:
                chan.close()

    def _exec(self, chan, command, stdin):
        out, err = _Tail(), _Tail()

        def feed():
            try:
                if stdin:
                    chan.sendall(stdin)
                chan.shutdown_write()
            except (OSError, EOFError, paramiko.SSHException):
                pass  # the command exited without reading its input

        try:
            chan.exec_command(command)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise TransportError(f"cannot run a command on {self.address}: {exc}") from exc
        # Input, when there is some, is written by a thread of its own (the command may read it
        # only as it writes); both outputs are read here. Reading them on two more threads per
        # command cost two thread starts and joins, and their turns at the interpreter, for
        # every action.
        feeder = threading.Thread(target=feed, daemon=True) if stdin else None
        if feeder:
            feeder.start()
        else:
            feed()
        # Readable while either stream holds data, and once EOF came. poll, not select: a
        # server with thousands of connections has descriptors above select's 1024.
        wake = select.poll()
        wake.register(chan.fileno(), select.POLLIN)
        deadline = None

        def drain():
            while chan.recv_ready():
                out.add(chan.recv(32768))
            while chan.recv_stderr_ready():
                err.add(chan.recv_stderr(32768))

        try:
            while True:
                drain()
                if chan.eof_received or chan.closed:
                    break  # both streams read to their end
                wait = 1000
                if chan.exit_status_ready():
                    # Exited, but a daemon it started may hold the streams open: wait for
                    # the end of the output only a little.
                    deadline = deadline or time.monotonic() + self.eof_grace
                    if time.monotonic() > deadline:
                        break
                    wait = 100
                # Output and EOF wake the poll; an exit status alone (that daemon) does not,
                # so look again every second while the command runs.
                wake.poll(wait)
            drain()  # what came between the last reads and the end
        except (OSError, EOFError, paramiko.SSHException):
            pass  # the connection went: the exit status below says so
        code = chan.recv_exit_status()  # set on exit-status, or when the channel closes
        chan.close()  # wakes the feeder if it is still blocked
        if feeder:
            feeder.join()
        if code == -1:
            transport = self._client.get_transport() if self._client else None
            if transport is None or not transport.is_active():
                raise TransportError(f"connection to {self.address} lost while running a command")
            code = 255  # killed by a signal: the server sent exit-signal, not exit-status
        return ActionResult(code, out.text(), err.text())

    def put(self, path, data, mode=0o644):
        """Write ``data`` to ``path`` (relative paths are under the login directory) via SFTP."""
        path = os.fspath(path)
        with self._sessions:
            sftp = self._sftp()
            try:
                self._makedirs(sftp, posixpath.dirname(path))
                tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
                # The mode is set before any data is written: a 0600 file is never readable by
                # others (SFTP's open creates the file with the server's default mode).
                with sftp.open(tmp, "wbx") as f:
                    f.chmod(mode)
                    f.write(data)
                sftp.posix_rename(tmp, path)
                return sftp.normalize(path)
            except OSError as exc:
                raise TransportError(f"cannot write {path} on {self.address}: {exc}") from exc
            finally:
                sftp.close()

    @staticmethod
    def _makedirs(sftp, path):
        if not path or path in ("/", "."):
            return
        try:
            sftp.stat(path)
            return
        except FileNotFoundError:
            pass
        SSHTransport._makedirs(sftp, posixpath.dirname(path))
        try:
            sftp.mkdir(path, 0o700)  # Shoal's own files only: scripts and the cluster's config
        except OSError as exc:
            if exc.errno not in (None, errno.EEXIST):  # SFTP reports EEXIST as a bare failure
                raise
            sftp.stat(path)  # only a directory someone else just made is fine

    def close(self):
        """Drop the connection; the next command opens a new one."""
        with self._lock:
            if self._client:
                self._client.close()
            self._client = None


class DockerExecTransport(Transport):
    """Runs commands in a container with ``docker exec`` through the docker SDK.

    ``client`` is a ``docker.DockerClient`` (this module does not import the SDK). Output goes to
    files inside the container rather than to the exec stream, so a daemon started by a command
    cannot keep ``run`` waiting; a small fixed ``sh`` script does the plumbing and the argv is
    passed to it as positional arguments, never pasted into it. Relative paths are under ``home``.
    """

    #: $1: scratch directory, $2: "1" to change to $3 first; the command follows.
    WRAPPER = (
        'd=$1; shift; if [ "$1" = 1 ]; then cd -- "$2" || exit 126; fi; shift 2; '
        'i=/dev/null; [ -f "$d/in" ] && i="$d/in"; '
        '"$@" <"$i" >"$d/out" 2>"$d/err"; r=$?; '
        f'tail -c {OUTPUT_LIMIT} "$d/out"; tail -c {OUTPUT_LIMIT} "$d/err" >&2; '
        'rm -rf -- "$d"; exit $r'
    )

    def __init__(self, client, container_id, user=None, home="/root", workdir=".shoal"):
        self.client = client
        self.container_id = container_id
        self.user = user or ""
        self.home = home
        self.workdir = posixpath.join(home, workdir)

    def _path(self, path):
        return posixpath.join(self.home, os.fspath(path))  # an absolute path stays as it is

    def _container(self):
        import docker.errors  # the SDK is there whenever a client was handed in

        try:
            return self.client.containers.get(self.container_id)
        except docker.errors.NotFound:
            raise TransportError(f"container {self.container_id[:12]} is gone") from None
        except docker.errors.DockerException as exc:
            raise TransportError(f"cannot reach container {self.container_id[:12]}: {exc}") from exc

    def _exec(self, container, argv, env=None):
        import docker.errors

        try:
            code, (out, err) = container.exec_run(argv, environment=env or None, user=self.user,
                                                  demux=True)
        except docker.errors.DockerException as exc:
            raise TransportError(f"cannot exec in container {self.container_id[:12]}: {exc}") \
                from exc
        return code, (out or b"").decode("utf-8", "replace"), (err or b"").decode("utf-8",
                                                                                    "replace")

    def _put_archive(self, container, directory, name, data, mode):
        import io
        import tarfile

        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            tar.addfile(info, io.BytesIO(data))
        if not container.put_archive(directory, buffer.getvalue()):
            raise TransportError(f"cannot write {directory}/{name} in container "
                                 f"{self.container_id[:12]}")

    def run(self, argv, env=None, stdin=None, cwd=None):
        argv = check_argv(argv)
        env = check_env(env)
        container = self._container()
        scratch = f".shoal-exec-{uuid.uuid4().hex}"
        if isinstance(stdin, str):
            stdin = stdin.encode()
        if stdin:
            self._put_archive(container, "/tmp", f"{scratch}/in", stdin, 0o600)
        where = ["1", self._path(cwd)] if cwd is not None else ["0", ""]
        code, out, err = self._exec(
            container, ["sh", "-c", "umask 077; mkdir -p \"$1\" && " + self.WRAPPER, "sh",
                        f"/tmp/{scratch}", *where, *argv], env)
        if code is None:
            raise TransportError(f"lost the command in container {self.container_id[:12]}")
        return ActionResult(code, out, err)

    def put(self, path, data, mode=0o644):
        target = self._path(path)
        container = self._container()
        directory, name = posixpath.split(target)
        code, _, err = self._exec(container, ["mkdir", "-p", "--", directory])
        if code != 0:
            raise TransportError(f"cannot make {directory} in container "
                                 f"{self.container_id[:12]}: {err.strip()}")
        self._put_archive(container, directory, name, data, mode)
        return target


def ssh_keypair(path, comment="shoal"):
    """An ed25519 key pair at ``path`` (private, 0600) and ``path.pub``, made once and then
    read; safe across threads and processes. Returns the public key line."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    folder = os.path.dirname(path) or "."
    os.makedirs(folder, mode=0o700, exist_ok=True)
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(path + ".pub"):
            key = ed25519.Ed25519PrivateKey.generate()
            private = key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.OpenSSH,
                                        serialization.NoEncryption())
            public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                   serialization.PublicFormat.OpenSSH)
            _write_file(path, private, 0o600)
            # The public half last: its presence means the pair is complete.
            _write_file(path + ".pub", public + f" {comment}\n".encode(), 0o644)
    with open(path + ".pub") as f:
        return f.read().strip()


def _write_file(path, data, mode):
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
