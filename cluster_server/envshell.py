"""The environment shell of a cluster: a container with a cloud CLI, the cluster's credentials
read-only, an ssh config that reaches every node by id and hostname, and the inventory.

The server prepares everything here and creates the container (not started); the CLI attaches
to it, starts it and removes it when it exits. Nothing the user types is pasted into a shell
string: ``shoal cluster exec`` gives an argv, and the isolation is the container.
"""

import hashlib
import json
import os
import re
import shlex
import uuid

from cluster_server import operations, plugins
from cluster_server.errors import AutomatorError, Conflict, ValidationError

MOUNT = "/run/shoal"  # where the generated files appear in the container
DEFAULT_CLI = {"aws": "aws", "gcp": "gcloud"}  # provider type -> CLI image; others: aws


def inventory(cluster, nodes):
    """The cluster as the shell sees it: every live node with its address and SSH endpoint."""
    items = []
    for node in nodes:
        resource = node["facts"].get("resource") or {}
        ssh = resource.get("ssh") or {}
        items.append({"id": node["id"], "hostname": resource.get("hostname") or node["hostname"],
                      "status": node["status"], "services": node["services"],
                      "address": (resource.get("addresses") or {}).get("access_v4", ""),
                      "ssh": {k: ssh[k] for k in ("host", "port", "user") if ssh.get(k)}})
    return {"cluster": {"id": cluster["id"], "name": cluster["name"],
                        "status": cluster["status"], "provider": cluster["provider"]},
            "nodes": items}


