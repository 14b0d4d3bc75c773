"""``shoal ui`` without a browser: the link it prints logs in once, and names only the server."""

import urllib.parse

from tests.uikit import fetch


def test_shoal_ui_prints_a_link_that_logs_in_once(shoal):
    url = shoal.run("ui").stdout.strip()
    parts = urllib.parse.urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == shoal.url and parts.path == "/ui/login"
    assert shoal.token not in url
    status, headers, _ = fetch_no_redirect(url)
    assert status == 302 and headers["Location"] == "/ui/templates"
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert fetch(url)[0] == 403  # the second use
    result = shoal.fails("ui", "--cluster", "nope")
    assert "cluster 'nope' not found" in result.stderr


def fetch_no_redirect(url):
    import urllib.request

    class Stay(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(Stay)
    try:
        with opener.open(url, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()
