"""The REST API through Flask's test client: token, error shape, catalog endpoints."""

import pytest

from cluster_server import catalog
from cluster_server.app import create_app
from tests.conftest import load_catalog_dir

TOKEN = "test-token"


@pytest.fixture
def api(tmp_path):
    app = create_app(home=tmp_path, token=TOKEN, start_engine=False, seed=False)
    client = app.test_client()

    def call(method, path, json=None, token=TOKEN):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return client.open("/api/v1" + path, method=method, json=json, headers=headers)

    call.app = app
    return call


def assert_error_shape(response, status, code=None):
    assert response.status_code == status, response.get_json()
    body = response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code:
        assert body["error"]["code"] == code
    return body["error"]


@pytest.mark.parametrize("token", [None, "wrong", TOKEN + "x"])
def test_every_call_needs_the_token(api, token):
    for path in ("/server", "/openapi.json", "/services", "/nowhere"):
        assert_error_shape(api("GET", path, token=token), 401, "unauthorized")


def test_token_file_is_private(tmp_path):
    import stat

    app = create_app(home=tmp_path, start_engine=False, seed=False)
    mode = stat.S_IMODE((tmp_path / "token").stat().st_mode)
    assert mode == 0o600
    assert app.config["SHOAL_TOKEN"] == (tmp_path / "token").read_text().strip()


def test_errors_all_have_one_shape(api):
    assert_error_shape(api("GET", "/nowhere/at/all"), 404)
    assert_error_shape(api("GET", "/services/missing"), 404, "not_found")
    assert_error_shape(api("PATCH", "/services"), 405)
    assert_error_shape(api("POST", "/services", json=["x"]), 400, "invalid")
    assert_error_shape(api("POST", "/widgets", json={"name": "x"}), 400, "invalid")
    error = assert_error_shape(api("POST", "/services", json={"name": "s", "bad": 1}), 400)
    assert error["details"] == {"entity": "service", "name": "s", "field": "bad",
                                "reason": error["details"]["reason"]}


def test_openapi_lists_the_endpoints(api):
    doc = api("GET", "/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    assert "/services/{name}" in doc["paths"] or "/{plural}/{name}" in doc["paths"]
    assert "/catalog/import" in doc["paths"]
    assert doc["components"]["schemas"]["Error"]["required"] == ["error"]


def test_crud(api):
    body = {"name": "web", "description": "d"}
    assert api("POST", "/services", json=body).status_code == 201
    assert_error_shape(api("POST", "/services", json=body), 409, "conflict")
    assert api("GET", "/services/web").get_json() == body
    assert api("PUT", "/services/web", json={"description": "e"}).status_code == 200
    assert api("GET", "/services/web").get_json() == {"name": "web", "description": "e"}
    assert_error_shape(api("PUT", "/services/web", json={"name": "other"}), 409, "conflict")
    assert [s["name"] for s in api("GET", "/services").get_json()] == ["web"]
    assert api("DELETE", "/services/web").status_code == 200
    assert_error_shape(api("DELETE", "/services/web"), 404)


def test_create_reports_dangling_references(api):
    result = api("POST", "/clustertemplates",
                 json={"name": "t", "defaults": {"services": ["ghost"]}}).get_json()
    assert [w["ref"] for w in result["warnings"]] == ["ghost"]


def test_service_cycle_is_rejected_and_nothing_written(api):
    api("POST", "/services", json={"name": "a", "dependencies": {"runtime": {"requires": ["b"]}}})
    error = assert_error_shape(api("POST", "/services", json={
        "name": "b", "dependencies": {"runtime": {"requires": ["a"]}}}), 422)
    assert error["details"]["reason"] == "cycle"
    assert_error_shape(api("GET", "/services/b"), 404)


def _import_payload(cat):
    return {"entities": [{"kind": k, "body": b, "source": f"{k}/{n}.json"}
                         for k, items in cat.items() for n, b in items.items()]}


def test_import_is_all_or_nothing(api):
    cat = load_catalog_dir()
    payload = _import_payload(cat)
    payload["entities"][-1]["body"] = dict(payload["entities"][-1]["body"], extra=True)
    error = assert_error_shape(api("POST", "/catalog/import", json=payload), 400)
    assert error["details"]["source"] == payload["entities"][-1]["source"]
    assert api("GET", "/catalog/export").get_json() == {"entities": []}


def test_import_export_roundtrip_and_template_resolution(api):
    cat = load_catalog_dir()
    result = api("POST", "/catalog/import", json=_import_payload(cat)).get_json()
    assert result["imported"] == 92
    assert len(result["warnings"]) == 3
    exported = api("GET", "/catalog/export").get_json()["entities"]
    again = {}
    for item in exported:
        again.setdefault(item["kind"], {})[item["body"]["name"]] = item["body"]
    # The export is the catalog with provider secrets masked ...
    masked = dict(cat, provider={n: catalog.mask_provider(b) for n, b in cat["provider"].items()})
    assert again == masked
    assert again["provider"]["rackspace"]["provisioner"]["api_password"] == catalog.MASK
    # ... and importing it back leaves the stored catalog, secrets included, as it was.
    api("POST", "/catalog/import", json={"entities": exported})
    assert api.app.store.catalog_all() == cat
    api("POST", "/partialtemplates", json={"name": "mon", "defaults": {"services": ["nginx"]}})
    api("POST", "/clustertemplates", json={"name": "web", "extends": {"name": "base"},
                                           "includes": [{"name": "mon"}]})
    resolved = api("GET", "/clustertemplates/web").get_json()
    assert resolved["defaults"]["services"] == ["base", "nginx"]
    assert resolved["defaults"]["provider"] == "rackspace"
    raw = api("GET", "/clustertemplates/web?raw=1").get_json()
    assert raw["extends"] == {"name": "base"}


def test_provider_secrets_never_returned(api):
    api("POST", "/providers", json={"name": "p", "providertype": "x",
                                    "provisioner": {"api_password": "s3cret", "zone": "a"}})
    for response in (api("GET", "/providers/p"), api("GET", "/providers"),
                     api("GET", "/catalog/export")):
        assert "s3cret" not in response.get_data(as_text=True)


def test_masked_value_sent_back_keeps_the_secret(tmp_path):
    app = create_app(home=tmp_path, token=TOKEN, start_engine=False, seed=False)
    client = app.test_client()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    client.post("/api/v1/providers", headers=headers, json={
        "name": "p", "providertype": "x", "provisioner": {"api_password": "s3cret"}})
    shown = client.get("/api/v1/providers/p", headers=headers).get_json()
    client.put("/api/v1/providers/p", headers=headers, json=shown)
    assert app.store.catalog_get("provider", "p")["provisioner"]["api_password"] == "s3cret"
