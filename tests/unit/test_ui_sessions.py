"""The web UI's sessions and the API routes it added, through Flask's test client: one-time
codes, the session cookie standing in for the token, CSRF, the event stream, archive import."""

import io
import json
import tarfile
import zipfile

import pytest

from cluster_server.tenancy.principal import Principal
from cluster_server.ui import sessions
from tests.unit.test_api import TOKEN, api, assert_error_shape  # noqa: F401 (the fixture)


def login(api, body=None):
    client = api.app.test_client()
    code = api("POST", "/ui/logins", json=body or {}).get_json()
    response = client.get(code["path"])
    assert response.status_code == 302
    csrf = sessions.of(api.app).get(client.get_cookie(sessions.COOKIE).value).csrf
    return client, csrf, response.headers["Location"]


def test_a_code_works_once_and_not_late():
    store = sessions.Sessions()
    owner = Principal(user="owner", tenant="default", role="superadmin")
    code, ttl = store.issue_code("/ui/templates", owner, now=100.0)
    late, _ = store.issue_code("/ui/templates", owner, now=100.0)
    session, target = store.redeem(code, now=100.0 + ttl - 1)
    assert session is not None and target == "/ui/templates"
    assert store.redeem(code, now=101.0) == (None, None)
    assert store.redeem(late, now=100.0 + ttl) == (None, None)
    assert store.redeem(None) == (None, None)
    assert store.get(session.id, now=101.0) is session
    assert store.get(session.id, now=session.expires) is None


def test_a_session_acts_as_whoever_asked_for_its_link(api):
    assert api("POST", "/users", json={"name": "alice", "role": "user"}).status_code == 201
    token = api("POST", "/users/alice/tokens", json={}).get_json()["token"]
    client = api.app.test_client()
    code = client.post("/api/v1/ui/logins", json={},
                       headers={"Authorization": f"Bearer {token}"}).get_json()
    assert client.get(code["path"]).status_code == 302
    assert client.get("/api/v1/whoami").get_json() == {
        "user": "alice", "tenant": "default", "role": "user"}
    # The user's limits hold in the browser too: tenants are the superadmin's.
    assert_error_shape(client.get("/api/v1/tenants"), 403)
    owner, _, _ = login(api)
    assert owner.get("/api/v1/whoami").get_json()["role"] == "superadmin"


def test_a_login_code_needs_the_token_and_a_cluster_that_exists(api):
    assert_error_shape(api("POST", "/ui/logins", json={}, token=None), 401)
    assert_error_shape(api("POST", "/ui/logins", json={"cluster": "nope"}), 404)
    client, csrf, target = login(api)
    assert target == "/ui/templates"
    # A browser session may not mint more sessions.
    response = client.post("/api/v1/ui/logins", json={}, headers={"X-CSRF-Token": csrf})
    assert_error_shape(response, 403)


def test_the_cookie_stands_in_for_the_token_and_changes_need_the_csrf_token(api):
    client, csrf, _ = login(api)
    cookie = client.get_cookie(sessions.COOKIE)
    assert cookie.http_only and cookie.same_site == "Strict"
    assert client.get("/api/v1/services").status_code == 200
    body = {"name": "svc", "description": "x"}
    error = assert_error_shape(client.post("/api/v1/services", json=body), 403, "forbidden")
    assert error["details"]["reason"] == "csrf"
    wrong = client.post("/api/v1/services", json=body, headers={"X-CSRF-Token": csrf + "x"})
    assert_error_shape(wrong, 403)
    assert api("GET", "/services/svc").status_code == 404  # nothing written
    assert client.post("/api/v1/services", json=body,
                       headers={"X-CSRF-Token": csrf}).status_code == 201
    # Logging out ends it for the pages and the API alike.
    assert client.post("/ui/logout", data={"csrf_token": csrf}).status_code == 200
    assert client.get("/api/v1/services").status_code == 401
    assert client.get("/ui/templates").status_code == 401


