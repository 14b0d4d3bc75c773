"""Fan-out over SSH: Shoal beside Ansible, pyinfra and bare paramiko, on the same N containers.

Usage (as root, with the container engine of the tests)::

    export $(tests/podman.sh | tail -n 1)          # DOCKER_HOST=unix:///run/shoal-podman.sock
    .venv/bin/python bench/fanout.py [--sizes 10,30] [--runs 3] [--profile]

For each N, starts N containers from ``localhost/shoal-base:bookworm`` running sshd, published on
127.0.0.1 (docker SDK against DOCKER_HOST; a client key made for the run), then runs the same
3-step work on every host -- write a file, ``uname -a``, read the file back -- with:

(a) Shoal: a real server in a temp SHOAL_HOME, the ``ssh`` provider whose hosts are the
    containers, a service whose install/configure/start are the three steps as shell-automator
    ``command`` argv lists, made with ``shoal cluster create ... --wait``. First figure, "actions":
    from the start of the first INSTALL task to the end of the last START task, read from the
    task table (hosts already up and confirmed, their SSH connections already open, as they are
    for any operation after the create). Second figure: the wall time of the whole create
    (CREATE, CONFIRM with the host-key pinning and the first connection, BOOTSTRAP, the actions,
    and the CLI's --wait), and, printed once, how long the containers took to come up.
(b) ``ansible-playbook`` (ansible-core from PyPI, installed into a venv under the bench's temp
    dir) with its defaults: forks 5, facts gathered, no pipelining, OpenSSH with ControlPersist.
(c) the same playbook tuned: ``--forks N``, pipelining on, ``gather_facts: false``.
(d) bare paramiko: one thread and one connection per host, the three commands one after the
    other on it (TCP_NODELAY set, as Shoal's transport does); connect included. Printed beside
    it: the same with every connection opened before the clock starts, the fair match for (a)'s
    action window.
(e) Shoal driving Ansible: the same server and hosts, a service whose install, configure and
    start are playbooks (the ``ansible`` automator; ``shoal[ansible]`` in Shoal's venv) of one
    ``command`` task each, the same argv lists, from an ``archives`` plugin resource; the start
    playbook also asserts the content read back. Same two figures as (a).
(f) pyinfra (from PyPI, in the same temp venv as ansible-core): one ``server.shell`` operation
    per step, ``--parallel N``, strict host-key checking against the same known_hosts file; the
    third step is ``test "$(cat FILE)" = TEXT`` so a wrong read-back fails the run.

Every tool runs the same argv lists, checks every exit status and that the file reads back.
Rounds interleave the tools; each figure is the median of ``--runs`` rounds. Host keys are
checked by every tool (Shoal pins them at CONFIRM; Ansible gets a known_hosts file).

``--profile`` also samples the Shoal server with py-spy (installed into the same venv) during
the last round's create and prints where the task threads spend their time, and loads a
``sitecustomize`` into that server only (PYTHONPATH, SHOAL_BENCH_TRACE) that times each task's
runner call and the SSH commands in it, to split a task's time in the table into waiting for
a worker, the SSH command, the rest of the runner, and handing the result back.

Every container carries the label ``shoal.bench=fanout`` and ``shoal.bench.run=<id>``; all of
this run's are removed at the end, on failure and on Ctrl-C too.
"""

import argparse
import base64
import collections
import concurrent.futures
import contextlib
import json
import os
import pathlib
import shlex
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import docker
import paramiko

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOOLS = ("paramiko", "ansible-tuned", "ansible", "pyinfra", "shoal", "shoal-ansible")
SHOAL = str(pathlib.Path(sys.executable).with_name("shoal"))
IMAGE = "localhost/shoal-base:bookworm"
LABEL, RUN_LABEL = "shoal.bench", "shoal.bench.run"
FILE = "/tmp/shoal-fanout.txt"
TEXT = "fanout-ok"
# The work, as argv lists, identical for every tool.
STEPS = [
    ["sh", "-c", f"echo {TEXT} > {FILE}"],
    ["uname", "-a"],
    ["cat", FILE],
]
SSHD = ("mkdir -p /run/sshd /root/.ssh && ssh-keygen -A >/dev/null"
        " && printf '%s\\n' \"$AUTHORIZED_KEY\" > /root/.ssh/authorized_keys"
        " && chmod 700 /root/.ssh && chmod 600 /root/.ssh/authorized_keys"
        " && exec /usr/sbin/sshd -D -e")


# With --profile, the server (and only it) loads this through PYTHONPATH: it records when each
# task's runner call starts and ends, to split a task's time in the table into waiting for a
# worker, the action itself, and handing the result back to the executor.
TRACE_SITE = """
import sys
if "cluster_server.serve" in getattr(sys, "orig_argv", ()):
    import os, threading, time
    import cluster_server.actions as actions
    import extensions.transports as transports
    _path, _lock, _local = os.environ["SHOAL_BENCH_TRACE"], threading.Lock(), threading.local()
    _run, _ssh = actions.TaskRunner.run, transports.SSHTransport.run

    def ssh(self, *args, **kwargs):
        started = time.time()
        try:
            return _ssh(self, *args, **kwargs)
        finally:
            _local.ssh = getattr(_local, "ssh", 0.0) + time.time() - started

    def run(self, task, operation):
        _local.ssh = 0.0
        started = time.time()
        try:
            return _run(self, task, operation)
        finally:
            ended = time.time()
            with _lock, open(_path, "a") as f:
                f.write(f"{task['id']} {started:.6f} {ended:.6f} {_local.ssh:.6f}\\n")

    actions.TaskRunner.run = run
    transports.SSHTransport.run = ssh
"""


