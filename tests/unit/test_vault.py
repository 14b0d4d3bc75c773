"""Secrets at rest: provider entities and cluster specs are sealed in shoal.db with a key kept in
SHOAL_HOME, and a store written by the release before is sealed in place with nothing lost."""

import os
import pathlib
import shutil
import stat

import pytest

from cluster_server import operations, vault
from cluster_server.app import create_app
from cluster_server.errors import StoreKeyError
from cluster_server.store import Store

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SECRETS = {"api_user": "AKIAVAULTTEST00000001", "api_password": "vault-test-secret-0001"}
PREVIOUS = pathlib.Path(__file__).parent.parent / "data" / "store-v1.db"
OLD_SECRETS = ("AKIAOLDRELEASE0000001", "old-release-secret-key-0001",
               "old-release-kv-password-0001")


def files_bytes(home):
    """shoal.db and whatever SQLite keeps beside it (-wal, -shm): everything a copy would take."""
    return b"".join(path.read_bytes() for path in home.glob("shoal.db*"))


def test_a_new_store_makes_its_key_once_private(tmp_path):
    Store(tmp_path / "shoal.db")
    key = tmp_path / vault.KEY_NAME
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    first = key.read_bytes()
    Store(tmp_path / "shoal.db")
    assert key.read_bytes() == first


def test_secrets_given_through_the_api_are_not_in_the_files(tmp_path):
    app = create_app(home=tmp_path, token=TOKEN, start_engine=False)
    client = app.test_client()
    reply = client.post("/api/v1/providers", headers=AUTH, json={
        "name": "aws-1", "providertype": "aws",
        "provisioner": {"aws_region": "us-east-1", **SECRETS}})
    assert reply.status_code == 201, reply.get_json()
    operations.create(app.store, "default", {"name": "kv", "template": "local-kv", "size": 2,
                                             "config": {"kv": {"password": "kv-pass-0001"}}})
    data = files_bytes(tmp_path)
    for secret in (*SECRETS.values(), "kv-pass-0001"):
        assert secret.encode() not in data
    # Sealing is beneath everything else: the server reads the values back whole...
    assert app.store.catalog_get("provider", "aws-1")["provisioner"]["api_password"] == \
        SECRETS["api_password"]
    spec = operations.get_cluster(app.store, "default", "kv")["spec"]
    assert spec["config"]["kv"]["password"] == "kv-pass-0001"
    # ...and the API still masks them.
    shown = client.get("/api/v1/providers/aws-1", headers=AUTH).get_json()
    assert shown["provisioner"]["api_password"] == "********"


def test_a_store_of_the_previous_release_is_sealed_in_place(tmp_path):
    home = tmp_path
    shutil.copy(PREVIOUS, home / "shoal.db")
    assert OLD_SECRETS[1].encode() in files_bytes(home)  # the fixture is what it claims
    app = create_app(home=home, token=TOKEN, start_engine=False)
    data = files_bytes(home)
    for secret in OLD_SECRETS:
        assert secret.encode() not in data, secret
    provider = app.store.catalog_get("provider", "aws-old")
    assert provider["provisioner"]["api_user"] == OLD_SECRETS[0]
    assert provider["provisioner"]["api_password"] == OLD_SECRETS[1]
    cluster = operations.get_cluster(app.store, "default", "old-kv")
    assert cluster["spec"]["config"]["kv"]["password"] == OLD_SECRETS[2]
    assert len(operations.node_rows(app.store, cluster["id"])) == 2
    # Every provider still passes its plugin's checks, and nothing else was lost.
    from cluster_server import plugins
    for entry in app.store.catalog_list("provider"):
        cls = plugins.plugin_class(plugins.PROVIDER_NAMESPACE, entry["providertype"])
        plugins.validate_fields("provider", entry["name"], cls.fields, entry["provisioner"])
    assert {p["name"] for p in app.store.catalog_list("provider")} == {"local", "aws-old"}
    assert {t["name"] for t in app.store.catalog_list("template")} == {"local-web", "local-kv"}
    # A second start finds nothing left to seal.
    assert Store(home / "shoal.db")._seal_plain_rows() == 0


def test_a_lost_key_is_named_not_replaced(tmp_path):
    store = Store(tmp_path / "shoal.db")
    store.catalog_put([("provider", {"name": "p", "provisioner": {"api_password": "x"}})])
    (tmp_path / vault.KEY_NAME).unlink()
    with pytest.raises(StoreKeyError, match="store.key is missing"):
        Store(tmp_path / "shoal.db")
    assert not (tmp_path / vault.KEY_NAME).exists()


def test_another_key_is_refused_with_the_reason(tmp_path):
    store = Store(tmp_path / "shoal.db")
    store.catalog_put([("provider", {"name": "p", "provisioner": {"api_password": "x"}})])
    key = tmp_path / vault.KEY_NAME
    os.chmod(key, 0o600)
    key.write_bytes(vault.Fernet.generate_key())
    with pytest.raises(StoreKeyError, match="another key"):
        Store(tmp_path / "shoal.db").catalog_get("provider", "p")
