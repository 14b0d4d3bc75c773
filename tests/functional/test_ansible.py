"""The ansible automator through the real CLI and server, on containers reached over SSH (the
docker provider with ``access: ssh``): playbooks from an archive resource install, configure
and start two services; a failing play names its task; a changed host key is refused."""

import io
import json
import re
import tarfile
import time
import urllib.request

import pytest

from tests.conftest import Shoal
from tests.containers import BASE_IMAGE, docker_client, labelled  # noqa: F401
from tests.functional.test_docker import _remove_leftovers

# Daemons started by a play: detached, every stream closed, so the SSH session can end.
SERVE = ("setsid python3 -m http.server {port} --directory {dir} </dev/null >/dev/null 2>&1 &")
PLAYBOOKS = {
    "db/install.yml": """
- hosts: all
  gather_facts: false
  tasks:
    - name: make the data directory
      file: {path: /srv/db, state: directory, mode: "0755"}
    - name: write the data
      copy: {dest: /srv/db/index.html, content: "data from {{ shoal.node.hostname }}"}
""",
    "db/start.yml": f"""
- hosts: all
  gather_facts: false
  tasks:
    - name: start the data server
      shell: "{SERVE.format(port=8001, dir='/srv/db')}"
""",
    "app/install.yml": """
- hosts: all
  gather_facts: false
  tasks:
    - name: make the app directory
      file: {path: /srv/app, state: directory}
""",
    "app/configure.yml": """
- hosts: all
  gather_facts: false
  tasks:
    - name: write the app's config, pointing at the db node
      template: {src: templates/app.conf.j2, dest: /srv/app/app.conf}
""",
    "app/templates/app.conf.j2": "db_host={{ shoal.ips['db'][0] }}\n"
                                 "db_name={{ shoal.hosts['db'][0] }}\n"
                                 "from_macro={{ db_from_macro }}\n"
                                 "label={{ label }}\n",
    "app/start.yml": f"""
- hosts: all
  gather_facts: false
  tasks:
    - name: fetch from the db node
      uri: {{url: "http://{{{{ shoal.ips['db'][0] }}}}:8001/", return_content: true}}
      register: db
      retries: 20
      delay: 0.5
      until: db.status == 200
    - name: keep what the db said
      copy: {{dest: /srv/app/fetched, content: "{{{{ db.content }}}}"}}
    - name: start the app server
      shell: "{SERVE.format(port=8000, dir='/srv/app')}"
""",
    "broken/install.yml": """
- hosts: all
  gather_facts: false
  tasks:
    - name: look around
      command: "true"
    - name: check the licence server
      fail: {msg: "licence server {{ where }} did not answer"}
""",
}


SHELL_PLAY = """
- hosts: all
  gather_facts: false
  tasks:
    - command: hostname
      register: name
    - debug: {msg: "{{ name.stdout }} has {{ shoal_services[0] }}"}
"""


def _archive():
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in PLAYBOOKS.items():
            data = text.encode()
            info = tarfile.TarInfo(f"site/{name}")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _play(path, **extra):
    fields = {"playbook": f"site.tgz/site/{path}"}
    if extra:
        fields["extra_vars"] = extra
    return {"type": "ansible", "fields": fields}


def _catalog(tmp_path):
    catalog = tmp_path / "catalog"
    entries = {
        "providers/dock-ssh.json": {"name": "dock-ssh", "providertype": "docker",
                                    "provisioner": {"access": "ssh"}},
        "hardwaretypes/container.json": {"name": "container", "providermap": {
            "dock-ssh": {"flavor": "container"}}},
        "imagetypes/bookworm.json": {"name": "bookworm", "providermap": {
            "dock-ssh": {"image": BASE_IMAGE}}},
        "services/db.json": {"name": "db", "provisioner": {"actions": {
            "install": _play("db/install.yml"), "start": _play("db/start.yml")}}},
        "services/app.json": {"name": "app", "dependencies": {"runtime": {"requires": ["db"]}},
                              "provisioner": {"actions": {
            "install": _play("app/install.yml"),
            "configure": _play("app/configure.yml", db_from_macro="%ip.service.db%",
                               label="it's $(not) a `command`"),
            "start": _play("app/start.yml")}}},
        "services/broken.json": {"name": "broken", "provisioner": {"actions": {
            "install": _play("broken/install.yml", where="%host.self%")}}},
        "clustertemplates/app-db.json": {"name": "app-db", "defaults": {
            "services": ["app", "db"], "provider": "dock-ssh", "hardwaretype": "container",
            "imagetype": "bookworm"}, "constraints": {
                "layout": {"cantcoexist": [["app", "db"]]},
                "services": {"db": {"quantities": {"min": 1, "max": 1}}}}},
        "clustertemplates/broken.json": {"name": "broken", "defaults": {
            "services": ["broken"], "provider": "dock-ssh", "hardwaretype": "container",
            "imagetype": "bookworm"}},
    }
    for path, body in entries.items():
        (catalog / path).parent.mkdir(parents=True, exist_ok=True)
        (catalog / path).write_text(json.dumps(body))
    return catalog


