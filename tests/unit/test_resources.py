"""Plugin resources: versions and their states, upload checks (size, name, archives), the API."""

import io
import os
import tarfile
import zipfile

import pytest

from cluster_server import resources
from cluster_server.app import create_app
from cluster_server.errors import Conflict, NotFound, ValidationError
from cluster_server.resources import FileResourceStore
from cluster_server.store import Store
from extensions.automators.shell import ShellAutomator

TOKEN = "test-token"


@pytest.fixture
def store(tmp_path):
    return FileResourceStore(Store(tmp_path / "shoal.db"), tmp_path)


def states(store, kind="scripts", name="s.sh"):
    return {v["version"]: v["status"] for v in store.versions(kind, name)}


def files_under(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


# -- versions and states -----------------------------------------------------------------------


def test_every_upload_is_a_new_inactive_version(store, tmp_path):
    assert store.upload("scripts", "s.sh", b"one") == 1
    assert store.upload("scripts", "s.sh", b"two") == 2
    assert states(store) == {1: "inactive", 2: "inactive"}
    assert store.read("scripts", "s.sh", 2) == b"two"
    blob = tmp_path / "resources" / "default" / "scripts" / "s.sh" / "2"
    assert blob.read_bytes() == b"two"
    assert oct(blob.stat().st_mode & 0o777) == oct(0o600)
    assert store.list() == [{"kind": "scripts", "name": "s.sh", "active": None, "staged": None,
                             "latest": 2, "versions": 2}]


def test_stage_activate_recall(store):
    for data in (b"1", b"2", b"3"):
        store.upload("scripts", "s.sh", data)
    with pytest.raises(NotFound, match="no active version"):
        store.path("scripts", "s.sh")
    with pytest.raises(Conflict, match="no staged version"):
        store.activate("scripts", "s.sh")
    store.stage("scripts", "s.sh", 1)
    store.stage("scripts", "s.sh", 2)  # one candidate: 1 goes back to inactive
    assert states(store) == {1: "inactive", 2: "staged", 3: "inactive"}
    assert store.activate("scripts", "s.sh") == 2
    assert states(store) == {1: "inactive", 2: "active", 3: "inactive"}
    assert open(store.path("scripts", "s.sh"), "rb").read() == b"2"
    with pytest.raises(Conflict, match="active already"):
        store.stage("scripts", "s.sh", 2)
    store.activate("scripts", "s.sh", 3)  # given version: 2 goes back to inactive
    assert states(store) == {1: "inactive", 2: "inactive", 3: "active"}
    store.stage("scripts", "s.sh", 1)
    store.recall("scripts", "s.sh", 1)
    store.recall("scripts", "s.sh", 3)
    assert states(store) == {1: "inactive", 2: "inactive", 3: "inactive"}
    with pytest.raises(Conflict, match="neither active nor staged"):
        store.recall("scripts", "s.sh", 3)
    with pytest.raises(NotFound, match="no version 9"):
        store.activate("scripts", "s.sh", 9)
    with pytest.raises(NotFound, match="scripts/other not found"):
        store.stage("scripts", "other", 1)


def test_delete_a_version_or_the_whole_name(store, tmp_path):
    for data in (b"1", b"2", b"3"):
        store.upload("scripts", "s.sh", data)
    store.activate("scripts", "s.sh", 2)
    with pytest.raises(Conflict, match="is active"):
        store.delete("scripts", "s.sh", 2)
    assert store.delete("scripts", "s.sh", 3) == [3]
    # Numbers are never reused: new bytes never pass for an old version.
    assert store.upload("scripts", "s.sh", b"4") == 4
    assert states(store) == {1: "inactive", 2: "active", 4: "inactive"}
    assert store.delete("scripts", "s.sh") == [1, 2, 4]
    assert store.list() == []
    assert files_under(tmp_path / "resources") == []
    with pytest.raises(NotFound):
        store.versions("scripts", "s.sh")


def test_tenants_do_not_see_each_other(store):
    store.upload("scripts", "s.sh", b"default")
    other = store.for_tenant("acme")
    assert other.list() == []
    other.upload("scripts", "s.sh", b"acme")
    other.activate("scripts", "s.sh", 1)
    assert open(other.path("scripts", "s.sh"), "rb").read() == b"acme"
    with pytest.raises(NotFound):
        store.path("scripts", "s.sh")


def test_the_shell_automator_runs_the_active_version(store, tmp_path):
    automator = ShellAutomator(tmp_path, resources=store)
    store.upload("scripts", "s.sh", b"echo 1")
    store.upload("scripts", "s.sh", b"echo 2")
    store.activate("scripts", "s.sh", 2)
    assert open(automator._resolve("s.sh", {}), "rb").read() == b"echo 2"


# -- checks: nothing is written when one fails ------------------------------------------------


@pytest.mark.parametrize("name", ["", "a/b", "..", "../x", ".hidden", "a\\b", "x" * 201, "a b"])
def test_bad_names_are_refused(store, tmp_path, name):
    with pytest.raises(ValidationError, match="bad resource name"):
        store.upload("scripts", name, b"x")
    assert not (tmp_path / "resources").exists()


def test_unknown_kind_is_refused(store):
    with pytest.raises(ValidationError, match="kinds: scripts, archives, keys"):
        store.upload("binaries", "x", b"x")


def test_size_limit_is_configurable_and_named(store, tmp_path, monkeypatch):
    monkeypatch.setenv("SHOAL_RESOURCE_MAX_BYTES", str(64 * 1024))
    assert store.upload("scripts", "ok", b"x" * 64 * 1024) == 1
    with pytest.raises(resources.TooLarge, match="over the limit of 64 KiB") as raised:
        store.upload("scripts", "big", b"x" * (64 * 1024 + 1))
    assert raised.value.status == 413
    assert [r["name"] for r in store.list()] == ["ok"]
    monkeypatch.delenv("SHOAL_RESOURCE_MAX_BYTES")
    assert resources.max_bytes() == 16 * 1024 * 1024


def make_tar(entries, mode="w"):
    """``entries``: (name, type, data-or-target); type is file, dir, symlink, hardlink, chr."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for name, kind, value in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(value)
                tar.addfile(info, io.BytesIO(value))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                         "hardlink": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE}[kind]
            info.linkname = value or ""
            tar.addfile(info)
    return buffer.getvalue()


def make_zip(entries):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, kind, value in entries:
            info = zipfile.ZipInfo(name)
            if kind == "symlink":
                info.external_attr = (0o120777 << 16)
            archive.writestr(info, value)
    return buffer.getvalue()


def hidden_after_the_end():
    # Members after the end-of-archive blocks: GNU tar -i (and header resync) still unpacks them.
    good = make_tar([("ok.txt", "file", b"ok")])
    return good + make_tar([("../../evil", "file", b"x")])


EVIL = {
    "tar-dotdot": (make_tar([("ok/../../evil", "file", b"x")]), "ok/../../evil"),
    "tar-absolute": (make_tar([("/etc/evil", "file", b"x")]), "/etc/evil"),
    "tar-symlink-absolute": (make_tar([("link", "symlink", "/etc")]), "link"),
    "tar-symlink-up": (make_tar([("a/link", "symlink", "../../etc")]), "a/link"),
    # d -> . is harmless alone, but d/.. is the parent of the archive's directory.
    "tar-symlink-chain": (make_tar([("d", "symlink", "."), ("up", "symlink", "d/..")]), "up"),
    "tar-through-symlink": (make_tar([("dir", "symlink", "/tmp"), ("dir/x", "file", b"x")]),
                            "dir"),
    # d -> sub is fine, but d/l lands in sub/, from where l's ../.. is outside.
    "tar-link-written-through-link": (make_tar([("sub", "dir", None), ("d", "symlink", "sub"),
                                                ("d/l", "symlink", "..")]), "d/l"),
    "tar-dotdot-inside": (make_tar([("a/../b", "file", b"x")]), "a/../b"),
    "tar-hardlink-out": (make_tar([("h", "hardlink", "../etc/passwd")]), "h"),
    "tar-hardlink-absolute": (make_tar([("h", "hardlink", "/etc/passwd")]), "h"),
    "tar-device": (make_tar([("dev", "chr", None)]), "dev"),
    "tar-gz-dotdot": (make_tar([("../evil", "file", b"x")], "w:gz"), "../evil"),
    "tar-hidden-after-end": (hidden_after_the_end(), "../../evil"),
    "zip-dotdot": (make_zip([("../evil", "file", b"x")]), "../evil"),
    "zip-absolute": (make_zip([("/evil", "file", b"x")]), "/evil"),
    "zip-backslash": (make_zip([("a\\..\\..\\evil", "file", b"x")]), "a/../../evil"),
    "zip-drive": (make_zip([("C:/evil", "file", b"x")]), "C:/evil"),
    "zip-symlink-out": (make_zip([("link", "symlink", "../../etc")]), "link"),
}


@pytest.mark.parametrize("case", sorted(EVIL))
def test_evil_archives_are_refused_naming_the_member(store, tmp_path, case):
    data, member = EVIL[case]
    with pytest.raises(ValidationError) as raised:
        store.upload("archives", "evil.tar", data)
    assert f"archive member '{member}'" in raised.value.message
    assert raised.value.details["member"] == member
    assert store.list() == []
    assert not (tmp_path / "resources").exists()


GOOD = {
    "tar": make_tar([("app", "dir", None), ("app/bin/run", "file", b"#!/bin/sh\n"),
                     ("app/bin/tool", "symlink", "../lib/tool"), ("app/lib/tool", "file", b"t"),
                     ("app/same", "hardlink", "app/lib/tool"), ("./app/./z", "file", b"z"),
                     ("app/up", "symlink", "bin/../lib")]),
    "tar.gz": make_tar([("a.txt", "file", b"a")], "w:gz"),
    "tar.xz": make_tar([("a.txt", "file", b"a")], "w:xz"),
    "zip": make_zip([("app/run.sh", "file", b"run"), ("app/link", "symlink", "run.sh")]),
}


@pytest.mark.parametrize("case", sorted(GOOD))
def test_ordinary_archives_are_accepted(store, case):
    assert store.upload("archives", "a", GOOD[case]) == 1


@pytest.mark.parametrize("data", [b"", b"just text\n", b"\x1f\x8b garbage"])
def test_archives_must_be_tar_or_zip(store, data):
    with pytest.raises(ValidationError, match="must be a tar"):
        store.upload("archives", "a", data)


def test_archive_checks_apply_only_to_archives(store):
    # A script may well hold bytes that look like a tar; it is not unpacked.
    assert store.upload("scripts", "s", EVIL["tar-dotdot"][0]) == 1


# -- the API -----------------------------------------------------------------------------------


@pytest.fixture
def api(tmp_path):
    app = create_app(home=tmp_path, token=TOKEN, start_engine=False, seed=False)
    client = app.test_client()

    def call(method, path, data=None, json=None, tenant=None):
        headers = {"Authorization": f"Bearer {TOKEN}"}
        if tenant:
            headers["X-Shoal-Tenant"] = tenant
        return client.open("/api/v1" + path, method=method, data=data, json=json,
                           headers=headers)

    return call


def test_api_upload_activate_and_read(api):
    response = api("PUT", "/resources/scripts/s.sh", data=b"echo 1")
    assert response.status_code == 201
    assert response.get_json()["uploaded"] == 1
    api("PUT", "/resources/scripts/s.sh", data=b"echo 2")
    assert api("POST", "/resources/scripts/s.sh/versions/2/stage").get_json()["staged"] == 2
    shown = api("POST", "/resources/scripts/s.sh/activate").get_json()
    assert (shown["active"], shown["staged"]) == (2, None)
    assert api("GET", "/resources/scripts/s.sh/versions/2/content").data == b"echo 2"
    assert api("GET", "/resources?kind=scripts").get_json()[0]["active"] == 2
    assert api("GET", "/resources/scripts").get_json()[0]["name"] == "s.sh"
    recalled = api("POST", "/resources/scripts/s.sh/versions/2/recall").get_json()
    assert recalled["active"] is None
    assert api("DELETE", "/resources/scripts/s.sh/versions/1").get_json()["deleted"] == [1]
    assert api("DELETE", "/resources/scripts/s.sh").get_json()["deleted"] == [2]
    assert api("GET", "/resources").get_json() == []


def test_api_never_returns_the_contents_of_keys(api):
    secret = b"-----BEGIN OPENSSH PRIVATE KEY----- very secret"
    bodies = [api("PUT", "/resources/keys/id", data=secret)]
    bodies.append(api("POST", "/resources/keys/id/versions/1/activate"))
    bodies += [api("GET", path) for path in ("/resources", "/resources/keys",
                                             "/resources/keys/id")]
    refused = api("GET", "/resources/keys/id/versions/1/content")
    assert refused.status_code == 403
    assert "never returned" in refused.get_json()["error"]["message"]
    for response in bodies + [refused]:
        assert b"very secret" not in response.data


def test_api_errors_have_the_one_shape(api, monkeypatch):
    monkeypatch.setenv("SHOAL_RESOURCE_MAX_BYTES", "10")
    cases = [
        (api("PUT", "/resources/scripts/big", data=b"x" * 11), 413, "too_large"),
        (api("PUT", "/resources/scripts/a/..%2Fb", data=b"x"), 400, "invalid"),
        (api("PUT", "/resources/bins/x", data=b"x"), 400, "invalid"),
        (api("GET", "/resources/scripts/none"), 404, "not_found"),
        (api("POST", "/resources/scripts/none/versions/x/stage"), 404, "not_found"),
        # Fits the contract (bytes) but is no archive: 422, not a malformed request.
        (api("PUT", "/resources/archives/a.tar", data=EVIL["zip-dotdot"][0][:10]), 422,
         "invalid"),
        # A tenant is a row of the store: a name that is none names no tenant.
        (api("GET", "/resources", tenant="../../etc"), 404, "not_found"),
    ]
    for response, status, code in cases:
        assert response.status_code == status, (response.request.path, response.get_json())
        assert set(response.get_json()["error"]) == {"code", "message", "details"}
        assert response.get_json()["error"]["code"] == code
    assert "limit of 10 bytes" in cases[0][0].get_json()["error"]["message"]


def test_api_tenants_are_separate(api):
    assert api("POST", "/tenants", json={"name": "acme"}).status_code == 201
    api("PUT", "/resources/scripts/s", data=b"x", tenant="acme")
    assert api("GET", "/resources").get_json() == []
    assert len(api("GET", "/resources", tenant="acme").get_json()) == 1
    assert os.path.isdir(os.path.join(api("GET", "/server").get_json()["home"],
                                      "resources", "acme", "scripts", "s"))
