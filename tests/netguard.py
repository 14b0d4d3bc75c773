"""The network rule of the tests, enforced in-process: connect only to loopback.

``loopback_only`` (a fixture) makes any attempt to resolve a non-local name or to connect a socket
to an address outside 127.0.0.0/8 and ::1 fail at once, naming the address, and records it in
``loopback_only.refused`` so a test can assert that nothing tried.
"""

import ipaddress
import socket

import pytest

LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


def _local(host):
    if host is None or host in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


class Guard:
    def __init__(self):
        self.refused = []

    def check(self, host):
        if not _local(host):
            self.refused.append(host)
            raise OSError(f"test network rule: no connection to {host} (loopback only)")


@pytest.fixture
def loopback_only(monkeypatch):
    guard = Guard()
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def getaddrinfo(host, *args, **kwargs):
        guard.check(host.decode() if isinstance(host, bytes) else host)
        return real_getaddrinfo(host, *args, **kwargs)

    def address_of(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            guard.check(address[0])

    def connect(sock, address):
        address_of(sock, address)
        return real_connect(sock, address)

    def connect_ex(sock, address):
        address_of(sock, address)
        return real_connect_ex(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    yield guard
    assert guard.refused == [], f"tests tried to leave loopback: {guard.refused}"
