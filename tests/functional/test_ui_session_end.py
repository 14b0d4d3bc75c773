"""A web UI session lives only as long as the token and user that made it: revoked, expired or
deleted, the next page or API call with its cookie is refused (401, saying why) and the session
is gone; a changed role applies at once. A real server process; the browser's part (cookies,
CSRF header) is played with plain HTTP, as the browser tests cover the pages themselves."""

import http.client
import json
import time
import urllib.parse

import pytest

from tests.cloudkit import wait_finished
from tests.conftest import Shoal
from tests.uikit import call, fetch


@pytest.fixture(scope="module")
def shoal(tmp_path_factory):
    client = Shoal(tmp_path_factory.mktemp("ui-sessions") / "home", default_catalog=True)
    client.run("server", "start")
    yield client
    client.run("server", "stop")


def session(shoal, token):
    """A browser session's cookie, from a login link asked for with ``token``."""
    status, login = call(shoal, "POST", "/ui/logins", {}, token=token)
    assert status == 201
    parts = urllib.parse.urlsplit(shoal.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request("GET", login["path"])  # no redirect followed: the cookie is here
        response = connection.getresponse()
        response.read()
        assert response.status == 302
        cookie = response.getheader("Set-Cookie")
    finally:
        connection.close()
    return cookie.split(";")[0].split("=", 1)[1]


def user_with_token(shoal, name, role="user", **token):
    assert call(shoal, "POST", "/users", {"name": name, "role": role})[0] == 201
    status, issued = call(shoal, "POST", f"/users/{name}/tokens", token)
    assert status == 201
    return issued


def works(shoal, cookie):
    return (fetch(shoal.url + "/ui/clusters", cookie)[0] == 200 and
            fetch(shoal.url + "/api/v1/clusters", cookie)[0] == 200)


def refused(shoal, cookie, why):
    """The next page says the session ended and why; after it, the session is simply gone."""
    status, _, page = fetch(shoal.url + "/ui/clusters", cookie)
    assert status == 401 and b"Session ended" in page and why.encode() in page, page[-600:]
    assert fetch(shoal.url + "/api/v1/clusters", cookie)[0] == 401
    status, _, page = fetch(shoal.url + "/ui/templates", cookie)
    assert status == 401 and b"Not logged in" in page


def test_a_revoked_token_ends_its_sessions(shoal):
    issued = user_with_token(shoal, "rita")
    cookie, other = session(shoal, issued["token"]), session(shoal, issued["token"])
    assert works(shoal, cookie) and works(shoal, other)
    assert call(shoal, "DELETE", f"/tokens/{issued['id']}")[0] == 200
    refused(shoal, cookie, "was revoked")
    # The API call is refused on its own too, with the reason in the error's details.
    status, _, body = fetch(shoal.url + "/api/v1/clusters", other)
    error = json.loads(body)["error"]
    assert status == 401 and error["details"]["reason"] == "revoked"
    assert "session has ended" in error["message"]
    assert fetch(shoal.url + "/ui/clusters", other)[0] == 401


def test_a_deleted_user_ends_their_sessions(shoal):
    issued = user_with_token(shoal, "dora")
    cookie = session(shoal, issued["token"])
    assert works(shoal, cookie)
    assert call(shoal, "DELETE", "/users/dora")[0] == 200
    refused(shoal, cookie, "gone")
    # Made again with the same name, the user's old session does not come back.
    assert call(shoal, "POST", "/users", {"name": "dora", "role": "user"})[0] == 201
    assert not works(shoal, cookie)


def test_an_expired_token_ends_its_sessions(shoal):
    issued = user_with_token(shoal, "eddy", expires_in="3s")
    cookie = session(shoal, issued["token"])
    assert works(shoal, cookie)
    time.sleep(max(0.0, issued["expires_at"] - time.time()) + 0.2)
    refused(shoal, cookie, "has expired")


def test_a_changed_role_applies_to_a_live_session(shoal):
    issued = user_with_token(shoal, "adam", role="admin")
    cookie = session(shoal, issued["token"])
    assert fetch(shoal.url + "/api/v1/grants", cookie)[0] == 200  # an admin's
    page = fetch(shoal.url + "/ui/templates", cookie)[2]
    assert b"(admin)" in page and b'<span class="view">Admin</span>' in page
    assert call(shoal, "PUT", "/users/adam", {"role": "user"})[0] == 200
    assert fetch(shoal.url + "/api/v1/grants", cookie)[0] == 403
    page = fetch(shoal.url + "/ui/templates", cookie)[2]
    assert b"(user)" in page and b'<span class="view">Admin</span>' not in page
    assert works(shoal, cookie)  # still a session, with the user's rights


def test_the_owners_session_lasts_and_other_sessions_are_untouched(shoal):
    owner = session(shoal, None)
    issued = user_with_token(shoal, "otto")
    cookie = session(shoal, issued["token"])
    status, kept = call(shoal, "POST", "/users/otto/tokens", {})
    assert status == 201
    kept_cookie = session(shoal, kept["token"])
    assert call(shoal, "DELETE", f"/tokens/{issued['id']}")[0] == 200
    assert not works(shoal, cookie)
    assert works(shoal, kept_cookie) and works(shoal, owner)


def test_an_open_stream_ends_when_its_token_is_revoked(shoal, tmp_path):
    """A live stream (the cluster page's) opened with a session ends soon after the token
    behind it is revoked, while the operation it follows still runs; opened again, refused."""
    from shoal_testkit import catalog

    shoal.run("catalog", "import", catalog.write(tmp_path / "slow", service_fields={
        "db": {"install": {"sleep": 8}}}))
    shoal.run("cluster", "create", "slow", "--template", "fake-stack", "--size", "2")
    issued = user_with_token(shoal, "sven", role="admin")  # an admin sees the tenant's clusters
    cookie = session(shoal, issued["token"])
    parts = urllib.parse.urlsplit(shoal.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.request("GET", "/api/v1/clusters/slow/stream?wait=30",
                           headers={"Cookie": f"shoal_session={cookie}"})
        response = connection.getresponse()
        assert response.status == 200
        assert b"event: progress" in response.readline() + response.readline() + \
            response.readline() + response.readline()
        assert call(shoal, "DELETE", f"/tokens/{issued['id']}")[0] == 200
        rest = response.read()  # until the server ends the stream
    finally:
        connection.close()
    assert b"event: end" not in rest
    cluster = call(shoal, "GET", "/clusters/slow")[1]
    assert cluster["operation"]["status"] == "RUNNING"  # the revocation ended it, not the op
    assert fetch(shoal.url + "/api/v1/clusters/slow/stream", cookie)[0] == 401
    wait_finished(shoal, "slow")
    shoal.run("cluster", "delete", "slow", "--wait", timeout=120)
