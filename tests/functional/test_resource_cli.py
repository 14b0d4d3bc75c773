"""Plugin resources through the real ``shoal`` binary and server: a cluster runs the active
version of an uploaded script; evil archives, oversized files and key contents stay out."""

import io
import json
import tarfile
import urllib.error
import urllib.request
import zipfile

import pytest

from tests.conftest import Shoal

LIMIT = 64 * 1024


@pytest.fixture
def shoal(tmp_path):
    # The shipped catalog gives the local provider, the sandbox hardware and the host image.
    client = Shoal(tmp_path / "home", default_catalog=True, resource_max_bytes=LIMIT, retries=0)
    client.run("server", "start")
    yield client
    client.run("server", "stop")


def write(path, data):
    path.write_bytes(data)
    return path


def test_a_cluster_runs_the_active_version(shoal, tmp_path):
    v1 = write(tmp_path / "v1.sh", b'#!/bin/sh\necho "greeter v1 says $1"\n')
    v2 = write(tmp_path / "v2.sh", b'#!/bin/sh\necho "greeter v2 says $1" > greeting.txt\n'
                                   b'cat greeting.txt\n')
    assert shoal.json("resource", "upload", "scripts", "greet.sh", v1)["version"] == 1
    assert shoal.json("resource", "upload", "scripts", "greet.sh", v2)["version"] == 2
    shoal.run("resource", "stage", "scripts", "greet.sh", "1")
    out = shoal.run("resource", "activate", "scripts", "greet.sh", "2").stdout
    assert "active 2, staged 1" in out
    versions = shoal.json("resource", "show", "scripts", "greet.sh")
    assert [(v["Version"], v["Status"]) for v in versions] == [(1, "staged"), (2, "active")]
    listed = shoal.json("resource", "list")
    assert [(r["Name"], r["Active"], r["Staged"]) for r in listed] == [("greet.sh", 2, 1)]

    write(tmp_path / "svc.json", json.dumps({"name": "greeter", "provisioner": {"actions": {
        "start": {"type": "shell", "fields": {"script": "greet.sh", "args": "hello"}}}}}).encode())
    write(tmp_path / "tpl.json", json.dumps({"name": "greet", "defaults": {
        "services": ["greeter"], "provider": "local", "hardwaretype": "sandbox",
        "imagetype": "host"}}).encode())
    shoal.run("service", "create", tmp_path / "svc.json")
    shoal.run("template", "create", tmp_path / "tpl.json")
    shoal.run("cluster", "create", "hello", "--template", "greet", "--size", "1", "--wait")

    tasks = shoal.json("task", "list", "hello")
    start = next(t["ID"] for t in tasks if t["Action"] == "START")
    assert "greeter v2 says hello" in shoal.json("task", "show", start)["output"]
    written = list((shoal.home / "nodes").glob("*/*/greeting.txt"))
    assert [p.read_text() for p in written] == ["greeter v2 says hello\n"]
    shoal.run("cluster", "delete", "hello", "--wait")

    # Only the active version can be missing from new tasks' view: it cannot be deleted alone.
    result = shoal.fails("resource", "delete", "scripts", "greet.sh", "2")
    assert "is active" in result.stderr
    shoal.run("resource", "recall", "scripts", "greet.sh", "2")
    assert "deleted version(s) 1, 2" in shoal.run("resource", "delete", "scripts", "greet.sh",
                                                  "--all").stdout
    assert shoal.json("resource", "list") == []


def tar_with(name, **link):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo(name)
        if link:
            info.type, info.linkname = tarfile.SYMTYPE, link["to"]
            tar.addfile(info)
        else:
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    return buffer.getvalue()


def zip_with(name):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, b"evil")
    return buffer.getvalue()


EVIL = [
    (tar_with("../../.bashrc"), "../../.bashrc"),
    (tar_with("/etc/cron.d/evil"), "/etc/cron.d/evil"),
    (tar_with("sneaky", to="../../../etc"), "sneaky"),
    (zip_with("../evil.sh"), "../evil.sh"),
]


def test_evil_archives_are_refused(shoal, tmp_path):
    for data, member in EVIL:  # one server for all cases: starting one costs seconds
        path = write(tmp_path / "evil.tar.gz", data)
        result = shoal.fails("resource", "upload", "archives", "evil", path)
        assert f"archive member '{member}'" in result.stderr
    assert shoal.json("resource", "list") == []
    stored = shoal.home / "resources"
    assert not stored.exists() or not any(stored.rglob("*"))


def test_size_limit_and_names(shoal, tmp_path):
    fits = write(tmp_path / "fits", b"x" * LIMIT)
    shoal.run("resource", "upload", "scripts", "fits", fits)
    result = shoal.fails("resource", "upload", "scripts", "big",
                         write(tmp_path / "big", b"x" * (LIMIT + 1)))
    assert "over the limit of 64 KiB" in result.stderr
    result = shoal.fails("resource", "upload", "scripts", "../escape", fits)
    assert "bad resource name '../escape'" in result.stderr
    assert [r["Name"] for r in shoal.json("resource", "list")] == ["fits"]


def test_keys_are_never_printed(shoal, tmp_path):
    secret = "-----BEGIN OPENSSH PRIVATE KEY-----\nNOT-FOR-YOUR-EYES\n"
    key = write(tmp_path / "id", secret.encode())
    outputs = [shoal.run("resource", "upload", "keys", "deploy", key)]
    outputs.append(shoal.run("resource", "activate", "keys", "deploy", "1"))
    for fmt in ("table", "json", "yaml", "value", "csv"):
        outputs.append(shoal.run("resource", "list", "-f", fmt))
        outputs.append(shoal.run("resource", "show", "keys", "deploy", "-f", fmt))
    for result in outputs:
        assert "NOT-FOR-YOUR-EYES" not in result.stdout + result.stderr
    request = urllib.request.Request(
        shoal.url + "/api/v1/resources/keys/deploy/versions/1/content",
        headers={"Authorization": "Bearer " + shoal.token})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request)
    body = refused.value.read().decode()
    assert "never returned" in body and "NOT-FOR-YOUR-EYES" not in body
    assert "NOT-FOR-YOUR-EYES" not in (shoal.home / "server.log").read_text()
