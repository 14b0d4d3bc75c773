"""Helpers of the cloud provider tests that drive the real CLI and server: an environment that
keeps the server on loopback, a catalog for a cloud provider, killing and awaiting the server."""

import json
import os
import signal
import time
import urllib.request

from tests.fake_gce import UNIVERSE

# Writes one file per node naming its peers: argv only, macros expanded into argv elements.
RECORD = "import sys, pathlib; pathlib.Path(sys.argv[1], sys.argv[2]).write_text(sys.argv[3])"
FINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


def cloud_env(tmp_path):
    """Environment for a server that may only reach loopback: no instance metadata service,
    no user-wide cloud configuration, the fake Compute's universe."""
    return {"AWS_EC2_METADATA_DISABLED": "true",
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws" / "credentials"),
            "AWS_CONFIG_FILE": str(tmp_path / "aws" / "config"),
            "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
            "GCE_METADATA_HOST": "127.0.0.1:9", "GCE_METADATA_IP": "127.0.0.1:9",
            "GOOGLE_CLOUD_UNIVERSE_DOMAIN": UNIVERSE}


def isolate(shoal, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ENDPOINT_URL",
                 "GOOGLE_APPLICATION_CREDENTIALS"):
        shoal.env.pop(name, None)
    shoal.env.update(cloud_env(tmp_path))


def write_catalog(root, provider, providertype, fields, flavor, image, marks):
    """A catalog with one provider, a template ``web`` of nodes running ``marker``: it records
    each node's peers over SSH (the shell automator), so services really ran on the node."""
    entries = {
        f"providers/{provider}.json": {"name": provider, "providertype": providertype,
                                       "provisioner": fields},
        "hardwaretypes/small.json": {"name": "small", "providermap": {provider: flavor}},
        "imagetypes/debian.json": {"name": "debian", "providermap": {provider: image}},
        "services/marker.json": {"name": "marker", "provisioner": {"actions": {
            "install": {"type": "shell", "fields": {"command": ["uname", "-n"]}},
            "configure": {"type": "shell", "fields": {"command": [
                "python3", "-c", RECORD, str(marks), "%ip.self%",
                "%join(ip.service.marker,',')%"]}},
            "start": {"type": "shell", "fields": {"command": ["cat", f"{marks}/%ip.self%"]}},
        }}},
        "clustertemplates/web.json": {"name": "web", "defaults": {
            "services": ["marker"], "provider": provider, "hardwaretype": "small",
            "imagetype": "debian"}},
    }
    for path, body in entries.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(body))
    return root


def api(shoal, path):
    """GET straight from the REST API (polling through the CLI costs 0.3 s a look)."""
    request = urllib.request.Request(f"{shoal.url}/api/v1{path}",
                                     headers={"Authorization": f"Bearer {shoal.token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def wait_finished(shoal, name, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cluster = api(shoal, f"/clusters/{name}")
        if cluster["operation"] and cluster["operation"]["status"] in FINAL:
            return cluster
        time.sleep(0.05)
    raise AssertionError(f"operation on {name} did not finish: {cluster}")


def wait_for(check, what, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def kill_server(shoal):
    """SIGKILL the server; wait until whoever adopted it has reaped it."""
    pid = json.loads((shoal.home / "server.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not _alive(pid), f"server {pid} to go away after SIGKILL", 30)


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def marks_of(marks):
    """{node address: sorted peer addresses} from the marker service's files."""
    return {path.name: sorted(path.read_text().split(",")) for path in marks.iterdir()}
