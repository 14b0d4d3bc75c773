"""A real container engine for tests: the docker SDK client of ``DOCKER_HOST`` (tests/podman.sh
sets up Podman behind it), and the images built once per session.

No engine is a failure, not a skip: CI and root runs always have one. Only a non-root run with
``SHOAL_ALLOW_SKIP_CONTAINERS=1`` skips these tests, saying why.
"""

import os
import tempfile

import pytest

BASE_IMAGE = "localhost/shoal-base:bookworm"


def _unavailable(reason):
    if os.geteuid() != 0 and os.environ.get("SHOAL_ALLOW_SKIP_CONTAINERS") == "1":
        pytest.skip(f"no container engine ({reason}); skipped because "
                    "SHOAL_ALLOW_SKIP_CONTAINERS=1 (run tests/podman.sh as root to get one)")
    pytest.fail(f"no container engine: {reason}. As root, tests/run.sh sets one up with "
                "tests/podman.sh; otherwise export DOCKER_HOST, or set "
                "SHOAL_ALLOW_SKIP_CONTAINERS=1 to skip the container tests", pytrace=False)


@pytest.fixture(scope="session")
def docker_client():
    """The engine at DOCKER_HOST, with the base image present."""
    if not os.environ.get("DOCKER_HOST"):
        _unavailable("DOCKER_HOST is not set")
    try:
        import docker

        client = docker.from_env()
        client.ping()
    except Exception as exc:  # the SDK's errors and socket errors alike
        _unavailable(f"{os.environ['DOCKER_HOST']} does not answer: {exc}")
    try:
        client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        _unavailable(f"the base image {BASE_IMAGE} is missing (tests/podman.sh builds it)")
    yield client
    client.close()


@pytest.fixture(scope="session")
def aws_image(docker_client):
    """The aws CLI image built from dockerfiles/aws on the local base (once per session; the
    tag is a content hash, so servers started by later tests reuse it)."""
    from extensions.automators.docker_cli import DockerCLIAutomator

    with tempfile.TemporaryDirectory() as home:
        tag, _ = DockerCLIAutomator(home).image("aws")
    return tag


def labelled(client, **labels):
    """Containers and networks carrying every ``shoal.<key>=<value>`` label given."""
    wanted = [f"shoal.{key}={value}" for key, value in labels.items()]
    return (client.containers.list(all=True, sparse=True, filters={"label": wanted}),
            client.networks.list(filters={"label": wanted}))
