"""The docker provider and DockerExecTransport against a real engine (DOCKER_HOST), and the
Dockerfiles of dockerfiles/."""

import concurrent.futures
import pathlib
import re
import time

import pytest

from cluster_server.errors import ProviderError
from cluster_server.plugins import NodeSpec, NodeState
from extensions.providers.docker import DockerProvider
from tests.containers import BASE_IMAGE, docker_client, labelled  # noqa: F401

DOCKERFILES = pathlib.Path(__file__).resolve().parents[2] / "dockerfiles"


def spec(cluster, node, generation=0, **image):
    return NodeSpec(cluster_id=cluster, node_id=node, hostname=f"{node}.{cluster}",
                    hardwaretype="container", imagetype="bookworm",
                    flavor=image.pop("flavor", {}), image={"image": BASE_IMAGE, **image},
                    token=f"{cluster}-{node}-{generation}")


@pytest.fixture
def provider(tmp_path, docker_client):  # noqa: F811
    made = DockerProvider("dock", {}, tmp_path / "home")
    yield made
    _, networks = labelled(docker_client, home=made.home_id)
    for cluster in {c.attrs["Labels"]["shoal.cluster"] for c in made._list()} | {
            n.attrs["Labels"]["shoal.cluster"] for n in networks}:
        for info in made.find(cluster):
            made.delete(info)
        made.cleanup_cluster(cluster)


