"""Body limits on a real server, over a raw socket: an oversized body is refused on its declared
length before it is read, and a body without a length (chunked) is cut at the limit, so the
server's memory does not grow by the body's size."""

import json
import socket
import time
import urllib.parse

HUGE = 300 * 1024 * 1024


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def server_pid(shoal):
    return json.loads((shoal.home / "server.json").read_text())["pid"]


def connect(shoal):
    url = urllib.parse.urlsplit(shoal.url)
    return socket.create_connection((url.hostname, url.port), timeout=30)


def head(shoal, method, path, headers):
    lines = [f"{method} /api/v1{path} HTTP/1.1", f"Host: {urllib.parse.urlsplit(shoal.url).netloc}",
             f"Authorization: Bearer {shoal.token}", *headers, "", ""]
    return "\r\n".join(lines).encode()


def read_reply(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    status = int(data.split(b" ", 2)[1])
    headers, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in headers.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, json.loads(body) if body else None


def test_a_declared_huge_body_is_refused_before_it_is_sent(shoal):
    pid = server_pid(shoal)
    before = rss_kib(pid)
    for path, method, media in (("/services", "POST", "application/json"),
                                ("/resources/scripts/big", "PUT", "application/octet-stream")):
        with connect(shoal) as sock:
            sock.sendall(head(shoal, method, path, [f"Content-Type: {media}",
                                                    f"Content-Length: {HUGE}"]))
            # Nothing of the body is sent: the answer comes on the headers alone.
            started = time.monotonic()
            status, body = read_reply(sock)
            assert status == 413, body
            assert body["error"]["code"] == "too_large"
            assert time.monotonic() - started < 10
    assert rss_kib(pid) - before < 20 * 1024  # KiB: nowhere near the 300 MB announced


def test_a_chunked_body_is_cut_at_the_limit(shoal):
    pid = server_pid(shoal)
    before = rss_kib(pid)
    with connect(shoal) as sock:
        sock.sendall(head(shoal, "POST", "/services", ["Content-Type: application/json",
                                                       "Transfer-Encoding: chunked"]))
        chunk = b"[" * (1024 * 1024)
        sent = 0
        try:
            # 64 MiB offered in 1 MiB chunks; the limit is 2 MiB.
            for _ in range(64):
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading: what this test wants
        status, body = read_reply(sock)
    assert status == 413, body
    assert rss_kib(pid) - before < 20 * 1024
