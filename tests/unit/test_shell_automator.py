"""The shell automator on a real local sandbox and on a real sshd."""

import json
import os

import pytest

from cluster_server.errors import AutomatorError
from cluster_server.plugins import NodeSpec
from extensions.automators.shell import OUTPUT_CAP, ShellAutomator
from extensions.providers.local import LocalProvider
from extensions.transports import SSHTransport
from tests.sshd import ssh_host  # noqa: F401  (fixture)

ARGS_SCRIPT = """#!/usr/bin/env python3
import json, os, sys
print(json.dumps({"argv": sys.argv[1:], "env": {k: v for k, v in os.environ.items()
                                               if k.startswith(("SHOAL_", "MY_"))}}))
"""

CONTEXT = {"cluster_id": "c1", "node_id": "n1",
           "config": {"web": {"port": 8080, "motd": "it's \"fine\"; really"}}}


@pytest.fixture
def scripts(tmp_path):
    directory = tmp_path / "scripts"
    (directory / "web").mkdir(parents=True)
    (directory / "web" / "args.py").write_text(ARGS_SCRIPT)
    (directory / "plain.sh").write_text('echo "plain sh: $1"\n')  # no #! line
    return directory


@pytest.fixture
def node(tmp_path):
    provider = LocalProvider("local", {}, str(tmp_path / "home"))
    info = provider.create(NodeSpec("c1", "n1", "n1.local", "small", "any", {}, {}, "t1"))
    yield provider.transport(info)
    provider.delete(info)


@pytest.fixture
def automator(tmp_path, scripts):
    return ShellAutomator(str(tmp_path / "home"), script_dirs=[str(scripts)])


def report(result):
    assert result.ok, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("args, expected", [
    ("--port 8080 'two words' \"it's\" '; touch INJECTED' '$(id)'",
     ["--port", "8080", "two words", "it's", "; touch INJECTED", "$(id)"]),
    (["a b", "; touch INJECTED", 7], ["a b", "; touch INJECTED", "7"]),
    ("", []),
])
def test_script_args_are_argv_never_a_shell(automator, node, args, expected):
    out = report(automator.run("install", "web", {"script": "web/args.py", "args": args},
                               CONTEXT, node))
    assert out["argv"] == expected
    assert not os.path.exists(os.path.join(node.root, "INJECTED"))


def test_context_reaches_the_script_as_environment(automator, node):
    fields = {"script": "web/args.py", "env": {"MY_VAR": "x; y", "SHOAL_NODE_ID": "fake"}}
    out = report(automator.run("configure", "web", fields, CONTEXT, node))
    env = out["env"]
    assert env["SHOAL_SERVICE"] == "web"
    assert env["SHOAL_ACTION"] == "configure"
    assert env["SHOAL_CLUSTER_ID"] == "c1"
    assert env["SHOAL_NODE_ID"] == "n1"  # a field cannot fake a fact
    assert json.loads(env["SHOAL_CONFIG"]) == CONTEXT["config"]
    assert env["MY_VAR"] == "x; y"


def test_nested_context_is_understood(automator, node):
    context = {"cluster": {"id": "c9", "config": {"a": 1}}, "node": {"id": "n9"}}
    env = report(automator.run("start", "web", {"script": "web/args.py"}, context, node))["env"]
    assert (env["SHOAL_CLUSTER_ID"], env["SHOAL_NODE_ID"]) == ("c9", "n9")
    assert json.loads(env["SHOAL_CONFIG"]) == {"a": 1}


def test_script_is_copied_into_the_node(automator, node):
    automator.run("install", "web", {"script": "web/args.py"}, CONTEXT, node)
    copied = os.path.join(node.root, ".shoal", "scripts", "web", "args.py")
    assert open(copied).read() == ARGS_SCRIPT


def test_script_without_shebang_runs_with_sh(automator, node):
    result = automator.run("install", "base", {"script": "plain.sh", "args": "a b"}, CONTEXT, node)
    assert result.stdout == "plain sh: a\n"


