"""``shoal cluster shell`` and ``shoal cluster exec``: the environment container of a cluster.

The server prepares the container (image, mounts, ssh config, inventory); this module only
attaches the terminal to it, or streams a command's output, and removes it at the end. The
docker SDK is imported only here, only when one of these commands runs.
"""

import argparse
import contextlib
import os
import select
import signal
import socket
import sys
import threading

from cluster_cli.client import ClientError, segment
from cluster_cli.v1.base import ShoalCommand


def _engine(spec):
    try:
        import docker
    except ImportError:
        raise ClientError("this command needs the docker SDK: pip install 'shoal[docker]'") \
            from None
    try:
        # No client-side timeout: a shell may sit idle, a command may be silent for long.
        if spec.get("docker_host"):
            return docker.DockerClient(base_url=spec["docker_host"], timeout=None)
        return docker.from_env(timeout=None)
    except docker.errors.DockerException as exc:
        raise ClientError(f"cannot reach the container engine "
                          f"{spec.get('docker_host') or '(default)'}: {exc}") from None


def _remove(api, container):
    with contextlib.suppress(Exception):
        api.remove_container(container, force=True, v=True)


def _hang_up(signum, _frame):
    """The terminal went away or we were told to stop: unwind, so the container is removed."""
    raise SystemExit(128 + signum)


def interactive(spec):
    """Attach this terminal to the prepared container, start it, return its exit code."""
    import termios
    import tty

    api = _engine(spec).api
    container = spec["container"]
    signal.signal(signal.SIGHUP, _hang_up)
    signal.signal(signal.SIGTERM, _hang_up)
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    saved = termios.tcgetattr(stdin)
    previous = signal.getsignal(signal.SIGWINCH)
    try:
        sock = api.attach_socket(container, params={"stdin": 1, "stdout": 1, "stderr": 1,
                                                    "stream": 1})
        raw = getattr(sock, "_sock", sock)
        raw.settimeout(None)
        api.start(container)

        def resize(*_):
            with contextlib.suppress(Exception):
                size = os.get_terminal_size(stdout)
                api.resize(container, height=size.lines, width=size.columns)

        resize()
        signal.signal(signal.SIGWINCH, resize)
        tty.setraw(stdin)
        while True:
            try:
                ready, _, _ = select.select([stdin, raw], [], [])
            except InterruptedError:  # SIGWINCH
                continue
            if raw in ready:
                data = raw.recv(65536)
                if not data:
                    break
                os.write(stdout, data)
            if stdin in ready:
                data = os.read(stdin, 65536)
                if not data:
                    break
                raw.sendall(data)
        return api.wait(container).get("StatusCode", 1)
    finally:
        with contextlib.suppress(termios.error):
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        signal.signal(signal.SIGWINCH, previous)
        _remove(api, container)


def _write(out, err):
    for data, where in ((out, sys.stdout), (err, sys.stderr)):
        if data:
            where.buffer.write(data)
            where.buffer.flush()


def _feed(raw):
    """Copy our stdin to the container's, then close our sending side: the command sees EOF."""
    try:
        while True:
            data = os.read(sys.stdin.fileno(), 65536)
            if not data:
                break
            raw.sendall(data)
    except OSError:
        pass  # the command ended and the engine closed the stream: nothing more to send
    finally:
        with contextlib.suppress(OSError):
            raw.shutdown(socket.SHUT_WR)


def run(spec):
    """Start the prepared container, stream its stdout and stderr here (and with ``stdin`` in
    the spec, our stdin there), return its exit code."""
    api = _engine(spec).api
    container = spec["container"]
    signal.signal(signal.SIGHUP, _hang_up)
    signal.signal(signal.SIGTERM, _hang_up)
    try:
        if spec.get("stdin"):
            from docker.utils.socket import frames_iter

            sock = api.attach_socket(container, params={"stdin": 1, "stdout": 1, "stderr": 1,
                                                        "stream": 1})
            raw = getattr(sock, "_sock", sock)
            api.start(container)
            threading.Thread(target=_feed, args=(raw,), daemon=True).start()
            for stream, data in frames_iter(raw, tty=False):
                _write(data if stream == 1 else None, data if stream == 2 else None)
        else:
            stream = api.attach(container, stdout=True, stderr=True, stream=True, demux=True)
            api.start(container)
            for out, err in stream:
                _write(out, err)
        return api.wait(container).get("StatusCode", 1)
    finally:
        _remove(api, container)


class ShellCluster(ShoalCommand):
    """Open an interactive shell in a container set up for a cluster: cloud CLIs, ssh to nodes."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="NAME")
        parser.add_argument("--cli", help="the CLI image(s), separated by commas (aws, gcloud, "
                                          "kubectl; default: the provider's cloud, else aws)")
        return parser

    def take_action(self, parsed_args):
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            raise ClientError("shoal cluster shell needs a terminal; to run one command use "
                              "'shoal cluster exec NAME -- CMD ARGS...'")
        body = {"tty": True}
        if parsed_args.cli:
            body["cli"] = parsed_args.cli
        spec = self.client.post(f"/clusters/{segment(parsed_args.name)}/shell", body)
        return interactive(spec)


def _exec_options(parser):
    parser.add_argument("--cli", help="the CLI image(s), separated by commas (aws, gcloud, "
                                      "kubectl; default: the provider's cloud, else aws)")
    parser.add_argument("-i", "--interactive", action="store_true",
                        help="send this command's stdin to CMD (e.g. a file piped in)")
    return parser


class ExecCluster(ShoalCommand):
    """Run one command in a cluster's shell container; exit with the command's exit code."""

    def get_parser(self, prog_name):
        parser = _exec_options(super().get_parser(prog_name))
        parser.add_argument("name", metavar="NAME")
        parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ARGS",
                            help="the command and its arguments, passed as an argv (no shell)")
        return parser

    def take_action(self, parsed_args):
        command = list(parsed_args.command)  # verbatim: argparse leaves a REMAINDER alone
        if command[:1] == ["--"]:
            command = command[1:]
        elif command[:1] and command[0].startswith("-") and "--" in command:
            # Our options written after NAME ("exec web -i -- CMD"): those before the "--".
            ours, command = command[:command.index("--")], command[command.index("--") + 1:]
            options = _exec_options(argparse.ArgumentParser(add_help=False, exit_on_error=False))
            try:
                _, unknown = options.parse_known_args(ours, namespace=parsed_args)
            except argparse.ArgumentError as exc:
                raise ClientError(f"shoal cluster exec: {exc}") from None
            if unknown:
                raise ClientError(f"shoal cluster exec: unknown option(s) before '--': "
                                  f"{' '.join(unknown)}")
        if not command:
            raise ClientError("give a command: shoal cluster exec NAME -- CMD ARGS...")
        body = {"tty": False, "stdin": parsed_args.interactive, "command": command}
        if parsed_args.cli:
            body["cli"] = parsed_args.cli
        spec = self.client.post(f"/clusters/{segment(parsed_args.name)}/shell", body)
        return run(spec)
