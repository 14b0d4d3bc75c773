"""Clusters of containers through the real CLI and server: the docker provider (docker exec and
SSH), the docker-cli automator with the aws CLI image, and the environment shell."""

import hashlib
import json
import os
import shutil
import sys
import time
import urllib.request

import pexpect
import pytest

from tests.conftest import ROOT, SHOAL, Shoal
from tests.containers import BASE_IMAGE, aws_image, docker_client, labelled  # noqa: F401

# A web service: install writes the node's hostname as the page; start runs a detached server.
PAGE = ("import pathlib, socket; d = pathlib.Path('/srv/web'); d.mkdir(parents=True, "
        "exist_ok=True); (d / 'index.html').write_text(socket.gethostname())")
SERVE = ("import subprocess, sys; subprocess.Popen([sys.executable, '-m', 'http.server', '8000',"
         " '--directory', '/srv/web'], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, "
         "stderr=subprocess.DEVNULL, start_new_session=True)")
CREDENTIALS = "[default]\naws_access_key_id = AKIASHOALMARKER0001\naws_secret_access_key = " \
              "shoal-secret-marker-7f3a\n"


def _catalog(tmp_path, credentials):
    catalog = tmp_path / "catalog"
    entries = {
        "providers/dock-exec.json": {"name": "dock-exec", "providertype": "docker",
                                     "provisioner": {"access": "exec"}},
        "providers/dock-ssh.json": {"name": "dock-ssh", "providertype": "docker",
                                    "provisioner": {"access": "ssh"}},
        "hardwaretypes/container.json": {"name": "container", "providermap": {
            "dock-exec": {"flavor": "container"}, "dock-ssh": {"flavor": "container"},
            "local": {"flavor": "sandbox"}}},
        "imagetypes/bookworm.json": {"name": "bookworm", "providermap": {
            "dock-exec": {"image": BASE_IMAGE}, "dock-ssh": {"image": BASE_IMAGE},
            "local": {"image": "host"}}},
        "imagetypes/missing.json": {"name": "missing", "providermap": {
            "dock-exec": {"image": "localhost/shoal-no-such-image:none"}}},
        "services/web.json": {"name": "web", "provisioner": {"actions": {
            "install": {"type": "shell", "fields": {"command": ["python3", "-c", PAGE]}},
            "start": {"type": "shell", "fields": {"command": ["python3", "-c", SERVE]}},
        }}},
        "services/odd.json": {"name": "odd", "provisioner": {"actions": {
            "install": {"type": "shell", "fields": {"command": ["true"]}}}}},
        "services/failing.json": {"name": "failing", "provisioner": {"actions": {
            "install": {"type": "shell", "fields": {"command": [
                "sh", "-c", "echo install-failed-here >&2; exit 1"]}}}}},
        "services/awscheck.json": {"name": "awscheck", "provisioner": {"actions": {
            "install": {"type": "docker-cli", "fields": {
                "cli": "aws", "command": ["aws", "configure", "list"],
                "credentials": str(credentials), "network": "none"}},
            "configure": {"type": "docker-cli", "fields": {
                "cli": "aws", "command": ["sh", "-c", 'cat "$AWS_SHARED_CREDENTIALS_FILE"'],
                "credentials": str(credentials), "network": "none"}},
        }}},
        "clustertemplates/boxes.json": {"name": "boxes", "defaults": {
            "services": ["web"], "provider": "dock-exec", "hardwaretype": "container",
            "imagetype": "bookworm"}},
        # One node of three on an image that does not exist: its CREATE fails mid-create.
        "clustertemplates/broken.json": {"name": "broken", "defaults": {
            "services": ["web", "odd"], "provider": "dock-exec", "hardwaretype": "container"},
            "compatibility": {"imagetypes": ["bookworm", "missing"]},
            "constraints": {"layout": {"cantcoexist": [["web", "odd"]]}, "services": {
                "odd": {"imagetypes": ["missing"], "quantities": {"min": 1, "max": 1}},
                "web": {"imagetypes": ["bookworm"]}}}},
        # One node of three fails its INSTALL, after every container was made.
        "clustertemplates/failing.json": {"name": "failing", "defaults": {
            "services": ["web", "failing"], "provider": "dock-exec",
            "hardwaretype": "container", "imagetype": "bookworm"},
            "constraints": {"layout": {"cantcoexist": [["web", "failing"]]}, "services": {
                "failing": {"quantities": {"min": 1, "max": 1}}}}},
        "clustertemplates/aws-tool.json": {"name": "aws-tool", "defaults": {
            "services": ["awscheck"], "provider": "local", "hardwaretype": "container",
            "imagetype": "bookworm"}},
    }
    for path, body in entries.items():
        (catalog / path).parent.mkdir(parents=True, exist_ok=True)
        (catalog / path).write_text(json.dumps(body))
    return catalog


