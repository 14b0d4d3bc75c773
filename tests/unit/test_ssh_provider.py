"""The ssh provider: a pool of real sshd hosts on loopback."""

import json
import os
import threading

import pytest

from cluster_server.errors import ProviderError, TransportError, ValidationError
from cluster_server.plugins import NodeSpec, NodeState
from extensions.providers.ssh import SSHProvider
from tests.sshd import free_port, ssh_hosts  # noqa: F401  (fixture)


def spec(node_id, cluster_id="c1", token=None):
    return NodeSpec(cluster_id=cluster_id, node_id=node_id, hostname=f"{node_id}.example",
                    hardwaretype="small", imagetype="any", flavor={}, image={},
                    token=token or f"token-{cluster_id}-{node_id}")


def host_id(host):
    return f"{host.address}:{host.port}"


@pytest.fixture
def home(tmp_path):
    return str(tmp_path / "home")


def make(home, hosts, **fields):
    return SSHProvider("pool", {"hosts": [h.host_entry for h in hosts], **fields}, home)


def test_create_lends_free_hosts_idempotently_until_the_pool_is_empty(ssh_hosts, home):
    one, two = ssh_hosts(2)
    provider = make(home, [one, two])
    first = provider.create(spec("n1"))
    assert first.resource_id == host_id(one) and first.state == NodeState.PENDING
    assert first.ssh == {"host": "127.0.0.1", "port": one.port, "user": one.user,
                         "key_file": one.key_file}
    assert first.addresses == {"bind_v4": "127.0.0.1", "access_v4": "127.0.0.1"}
    assert provider.create(spec("n1")).resource_id == host_id(one)  # same token, same host
    assert make(home, [one, two]).create(spec("n1")).resource_id == host_id(one)  # restarted
    assert provider.create(spec("n2")).resource_id == host_id(two)
    with pytest.raises(ProviderError) as caught:
        provider.create(spec("n3", cluster_id="c2"))
    assert caught.value.message == ("provider 'pool': no free host in the pool "
                                    "(all 2 lent, to clusters c1)")
    assert [info.resource_id for info in provider.find("c1")] == sorted([host_id(one),
                                                                         host_id(two)])


def test_confirm_pins_the_host_key_and_reuses_one_connection(ssh_hosts, home):
    (host,) = ssh_hosts(1)
    provider = make(home, [host])
    info = provider.create(spec("n1"))
    confirmed = provider.describe([info])[info.resource_id]
    assert confirmed.state == NodeState.RUNNING, confirmed.error
    assert confirmed.ssh["host_key"] == host.host_key
    assert confirmed.extra["remote_hostname"]
    with open(os.path.join(home, "ssh-pool.json")) as f:
        assert json.load(f)["leases"][host_id(host)]["host_key"] == host.host_key
    transport = provider.transport(confirmed)
    assert provider.transport(confirmed) is transport
    for i in range(5):
        assert transport.run(["echo", str(i)]).stdout == f"{i}\n"
    assert provider.describe([confirmed])[info.resource_id].state == NodeState.RUNNING
    assert host.accepted_connections() == 1  # confirm, commands and a second describe: one


def test_confirm_reads_the_key_on_the_connection_it_keeps(ssh_hosts, home, monkeypatch):
    import extensions.transports

    (host,) = ssh_hosts(1)
    provider = make(home, [host])
    info = provider.create(spec("n1"))
    made, real = [], extensions.transports.socket.create_connection

    def counting(address, *args, **kwargs):
        made.append(address)
        return real(address, *args, **kwargs)

    monkeypatch.setattr(extensions.transports.socket, "create_connection", counting)
    confirmed = provider.describe([info])[info.resource_id]
    assert confirmed.ssh["host_key"] == host.host_key
    assert provider.transport(confirmed).run(["true"]).ok
    assert made == [("127.0.0.1", host.port)]  # one TCP connection: no handshake only for the key


def test_a_changed_host_key_fails_the_node_and_its_transport(ssh_hosts, home):
    (host,) = ssh_hosts(1)
    provider = make(home, [host])
    info = provider.describe([provider.create(spec("n1"))])[host_id(host)]
    pinned = info.ssh["host_key"]
    host.change_host_key()
    again = SSHProvider("pool", {"hosts": [host.host_entry]}, home)  # no cached connection
    for p in (provider, again):
        state = p.describe([info])[info.resource_id]
        assert state.state == NodeState.FAILED
        assert state.error.startswith(f"host key for {host_id(host)} changed: expected ")
        with pytest.raises(TransportError, match="refusing to connect"):
            p.transport(info).run(["true"])
    # Even a describe that does not carry the pin (say, from a lost record) checks the pool's.
    bare = provider.create(spec("n1"))
    assert "host_key" in bare.ssh and bare.ssh["host_key"] == pinned
    bare.ssh.pop("host_key")
    assert again.describe([bare])[bare.resource_id].state == NodeState.FAILED


