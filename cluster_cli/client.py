"""The REST client of the ``shoal`` CLI: JSON over loopback HTTP with the per-user token.

Uses http.client rather than requests: the CLI starts on every command, and importing requests
alone costs more than a whole command is allowed.
"""

import http.client
import json
import os
import pathlib
import sys
import urllib.parse


class ClientError(Exception):
    """An error the CLI prints as one line: the server's message, or why it cannot be reached."""

    def __init__(self, message, code="error", details=None, status=None):
        super().__init__(message)
        self.code = code
        self.details = details or {}
        self.status = status


def shoal_home():
    path = pathlib.Path(os.environ.get("SHOAL_HOME") or pathlib.Path.home() / ".shoal")
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:  # exist_ok covers folders only: a file is in the way
        raise ClientError(f"SHOAL_HOME {path} is not a directory") from None
    except OSError as exc:
        raise ClientError(f"SHOAL_HOME {path}: cannot create: {exc.strerror}") from None
    return path


def split_url(url, source):
    """(host, port) of an http://HOST:PORT URL; ``source`` names where the URL came from."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ClientError(f"{source} {url}: expected http://HOST:PORT", code="unreachable")
    try:
        port = parts.port
    except ValueError:  # not a number, or above 65535
        port = 0
    if port == 0:
        raise ClientError(f"{source} {url}: the port must be a number from 1 to 65535",
                          code="unreachable")
    return parts.hostname, port or 80


def local_server_url(home=None):
    """The URL the local server wrote when it started, or None when it is not running."""
    try:
        state = json.loads(((home or shoal_home()) / "server.json").read_text())
    except (OSError, ValueError):
        return None
    return state.get("url")


class Client:
    def __init__(self, url=None, token=None, autostart=True, tenant=None):
        self.explicit_url = url or os.environ.get("SHOAL_URL")
        self.url_source = "--url" if url else "SHOAL_URL"
        self.token = token or os.environ.get("SHOAL_TOKEN")
        self.autostart = autostart and not self.explicit_url
        self.tenant = tenant or os.environ.get("SHOAL_TENANT")
        self._conn = None
        self._url = None
        self.headers = {}

    def url(self):
        if self._url:
            return self._url
        if self.explicit_url:
            split_url(self.explicit_url, self.url_source)
        url = self.explicit_url or local_server_url()
        if url is None or (not self.explicit_url and not self._alive(url)):
            if not self.autostart:
                raise ClientError(f"no Shoal server at {url or 'SHOAL_HOME'}: "
                                  "start one with 'shoal server start'", code="unreachable")
            from cluster_cli import daemon

            url = daemon.start(announce=True)
        self._url = url
        return url

    def _alive(self, url):
        """Something listens at the local server's URL: the connection is kept for the
        command's first request (a request just to ask would cost one more round trip)."""
        host, port = split_url(url, "server URL")
        conn = http.client.HTTPConnection(host, port, timeout=None)
        try:
            conn.connect()
        except OSError:
            return False
        self._conn = conn
        return True

    def _token(self):
        if not self.token:
            try:
                self.token = (shoal_home() / "token").read_text().strip()
            except OSError:
                raise ClientError("no API token: set SHOAL_TOKEN, or start the server once "
                                  "so it writes SHOAL_HOME/token", code="unauthorized") from None
        return self.token

    def _raw(self, method, url, path, body, raw_body=None, sink=None):
        """The answer's JSON; with ``sink`` (a binary file), a successful answer's bytes are
        copied to it as they come instead, and None is returned. ``self.headers`` keeps the
        last answer's headers (a page's cursor)."""
        host, port = split_url(url, "server URL")
        headers = {"Authorization": "Bearer " + self._token(), "Accept": "application/json"}
        if self.tenant:
            headers["X-Shoal-Tenant"] = self.tenant
        data = None
        if raw_body is not None:  # a file sent as it is (plugin resources)
            data = raw_body
            headers["Content-Type"] = "application/octet-stream"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            if self._conn is None or (self._conn.host, self._conn.port) != (host, port):
                self._conn = http.client.HTTPConnection(host, port, timeout=None)
            self._conn.request(method, path, body=data, headers=headers)
            response = self._conn.getresponse()
            self.headers = response.headers
            if sink is not None and response.status < 400:
                while chunk := response.read1(1 << 16):
                    sink.write(chunk)
                return None
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self._conn = None
            raise ClientError(f"cannot reach the Shoal server at {url}: {exc}",
                              code="unreachable") from None
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            raise ClientError(f"server answered {response.status} with non-JSON data",
                              status=response.status) from None
        if response.status >= 400:
            error = (payload or {}).get("error", {}) if isinstance(payload, dict) else {}
            raise ClientError(error.get("message") or f"HTTP {response.status}",
                              code=error.get("code", "error"), details=error.get("details"),
                              status=response.status)
        return payload

    def request(self, method, path, body=None, params=None, sink=None):
        if params:
            query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
            path = f"{path}?{query}" if query else path
        return self._raw(method, self.url(), "/api/v1" + path, body, sink=sink)

    def get(self, path, **params):
        return self.request("GET", path, params=params)

    def post(self, path, body=None, sink=None, **params):
        return self.request("POST", path, body if body is not None else {}, params=params,
                            sink=sink)

    def pages(self, path, limit=None, page=10_000, **params):
        """The rows of a paged list (``?limit=&after=``), following the X-Shoal-Next cursor:
        at most ``limit`` rows (all when None), and whether more were left."""
        rows, after = [], None
        while True:
            size = page if limit is None else min(page, limit - len(rows))
            rows += self.get(path, limit=size, after=after, **params)
            after = self.headers.get("X-Shoal-Next")
            if after is None:
                return rows, False
            if limit is not None and len(rows) >= limit:
                return rows, True

    def put(self, path, body):
        return self.request("PUT", path, body)

    def put_bytes(self, path, data):
        return self._raw("PUT", self.url(), "/api/v1" + path, None, raw_body=data)

    def delete(self, path):
        return self.request("DELETE", path)


def segment(text):
    """One path segment of a URL: a name with '#', '?', '/' or a space still names itself
    (unquoted, 'delete k1#' would have deleted k1)."""
    return urllib.parse.quote(str(text), safe="")


def warn(message):
    print(message, file=sys.stderr)
