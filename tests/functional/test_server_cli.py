"""Server lifecycle through the real binary: start, status, logs, stop, autostart, --url."""

import json
import os
import socket
import stat

from tests.conftest import Shoal


def test_start_status_logs_stop(tmp_path):
    shoal = Shoal(tmp_path / "home")
    assert shoal.json("server", "status")["status"] == "stopped"
    started = shoal.run("server", "start").stdout
    assert "started at http://127.0.0.1:" in started
    assert "already running" in shoal.run("server", "start").stdout
    status = shoal.json("server", "status")
    assert status["status"] == "running" and status["url"].startswith("http://127.0.0.1:")
    assert "listening on" in shoal.run("server", "logs").stdout
    assert stat.S_IMODE(os.stat(shoal.home / "token").st_mode) == 0o600
    assert shoal.run("server", "stop").stdout.strip() == "Shoal server stopped"
    assert shoal.json("server", "status")["status"] == "stopped"
    assert shoal.run("server", "stop").stdout.strip() == "Shoal server not running"


def test_the_home_and_database_are_private_even_when_the_home_existed(tmp_path):
    # The database keeps provider secrets; mkdir's mode does not apply to an existing folder,
    # and an older database may have been made under a looser umask.
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)
    (home / "shoal.db").touch(mode=0o644)
    os.chmod(home / "shoal.db", 0o644)
    shoal = Shoal(home)
    try:
        shoal.run("server", "start")
        shoal.run("service", "list")  # a read: the -wal and -shm files exist now
        assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
        for name in ("shoal.db", "shoal.db-wal", "shoal.db-shm"):
            assert stat.S_IMODE(os.stat(home / name).st_mode) == 0o600, name
        assert "made it 0700" in shoal.run("server", "logs").stdout
    finally:
        shoal.run("server", "stop")


def test_server_listens_on_loopback_only(shoal):
    host = shoal.url.split("//")[1].split(":")[0]
    assert host == "127.0.0.1"


def test_any_command_starts_the_server_and_says_so(tmp_path):
    shoal = Shoal(tmp_path / "home")
    try:
        result = shoal.run("service", "list", "-f", "json")
        assert json.loads(result.stdout) == []
        assert "Starting the Shoal server" in result.stderr
        again = shoal.run("service", "list", "-f", "json")
        assert "Starting" not in again.stderr
    finally:
        shoal.run("server", "stop")


def test_restart_loses_nothing(shoal, tmp_path):
    (tmp_path / "s.json").write_text('{"name": "kept"}')
    shoal.run("service", "create", tmp_path / "s.json")
    shoal.run("server", "stop")
    shoal.run("server", "start")
    assert [row["Name"] for row in shoal.json("service", "list")] == ["kept"]


def test_url_points_at_another_server(shoal, tmp_path):
    other = Shoal(tmp_path / "elsewhere")
    other.env["SHOAL_TOKEN"] = shoal.token
    rows = json.loads(other.run("--url", shoal.url, "service", "list", "-f", "json").stdout)
    assert rows == []
    other.env["SHOAL_URL"] = shoal.url
    assert json.loads(other.run("service", "list", "-f", "json").stdout) == []
    assert not (other.home / "server.json").exists()  # nothing was started there


def test_unreachable_url_is_a_clear_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    shoal = Shoal(tmp_path / "home")
    shoal.env["SHOAL_TOKEN"] = "x"
    result = shoal.fails("--url", f"http://127.0.0.1:{port}", "service", "list")
    assert "cannot reach the Shoal server" in result.stderr


def test_version_and_completion(tmp_path):
    shoal = Shoal(tmp_path / "home")
    assert shoal.run("--version").stdout.startswith("shoal ")
    completion = shoal.run("complete").stdout
    assert "catalog" in completion and "template" in completion


def test_many_first_commands_at_once_start_one_server(tmp_path):
    import subprocess
    import threading

    shoal = Shoal(tmp_path / "home")
    results = []

    def run():
        results.append(shoal.run("service", "list", "-f", "json", check=False))

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
        servers = []
        for pid in subprocess.run(["pgrep", "-f", "cluster_server.serve"], capture_output=True,
                                  text=True).stdout.split():
            try:
                environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            except OSError:
                continue
            if f"SHOAL_HOME={shoal.home}".encode() in environ:
                servers.append(pid)
        assert len(servers) == 1
    finally:
        shoal.run("server", "stop")