def _group(name):
    """A service name as an Ansible group name (letters, digits and '_' only)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def ansible_inventory(cluster, nodes):
    """The cluster as an Ansible inventory (``ansible-inventory --list`` reads it): every node
    that has an SSH endpoint, by id (the shell's ssh config reaches it, host key pinned), in
    ``all`` and in a group per service; facts as host variables, the cluster as ``shoal_cluster``.
    """
    hosts, groups = {}, {}
    for item in inventory(cluster, nodes)["nodes"]:
        resource = next(n for n in nodes if n["id"] == item["id"])["facts"].get("resource") or {}
        if not (resource.get("ssh") or {}).get("host_key"):
            continue  # the ssh config has no entry for it either
        hosts[item["id"]] = {"shoal_hostname": item["hostname"], "shoal_address": item["address"],
                             "shoal_services": item["services"], "shoal_status": item["status"]}
        for service in item["services"]:
            groups.setdefault(_group(service), {"hosts": {}})["hosts"][item["id"]] = None
    return {"all": {"hosts": hosts, "children": groups, "vars": {
        "shoal_cluster": {"id": cluster["id"], "name": cluster["name"]},
        "ansible_python_interpreter": "auto_silent"}}}


def _key_path(path):
    return f"{MOUNT}/keys/{hashlib.sha256(path.encode()).hexdigest()[:12]}"


def ssh_files(nodes):
    """``(ssh config, known_hosts, {host key file: path in the container}, network)``.

    Container nodes on a cluster network are reached at their address there, port 22, and the
    shell joins that network; other nodes at their SSH endpoint, with host networking (the
    endpoints of the docker and ssh providers are on loopback).
    """
    config, known, keys, networks = [], [], {}, set()
    for node in nodes:
        resource = node["facts"].get("resource") or {}
        ssh, extra = resource.get("ssh") or {}, resource.get("extra") or {}
        if not ssh.get("host_key"):
            config.append(f"# {node['id']}: no SSH endpoint known\n")
            continue
        if extra.get("network") and extra.get("address"):
            host, port = extra["address"], 22
            networks.add(extra["network"])
        else:
            host, port = ssh["host"], ssh.get("port") or 22
            networks.add("host")
        names = [node["id"]]
        hostname = resource.get("hostname") or node["hostname"]
        if hostname and hostname not in names:
            names.append(hostname)
        user = ssh.get("user") or "root"
        # Each value is one word of the file: a space or line break in one (from an odd catalog
        # entry or a provider's answer) must not add options such as a ProxyCommand.
        checks = [("host", host, plugins.HOST_NAME), ("user", user, plugins.LOGIN_NAME)]
        checks += [("hostname", each, plugins.HOST_NAME) for each in names]
        for field, value, pattern in checks:
            if not pattern.fullmatch(str(value)):
                raise ValidationError(f"node {node['id']}: its SSH {field} {str(value)!r} cannot "
                                      "go into an ssh config", {"node": node["id"],
                                                                "field": field})
        lines = [f"Host {' '.join(names)}", f"    HostName {host}", f"    Port {int(port)}",
                 f"    User {user}", f"    HostKeyAlias {node['id']}",
                 "    StrictHostKeyChecking yes", f"    UserKnownHostsFile {MOUNT}/known_hosts",
                 "    IdentitiesOnly yes", "    LogLevel ERROR"]
        if ssh.get("key_file"):
            keys[ssh["key_file"]] = _key_path(ssh["key_file"])
            lines.append(f"    IdentityFile {keys[ssh['key_file']]}")
        config.append("\n".join(lines) + "\n")
        known.append(f"{node['id']} {' '.join(ssh['host_key'].split()[:2])}\n")
    if len(networks) > 1:
        raise Conflict("the cluster's nodes are on different networks "
                       f"({', '.join(sorted(networks))}); one shell cannot reach them all")
    return "\n".join(config), "".join(known), keys, (networks.pop() if networks else "host")


def _write(path, text, mode=0o600):
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"  # two shells may be prepared at once
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _cli_names(cli):
    """``"aws,kubectl"`` or ``["aws", "kubectl"]`` -> the names, in order, once each."""
    if cli is None or cli == "":
        return []
    names = cli.split(",") if isinstance(cli, str) else cli
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        raise ValidationError("cli must be CLI image names (aws, gcloud, kubectl), as a list or "
                              "separated by commas", {"field": "cli"})
    names = list(dict.fromkeys(n.strip() for n in names))
    automator = plugins.plugin_class(plugins.AUTOMATOR_NAMESPACE, "docker-cli")
    for name in names:
        try:
            automator.dockerfile_dir(name)
        except AutomatorError as exc:
            raise ValidationError(f"cli: {exc}", {"field": "cli", "cli": name}) from None
    return names


def prepare(store, home, tenant, name, command=None, tty=True, stdin=False, cli=None):
    """Create the shell's container for cluster ``name``; return what the CLI needs to attach.

    ``command`` (an argv list) runs instead of an interactive shell; with ``stdin`` it reads
    what the caller sends until the caller closes its side.
    """
    for field, value in (("tty", tty), ("stdin", stdin)):
        if not isinstance(value, bool):
            raise ValidationError(f"{field} must be true or false", {"field": field})
    if command is not None and (not isinstance(command, list) or not command
                                or not all(isinstance(a, str) for a in command)):
        raise ValidationError("command must be a non-empty list of strings (an argv)",
                              {"field": "command"})
    clis = _cli_names(cli)
    cluster = operations.get_cluster(store, tenant, name)
    nodes = operations.node_rows(store, cluster["id"])
    clis = clis or [DEFAULT_CLI.get(cluster["spec"]["provider"].get("providertype"), "aws")]

    folder = os.path.join(os.fspath(home), "shell", cluster["id"])
    os.makedirs(folder, mode=0o700, exist_ok=True)
    data = inventory(cluster, nodes)
    config, known, keys, network = ssh_files(nodes)
    _write(os.path.join(folder, "inventory.json"), json.dumps(data, indent=2) + "\n")
    _write(os.path.join(folder, "ssh_config"), config)
    _write(os.path.join(folder, "known_hosts"), known)
    _write(os.path.join(folder, "hosts.json"),
           json.dumps(ansible_inventory(cluster, nodes), indent=2) + "\n")
    mounts = {os.path.join(folder, "inventory.json"): f"{MOUNT}/inventory.json",
              os.path.join(folder, "hosts.json"): f"{MOUNT}/hosts.json",
              os.path.join(folder, "ssh_config"): "/etc/ssh/ssh_config.d/shoal.conf",
              os.path.join(folder, "known_hosts"): f"{MOUNT}/known_hosts", **keys}

    automator = plugins.plugin_class(plugins.AUTOMATOR_NAMESPACE, "docker-cli")(home)
    # Several CLIs: each image is built on the one before (every Dockerfile starts FROM its
    # BASE argument), so one container holds them all; tags follow the chain's content.
    image, env = None, {}
    for each in clis:
        image, _ = automator.image(each, base=image)
        credentials, target, variables = automator.credentials(each)
        if credentials:
            mounts[credentials] = target
            env.update(variables)
    env.update({
        "SHOAL_CLUSTER": cluster["name"], "SHOAL_CLUSTER_ID": cluster["id"],
        "SHOAL_INVENTORY": json.dumps(data, separators=(",", ":")),
        "SHOAL_INVENTORY_FILE": f"{MOUNT}/inventory.json",
        "SHOAL_NODES": " ".join(n["id"] for n in nodes),
        "ANSIBLE_INVENTORY": f"{MOUNT}/hosts.json",  # for the ansible CLI image
        "debian_chroot": f"shoal:{cluster['name']}",  # Debian's bash prompt shows it
    })
    argv = command or ["bash"]  # not a login shell: /etc/profile would reset PATH
    container = automator.create_container(
        image, argv, env=env, mounts=mounts, network=network, tty=tty, stdin=stdin,
        labels={"shoal.cluster": cluster["id"], "shoal.role": "shell"},
        hostname=f"shoal-{cluster['name']}"[:63])
    return {"container": container.id, "docker_host": automator.engine_url(),
            "image": image, "cli": ",".join(clis), "network": network, "tty": tty, "stdin": stdin,
            "command": shlex.join(argv), "inventory": data}
