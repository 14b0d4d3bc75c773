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


# -- bodies: one declaration checks the request and is published ------------------------------


def test_a_body_is_checked_with_the_schema_the_document_publishes(api):
    doc = api("GET", "/openapi.json").get_json()
    create = doc["paths"]["/clusters"]["post"]["requestBody"]["content"]["application/json"]
    assert create["schema"]["required"] == ["name", "template", "size"]
    assert create["schema"]["properties"]["size"]["minimum"] == 1
    assert create["schema"]["examples"][0]["template"] == "local-web"
    for body, field, reason in (
            ({"name": "web", "template": "t"}, "size", "is required"),
            ({"name": "web", "template": "t", "size": "3"}, "size", "must be an integer"),
            ({"name": "web", "template": "t", "size": 0}, "size", "must be between 1"),
            ({"name": "web", "template": "t", "size": 2, "colour": 1}, "colour", "not a known"),
            ({"name": "Web!", "template": "t", "size": 2}, "name", "cluster name"),
            ({"name": "plan", "template": "t", "size": 2}, "name", "reserved")):
        error = assert_error_shape(api("POST", "/clusters/plan", json=body), 400, "invalid")
        assert error["details"]["field"] == field and reason in error["details"]["reason"], error


def test_an_integral_float_is_an_integer_and_nan_is_no_json(api):
    # JSON Schema counts 3.0 as an integer, so a client may send it for a count.
    assert limits.load(b'{"size": 3.0, "cost": 0.5}') == {"size": 3, "cost": 0.5}
    assert isinstance(limits.load(b'{"size": 3.0}')["size"], int)
    error = assert_error_shape(raw(api, "POST", "/services", b'{"name": "s", "x": NaN}'), 400)
    assert error["details"]["reason"] == "not JSON"


def test_an_operation_body_is_chosen_by_its_verb_and_listed_by_it(api):
    doc = api("GET", "/openapi.json").get_json()
    resize = doc["paths"]["/clusters/{name}/resize"]["post"]["requestBody"]
    assert resize["required"] is True  # optional body, but its schema requires size
    stop = doc["paths"]["/clusters/{name}/stop"]["post"]["requestBody"]
    assert stop["required"] is False
    plan = doc["paths"]["/clusters/{name}/plan"]["post"]["requestBody"]["content"]
    branches = plan["application/json"]["schema"]["oneOf"]
    assert {b["properties"]["operation"]["const"] for b in branches} >= {"resize", "delete"}
    error = assert_error_shape(api("POST", "/clusters/web/plan", json={"operation": "paint"}),
                               400)
    assert error["details"]["field"] == "operation"


def test_responses_are_declared_with_their_status_and_links(api):
    doc = api("GET", "/openapi.json").get_json()
    created = doc["paths"]["/clusters"]["post"]["responses"]["202"]
    assert created["links"]["show"]["operationId"] == "clusters_show_cluster_get"
    ops = {op["operationId"] for path in doc["paths"].values() for op in path.values()}
    for link in created["links"].values():
        assert link["operationId"] in ops
    entity = doc["paths"]["/services"]["post"]["responses"]["201"]
    assert entity["links"]["show"]["operationId"] == "catalog_show_entity_get_services"
    assert "catalog_show_entity_get_services" in ops
    show = doc["paths"]["/clusters/{name}"]["get"]["responses"]["200"]
    assert "nodes" in show["content"]["application/json"]["schema"]["properties"]
    assert len(ops) == sum(len(path) for path in doc["paths"].values())  # all distinct


# -- paths: names that cannot exist, methods that serve a path ---------------------------------


def test_a_name_that_cannot_exist_is_not_found_and_refused_for_a_put(api):
    error = assert_error_shape(api("GET", "/clusters/Bad_Name"), 404, "not_found")
    assert "cluster 'Bad_Name' not found" in error["message"]
    error = assert_error_shape(api("PUT", "/resources/scripts/a%2F..%2Fb"), 400, "invalid")
    assert "bad resource name" in error["message"]


def test_405_and_options_list_only_the_methods_that_serve_the_path(api):
    # PUT /catalog/import matches PUT /<plural>/<name> with a plural that is none.
    response = api("PUT", "/catalog/import")
    assert_error_shape(response, 405)
    assert response.headers["Allow"] == "POST"
    # PUT /resources/k/n/activate matches the upload's <path:name> with a name holding '/'.
    response = api("PUT", "/resources/scripts/n/activate")
    assert_error_shape(response, 405)
    assert response.headers["Allow"] == "POST"
    # A cluster may not be named "plan": GET /clusters/plan is not a show.
    options = api("OPTIONS", "/clusters/plan")
    assert options.headers["Allow"] == "POST, OPTIONS"
    options = api("OPTIONS", "/catalog/check")
    assert options.headers["Allow"] == "GET, HEAD, OPTIONS"
    # A task id that cannot exist still names the route that would serve it.
    assert api("OPTIONS", "/tasks/x").headers["Allow"] == "GET, HEAD, OPTIONS"


def test_query_values_are_checked_against_their_declaration(api):
    error = assert_error_shape(api("GET", "/clusters?all=maybe"), 400, "invalid")
    assert error["details"] == {"field": "query.all", "reason": "invalid value"}
    error = assert_error_shape(api("GET", "/clusters?all=1&all=0"), 400, "invalid")
    assert error["details"]["reason"] == "repeated"


def test_semantic_refusals_are_422_and_say_why(api):
    api("POST", "/services", json={"name": "a", "dependencies": {"runtime": {"requires": ["b"]}}})
    error = assert_error_shape(api("POST", "/services", json={
        "name": "b", "dependencies": {"runtime": {"requires": ["a"]}}}), 422, "invalid")
    assert error["details"]["reason"] == "cycle"
    error = assert_error_shape(api("POST", "/clustertemplates", json={
        "name": "t", "constraints": {"size": {"min": 3, "max": 2}}}), 422, "invalid")
    assert error["details"]["reason"] == "min > max"
    error = assert_error_shape(api("POST", "/clustertemplates", json={
        "name": "t", "constraints": {"size": {"min": -1}}}), 400, "invalid")
    assert error["details"]["field"] == "constraints.size.min"


def test_a_plan_on_a_cluster_losing_its_nodes_is_a_conflict_not_a_bad_request(api):
    """Found by schemathesis: a plan asked while a delete takes every node away answered 400
    ("size ... got 0") to a body that fits the contract."""
    from cluster_server import catalog, operations

    store = api.app.store
    with store.write():
        store.catalog_put(catalog.read_directory(catalog.DEFAULT_CATALOG))
    operations.create(store, "default", {"name": "w", "template": "local-web", "size": 2})
    with store.write() as db:
        db.execute("UPDATE nodes SET status = 'REMOVING'")
        db.execute("UPDATE clusters SET status = 'DELETING'")
    for body in ({"operation": "add-services", "services": ["web-backend"]},
                 {"operation": "resize", "size": 3}):
        error = assert_error_shape(api("POST", "/clusters/w/plan", json=body), 409, "conflict")
        assert "no live nodes" in error["message"]