@pytest.fixture
def shoal(tmp_path, docker_client):  # noqa: F811
    client = Shoal(tmp_path / "home", retries=0, poll_base=0.2)
    client.run("server", "start")
    client.run("catalog", "import", _catalog(tmp_path))
    (tmp_path / "site.tgz").write_bytes(_archive())
    client.run("resource", "upload", "archives", "site.tgz", tmp_path / "site.tgz")
    client.run("resource", "activate", "archives", "site.tgz", "1")
    yield client
    client.run("server", "stop")
    _remove_leftovers(docker_client, client.home)


def _get(url):
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _task(shoal, cluster, action, node_id):
    for task in shoal.json("task", "list", cluster):
        if task["Action"] == action and task["Node"] == node_id:
            return shoal.json("task", "show", task["ID"])
    raise AssertionError(f"no {action} task on {node_id}")


def test_playbooks_install_configure_and_start_two_services(shoal, docker_client):  # noqa: F811
    shoal.run("cluster", "create", "shop", "--template", "app-db", "--size", "3", "--wait")
    cluster = shoal.json("cluster", "show", "shop")
    assert cluster["status"] == "ACTIVE"
    db = [n for n in cluster["nodes"] if "db" in n["services"]]
    apps = [n for n in cluster["nodes"] if "app" in n["services"]]
    assert len(db) == 1 and len(apps) == 2
    for app in apps:
        # configure templated the db node's address (the play's facts and a macro agree), and
        # start reached the db node's server from the app node.
        conf = _get(f"http://{app['address']}:8000/app.conf")
        assert conf == (f"db_host={db[0]['address']}\ndb_name={db[0]['hostname']}\n"
                        f"from_macro={db[0]['address']}\nlabel=it's $(not) a `command`\n")
        assert _get(f"http://{app['address']}:8000/fetched") == f"data from {db[0]['hostname']}"
    # The play's output is the task's output.
    shown = _task(shoal, "shop", "CONFIGURE", apps[0]["id"])
    assert "TASK [write the app's config, pointing at the db node]" in shown["output"]

    # The shell's inventory, from the ansible CLI image: ansible-inventory lists every node,
    # and a playbook run there reaches each one over the shell's ssh config (keys pinned).
    listed = json.loads(shoal.run("cluster", "exec", "shop", "--cli", "ansible", "--",
                                  "ansible-inventory", "--list").stdout)
    ids = sorted(n["id"] for n in cluster["nodes"])
    assert sorted(listed["_meta"]["hostvars"]) == ids and sorted(listed["app"]["hosts"]) == \
        sorted(a["id"] for a in apps)
    result = shoal.run("cluster", "exec", "-i", "shop", "--cli", "ansible", "--", "sh", "-c",
                       "cat >/tmp/play.yml && ansible-playbook /tmp/play.yml", input=SHELL_PLAY)
    for node in cluster["nodes"]:
        assert re.search(rf"\n{node['id']} +: ok=2 +changed=1 +unreachable=0 +failed=0",
                         result.stdout), result.stdout
        assert f'"msg": "{node["hostname"]} has {node["services"][0]}"' in result.stdout

    # The node's host key changes (a new key, sshd re-executed with it): the next play refuses
    # to connect, and the config on the node stays as it was.
    container = docker_client.containers.get(
        labelled(docker_client, node=apps[0]["id"], cluster=cluster["id"])[0][0].id)
    code, out = container.exec_run(["sh", "-c", "rm -f /etc/ssh/ssh_host_ed25519_key* && "
                                    "ssh-keygen -q -t ed25519 -N '' -f "
                                    "/etc/ssh/ssh_host_ed25519_key && kill -HUP 1"])
    assert code == 0, out
    time.sleep(1)  # sshd re-executes itself
    result = shoal.run("cluster", "reconfigure", "shop", "--wait", check=False)
    assert result.returncode != 0
    shown = _task(shoal, "shop", "CONFIGURE", apps[0]["id"])
    assert shown["status"] == "FAILED"
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in shown["output"]
    assert "unreachable on" in shown["output"]
    # The other app node kept its key: its play ran.
    assert _task(shoal, "shop", "CONFIGURE", apps[1]["id"])["status"] == "SUCCEEDED"

    shoal.run("cluster", "delete", "shop", "--wait")
    assert labelled(docker_client, cluster=cluster["id"]) == ([], [])


def test_a_failing_play_shows_its_task_and_message(shoal, docker_client):  # noqa: F811
    result = shoal.run("cluster", "create", "bad", "--template", "broken", "--size", "1",
                       "--wait", check=False)
    assert result.returncode != 0
    assert "check the licence server" in result.stderr  # shown by --wait
    cluster = shoal.json("cluster", "show", "bad")
    assert cluster["status"] == "FAILED"
    node = [t for t in shoal.json("task", "list", "bad") if t["Action"] == "INSTALL"][0]["Node"]
    shown = _task(shoal, "bad", "INSTALL", node)
    assert shown["status"] == "FAILED"
    # The task's name and the play's message (a macro expanded into it: the node's hostname)
    # end the output, after the play's own.
    assert re.search(r"\nansible: task 'check the licence server' failed on n1: licence server "
                     r"bad-\S+ did not answer\n", shown["output"]), shown["output"]
    assert "TASK [look around]" in shown["output"]
    assert labelled(docker_client, cluster=cluster["id"]) == ([], [])  # rolled back