def test_delete_gives_the_host_back(ssh_hosts, home):
    (host,) = ssh_hosts(1)
    provider = make(home, [host])
    first = provider.describe([provider.create(spec("n1"))])[host_id(host)]
    workdir = os.path.join(host.home, ".shoal")
    provider.transport(first).put(os.path.join(workdir, "scripts", "web", "s.sh"), b"echo\n")
    provider.delete(first)
    assert not os.path.exists(workdir)  # what Shoal copied there is gone too
    provider.delete(first)  # already given back: not an error
    assert provider.describe([first])[first.resource_id].state == NodeState.GONE
    second = provider.create(spec("n2", cluster_id="c2"))
    assert second.resource_id == host_id(host) and "host_key" not in second.ssh
    provider.delete(first)  # a stale delete must not take the host from its new node
    assert provider.describe([second])[second.resource_id].state == NodeState.RUNNING


def test_concurrent_creates_never_lend_a_host_twice(ssh_hosts, home):
    hosts = ssh_hosts(2)
    providers = [make(home, hosts) for _ in range(2)]
    lent, refused = [], []

    def create(i):
        try:
            lent.append(providers[i % 2].create(spec(f"n{i}")).resource_id)
        except ProviderError as exc:
            refused.append(exc)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(lent) == sorted(host_id(h) for h in hosts)
    assert len(refused) == 6


def test_unreachable_host_is_a_failed_node(home, tmp_path):
    port = free_port()
    provider = SSHProvider("pool", {"hosts": [{"address": "127.0.0.1", "port": port}],
                                    "ssh_key_file": str(tmp_path / "key"),
                                    "connect_timeout": 2}, home)
    info = provider.create(spec("n1"))
    state = provider.describe([info])[info.resource_id]
    assert state.state == NodeState.FAILED
    assert f"cannot connect to root@127.0.0.1:{port}: " in state.error
    with pytest.raises(TransportError, match="no pinned host key"):
        provider.transport(info)


def test_hosts_as_a_json_string_with_defaults(ssh_hosts, home):
    (host,) = ssh_hosts(1)
    provider = SSHProvider("pool", {
        "hosts": json.dumps([{"address": host.address, "port": host.port}]),
        "ssh_user": host.user, "ssh_key_file": host.key_file,
        "workdir": os.path.join(host.home, ".shoal"),
    }, home)
    info = provider.describe([provider.create(spec("n1"))])[host_id(host)]
    assert info.state == NodeState.RUNNING, info.error
    assert provider.transport(info).workdir == os.path.join(host.home, ".shoal")


@pytest.mark.parametrize("fields, message", [
    ({"hosts": []}, "non-empty list"),
    ({"hosts": "not json"}, "not valid JSON"),
    ({"hosts": [{"port": 22}], "ssh_key_file": "k"}, "needs an address"),
    ({"hosts": [{"address": "127.0.0.1"}]}, "no key_file"),
    ({"hosts": ["127.0.0.1", "127.0.0.1"], "ssh_key_file": "k"}, "listed twice"),
    ({"hosts": [{"address": "127.0.0.1", "user": "me\n  ProxyCommand id"}],
      "ssh_key_file": "k"}, "user must be a login name"),
    ({"hosts": ["127.0.0.1 -oProxyCommand=id"], "ssh_key_file": "k"}, "must be a host name"),
    ({"hosts": ["127.0.0.1"], "ssh_key_file": "k", "ssh_user": "a b"},
     "user must be a login name"),
])
def test_bad_hosts_are_validation_errors(home, fields, message):
    with pytest.raises(ValidationError, match=message):
        SSHProvider("pool", fields, home)


def test_inventory_reads_the_pool_once_for_every_cluster(home, tmp_path):
    hosts = [{"address": "127.0.0.1", "port": port} for port in (2201, 2202, 2203)]
    provider = SSHProvider("pool", {"hosts": hosts, "ssh_key_file": str(tmp_path / "key")}, home)
    provider.create(spec("n1", cluster_id="c1"))
    provider.create(spec("n2", cluster_id="c1"))
    provider.create(spec("n1", cluster_id="c2"))
    held = provider.inventory(["c1", "c3"])
    assert {c: [(i.resource_id, i.extra["node"], i.state) for i in infos]
            for c, infos in held.items()} == {
        "c1": [("127.0.0.1:2201", "n1", NodeState.RUNNING),
               ("127.0.0.1:2202", "n2", NodeState.RUNNING)], "c3": []}
