"""The ansible automator against a real sshd on loopback: real ansible-playbook runs."""

import json
import os

import pytest

from cluster_server.errors import AutomatorError, ValidationError
from extensions.automators.ansible import AnsibleAutomator, cluster_facts
from extensions.transports import LocalTransport, SSHTransport
from tests.sshd import ssh_host  # noqa: F401  (fixture)

PLAY = """
- hosts: all
  gather_facts: false
  tasks:
    - name: write what the play was given
      copy:
        dest: "{{ out }}"
        content: "{{ {'extra': greeting, 'peer': shoal.hosts['db'][0], 'peer_ip': shoal.ips['db'][0],
                     'cluster': shoal.cluster.name, 'me': inventory_hostname} | to_json }}"
    - name: only with the tag
      copy:
        dest: "{{ out }}.tagged"
        content: "tagged"
      tags: [extra]
"""
FAILING = """
- hosts: all
  gather_facts: false
  tasks:
    - name: a step that works
      command: "true"
    - name: check the disk is there
      fail:
        msg: "the disk {{ disk }} is missing"
"""


# The loopback host is this machine: its pyenv shims would win interpreter discovery.
PYTHON = "/usr/bin/python3"


class _Resources:
    """Plugin resources with nothing active: playbooks come from the shipped folder."""

    def path(self, kind, name):
        raise LookupError(name)


@pytest.fixture
def books(tmp_path, monkeypatch):
    folder = tmp_path / "playbooks"
    folder.mkdir()
    (folder / "play.yml").write_text(PLAY)
    (folder / "failing.yml").write_text(FAILING)
    monkeypatch.setattr("extensions.automators.ansible.PACKAGE_PLAYBOOKS", str(folder))
    return folder


def _transport(host, host_key=None):
    return SSHTransport(host.address, host.port, host.user, host.key_file,
                        host_key or host.host_key, workdir=os.path.join(host.home, ".shoal"))


def _context(host):
    return {"cluster_id": "c1", "cluster_name": "demo", "node_id": "n1", "config": {"k": "v"},
            "node": {"id": "n1", "hostname": "web-1"},
            "nodes": [{"id": "n2", "hostname": "db-1", "services": ["db"],
                       "addresses": {"bind_v4": "10.0.0.2", "access_v4": "10.0.0.2"}},
                      {"id": "n1", "hostname": "web-1", "services": ["web"],
                       "addresses": {"bind_v4": host.address, "access_v4": host.address}}]}


def test_a_play_gets_extra_vars_and_the_cluster_facts(ssh_host, books, tmp_path):  # noqa: F811
    out = tmp_path / "out.json"
    automator = AnsibleAutomator(tmp_path / "home", _Resources())
    fields = {"playbook": "play.yml", "extra_vars": {"out": str(out), "greeting": "it's; $(id)",
                                                "ansible_python_interpreter": PYTHON}}
    result = automator.run("CONFIGURE", "web", fields, _context(ssh_host), _transport(ssh_host))
    assert result.exit_code == 0, result.stdout
    assert json.loads(out.read_text()) == {"extra": "it's; $(id)", "peer": "db-1",
                                           "peer_ip": "10.0.0.2", "cluster": "demo", "me": "n1"}
    assert "write what the play was given" in result.stdout
    # tags: only the tagged task runs.
    out.unlink()
    (tmp_path / "out.json.tagged").unlink()
    result = automator.run("CONFIGURE", "web", {**fields, "tags": "extra"}, _context(ssh_host),
                           _transport(ssh_host))
    assert result.exit_code == 0, result.stdout
    assert not out.exists() and (tmp_path / "out.json.tagged").read_text() == "tagged"


def test_a_failed_play_names_the_task_and_its_message(ssh_host, books, tmp_path):  # noqa: F811
    automator = AnsibleAutomator(tmp_path / "home", _Resources())
    result = automator.run("INSTALL", "web", {"playbook": "failing.yml",
                                              "extra_vars": {"disk": "/dev/sdz",
                                                             "ansible_python_interpreter": PYTHON}},
                           _context(ssh_host), _transport(ssh_host))
    assert result.exit_code != 0
    assert result.stdout.rstrip().endswith(
        "ansible: task 'check the disk is there' failed on n1: the disk /dev/sdz is missing")


def test_a_host_key_other_than_the_pinned_one_is_refused(ssh_host, books, tmp_path):  # noqa
    other = tmp_path / "other"
    os.system(f"ssh-keygen -q -t ed25519 -N '' -f {other}")
    pinned = " ".join(open(f"{other}.pub").read().split()[:2])
    out = tmp_path / "out.json"
    automator = AnsibleAutomator(tmp_path / "home", _Resources())
    result = automator.run("CONFIGURE", "web", {"playbook": "play.yml", "extra_vars": {
        "out": str(out), "greeting": "x", "ansible_python_interpreter": PYTHON}}, _context(ssh_host), _transport(ssh_host, pinned))
    assert result.exit_code != 0 and not out.exists()
    assert "unreachable on n1" in result.stdout
    assert "Host key verification failed" in result.stdout


def test_fields_are_checked_before_anything_runs(tmp_path):
    for fields, field in [({"playbook": "../x.yml"}, "playbook"),
                          ({"playbook": "/etc/x.yml"}, "playbook"),
                          ({"playbook": "p.yml", "extra_vars": "[1]"}, "extra_vars"),
                          ({"playbook": "p.yml", "become": "maybe"}, "become"),
                          ({"playbook": "p.yml", "tags": [""]}, "tags"),
                          ({}, "playbook")]:
        with pytest.raises(ValidationError) as caught:
            AnsibleAutomator.check_fields("web", "install", fields)
        assert caught.value.details["field"] == field
    AnsibleAutomator.check_fields("web", "install", {"playbook": "a.tgz/site.yml",
                                                     "extra_vars": '{"a": 1}', "become": "true"})


def test_a_node_without_ssh_is_refused(tmp_path, books):
    automator = AnsibleAutomator(tmp_path / "home", _Resources())
    (tmp_path / "node").mkdir()
    with pytest.raises(AutomatorError, match="no SSH access"):
        automator.run("INSTALL", "web", {"playbook": "play.yml"}, {},
                      LocalTransport(tmp_path / "node"))


def test_cluster_facts_follow_the_macros_order():
    facts = cluster_facts({"node_id": "n2", "nodes": [
        {"id": "n10", "hostname": "b", "services": ["x"], "addresses": {"bind_v4": "1.1.1.10"}},
        {"id": "n2", "hostname": "a", "services": ["x", "y"], "addresses": {}}]}, "START", "y")
    assert facts["hosts"] == {"x": ["a", "b"], "y": ["a"]}
    assert facts["ips"]["x"] == ["", "1.1.1.10"]
    assert facts["node"]["hostname"] == "a" and facts["action"] == "START"


def test_the_shipped_facts_playbook(ssh_host, tmp_path):  # noqa: F811
    out = tmp_path / "facts" / "cluster.json"
    automator = AnsibleAutomator(tmp_path / "home", _Resources())
    result = automator.run("CONFIGURE", "web", {"playbook": "shoal-facts.yml", "extra_vars": {
        "facts_file": str(out), "ansible_python_interpreter": PYTHON}}, _context(ssh_host),
        _transport(ssh_host))
    assert result.exit_code == 0, result.stdout
    facts = json.loads(out.read_text())
    assert facts["hosts"] == {"db": ["db-1"], "web": ["web-1"]}
    assert facts["node"]["id"] == "n1" and facts["config"] == {"k": "v"}
