"""The ``shell`` automator: copy a script to the node and run it, or run an inline command.

Coopr-compatible fields (``script``, ``args``). Arguments are argv elements from start to end:
a string of ``args`` is split with ``shlex.split`` and never handed to a shell, so expanded macro
values cannot inject commands. The action's context reaches the script as environment variables.
"""

import json
import os
import posixpath
import re
import shlex

from cluster_server.errors import AutomatorError, ShoalError, ValidationError
from cluster_server.plugins import ActionResult, Automator, Field

#: Scripts shipped with Shoal, used when no plugin resource has the name.
PACKAGE_SCRIPTS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "resources", "scripts")
#: Output kept per stream in the task record (the tail).
OUTPUT_CAP = 64 * 1024
#: Larger configs go to a file (SHOAL_CONFIG_FILE): one environment string may not pass 128 KiB.
CONFIG_ENV_LIMIT = 96 * 1024

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def cap(text, limit=OUTPUT_CAP):
    """The last ``limit`` bytes of ``text``, saying how much was cut."""
    data = text.encode("utf-8", errors="replace")
    if len(data) <= limit:
        return text
    tail = data[-limit:].decode("utf-8", errors="ignore")
    return f"[output cut: first {len(data) - limit} bytes dropped]\n{tail}"


def split_args(value, field):
    """A list stays a list (of str); a string is split like a shell would, without one."""
    if value in (None, ""):
        return []
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:
            raise AutomatorError(f"shell: field '{field}' cannot be split: {exc}",
                                 {"field": field}) from exc
    if isinstance(value, (list, tuple)):
        return [json.dumps(v) if isinstance(v, (dict, list)) else str(v) for v in value]
    return [str(value)]


def _env_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _fact(context, flat, nested, default=None):
    if flat in context:
        return context[flat]
    outer, inner = nested
    value = context.get(outer)
    return value.get(inner, default) if isinstance(value, dict) else default


def _check_script_name(name):
    parts = name.replace("\\", "/").split("/")
    if name.startswith("/") or ".." in parts:
        raise AutomatorError(f"shell: script name {name!r} must be a relative path without "
                             "'..'", {"script": name, "field": "script"})


def _check_script_or_command(service, action, fields):
    """Exactly one of 'script' and 'command'; a script named within the script folders."""
    script, command = fields.get("script"), fields.get("command")
    if bool(script) == bool(command):
        raise AutomatorError(
            f"shell: {service}/{action} needs exactly one of the fields 'script' and "
            "'command'", {"service": service, "action": action, "field": "script"},
        )
    if script:
        _check_script_name(str(script))