def test_pages_refuse_without_a_session_and_send_a_strict_csp(api):
    client = api.app.test_client()
    response = client.get("/ui/templates")
    assert response.status_code == 401 and b"shoal ui" in response.data
    client, _, _ = login(api)
    for path in ("/ui/templates", "/ui/clusters", "/ui/admin", "/ui/static/shoal.js"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert client.get("/ui/admin/widgets/x").status_code == 404
    # A name holding '?' is a name (that does not exist), not a query for the API.
    response = client.get("/ui/clusters/a%3Fall=1")
    assert response.status_code == 404 and b"not found" in response.data


def test_the_stream_of_an_idle_cluster_gives_its_state_and_ends(api):
    store = api.app.store
    with store.write() as db:
        db.execute("INSERT INTO clusters (id, tenant, name, template, provider, status, spec,"
                   " created_at, updated_at) VALUES ('c1', 'default', 'web', 't', 'p', 'ACTIVE',"
                   " ?, 1, 1)", [store.seal({"services": {}})])
        db.execute("INSERT INTO operations (id, cluster_id, kind, status, params, created_at)"
                   " VALUES ('op-000000000001', 'c1', 'create', 'SUCCEEDED', '{}', 1)")
        db.execute("INSERT INTO events (cluster_id, operation_id, at, message) VALUES"
                   " ('c1', 'op-000000000001', 2, 'created')")
    response = api("GET", "/clusters/web/stream")
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    text = response.get_data(as_text=True)
    events = [block for block in text.split("\n\n") if block.startswith(("event", "id"))]
    kinds = [line.split(": ", 1)[1] for block in events for line in block.splitlines()
             if line.startswith("event: ")]
    assert kinds == ["progress", "log", "end"]
    progress = json.loads(events[0].split("data: ", 1)[1])
    assert progress["cluster_status"] == "ACTIVE"
    assert progress["operation"]["status"] == "SUCCEEDED"
    assert "id: 1" in events[1]
    # After the last event seen: no log again.
    again = api("GET", "/clusters/web/stream?after=1").get_data(as_text=True)
    assert "event: log" not in again
    assert_error_shape(api("GET", "/clusters/nope/stream"), 404)
    # Each stream gives its slot back when it is closed, read or not (SHOAL_UI_STREAMS: 4).
    for _ in range(6):
        api("GET", "/clusters/web/stream").close()
    assert api("GET", "/clusters/web/stream").status_code == 200


def _archive(kind, files):
    buffer = io.BytesIO()
    if kind == "zip":
        with zipfile.ZipFile(buffer, "w") as archive:
            for name, data in files.items():
                archive.writestr(name, data)
    else:
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _post_archive(api, data):
    client = api.app.test_client()
    return client.post("/api/v1/catalog/import/archive", data=data,
                       headers={"Authorization": f"Bearer {TOKEN}",
                                "Content-Type": "application/octet-stream"})


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_an_archive_imports_all_or_nothing(api, kind):
    good = json.dumps({"name": "web", "description": "a web server"}).encode()
    response = _post_archive(api, _archive(kind, {
        "cat/services/web.json": good, "cat/README": b"ignored",
        "cat/clustertemplates/t.json": json.dumps({"name": "t", "defaults": {
            "services": ["web", "ghost"]}}).encode()}))
    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    assert answer["imported"] == 2 and "ghost" in answer["warnings"][0]["message"]
    bad = _archive(kind, {"cat/services/db.json": json.dumps({"name": "db"}).encode(),
                          "cat/services/x.json": b"{not json"})
    error = assert_error_shape(_post_archive(api, bad), 422)
    assert error["details"]["member"] == "cat/services/x.json"
    assert api("GET", "/services/db").status_code == 404  # nothing written
    error = assert_error_shape(_post_archive(api, b"plain bytes"), 422)
    assert "not a zip or tar archive" in error["message"]