def log(message):
    print(message, file=sys.stderr, flush=True)


# -- the hosts --------------------------------------------------------------------------------

class Hosts:
    """N containers with sshd on published loopback ports, and what the tools need to reach them."""

    def __init__(self, client, workdir, run_id, key_file):
        self.client = client
        self.workdir = workdir
        self.run_id = run_id
        self.key_file = key_file
        self.hosts = []  # {"name", "port", "host_key"}

    def start(self, count):
        """Start ``count`` containers; returns the seconds until every sshd answered."""
        with open(self.key_file + ".pub") as f:
            public = f.read().strip()
        started = time.perf_counter()

        def run(i):
            container = self.client.containers.run(
                IMAGE, ["sh", "-c", SSHD], detach=True,
                name=f"shoal-fanout-{self.run_id}-{count}-{i}",
                labels={LABEL: "fanout", RUN_LABEL: self.run_id},
                environment={"AUTHORIZED_KEY": public},
                ports={"22/tcp": ("127.0.0.1", None)})
            container.reload()
            return {"name": container.name, "port": int(container.ports["22/tcp"][0]["HostPort"])}

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            self.hosts = list(pool.map(run, range(count)))
            # Every container makes its host keys first (ssh-keygen -A): slow on 2 cores.
            list(pool.map(lambda h: wait_for_banner(h["port"]), self.hosts))
        elapsed = time.perf_counter() - started
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            keys = list(pool.map(lambda h: host_key(h["port"]), self.hosts))
        for host, key in zip(self.hosts, keys):
            host["host_key"] = key
        return elapsed

    def known_hosts(self, path):
        with open(path, "w") as f:
            for host in self.hosts:
                f.write(f"[127.0.0.1]:{host['port']} {host['host_key']}\n")
        return path

    def remove(self):
        remove_containers(self.client, self.run_id)
        self.hosts = []


def remove_containers(client, run_id):
    """Remove every container (and network) of this run, found by its label."""
    filters = {"label": [f"{LABEL}=fanout", f"{RUN_LABEL}={run_id}"]}
    for container in client.containers.list(all=True, filters=filters):
        try:
            container.remove(force=True, v=True)
        except docker.errors.NotFound:
            pass
    for network in client.networks.list(filters=filters):
        with contextlib.suppress(docker.errors.NotFound):
            network.remove()


def wait_for_banner(port, timeout=180.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                if s.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"sshd on 127.0.0.1:{port} did not answer in {timeout:.0f} s")
        time.sleep(0.05)


