"""The ``ansible`` automator: a service action is an Ansible playbook run against its node.

``ansible-playbook`` of the server's own environment runs as an argv list, once per action,
in a private run directory holding an inventory with this node only (address, port, user,
key), a known_hosts file with the host key Shoal pinned (host-key checking on: a changed key
is refused), the action's ``extra_vars`` as a JSON file (``-e @file``: never on a command
line) and the cluster's facts as the variable ``shoal``, so a play finds another service's
node the way ``%host.service.X%`` does. Its output becomes the task's output; a failed play
fails the task with the failing task's name and message (a small callback plugin writes them).
"""

import hashlib
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import zipfile

from cluster_server.errors import AutomatorError, ShoalError, ValidationError
from cluster_server.macros import natural_key
from cluster_server.plugins import ActionResult, Automator, Field
from extensions.automators.shell import cap
from extensions.transports import host_key_line

HERE = os.path.dirname(os.path.abspath(__file__))
#: Playbooks shipped with Shoal, used when no archive resource has the playbook's first part.
PACKAGE_PLAYBOOKS = os.path.join(os.path.dirname(HERE), "resources", "playbooks")
CALLBACKS = os.path.join(HERE, "ansible_callbacks")
#: SSH options of every run: only the pinned key is trusted, no prompt can hang a task. One
#: master connection serves the play's tasks; it is closed when the run ends, so a later run
#: (maybe after the node's key changed) always makes a new, checked connection.
SSH_ARGS = ("-o StrictHostKeyChecking=yes -o GlobalKnownHostsFile=/dev/null "
            "-o UpdateHostKeys=no -o IdentitiesOnly=yes -o BatchMode=yes "
            "-o ControlMaster=auto -o ControlPersist=60s -o ServerAliveInterval=30")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")
_unpack_lock = threading.Lock()


def ansible_playbook():
    """``ansible-playbook`` next to the server's Python, or None when ansible-core is missing."""
    path = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    return path if os.path.isfile(path) else shutil.which("ansible-playbook")


def _fail(service, action, field, reason):
    raise AutomatorError(f"ansible: {service}/{action}: field '{field}' {reason}",
                         {"service": service, "action": str(action), "field": field})


def _playbook_path(service, action, value):
    if not isinstance(value, str) or not value.strip():
        _fail(service, action, "playbook", "must name a playbook: '<archive>/<path>' inside an "
                                           "archives resource, or a playbook shipped with Shoal")
    parts = value.replace("\\", "/").split("/")
    if value.startswith("/") or ".." in parts or "" in parts:
        _fail(service, action, "playbook", f"{value!r} must be a relative path without '..'")
    return parts


def _extra_vars(service, action, value):
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            _fail(service, action, "extra_vars", f"is not a JSON object: {exc}")
    if not isinstance(value, dict):
        _fail(service, action, "extra_vars", "must be an object (a dict of variables)")
    return value


def _tags(service, action, value):
    if value in (None, ""):
        return []
    tags = value.split(",") if isinstance(value, str) else value
    if not isinstance(tags, list) or not all(isinstance(t, str) and t.strip() and "," not in t
                                             for t in tags):
        _fail(service, action, "tags", "must be a list of tag names, or names separated by "
                                       "commas")
    return [t.strip() for t in tags]


def _become(service, action, value):
    if isinstance(value, bool) or value is None:
        return bool(value)
    if str(value).strip().lower() in _TRUE + _FALSE:
        return str(value).strip().lower() in _TRUE
    _fail(service, action, "become", f"must be true or false, not {value!r}")


def _check(service, action, fields):
    """Every field's shape; the values (macros expanded or not) as the run uses them."""
    return (_playbook_path(service, action, fields.get("playbook")),
            _extra_vars(service, action, fields.get("extra_vars")),
            _tags(service, action, fields.get("tags")),
            _become(service, action, fields.get("become")))


def cluster_facts(context, action, service):
    """The variable ``shoal``: the cluster as the macros see it. ``hosts[X]`` and ``ips[X]``
    are what ``%host.service.X%`` and ``%ip.service.X%`` list, in the same (natural) order."""
    nodes = sorted(context.get("nodes") or (), key=lambda n: natural_key(n["id"]))
    listed, hosts, ips, services = [], {}, {}, {}
    for node in nodes:
        addresses = node.get("addresses") or {}
        entry = {"id": node["id"], "hostname": node.get("hostname") or "",
                 "services": list(node.get("services") or ()),
                 "bind_v4": addresses.get("bind_v4") or "",
                 "access_v4": addresses.get("access_v4") or ""}
        listed.append(entry)
        for name in entry["services"]:
            services.setdefault(name, []).append(entry)
            hosts.setdefault(name, []).append(entry["hostname"])
            ips.setdefault(name, []).append(entry["bind_v4"])
    node_id = context.get("node_id") or (context.get("node") or {}).get("id")
    me = next((n for n in listed if n["id"] == node_id), {"id": node_id})
    return {"cluster": {"id": context.get("cluster_id", ""),
                        "name": context.get("cluster_name", ""),
                        "owner": (context.get("cluster") or {}).get("owner", "")},
            "node": me, "nodes": listed, "services": services, "hosts": hosts, "ips": ips,
            "config": context.get("config") or {}, "service": str(service),
            "action": str(getattr(action, "value", action))}