def test_interpreter_field(automator, node):
    result = automator.run("install", "base", {"script": "plain.sh", "interpreter": "bash",
                                               "args": ["x y"]}, CONTEXT, node)
    assert result.stdout == "plain sh: x y\n"


@pytest.mark.parametrize("command", [
    ["sh", "-c", 'echo "$SHOAL_SERVICE"; exit 4'],
    "sh -c 'echo \"$SHOAL_SERVICE\"; exit 4'",
])
def test_inline_command_and_a_failing_exit_code(automator, node, command):
    result = automator.run("start", "web", {"command": command}, CONTEXT, node)
    assert (result.exit_code, result.stdout, result.ok) == (4, "web\n", False)


def test_output_is_capped_to_its_tail(automator, node):
    size = OUTPUT_CAP * 3
    result = automator.run("start", "web", {"command": [
        "python3", "-c", f"import sys; sys.stdout.write('x' * {size} + 'END')"]}, CONTEXT, node)
    assert result.stdout.endswith("x" * 100 + "END")
    assert result.stdout.startswith("[output cut: first ")
    assert len(result.stdout.encode()) < OUTPUT_CAP + 100


def test_resources_are_asked_first(tmp_path, node):
    uploaded = tmp_path / "uploaded.sh"
    uploaded.write_text("#!/bin/sh\necho from resources\n")
    asked = []

    class Resources:
        def path(self, kind, name):
            asked.append((kind, name))
            return str(uploaded)

    automator = ShellAutomator(str(tmp_path), resources=Resources())
    result = automator.run("install", "web", {"script": "web/install.sh"}, CONTEXT, node)
    assert result.stdout == "from resources\n"
    assert asked == [("scripts", "web/install.sh")]


def test_script_dir_from_the_context(tmp_path, scripts, node):
    automator = ShellAutomator(str(tmp_path))
    context = dict(CONTEXT, script_dir=str(scripts))
    assert automator.run("install", "base", {"script": "plain.sh"}, context, node).ok


@pytest.mark.parametrize("fields, message", [
    ({"script": "missing.sh"}, "not found"),
    ({"script": "../outside.sh"}, "without '..'"),
    ({"script": "/etc/passwd"}, "relative path"),
    ({}, "exactly one of"),
    ({"script": "plain.sh", "command": "true"}, "exactly one of"),
    ({"command": "echo 'unclosed"}, "cannot be split"),
    ({"command": "true", "env": {"BAD NAME": "1"}}, "invalid environment variable"),
])
def test_bad_fields_are_automator_errors(automator, node, fields, message):
    with pytest.raises(AutomatorError, match=message):
        automator.run("install", "web", fields, CONTEXT, node)


def test_script_over_ssh(automator, ssh_host):
    transport = SSHTransport(ssh_host.address, ssh_host.port, ssh_host.user, ssh_host.key_file,
                             ssh_host.host_key, workdir=os.path.join(ssh_host.home, ".shoal"))
    out = report(automator.run("install", "web", {"script": "web/args.py",
                                                  "args": "'a b' '; touch INJECTED'"},
                               CONTEXT, transport))
    assert out["argv"] == ["a b", "; touch INJECTED"]
    assert json.loads(out["env"]["SHOAL_CONFIG"]) == CONTEXT["config"]
    assert os.path.isfile(os.path.join(ssh_host.home, ".shoal", "scripts", "web", "args.py"))
    transport.close()


def test_large_config_goes_to_a_file(automator, node):
    context = dict(CONTEXT, config={"blob": "x" * 200_000})
    result = automator.run("start", "web", {"command": [
        "sh", "-c", 'test -z "$SHOAL_CONFIG" && echo "$SHOAL_CONFIG_FILE"']}, context, node)
    assert result.ok, result.stderr
    path = result.stdout.strip()
    assert path.startswith(node.root)
    with open(path) as f:
        assert json.load(f) == context["config"]