def host_key(port):
    """The host's ed25519 key line, read over a bare SSH handshake (what a user pins)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        transport = paramiko.Transport(sock)
        try:
            transport.get_security_options().key_types = ["ssh-ed25519"]
            transport.start_client(timeout=10)
            key = transport.get_remote_server_key()
            return f"{key.get_name()} {key.get_base64()}"
        finally:
            transport.close()


# -- (d) bare paramiko --------------------------------------------------------------------------


def thread_per_item(work, items):
    """Seconds for ``work(item)`` on a thread per item, all started at once."""
    threads = [threading.Thread(target=work, args=(item,)) for item in items]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def transport_run(hosts, key_file):
    """Shoal's own SSHTransport (extensions/transports.py) on connections opened first, the
    three steps with the environment the shell automator sends: the transport alone, beside
    warm paramiko, to tell its share of Shoal's actions from the rest of the server's."""
    from extensions.transports import SSHTransport

    env = {"SHOAL_SERVICE": "fanout", "SHOAL_ACTION": "INSTALL", "SHOAL_CLUSTER_ID": "c-bench",
           "SHOAL_NODE_ID": "n1", "SHOAL_CONFIG": "{}"}
    with concurrent.futures.ThreadPoolExecutor(len(hosts.hosts)) as pool:
        transports = list(pool.map(lambda h: SSHTransport(
            "127.0.0.1", h["port"], "root", key_file=key_file, host_key=host_key(h["port"])),
            hosts.hosts))
        list(pool.map(lambda t: t.run(["true"]), transports))  # connected
    errors = []

    def work(transport):
        try:
            outputs = [transport.run(argv, env=env) for argv in STEPS]
            if any(r.exit_code for r in outputs) or outputs[2].stdout.strip() != TEXT:
                raise RuntimeError(f"transport: {outputs}")
        except Exception as exc:  # reported after the threads joined
            errors.append(repr(exc))

    elapsed = thread_per_item(work, transports)
    for transport in transports:
        transport.close()
    if errors:
        raise RuntimeError(f"transport: {errors[0]}")
    return elapsed


def paramiko_run(hosts, key_file, warm=False):
    """One thread and one connection per host, the three steps; returns the wall time.

    ``warm``: every connection is opened first and only the steps are timed (as in Shoal's
    action window, whose connections were opened at CONFIRM)."""
    key = paramiko.Ed25519Key.from_private_key_file(key_file)
    errors = []
    clients = {}

    def connect(host):
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        name, blob = host["host_key"].split()
        client.get_host_keys().add(f"[127.0.0.1]:{host['port']}", name,
                                   paramiko.PKey.from_type_string(name, base64.b64decode(blob)))
        sock = socket.create_connection(("127.0.0.1", host["port"]), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.connect("127.0.0.1", host["port"], username="root", pkey=key, sock=sock,
                       look_for_keys=False, allow_agent=False)
        return client

    def work(host):
        client = None
        try:
            client = clients.get(host["name"]) or connect(host)
            outputs = []
            for argv in STEPS:
                chan = client.get_transport().open_session()
                chan.exec_command(shlex.join(argv))
                out = chan.makefile("rb").read()
                code = chan.recv_exit_status()
                chan.close()
                if code != 0:
                    raise RuntimeError(f"{argv} exited {code}")
                outputs.append(out.decode())
            if outputs[2].strip() != TEXT:
                raise RuntimeError(f"read back {outputs[2]!r}")
        except Exception as exc:  # reported after the threads joined
            errors.append(f"{host['name']}: {exc!r}")
        finally:
            if client is not None and not warm:
                client.close()

    if warm:
        with concurrent.futures.ThreadPoolExecutor(len(hosts.hosts)) as pool:
            for host, client in zip(hosts.hosts, pool.map(connect, hosts.hosts)):
                clients[host["name"]] = client
    elapsed = thread_per_item(work, hosts.hosts)
    for client in clients.values():
        client.close()
    if errors:
        raise RuntimeError("paramiko run failed: " + "; ".join(errors[:3]))
    return elapsed


# -- (b), (c) Ansible ---------------------------------------------------------------------------

class Ansible:
    def __init__(self, workdir, tools, hosts):
        self.workdir = pathlib.Path(workdir)
        self.playbook = tools.bin("ansible-playbook")
        self.ssh_bin = shutil.which("ssh")
        self.hosts = hosts
        self.dir = self.workdir / "ansible"
        self.dir.mkdir(exist_ok=True)
        known = hosts.known_hosts(str(self.dir / "known_hosts"))
        inventory = {"fanout": {"hosts": {
            h["name"]: {"ansible_host": "127.0.0.1", "ansible_port": h["port"],
                        "ansible_user": "root",
                        "ansible_ssh_private_key_file": hosts.key_file,
                        "ansible_ssh_extra_args": f"-o UserKnownHostsFile={known}"}
            for h in hosts.hosts}}}
        self.inventory = self.dir / "inventory.json"
        self.inventory.write_text(json.dumps(inventory))
        tasks = [{"name": name, "ansible.builtin.command": {"argv": argv}, "register": reg}
                 for name, argv, reg in zip(("write a file", "uname -a", "read it back"), STEPS,
                                            ("wrote", "uname", "back"))]
        tasks.append({"name": "check", "ansible.builtin.assert": {
            "that": [f"back.stdout == '{TEXT}'"], "quiet": True}})
        play = {"name": "fanout", "hosts": "fanout", "tasks": tasks}
        (self.dir / "default.yml").write_text(json.dumps([play]))
        (self.dir / "tuned.yml").write_text(json.dumps([dict(play, gather_facts=False)]))

    def run(self, tuned, count):
        """One ansible-playbook run with fresh SSH control sockets; returns its wall time."""
        cp = pathlib.Path(tempfile.mkdtemp(prefix="cp-", dir=self.dir))
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
        env.update(ANSIBLE_HOME=str(self.dir / "home"), ANSIBLE_LOCAL_TEMP=str(self.dir / "tmp"),
                   ANSIBLE_SSH_CONTROL_PATH_DIR=str(cp), ANSIBLE_NOCOLOR="1",
                   ANSIBLE_RETRY_FILES_ENABLED="0")
        argv = [self.playbook, "-i", str(self.inventory)]
        if tuned:
            env["ANSIBLE_PIPELINING"] = "1"
            argv += ["--forks", str(count), str(self.dir / "tuned.yml")]
        else:
            argv += [str(self.dir / "default.yml")]
        started = time.perf_counter()
        result = subprocess.run(argv, env=env, cwd=self.dir, capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        self._close_masters(cp)
        if result.returncode != 0:
            raise RuntimeError(f"ansible-playbook exited {result.returncode}:\n"
                               f"{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
        return elapsed

    def _close_masters(self, cp):
        """Stop the ControlPersist masters this run left, so no run reuses another's."""
        for sock in cp.iterdir():
            subprocess.run([self.ssh_bin, "-o", f"ControlPath={sock}", "-O", "exit", "x"],
                           capture_output=True)
        shutil.rmtree(cp, ignore_errors=True)


class Tools:
    """A venv under the bench's temp dir for ansible-core, pyinfra (and py-spy), from PyPI."""

    def __init__(self, path, profile):
        self.path = pathlib.Path(path)
        if not all((self.path / "bin" / tool).exists() for tool in ("ansible-playbook", "pyinfra")) \
                or (profile and not (self.path / "bin" / "py-spy").exists()):
            log(f"installing ansible-core, pyinfra{' and py-spy' if profile else ''} into "
                f"{self.path}")
            if not (self.path / "bin" / "pip").exists():
                subprocess.run([sys.executable, "-m", "venv", str(self.path)], check=True)
            packages = ["ansible-core", "pyinfra"] + (["py-spy"] if profile else [])
            subprocess.run([str(self.path / "bin" / "pip"), "install", "-q", *packages],
                           check=True)
        version = subprocess.run([self.bin("ansible-playbook"), "--version"],
                                 capture_output=True, text=True).stdout.splitlines()
        self.ansible_version = version[0] if version else "?"
        version = subprocess.run([self.bin("pyinfra"), "--version"], capture_output=True,
                                 text=True).stdout.strip()
        self.pyinfra_version = version or "?"

    def bin(self, name):
        return str(self.path / "bin" / name)


