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


def test_a_shoal_home_that_is_a_file_is_named(tmp_path):
    (tmp_path / "afile").write_text("")
    shoal = Shoal(tmp_path / "afile")
    for args in (("server", "status"), ("service", "list")):
        result = shoal.fails(*args)
        assert result.returncode == 1
        assert result.stderr.strip() == f"SHOAL_HOME {tmp_path / 'afile'} is not a directory"


def test_start_stop_logs_manage_the_local_server_only(shoal):
    # With --url, 'server stop' used to say "stopped" and stop the local server.
    for verb in ("start", "stop", "logs"):
        result = shoal.fails("--url", "http://127.0.0.1:1", "server", verb)
        assert result.returncode == 1
        assert result.stderr.strip() == (f"server {verb} manages the local server; it does not "
                                          "take --url/SHOAL_URL")
    shoal.env["SHOAL_URL"] = "http://127.0.0.1:1"
    assert "does not take --url/SHOAL_URL" in shoal.fails("server", "stop").stderr
    # status reports on the server it is pointed at
    assert "cannot reach the Shoal server at http://127.0.0.1:1" in shoal.fails(
        "server", "status").stderr
    del shoal.env["SHOAL_URL"]
    status = shoal.json("--url", shoal.url, "server", "status")
    assert status["status"] == "running" and status["url"] == shoal.url
    assert shoal.json("server", "status")["status"] == "running"  # nothing was stopped


def test_line_counts_must_be_positive(tmp_path):
    shoal = Shoal(tmp_path / "home")
    for args in (("server", "logs", "--lines", "-3"), ("server", "logs", "-n", "0"),
                 ("task", "show", "1", "--lines", "-5"), ("task", "show", "1", "--lines", "x")):
        result = shoal.fails(*args)
        assert result.returncode == 2, args
        assert f"--lines: must be a whole number above 0, not '{args[-1]}'" in result.stderr
    assert not (shoal.home / "server.json").exists()  # refused before any server was started


def test_bare_shoal_prints_the_command_list(tmp_path):
    # cliff would open an interactive shell; with no terminal it printed a blank line, exit 1.
    result = Shoal(tmp_path / "home").run(input="")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: shoal")
    assert "server start" in result.stdout and "template list" in result.stdout


def test_a_bad_url_port_names_the_url(tmp_path):
    shoal = Shoal(tmp_path / "home")
    result = shoal.fails("--url", "http://127.0.0.1:99999", "service", "list")
    assert result.returncode == 1
    assert result.stderr.strip() == ("--url http://127.0.0.1:99999: the port must be a number "
                                     "from 1 to 65535")
    shoal.env["SHOAL_URL"] = "http://127.0.0.1:x"
    assert "SHOAL_URL http://127.0.0.1:x: the port must be" in shoal.fails(
        "service", "list").stderr


def test_a_lost_store_key_stops_the_start_with_the_reason(tmp_path):
    shoal = Shoal(tmp_path / "home")
    (tmp_path / "p.json").write_text(json.dumps({"name": "p", "providertype": "local"}))
    shoal.run("provider", "create", tmp_path / "p.json")
    shoal.run("server", "stop")
    assert stat.S_IMODE(os.stat(shoal.home / "store.key").st_mode) == 0o600
    (shoal.home / "store.key").unlink()
    result = shoal.fails("server", "start")
    assert "holds sealed secrets but its key store.key is missing" in result.stderr
    assert "Traceback" not in result.stderr + shoal.run("server", "logs").stdout
    assert not (shoal.home / "store.key").exists()