@pytest.fixture
def credentials(tmp_path):
    path = tmp_path / "aws-credentials"
    path.write_text(CREDENTIALS)
    path.chmod(0o600)
    return path


@pytest.fixture
def shoal(tmp_path, docker_client, credentials):  # noqa: F811
    client = Shoal(tmp_path / "home", default_catalog=True, retries=0, poll_base=0.2)
    client.env["AWS_SHARED_CREDENTIALS_FILE"] = str(credentials)
    client.run("server", "start")
    client.run("catalog", "import", _catalog(tmp_path, credentials))
    yield client
    client.run("server", "stop")
    _remove_leftovers(docker_client, client.home)


def _remove_leftovers(docker_client, home):  # noqa: F811
    """A failed test must not leave containers behind for the next one (tests assert on
    their own clusters' labels; this only tidies up)."""
    from extensions.providers.docker import home_label

    containers, networks = labelled(docker_client, home=home_label(home))
    for container in containers:
        docker_client.api.remove_container(container.id, force=True, v=True)
    for network in networks:
        docker_client.api.remove_network(network.name)


def _cluster_id(shoal, name):
    return shoal.json("cluster", "show", name)["id"]


def _page(address):
    """The page a node serves (its server was started detached a moment ago)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen(f"http://{address}:8000/", timeout=5) as response:
                return response.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.mark.parametrize("provider", ["dock-exec", "dock-ssh"])
def test_three_containers_with_a_shell_service(shoal, docker_client, provider):  # noqa: F811
    started = time.monotonic()
    shoal.run("cluster", "create", "web", "--template", "boxes", "--size", "3",
              "--provider", provider, "--wait")
    print(f"create of 3 containers ({provider}): {time.monotonic() - started:.1f} s",
          file=sys.stderr)
    cluster = shoal.json("cluster", "show", "web")
    assert cluster["status"] == "ACTIVE" and len(cluster["nodes"]) == 3
    cluster_id = cluster["id"]
    containers, networks = labelled(docker_client, cluster=cluster_id)
    assert len(containers) == 3 and len(networks) == 1
    for container in containers:
        assert container.attrs["Labels"]["shoal.token"]
        assert container.attrs["Labels"]["shoal.access"] == provider.split("-")[1]
    # Each node serves its own hostname: installed and started by the shell automator.
    for node in cluster["nodes"]:
        assert _page(node["address"]) == node["hostname"]

    shoal.run("cluster", "delete", "web", "--wait")
    assert labelled(docker_client, cluster=cluster_id) == ([], [])


@pytest.mark.parametrize("template, failure", [
    ("broken", "shoal-no-such-image"),  # a CREATE fails: its image does not exist
    ("failing", "install-failed-here"),  # an INSTALL fails on a running container
])
def test_a_failure_in_the_middle_of_create_leaves_nothing(shoal, docker_client,  # noqa: F811
                                                          template, failure):
    result = shoal.run("cluster", "create", "bad", "--template", template, "--size", "3",
                       "--wait", check=False)
    assert result.returncode != 0
    cluster = shoal.json("cluster", "show", "bad")
    assert cluster["status"] == "FAILED"
    assert failure in result.stderr  # the failing task's output, shown by --wait
    tasks = shoal.json("task", "list", "bad")
    created = [t for t in tasks if t["Action"] == "CREATE" and t["Status"] == "SUCCEEDED"]
    assert created  # containers were made before the failure ...
    assert {t["Action"] for t in tasks if t["ID"].split("/")[1].startswith("rollback:")} == {
        "DELETE", "CLEANUP"}
    # ... and the rollback removed every one of them, and the network.
    assert labelled(docker_client, cluster=cluster["id"]) == ([], [])


def test_docker_cli_runs_the_aws_image_with_credentials_read_only(shoal, docker_client,  # noqa
                                                                  aws_image, credentials):
    shoal.run("cluster", "create", "tool", "--template", "aws-tool", "--size", "1", "--wait")
    tasks = {t["Action"]: t for t in shoal.json("task", "list", "tool")}
    listed = shoal.json("task", "show", tasks["INSTALL"]["ID"])["output"]
    # The aws CLI read the mounted file: it shows the key's last characters and where from.
    assert "****************0001 shared-credentials-file" in listed
    assert "shoal-secret-marker-7f3a" in shoal.json("task", "show",
                                                    tasks["CONFIGURE"]["ID"])["output"]

    # Every call left its Dockerfile and result in SHOAL_HOME/deployments/<cluster>/.
    calls = sorted((shoal.home / "deployments" / "tool").iterdir())
    assert [c.name.rsplit("-", 1)[1] for c in calls] == ["install", "configure"]
    for call in calls:
        assert (call / "Dockerfile").read_text().startswith("# The AWS CLI")
        assert json.loads((call / "result.json").read_text())["exit_code"] == 0
        assert json.loads((call / "build.json").read_text())["image"] == aws_image
    assert "shoal-secret-marker-7f3a" not in (calls[0] / "command.json").read_text()

    # The image holds no trace of the credentials: every layer of its saved archive, and its
    # filesystem seen from a container with nothing mounted.
    archive = b"".join(docker_client.images.get(aws_image).save())
    assert b"shoal-secret-marker-7f3a" not in archive and b"AKIASHOALMARKER" not in archive
    out = docker_client.containers.run(aws_image, ["sh", "-c", "grep -rl shoal-secret-marker "
                                                   "/root /run /etc /tmp /opt; true"],
                                       remove=True, network_mode="none")
    assert out.strip() == b""
    # No container of the calls is left.
    assert labelled(docker_client, role="docker-cli", cluster=_cluster_id(shoal, "tool"))[0] == []
    shoal.run("cluster", "delete", "tool", "--wait")


def test_environment_shell_reaches_every_node(shoal, docker_client, aws_image, tmp_path):  # noqa
    shoal.run("cluster", "create", "env", "--template", "boxes", "--size", "3", "--wait")
    cluster = shoal.json("cluster", "show", "env")
    nodes = cluster["nodes"]

    # exec: one command as an argv, its output and its exit code.
    result = shoal.run("cluster", "exec", "env", "--", "ssh", nodes[0]["id"], "hostname")
    assert result.stdout.strip() == nodes[0]["hostname"]
    result = shoal.run("cluster", "exec", "env", "--", "sh", "-c", "echo oops >&2; exit 7",
                       check=False)
    assert result.returncode == 7 and "oops" in result.stderr
    inventory = json.loads(shoal.run("cluster", "exec", "env", "--", "sh", "-c",
                                     'printf %s "$SHOAL_INVENTORY"').stdout)
    assert sorted(n["id"] for n in inventory["nodes"]) == sorted(n["id"] for n in nodes)
    result = shoal.run("cluster", "exec", "env", "--", "cat", "/run/shoal/inventory.json")
    assert json.loads(result.stdout)["cluster"]["name"] == "env"
    # -i: our stdin goes to the command, and its end ends the command's input.
    piped = "".join(f"line {i}\n" for i in range(20000))  # more than one read or frame
    result = shoal.run("cluster", "exec", "env", "-i", "--", "sh", "-c",
                       "sha256sum; echo done >&2", input=piped)
    assert result.stdout.split()[0] == hashlib.sha256(piped.encode()).hexdigest()
    assert result.stderr.strip().endswith("done")
    assert shoal.run("cluster", "exec", "-i", "env", "--", "cat", input="before NAME").stdout \
        == "before NAME"
    assert "unknown option(s) before '--': -z" in shoal.fails(
        "cluster", "exec", "env", "-z", "--", "cat").stderr
    # Without -i the command's stdin is empty, whatever ours holds.
    assert shoal.run("cluster", "exec", "env", "--", "cat", input="not sent").stdout == ""

    # shell: a real terminal; ssh to each node by id and by hostname prints its hostname.
    env = {**shoal.env, "TERM": "dumb"}
    child = pexpect.spawn(SHOAL, ["cluster", "shell", "env"], env=env, encoding="utf-8",
                          timeout=60, dimensions=(40, 160))
    child.logfile_read = open(tmp_path / "shell.log", "w")
    try:
        child.expect(r"\(shoal:env\)")
        for node in nodes:
            for name in (node["id"], node["hostname"]):
                child.sendline(f"h=$(ssh {name} hostname); echo \"GOT:$h:$?\"")
                child.expect(r"GOT:([^:\r\n]*):(\d+)")
                assert (child.match.group(1), child.match.group(2)) == (node["hostname"], "0")
        child.sendline("test -r $AWS_SHARED_CREDENTIALS_FILE && echo CREDS-OK")
        child.expect("CREDS-OK")
        child.sendline("exit 3")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 3
    # The shell containers are gone; the cluster's own three are still there.
    assert labelled(docker_client, role="shell", cluster=cluster["id"])[0] == []
    shoal.run("cluster", "delete", "env", "--wait")
    assert labelled(docker_client, cluster=cluster["id"]) == ([], [])


def test_environment_shell_reaches_ssh_nodes_on_loopback(tmp_path, docker_client,  # noqa: F811
                                                         aws_image):
    """SSH-provider nodes listen on loopback: the shell container uses host networking."""
    from tests.sshd import SSHHost

    hosts = [SSHHost(address=f"127.0.0.{n}") for n in (5, 6)]
    client = Shoal(tmp_path / "home", retries=0)
    # The CLI images: Shoal's aws, and a second one to stack on it (--cli aws,hello).
    dockerfiles = tmp_path / "dockerfiles"
    shutil.copytree(ROOT / "dockerfiles" / "aws", dockerfiles / "aws")
    (dockerfiles / "hello").mkdir()
    (dockerfiles / "hello" / "Dockerfile").write_text(
        "ARG BASE=localhost/shoal-base:bookworm\nFROM ${BASE}\n"
        "RUN printf '#!/bin/sh\\necho hello from the second image\\n' >/usr/local/bin/hello "
        "&& chmod +x /usr/local/bin/hello\n")
    client.env["SHOAL_DOCKERFILES"] = str(dockerfiles)
    try:
        for host in hosts:
            host.start()
        client.run("server", "start")
        catalog = tmp_path / "catalog"
        entries = {
            "providers/onprem.json": {"name": "onprem", "providertype": "ssh", "provisioner": {
                "hosts": json.dumps([h.host_entry for h in hosts])}},
            "hardwaretypes/box.json": {"name": "box", "providermap": {"onprem": {"flavor": "b"}}},
            "imagetypes/os.json": {"name": "os", "providermap": {"onprem": {"image": "os"}}},
            "services/noop.json": {"name": "noop", "provisioner": {"actions": {
                "install": {"type": "shell", "fields": {"command": ["true"]}}}}},
            "clustertemplates/farm.json": {"name": "farm", "defaults": {
                "services": ["noop"], "provider": "onprem", "hardwaretype": "box",
                "imagetype": "os"}},
        }
        for path, body in entries.items():
            (catalog / path).parent.mkdir(parents=True, exist_ok=True)
            (catalog / path).write_text(json.dumps(body))
        client.run("catalog", "import", catalog)
        client.run("cluster", "create", "farm", "--template", "farm", "--size", "2", "--wait")
        for node in client.json("cluster", "show", "farm")["nodes"]:
            # The sshd hosts share this machine: their `hostname` is ours; where ssh landed
            # shows in SSH_CONNECTION (the server's address is the node's).
            result = client.run("cluster", "exec", "farm", "--", "ssh", node["id"], "printenv",
                                "SSH_CONNECTION")
            assert result.stdout.split()[2] == node["address"]
        # Two CLIs in one shell: the second image is built on the first.
        result = client.run("cluster", "exec", "farm", "--cli", "aws,hello", "--", "sh", "-c",
                            "aws --version 2>&1; hello")
        assert "aws-cli/" in result.stdout and "hello from the second image" in result.stdout
        client.run("cluster", "delete", "farm", "--wait")
    finally:
        client.run("server", "stop", check=False)
        _remove_leftovers(docker_client, client.home)
        for host in hosts:
            host.close()