def _write(path, data, mode=0o600):
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "w") as f:
        f.write(data)


def _unpack(archive, target):
    """Unpack ``archive`` into ``target`` (made here, whole or not at all). Uploads were
    checked member by member already; the filters are the second line."""
    tmp = tempfile.mkdtemp(prefix=".unpack-", dir=os.path.dirname(target))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                z.extractall(tmp)
        else:
            with tarfile.open(archive, "r:*") as t:
                t.extractall(tmp, filter="data")
        os.replace(tmp, target)
    except (OSError, tarfile.TarError, zipfile.BadZipFile) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise AutomatorError(f"ansible: cannot unpack archive {os.path.basename(archive)}: "
                             f"{exc}") from exc


class AnsibleAutomator(Automator):
    """Runs ``ansible-playbook`` against the node, over SSH with its pinned host key."""

    needs_nodes = True  # the play sees the cluster (variable ``shoal``)

    fields = {
        "playbook": Field(required=True, help="'<archive>/<path>': a playbook inside an active "
                                              "'archives' resource; else a playbook shipped "
                                              "with Shoal"),
        "tags": Field(help="run only tasks with these tags (a list, or names separated by "
                           "commas)"),
        "extra_vars": Field(help="variables for the play (an object; macros expanded), passed "
                                 "as a JSON file"),
        "become": Field(default=False, help="run the play's tasks with privilege escalation "
                                            "(--become)"),
    }

    @classmethod
    def check_fields(cls, service, action, fields):
        super().check_fields(service, action, fields)
        try:
            _check(service, action, fields)
            if ansible_playbook() is None:
                raise AutomatorError("ansible: ansible-playbook is not installed beside the "
                                     "server: pip install 'shoal[ansible]'",
                                     {"service": service, "action": str(action),
                                      "field": "type"})
        except AutomatorError as error:
            raise ValidationError(f"service '{service}' action {action}: {error.message}",
                                  {**error.details, "entity": "service", "name": service}
                                  ) from None

    def run(self, action, service, fields, context, transport):
        context = context or {}
        parts, extra_vars, tags, become = _check(service, action, fields)
        program = ansible_playbook()
        if program is None:
            raise AutomatorError("ansible: ansible-playbook is not installed beside the server: "
                                 "pip install 'shoal[ansible]'")
        endpoint = self._endpoint(transport, service, action)
        playbook = self._resolve(parts)
        folder = tempfile.mkdtemp(prefix="shoal-ansible-")  # 0700; short for ssh's socket path
        try:
            argv = self._prepare(folder, program, playbook, endpoint, extra_vars, tags, become,
                                 cluster_facts(context, action, service))
            env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
            env.update(ANSIBLE_CONFIG=os.path.join(folder, "ansible.cfg"),
                       ANSIBLE_HOME=os.path.join(folder, "home"), SHOAL_ANSIBLE_RESULT=os.path.join(
                           folder, "failure.json"), PYTHONUNBUFFERED="1",
                       # Noise in every task's output otherwise (cryptography's deprecations).
                       PYTHONWARNINGS="ignore::UserWarning:ansible._internal._ssh._ssh_agent")
            proc = subprocess.run(argv, cwd=folder, env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            output = proc.stdout.decode("utf-8", "replace")
            if proc.returncode != 0:
                output += self._failure(folder, proc.returncode)
            return ActionResult(proc.returncode, cap(output), "")
        finally:
            self._close_masters(os.path.join(folder, "cp"))
            shutil.rmtree(folder, ignore_errors=True)

    @staticmethod
    def _endpoint(transport, service, action):
        host_key = getattr(transport, "host_key", None)
        if not getattr(transport, "host", None) or host_key is None:
            raise AutomatorError(
                f"ansible: {service}/{action}: the node has no SSH access (ansible needs a "
                "provider that gives one: ssh, aws, gcp, or docker with access: ssh)")
        key = host_key if isinstance(host_key, str) else host_key_line(host_key)
        return {"host": transport.host, "port": int(transport.port), "user": transport.user,
                "key_file": getattr(transport, "key_file", None), "host_key": key}

    def _prepare(self, folder, program, playbook, endpoint, extra_vars, tags, become, facts):
        for sub in ("cp", "tmp", "home"):
            os.mkdir(os.path.join(folder, sub), 0o700)
        host, port = endpoint["host"], endpoint["port"]
        known = f"[{host}]:{port}" if port != 22 else host
        _write(os.path.join(folder, "known_hosts"),
               f"{known} {' '.join(endpoint['host_key'].split()[:2])}\n")
        node = facts["node"]
        hostvars = {"ansible_host": host, "ansible_port": port, "ansible_user": endpoint["user"]}
        if endpoint["key_file"]:
            hostvars["ansible_ssh_private_key_file"] = os.fspath(endpoint["key_file"])
        name = str(node.get("id") or "node")
        # This node only, in ``all`` and in a group per service it holds (dashes as
        # underscores: Ansible's group names), so ``hosts: all`` and ``hosts: web`` both work.
        groups = {re.sub(r"[^A-Za-z0-9_]", "_", s): {"hosts": {name: None}}
                  for s in node.get("services") or ()}
        inventory = {"all": {"hosts": {name: hostvars}, "children": groups}}
        _write(os.path.join(folder, "inventory.json"), json.dumps(inventory, indent=1))
        _write(os.path.join(folder, "extra_vars.json"), json.dumps(extra_vars))
        _write(os.path.join(folder, "shoal.json"), json.dumps({"shoal": facts}))
        ssh_args = f"{SSH_ARGS} -o UserKnownHostsFile={os.path.join(folder, 'known_hosts')}"
        _write(os.path.join(folder, "ansible.cfg"), "\n".join([
            "[defaults]", "inventory = inventory.json", "host_key_checking = True",
            "retry_files_enabled = False", "nocolor = True", "interpreter_python = auto_silent",
            f"local_tmp = {os.path.join(folder, 'tmp')}", f"callback_plugins = {CALLBACKS}",
            "callbacks_enabled = shoal_failure", "deprecation_warnings = False",
            "[ssh_connection]", f"ssh_args = {ssh_args}",
            f"control_path_dir = {os.path.join(folder, 'cp')}", "pipelining = True", ""]))
        argv = [program, "-i", os.path.join(folder, "inventory.json"), "--limit", name,
                "-e", "@" + os.path.join(folder, "extra_vars.json"),
                # Shoal's facts last: a field's extra_vars cannot fake them.
                "-e", "@" + os.path.join(folder, "shoal.json")]
        if tags:
            argv += ["--tags", ",".join(tags)]
        if become:
            argv.append("--become")
        return argv + [playbook]

    def _resolve(self, parts):
        """The local file of the playbook: inside an active archive named by its first part,
        else among the playbooks shipped with Shoal."""
        looked = []
        if self.resources is not None and len(parts) > 1:
            looked.append(f"archives resource '{parts[0]}'")
            try:
                archive = self.resources.path("archives", parts[0])
            except (ShoalError, LookupError, OSError):
                archive = None
            if archive and os.path.isfile(archive):
                root = self._unpacked(archive)
                path = os.path.realpath(os.path.join(root, *parts[1:]))
                if path.startswith(os.path.realpath(root) + os.sep) and os.path.isfile(path):
                    return path
                raise AutomatorError(f"ansible: archive '{parts[0]}' has no playbook "
                                     f"{posixpath.join(*parts[1:])!r}",
                                     {"field": "playbook", "archive": parts[0]})
        looked.append(PACKAGE_PLAYBOOKS)
        path = os.path.join(PACKAGE_PLAYBOOKS, *parts)
        if os.path.isfile(path):
            return path
        raise AutomatorError(f"ansible: playbook {'/'.join(parts)!r} not found (looked in: "
                             f"{', '.join(looked)})", {"field": "playbook", "looked_in": looked})

    def _unpacked(self, archive):
        """The archive unpacked once per content (a new version is a new directory)."""
        with open(archive, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:24]
        base = os.path.join(os.fspath(self.home), "ansible", "archives")
        target = os.path.join(base, digest)
        with _unpack_lock:
            if not os.path.isdir(target):
                os.makedirs(base, mode=0o700, exist_ok=True)
                _unpack(archive, target)
        return target

    @staticmethod
    def _failure(folder, code):
        """The failing task's name and message, as the callback plugin recorded them."""
        try:
            with open(os.path.join(folder, "failure.json")) as f:
                failures = json.load(f)
        except (OSError, ValueError):
            failures = []
        if not failures:
            return f"\nansible-playbook failed (exit code {code})\n"
        lines = [f"task '{f['task']}' {f['state']} on {f['host']}: {f['message']}"
                 for f in failures]
        return "\nansible: " + "\nansible: ".join(lines) + "\n"

    @staticmethod
    def _close_masters(folder):
        """End the run's SSH master connections now rather than when they time out."""
        try:
            sockets = os.listdir(folder)
        except OSError:
            return
        for name in sockets:
            subprocess.run(["ssh", "-o", f"ControlPath={os.path.join(folder, name)}", "-O",
                            "exit", "shoal-node"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
