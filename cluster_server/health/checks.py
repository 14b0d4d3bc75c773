"""One health check of one service instance: a command through the node's transport, an HTTP
request or a TCP connection. Returns (ok, output); never raises for a service that is down."""

import socket
import urllib.error
import urllib.parse
import urllib.request

from cluster_server import macros

DEFAULT_INTERVAL = 10.0
DEFAULT_TIMEOUT = 5.0
DEFAULT_RETRIES = 3
OUTPUT_LIMIT = 2000  # the tail kept per check: enough for a reason, not a log

# Health URLs name the cluster's own nodes: never through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def schedule(health):
    """(interval, timeout, retries) of a check, with the defaults."""
    return (float(health.get("interval") or DEFAULT_INTERVAL),
            float(health.get("timeout") or DEFAULT_TIMEOUT),
            int(health.get("retries") or DEFAULT_RETRIES))


def _tail(text):
    text = (text or "").strip()
    return text[-OUTPUT_LIMIT:]


def run(health, ctx, transport):
    """Run ``health`` (a service's ``provisioner.health``) for the node of ``ctx`` (the macro
    context). ``transport`` is a callable giving the node's Transport (only commands use it)."""
    _, timeout, _ = schedule(health)
    kind = health.get("type")
    try:
        if kind == "command":
            return _command(macros.expand(health["command"], ctx), timeout, transport)
        if kind == "http":
            return _http(macros.expand(health["url"], ctx), int(health.get("status") or 200),
                         timeout)
        if kind == "tcp":
            host = macros.expand(health.get("host") or "%ip.access_v4.self%", ctx)
            return _tcp(host, int(health["port"]), timeout)
    except Exception as exc:  # noqa: BLE001 (a node we cannot reach is a failing check)
        return False, _tail(f"{type(exc).__name__}: {exc}")
    return False, f"unknown check type {kind!r}"


def _command(argv, timeout, transport):
    # Transports have no timeout of their own: coreutils' timeout bounds the command on the
    # node itself, so a hung check does not hold a checker thread (exit 124 when it fired).
    result = transport().run(["timeout", f"{timeout:g}", *argv])
    output = _tail((result.stdout or "") + (result.stderr or ""))
    if result.exit_code == 124:
        return False, _tail(f"timed out after {timeout:g} s\n{output}")
    if result.exit_code != 0:
        return False, _tail(f"{output}\n[exit code {result.exit_code}]")
    return True, output


def _http(url, expected, timeout):
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        return False, f"not an http(s) URL: {url}"
    try:
        with _OPENER.open(url, timeout=timeout) as reply:
            status, body = reply.status, reply.read(OUTPUT_LIMIT)
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read(OUTPUT_LIMIT)
    text = body.decode("utf-8", errors="replace")
    if status != expected:
        return False, _tail(f"GET {url}: {status}, not {expected}\n{text}")
    return True, _tail(f"GET {url}: {status}\n{text}")


def _tcp(host, port, timeout):
    if not host:
        return False, "the node has no address yet"
    with socket.create_connection((host, port), timeout=timeout):
        return True, f"{host}:{port} accepts connections"
