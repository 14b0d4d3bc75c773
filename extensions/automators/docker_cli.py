"""The ``docker-cli`` automator: run a cloud CLI command (aws, gcloud, kubectl) in a container.

For what the cloud SDKs cannot do. Each call writes the Dockerfile it builds, the command and
its result into ``SHOAL_HOME/deployments/<cluster>/<timestamp>-<action>/``, builds the image from
``dockerfiles/<cli>/`` through the docker SDK (tagged by the hash of the Dockerfile, its build
arguments and the base image, so a later call reuses it), runs the command as an argv list with
the CLI's credentials file mounted read-only, captures output and exit code, and removes the
container. Credentials never enter a build context or an image.
"""

import contextlib
import hashlib
import io
import json
import os
import re
import sys
import tarfile
import threading
import time

from cluster_server.errors import AutomatorError
from cluster_server.plugins import ActionResult, Automator, Field
from extensions.automators.shell import cap, split_args
from extensions.providers.docker import docker_client, home_label

#: dockerfiles/ of the checkout, else where setup.py installs them (SHOAL_DOCKERFILES overrides).
DOCKERFILES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "dockerfiles")
if not os.path.isdir(DOCKERFILES):
    DOCKERFILES = os.path.join(sys.prefix, "share", "shoal", "dockerfiles")
DEFAULT_BASE = "localhost/shoal-base:bookworm"
#: The CA bundle pip and downloads trust while an image builds (public roots, not a secret).
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

#: Where each CLI looks for its credentials: (variables naming the host file, the usual host
#: file, where it is mounted in the container, variables set in the container to point at it).
CREDENTIALS = {
    "aws": (("AWS_SHARED_CREDENTIALS_FILE",), "~/.aws/credentials",
            "/run/shoal/credentials/aws", ("AWS_SHARED_CREDENTIALS_FILE",)),
    "gcloud": (("CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE", "GOOGLE_APPLICATION_CREDENTIALS"),
               "~/.config/gcloud/application_default_credentials.json",
               "/run/shoal/credentials/gcloud.json",
               ("GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE")),
    "kubectl": (("KUBECONFIG",), "~/.kube/config", "/run/shoal/credentials/kubeconfig",
                ("KUBECONFIG",)),
}
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_build_locks = {}
_build_locks_guard = threading.Lock()


def _stamp():
    now = time.time()
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"


def _write(path, data, mode=0o644):
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


