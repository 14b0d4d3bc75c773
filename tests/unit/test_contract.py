"""The API's hard limits and the OpenAPI document's parameters (cluster_server/contract)."""

import re

from openapi_spec_validator import validate

from cluster_server.contract import limits
from tests.unit.test_api import TOKEN, api, assert_error_shape  # noqa: F401 (the fixture)


def raw(api, method, path, data, headers=None):
    client = api.app.test_client()
    return client.open("/api/v1" + path, method=method, data=data,
                       headers={"Authorization": f"Bearer {TOKEN}",
                                "Content-Type": "application/json", **(headers or {})})


def test_deeply_nested_body_is_a_400_not_a_500(api):
    body = "[" * 100_000 + "]" * 100_000
    error = assert_error_shape(raw(api, "POST", "/services", body), 400, "invalid")
    assert error["details"] == {"field": "body", "reason": "too deeply nested"}


def test_nesting_past_the_depth_limit_names_where(api):
    deep = {"name": "s"}
    node = deep
    for _ in range(limits.MAX_DEPTH):
        node["x"] = {}
        node = node["x"]
    error = assert_error_shape(api("POST", "/services", json=deep), 400, "invalid")
    assert error["details"]["field"].startswith("body.x.x")
    assert api("GET", "/services/s").status_code == 404  # nothing half written


def test_long_strings_and_arrays_are_refused(api):
    error = assert_error_shape(
        api("POST", "/services", json={"name": "s", "description": "a" * (limits.MAX_STRING + 1)}),
        400)
    assert error["details"] == {"field": "body.description", "reason": "string too long"}
    error = assert_error_shape(
        api("POST", "/services", json={"name": "s", "tags": [1] * (limits.MAX_ITEMS + 1)}), 400)
    assert error["details"]["reason"] == "too many items"


def test_body_over_the_limit_is_refused_on_its_declared_length(api, monkeypatch):
    monkeypatch.setenv("SHOAL_MAX_JSON_BYTES", "1000")
    response = raw(api, "POST", "/services", b'{"name": "s", "description": "' + b"a" * 2000 + b'"}')
    error = assert_error_shape(response, 413, "too_large")
    assert error["details"]["limit"] == 1000 and "SHOAL_MAX_JSON_BYTES" in error["message"]
    small = {"name": "s", "description": "d"}
    assert api("POST", "/services", json=small).status_code == 201


def test_uploads_keep_their_own_larger_limit(api, monkeypatch):
    monkeypatch.setenv("SHOAL_MAX_JSON_BYTES", "1000")
    response = raw(api, "PUT", "/resources/scripts/big", b"x" * 5000,
                   headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 201, response.get_json()


def test_unknown_query_parameter_is_named(api):
    error = assert_error_shape(api("GET", "/clusters?all=1&colour=red"), 400, "invalid")
    assert error["details"] == {"field": "query.colour", "reason": "unknown query parameter"}
    assert "all" in error["message"]
    assert api("GET", "/clusters?all=1").status_code == 200


def test_405_says_what_is_allowed(api):
    response = api("PATCH", "/services")
    assert_error_shape(response, 405)
    assert set(response.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}


def test_openapi_is_valid_3_1_with_real_templates_and_declared_parameters(api):
    doc = api("GET", "/openapi.json").get_json()
    assert doc["openapi"] == "3.1.0"
    validate(doc)  # openapi-spec-validator, against the 3.1 schema
    for path in doc["paths"]:
        assert not re.search(r"\{\w+:", path), path
    assert "/tasks/{task_id}" in doc["paths"]
    # A route whose body depends on a path value is listed value by value, each with its body.
    resize = doc["paths"]["/clusters/{name}/resize"]["post"]
    assert resize["requestBody"]["content"]["application/json"]["schema"]["required"] == ["size"]
    for verb in ("start", "retry", "cancel"):
        assert f"/clusters/{{name}}/{verb}" in doc["paths"]
    assert "/clusters/{name}/{verb}" not in doc["paths"]
    listing = doc["paths"]["/clusters"]["get"]["parameters"]
    assert [(p["name"], p["in"]) for p in listing] == [("all", "query")]
    # Every route is in the document and nothing else is.
    routes = set()
    for rule in api.app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1"):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule[len("/api/v1"):])
        view = api.app.view_functions[rule.endpoint]
        expand = getattr(view, "contract_expand", None) or getattr(
            getattr(view, "contract_body", None), "by", None)
        values = view.contract_path[expand]["enum"] if expand else [None]
        routes |= {path.replace("{" + expand + "}", v) if v else path for v in values}
    assert routes == set(doc["paths"])