# -- (f) pyinfra --------------------------------------------------------------------------------

class Pyinfra:
    """pyinfra's CLI with a Python inventory (the same hosts, key and known_hosts file) and a
    deploy of one ``server.shell`` operation per step."""

    def __init__(self, workdir, tools, hosts):
        self.dir = pathlib.Path(workdir) / "pyinfra"
        self.dir.mkdir(exist_ok=True)
        self.pyinfra = tools.bin("pyinfra")
        known = hosts.known_hosts(str(self.dir / "known_hosts"))
        entries = [(h["name"], {"ssh_hostname": "127.0.0.1", "ssh_port": h["port"],
                                "ssh_user": "root", "ssh_key": hosts.key_file,
                                "ssh_known_hosts_file": known,
                                "ssh_strict_host_key_checking": "yes"}) for h in hosts.hosts]
        (self.dir / "inventory.py").write_text(f"fanout = {entries!r}\n")
        steps = STEPS[:2] + [["sh", "-c", f'test "$(cat {FILE})" = {TEXT}']]
        ops = "".join(f"server.shell(name={name!r}, commands=[{shlex.join(argv)!r}])\n"
                      for name, argv in zip(("write a file", "uname -a", "read it back"), steps))
        (self.dir / "deploy.py").write_text("from pyinfra.operations import server\n" + ops)
        self.count = len(hosts.hosts)

    def run(self):
        argv = [self.pyinfra, "-y", "--parallel", str(self.count), "inventory.py", "deploy.py"]
        started = time.perf_counter()
        result = subprocess.run(argv, cwd=self.dir, capture_output=True, text=True,
                                env={**os.environ, "HOME": str(self.dir)})
        elapsed = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(f"pyinfra exited {result.returncode}:\n"
                               f"{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
        return elapsed


# -- (a) Shoal ----------------------------------------------------------------------------------

class Shoal:
    def __init__(self, workdir, hosts, settings):
        self.home = pathlib.Path(workdir) / "shoal-home"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
        self.env.update(SHOAL_HOME=str(self.home), SHOAL_DEFAULT_CATALOG="0", SHOAL_RETRIES="0")
        self.env.update(settings)
        self.hosts = hosts
        self.pid = None
        self.trace = None

    def cli(self, *args, check=True):
        result = subprocess.run([SHOAL, *map(str, args)], env=self.env, capture_output=True,
                                text=True)
        if check and result.returncode != 0:
            raise RuntimeError(f"shoal {' '.join(map(str, args))} exited {result.returncode}:"
                               f"\n{result.stdout}\n{result.stderr}")
        return result

    def start(self, workdir, trace=False):
        if trace:
            site = pathlib.Path(workdir) / "trace-site"
            site.mkdir(parents=True, exist_ok=True)
            (site / "sitecustomize.py").write_text(TRACE_SITE)
            self.trace = pathlib.Path(workdir) / "trace.txt"
            self.env.update(PYTHONPATH=str(site), SHOAL_BENCH_TRACE=str(self.trace))
        self.cli("server", "start")
        self.pid = json.loads((self.home / "server.json").read_text())["pid"]
        catalog = pathlib.Path(workdir) / "catalog"
        hosts = [{"address": "127.0.0.1", "port": h["port"], "user": "root",
                  "key_file": self.hosts.key_file} for h in self.hosts.hosts]
        actions = {action: {"type": "shell", "fields": {"command": argv}}
                   for action, argv in zip(("install", "configure", "start"), STEPS)}
        entries = {
            "providers/fanout.json": {"name": "fanout", "providertype": "ssh",
                                      "provisioner": {"hosts": json.dumps(hosts)}},
            "hardwaretypes/box.json": {"name": "box", "providermap": {"fanout": {"flavor": "box"}}},
            "imagetypes/debian.json": {"name": "debian",
                                       "providermap": {"fanout": {"image": "bookworm"}}},
            "services/fanout.json": {"name": "fanout", "provisioner": {"actions": actions}},
            # The same three steps again, added to the running cluster: actions with the
            # connections open and nothing else running, as warm paramiko's are.
            "services/fanout2.json": {"name": "fanout2", "provisioner": {"actions": actions}},
            # Nothing to run: what stays on the nodes when fanout is removed (before fanout2 is
            # added), since a cluster may not be left with no service.
            "services/idle.json": {"name": "idle", "provisioner": {"actions": {}}},
            "clustertemplates/fanout.json": {"name": "fanout", "defaults": {
                "services": ["fanout", "idle"], "provider": "fanout", "hardwaretype": "box",
                "imagetype": "debian"}, "compatibility": {
                "services": ["fanout", "fanout2", "idle"], "hardwaretypes": ["box"],
                "imagetypes": ["debian"]}},
        }
        for path, body in entries.items():
            (catalog / path).parent.mkdir(parents=True, exist_ok=True)
            (catalog / path).write_text(json.dumps(body))
        self.cli("catalog", "import", catalog)

    def add_ansible(self, workdir):
        """(e): the same three steps as playbooks, in an archives resource, and a template."""
        import io
        import tarfile

        names = ("install", "configure", "start")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for action, argv, reg in zip(names, STEPS, ("wrote", "uname", "back")):
                tasks = [{"name": action, "ansible.builtin.command": {"argv": argv},
                          "register": reg}]
                if action == "start":
                    tasks.append({"name": "check", "ansible.builtin.assert": {
                        "that": [f"back.stdout == '{TEXT}'"],
                        "success_msg": "read back {{ back.stdout }}"}})
                data = json.dumps([{"hosts": "all", "gather_facts": False,
                                    "tasks": tasks}]).encode()
                info = tarfile.TarInfo(f"{action}.yml")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        archive = pathlib.Path(workdir) / "fanout-plays.tgz"
        archive.write_bytes(buffer.getvalue())
        self.cli("resource", "upload", "archives", "fanout-plays.tgz", archive)
        self.cli("resource", "activate", "archives", "fanout-plays.tgz", "1")
        catalog = pathlib.Path(workdir) / "catalog-ansible"
        actions = {a: {"type": "ansible", "fields": {"playbook": f"fanout-plays.tgz/{a}.yml"}}
                   for a in names}
        for path, body in {
            "services/fanout-ansible.json": {"name": "fanout-ansible",
                                             "provisioner": {"actions": actions}},
            "clustertemplates/fanout-ansible.json": {"name": "fanout-ansible", "defaults": {
                "services": ["fanout-ansible"], "provider": "fanout", "hardwaretype": "box",
                "imagetype": "debian"}},
        }.items():
            (catalog / path).parent.mkdir(parents=True, exist_ok=True)
            (catalog / path).write_text(json.dumps(body))
        self.cli("catalog", "import", catalog)

    def run(self, name, count, profiler=None, template="fanout"):
        """Create a cluster of ``count`` nodes; returns (actions s, whole create s, tasks)."""
        spy = profiler.start(self.pid) if profiler else None
        started = time.perf_counter()
        result = self.cli("cluster", "create", name, "--template", template, "--size", count,
                          "--wait", check=False)
        whole = time.perf_counter() - started
        if spy:
            profiler.stop(spy)
        if result.returncode != 0:
            raise RuntimeError(f"shoal cluster create exited {result.returncode}:\n"
                               f"{result.stderr[-3000:]}")
        tasks = self.tasks(name)
        starts = [t for t in tasks if t["action"] == "START"]
        if template == "fanout":
            bad = [t for t in starts if t["output"].strip() != TEXT]
        else:  # a play's output: the assert's message carries what was read back
            bad = [t for t in starts if f"read back {TEXT}" not in t["output"]]
        if len(starts) != count or bad:
            raise RuntimeError(f"shoal: {len(starts)} START tasks, unexpected output: "
                               f"{bad[0]['output'][:200] if bad else ''}")
        if self.trace and self.trace.exists():
            runner = {}
            for line in self.trace.read_text().splitlines():
                task_id, started, ended, ssh = line.split()
                runner[task_id] = (float(started), float(ended), float(ssh))
            for t in tasks:
                t["runner"] = runner.get(t["id"])
        first = min(t["started_at"] for t in tasks if t["action"] == "INSTALL")
        last = max(t["finished_at"] for t in starts)
        running = None
        try:
            if template == "fanout":
                # fanout goes first: added beside it, fanout2 would make every node configure
                # fanout again (a cluster's change reconfigures its services), a fourth command
                # per host that paramiko does not run.
                self.cli("cluster", "remove-services", name, "fanout", "--wait")
                self.cli("cluster", "add-services", name, "fanout2", "--wait")
                added = self.tasks(name)
                again = [t for t in added if t["action"] == "START"]
                if len(again) != count or any(t["output"].strip() != TEXT for t in again):
                    raise RuntimeError(f"shoal add-services: {len(again)} START tasks")
                if len(added) != 3 * count:
                    raise RuntimeError(f"shoal add-services ran {len(added)} tasks, not "
                                       f"{3 * count}: {sorted({t['action'] for t in added})}")
                running = max(t["finished_at"] for t in again) - min(
                    t["started_at"] for t in added if t["action"] == "INSTALL")
        finally:
            self.cli("cluster", "delete", name, "--wait")
        return last - first, whole, tasks, running

    def tasks(self, cluster):
        """Every task of the cluster's latest operation with its timestamps, from the store
        (read-only: the API gives durations, the table also has the start and end times)."""
        db = sqlite3.connect(f"file:{self.home / 'shoal.db'}?mode=ro", uri=True)
        try:
            rows = db.execute(
                "SELECT t.node_id, t.action, t.started_at, t.finished_at, t.output, t.id"
                " FROM tasks t"
                " WHERE t.operation_id = (SELECT o.id FROM operations o JOIN clusters c"
                " ON c.id = o.cluster_id WHERE c.name = ? ORDER BY o.created_at DESC LIMIT 1)"
                " AND t.action != 'JOIN' ORDER BY t.seq", [cluster]).fetchall()
        finally:
            db.close()
        return [{"node": r[0], "action": r[1], "started_at": r[2], "finished_at": r[3],
                 "output": r[4] or "", "id": r[5]} for r in rows]

    def stop(self):
        if self.pid:
            self.cli("server", "stop", check=False)
            self.pid = None


def task_breakdown(tasks):
    """Where the create's time goes, from the task table: per action the median task time, and
    the median gap between one action's end and the next one's start on the same node."""
    by_action = collections.defaultdict(list)
    for t in tasks:
        by_action[t["action"]].append(t)
    lines = []
    origin = min(t["started_at"] for t in tasks)
    for action, group in by_action.items():
        durations = [t["finished_at"] - t["started_at"] for t in group]
        lines.append(f"      {action:<10} {len(group):3d} tasks  "
                     f"from {min(t['started_at'] for t in group) - origin:6.3f}"
                     f" to {max(t['finished_at'] for t in group) - origin:6.3f} s;"
                     f" median task {statistics.median(durations) * 1000:6.1f} ms,"
                     f" max {max(durations) * 1000:6.1f} ms")
    gaps = []
    per_node = collections.defaultdict(list)
    for t in tasks:
        per_node[t["node"]].append(t)
    for group in per_node.values():
        group.sort(key=lambda t: t["started_at"])
        gaps += [b["started_at"] - a["finished_at"] for a, b in zip(group, group[1:])
                 if b["action"] in ("CONFIGURE", "START")]
    traced = [t for t in tasks if t.get("runner") and t["action"] in ("INSTALL", "CONFIGURE",
                                                                      "START")]
    if traced:
        def ms(values):
            return f"{statistics.median(values) * 1000:.1f} ms"
        lines.append(
            "      a service action's time in the table, split (medians, --profile's trace):"
            f" RUNNING committed -> runner starts {ms([t['runner'][0] - t['started_at'] for t in traced])};"
            f" runner {ms([t['runner'][1] - t['runner'][0] for t in traced])}, of which"
            f" SSHTransport.run {ms([t['runner'][2] for t in traced])};"
            f" runner ends -> result recorded {ms([t['finished_at'] - t['runner'][1] for t in traced])}")
    if gaps:
        lines.append(f"      gap from a node's INSTALL to CONFIGURE, CONFIGURE to START: median {statistics.median(gaps) * 1000:.1f}"
                     f" ms, max {max(gaps) * 1000:.1f} ms")
    return lines


class Profiler:
    """py-spy sampling the server while a create runs (``--profile``): once with idle threads
    (where each thread's wall time goes) and once without (what burns the CPU)."""

    def __init__(self, tools, workdir):
        self.py_spy = tools.bin("py-spy")
        self.workdir = pathlib.Path(workdir)
        self.outputs = []  # (wall file, cpu file) per profiled create

    def start(self, pid):
        self.workdir.mkdir(parents=True, exist_ok=True)
        procs = []
        for kind in ("wall", "cpu"):
            out = self.workdir / f"shoal-server-{pid}-{len(self.outputs)}-{kind}.txt"
            argv = [self.py_spy, "record", "--pid", str(pid), "--format", "raw", "--output",
                    str(out), "--rate", "200", "--threads", "--nonblocking"]
            procs.append((subprocess.Popen(argv + (["--idle"] if kind == "wall" else []),
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
                          out))
        time.sleep(1.0)  # py-spy attaches before the create starts
        return procs

    def stop(self, procs):
        for proc, _ in procs:
            proc.send_signal(signal.SIGINT)
        for proc, _ in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.outputs.append(tuple(out for _, out in procs))

    @staticmethod
    def summary(paths, top=8):
        wall, cpu = (_read_stacks(path) for path in paths)
        lines = ["    wall time of the task threads, by what the task was doing:"]
        lines += _shares(wall, lambda thread, frames: _task_phase(frames)
                         if thread.startswith("shoal-task") else None, top)
        lines.append("    CPU samples of the whole server, by thread and frame:")
        lines += _shares(cpu, lambda thread, frames: f"{_thread_kind(thread)}: "
                         f"{_task_phase(frames) if thread.startswith('shoal-task') else _leaf(frames)}",
                         top + 4)
        return lines


def _read_stacks(path):
    """[(thread name, frames, count)] from py-spy's raw (folded) output."""
    stacks = []
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip().rpartition(" ")
            frames = stack.split(";")
            thread = frames[0].split(": ", 1)[-1] if frames else "?"
            stacks.append((thread, frames[1:], int(count)))
    return stacks


def _shares(stacks, key, top):
    totals = collections.Counter()
    for thread, frames, count in stacks:
        what = key(thread, frames)
        if what:
            totals[what] += count
    total = sum(totals.values())
    if not total:
        return ["      (no samples)"]
    return [f"      {n / total * 100:5.1f}%  {what}" for what, n in totals.most_common(top)]


def _thread_kind(name):
    for prefix in ("shoal-task", "shoal-op", "shoal-poll", "waitress", "ssh-describe"):
        if name.startswith(prefix):
            return prefix
    return "paramiko reader" if name.startswith("Thread-") else name


def _leaf(frames):
    return frames[-1].split(" (")[0] if frames else "?"


# What a task thread is doing, by the frames of one sample (first match wins).
_PHASES = [
    ("connect: TCP + SSH handshake", "_connect (extensions/transports.py"),
    ("CONFIRM: fetch_host_key (a handshake only to read the key)", "fetch_host_key"),
    ("CONFIRM: waiting for the poller", "ProviderPoller.wait"),
    ("open a channel (one per command)", "open_session"),
    ("exec request", "exec_command"),
    ("remote command running (until its exit status)", "recv_exit_status"),
    ("output threads: start/join", "Thread.start (threading.py"),
    ("output threads: start/join", "Thread.join (threading.py"),
    ("runner: SQLite reads (cluster, node, context)", "TaskRunner.cluster"),
    ("runner: SQLite reads (cluster, node, context)", "TaskRunner.node"),
    ("runner: SQLite reads (cluster, node, context)", "TaskRunner.context"),
    ("runner: save_facts (SQLite write)", "save_facts"),
    ("ssh provider: pool file and lock", "file_lock"),
    ("ssh provider: pool file and lock", "SSHProvider._load"),
    ("ssh provider: pool file and lock", "write_json"),
    ("macro expansion", "macros.py"),
]


def _task_phase(frames):
    text = ";".join(frames)
    if "(cluster_server/actions.py" not in text:
        return "idle: waiting for a task"
    for name, needle in _PHASES:
        if needle in text:
            return name
    return f"other: {_leaf(frames)}"


# -- the run ------------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,30", help="comma-separated host counts")
    parser.add_argument("--runs", type=int, default=3, help="rounds per size (median taken)")
    parser.add_argument("--tools", default=",".join(TOOLS),
                        help=f"which of {', '.join(TOOLS)} to run")
    parser.add_argument("--tools-venv", help="reuse this venv for ansible-core / py-spy "
                                             "(default: a new one under the temp dir)")
    parser.add_argument("--profile", action="store_true",
                        help="sample the Shoal server with py-spy during the last round")
    parser.add_argument("--profile-dir", help="keep py-spy's raw stacks here (implies --profile)")
    parser.add_argument("--shoal-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra server setting, e.g. SHOAL_PARALLELISM=64")
    parser.add_argument("--shoal-variant", action="append", default=[],
                        metavar="NAME=VALUE[,NAME=VALUE]",
                        help="also measure a second server with these settings, in the same "
                             "rounds (e.g. SHOAL_PARALLELISM=8)")
    args = parser.parse_args()
    args.profile = args.profile or bool(args.profile_dir)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    which = [t for t in TOOLS if t in args.tools.split(",")]
    if "shoal-ansible" in which and not pathlib.Path(sys.executable).with_name(
            "ansible-playbook").exists():
        sys.exit("shoal-ansible needs ansible-core in Shoal's venv: "
                 f"{sys.executable} -m pip install -e '.[ansible]'")
    if "DOCKER_HOST" not in os.environ:
        sys.exit("DOCKER_HOST is not set: export $(tests/podman.sh | tail -n 1)")
    client = docker.from_env()
    client.images.get(IMAGE)  # fails clearly when the base image is missing

    run_id = uuid.uuid4().hex[:8]
    workdir = tempfile.mkdtemp(prefix="shoal-fanout-")
    cleanup_lock = threading.Lock()

    def cleanup(*_):
        with cleanup_lock:
            remove_containers(client, run_id)
            shutil.rmtree(workdir, ignore_errors=True)

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    results = {}
    try:
        key_file = os.path.join(workdir, "client_key")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "shoal-fanout",
                        "-f", key_file], check=True)
        tools = None
        if {"ansible", "ansible-tuned", "pyinfra"} & set(which) or args.profile:
            tools = Tools(args.tools_venv or os.path.join(workdir, "tools"), args.profile)
            log(f"using {tools.ansible_version}, pyinfra {tools.pyinfra_version}")
        settings = {"": dict(s.split("=", 1) for s in args.shoal_env)}
        for variant in args.shoal_variant:
            settings[variant] = dict(settings[""], **dict(
                s.split("=", 1) for s in variant.split(",")))
        for count in sizes:
            results[count] = run_size(client, workdir, run_id, key_file, count, args.runs,
                                      which, tools, args.profile and (args.profile_dir or workdir),
                                      settings)
            report({count: results[count]}, which)  # printed now: a later size may fail
            sys.stdout.flush()
    finally:
        cleanup()


