"""The pages read their data through the REST API itself (the same routes, checks and answers
as the CLI's), by dispatching a request inside the process with the browser's session cookie:
a page cannot show what the API does not give."""

import json

from flask import current_app, request
from werkzeug.test import EnvironBuilder

from cluster_server.errors import ShoalError


class ApiError(ShoalError):
    """An error answer of the API, passed on to the page with its status and details."""

    def __init__(self, status, error):
        super().__init__(error.get("message", "error"), error.get("details") or {})
        self.status = status
        self.code = error.get("code", "error")


def get(path):
    """The JSON answer of ``GET /api/v1{path}`` for this browser's session."""
    builder = EnvironBuilder(path="/api/v1" + path, method="GET",
                             headers={"Cookie": request.headers.get("Cookie", "")})
    try:
        environ = builder.get_environ()
    finally:
        builder.close()
    status, body = None, []

    def start_response(line, headers, exc_info=None):
        nonlocal status
        status = int(line.split()[0])

    chunks = current_app.wsgi_app(environ, start_response)
    try:
        body = b"".join(chunks)
    finally:
        getattr(chunks, "close", lambda: None)()
    data = json.loads(body)
    if status >= 400:
        raise ApiError(status, data.get("error", {}))
    return data