class DockerCLIAutomator(Automator):
    """Runs ``command`` of the CLI image ``cli`` on the Shoal host; the node is not touched."""

    fields = {
        "cli": Field(required=True, help="aws, gcloud or kubectl (an image of dockerfiles/)"),
        "command": Field(required=True, help="argv list; a string is split with shell-like "
                                             "rules and never given to a shell"),
        "credentials": Field(help="host file mounted read-only for the CLI (default: the CLI's "
                                  "standard place, e.g. AWS_SHARED_CREDENTIALS_FILE or "
                                  "~/.aws/credentials)"),
        "env": Field(help="extra environment variables (a dict)"),
        "network": Field(default="bridge", help="network mode of the container: bridge, host "
                                                "or none"),
        "build_args": Field(help="extra build arguments (a dict)"),
        "base": Field(help="base image (default SHOAL_DOCKER_BASE, else "
                           "localhost/shoal-base:bookworm)"),
        "reuse_image": Field(default=True, help="keep the built image for later calls "
                                                "(false: remove it after the call)"),
        "timeout": Field(default=3600, help="seconds before the command is killed (exit 124)"),
        "docker_host": Field(help="engine URL (default: DOCKER_HOST)"),
    }

    def __init__(self, home, resources=None, docker_host=None):
        super().__init__(home, resources)
        self.docker_host = docker_host
        self._clients = {}
        self._lock = threading.Lock()

    def engine_url(self, docker_host=None):
        """The engine's URL as given (DOCKER_HOST form); empty for the SDK's default."""
        return docker_host or self.docker_host or os.environ.get("DOCKER_HOST") or ""

    def client(self, docker_host=None):
        url = self.engine_url(docker_host)
        with self._lock:
            if url not in self._clients:
                try:
                    self._clients[url] = docker_client(url or None)
                except Exception as exc:
                    raise AutomatorError(f"docker-cli: {exc}") from exc
            return self._clients[url]

    # -- images ---------------------------------------------------------------------------------

    def _errors(self):
        import docker.errors

        return docker.errors

    @staticmethod
    def dockerfile_dir(cli):
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", str(cli)):
            raise AutomatorError(f"docker-cli: invalid cli name {cli!r}", {"cli": cli})
        folder = os.path.join(os.environ.get("SHOAL_DOCKERFILES") or DOCKERFILES, cli)
        if not os.path.isfile(os.path.join(folder, "Dockerfile")):
            have = sorted(d for d in os.listdir(os.path.dirname(folder))
                          if os.path.isfile(os.path.join(os.path.dirname(folder), d,
                                                         "Dockerfile"))) \
                if os.path.isdir(os.path.dirname(folder)) else []
            raise AutomatorError(f"docker-cli: no Dockerfile for {cli!r} (have: "
                                 f"{', '.join(have) or 'none'})", {"cli": cli})
        return folder

    @staticmethod
    def ca_bundle():
        """The CA bundle an image build trusts: SHOAL_BUILD_CA_BUNDLE (empty: none), else
        SSL_CERT_FILE, else the system's."""
        path = os.environ.get("SHOAL_BUILD_CA_BUNDLE")
        if path is None:
            path = os.environ.get("SSL_CERT_FILE") or SYSTEM_CA_BUNDLE
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError:
            return b""

    def image(self, cli, base=None, build_args=None, folder=None, docker_host=None):
        """The tag of the image of ``cli``, built unless an identical build exists.

        The Dockerfile is copied into ``folder`` (a deployment directory) when one is given.
        Returns ``(tag, built)``.
        """
        client = self.client(docker_host)
        errors = self._errors()
        source = self.dockerfile_dir(cli)
        with open(os.path.join(source, "Dockerfile"), "rb") as f:
            dockerfile = f.read()
        base = base or os.environ.get("SHOAL_DOCKER_BASE") or DEFAULT_BASE
        try:
            base_id = client.images.get(base).id
        except errors.ImageNotFound:
            raise AutomatorError(f"docker-cli: base image {base} is not on the engine (on a "
                                 "test machine: tests/podman.sh builds it; elsewhere set the "
                                 "field 'base' or SHOAL_DOCKER_BASE)", {"base": base}) from None
        except errors.DockerException as exc:
            raise AutomatorError(f"docker-cli: cannot reach the container engine: {exc}") from exc
        args = {str(k): str(v) for k, v in (build_args or {}).items()}
        args["BASE"] = base
        digest = hashlib.sha256(json.dumps([sorted(args.items()), base_id]).encode())
        for name in sorted(os.listdir(source)):  # the Dockerfile and anything beside it
            if os.path.isfile(os.path.join(source, name)):
                with open(os.path.join(source, name), "rb") as f:
                    digest.update(name.encode() + b"\0" + f.read())
        tag = f"localhost/shoal-{cli}:{digest.hexdigest()[:16]}"
        if folder:
            _write(os.path.join(folder, "Dockerfile"), dockerfile)
            _write(os.path.join(folder, "build.json"), json.dumps(
                {"cli": cli, "image": tag, "base": base, "base_id": base_id,
                 "build_args": args}, indent=2))
        with _build_locks_guard:
            lock = _build_locks.setdefault(tag, threading.Lock())
        with lock:  # nodes running the same action at once build once
            try:
                client.images.get(tag)
                return tag, False
            except errors.ImageNotFound:
                pass
            context = self._context(source)
            try:
                client.images.build(fileobj=context, custom_context=True, tag=tag,
                                    buildargs=args, rm=True, forcerm=True, pull=False,
                                    labels={"shoal.cli": cli})
            except errors.BuildError as exc:
                tail = "".join(str(line.get("stream") or line.get("error") or "")
                               for line in exc.build_log)[-4000:]
                raise AutomatorError(f"docker-cli: building the {cli} image failed: "
                                     f"{exc.msg}\n{tail}", {"cli": cli}) from exc
            except errors.DockerException as exc:
                raise AutomatorError(f"docker-cli: building the {cli} image failed: {exc}",
                                     {"cli": cli}) from exc
        return tag, True

    def _context(self, source):
        """The build context as a tar: the CLI's folder and the build CA bundle, nothing else."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for name in sorted(os.listdir(source)):
                tar.add(os.path.join(source, name), arcname=name)
            bundle = self.ca_bundle()
            info = tarfile.TarInfo("build-ca.crt")
            info.size, info.mode = len(bundle), 0o644
            tar.addfile(info, io.BytesIO(bundle))
        buffer.seek(0)
        return buffer

    # -- credentials ----------------------------------------------------------------------------

    def credentials(self, cli, path=None):
        """``(host file or None, mount target, env)`` for the CLI's credentials."""
        sources, usual, target, variables = CREDENTIALS.get(cli, ((), "", "", ()))
        chosen = self._setup_choice(cli)  # what `shoal setup aws|gcp` recorded
        extra = {"AWS_PROFILE": chosen["profile"]} if chosen.get("profile") else {}
        if not path:
            path = chosen.get("credentials_file")
        if not path:
            path = next((os.environ[v] for v in sources if os.environ.get(v)), None)
            if not path and usual and os.path.isfile(os.path.expanduser(usual)):
                path = usual
        if not path:
            return None, None, {}
        path = os.path.abspath(os.path.expanduser(str(path)))
        if not os.path.isfile(path):
            raise AutomatorError(f"docker-cli: credentials file {path} does not exist",
                                 {"cli": cli, "credentials": path})
        target = target or f"/run/shoal/credentials/{cli}"
        return path, target, {**extra, **{name: target for name in variables}}

    def _setup_choice(self, cli):
        """The choice recorded in SHOAL_HOME/clouds.json for the CLI's cloud (no secrets)."""
        cloud = {"aws": "aws", "gcloud": "gcp"}.get(cli)
        try:
            with open(os.path.join(os.fspath(self.home), "clouds.json")) as f:
                choice = json.load(f).get(cloud) if cloud else None
        except (OSError, ValueError):
            return {}
        return choice if isinstance(choice, dict) else {}

    # -- containers -----------------------------------------------------------------------------

    def create_container(self, image, argv, *, docker_host=None, env=None, mounts=None,
                         network="bridge", tty=False, stdin=False, labels=None, hostname=None):
        """Create (not start) a container of ``image`` running ``argv``; ``mounts`` is
        ``{host path: container path}``, every one read-only. With ``stdin`` the command reads
        what is sent on an attached stream, and sees its end when the sender closes its side.
        Returns the container."""
        client = self.client(docker_host)
        volumes = {host: {"bind": target, "mode": "ro"} for host, target in (mounts or {}).items()}
        kwargs = {"command": list(argv), "environment": env or {}, "volumes": volumes,
                  "labels": {"shoal.home": home_label(self.home), **(labels or {})},
                  "tty": tty, "stdin_open": tty or stdin,
                  # Not detached: the engine attaches stdin and closes it once the first
                  # attached client ends its input (StdinOnce), so the command sees EOF.
                  "detach": not stdin}
        if network in ("bridge", "host", "none"):
            kwargs["network_mode"] = network
        elif network:
            kwargs["network"] = network
        if hostname:
            kwargs["hostname"] = hostname
        try:
            return client.containers.create(image, **kwargs)
        except self._errors().DockerException as exc:
            raise AutomatorError(f"docker-cli: cannot create a container of {image}: {exc}") \
                from exc

    def run(self, action, service, fields, context, transport=None):
        context = context or {}
        cli = fields.get("cli")
        argv = split_args(fields.get("command"), "command")
        if not cli or not argv:
            raise AutomatorError(f"docker-cli: {service}/{action} needs the fields 'cli' and "
                                 "'command'", {"service": service, "action": action})
        folder = self._deployment(context, action)
        docker_host = fields.get("docker_host")
        extra = fields.get("build_args") or {}
        if isinstance(extra, str):
            extra = json.loads(extra)
        tag, built = self.image(cli, fields.get("base"), extra, folder, docker_host)
        host_file, target, env = self.credentials(cli, fields.get("credentials"))
        env = {**self._env(fields.get("env")), **env}
        env.update({"SHOAL_CLUSTER_ID": str(context.get("cluster_id", "")),
                    "SHOAL_NODE_ID": str(context.get("node_id", "")),
                    "SHOAL_SERVICE": str(service),
                    "SHOAL_ACTION": str(getattr(action, "value", action))})
        network = str(fields.get("network") or "bridge")
        _write(os.path.join(folder, "command.json"), json.dumps(
            {"argv": argv, "image": tag, "network": network, "env": sorted(env),
             "credentials": {"host": host_file, "mounted_at": target, "read_only": True}
             if host_file else None}, indent=2))
        container = self.create_container(
            tag, argv, docker_host=docker_host, env=env,
            mounts={host_file: target} if host_file else {}, network=network,
            labels={"shoal.cluster": str(context.get("cluster_id", "")),
                    "shoal.role": "docker-cli"})
        started = time.time()
        try:
            code, out, err = self._wait(container, float(fields.get("timeout") or 3600))
        finally:
            with contextlib.suppress(self._errors().DockerException):
                container.remove(force=True, v=True)
            reuse = fields.get("reuse_image", True)
            if str(reuse).lower() in ("false", "0", "no"):
                with contextlib.suppress(self._errors().DockerException):
                    self.client(docker_host).images.remove(tag)
        _write(os.path.join(folder, "stdout"), out)
        _write(os.path.join(folder, "stderr"), err)
        _write(os.path.join(folder, "result.json"), json.dumps(
            {"exit_code": code, "seconds": round(time.time() - started, 3), "image": tag,
             "image_built": built}, indent=2))
        return ActionResult(code, cap(out), cap(err))

    def _wait(self, container, timeout):
        import requests

        errors = self._errors()
        try:
            container.start()
        except errors.DockerException as exc:
            return 126, "", f"docker-cli: the container does not start: {exc}\n"
        try:
            code = container.wait(timeout=timeout).get("StatusCode", 1)
        except (requests.exceptions.ConnectionError, requests.exceptions.ReadTimeout):
            with contextlib.suppress(errors.DockerException):
                container.kill()
            code = 124
        out = container.logs(stdout=True, stderr=False).decode("utf-8", "replace")
        err = container.logs(stdout=False, stderr=True).decode("utf-8", "replace")
        if code == 124:
            err += f"\ndocker-cli: killed after {timeout:g} s\n"
        return code, out, err

    def _deployment(self, context, action):
        cluster = context.get("cluster_name") or context.get("cluster_id") or "no-cluster"
        parent = os.path.join(os.fspath(self.home), "deployments", _UNSAFE.sub("_", str(cluster)))
        os.makedirs(parent, mode=0o700, exist_ok=True)
        name = f"{_stamp()}-{_UNSAFE.sub('_', str(getattr(action, 'value', action)).lower())}"
        for attempt in range(100):
            folder = os.path.join(parent, name if attempt == 0 else f"{name}-{attempt}")
            try:
                os.mkdir(folder, 0o700)
                return folder
            except FileExistsError:
                continue
        raise AutomatorError(f"docker-cli: cannot make a deployment directory in {parent}")

    @staticmethod
    def _env(value):
        if not value:
            return {}
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise AutomatorError(f"docker-cli: field 'env' is not a JSON object: {exc}") \
                    from exc
        if not isinstance(value, dict):
            raise AutomatorError("docker-cli: field 'env' must be a dict of variables")
        return {str(k): str(v) for k, v in value.items() if v is not None}