def run_size(client, workdir, run_id, key_file, count, runs, which, tools, profile, settings):
    hosts = Hosts(client, workdir, run_id, key_file)
    log(f"N={count}: starting {count} containers")
    shoals = {}
    try:
        up = hosts.start(count)
        load_before = os.getloadavg()[0]
        log(f"N={count}: containers up in {up:.2f} s")
        paramiko_run(hosts, key_file)  # warm-up: every sshd has served one connection
        ansible = Ansible(workdir, tools, hosts) if tools and (
            {"ansible", "ansible-tuned"} & set(which)) else None
        pyinfra = Pyinfra(workdir, tools, hosts) if "pyinfra" in which else None
        if {"shoal", "shoal-ansible"} & set(which):
            for i, (variant, env) in enumerate(settings.items()):
                name = f"shoal[{variant}]" if variant else "shoal"
                shoals[name] = Shoal(pathlib.Path(workdir) / f"n{count}-{i}", hosts, env)
                shoals[name].start(pathlib.Path(workdir) / f"n{count}-{i}",
                                   trace=bool(profile) and not variant)
            if "shoal-ansible" in which:
                shoals["shoal"].add_ansible(pathlib.Path(workdir) / f"n{count}-0")
        profiler = Profiler(tools, profile) if profile and "shoal" in which else None
        figures = collections.defaultdict(list)
        last_tasks = None
        shoal_tools = [t for t in shoals if t != "shoal" or "shoal" in which]

        def run_tool(tool):
            nonlocal last_tasks
            if tool == "paramiko":
                figures[tool].append(paramiko_run(hosts, key_file))
                figures["paramiko-warm"].append(paramiko_run(hosts, key_file, warm=True))
                figures["transport-warm"].append(transport_run(hosts, key_file))
            elif tool == "ansible":
                figures[tool].append(ansible.run(False, count))
            elif tool == "ansible-tuned":
                figures[tool].append(ansible.run(True, count))
            elif tool == "pyinfra":
                figures[tool].append(pyinfra.run())
            elif tool == "shoal-ansible":
                actions, whole, _, _ = shoals["shoal"].run(f"fana{count}-{round_}", count,
                                                           template="fanout-ansible")
                figures[tool].append(actions)
                figures[f"{tool}-create"].append(whole)
            else:
                spy = profiler if profiler and round_ == runs - 1 and tool == "shoal" \
                    else None
                actions, whole, tasks, running = shoals[tool].run(f"fan{count}-{round_}",
                                                                  count, spy)
                figures[tool].append(actions)
                figures[f"{tool}-create"].append(whole)
                if tool == "shoal":
                    figures["shoal-running"].append(running)
                if tool == "shoal":
                    last_tasks = tasks
        for round_ in range(runs):
            for tool in [t for t in which if not t.startswith("shoal")] + shoal_tools + (
                    ["shoal-ansible"] if "shoal-ansible" in which else []):
                try:
                    run_tool(tool)
                except RuntimeError as exc:  # one tool's failed round must not lose the rest
                    log(f"N={count} round {round_ + 1}: {tool} FAILED, round not counted: "
                        f"{str(exc)[-600:]}")
                    continue
                log(f"N={count} round {round_ + 1}: {tool} {figures[tool][-1]:.2f} s")
        medians = {tool: statistics.median(values) for tool, values in figures.items()}
        medians["containers"] = up
        load = (load_before, os.getloadavg()[0])
        breakdown = task_breakdown(last_tasks) if last_tasks else []
        spied = Profiler.summary(profiler.outputs[-1]) if profiler and profiler.outputs else []
        return {"medians": medians, "all": dict(figures), "breakdown": breakdown,
                "profile": spied, "load": load}
    finally:
        for shoal in shoals.values():
            shoal.stop()
        hosts.remove()