def wait_running(provider, infos, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        states = provider.describe(infos)
        if all(i.state == NodeState.RUNNING for i in states.values()):
            return states
        assert time.monotonic() < deadline, states
        infos = list(states.values())
        time.sleep(0.2)


def test_create_is_idempotent_on_the_token(provider, docker_client):  # noqa: F811
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        infos = list(pool.map(provider.create, [spec("c-idem", "n1")] * 4))
    assert len({i.resource_id for i in infos}) == 1
    assert len(labelled(docker_client, cluster="c-idem")[0]) == 1
    # A new generation of the node (after a replacement) is a new container.
    assert provider.create(spec("c-idem", "n1", 1)).resource_id != infos[0].resource_id


def test_a_create_cut_short_before_start_is_finished_by_the_retry(provider, docker_client,  # noqa
                                                                  monkeypatch):
    import docker.models.containers

    def crash(self, **kwargs):
        raise SystemExit("the server was killed here")

    monkeypatch.setattr(docker.models.containers.Container, "start", crash)
    with pytest.raises(SystemExit):
        provider.create(spec("c-crash", "n1"))
    monkeypatch.undo()
    (made,), _ = labelled(docker_client, cluster="c-crash")
    assert made.attrs["State"] == "created"
    info = provider.create(spec("c-crash", "n1"))
    assert info.resource_id == made.id
    wait_running(provider, [info])


def test_describe_is_one_list_call_and_pins_host_keys(provider, monkeypatch):
    infos = [provider.create(spec("c-many", f"n{i}")) for i in range(3)]
    calls = []
    real = provider.client.api.containers  # what containers.list calls
    monkeypatch.setattr(provider.client.api, "containers",
                        lambda *a, **k: calls.append(k) or real(*a, **k))
    states = wait_running(provider, infos)
    rounds = len(calls)
    assert rounds >= 1
    for info in states.values():
        assert info.ssh["host_key"].startswith("ssh-ed25519 ")
        assert info.addresses["access_v4"] and info.extra["network"]
    calls.clear()
    provider.describe(list(states.values()))
    assert len(calls) == 1  # three nodes, one call
    # A node whose container is gone comes back GONE.
    provider.delete(infos[0])
    assert provider.describe(list(states.values()))[infos[0].resource_id].state == NodeState.GONE


def test_a_container_that_cannot_start_leaves_nothing(provider, docker_client):  # noqa: F811
    with pytest.raises(ProviderError, match="does not start"):
        provider.create(spec("c-fail", "n1", flavor={"memory": "1k"}))
    assert labelled(docker_client, cluster="c-fail")[0] == []
    provider.cleanup_cluster("c-fail")
    assert labelled(docker_client, cluster="c-fail") == ([], [])


def test_missing_image_fails_at_once(provider):
    with pytest.raises(ProviderError, match="not on the engine"):
        provider.create(spec("c-img", "n1", image="localhost/shoal-no-such:image"))


def test_delete_and_cleanup_remove_containers_network_and_key(provider, docker_client):  # noqa
    infos = [provider.create(spec("c-del", f"n{i}")) for i in range(2)]
    key = pathlib.Path(provider.key_file("c-del"))
    assert key.exists() and oct(key.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(ProviderError, match="still exist"):
        provider.cleanup_cluster("c-del")
    for info in provider.find("c-del"):
        provider.delete(info)
    provider.delete(infos[0])  # already gone: not an error
    provider.cleanup_cluster("c-del")
    assert labelled(docker_client, cluster="c-del") == ([], [])
    assert not key.exists()


def test_cleanup_removes_shell_containers_left_on_the_network(provider, docker_client):  # noqa
    info = provider.create(spec("c-left", "n1"))
    shell = docker_client.containers.run(
        BASE_IMAGE, ["sleep", "300"], detach=True, network=info.extra["network"],
        labels={"shoal.home": provider.home_id, "shoal.cluster": "c-left",
                "shoal.role": "shell"})
    assert [i.resource_id for i in provider.find("c-left")] == [info.resource_id]
    provider.delete(info)
    provider.cleanup_cluster("c-left")
    assert labelled(docker_client, cluster="c-left") == ([], [])
    assert shell.id not in [c.id for c in docker_client.containers.list(all=True)]


def test_delete_removes_the_container_volumes(provider, docker_client):  # noqa: F811
    import io

    image, _ = docker_client.images.build(
        fileobj=io.BytesIO(f"FROM {BASE_IMAGE}\nVOLUME /data\n".encode()),
        tag="localhost/shoal-test-volume:latest", rm=True)
    info = provider.create(spec("c-vol", "n1", image="localhost/shoal-test-volume:latest"))
    mounts = docker_client.api.inspect_container(info.resource_id)["Mounts"]
    volumes = [m["Name"] for m in mounts if m.get("Type") == "volume"]
    assert len(volumes) == 1
    provider.delete(info)
    assert volumes[0] not in [v.name for v in docker_client.volumes.list()]
    provider.cleanup_cluster("c-vol")
    assert labelled(docker_client, cluster="c-vol") == ([], [])


@pytest.fixture
def node(provider):
    info = provider.create(spec("c-exec", "n1"))
    states = wait_running(provider, [info])
    return provider.transport(states[info.resource_id])


def test_exec_transport_runs_argv_with_env_stdin_and_cwd(node):
    result = node.run(["sh", "-c", 'echo "$GREETING $1"; echo err >&2; exit 3', "sh", "a b;c"],
                      env={"GREETING": "hi"})
    assert (result.exit_code, result.stdout, result.stderr) == (3, "hi a b;c\n", "err\n")
    assert node.run(["cat"], stdin="from stdin").stdout == "from stdin"
    assert node.run(["pwd"], cwd="/tmp").stdout == "/tmp\n"
    assert node.run(["no-such-command"]).exit_code == 127
    path = node.put(".shoal/scripts/x.sh", b"#!/bin/sh\necho script $1\n", 0o750)
    assert path == "/root/.shoal/scripts/x.sh"
    assert node.run([path, "ok"]).stdout == "script ok\n"
    assert node.run(["stat", "-c", "%a", path]).stdout == "750\n"


def test_exec_transport_does_not_wait_for_daemons(node):
    started = time.monotonic()
    result = node.run(["sh", "-c", "sleep 30 & echo started"])
    assert result.stdout == "started\n" and time.monotonic() - started < 5


@pytest.mark.parametrize("cli", ["aws", "gcloud", "kubectl"])
def test_dockerfiles_build_from_a_local_base(cli):
    text = (DOCKERFILES / cli / "Dockerfile").read_text()
    lines = [line for line in re.sub(r"\\\n", " ", text).splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    keywords = [line.split()[0] for line in lines]
    assert lines[0] == "ARG BASE=localhost/shoal-base:bookworm"
    assert set(keywords) <= {"ARG", "FROM", "RUN", "COPY", "ENV", "CMD", "WORKDIR", "LABEL"}
    stages = [line for line in lines if line.startswith("FROM ")]
    assert stages and all(line.split()[1] == "${BASE}" for line in stages)
    # The build CA bundle reaches the first stage only; the image copies from it, not from
    # the context.
    final = text.split("\nFROM ${BASE}\n")[-1]
    assert "build-ca.crt" not in final and "COPY --from=build" in final


def test_the_kubectl_image_builds_and_runs(tmp_path, docker_client):  # noqa: F811
    """Built from Debian's package (the default fetches a release no test may reach)."""
    from extensions.automators.docker_cli import DockerCLIAutomator

    automator = DockerCLIAutomator(tmp_path)
    tag, _ = automator.image("kubectl", build_args={"KUBECTL_SOURCE": "debian"})
    out = docker_client.containers.run(tag, ["kubectl", "version", "--client"], remove=True,
                                       network_mode="none")
    assert b"Client Version" in out


def test_no_engine_is_a_clear_error_that_says_where_it_looked(tmp_path, monkeypatch):
    import docker

    from cluster_server.errors import ProviderError
    from extensions.providers.docker import docker_client as make_client

    with pytest.raises(ProviderError) as caught:
        make_client(f"unix://{tmp_path}/no-engine.sock")
    assert f"no container engine reachable at unix://{tmp_path}/no-engine.sock" in str(caught.value)
    # Nothing named: the default socket, and how to point the server at an engine. (The SDK's
    # default socket may answer on some machine: its refusal is simulated.)
    monkeypatch.setenv("DOCKER_HOST", "")

    def refuse():
        raise docker.errors.DockerException("Error while fetching server API version")

    monkeypatch.setattr(docker, "from_env", refuse)
    with pytest.raises(ProviderError) as caught:
        make_client()
    assert "the default socket" in str(caught.value)
    assert "set DOCKER_HOST before the Shoal server starts" in str(caught.value)