class ShellAutomator(Automator):
    """Runs ``[interpreter?, script, *args]`` or ``command`` on the node as argv.

    ``context`` keys read: ``cluster_id``, ``node_id``, ``config`` (the expanded cluster config),
    optionally ``script_dir`` (where scripts are looked up when there are no plugin resources);
    nested ``cluster: {id, config}`` and ``node: {id}`` are accepted too.
    """

    fields = {
        "script": Field(help="a script (plugin resource of kind 'scripts', or shipped with "
                             "Shoal) copied to the node and run"),
        "args": Field(default="", help="arguments: a list, or a string split with shell-like "
                                       "rules (no shell ever runs it)"),
        "command": Field(help="instead of a script, a command to run: argv list or a string "
                              "split with shell-like rules"),
        "interpreter": Field(help="program that runs the script, e.g. 'bash' or 'python3'; "
                                  "default: the script's #! line, else /bin/sh"),
        "env": Field(help="extra environment variables for the script (a dict)"),
    }

    def __init__(self, home, resources=None, script_dirs=()):
        super().__init__(home, resources)
        self.script_dirs = list(script_dirs)

    @classmethod
    def check_fields(cls, service, action, fields):
        super().check_fields(service, action, fields)
        try:
            _check_script_or_command(service, action, fields)
        except AutomatorError as error:
            raise ValidationError(f"service '{service}' action {action}: {error.message}",
                                  {**error.details, "entity": "service", "name": service}
                                  ) from None

    def run(self, action, service, fields, context, transport):
        context = context or {}
        _check_script_or_command(service, action, fields)
        script, command = fields.get("script"), fields.get("command")
        env = self._environment(action, service, fields, context, transport)
        if command:
            argv = split_args(command, "command")
            if not argv:
                raise AutomatorError(f"shell: {service}/{action}: field 'command' is empty")
        else:
            argv = self._script_argv(script, service, fields, context, transport)
        result = transport.run(argv, env=env)
        return ActionResult(result.exit_code, cap(result.stdout), cap(result.stderr))

    def _script_argv(self, script, service, fields, context, transport):
        with open(self._resolve(script, context), "rb") as f:
            data = f.read()
        workdir = getattr(transport, "workdir", None) or ".shoal"
        folder = re.sub(r"[^A-Za-z0-9_.-]", "_", str(service)).lstrip(".") or "service"
        remote = posixpath.join(workdir, "scripts", folder, posixpath.basename(script))
        remote = transport.put(remote, data, 0o755) or remote
        if fields.get("interpreter"):
            interpreter = split_args(fields["interpreter"], "interpreter")
        else:
            interpreter = [] if data.startswith(b"#!") else ["/bin/sh"]
        return [*interpreter, remote, *split_args(fields.get("args"), "args")]

    def _resolve(self, name, context):
        """The local file of script ``name``: plugin resources first, then script directories."""
        name = str(name)
        _check_script_name(name)
        looked = []
        if self.resources is not None:
            looked.append("plugin resources (scripts)")
            try:
                path = self.resources.path("scripts", name)
            except (ShoalError, LookupError, OSError):
                path = None
            if path and os.path.isfile(path):
                return path
        dirs = [context.get("script_dir"), *self.script_dirs, PACKAGE_SCRIPTS]
        for directory in filter(None, dirs):
            looked.append(directory)
            path = os.path.join(directory, name)
            if os.path.isfile(path):
                return path
        raise AutomatorError(f"shell: script {name!r} not found (looked in: {', '.join(looked)})",
                             {"script": name, "looked_in": looked})

    def _environment(self, action, service, fields, context, transport):
        config = _fact(context, "config", ("cluster", "config"), {})
        facts = {
            "SHOAL_SERVICE": str(service),
            "SHOAL_ACTION": str(getattr(action, "value", action)),
            "SHOAL_CLUSTER_ID": str(_fact(context, "cluster_id", ("cluster", "id"), "")),
            "SHOAL_NODE_ID": str(_fact(context, "node_id", ("node", "id"), "")),
        }
        config_json = json.dumps(config, sort_keys=True)
        if len(config_json.encode()) <= CONFIG_ENV_LIMIT:
            facts["SHOAL_CONFIG"] = config_json
        else:
            workdir = getattr(transport, "workdir", None) or ".shoal"
            path = posixpath.join(workdir, "config",
                                  f"{facts['SHOAL_CLUSTER_ID'] or 'cluster'}.json")
            facts["SHOAL_CONFIG_FILE"] = transport.put(path, config_json.encode(), 0o600) or path
        env = {}
        extra = fields.get("env") or {}
        if isinstance(extra, str):
            try:
                extra = json.loads(extra)
            except ValueError as exc:
                raise AutomatorError(f"shell: field 'env' is not a JSON object: {exc}") from exc
        if not isinstance(extra, dict):
            raise AutomatorError("shell: field 'env' must be a dict of variables")
        for name, value in extra.items():
            if not _ENV_NAME.match(str(name)):
                raise AutomatorError(f"shell: invalid environment variable name {name!r}")
            if value is not None:
                env[str(name)] = _env_value(value)
        env.update(facts)  # the facts are Shoal's; a field cannot fake them
        return env