def report(results, which):
    names = {"shoal": "(a) Shoal, actions only", "shoal-create": "    Shoal, whole create",
             "shoal-running": "    Shoal, the same actions on the running cluster",
             "ansible": "(b) ansible-playbook, defaults",
             "ansible-tuned": "(c) ansible, forks N, pipelining, no facts",
             "paramiko": "(d) bare paramiko, thread + connection per host",
             "paramiko-warm": "    bare paramiko, connections already open",
             "transport-warm": "    Shoal's SSHTransport alone, connections open",
             "shoal-ansible": "(e) Shoal driving Ansible, actions only",
             "shoal-ansible-create": "    Shoal driving Ansible, whole create",
             "pyinfra": "(f) pyinfra, --parallel N"}
    first = results[next(iter(results))]["medians"] if results else {}
    for tool in first:
        if tool.startswith("shoal[") and not tool.endswith("-create"):
            names[tool] = f"    Shoal with {tool[6:-1]}, actions only"
            names[f"{tool}-create"] = f"    Shoal with {tool[6:-1]}, whole create"
    order = [t for t in ("shoal", "shoal-running", "shoal-create", *sorted(
        t for t in first if t.startswith(
        "shoal[")), "shoal-ansible", "shoal-ansible-create", "ansible", "ansible-tuned",
        "pyinfra", "paramiko", "paramiko-warm", "transport-warm") if t in first]
    for count, result in results.items():
        medians = result["medians"]
        base = medians.get("paramiko")
        print(f"\nN = {count} hosts (median of {len(result['all'][order[0]])} runs; "
              f"containers up in {medians['containers']:.2f} s; load average "
              f"{result['load'][0]:.1f} before, {result['load'][1]:.1f} after, "
              f"on {os.cpu_count()} cores)")
        for tool in order:
            ratio = f"{medians[tool] / base:6.2f}x (d)" if base else ""
            runs = ", ".join(f"{v:.2f}" for v in result["all"][tool])
            print(f"  {names[tool]:<50} {medians[tool]:7.2f} s  {ratio}   [{runs}]")
        if "shoal" in medians and base:
            print(f"  whole create including the containers: "
                  f"{medians['shoal-create'] + medians['containers']:.2f} s; "
                  f"(a) / warm paramiko: {medians['shoal'] / medians['paramiko-warm']:.2f}x; "
                  f"target (a) <= 1.5x (d): "
                  f"{'met' if medians['shoal'] <= 1.5 * base else 'missed'}")
        if "shoal-running" in medians and "paramiko-warm" in medians:
            # Like with like: connections open, the three steps and nothing else. In the
            # create, each node's INSTALL waits only for its own BOOTSTRAP, so the window
            # from the first INSTALL to the last START holds other nodes' BOOTSTRAPs too.
            print(f"  the same actions on the running cluster (add-services) / warm paramiko: "
                  f"{medians['shoal-running'] / medians['paramiko-warm']:.2f}x "
                  f"(issue 17's target 1.2x)")
        if "shoal-create" in medians:
            # Like with like: a whole create (machines confirmed, keys pinned, three steps)
            # against each peer's whole run (connect, three steps).
            peers = [(t, medians[t]) for t in ("shoal-ansible-create", "ansible",
                                               "ansible-tuned", "pyinfra", "paramiko")
                     if t in medians]
            print("  Shoal's whole create against each whole run: " + "; ".join(
                f"{names[t].strip()} {v:.2f} s ({v / medians['shoal-create']:.1f}x Shoal)"
                for t, v in peers))
        if result["breakdown"]:
            print("  Shoal's last create, from the task table:")
            print("\n".join(result["breakdown"]))
        if result["profile"]:
            print("  Shoal's server during the last create (py-spy, 200 samples/s per thread):")
            print("\n".join(result["profile"]))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
